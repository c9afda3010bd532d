//! The service made by [`GuardLayer`].

use super::context::{self, RequestContext};
use super::{GuardLayer, ResponseFuture};
use crate::criticality::Criticality;
use crate::guard::check_user;
use crate::limit::check::LimitCheck;
use crate::metrics::Outcome;
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

/// Admits requests to the wrapped service; see [`GuardLayer`].
#[derive(Clone, Debug)]
pub struct GuardService<S> {
    inner: S,
    /// Shared by every clone: axum clones a route's service for each request, and this is
    /// one reference count to bump, not one per handle the layer holds.
    layer: Arc<GuardLayer>,
}

impl<S> GuardService<S> {
    pub(crate) fn new(inner: S, layer: GuardLayer) -> Self {
        Self {
            inner,
            layer: Arc::new(layer),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GuardService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<String> + From<&'static str>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let class = self.layer.class;
        let guard = &self.layer.guard;
        let inner = &guard.inner;
        let now = crate::clock::now();
        let allowed = self.layer.wait_allowed(req.headers());
        let deadline = now + allowed;

        // A request that cannot start before its deadline is told at once: no lock, no
        // pool, none of the caller's quota spent.
        if let Some(rejection) = inner.deadline_refusal(class, allowed, now) {
            inner.count(class, Outcome::Shed);
            return ResponseFuture::rejected(rejection.to_static_response(), None);
        }

        // An outer guard layer already checked the caller's limits: only the class and the
        // deadline change.
        let mut pending = None;
        let mut permit = None;
        // `in_extensions`: the request carries a copy already (updated here in place).
        let (outer, in_extensions) = match req.extensions_mut().get_mut::<RequestContext>() {
            Some(ctx) => {
                ctx.class = class;
                ctx.deadline = deadline;
                (Some(ctx.clone()), true)
            }
            None => {
                let current = context::read_current(|outer| RequestContext {
                    class,
                    deadline,
                    ..outer.clone()
                });
                (current, false)
            }
        };
        let ctx = match outer {
            Some(ctx) => ctx,
            None => {
                let level = inner.level();
                let user = self
                    .layer
                    .extractor
                    .extract(req.headers(), req.extensions());
                // Non-critical work is bounded by its slot budget, its deadline and each
                // user's share of its queue: a dashboard's widgets are deferred, not refused
                // by the per-user caps that protect the other routes.
                let limited = user.as_ref().filter(|_| class != Criticality::NonCritical);
                if let Some(key) = limited {
                    match check_user(inner, key, level, class) {
                        LimitCheck::Ready(Ok(granted)) => permit = Some(granted),
                        LimitCheck::Ready(Err(mut rejection)) => {
                            inner.count(class, Outcome::RateLimited);
                            // A user back before its `Retry-After` may have its answer held.
                            let delay = inner.pace_refusal(key, &mut rejection, now, deadline);
                            return ResponseFuture::rejected(rejection.to_static_response(), delay);
                        }
                        LimitCheck::Pending(check) => {
                            pending = Some((check, inner.late_refusal(key, deadline)));
                        }
                    }
                }
                RequestContext {
                    class,
                    user,
                    guard: guard.clone(),
                    deadline,
                }
            }
        };
        if self.layer.context_extension && !in_extensions {
            req.extensions_mut().insert(ctx.clone());
        }
        // The inner future is made now but (with a pending check) first polled once the
        // check admits the request: axum's handlers do nothing before they are polled.
        let (check, late) = pending.unzip();
        ResponseFuture::admitted(ctx, permit, check, late.flatten(), || self.inner.call(req))
    }
}
