//! Where a guard layer's `RequestContext` is current: while the layer calls its inner service,
//! polls the inner future and drops it, and nowhere else; an inner layer's context replaces
//! an outer one's for the time it runs and gives it back, also when the handler panics.

mod common;

use common::offline::{generous_guard, request, trusted_user_header, Body};
use futures_util::FutureExt;
use http::{Request, Response};
use poolguard::{Criticality, RequestContext};
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tower::{Service, ServiceBuilder};

/// The class current (if any) at each moment a [`Recorder`] notes.
type Seen = Arc<Mutex<Vec<(&'static str, Option<Criticality>)>>>;

fn current_class() -> Option<Criticality> {
    RequestContext::current().map(|ctx| ctx.class)
}

/// A future that notes the current class when it is polled and when it is dropped; its first
/// poll is `Pending`, its second answers (or panics, with `panics`).
struct Recorder {
    seen: Seen,
    polls: u32,
    panics: bool,
}

impl Future for Recorder {
    type Output = Result<Response<Body>, Infallible>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.seen.lock().unwrap().push(("poll", current_class()));
        self.polls += 1;
        if self.polls == 1 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        assert!(!self.panics, "the handler panics");
        Poll::Ready(Ok(Response::new(String::new())))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.seen.lock().unwrap().push(("drop", current_class()));
    }
}

/// A service whose futures are [`Recorder`]s; it notes the class current when it is called.
fn recording(
    seen: &Seen,
    panics: bool,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = Recorder> + Clone
{
    let seen = seen.clone();
    tower::service_fn(move |_req: Request<Body>| {
        seen.lock().unwrap().push(("call", current_class()));
        Recorder {
            seen: seen.clone(),
            polls: 0,
            panics,
        }
    })
}

fn taken(seen: &Seen) -> Vec<(&'static str, Option<Criticality>)> {
    std::mem::take(&mut *seen.lock().unwrap())
}

#[tokio::test]
async fn the_context_is_current_while_the_inner_service_is_called_polled_and_dropped() {
    let guard = generous_guard();
    let seen = Seen::default();
    for copy in [true, false] {
        let mut svc = ServiceBuilder::new()
            .layer(
                guard
                    .critical()
                    .key_extractor(trusted_user_header())
                    .context_extension(copy),
            )
            .service(recording(&seen, false));

        // Answered: called, polled twice, dropped once it is ready.
        let mut answered = svc.call(request("user-1"));
        assert_eq!(current_class(), None, "not current between call and poll");
        assert!((&mut answered).now_or_never().is_none());
        assert_eq!(current_class(), None, "not current between polls");
        assert!((&mut answered).now_or_never().is_some());
        drop(answered);

        // Dropped after one poll, before it answers.
        let mut abandoned = svc.call(request("user-1"));
        assert!((&mut abandoned).now_or_never().is_none());
        drop(abandoned);

        let critical = Some(Criticality::Critical);
        assert_eq!(
            taken(&seen),
            [
                ("call", critical),
                ("poll", critical),
                ("poll", critical),
                ("drop", critical),
                ("call", critical),
                ("poll", critical),
                ("drop", critical),
            ],
            "context_extension({copy})"
        );
        assert_eq!(current_class(), None);
    }
}

#[tokio::test]
async fn an_inner_layer_gives_the_outer_context_back_even_when_its_handler_panics() {
    let guard = generous_guard();
    let seen = Seen::default();
    let inner = ServiceBuilder::new()
        .layer(
            guard
                .critical()
                .key_extractor(trusted_user_header())
                .context_extension(false),
        )
        .service(recording(&seen, true));
    // The outer layer's inner service: notes what is current around the inner layer's call
    // and poll, and catches the inner handler's panic.
    let outer_seen = seen.clone();
    let mut svc = ServiceBuilder::new()
        .layer(
            guard
                .standard()
                .key_extractor(trusted_user_header())
                .context_extension(false),
        )
        .service(tower::service_fn(move |req: Request<Body>| {
            let mut inner = inner.clone();
            let seen = outer_seen.clone();
            seen.lock().unwrap().push(("outer call", current_class()));
            let mut future = inner.call(req);
            seen.lock().unwrap().push(("outer call", current_class()));
            async move {
                let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    (&mut future).now_or_never();
                    (&mut future).now_or_never();
                }));
                assert!(polled.is_err(), "the inner handler panicked");
                seen.lock().unwrap().push(("outer poll", current_class()));
                drop(future);
                seen.lock().unwrap().push(("outer poll", current_class()));
                Ok::<_, Infallible>(Response::new(String::new()))
            }
        }));

    let response = svc.call(request("user-1")).await.unwrap();
    assert_eq!(response.status(), 200);
    let (standard, critical) = (Some(Criticality::Standard), Some(Criticality::Critical));
    assert_eq!(
        taken(&seen),
        [
            ("outer call", standard),
            ("call", critical),
            ("outer call", standard),
            ("poll", critical),
            ("poll", critical),
            ("outer poll", standard),
            ("drop", critical),
            ("outer poll", standard),
        ]
    );
    assert_eq!(current_class(), None);
}
