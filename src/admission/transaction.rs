//! A transaction on a guarded connection, tracked as a whole.

use crate::Error;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A transaction opened by [`GuardedConn::transaction`](crate::GuardedConn::transaction).
///
/// It dereferences to deadpool's [`Transaction`](deadpool_postgres::Transaction) for the whole
/// query API. From `BEGIN` until [`commit`](Self::commit) or [`rollback`](Self::rollback)
/// completes, the connection counts as busy: if the request is dropped in between (client
/// gone, tower timeout) — or the transaction is dropped without either — dropping the
/// connection sends a server-side cancel and discards it, so PostgreSQL rolls the
/// transaction back and the next borrower never sees it.
pub struct GuardedTransaction<'a> {
    tx: Option<deadpool_postgres::Transaction<'a>>,
    in_flight: &'a AtomicUsize,
}

impl<'a> GuardedTransaction<'a> {
    pub(crate) async fn begin(
        client: &'a mut deadpool_postgres::ClientWrapper,
        in_flight: &'a AtomicUsize,
    ) -> Result<Self, Error> {
        in_flight.fetch_add(1, Ordering::AcqRel);
        match client.transaction().await {
            Ok(tx) => Ok(Self {
                tx: Some(tx),
                in_flight,
            }),
            Err(e) => {
                // BEGIN failed: nothing is open on the server.
                in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(Error::from_query(e))
            }
        }
    }

    /// Commits. Once it succeeds the connection is free for normal reuse; if it fails, the
    /// connection's state is unknown and it is discarded when dropped.
    pub async fn commit(mut self) -> Result<(), Error> {
        let tx = self.tx.take().expect("present until commit or rollback");
        tx.commit().await.map_err(Error::from_query)?;
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }

    /// Rolls back. Once it succeeds the connection is free for normal reuse; if it fails, it
    /// is discarded when dropped.
    pub async fn rollback(mut self) -> Result<(), Error> {
        let tx = self.tx.take().expect("present until commit or rollback");
        tx.rollback().await.map_err(Error::from_query)?;
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }
}

impl<'a> Deref for GuardedTransaction<'a> {
    type Target = deadpool_postgres::Transaction<'a>;

    fn deref(&self) -> &Self::Target {
        self.tx.as_ref().expect("present until commit or rollback")
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
