//! Group commit for call starts on sea-orm's pool (PostgreSQL; SQLite files use the writer
//! thread of `lite.rs` instead): every start writes one call row, and on a single-writer
//! database one `INSERT` per request caps throughput at one write's latency. Starts hand their
//! row to one writer task, which inserts whatever is waiting ([`gather_more`]) as one multi-row
//! `INSERT ... ON CONFLICT DO NOTHING RETURNING` and tells each start whether its row went in
//! (if not, its call id already existed: a retry, or an end that came first). A batch holds at
//! most one row per call id, so that answer is never ambiguous. Each row is committed before
//! its start is answered.
//!
//! On PostgreSQL the writer has its own connection, and unless `STICKY_SYNC=full` it commits
//! with `synchronous_commit = off`: a batch's rows are visible to every process at its commit,
//! as before, but the writer does not wait for the log's flush to the disk (the wait was half of
//! a batch's time, and a start waits for its batch). An acknowledged start then survives a crash
//! of the server process, not a crash of PostgreSQL or of its machine in the next fraction of a
//! second (`wal_writer_delay`, three times over at most): the contract of a start on a SQLite
//! file (`docs/operations.md`, Durability). Ends make the same trade in their batches'
//! transactions (`locks::begin_ends`).
//!
//! On PostgreSQL the starts' reads of the identity index are gathered the same way
//! ([`LinkReader`]), on a connection of their own.

use std::collections::HashSet;
use std::sync::Arc;

use sea_orm::sqlx::PgPool;
use sea_orm::sqlx::postgres::PgPoolOptions;
use sea_orm::{ConnAcquireErr, DatabaseConnection, DbBackend, DbErr, RuntimeErr, sqlx};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::TenantId;
use super::sql::Conn;
use super::store::{
    IdentityKey, LinksAndBodies, insert_calls, insert_calls_pg, load_links_and_bodies_pg,
};
use crate::entities::call;
use crate::error::EngineError;

/// Rows per batch at most.
const MAX_BATCH: usize = 256;

/// Starts per batch of reads at most.
const MAX_READS: usize = 256;

/// A pool of one PostgreSQL connection of its own, with the engine pool's settings; with
/// `synchronous_commit = off` when `async_commit` (see the module's comment).
///
/// It runs one statement over arrays, always planned the same way (index look-ups for each
/// element), so its plan is made once: left to choose, PostgreSQL kept planning it again for
/// every batch (a small array's own plan looks cheaper than the shared one), which cost more
/// than running it when batches were small (two processes).
fn own_connection(db: &DatabaseConnection, async_commit: bool) -> PgPool {
    let mut options = (*db.get_postgres_connection_pool().connect_options()).clone();
    options = options.options([("plan_cache_mode", "force_generic_plan")]);
    if async_commit {
        options = options.options([("synchronous_commit", "off")]);
    }
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(crate::db::ACQUIRE_TIMEOUT)
        .connect_lazy_with(options)
}

/// Moves what waits on `rx` into `into`, up to `max` in all, first waiting for one when `into`
/// is empty. `false` once the queue is closed and empty.
pub(super) async fn gather<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    into: &mut Vec<T>,
    max: usize,
) -> bool {
    if into.is_empty() {
        match rx.recv().await {
            Some(p) => into.push(p),
            None => return false,
        }
    }
    while into.len() < max {
        match rx.try_recv() {
            Ok(p) => into.push(p),
            Err(_) => break,
        }
    }
    true
}

/// [`gather`], then, as long as each turn brings more, up to [`LINGER_TURNS`] more turns of
/// the runtime (`yield_now`), so that the requests being handled queue theirs into the same
/// batch. Each statement costs the server a write to PostgreSQL's socket that wakes its
/// backend, and PostgreSQL a transaction: with a few rows a batch, a start's share of those
/// took more CPU than the start's own code (see `bench-results/HISTORY.md`). Idle, the first
/// turn brings nothing: no wait.
pub(super) async fn gather_more<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    into: &mut Vec<T>,
    max: usize,
) -> bool {
    if !gather(rx, into, max).await {
        return false;
    }
    for _ in 0..LINGER_TURNS {
        let before = into.len();
        if before >= max {
            break;
        }
        tokio::task::yield_now().await;
        gather(rx, into, max).await;
        if into.len() == before {
            break;
        }
    }
    true
}

/// How many turns of the runtime [`gather_more`] waits at most.
const LINGER_TURNS: usize = 4;

struct Pending {
    key: (i64, String),
    row: call::Model,
    reply: oneshot::Sender<Result<bool, DbErr>>,
}

