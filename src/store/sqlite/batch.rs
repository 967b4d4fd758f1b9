//! Group commit: writes that arrive while another batch holds the
//! connection are committed together, in one IMMEDIATE transaction, so many
//! targets deploying at once share one fsync instead of queueing for one each.
//!
//! What must stay true:
//! - each write runs in a savepoint of its own, so one that fails (a stale
//!   compare-and-set, a busy target) leaves no trace while the others in the
//!   batch still commit;
//! - a caller hears of its write only after the batch's COMMIT returned, and
//!   a failed COMMIT fails every write of the batch: none of them happened;
//! - writes run in the order they were queued, each seeing the ones before.

use crate::store::StoreError;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::sync::{Mutex, PoisonError};
use tokio::sync::oneshot;

/// A queued write. It runs inside the batch's transaction (or is told the
/// batch could not begin) and answers how to tell its caller the outcome
/// once the commit is known.
pub(super) type Job = Box<dyn FnOnce(Result<&Transaction<'_>, &StoreError>) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// Wrap `f` as a job; the receiver gets its outcome after the commit.
pub(super) fn job<T, F>(f: F) -> (Job, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    F: FnOnce(&Transaction) -> Result<T, StoreError> + Send + 'static,
{
    let (sender, receiver) = oneshot::channel();
    let job: Job = Box::new(move |batch| {
        let tx = match batch {
            Ok(tx) => tx,
            Err(e) => {
                let _ = sender.send(Err(same(e)));
                return Box::new(|_| {});
            }
        };
        let outcome = in_savepoint(tx, f);
        Box::new(move |committed| {
            let _ = sender.send(committed.map_err(same).and(outcome));
        })
    });
    (job, receiver)
}

/// Run every queued job in one transaction and commit it. A flush that
/// finds the queue empty does nothing: an earlier one took its jobs.
pub(super) fn flush(conn: &Mutex<Connection>, queue: &Mutex<Vec<Job>>) {
    // A panic while holding the lock dropped its transaction, which rolled
    // back: the connection is still sound.
    let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
    let jobs = std::mem::take(&mut *queue.lock().unwrap_or_else(PoisonError::into_inner));
    if jobs.is_empty() {
        return;
    }
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = StoreError::from(e);
            for job in jobs {
                job(Err(&e))(Err(&e));
            }
            return;
        }
    };
    let replies: Vec<Reply> = jobs.into_iter().map(|job| job(Ok(&tx))).collect();
    let committed = tx.commit().map_err(StoreError::from);
    for reply in replies {
        reply(committed.as_ref().map(|_| ()));
    }
}

/// `f` inside a savepoint: kept if it succeeds, undone if it fails.
fn in_savepoint<T>(
    tx: &Transaction,
    f: impl FnOnce(&Transaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    tx.execute_batch("SAVEPOINT write")?;
    let outcome = f(tx).and_then(|value| {
        tx.execute_batch("RELEASE write")?;
        Ok(value)
    });
    if outcome.is_err() {
        // Undo this write only; the batch goes on without it.
        tx.execute_batch("ROLLBACK TO write; RELEASE write")?;
    }
    outcome
}

/// The batch's error for one more caller. Only connection-level failures
/// (begin, commit) are shared, and those are `Unavailable` or `Backend`.
fn same(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
        other => StoreError::Backend(other.to_string()),
    }
}
