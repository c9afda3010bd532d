//! [`RequestContext`]: what a guard layer decided about a request (its class, its caller, its
//! deadline), and where the [`Conn`](crate::Conn) extractor and handlers find it.
//!
//! The layer makes the context *current in the request's task* while it calls the inner
//! service, polls the inner future and drops it (a thread-local set for exactly that time, as
//! a tokio task-local is, kept in the layer's own future: no allocation, no wrapper), and by
//! default also puts a copy in the request's extensions, where `Extension<RequestContext>`
//! reads it and where it travels with the request even to another task (a layer in between
//! that spawns the handler's future as a task of its own, say; `tower::buffer` is not one:
//! its worker makes the future, but the future is polled in the request's task). A copy in
//! the extensions always allocates (a boxed value, and the map for a request that had none);
//! a layer built with [`context_extension(false)`](super::GuardLayer::context_extension)
//! leaves that out and admits a request without allocating at all.
//!
//! Readers ([`RequestContext::find`], the extractors) look at the task first, then at the
//! extensions. Both hold the innermost layer's decision: an inner layer under an outer one
//! updates the copy in the extensions in place, and makes its own context current for the
//! time it runs.

use crate::criticality::Criticality;
use crate::guard::Guard;
use crate::limit::UserKey;
use std::borrow::Cow;
use std::time::Instant;

/// What a guard layer decided about a request, for the [`Conn`](crate::Conn) extractor and
/// for handlers: read it with [`RequestContext::find`], or as an axum extractor
/// (`ctx: RequestContext`, or `Extension<RequestContext>` while the layer keeps its default
/// [`context_extension`](super::GuardLayer::context_extension)).
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The route's class (the innermost layer wins).
    pub class: Criticality,
    /// The caller's key, if one was found.
    pub user: Option<UserKey>,
    /// The guard.
    pub guard: Guard,
    /// The request must be given a connection by then, or it is answered 503.
    pub deadline: Instant,
}

scoped_tls::scoped_thread_local! {
    /// The context of the request whose layer is calling its inner service or polling its
    /// future on this thread, for exactly that time: a task-local, kept by the layer's own
    /// future rather than by a wrapper around the inner one. What the thread holds is a
    /// reference to the context in that future, set and put back around the call: the
    /// context itself never moves in or out.
    static CURRENT: RequestContext
}

impl RequestContext {
    /// The context of the request being served: the one a guard layer made current in this
    /// task, else the copy in `extensions` (the request's). `None` when the request went
    /// through no guard layer.
    pub fn find(extensions: &http::Extensions) -> Option<RequestContext> {
        read(extensions, RequestContext::clone)
    }

    /// The same context as [`find`](Self::find), borrowed from the copy in `extensions` when
    /// the request carries one (the layer's default; it holds the innermost layer's decision,
    /// as the context current in the task does), cloned from the task's otherwise. For code
    /// that keeps the context across an `.await` (the [`Conn`](crate::Conn) extractor's
    /// acquisition): a borrowed copy leaves the guard's reference count alone, and the
    /// context current in the task is only current while the request's future is polled.
    pub fn find_borrowed(extensions: &http::Extensions) -> Option<Cow<'_, RequestContext>> {
        match extensions.get::<RequestContext>() {
            Some(copy) => Some(Cow::Borrowed(copy)),
            None => read_current(RequestContext::clone).map(Cow::Owned),
        }
    }

    /// The context a guard layer made current in this task, if any: set while the layer
    /// calls its inner service and polls its future, so a handler (and anything it awaits
    /// in the same task) sees it; a task spawned from there does not.
    pub fn current() -> Option<RequestContext> {
        read_current(RequestContext::clone)
    }
}

/// `f` of the request's context: the current one, else the copy in `extensions`.
pub(crate) fn read<R>(
    extensions: &http::Extensions,
    f: impl Fn(&RequestContext) -> R,
) -> Option<R> {
    read_current(&f).or_else(|| extensions.get::<RequestContext>().map(f))
}

/// `f` of the context current in this task, if a guard layer set one.
pub(crate) fn read_current<R>(f: impl FnOnce(&RequestContext) -> R) -> Option<R> {
    if CURRENT.is_set() {
        Some(CURRENT.with(f))
    } else {
        None
    }
}

/// Runs `f` (the layer's call of its inner service, or a poll or the drop of its future)
/// with the context in `ctx` current, then makes current again what was current before (an
/// outer layer's context), also when `f` panics. With no context in `ctx`, `f` runs with
/// what is current already.
pub(crate) fn in_scope<R>(ctx: &Option<RequestContext>, f: impl FnOnce() -> R) -> R {
    match ctx {
        Some(ctx) => made_in(ctx, f),
        None => f(),
    }
}

/// Runs `f` with `ctx` current, as [`in_scope`] does with a context. One way out, so a large
/// value `f` makes (the inner service's future) is written where the caller keeps it, not
/// made on the side and copied there.
pub(crate) fn made_in<R>(ctx: &RequestContext, f: impl FnOnce() -> R) -> R {
    CURRENT.set(ctx, f)
}
