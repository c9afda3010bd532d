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
    /// What answers the request: the inner service's future, or a response made here. One
    /// place for both, so that a response made here (a refusal) takes no room of its own in
    /// every admitted request's future, which is moved a few times before it is polled.
    #[project = AnswerProj]
    enum Answer<F, B> {
        /// The inner service's future; `Done` once it completed or was dropped.
        Inner {
            #[pin]
            future: F,
        },
        /// A response made by the layer (a refusal), taken when it is returned.
        Made {
            response: Option<Response<B>>,
        },
        /// Answered, or the inner future dropped.
        Done,
    }
}

pin_project! {
    /// The inner service's future (holding the caller's in-flight slot until it completes
    /// or is dropped), a rejection answered at once or after a hold (for a user back before
    /// its `Retry-After`), or (with limits shared in Redis) a per-user check that runs first
    /// and either admits the request or answers it. The inner future is polled and dropped
    /// with its request's context current.
    pub struct ResponseFuture<F, B> {
        #[pin]
        answer: Answer<F, B>,
        // Current while the inner future is polled or dropped.
        ctx: Option<RequestContext>,
        check: Option<PendingCheck>,
        // How a refusal the check comes back with is held (pacing on). Boxed: only a request
        // checked in Redis with pacing on has one, and every request's future moves its room.
        late: Option<Box<LateRefusal>>,
        permit: Option<UserPermit>,
        delay: Option<Pin<Box<RefusalDelay>>>,
    }

    impl<F, B> PinnedDrop for ResponseFuture<F, B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            drop_inner(this.answer, this.ctx);
        }
    }
}

/// Drops the inner future in `answer`, if it is still there, with `ctx` current.
fn drop_inner<F, B>(mut answer: Pin<&mut Answer<F, B>>, ctx: &Option<RequestContext>) {
    if let AnswerProj::Inner { .. } = answer.as_mut().project() {
        context::in_scope(ctx, || answer.set(Answer::Done));
    }
}

impl<F, B> ResponseFuture<F, B> {
    /// The inner service's future, made by `make` with `ctx` current (in its place here, not
    /// moved in after: it is the largest part of the request's future), to be polled with
    /// `ctx` current. `permit` is the caller's in-flight slot; with a `check` (limits shared
    /// in Redis) the future is first polled once the check admits the request, and `late`
    /// holds a refusal the check comes back with.
    pub(crate) fn admitted(
        ctx: RequestContext,
        permit: Option<UserPermit>,
        check: Option<PendingCheck>,
        late: Option<LateRefusal>,
        make: impl FnOnce() -> F,
    ) -> Self {
        Self {
            answer: Answer::Inner {
                future: context::made_in(&ctx, make),
            },
            ctx: Some(ctx),
            check,
            late: late.map(Box::new),
            permit,
            delay: None,
        }
    }

    /// A refusal, answered at once or once `delay` is over.
    pub(crate) fn rejected(response: Response<B>, delay: Option<Pin<Box<RefusalDelay>>>) -> Self {
        Self {
            answer: Answer::Made {
                response: Some(response),
            },
            ctx: None,
            check: None,
            late: None,
            permit: None,
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
                    drop_inner(this.answer.as_mut(), this.ctx);
                    let late = this.late.take();
                    *this.delay = late.and_then(|late| late.pace(&mut rejection));
                    this.answer.set(Answer::Made {
                        response: Some(rejection.to_static_response()),
                    });
                }
            }
        }
        if let Some(delay) = this.delay.as_mut() {
            std::task::ready!(delay.as_mut().poll(cx));
            // The hold is over: its slot goes back before the answer leaves.
            *this.delay = None;
        }
        let mut answer = this.answer;
        if let AnswerProj::Made { response } = answer.as_mut().project() {
            let response = response.take();
            answer.set(Answer::Done);
            return Poll::Ready(Ok(response.expect("ResponseFuture polled after completion")));
        }
        let out = std::task::ready!(context::in_scope(this.ctx, || {
            let polled = match answer.as_mut().project() {
                AnswerProj::Inner { future } => future.poll(cx),
                _ => panic!("ResponseFuture polled after completion"),
            };
            if polled.is_ready() {
                answer.set(Answer::Done);
            }
            polled
        }));
        // The request is done: its in-flight slot is free now, not when the future is
        // dropped later.
        this.permit.take();
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::ResponseFuture;
    use http::Response;
    use std::convert::Infallible;
    use std::future::{Future, Pending};
    use std::mem::size_of;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    type Answered = Result<Response<String>, Infallible>;

    /// An inner future of 512 bytes.
    struct Large([u8; 512]);

    impl Future for Large {
        type Output = Answered;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Answered> {
            Poll::Ready(Ok(Response::new(self.0.len().to_string())))
        }
    }

    #[test]
    fn a_refusal_shares_its_place_with_the_inner_future() {
        // With a future of no size inside, the place holds a response; with a large one, the
        // same place holds the future: the response future grows by less than the inner one.
        let empty = size_of::<ResponseFuture<Pending<Answered>, String>>();
        let large = size_of::<ResponseFuture<Large, String>>();
        assert!(
            large - empty < size_of::<Large>(),
            "the response future grew by {} bytes for a {}-byte inner future",
            large - empty,
            size_of::<Large>()
        );
    }

    #[test]
    fn the_layer_keeps_little_beside_the_answer() {
        // Beside the answer (the inner future or a response): the context, the caller's
        // permit and what a pending check needs. Every move of a request's future copies it,
        // so what only some requests need (a permit of the limits shared in Redis, a held
        // late refusal) is boxed.
        let own =
            size_of::<ResponseFuture<Pending<Answered>, String>>() - size_of::<Response<String>>();
        assert!(own <= 160, "the layer keeps {own} bytes beside the answer");
    }
}
