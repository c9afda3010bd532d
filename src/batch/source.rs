//! Where a batch's items come from: a source that fetches the next chunk after a resumable
//! cursor.

use std::future::Future;
use tokio_postgres::Transaction;

/// The error type sources and apply functions return: anything, boxed (`?` converts).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A resumable, ordered source of work items.
///
/// Items must come in a stable order with a cursor that only grows along it (typically the
/// primary key): [`next_chunk`](BatchSource::next_chunk) returns up to `limit` items strictly
/// after `after`, in that order. Items are fetched inside the chunk's transaction, so a
/// `FOR UPDATE` (or `FOR UPDATE SKIP LOCKED`) in the query holds them until the commit.
///
/// Implement the methods with `async fn`; the futures must be `Send` (no `Rc`, no
/// `std::sync::MutexGuard` held across an `.await`).
///
/// ```no_run
/// use poolguard::batch::{BatchSource, BoxError};
/// use tokio_postgres::Transaction;
///
/// /// READY messages, by id.
/// struct Ready;
///
/// impl BatchSource for Ready {
///     type Item = i64;
///     type Cursor = i64;
///
///     async fn next_chunk(
///         &mut self,
///         tx: &Transaction<'_>,
///         after: Option<&i64>,
///         limit: usize,
///     ) -> Result<Vec<i64>, BoxError> {
///         let rows = tx
///             .query(
///                 "SELECT id FROM messages WHERE status = 'READY' AND id > $1
///                  ORDER BY id LIMIT $2",
///                 &[&after.copied().unwrap_or(0), &(limit as i64)],
///             )
///             .await?;
///         Ok(rows.iter().map(|r| r.get(0)).collect())
///     }
///
///     fn cursor_of(item: &i64) -> i64 {
///         *item
///     }
/// }
/// ```
pub trait BatchSource: Send {
    /// One unit of work (a row id, a row).
    type Item: Send + Sync;
    /// The resume position: the cursor of the last item handled.
    type Cursor: Clone + Send + Sync;

    /// Up to `limit` items strictly after `after` (from the start when `None`), in cursor
    /// order. Fewer than `limit` items means the source is exhausted.
    fn next_chunk(
        &mut self,
        tx: &Transaction<'_>,
        after: Option<&Self::Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Self::Item>, BoxError>> + Send;

    /// The cursor of an item.
    fn cursor_of(item: &Self::Item) -> Self::Cursor;

    /// How many items are left after `after`, if cheap to count; called once per call, in
    /// the first chunk's transaction. The default does not count (`None`), and progress then
    /// reports no totals.
    fn remaining(
        &mut self,
        tx: &Transaction<'_>,
        after: Option<&Self::Cursor>,
    ) -> impl Future<Output = Result<Option<u64>, BoxError>> + Send {
        let _ = (tx, after);
        async { Ok(None) }
    }
}
