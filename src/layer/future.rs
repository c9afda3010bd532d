//! The response future of [`GuardService`](super::GuardService).

use super::context::{self, RequestContext};
use crate::guard::{LateRefusal, RefusalDelay};
use crate::limit::check::{PendingCheck, UserPermit};
use http::Response;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The inner service's future (holding the caller's in-flight slot until it completes
    /// or is dropped), a rejection answered at once or after a hold (for a user back before
    /// its `Retry-After`), or (with limits shared in Redis) a per-user check that runs first
    /// and either admits the request or answers it. The inner future is polled and dropped
    /// with its request's context current.
    pub struct ResponseFuture<F, B> {
        #[pin]
        future: Option<F>,
        // Current while `future` is polled or dropped.
        ctx: Option<RequestContext>,
        check: Option<PendingCheck>,
        // How a refusal the check comes back with is held (pacing on).
        late: Option<LateRefusal>,
        permit: Option<UserPermit>,
        response: Option<Response<B>>,
        delay: Option<Pin<Box<RefusalDelay>>>,
    }

    impl<F, B> PinnedDrop for ResponseFuture<F, B> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.future.is_some() {
                context::in_scope(this.ctx, || this.future.set(None));
            }
        }
    }
}

impl<F, B> ResponseFuture<F, B> {
    /// `future`, made with `ctx` current, to be polled with it current; `permit` is the
    /// caller's in-flight slot.
    pub(crate) fn admitted(
        future: F,
        ctx: Option<RequestContext>,
        permit: Option<UserPermit>,
    ) -> Self {
        Self {
            future: Some(future),
            ctx,
            check: None,
            late: None,
            permit,
            response: None,
            delay: None,
        }
    }

    /// `future` (made with `ctx` current) once `check` admits the request.
    pub(crate) fn checking(
        check: PendingCheck,
        late: Option<LateRefusal>,
        future: F,
        ctx: Option<RequestContext>,
    ) -> Self {
        Self {
            future: Some(future),
            ctx,
            check: Some(check),
            late,
            permit: None,
            response: None,
            delay: None,
        }
    }

    /// A refusal, answered at once or once `delay` is over.
    pub(crate) fn rejected(response: Response<B>, delay: Option<Pin<Box<RefusalDelay>>>) -> Self {
        Self {
            future: None,
            ctx: None,
            check: None,
            late: None,
            permit: None,
            response: Some(response),
            delay,
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<String> + From<&'static str>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(check) = this.check.as_mut() {
            let verdict = std::task::ready!(check.as_mut().poll(cx));
            *this.check = None;
            match verdict {
                Ok(permit) => {
                    *this.permit = Some(permit);
                    *this.late = None;
                }
                Err(mut rejection) => {
                    context::in_scope(this.ctx, || this.future.set(None));
                    let late = this.late.take();
                    *this.delay = late.and_then(|late| late.pace(&mut rejection));
                    *this.response = Some(rejection.to_static_response());
                }
            }
        }
        if let Some(delay) = this.delay.as_mut() {
            std::task::ready!(delay.as_mut().poll(cx));
            // The hold is over: its slot goes back before the answer leaves.
            *this.delay = None;
        }
        if let Some(response) = this.response.take() {
            return Poll::Ready(Ok(response));
        }
        let mut future = this.future;
        let out = std::task::ready!(context::in_scope(this.ctx, || {
            let polled = future
                .as_mut()
                .as_pin_mut()
                .expect("ResponseFuture polled after completion")
                .poll(cx);
            if polled.is_ready() {
                future.set(None);
            }
            polled
        }));
        // The request is done: its in-flight slot is free now, not when the future is
        // dropped later.
        this.permit.take();
        Poll::Ready(out)
    }
}