/// The handle starts use to insert their call row.
pub(super) struct CallWriter {
    queue: mpsc::UnboundedSender<Pending>,
}

/// Where the writer inserts.
enum Target {
    /// PostgreSQL: a connection of its own (see the module's comment), rows bound as arrays.
    Postgres(PgPool),
    /// Elsewhere (SQLite in memory): the engine's pool.
    Pool(DatabaseConnection),
}

impl Target {
    /// On PostgreSQL a pool of one connection with the engine pool's settings, committing
    /// without waiting for the disk unless every commit must (see the module's comment).
    fn of(db: DatabaseConnection) -> Self {
        if db.get_database_backend() != DbBackend::Postgres {
            return Self::Pool(db);
        }
        Self::Postgres(own_connection(&db, !crate::db::full_sync()))
    }

    /// Inserts the rows of a batch in one statement; the keys of those inserted.
    async fn insert(&self, batch: &[Pending]) -> Result<HashSet<(i64, String)>, EngineError> {
        let rows: Vec<&call::Model> = batch.iter().map(|p| &p.row).collect();
        let inserted = match self {
            Self::Postgres(pool) => insert_calls_pg(pool, &rows).await?,
            Self::Pool(db) => insert_calls(Conn::Pool(db), &rows).await?,
        };
        Ok(inserted.into_iter().collect())
    }
}

/// What a start is told of a failed insert: the database's own error (a foreign-key violation:
/// its match named a customer erased meanwhile; an unreachable database). Not logged: it may
/// quote the row.
fn reply_error(e: &EngineError) -> DbErr {
    match e {
        EngineError::Database(db) => db.clone(),
        other => DbErr::Custom(other.to_string()),
    }
}

