//! What happens to a connection whose query was left unfinished (its request was dropped
//! mid-query, or the query ran past its deadline): the query is cancelled on the server and
//! the connection checked, then reused; it is discarded only when it cannot be cleaned.
//!
//! Every cancel request is a new connection to the server. A wave of client timeouts during
//! an overload must not become a wave of connects, so at most [`MAX_CANCELS_IN_FLIGHT`] run
//! at once in the process; an abandoned query that finds no cancel slot within
//! [`CANCEL_SLOT_WAIT`] is not cancelled, and its connection is closed instead (the server
//! then ends the query at `statement_timeout`, or the watchdog does).

use super::SlotPermit;
use crate::criticality::Criticality;
use crate::events::{Event, EventKind};
use crate::tls::TlsConnector;
use deadpool_postgres::Object;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Most cancel requests (each its own short connection) in flight at once in the process.
pub(crate) const MAX_CANCELS_IN_FLIGHT: usize = 4;
/// The longest an abandoned query waits for a cancel slot.
pub(crate) const CANCEL_SLOT_WAIT: Duration = Duration::from_secs(1);
/// The longest a cancel request may take (connect, send, server closes).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest the check after a cancel may take; a connection that does not answer it is
/// discarded.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the check keeps the backend busy. A cancel request returns once it is written,
/// before the server has acted on it; a cancel still on its way when the check runs lands on
/// the check, never on the next borrower's query.
const SETTLE: &str = "SELECT pg_sleep(0.1)";

static CANCEL_SLOTS: Semaphore = Semaphore::const_new(MAX_CANCELS_IN_FLIGHT);

/// Why a connection is being cleaned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unfinished {
    /// The request was dropped while a query ran.
    Abandoned,
    /// A query got no answer within the query deadline (already reported).
    PastDeadline,
}

/// Cancels the unfinished query of `object`, checks the connection and returns it to the
/// pool, then releases `permit`, so the slot is given back only once its connection is
/// usable (or closed). Runs in a task; without a runtime the connection is closed at once.
pub(crate) fn clean(
    object: Object,
    permit: SlotPermit,
    class: Criticality,
    route: Option<Arc<str>>,
    why: Unfinished,
) {
    let inner = permit.inner().clone();
    if why == Unfinished::Abandoned {
        inner.metrics().abandoned.increment(1);
    }
    let report = move |cancel_sent: bool| {
        if why == Unfinished::Abandoned {
            inner
                .events()
                .publish(Event::now(EventKind::QueryAbandoned {
                    class,
                    route: route.as_deref().map(str::to_string),
                    cancel_sent,
                }));
        }
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        drop(Object::take(object));
        drop(permit);
        report(false);
        return;
    };
    let tls = permit.inner().tls().clone();
    let direct = permit.inner().direct().cloned();
    handle.spawn(async move {
        let sent = cancel(&object, direct.as_ref(), &tls).await;
        let clean = sent && settle(&object).await;
        if clean {
            // Back to the pool; its recycle check refuses one still inside a transaction.
            drop(object);
        } else {
            drop(Object::take(object));
        }
        drop(permit);
        report(sent);
    });
}

/// Checks the connection after a cancel. The cancelled query's answer, then the check's,
/// come back in order on the connection: once the check answers, nothing of the old query is
/// left in flight. The check runs long enough ([`SETTLE`]) to take a cancel that is still on
/// its way (it then fails with 57014, and a second check confirms the connection); a cancel
/// that arrives while the backend is idle is ignored by PostgreSQL.
async fn settle(object: &Object) -> bool {
    let answered = |r: Result<Result<Vec<_>, tokio_postgres::Error>, _>| matches!(r, Ok(Ok(_)));
    match tokio::time::timeout(CHECK_TIMEOUT, object.simple_query(SETTLE)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
            answered(tokio::time::timeout(CHECK_TIMEOUT, object.simple_query("SELECT 1")).await)
        }
        _ => false,
    }
}

/// Sends a cancel request for the connection's running query, waiting at most
/// [`CANCEL_SLOT_WAIT`] for one of the process's cancel slots.
async fn cancel(
    object: &Object,
    direct: Option<&tokio_postgres::Config>,
    tls: &TlsConnector,
) -> bool {
    let token = object.cancel_token();
    let Ok(Ok(_slot)) = tokio::time::timeout(CANCEL_SLOT_WAIT, CANCEL_SLOTS.acquire()).await else {
        return false;
    };
    // Through a pooler the cancel goes where the pool's connections go (see `cancel`).
    tokio::time::timeout(
        CANCEL_TIMEOUT,
        crate::cancel::send_cancel(&token, direct, tls),
    )
    .await
    .unwrap_or(false)
}
