//! The SQLite fast path: the call path's statements run on `rusqlite` connections of this
//! process instead of going through sqlx's per-connection worker threads.
//!
//! - Reads (a call start's identity and context look-ups) run on the calling task's thread, on
//!   a connection taken from a small pool of read connections. In WAL mode they never wait for
//!   the writer; each takes microseconds.
//! - Writes (a whole end, the row of a start whose call id is already stored, open calls'
//!   rows moving into `calls`) go to one writer thread, which owns the only write connection.
//!   It takes every job waiting, applies them in one transaction and commits once: group
//!   commit (a job that fails is rolled back alone, see [`Guard`]). A new start's row is not
//!   written here: it waits in the open calls' journal until its end (see
//!   `engine/open_calls.rs`). Each
//!   job is answered after the commit (and after the read caches forgot what it changed; on
//!   this path they are off, see [`Caches::off`]), so a killed process loses nothing it
//!   acknowledged and the next start reads what an end saved.
//!
//! - Checkpoints (copying the write-ahead log back into the database file, with its fsyncs)
//!   run on a third thread, never inside the writer's commit: SQLite's automatic checkpoint
//!   would stall every job queued behind it (the tail latency of starts and ends). The
//!   checkpoint thread cannot restart the log itself while the writer keeps appending (SQLite
//!   starts the log over only when a write transaction begins with all of it copied), so when
//!   the log is long it asks the writer to copy the last few frames between two batches: the
//!   writer's next transaction then starts the log over, which keeps it bounded (reads search
//!   the log's index for every page they read).
//!
//! A bulk import batch is a job of the writer too (in its own savepoint). Other writes
//! (erasure, unlink, resolving an intent, keys) stay on sea-orm's pool; SQLite's own write
//! lock (`BEGIN IMMEDIATE`, busy timeout) orders them with the writer thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::sync::{mpsc, oneshot};

use super::cache::{CachedCustomer, Caches};
use super::context;
use super::end::{EndNumbers, end_call_in};
use super::import::{ImportReport, ImportedCustomer, import_in};
use super::locks::Locking;
use super::open_calls::{Limits, OpenCalls, Opened};
use super::sql::{Conn, LiteConn, lite_err};
use super::start::{Recorded, after_conflict, insert_start};
use super::{EndOutcome, TenantId};
use crate::commands::EndCall;
use crate::entities::call;
use crate::error::EngineError;

/// Jobs per transaction at most.
const MAX_BATCH: usize = 256;
/// Idle read connections kept open. A reader is held only while statements run (never across
/// an await that can wait), so few are in use at once; more are opened under a burst and the
/// surplus closed.
const IDLE_READERS: usize = 16;
/// How long the checkpoint thread lets commits accumulate before copying them.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(10);
/// Log length (frames of one page) from which the log is started over: 65,536 pages, 256 MB
/// on disk. Each restart stalls the writer for a copy and two fsyncs: 1.5-6.5 ms under load
/// at 1M customers, now that the checkpoint thread flushes the file after each pass (before,
/// 100-350 ms). A longer log costs reads a search of more of its index's hash tables (16
/// here, one per 4,096 frames); a shorter one restarts more often: at 64 MB, alternating runs
/// showed no gain for starts and a p99 of ends of 35 against 13 ms; at 1 GB, known starts
/// cost 293-298 against 207-250 µs of CPU.
const RESTART_FRAMES: i64 = 65_536;
/// The writer connection's page cache, in KiB (as `PRAGMA cache_size` takes it: negative).
/// At 1M customers (a 4.5 GB file) the inner pages of the tables and indexes an end walks
/// are some 30-40 MB: with 24 MB the writer read part of them again on every end (ends
/// 2550/2623 vs 2885/2971 per second, alternating runs); the server's RSS grows by the same
/// 40 MB.
const WRITER_CACHE_KIB: i64 = -64 * 1024;

enum Job {
    Start {
        call: Box<call::Model>,
        reply: oneshot::Sender<Result<Recorded, EngineError>>,
    },
    End {
        tenant: TenantId,
        cmd: Box<EndCall>,
        numbers: EndNumbers,
        reply: oneshot::Sender<Result<EndOutcome, EngineError>>,
    },
    /// A customer's context document read from the tables, to store if none was written
    /// meanwhile (see `engine/context.rs`). Nobody waits for it.
    Fill(Arc<CachedCustomer>),
    /// Open calls' start rows to move into `calls` (see `engine/open_calls.rs`): a retiring
    /// journal segment's (nobody waits), or those of a customer about to be erased or exported.
    Move {
        rows: Vec<call::Model>,
        reply: Option<oneshot::Sender<Result<(), EngineError>>>,
    },
    /// A bulk import batch (see `engine/import.rs`).
    Import {
        tenant: TenantId,
        batch: Vec<ImportedCustomer>,
        reply: oneshot::Sender<Result<ImportReport, EngineError>>,
    },
}

/// Direct access to a SQLite database file.
pub(super) struct Lite {
    path: PathBuf,
    idle: Mutex<Vec<LiteConn>>,
    jobs: mpsc::UnboundedSender<Job>,
    open: Arc<OpenCalls>,
}

/// A read connection on loan; it goes back to the pool when dropped.
pub(super) struct Reader<'a> {
    lite: &'a Lite,
    conn: Option<LiteConn>,
}

