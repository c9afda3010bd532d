//! A transaction on a guarded connection, with tracked query methods.

use super::tracked::tracked_queries;
use super::tracker::Tracker;
use crate::error::Error;
use std::ops::{Deref, DerefMut};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, SimpleQueryMessage, ToStatement};

/// A transaction opened by [`GuardedConn::transaction`](crate::GuardedConn::transaction).
///
/// Its own `query`, `query_one`, `query_opt`, `execute`, `batch_execute`, `simple_query`,
/// [`commit`](Self::commit) and [`rollback`](Self::rollback) are tracked like the
/// connection's: bounded by the query deadline, and if the request is dropped while one of
/// them runs, the query is cancelled on the server and the connection checked before reuse.
/// A query that fails (say, on a constraint) is only an error: the transaction is rolled back
/// when it is dropped (or with [`rollback`](Self::rollback)) and the connection is reused as
/// usual. Dropped without commit, between queries, it sends `ROLLBACK`, and the pool's
/// recycle check refuses a connection still inside a transaction.
///
/// It dereferences to deadpool's [`Transaction`](deadpool_postgres::Transaction) for the rest
/// of the API (prepared statements, savepoints, `COPY`), which is not tracked.
pub struct GuardedTransaction<'a> {
    tx: Option<deadpool_postgres::Transaction<'a>>,
    tracker: Tracker<'a>,
}

impl<'a> GuardedTransaction<'a> {
    pub(crate) async fn begin(
        client: &'a mut deadpool_postgres::ClientWrapper,
        tracker: Tracker<'a>,
    ) -> Result<Self, Error> {
        let tx = tracker.run(|| client.transaction()).await?;
        Ok(Self {
            tx: Some(tx),
            tracker,
        })
    }

    fn tx(&self) -> &deadpool_postgres::Transaction<'a> {
        self.tx.as_ref().expect("present until commit or rollback")
    }

    fn tracker(&self) -> Tracker<'a> {
        self.tracker
    }

    tracked_queries!(tracker, tx);

    /// Commits (tracked). If it fails, the transaction is over on the server and the
    /// connection is reused as usual.
    pub async fn commit(mut self) -> Result<(), Error> {
        let tx = self.tx.take().expect("present until commit or rollback");
        self.tracker.run(move || tx.commit()).await
    }

    /// Rolls back (tracked).
    pub async fn rollback(mut self) -> Result<(), Error> {
        let tx = self.tx.take().expect("present until commit or rollback");
        self.tracker.run(move || tx.rollback()).await
    }
}

impl<'a> Deref for GuardedTransaction<'a> {
    type Target = deadpool_postgres::Transaction<'a>;

    fn deref(&self) -> &Self::Target {
        self.tx()
    }
}

impl DerefMut for GuardedTransaction<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.tx.as_mut().expect("present until commit or rollback")
    }
}

impl std::fmt::Debug for GuardedTransaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedTransaction")
            .field("open", &self.tx.is_some())
            .finish()
    }
}
