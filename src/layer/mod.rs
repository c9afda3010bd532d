//! The tower layer that puts a route under the guard.
//!
//! For each request, in `call` (never in `poll_ready`, which axum does not use for
//! backpressure): the request's deadline (the route's, a trusted header's, or the configured
//! default), then a lock-free check that it can start by then (503 + `Retry-After` from the
//! estimate otherwise, without touching the pool or spending the caller's quota), then the
//! per-user limits (429 + `Retry-After` + `RateLimit-*`), then the route's class, the caller's
//! key and the deadline become the request's [`RequestContext`]: current in its task while
//! the inner service runs, and (by default) in its extensions, where the [`Conn`](crate::Conn)
//! extractor and handlers find it. Rejections are responses, so the layer's
//! error type stays the inner service's (`Infallible` for axum).
//!
//! Non-critical requests are not shed by level: above Normal they are deferred (they wait in
//! the lowest queue when they acquire) and refused only when their deadline cannot be met.
//!
//! ```no_run
//! # use poolguard::Guard;
//! # use std::time::Duration;
//! # fn routes(guard: &Guard) {
//! // Reports wait up to 10 s for a slot; a gateway in front may shorten that per request.
//! let reports = guard
//!     .non_critical()
//!     .deadline(Duration::from_secs(10))
//!     .deadline_header(http::HeaderName::from_static("x-request-deadline-ms"));
//! # let _ = reports;
//! # }
//! ```

pub(crate) mod context;
mod future;
mod service;
mod thread_guards;

pub use context::RequestContext;
pub use future::ResponseFuture;
pub use service::GuardService;
pub(crate) use thread_guards::ThreadGuards;

use crate::criticality::Criticality;
use crate::guard::Guard;
use crate::limit::{DefaultKeyExtractor, KeyExtractor};
use std::sync::Arc;
use std::time::Duration;

/// The longest deadline a trusted header may ask for.
pub const MAX_HEADER_DEADLINE: Duration = Duration::from_secs(60);

/// Wraps a service so its requests are admitted by the guard as one [`Criticality`].
///
/// Made by [`Guard::critical`], [`Guard::standard`], [`Guard::non_critical`] or
/// [`Guard::layer`].
#[derive(Clone)]
pub struct GuardLayer {
    /// The guard, and one of each thread's own for the requests' contexts.
    pub(crate) guards: Arc<ThreadGuards>,
    pub(crate) class: Criticality,
    pub(crate) extractor: Arc<dyn KeyExtractor>,
    /// The route's deadline; `None` uses the configured `max_queue_wait`.
    pub(crate) deadline: Option<Duration>,
    /// A request header (milliseconds) the application trusts to set the deadline.
    pub(crate) deadline_header: Option<http::HeaderName>,
    /// Whether the request's context also goes into its extensions.
    pub(crate) context_extension: bool,
}

impl std::fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardLayer")
            .field("class", &self.class)
            .field("deadline", &self.deadline)
            .field("deadline_header", &self.deadline_header)
            .field("context_extension", &self.context_extension)
            .finish_non_exhaustive()
    }
}

impl GuardLayer {
    /// Uses `extractor` to find the user key of each request (default:
    /// [`DefaultKeyExtractor`]: `UserKey` extension, then peer address; no header).
    #[must_use]
    pub fn key_extractor(mut self, extractor: impl KeyExtractor) -> Self {
        self.extractor = Arc::new(extractor);
        self
    }

    /// The longest a request of this route waits for a slot (default: the configured
    /// [`max_queue_wait`](crate::GuardConfig::max_queue_wait)). A request whose expected start
    /// lies past it is answered 503 at once with an honest `Retry-After`; none is started
    /// after it. Zero is raised to one millisecond.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline.max(Duration::from_millis(1)));
        self
    }

    /// Lets a request header set its own deadline, in milliseconds from its arrival (for
    /// example one a gateway in front writes from the client's remaining budget). Only for a
    /// header the application trusts: whoever sets it chooses how long the request may
    /// wait. Values are clamped to `1..=`[`MAX_HEADER_DEADLINE`]; a missing or unreadable
    /// value falls back to the route's deadline.
    #[must_use]
    pub fn deadline_header(mut self, header: http::HeaderName) -> Self {
        self.deadline_header = Some(header);
        self
    }

    /// Whether the layer also puts each request's [`RequestContext`] in the request's
    /// extensions (default: yes). The context is always current in the request's task while
    /// the inner service runs, where [`Conn`](crate::Conn), the `RequestContext` extractor
    /// and [`RequestContext::find`] read it; the copy in the extensions is for handlers that
    /// read `Extension<RequestContext>`, and for a stack that runs the handler's future in a
    /// task of its own (a layer between that spawns it). It costs an allocation or three per
    /// request (a boxed value, and the map for a request that had none); without it an
    /// admitted request allocates nothing in the guard.
    #[must_use]
    pub fn context_extension(mut self, on: bool) -> Self {
        self.context_extension = on;
        self
    }

    /// How long a request with `headers` may wait to start: its deadline is that after its
    /// arrival.
    pub(crate) fn wait_allowed(&self, headers: &http::HeaderMap) -> Duration {
        let route = self
            .deadline
            .unwrap_or(self.guards.guard().inner.config.max_queue_wait);
        let from_header = self
            .deadline_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|ms| {
                Duration::from_millis(ms).clamp(Duration::from_millis(1), MAX_HEADER_DEADLINE)
            });
        from_header.unwrap_or(route)
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> GuardService<S> {
        GuardService::new(inner, self.clone())
    }
}

impl Guard {
    /// A layer for routes of `class`.
    pub fn layer(&self, class: Criticality) -> GuardLayer {
        GuardLayer {
            guards: Arc::new(ThreadGuards::new(self.clone())),
            class,
            extractor: Arc::new(DefaultKeyExtractor::new(self.config().limits.max_key_len)),
            deadline: None,
            deadline_header: None,
            context_extension: true,
        }
    }

    /// A layer for critical routes: served first, from the reserve if needed.
    pub fn critical(&self) -> GuardLayer {
        self.layer(Criticality::Critical)
    }

    /// A layer for ordinary routes (what unmarked routes get when the whole router is
    /// wrapped).
    pub fn standard(&self) -> GuardLayer {
        self.layer(Criticality::Standard)
    }

    /// A layer for non-critical routes: they use the slots that keep the pool under the
    /// warning line; under pressure they are deferred and started as slots free, and
    /// answered 503 (with an honest `Retry-After`) only when their deadline cannot be met.
    pub fn non_critical(&self) -> GuardLayer {
        self.layer(Criticality::NonCritical)
    }
}
