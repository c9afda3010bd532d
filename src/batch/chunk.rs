//! One chunk: fetched, applied and committed in one transaction on a guarded connection.

use super::outcome::BatchStage;
use super::run::ApplyFuture;
use super::source::{BatchSource, BoxError};
use crate::admission::GuardedConn;
use tokio_postgres::Transaction;

/// One committed chunk, as the loop sees it.
pub(super) struct Chunk<C, T> {
    pub(super) remaining: Option<u64>,
    pub(super) items: usize,
    pub(super) more: bool,
    pub(super) cursor: Option<C>,
    pub(super) value: Option<T>,
}

/// One chunk in one transaction. Until it commits or rolls back, the connection counts as
/// busy, so a drop in between cancels and discards it.
pub(super) async fn one_chunk<S, F, T>(
    conn: &mut GuardedConn,
    source: &mut S,
    after: Option<&S::Cursor>,
    count: bool,
    limit: usize,
    apply: &mut F,
) -> Result<Chunk<S::Cursor, T>, (BatchStage, BoxError)>
where
    S: BatchSource,
    F: for<'t> FnMut(&'t Transaction<'t>, &'t [S::Item]) -> ApplyFuture<'t, T> + Send,
    T: Send,
{
    let tx = conn
        .transaction()
        .await
        .map_err(|e| (BatchStage::Begin, e.into()))?;
    let fetched = async {
        let remaining = match count {
            true => source.remaining(&tx, after).await?,
            false => None,
        };
        // One item more than the chunk tells whether anything follows.
        let items = source.next_chunk(&tx, after, limit + 1).await?;
        Ok::<_, BoxError>((remaining, items))
    }
    .await;
    let (remaining, mut items) = match fetched {
        Ok(v) => v,
        Err(e) => {
            // A failed rollback leaves the connection marked busy: it is discarded.
            let _ = tx.rollback().await;
            return Err((BatchStage::Fetch, e));
        }
    };
    let more = items.len() > limit;
    items.truncate(limit);
    let value = if items.is_empty() {
        None
    } else {
        let raw: &Transaction<'_> = &tx;
        match apply(raw, &items).await {
            Ok(value) => Some(value),
            Err(e) => {
                let _ = tx.rollback().await;
                return Err((BatchStage::Apply, e));
            }
        }
    };
    tx.commit()
        .await
        .map_err(|e| (BatchStage::Commit, e.into()))?;
    Ok(Chunk {
        remaining,
        items: items.len(),
        more,
        cursor: items.last().map(S::cursor_of),
        value,
    })
}
