//! The response future of [`GuardService`](super::GuardService).

use super::context::Scoped;
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
    /// and either admits the request or answers it.
    pub struct ResponseFuture<F, B> {
        #[pin]
        future: Option<Scoped<F>>,
        check: Option<PendingCheck>,
        // How a refusal the check comes back with is held (pacing on).
        late: Option<LateRefusal>,
        permit: Option<UserPermit>,
        response: Option<Response<B>>,
        delay: Option<Pin<Box<RefusalDelay>>>,
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn admitted(future: Scoped<F>, permit: Option<UserPermit>) -> Self {
        Self {
            future: Some(future),
            check: None,
            late: None,
            permit,
            response: None,
            delay: None,
        }
    }

    pub(crate) fn checking(
        check: PendingCheck,
        late: Option<LateRefusal>,
        future: Scoped<F>,
    ) -> Self {
        Self {
            future: Some(future),
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
                    this.future.set(None);
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
        let future = this
            .future
            .as_mut()
            .as_pin_mut()
            .expect("ResponseFuture polled after completion");
        let out = std::task::ready!(future.poll(cx));
        // The request is done: its in-flight slot is free now, not when the future is
        // dropped later.
        this.permit.take();
        this.future.set(None);
        Poll::Ready(out)
    }
}
