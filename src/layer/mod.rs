//! The tower layer that puts a route under the guard.
//!
//! For each request, in `call` (never in `poll_ready`, which axum does not use for
//! backpressure): for non-critical routes the breaker first (503 + `Retry-After`, without
//! touching the pool or spending the caller's quota), then the per-user limits (429 +
//! `Retry-After` + `RateLimit-*`), then the route's class and the caller's key go into the request extensions, where the
//! [`Conn`](crate::Conn) extractor and [`RequestContext`] readers find them. Rejections are
//! responses, so the layer's error type stays the inner service's (`Infallible` for axum).

mod future;
mod service;

pub use future::ResponseFuture;
pub use service::GuardService;

use crate::limit::{DefaultKeyExtractor, KeyExtractor, UserKey};
use crate::{Criticality, Guard};
use std::sync::Arc;

/// Wraps a service so its requests are admitted by the guard as one [`Criticality`].
///
/// Made by [`Guard::critical`], [`Guard::standard`], [`Guard::non_critical`] or
/// [`Guard::layer`].
#[derive(Clone)]
pub struct GuardLayer {
    pub(crate) guard: Guard,
    pub(crate) class: Criticality,
    pub(crate) extractor: Arc<dyn KeyExtractor>,
}

impl std::fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardLayer")
            .field("class", &self.class)
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
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> GuardService<S> {
        GuardService::new(inner, self.clone())
    }
}

/// What the layer leaves in the request extensions for the handler.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The route's class (the innermost layer wins).
    pub class: Criticality,
    /// The caller's key, if one was found.
    pub user: Option<UserKey>,
    /// The guard.
    pub guard: Guard,
}

impl Guard {
    /// A layer for routes of `class`.
    pub fn layer(&self, class: Criticality) -> GuardLayer {
        GuardLayer {
            guard: self.clone(),
            class,
            extractor: Arc::new(DefaultKeyExtractor::new(self.config().limits.max_key_len)),
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

    /// A layer for non-critical routes: answered 503 at once while the pool is under
    /// pressure, let back in on a ramp after recovery.
    pub fn non_critical(&self) -> GuardLayer {
        self.layer(Criticality::NonCritical)
    }
}
