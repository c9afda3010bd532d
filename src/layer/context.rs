//! [`RequestContext`]: what a guard layer decided about a request (its class, its caller, its
//! deadline), and where the [`Conn`](crate::Conn) extractor and handlers find it.
//!
//! The layer makes the context *current in the request's task* while it calls the inner
//! service and polls the inner future (a tokio task-local, which costs no allocation), and by
//! default also puts a copy in the request's extensions, where `Extension<RequestContext>`
//! reads it and where it travels with the request even to another task (a layer in between
//! that spawns the handler's future as a task of its own, say; `tower::buffer` is not one:
//! its worker makes the future, but the future is polled in the request's task). A copy in the extensions always allocates (a boxed value, and the map for a
//! request that had none); a layer built with
//! [`context_extension(false)`](super::GuardLayer::context_extension) leaves that out and
//! admits a request without allocating at all.
//!
//! Readers ([`RequestContext::find`], the extractors) look at the task first, then at the
//! extensions. Both hold the innermost layer's decision: an inner layer under an outer one
//! updates the copy in the extensions in place, and makes its own context current for the
//! time it runs.

use crate::criticality::Criticality;
use crate::guard::Guard;
use crate::limit::UserKey;
use std::cell::Cell;
use std::time::Instant;
use tokio::task::futures::TaskLocalFuture;

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

tokio::task_local! {
    /// The context of the request whose service this task runs, while a guard layer calls
    /// its inner service and polls its future. A `Cell`, so that the layer can take it back
    /// after the call and readers can look at it, without cloning it.
    static CURRENT: Cell<Option<RequestContext>>;
}

/// The inner service's future, polled with its request's context current.
pub(crate) type Scoped<F> = TaskLocalFuture<Cell<Option<RequestContext>>, F>;

impl RequestContext {
    /// The context of the request being served: the one a guard layer made current in this
    /// task, else the copy in `extensions` (the request's). `None` when the request went
    /// through no guard layer.
    pub fn find(extensions: &http::Extensions) -> Option<RequestContext> {
        read(extensions, RequestContext::clone)
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
    CURRENT
        .try_with(|cell| {
            let ctx = cell.take();
            let out = ctx.as_ref().map(f);
            cell.set(ctx);
            out
        })
        .ok()
        .flatten()
}

/// Runs `call` (the layer's call of its inner service) with `ctx` current, then gives `ctx`
/// back with what `call` returned.
pub(crate) fn call_with<R>(ctx: RequestContext, call: impl FnOnce() -> R) -> (R, RequestContext) {
    CURRENT.sync_scope(Cell::new(Some(ctx)), || {
        let out = call();
        let ctx = CURRENT
            .with(Cell::take)
            .expect("readers put the context back");
        (out, ctx)
    })
}

/// `future`, polled with `ctx` current.
pub(crate) fn scoped<F: std::future::Future>(ctx: RequestContext, future: F) -> Scoped<F> {
    CURRENT.scope(Cell::new(Some(ctx)), future)
}