impl Reader<'_> {
    pub(super) fn conn(&self) -> Conn<'_> {
        Conn::Lite(
            self.conn
                .as_ref()
                .expect("a reader holds its connection until dropped"),
        )
    }

    /// Its next statements share one read transaction (one snapshot), which ends when it is
    /// dropped.
    pub(super) fn begin(&self) -> Result<(), EngineError> {
        let conn = self
            .conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
            .lock()
            .map_err(|_| EngineError::Corrupt("a read connection's thread panicked".into()))?;
        conn.prepare_cached("BEGIN")
            .and_then(|mut begin| begin.execute([]))
            .map(drop)
            .map_err(lite_err)
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // A read transaction left open would hold its snapshot (and the log) while pooled.
        let ended = conn.lock().is_ok_and(|c| {
            c.is_autocommit()
                || c.prepare_cached("ROLLBACK")
                    .and_then(|mut end| end.execute([]))
                    .is_ok()
                    && c.is_autocommit()
        });
        if ended
            && let Ok(mut idle) = self.lite.idle.lock()
            && idle.len() < IDLE_READERS
        {
            idle.push(conn);
        }
    }
}

fn open(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_secs(10))?;
    // The same durability as the pool: WAL (set on the file by the pool), and `NORMAL`
    // synchronisation, which survives a crash of the process (`FULL` with `STICKY_SYNC=full`,
    // which survives a power loss too).
    let sync = if crate::db::full_sync() {
        "FULL"
    } else {
        "NORMAL"
    };
    c.pragma_update(None, "synchronous", sync)?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    if read_only {
        c.pragma_update(None, "query_only", "ON")?;
    }
    c.set_prepared_statement_cache_capacity(64);
    Ok(c)
}

/// Whether `calls` holds a row of this call.
async fn stored(c: Conn<'_>, call: &call::Model) -> Result<bool, EngineError> {
    Ok(c.query_one(
        "SELECT 1 FROM calls WHERE tenant_id = $1 AND call_id = $2",
        &[call.tenant_id.into(), call.call_id.as_str().into()],
        |_| Ok(()),
    )
    .await?
    .is_some())
}

fn rolled_back() -> EngineError {
    EngineError::Corrupt("SQLite rolled the write transaction back".into())
}

fn writer_gone() -> EngineError {
    EngineError::Corrupt("the SQLite writer thread has stopped".into())
}

/// The file behind a SQLite pool; `None` for an in-memory database.
async fn database_file(db: &DatabaseConnection) -> Option<PathBuf> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT file FROM pragma_database_list WHERE name = 'main'",
        ))
        .await
        .ok()??;
    let file: String = row.try_get_by_index(0).ok()?;
    (!file.is_empty()).then(|| PathBuf::from(file))
}