impl CallWriter {
    /// Starts the writer task on the current tokio runtime. `writes` is the engine's writer
    /// lock where it has one (in-memory SQLite): batches never interleave with another
    /// write's transaction there. On PostgreSQL it has none, and a batch waits for no other
    /// write: a write that holds a tenant's lock holds up none of the starts.
    pub(super) fn spawn(db: DatabaseConnection, writes: Option<Arc<Mutex<()>>>) -> Self {
        let target = Target::of(db);
        let (queue, mut rx) = mpsc::unbounded_channel::<Pending>();
        tokio::spawn(async move {
            let mut deferred: Vec<Pending> = Vec::new();
            loop {
                let mut waiting = std::mem::take(&mut deferred);
                if !gather_more(&mut rx, &mut waiting, MAX_BATCH).await {
                    break;
                }
                let mut seen = HashSet::new();
                let mut batch = Vec::with_capacity(waiting.len());
                for p in waiting {
                    if seen.insert(p.key.clone()) {
                        batch.push(p);
                    } else {
                        deferred.push(p);
                    }
                }
                let result = {
                    let _writer = super::writer_lock(writes.as_deref()).await;
                    target.insert(&batch).await
                };
                match result {
                    Ok(inserted) => {
                        for p in batch {
                            let _ = p.reply.send(Ok(inserted.contains(&p.key)));
                        }
                    }
                    Err(e) if batch.len() > 1 => {
                        // One bad row must not fail the others (of any tenant): retry alone.
                        tracing::warn!(error = %e, rows = batch.len(), "call insert batch failed; retrying row by row");
                        for p in batch {
                            let result = {
                                let _writer = super::writer_lock(writes.as_deref()).await;
                                target.insert(std::slice::from_ref(&p)).await
                            };
                            let _ = p.reply.send(
                                result
                                    .map(|inserted| inserted.contains(&p.key))
                                    .map_err(|e| reply_error(&e)),
                            );
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "call insert failed");
                        for p in batch {
                            let _ = p.reply.send(Err(reply_error(&e)));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Inserts a call row unless its call id exists; `true` when it was inserted.
    pub(super) async fn insert(&self, row: &call::Model) -> Result<bool, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                key: (row.tenant_id, row.call_id.clone()),
                row: row.clone(),
                reply,
            })
            .map_err(|_| EngineError::Corrupt("the call writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| EngineError::Corrupt("the call writer has stopped".into()))?
            .map_err(EngineError::from)
    }
}

struct LinkRead {
    tenant: TenantId,
    keys: Vec<IdentityKey>,
    reply: oneshot::Sender<Result<LinksAndBodies, DbErr>>,
}

/// The reads of starts that missed the identity cache, gathered (PostgreSQL). Each read is one
/// round trip through the pool otherwise, and most of its cost was the round trip (the
/// statement's bind and start, the socket, waking both sides), not the index look-ups. Starts
/// hand their keys to one task, which reads whatever is waiting in one statement over arrays
/// on a connection of its own (`store::load_links_and_bodies_pg`) and answers each start with
/// its own rows. A read sees every write committed before it was asked for (each statement
/// reads the latest commits), so an end's links are seen by the next start on any process.
pub(super) struct LinkReader {
    queue: mpsc::UnboundedSender<LinkRead>,
}

impl LinkReader {
    /// Starts the reading task on the current tokio runtime; `None` off PostgreSQL.
    pub(super) fn spawn(db: &DatabaseConnection) -> Option<Self> {
        if db.get_database_backend() != DbBackend::Postgres {
            return None;
        }
        let pool = own_connection(db, false);
        let (queue, mut rx) = mpsc::unbounded_channel::<LinkRead>();
        tokio::spawn(async move {
            let mut waiting = Vec::new();
            while gather_more(&mut rx, &mut waiting, MAX_READS).await {
                let batch = std::mem::take(&mut waiting);
                let read = {
                    let starts: Vec<(TenantId, &[IdentityKey])> = batch
                        .iter()
                        .map(|r| (r.tenant, r.keys.as_slice()))
                        .collect();
                    load_links_and_bodies_pg(&pool, &starts).await
                };
                match read {
                    Ok(read) => {
                        for (r, links) in batch.into_iter().zip(read) {
                            let _ = r.reply.send(Ok(links));
                        }
                    }
                    Err(e) => {
                        let e = sqlx_failure(e);
                        for r in batch {
                            let _ = r.reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Some(Self { queue })
    }

    /// The links of `keys` and the linked customers' stored documents, read with those of
    /// the other starts waiting.
    pub(super) async fn read(
        &self,
        tenant: TenantId,
        keys: Vec<IdentityKey>,
    ) -> Result<LinksAndBodies, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(LinkRead {
                tenant,
                keys,
                reply,
            })
            .map_err(|_| EngineError::Corrupt("the link reader has stopped".into()))?;
        Ok(answer
            .await
            .map_err(|_| EngineError::Corrupt("the link reader has stopped".into()))??)
    }
}

/// A failed statement on a connection of sqlx's as sea-orm's pool would report it: an
/// unreachable database is told apart (the API answers it with 503).
pub(super) fn sqlx_failure(e: sqlx::Error) -> DbErr {
    match e {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        e @ (sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed) => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))),
        e => DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer that queues one item each time it is polled, a few times.
    fn queue_on_each_turn(tx: mpsc::UnboundedSender<u32>, items: u32) {
        tokio::spawn(async move {
            for i in 1..=items {
                let _ = tx.send(i);
                tokio::task::yield_now().await;
            }
        });
    }

    #[tokio::test]
    async fn gathering_more_takes_what_other_tasks_queue_meanwhile_and_stops_when_none_comes() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(0).unwrap();
        queue_on_each_turn(tx.clone(), 2);
        let mut plain = Vec::new();
        assert!(gather(&mut rx, &mut plain, 10).await);
        assert_eq!(plain, [0], "gather takes only what waits");

        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(0).unwrap();
        queue_on_each_turn(tx.clone(), 2);
        let mut more = Vec::new();
        assert!(gather_more(&mut rx, &mut more, 10).await);
        assert_eq!(more, [0, 1, 2], "the producer's items, queued turn by turn");

        // A turn that brings nothing ends the wait: what comes later is the next batch's.
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(0).unwrap();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            let _ = tx.send(9);
        });
        let mut alone = Vec::new();
        assert!(gather_more(&mut rx, &mut alone, 10).await);
        assert_eq!(alone, [0]);
        assert_eq!(rx.recv().await, Some(9));

        // Never more than asked for, and a closed, empty queue ends.
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        queue_on_each_turn(tx, 5);
        let mut capped = Vec::new();
        assert!(gather_more(&mut rx, &mut capped, 4).await);
        assert_eq!(capped.len(), 4);
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        drop(tx);
        assert!(!gather_more(&mut rx, &mut Vec::new(), 4).await);
    }

    #[test]
    fn a_statement_that_cannot_reach_the_database_fails_as_the_pool_would_report_it() {
        assert!(matches!(
            sqlx_failure(sqlx::Error::PoolTimedOut),
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)
        ));
        assert!(matches!(
            sqlx_failure(sqlx::Error::PoolClosed),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)
        ));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            sqlx_failure(sqlx::Error::Io(refused)),
            DbErr::Conn(_)
        ));
        assert!(matches!(
            sqlx_failure(sqlx::Error::RowNotFound),
            DbErr::Exec(_)
        ));
    }
}
