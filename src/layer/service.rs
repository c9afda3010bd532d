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
        let guard = self.layer.guards.here();
        let inner = &guard.inner;
        let allowed = self.layer.wait_allowed(req.headers());

        // A request that cannot start before its deadline is told at once: no lock, no
        // pool, none of the caller's quota spent.
        if let Some(rejection) = inner.deadline_refusal(class, allowed) {
            inner.count(class, Outcome::Shed);
            return ResponseFuture::rejected(rejection.to_static_response(), None);
        }

        // The request's deadline counts from the clock read here, or (for a request checked
        // against its caller's limits) once the check let it through: a 429 answered at once
        // reads no clock.
        let deadline_from_now = || crate::clock::now() + allowed;
        // The caller's in-flight permit; a check that answers later (the limits shared in
        // Redis), and what its refusal needs to be held.
        let mut permit = None;
        let mut check = None;
        let mut late = None;
        // An outer guard layer already checked the caller's limits: only the class and the
        // deadline change. `in_extensions`: the request carries a copy already (updated here
        // in place).
        let (outer, in_extensions) = match req.extensions_mut().get_mut::<RequestContext>() {
            Some(ctx) => {
                ctx.class = class;
                ctx.deadline = deadline_from_now();
                (Some(ctx.clone()), true)
            }
            None => {
                let current = context::read_current(|outer| RequestContext {
                    class,
                    deadline: deadline_from_now(),
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
                            let delay = inner.pace_refusal(key, &mut rejection, allowed);
                            return ResponseFuture::rejected(rejection.to_static_response(), delay);
                        }
                        LimitCheck::Pending(pending) => check = Some(pending),
                    }
                }
                let deadline = deadline_from_now();
                if check.is_some() {
                    late = limited.and_then(|key| inner.late_refusal(key, deadline));
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
        ResponseFuture::admitted(ctx, permit, check, late, || self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{GuardConfig, UserLimits};
    use crate::limit::DefaultKeyExtractor;
    use crate::Guard;
    use http::{HeaderName, Request, Response, StatusCode};
    use std::convert::Infallible;
    use tower::{Layer, Service};

    #[tokio::test]
    async fn an_admitted_request_and_its_slot_count_on_the_threads_guard_not_the_shared_one() {
        use crate::guard::AcquireContext;
        use crate::layer::RequestContext;
        use std::sync::Arc;

        let guard = Guard::of_four_unreachable_slots();
        let layer = guard.critical().context_extension(false);
        let thread_guards = layer.guards.clone();
        // The handler takes its slot as `Conn` does, and answers with the references to the
        // guard's state and to the thread's guard while it holds the slot.
        let mut service = layer.layer(tower::service_fn(|_: Request<String>| async {
            let ctx = RequestContext::current().expect("under the layer");
            let slot = ctx
                .guard
                .admit_slot(ctx.class, AcquireContext::default(), ctx.deadline)
                .await
                .expect("a free slot");
            let counts = format!(
                "{} {}",
                Arc::strong_count(ctx.guard.inner.state()),
                Arc::strong_count(&ctx.guard.inner)
            );
            drop(slot);
            Ok::<_, Infallible>(Response::new(counts))
        }));
        let mut counts_in_a_request = async || {
            let response = service.call(Request::new(String::new())).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body()
        };
        // The thread's first request makes its guard: one more reference to the state.
        counts_in_a_request().await;
        let state_refs = Arc::strong_count(guard.inner.state());
        let here = &thread_guards.here().inner;
        let thread_refs = Arc::strong_count(here);

        let during = counts_in_a_request().await;
        // The layer's context, the handler's clone of it and the slot: three references to
        // the thread's guard, none to the state.
        assert_eq!(during, format!("{state_refs} {}", thread_refs + 3));
        assert_eq!(Arc::strong_count(guard.inner.state()), state_refs);
        assert_eq!(Arc::strong_count(here), thread_refs, "a reference was kept");
    }

    #[tokio::test]
    async fn a_429_answered_at_once_reads_no_clock() {
        // One request a second, and a burst of one: the user's second request is refused.
        let limits = UserLimits {
            rate_per_second: 1,
            burst: 1,
            ..UserLimits::default()
        };
        let guard = Guard::builder(crate::pool::unreachable_pool(4))
            .config(GuardConfig {
                limits,
                ..GuardConfig::default()
            })
            .build()
            .unwrap();
        let layer = guard
            .standard()
            .key_extractor(DefaultKeyExtractor::trusting_header(
                HeaderName::from_static("x-user-id"),
                64,
            ));
        let mut service = layer.layer(tower::service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
        let request = || {
            Request::builder()
                .header("x-user-id", "u1")
                .body(String::new())
                .unwrap()
        };
        let mut answer_and_reads = || {
            let before = crate::clock::reads_on_this_thread();
            let answer = service.call(request());
            (answer, crate::clock::reads_on_this_thread() - before)
        };

        let (admitted, admitted_reads) = answer_and_reads();
        assert_eq!(admitted.await.unwrap().status(), StatusCode::OK);
        // The admitted request's deadline is read from the clock.
        assert_eq!(admitted_reads, 1);
        let (refused, refused_reads) = answer_and_reads();
        assert_eq!(
            refused.await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(refused_reads, 0, "the 429 read the clock");
    }
}