impl Lite {
    /// Direct access to the file behind `db`, when it is a SQLite file. Starts the writer
    /// thread.
    pub(super) async fn open(
        db: &DatabaseConnection,
        caches: Arc<Caches>,
        limits: Limits,
    ) -> Result<Option<Self>, EngineError> {
        if db.get_database_backend() != DbBackend::Sqlite {
            return Ok(None);
        }
        let Some(path) = database_file(db).await else {
            return Ok(None);
        };
        let writer = open(&path, false).map_err(lite_err)?;
        // Checkpoints run on their own thread (see the module documentation).
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(lite_err)?;
        // The writer's page cache survives its own commits (readers' caches do not: SQLite
        // drops a connection's cache whenever another one committed), so it is the one worth
        // making large: it holds the inner pages of every index an end walks.
        writer
            .pragma_update(None, "cache_size", WRITER_CACHE_KIB)
            .map_err(lite_err)?;
        // SQLite keeps the pages a savepoint (or a statement of several rows) changes in a
        // sub-journal, to roll it back alone. By default that journal moves to a temporary
        // file past 64 KiB, which one end reaches: profiled at 1M customers, when every job
        // ran in a savepoint, those file writes were 16% of the writer thread, more than the
        // log itself. In memory, it holds what one job changed (an end: tens of pages) and is
        // emptied at its release.
        writer
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(lite_err)?;
        let open_calls = Arc::new(OpenCalls::open(&path, limits, |tenant, call_id| {
            writer
                .query_row(
                    "SELECT started_at IS NOT NULL FROM calls WHERE tenant_id = ?1 AND call_id = ?2",
                    rusqlite::params![tenant, call_id],
                    |r| r.get::<_, bool>(0),
                )
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(false),
                    e => Err(lite_err(e)),
                })
        })?);
        let checkpointer = open(&path, false).map_err(lite_err)?;
        // For the checkpoint thread's flush (`fdatasync` flushes the file, whichever descriptor;
        // Windows wants one opened for writing). Nothing is written through it.
        let database = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .inspect_err(|e| tracing::warn!(error = %e, "cannot open the SQLite file to flush it"))
            .ok();
        let (committed, commits) = std_mpsc::sync_channel(1);
        let restart = Arc::new(AtomicBool::new(false));
        let checkpoints = Checkpoints {
            committed,
            restart: restart.clone(),
        };
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, database.as_ref(), &commits, &restart))
            .map_err(|e| {
                EngineError::Corrupt(format!("cannot start the SQLite checkpoints: {e}"))
            })?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let writer_open = open_calls.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                write_loop(
                    &Mutex::new(writer),
                    rx,
                    &Shared {
                        caches: &caches,
                        open: &writer_open,
                    },
                    &checkpoints,
                );
            })
            .map_err(|e| EngineError::Corrupt(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Some(Self {
            path,
            idle: Mutex::new(Vec::new()),
            jobs,
            open: open_calls,
        }))
    }

    /// A read connection.
    pub(super) fn reader(&self) -> Result<Reader<'_>, EngineError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match pooled {
            Some(c) => c,
            None => Mutex::new(open(&self.path, true).map_err(lite_err)?),
        };
        Ok(Reader {
            lite: self,
            conn: Some(conn),
        })
    }

    /// Records a start: in the open calls' journal when its call id is new, else (a start
    /// after its call's end, or after its row moved into `calls`) through the writer.
    ///
    /// `reads` is the start's read connection, and `ends` what [`Lite::ends_seen`] said before
    /// its first read: the read transaction it is in may have begun before an end committed,
    /// and then the start looks again once its record is appended. The caller looked for the
    /// call in the journal before that transaction began (a call moved out of the journal
    /// since then is in its snapshot); the look here finds a start of the same call recorded
    /// meanwhile.
    pub(super) async fn record_start(
        &self,
        call: call::Model,
        reads: Conn<'_>,
        ends: u64,
    ) -> Result<Recorded, EngineError> {
        if let Some(earlier) = self.open.get(call.tenant_id, &call.call_id)? {
            return Ok(Recorded::Earlier(Box::new(earlier)));
        }
        if stored(reads, &call).await? {
            return self.write_start(call).await;
        }
        match self.open.insert(&call)? {
            Opened::New => {}
            Opened::Earlier(row) => return Ok(Recorded::Earlier(row)),
        }
        // An end of this call may have committed its row since we looked (and not seen this
        // start): then the start is recorded the way a start after its end is.
        if self.open.ends_seen() != ends && stored(self.reader()?.conn(), &call).await? {
            let key = (call.tenant_id, call.call_id.clone());
            let recorded = self.write_start(call).await?;
            self.open.forget([(key.0, key.1.as_str())]);
            return Ok(recorded);
        }
        Ok(Recorded::New)
    }

    /// See [`OpenCalls::ends_seen`].
    pub(super) fn ends_seen(&self) -> u64 {
        self.open.ends_seen()
    }

    /// A start's call row written by the writer (see [`insert_start`]).
    async fn write_start(&self, call: call::Model) -> Result<Recorded, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Start {
                call: Box::new(call),
                reply,
            })
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Applies an end.
    pub(super) async fn end_call(
        &self,
        tenant: TenantId,
        cmd: EndCall,
        numbers: EndNumbers,
    ) -> Result<EndOutcome, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::End {
                tenant,
                cmd: Box::new(cmd),
                numbers,
                reply,
            })
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Imports a batch, as one job of the writer (in its own savepoint).
    pub(super) async fn import(
        &self,
        tenant: TenantId,
        batch: Vec<ImportedCustomer>,
    ) -> Result<ImportReport, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Import {
                tenant,
                batch,
                reply,
            })
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// An open call's start row, if the call is open.
    pub(super) fn open_call(
        &self,
        tenant: TenantId,
        call_id: &str,
    ) -> Result<Option<call::Model>, EngineError> {
        self.open.get(tenant.0, call_id)
    }

    /// Moves every open call into `calls`, and lets no record written before outlive this
    /// (a backup of the file alone then holds every call).
    pub(super) async fn move_all(&self) -> Result<(), EngineError> {
        self.open.close_segment()?;
        for rows in self.open.all()?.chunks(MAX_BATCH) {
            self.move_rows(rows.to_vec()).await?;
        }
        Ok(())
    }

    /// The tenant's open calls from `number`.
    pub(super) fn open_with_number(
        &self,
        tenant: TenantId,
        number: &str,
    ) -> Result<Vec<call::Model>, EngineError> {
        self.open.with_number(tenant.0, number)
    }

    /// The open calls whose start matched `customer`.
    pub(super) fn open_matching(
        &self,
        tenant: TenantId,
        customer: i64,
    ) -> Result<Vec<call::Model>, EngineError> {
        self.open.matching(tenant.0, customer)
    }

    /// The tenant's open calls that may have started more than `age` ago.
    pub(super) fn open_older_than(
        &self,
        tenant: TenantId,
        age: std::time::Duration,
    ) -> Result<Vec<call::Model>, EngineError> {
        self.open.older_than(tenant.0, age)
    }

    /// Moves these open calls into `calls` (committed when this returns).
    pub(super) async fn move_open(&self, rows: Vec<call::Model>) -> Result<(), EngineError> {
        for rows in rows.chunks(MAX_BATCH) {
            self.move_rows(rows.to_vec()).await?;
        }
        Ok(())
    }

    /// Overwrites the journal's records of these calls (calls with a row in `calls`, about
    /// to be erased or just erased; see [`OpenCalls::scrub`]), off the runtime's threads.
    pub(super) async fn scrub(
        &self,
        tenant: TenantId,
        calls: std::collections::HashSet<String>,
        older_than: Option<std::time::Duration>,
    ) -> Result<usize, EngineError> {
        if calls.is_empty() {
            return Ok(0);
        }
        let open = Arc::clone(&self.open);
        tokio::task::spawn_blocking(move || open.scrub(tenant.0, &calls, older_than))
            .await
            .map_err(|_| EngineError::Corrupt("open calls: a thread panicked".into()))?
    }

    async fn move_rows(&self, rows: Vec<call::Model>) -> Result<(), EngineError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Move {
                rows,
                reply: Some(reply),
            })
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// How many calls are open (started, not ended, not yet in `calls`).
    pub(super) fn open_calls(&self) -> usize {
        self.open.len()
    }

    /// The open calls' journal's size in bytes.
    pub(super) fn journal_bytes(&self) -> u64 {
        self.open.bytes()
    }

    /// Stores a context document read from the tables, in a later batch.
    pub(super) fn fill(&self, customer: Arc<CachedCustomer>) {
        let _ = self.jobs.send(Job::Fill(customer));
    }
}

/// The writer's side of the checkpoint thread.
struct Checkpoints {
    /// Tells the checkpoint thread that a transaction committed (a full channel means it
    /// already knows).
    committed: std_mpsc::SyncSender<()>,
    /// Set by the checkpoint thread when the log is long enough to start over.
    restart: Arc<AtomicBool>,
}

impl Checkpoints {
    /// After a commit (and its answers): wakes the checkpoint thread; when it asked for a
    /// restart, copies the last frames here, between two transactions, so that the writer's
    /// next transaction starts the log over.
    fn after_commit(&self, conn: &LiteConn) {
        let _ = self.committed.try_send(());
        if self.restart.swap(false, Ordering::Relaxed)
            && let Ok(c) = conn.lock()
            && let Err(e) = passive_checkpoint(&c)
        {
            tracing::warn!(error = %e, "SQLite checkpoint failed");
        }
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: copies what no reader still needs, without waiting for
/// anyone. Returns the log's length and how much of it is copied, in frames.
fn passive_checkpoint(c: &Connection) -> rusqlite::Result<(i64, i64)> {
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// The checkpoint thread: after commits, copies the log into the database file and flushes
/// what it copied to disk (`database`: the file, for that flush); stops when the writer thread
/// does.
///
/// SQLite itself flushes the database file only at the end of a checkpoint that copied the
/// whole log, which under steady writes is only the writer's copy before a restart: that
/// flush then wrote everything copied since the last restart (tens of thousands of random
/// pages at 1M customers) while every job waited, 100-350 ms under load on this machine.
/// Flushing here after each pass leaves the restart only its own few pages.
fn checkpoint_loop(
    conn: &Connection,
    database: Option<&std::fs::File>,
    commits: &std_mpsc::Receiver<()>,
    restart: &AtomicBool,
) {
    let mut copied = None;
    while commits.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_PAUSE);
        while commits.try_recv().is_ok() {}
        copied = pass(conn, restart, RESTART_FRAMES, copied, || {
            if let Some(file) = database
                && let Err(e) = file.sync_data()
            {
                tracing::warn!(error = %e, "cannot flush the SQLite file after a checkpoint");
            }
        });
    }
}

/// Rounds of copying and flushing before a restart is asked for (see [`pass`]).
const RESTART_ROUNDS: usize = 3;
/// A round that copied fewer frames than this (16 MB) ends them: its flush was short, so
/// what the writer is left to copy (what was written during it) is little.
const SHORT_ROUND_FRAMES: i64 = 4096;

/// One pass of the checkpoint thread: a checkpoint, then `flush` if it copied frames (the log
/// had `before` of them copied after the previous pass). Once the log is `restart_frames`
/// long, it asks the writer for a restart, after more rounds of copying and flushing what was
/// written during the previous flush, until a round copies little (at most
/// [`RESTART_ROUNDS`]). Returns how many frames of the log are copied now.
///
/// The writer's copy before a restart ends with a flush of its own while every job waits:
/// asked for before this thread's flush, it waited for that flush (20-80 ms at 1M customers
/// under ends, timed); asked for right after it, it copied and flushed everything written
/// during it. No restart is asked for while a reader keeps frames from being copied: the
/// writer could not copy them either.
fn pass(
    conn: &Connection,
    restart: &AtomicBool,
    restart_frames: i64,
    before: Option<i64>,
    flush: impl Fn(),
) -> Option<i64> {
    let (mut log, mut copied) = checkpoint(conn)?;
    if copied > 0 && Some(copied) != before {
        flush();
    }
    if log < restart_frames || copied < log {
        return Some(copied);
    }
    for _ in 1..RESTART_ROUNDS {
        let (now_log, now_copied) = checkpoint(conn)?;
        // A log that started over (an idle writer's transaction does) holds only new frames.
        let new = if now_log >= log && now_copied >= copied {
            now_copied - copied
        } else {
            now_copied
        };
        (log, copied) = (now_log, now_copied);
        if copied < log {
            return Some(copied);
        }
        if new > 0 {
            flush();
        }
        if new < SHORT_ROUND_FRAMES {
            break;
        }
    }
    restart.store(true, Ordering::Relaxed);
    Some(copied)
}

/// One checkpoint: the log's length and how much of it is copied, in frames.
fn checkpoint(conn: &Connection) -> Option<(i64, i64)> {
    passive_checkpoint(conn)
        .inspect_err(|e| tracing::warn!(error = %e, "SQLite checkpoint failed"))
        .ok()
}

/// What the writer thread shares with the engine.
struct Shared<'a> {
    caches: &'a Caches,
    open: &'a OpenCalls,
}

/// How long an idle writer waits for a job before it looks for a journal segment to retire
/// (starts do not wake it: they write into the journal). When neither a job nor a start came
/// for that long, the server is idle, and every open call retires.
const IDLE_LOOK: Duration = Duration::from_millis(100);

/// The writer thread: batches until the engine is dropped. After each batch, and at least
/// every [`IDLE_LOOK`], it looks for a journal segment to retire; while one retires, it moves
/// its open calls into `calls` a batch at a time, and the next of those batches waits until
/// the writer has had [`RETIRE_PAUSE`] times as long for other jobs (see [`Retire`]).
fn write_loop(
    conn: &LiteConn,
    mut rx: mpsc::UnboundedReceiver<Job>,
    shared: &Shared<'_>,
    checkpoints: &Checkpoints,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the SQLite writer's runtime");
            return;
        }
    };
    let mut retire = Retire::Look;
    let mut activity = Activity {
        busy: Instant::now(),
        starts: shared.open.appended(),
    };
    loop {
        let wait = match rx.try_recv() {
            Ok(job) => Ok(Some(job)),
            Err(mpsc::error::TryRecvError::Disconnected) => return,
            Err(mpsc::error::TryRecvError::Empty) => Err(retire.wait(Instant::now())),
        };
        let first = match wait {
            Ok(job) => job,
            Err(pause) if pause.is_zero() => None,
            Err(pause) => {
                match runtime.block_on(async { tokio::time::timeout(pause, rx.recv()).await }) {
                    Ok(Some(job)) => Some(job),
                    Ok(None) => return,
                    Err(_) => None,
                }
            }
        };
        if let Some(first) = first {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            // What failed in it was answered (or logged) already.
            let done = runtime.block_on(run_batch(conn, jobs, shared));
            activity.busy = Instant::now();
            checkpoints.after_commit(conn);
            if !done.raced.is_empty() {
                let rows = done.raced;
                runtime.block_on(run_batch(
                    conn,
                    vec![Job::Move { rows, reply: None }],
                    shared,
                ));
                checkpoints.after_commit(conn);
            }
        }
        if !retire.due(Instant::now()) {
            continue;
        }
        let now = Instant::now();
        let idle = activity.idle(now, shared.open, &rx);
        retire = match shared.open.retiring(now, MAX_BATCH, idle) {
            Ok(rows) if !rows.is_empty() => {
                let began = Instant::now();
                let moved = runtime
                    .block_on(run_batch(
                        conn,
                        vec![Job::Move { rows, reply: None }],
                        shared,
                    ))
                    .all_moved;
                checkpoints.after_commit(conn);
                let now = Instant::now();
                if !moved {
                    // Failed (logged): tried again after a while, not in a loop.
                    Retire::Look
                } else if shared.open.far_past_limits() || activity.idle(now, shared.open, &rx) {
                    // Past the soft limits, or nothing else to do.
                    Retire::At(now)
                } else {
                    Retire::At(now + (now - began) * RETIRE_PAUSE)
                }
            }
            Ok(_) => Retire::Look,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the open calls to retire");
                Retire::Look
            }
        };
    }
}

/// When the writer last ran a job or saw a new start.
struct Activity {
    busy: Instant,
    /// The journal's count of appended starts when the writer last looked.
    starts: u64,
}

impl Activity {
    /// Idle: no job and no start for [`IDLE_LOOK`], and no job waiting.
    fn idle(&mut self, now: Instant, open: &OpenCalls, rx: &mpsc::UnboundedReceiver<Job>) -> bool {
        let appended = open.appended();
        if appended != self.starts {
            self.starts = appended;
            self.busy = now;
        }
        rx.is_empty() && now.duration_since(self.busy) >= IDLE_LOOK
    }
}

/// When the writer moves the next batch of a retiring journal segment's open calls.
///
/// Retiring is background work: it takes at most about a quarter of the writer's time, not
/// the time that jobs waiting on the writer need, nor the cores the requests need. Measured at
/// 1M customers: retiring without pauses took the p99 of starts at half their throughput
/// from under 5 to 60-200 ms; and a batch of retiring after each batch of jobs (the pause
/// counted only while no job came) halved the ends' throughput (8,100 to 4,000 a second).
/// Past twice the journal's limits it takes what it needs (memory and disk stay bounded), and
/// while the server is idle (no job and no start for [`IDLE_LOOK`], none waiting) it goes on
/// without a pause. An idle server retires every open call (see [`OpenCalls::retiring`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retire {
    /// Nothing retiring: look after each batch of jobs, and every [`IDLE_LOOK`].
    Look,
    /// A segment is retiring: its next batch is due at this time.
    At(Instant),
}

impl Retire {
    /// How long the writer may wait for a job.
    fn wait(self, now: Instant) -> Duration {
        match self {
            Self::Look => IDLE_LOOK,
            Self::At(due) => due.saturating_duration_since(now),
        }
    }

    /// Whether to look for (or move) open calls to retire now.
    fn due(self, now: Instant) -> bool {
        match self {
            Self::Look => true,
            Self::At(due) => now >= due,
        }
    }
}

/// After a batch of a retiring segment's calls, the writer waits this many times as long as
/// the batch took (for other jobs) before the next one.
const RETIRE_PAUSE: u32 = 3;

/// What a job produced, held until the commit.
enum Outcome {
    Start(Result<Recorded, EngineError>),
    End(Result<(EndOutcome, super::end::Touched), EngineError>),
    Move(Result<(), EngineError>),
    Import(Result<ImportReport, EngineError>),
    Fill,
}

/// How a batch undoes a job that fails after changing something (an end, a start that came
/// after its call's end, an import: the jobs of several statements).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// Not alone: the batch is rolled back and run again with [`Guard::Savepoints`]. Jobs
    /// rarely fail, and when they do, mostly before writing (a rejected end is rejected before
    /// its first statement that writes), which needs no undo at all; a savepoint per job made
    /// SQLite copy every page each job changed into the savepoint's journal (6% of the writer
    /// thread during ends, profiled at 1M customers).
    Batch,
    /// Each job in its own savepoint, rolled back alone.
    Savepoints,
}

/// Why a batch's transaction did not commit.
enum Failure {
    /// A job failed after changing something, under [`Guard::Batch`]: run the batch again with
    /// savepoints.
    Again,
    /// The transaction itself failed (to begin, to commit, or SQLite rolled it back): every job
    /// of the batch fails with it.
    Lost(EngineError),
}

/// What a batch left to do.
struct BatchEnd {
    /// `false` when it was not committed or a job moving open calls failed.
    all_moved: bool,
    /// Open calls whose start raced one of its ends (see [`OpenCalls::ends_seen`]): to move.
    raced: Vec<call::Model>,
}

/// Runs a batch and answers its jobs.
async fn run_batch(conn: &LiteConn, mut jobs: Vec<Job>, shared: &Shared<'_>) -> BatchEnd {
    let caches = shared.caches;
    let mut raced = Vec::new();
    // An import takes its rows (it is not run twice): its batch starts with savepoints.
    let guard = if jobs.iter().any(|j| matches!(j, Job::Import { .. })) {
        Guard::Savepoints
    } else {
        Guard::Batch
    };
    let mut result = attempt(conn, &mut jobs, guard, shared.open).await;
    if matches!(result, Err(Failure::Again)) {
        tracing::debug!(
            jobs = jobs.len(),
            "a job failed after writing: the batch runs again"
        );
        result = attempt(conn, &mut jobs, Guard::Savepoints, shared.open).await;
    }
    let outcomes = match result {
        Ok((outcomes, moved)) => {
            // Their rows are committed: the journal no longer holds them open.
            shared
                .open
                .forget(moved.iter().map(|(t, c)| (*t, c.as_str())));
            // A start of one of these calls that did not see the end's row may have opened
            // it since the end looked: it is moved now (the start looks again if it sees
            // this count change, so one of the two finds the other).
            let mut ended = jobs.iter().filter_map(|j| match j {
                Job::End { tenant, cmd, .. } => Some((tenant.0, cmd.call_id.as_str())),
                _ => None,
            });
            if let Some(first) = ended.next() {
                shared.open.ends_committed();
                for (tenant, call_id) in std::iter::once(first).chain(ended) {
                    match shared.open.get(tenant, call_id) {
                        Ok(Some(row)) => raced.push(row),
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "cannot read an open call"),
                    }
                }
            }
            outcomes
        }
        Err(failure) => {
            let e = match failure {
                Failure::Lost(e) => e,
                Failure::Again => EngineError::Corrupt("a guarded job asked for a rerun".into()),
            };
            tracing::error!(error = %e, jobs = jobs.len(), "write batch failed");
            let failed = || EngineError::Corrupt(format!("the batch was not committed: {e}"));
            for job in jobs {
                match job {
                    Job::Start { reply, .. } => drop(reply.send(Err(failed()))),
                    Job::End { reply, .. } => drop(reply.send(Err(failed()))),
                    Job::Import { reply, .. } => drop(reply.send(Err(failed()))),
                    Job::Move { reply, .. } => {
                        if let Some(reply) = reply {
                            drop(reply.send(Err(failed())));
                        }
                    }
                    Job::Fill(_) => {}
                }
            }
            return BatchEnd {
                all_moved: false,
                raced,
            };
        }
    };
    let mut all_moved = true;
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        match (job, outcome) {
            (Job::Start { call, reply }, Outcome::Start(r)) => {
                if let Ok(Recorded::AfterEnd(customer)) = &r {
                    caches
                        .written(TenantId(call.tenant_id), &[*customer], &[])
                        .await;
                }
                let _ = reply.send(r);
            }
            (Job::End { reply, .. }, Outcome::End(r)) => {
                let r = match r {
                    Ok((outcome, touched)) => {
                        touched.forget(caches).await;
                        Ok(outcome)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            (Job::Import { reply, .. }, Outcome::Import(r)) => {
                if r.is_ok() {
                    // Numbers that were unknown until now may be cached as "nobody".
                    caches.written_widely();
                }
                let _ = reply.send(r);
            }
            (Job::Move { reply, .. }, Outcome::Move(r)) => {
                all_moved &= r.is_ok();
                if r.is_ok() {
                    // A moved row can come after its call's end and rewrite a document.
                    caches.written_widely();
                }
                match reply {
                    Some(reply) => drop(reply.send(r)),
                    None => {
                        if let Err(e) = r {
                            tracing::error!(error = %e, "open calls were not moved");
                        }
                    }
                }
            }
            (Job::Fill(_), Outcome::Fill) => {}
            _ => tracing::error!("a write job's outcome does not match it"),
        }
    }
    BatchEnd { all_moved, raced }
}

/// Open calls whose row a batch moved into `calls`: tenant and call id.
type Moved = Vec<(i64, String)>;

/// Runs the jobs in one transaction and commits it; rolled back when it fails. Also returns
/// the open calls it moved into `calls`.
async fn attempt(
    conn: &LiteConn,
    jobs: &mut [Job],
    guard: Guard,
    open: &OpenCalls,
) -> Result<(Vec<Outcome>, Moved), Failure> {
    let c = Conn::Lite(conn);
    c.execute("BEGIN IMMEDIATE", &[])
        .await
        .map_err(Failure::Lost)?;
    let mut moved = Moved::new();
    let result = async {
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs.iter_mut() {
            outcomes.push(match job {
                // One statement, atomic: guarded only when the call id exists.
                Job::Start { call, .. } => Outcome::Start(match insert_start(c, call).await {
                    Ok(true) => Ok(Recorded::New),
                    Ok(false) => guarded(conn, guard, after_conflict(c, call)).await?,
                    Err(e) => Err(e),
                }),
                Job::End {
                    tenant,
                    cmd,
                    numbers,
                    ..
                } => {
                    let r =
                        guarded(conn, guard, end_moving(c, open, numbers, *tenant, cmd)).await?;
                    Outcome::End(r.map(|(done, mut rows)| {
                        moved.append(&mut rows);
                        done
                    }))
                }
                Job::Move { rows, .. } => {
                    let r = guarded(conn, guard, move_rows(c, rows)).await?;
                    if r.is_ok() {
                        moved.extend(rows.iter().map(|r| (r.tenant_id, r.call_id.clone())));
                    }
                    Outcome::Move(r)
                }
                Job::Import { tenant, batch, .. } => Outcome::Import(
                    guarded(
                        conn,
                        Guard::Savepoints,
                        import_in(c, *tenant, std::mem::take(batch)),
                    )
                    .await?,
                ),
                // One statement: atomic. It fails only for a customer erased meanwhile (its
                // foreign key), and then there is nothing to store.
                Job::Fill(customer) => {
                    if context::fill(c, customer).await.is_err() {
                        tracing::debug!("a context document was not stored");
                    }
                    Outcome::Fill
                }
            });
            // An error SQLite cannot recover from within the transaction (a full disk, an I/O
            // error) rolls it back: the next jobs would commit statement by statement.
            if conn.lock().map_or(true, |c| c.is_autocommit()) {
                return Err(Failure::Lost(rolled_back()));
            }
        }
        c.execute("COMMIT", &[]).await.map_err(Failure::Lost)?;
        Ok(outcomes)
    }
    .await;
    if result.is_err() {
        let _ = c.execute("ROLLBACK", &[]).await;
    }
    result.map(|outcomes| (outcomes, moved))
}

/// An end: its call's start row first, when the call is open (the end then finds it as if it
/// had been written at the start), then the end; after a merge, the open calls that matched the
/// merged customer move too, matched to the customer it was merged into (the end rewrote the
/// stored calls' match the same way).
async fn end_moving(
    c: Conn<'_>,
    open: &OpenCalls,
    numbers: &EndNumbers,
    tenant: TenantId,
    cmd: &EndCall,
) -> Result<((EndOutcome, super::end::Touched), Moved), EngineError> {
    let mut moved = Moved::new();
    if let Some(row) = open.get(tenant.0, cmd.call_id.as_str())? {
        move_row(c, row).await?;
        moved.push((tenant.0, cmd.call_id.as_str().to_owned()));
    }
    let (outcome, touched) = end_call_in(c, numbers, tenant, cmd, Locking::Exclusive, "")
        .await?
        .ok_or_else(|| EngineError::Corrupt("the writer's end asked for a lock".into()))?;
    if let Some((from, into)) = touched.merged_ids() {
        for mut row in open.matching(tenant.0, from)? {
            row.matched_customer_id = Some(into);
            moved.push((row.tenant_id, row.call_id.clone()));
            move_row(c, row).await?;
        }
    }
    Ok(((outcome, touched), moved))
}

/// Open calls' start rows into `calls`.
async fn move_rows(c: Conn<'_>, rows: &[call::Model]) -> Result<(), EngineError> {
    for row in rows {
        move_row(c, row.clone()).await?;
    }
    Ok(())
}

/// An open call's start row into `calls`, as a start writes it (see [`insert_start`]). A match
/// whose customer is gone (erased since, or merged by an end that raced the start) is dropped,
/// as erasure drops it from stored calls.
async fn move_row(c: Conn<'_>, mut row: call::Model) -> Result<(), EngineError> {
    if let Some(customer) = row.matched_customer_id {
        let exists = c
            .query_one(
                "SELECT 1 FROM customers WHERE id = $1 AND tenant_id = $2",
                &[customer.into(), row.tenant_id.into()],
                |_| Ok(()),
            )
            .await?
            .is_some();
        if !exists {
            row.matched_customer_id = None;
        }
    }
    if !insert_start(c, &row).await? {
        after_conflict(c, &row).await?;
    }
    Ok(())
}

/// Runs a job of several statements under `guard`: its own result, or why the batch cannot go
/// on.
async fn guarded<T>(
    conn: &LiteConn,
    guard: Guard,
    job: impl Future<Output = Result<T, EngineError>>,
) -> Result<Result<T, EngineError>, Failure> {
    if guard == Guard::Savepoints {
        return match in_savepoint(Conn::Lite(conn), job).await {
            (_, Some(broken)) => Err(Failure::Lost(broken)),
            (r, None) => Ok(r),
        };
    }
    let changes = || conn.lock().map(|c| (c.total_changes(), c.is_autocommit()));
    let (before, _) = changes().map_err(|_| Failure::Lost(writer_gone()))?;
    let r = job.await;
    if r.is_ok() {
        return Ok(r);
    }
    match changes() {
        // SQLite rolled the transaction back itself (an I/O error, say).
        Ok((_, true)) | Err(_) => Err(Failure::Lost(rolled_back())),
        Ok((after, false)) if after != before => Err(Failure::Again),
        // Failed before writing anything: nothing to undo.
        Ok(_) => Ok(r),
    }
}

/// Runs a job in a savepoint of the batch's transaction: kept when it succeeded, else rolled
/// back alone. The second value is set when the transaction itself is unusable.
async fn in_savepoint<T>(
    c: Conn<'_>,
    job: impl Future<Output = Result<T, EngineError>>,
) -> (Result<T, EngineError>, Option<EngineError>) {
    if let Err(e) = c.execute("SAVEPOINT job", &[]).await {
        return (Err(writer_gone()), Some(e));
    }
    let r = job.await;
    let undo = if r.is_ok() {
        Ok(0)
    } else {
        c.execute("ROLLBACK TO job", &[]).await
    };
    (r, undo.and(c.execute("RELEASE job", &[]).await).err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retiring_waits_for_its_due_time_whether_jobs_come_or_not() {
        let now = Instant::now();
        let due = now + Duration::from_millis(6);
        // Nothing retiring: the writer looks after every batch, and at least every IDLE_LOOK.
        assert!(Retire::Look.due(now));
        assert_eq!(Retire::Look.wait(now), IDLE_LOOK);
        // Retiring: not before its time, even right after a batch of jobs.
        assert!(!Retire::At(due).due(now));
        assert!(!Retire::At(due).due(now + Duration::from_millis(5)));
        assert_eq!(Retire::At(due).wait(now), Duration::from_millis(6));
        assert_eq!(
            Retire::At(due).wait(now + Duration::from_millis(4)),
            Duration::from_millis(2)
        );
        assert!(Retire::At(due).due(due));
        assert_eq!(
            Retire::At(due).wait(due + Duration::from_millis(1)),
            Duration::ZERO
        );
    }

    /// A database file in the temporary directory, removed (with its log) when dropped.
    struct TempDb(PathBuf);

    impl TempDb {
        /// A new file in WAL mode holding table `t` as `columns` declares it.
        fn with_table(columns: &str) -> Self {
            let file = Self(std::env::temp_dir().join(format!(
                "sticky-lite-{}-{}.db",
                std::process::id(),
                crate::now().timestamp_nanos_opt().unwrap_or_default()
            )));
            Connection::open(&file.0)
                .unwrap()
                .execute_batch(&format!(
                    "PRAGMA journal_mode = WAL; CREATE TABLE t ({columns});"
                ))
                .unwrap();
            file
        }

        /// A writer that never checkpoints by itself, as the server's, and a connection to
        /// checkpoint with.
        fn writer_and_checkpointer(&self) -> (Connection, Connection) {
            let writer = open(&self.0, false).unwrap();
            writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
            (writer, open(&self.0, false).unwrap())
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }

    /// The writer never pauses under load, so SQLite never finds the log fully copied at the
    /// start of a write transaction and never restarts it by itself: here each checkpoint
    /// runs while a write transaction is open, as it does under load. With the writer's
    /// restarts the log stays short; without them it holds every frame written.
    #[test]
    fn the_log_stays_short_under_steady_writes() {
        let file = TempDb::with_table("id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL");
        let (writer, checkpointer) = file.writer_and_checkpointer();
        let writer: LiteConn = Mutex::new(writer);
        let (committed, _commits) = std_mpsc::sync_channel(1);
        let restart = Arc::new(AtomicBool::new(false));
        let checkpoints = Checkpoints {
            committed,
            restart: restart.clone(),
        };
        let insert = |c: &Connection, i: u32| {
            c.execute(
                "INSERT INTO t (k, v) VALUES (?1, zeroblob(3000))",
                [format!("{i:08}")],
            )
            .unwrap();
        };
        let transactions = 200u32;
        for n in 0..transactions {
            {
                let c = writer.lock().unwrap();
                c.execute_batch("BEGIN IMMEDIATE").unwrap();
                insert(&c, 2 * n);
                pass(&checkpointer, &restart, 64, None, || {});
                insert(&c, 2 * n + 1);
                c.execute_batch("COMMIT").unwrap();
            }
            checkpoints.after_commit(&writer);
        }
        let wal_pages = std::fs::metadata(format!("{}-wal", file.0.display()))
            .unwrap()
            .len()
            / 4096;
        // Measured: 70 pages with the restarts, 806 (every frame) without.
        assert!(wal_pages < 200, "the log grew to {wal_pages} pages");
        let rows: i64 = writer
            .lock()
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            rows,
            i64::from(2 * transactions),
            "every committed row is there"
        );
    }

    /// The checkpoint thread flushes the database file after a pass that copied frames, and
    /// only then (a flush with nothing to write still costs the disk a cache flush).
    #[test]
    fn a_checkpoint_that_copied_frames_is_flushed() {
        let file = TempDb::with_table("id INTEGER PRIMARY KEY, v TEXT");
        let (writer, checkpointer) = file.writer_and_checkpointer();
        let restart = AtomicBool::new(false);
        let flushes = std::cell::Cell::new(0);
        let run = |copied: Option<i64>| {
            pass(&checkpointer, &restart, 1 << 20, copied, || {
                flushes.set(flushes.get() + 1);
            })
        };
        writer
            .execute("INSERT INTO t (v) VALUES ('a')", [])
            .unwrap();
        let copied = run(None);
        assert_eq!(flushes.get(), 1, "frames were copied");
        let copied = run(copied);
        assert_eq!(flushes.get(), 1, "nothing new to copy");
        // More frames than the first pass copied (the log may have started over).
        writer
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
                 INSERT INTO t (v) SELECT zeroblob(2000) FROM n",
            )
            .unwrap();
        run(copied);
        assert_eq!(flushes.get(), 2, "the new frames were copied");
    }

    fn insert_rows(c: &Connection, rows: u32) {
        c.execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             INSERT INTO t (v) SELECT zeroblob(2000) FROM n"
        ))
        .unwrap();
    }

    /// A restart is asked for only once the pass has flushed what it copied, including what
    /// was written during its flush: the writer's copy before the restart flushes too, while
    /// every job waits, and it waited for this flush when it overlapped it.
    #[test]
    fn the_restart_is_asked_for_after_the_flushes() {
        let file = TempDb::with_table("id INTEGER PRIMARY KEY, v BLOB");
        let (writer, checkpointer) = file.writer_and_checkpointer();
        let restart = AtomicBool::new(false);
        insert_rows(&writer, 100);
        let asked_during_a_flush = std::cell::Cell::new(false);
        let flushes = std::cell::Cell::new(0);
        let copied = pass(&checkpointer, &restart, 8, None, || {
            asked_during_a_flush.set(asked_during_a_flush.get() || restart.load(Ordering::Relaxed));
            flushes.set(flushes.get() + 1);
            if flushes.get() == 1 {
                insert_rows(&writer, 150); // the writer goes on during the flush
            }
        });
        assert_eq!(
            flushes.get(),
            2,
            "what was written during the first flush is flushed"
        );
        assert!(!asked_during_a_flush.get(), "not asked before the flushes");
        assert!(restart.load(Ordering::Relaxed), "asked after them");
        let (log, _) = passive_checkpoint(&writer).unwrap();
        assert_eq!(copied, Some(log), "the pass copied the whole log");
    }

    /// While a reader keeps frames from being copied, the writer could not copy them either:
    /// no restart is asked for.
    #[test]
    fn no_restart_is_asked_for_while_a_reader_holds_frames_back() {
        let file = TempDb::with_table("id INTEGER PRIMARY KEY, v BLOB");
        let (writer, checkpointer) = file.writer_and_checkpointer();
        let reader = open(&file.0, true).unwrap();
        insert_rows(&writer, 50);
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        insert_rows(&writer, 50);
        let restart = AtomicBool::new(false);
        let copied = pass(&checkpointer, &restart, 8, None, || {});
        let (log, _) = passive_checkpoint(&checkpointer).unwrap();
        assert!(
            copied.is_some_and(|c| c < log),
            "the reader holds frames back"
        );
        assert!(!restart.load(Ordering::Relaxed));
        reader.execute_batch("COMMIT").unwrap();
        pass(&checkpointer, &restart, 8, copied, || {});
        assert!(
            restart.load(Ordering::Relaxed),
            "asked once they can be copied"
        );
    }
}
