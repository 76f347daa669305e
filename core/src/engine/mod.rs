//! Call memory: the engine behind every endpoint and connector.
//!
//! The call path (start, end) is SQL written once (`sql.rs`). On a SQLite file it runs on direct
//! connections: reads on the request's thread, every write on one writer thread that commits
//! in groups (`lite.rs`). Elsewhere it runs on sea-orm's pool.
//!
//! Writes that read before they write (an end resolving its caller, a merge, an erasure) are
//! serialised: on the writer thread, or under one in-process mutex with a SQLite `BEGIN
//! IMMEDIATE` transaction, and on PostgreSQL a per-tenant advisory lock, so concurrent ends from
//! one new number create one provisional customer, not several, even across server processes.

mod batch;
mod cache;
mod context;
mod customers;
mod end;
mod end_batch;
mod import;
mod lifecycle;
mod lite;
mod locks;
mod open_calls;
pub mod settings;
mod sql;
mod start;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{Mutex, MutexGuard};

use crate::domain::DefaultRegion;
use crate::error::EngineError;
use crate::scoring::{Band, Signal};

pub use cache::DEFAULT_CACHE_BYTES;
pub use customers::{CustomerExport, CustomerSummary, ErasureReport, IdentityRecord, IntentRecord};
pub use import::{ImportReport, ImportedCall, ImportedCustomer, ImportedIdentity};
pub use lifecycle::{CALLBACK_DUE_WINDOW, drop_expired_variables, mark_callbacks};

/// The tenant a request acts for; it comes from the API key, never from a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantId(pub i64);

/// The memory engine. Cheap to share behind an `Arc`.
pub struct Engine {
    db: DatabaseConnection,
    region: DefaultRegion,
    /// The process-wide writer lock, off PostgreSQL: SQLite has one writer at a time, and its
    /// writes are queued here rather than refused as busy. `None` on PostgreSQL, where each
    /// write takes its tenant's advisory lock instead (`TENANT_LOCK`, `locks.rs`), which also
    /// orders it with the other processes' writes: no write waits for another tenant's.
    writes: Option<Arc<Mutex<()>>>,
    caches: Arc<cache::Caches>,
    call_writer: batch::CallWriter,
    /// On PostgreSQL, the starts' identity reads, gathered.
    link_reader: Option<batch::LinkReader>,
    /// On PostgreSQL, ends, run in batches.
    end_batcher: Option<end_batch::EndBatcher>,
    /// Direct access for the call path when the database is a SQLite file.
    lite: Option<lite::Lite>,
    /// Dialled numbers as stored, by the text received: a contact center has few lines, and
    /// parsing a number costs more than a start's own look-ups.
    dialled: std::sync::Mutex<std::collections::HashMap<String, Option<String>>>,
    /// Tenants' settings, by tenant id (see [`settings`]).
    settings_cache: moka::future::Cache<i64, Arc<settings::TenantSettings>>,
}

/// Distinct dialled numbers remembered; past it the memory starts over.
const DIALLED_NUMBERS: usize = 1024;

/// Takes the tenant's advisory lock exclusively until the transaction ends (PostgreSQL): what
/// every write but a fine end holds (an end takes it shared: `locks.rs`).
const TENANT_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";

/// The process-wide writer lock, held, where there is one (see [`Engine`]'s `writes`).
async fn writer_lock(writes: Option<&Mutex<()>>) -> Option<MutexGuard<'_, ()>> {
    match writes {
        Some(lock) => Some(lock.lock().await),
        None => None,
    }
}

/// A connection for the call path's reads.
enum ReadConn<'a> {
    Lite(lite::Reader<'a>),
    Pool(&'a DatabaseConnection),
}

impl ReadConn<'_> {
    fn conn(&self) -> sql::Conn<'_> {
        match self {
            ReadConn::Lite(r) => r.conn(),
            ReadConn::Pool(db) => sql::Conn::Pool(db),
        }
    }
}

/// Another customer the caller could be.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Their reference.
    pub customer_ref: String,
    /// How likely.
    pub confidence: f64,
    /// When one of the call's identities was last seen with them: among candidates of equal
    /// confidence, the most recently seen ranks first.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Their history behind this match (ended calls on the number, one per matching external
    /// id): the next tie-break.
    pub calls: u64,
}

/// An intent still open for the customer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenIntent {
    /// Its name.
    pub intent: String,
    /// When it was (re)opened.
    #[serde(serialize_with = "crate::wire::rfc3339")]
    pub opened_at: DateTime<Utc>,
    /// The last call that touched it.
    pub last_call_id: Option<String>,
    /// When a promised callback is due (absent for other intents).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire::rfc3339_opt"
    )]
    pub due_at: Option<DateTime<Utc>>,
    /// For a callback, where it stands as of the answer. Computed when a start answers,
    /// never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<CallbackState>,
}

/// Where a promised callback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    /// Due later than [`CALLBACK_DUE_WINDOW`] from now.
    Open,
    /// Due within [`CALLBACK_DUE_WINDOW`].
    Due,
    /// Past its due time.
    Overdue,
}

/// One of the customer's latest ended calls.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecentCall {
    /// The platform's call id.
    pub call_id: String,
    /// When it started (absent when only its end was reported).
    #[serde(serialize_with = "crate::wire::rfc3339_opt")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(serialize_with = "crate::wire::rfc3339_opt")]
    pub ended_at: Option<DateTime<Utc>>,
    /// What it was about.
    pub intent: Option<String>,
    /// `open` or `resolved`.
    pub intent_status: Option<String>,
    /// Its summary.
    pub summary: Option<String>,
}

/// What we remember about a customer, for the agent. Its JSON form (timestamps written as
/// [`crate::wire`] says) is the `context` of the API's call-start answer, field for field: see
/// [`ContextJson`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CustomerContext {
    /// Saved variables.
    pub variables: BTreeMap<String, Value>,
    /// When variables given a time to live expire. Kept in the stored document only: a
    /// start's answer leaves out the expired variables and this map (see `engine/lifecycle.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variable_expiry: BTreeMap<String, DateTime<Utc>>,
    /// Open intents, most recently touched first.
    pub open_intents: Vec<OpenIntent>,
    /// Latest ended calls, most recent first (at most [`RECENT_CALLS`]).
    pub recent_calls: Vec<RecentCall>,
    /// Ended calls linked to the customer.
    pub call_count: i64,
    /// First call.
    #[serde(serialize_with = "crate::wire::rfc3339_opt")]
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest call.
    #[serde(serialize_with = "crate::wire::rfc3339_opt")]
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// A [`CustomerContext`] in its JSON form, as the customer's stored document holds it: a
/// start reads it and writes it into its answer as it is (decoding it and writing it again
/// cost about a tenth of a known caller's start).
#[derive(Debug, Clone)]
pub struct ContextJson(Arc<RawValue>);

impl ContextJson {
    /// The JSON form of `context`.
    ///
    /// # Errors
    /// Only if a variable cannot be written as JSON (it came from JSON: it can).
    pub fn new(context: &CustomerContext) -> Result<Self, EngineError> {
        Ok(Self(Arc::from(serde_json::value::to_raw_value(context)?)))
    }

    /// A stored JSON form, as read.
    fn stored(raw: Box<RawValue>) -> Self {
        Self(Arc::from(raw))
    }

    /// The JSON text.
    pub fn get(&self) -> &RawValue {
        &self.0
    }

    /// The context itself.
    ///
    /// # Errors
    /// When the stored text is not a context (a damaged document).
    pub fn decode(&self) -> Result<CustomerContext, EngineError> {
        Ok(serde_json::from_str(self.0.get())?)
    }
}

impl PartialEq for ContextJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// How many recent calls a context carries.
pub const RECENT_CALLS: u64 = 5;
/// How many open intents a context carries.
pub const OPEN_INTENTS: u64 = 20;

/// The answer to a call start. The engine answers with the context in its JSON form
/// ([`StartAnswer`]); [`StartAnswer::decode`] gives the decoded form the connectors render.
#[derive(Debug, Clone, PartialEq)]
pub struct StartOutcome<C = CustomerContext> {
    /// The call id, echoed.
    pub call_id: String,
    /// Who the caller probably is; `None` when the band is low.
    pub customer_ref: Option<String>,
    /// Confidence in `customer_ref`.
    pub confidence: f64,
    /// Band of the confidence.
    pub band: Band,
    /// Why.
    pub signals: Vec<Signal>,
    /// Other plausible customers.
    pub candidates: Vec<Candidate>,
    /// The customer's memory; `None` when the band is low.
    pub context: Option<C>,
}

/// A start's answer as the engine gives it: the context as stored (see [`ContextJson`]).
pub type StartAnswer = StartOutcome<ContextJson>;

impl StartAnswer {
    /// The answer with its context decoded.
    ///
    /// # Errors
    /// When the stored context is damaged.
    pub fn decode(self) -> Result<StartOutcome, EngineError> {
        Ok(StartOutcome {
            context: self.context.as_ref().map(ContextJson::decode).transpose()?,
            call_id: self.call_id,
            customer_ref: self.customer_ref,
            confidence: self.confidence,
            band: self.band,
            signals: self.signals,
            candidates: self.candidates,
        })
    }
}

/// The answer to a call end.
#[derive(Debug, Clone, PartialEq)]
pub struct EndOutcome {
    /// The call id, echoed.
    pub call_id: String,
    /// The customer the call was linked to; `None` when the call carried no identity.
    pub customer_ref: Option<String>,
    /// Whether that customer is provisional (created from the number alone).
    pub provisional: bool,
    /// A provisional customer merged into `customer_ref` by this end.
    pub merged_from: Option<String>,
}

/// A stored call, as `GET /v1/calls/{call_id}` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The platform's call id.
    pub call_id: String,
    /// Where it came from.
    pub platform: String,
    /// `in_progress` or `ended`.
    pub status: String,
    /// Caller number in E.164, when usable.
    pub ani: Option<String>,
    /// Whether the caller number was withheld or unusable.
    pub ani_withheld: bool,
    /// Dialled number as stored (E.164 when it parsed).
    pub dnis: Option<String>,
    /// External ids given with the call.
    pub external_ids: BTreeMap<String, String>,
    /// The customer the start matched.
    pub matched_customer_ref: Option<String>,
    /// The start's confidence.
    pub confidence: Option<f64>,
    /// The start's band.
    pub band: Option<String>,
    /// The customer the call belongs to after its end.
    pub customer_ref: Option<String>,
    /// What it was about.
    pub intent: Option<String>,
    /// `open` or `resolved`.
    pub intent_status: Option<String>,
    /// Summary.
    pub summary: Option<String>,
    /// Variables its ends saved.
    pub variables: BTreeMap<String, Value>,
    /// Start time.
    pub started_at: Option<DateTime<Utc>>,
    /// End time.
    pub ended_at: Option<DateTime<Utc>>,
}

impl Engine {
    /// An engine over a connected, migrated database, all through sea-orm's pool. Call it
    /// inside a tokio runtime: it starts the task that writes call rows.
    pub fn new(db: DatabaseConnection, region: DefaultRegion) -> Self {
        Self::with_cache(db, region, cache::DEFAULT_CACHE_BYTES)
    }

    /// [`Engine::new`] with read caches of `cache_bytes` in all.
    fn with_cache(db: DatabaseConnection, region: DefaultRegion, cache_bytes: u64) -> Self {
        let writes =
            (db.get_database_backend() != DbBackend::Postgres).then(|| Arc::new(Mutex::new(())));
        let caches = Arc::new(cache::Caches::new(cache_bytes));
        Self {
            call_writer: batch::CallWriter::spawn(db.clone(), writes.clone()),
            link_reader: batch::LinkReader::spawn(&db),
            end_batcher: end_batch::EndBatcher::spawn(&db, caches.clone()),
            db,
            region,
            writes,
            caches,
            lite: None,
            dialled: std::sync::Mutex::default(),
            settings_cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(300))
                .build(),
        }
    }

    /// The dialled number as stored (see [`start::normalise_dnis`]), remembered.
    fn dialled(&self, raw: &str) -> Option<String> {
        if let Some(known) = self.dialled.lock().ok().and_then(|m| m.get(raw).cloned()) {
            return known;
        }
        let stored = start::normalise_dnis(raw, self.region);
        if let Ok(mut m) = self.dialled.lock() {
            if m.len() >= DIALLED_NUMBERS {
                m.clear();
            }
            m.insert(raw.to_owned(), stored.clone());
        }
        stored
    }

    /// Like [`Engine::new`], and on a SQLite file the call path (starts and ends) runs on
    /// direct connections with one writer thread (see `engine/lite.rs`): the server uses this.
    ///
    /// # Errors
    /// When the SQLite file cannot be opened directly.
    pub async fn open(db: DatabaseConnection, region: DefaultRegion) -> Result<Self, EngineError> {
        Self::open_with(db, region, open_calls::LIMITS, cache::DEFAULT_CACHE_BYTES).await
    }

    /// [`Engine::open`] with read caches of `cache_bytes` in all, in front of reads through
    /// the pool (PostgreSQL); a SQLite file's call path keeps none.
    ///
    /// # Errors
    /// When the SQLite file cannot be opened directly.
    pub async fn open_with_cache(
        db: DatabaseConnection,
        region: DefaultRegion,
        cache_bytes: u64,
    ) -> Result<Self, EngineError> {
        Self::open_with(db, region, open_calls::LIMITS, cache_bytes).await
    }

    /// [`Engine::open`] with the open calls' journal kept within `limits`.
    async fn open_with(
        db: DatabaseConnection,
        region: DefaultRegion,
        limits: open_calls::Limits,
        cache_bytes: u64,
    ) -> Result<Self, EngineError> {
        let mut engine = Self::with_cache(db, region, cache_bytes);
        // Reads of the local file need no caches in front of them (see `Caches::off`).
        let direct = Arc::new(cache::Caches::off());
        engine.lite = lite::Lite::open(&engine.db, direct.clone(), limits).await?;
        if engine.lite.is_some() {
            engine.caches = direct;
        }
        Ok(engine)
    }

    /// Whether the call path runs on direct SQLite connections.
    pub fn direct_sqlite(&self) -> bool {
        self.lite.is_some()
    }

    /// Calls started and not ended whose start row waits in the open calls' journal (on a
    /// SQLite file; see `engine/open_calls.rs`), not yet in `calls`.
    pub fn open_calls(&self) -> usize {
        self.lite.as_ref().map_or(0, lite::Lite::open_calls)
    }

    /// The open calls' journal's size on disk in bytes (0 without a journal).
    pub fn journal_bytes(&self) -> u64 {
        self.lite.as_ref().map_or(0, lite::Lite::journal_bytes)
    }

    /// The database pool's connections: (open, idle).
    pub fn pool_connections(&self) -> (u32, usize) {
        use sea_orm::DbBackend;
        match self.db.get_database_backend() {
            DbBackend::Sqlite => {
                let p = self.db.get_sqlite_connection_pool();
                (p.size(), p.num_idle())
            }
            DbBackend::Postgres => {
                let p = self.db.get_postgres_connection_pool();
                (p.size(), p.num_idle())
            }
            _ => (0, 0),
        }
    }

    /// Moves every open call's start row into `calls` (committed when this returns): before
    /// copying the database file alone, say, which does not hold them until then.
    ///
    /// # Errors
    /// Database or journal failures.
    pub async fn move_open_calls(&self) -> Result<(), EngineError> {
        match &self.lite {
            Some(lite) => lite.move_all().await,
            None => Ok(()),
        }
    }

    /// A connection for the call path's reads.
    fn reader(&self) -> Result<ReadConn<'_>, EngineError> {
        Ok(match &self.lite {
            Some(l) => ReadConn::Lite(l.reader()?),
            None => ReadConn::Pool(&self.db),
        })
    }

    /// Stores a context document read from the tables (see `engine/context.rs`), without
    /// making the start wait: on SQLite through the writer thread, else in a task of its own.
    fn fill_context(&self, customer: Arc<cache::CachedCustomer>) {
        match &self.lite {
            Some(l) => l.fill(customer),
            None => {
                let db = self.db.clone();
                tokio::spawn(async move {
                    if context::fill(sql::Conn::Pool(&db), &customer)
                        .await
                        .is_err()
                    {
                        tracing::debug!("a context document was not stored");
                    }
                });
            }
        }
    }

    /// The connection pool (for readiness checks and administration).
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The region national numbers are read in.
    pub fn region(&self) -> DefaultRegion {
        self.region
    }

    /// Applies another process's change to this process's caches (see `crate::coherence`).
    pub async fn apply_remote_change(&self, change: &crate::coherence::Change) {
        if let crate::coherence::Change::Settings { tenant, .. } = change {
            self.forget_settings(*tenant).await;
            return;
        }
        self.caches.apply(change).await;
    }

    /// Whether other processes' changes are being heard: while not, the caches are off;
    /// either way they are emptied.
    pub fn set_coherent(&self, coherent: bool) {
        self.caches.set_coherent(coherent);
        self.settings_cache.invalidate_all();
    }

    /// Whether the database answers.
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }

    /// Commits a write, then makes the caches forget what it changed, in a task of its own:
    /// a request dropped half-way (its client hung up) cannot leave a committed write hidden
    /// behind a stale cache entry.
    async fn commit(
        &self,
        tx: DatabaseTransaction,
        touched: end::Touched,
    ) -> Result<(), EngineError> {
        let caches = self.caches.clone();
        tokio::spawn(async move {
            // Other processes on the database hear of it at the commit (PostgreSQL only).
            if let Some(change) = touched.change(caches.origin()) {
                crate::coherence::notify(&tx, &change).await?;
            }
            tx.commit().await?;
            touched.forget(&caches).await;
            Ok(())
        })
        .await
        .map_err(|e| EngineError::Corrupt(format!("a commit did not finish: {e}")))?
    }

    /// Starts a serialised write: a transaction that holds the database's write lock from its
    /// first statement, after the process-wide writer lock (SQLite), or the tenant's advisory
    /// lock (PostgreSQL).
    async fn begin_write(
        &self,
        tenant: TenantId,
    ) -> Result<(Option<MutexGuard<'_, ()>>, DatabaseTransaction), DbErr> {
        let guard = writer_lock(self.writes.as_deref()).await;
        let tx = match self.db.get_database_backend() {
            DbBackend::Sqlite => {
                self.db
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                        ..Default::default()
                    })
                    .await?
            }
            backend => {
                let tx = self.db.begin().await?;
                if backend == DbBackend::Postgres {
                    tx.execute_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        TENANT_LOCK,
                        [tenant.0.into()],
                    ))
                    .await?;
                }
                tx
            }
        };
        Ok((guard, tx))
    }
}

/// SQLite's plan for a statement, on the migrated schema (SQLite plans without statistics
/// here, so an empty database plans as a large one does).
#[cfg(test)]
pub(crate) async fn sqlite_plan(statement: sea_orm::Statement) -> String {
    use sea_orm::ConnectionTrait;
    let db = crate::db::connect_and_migrate("sqlite::memory:")
        .await
        .unwrap();
    let explain = Statement {
        sql: format!("EXPLAIN QUERY PLAN {}", statement.sql),
        ..statement
    };
    db.query_all_raw(explain)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "detail").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dialled_numbers_are_normalised_and_remembered_within_bounds() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        let engine = Engine::new(db, DefaultRegion::default());
        for _ in 0..2 {
            assert_eq!(
                engine.dialled("(800) 555-0100").as_deref(),
                Some("+18005550100")
            );
        }
        assert_eq!(engine.dialled("   "), None);
        assert_eq!(engine.dialled(" main-line ").as_deref(), Some("main-line"));
        for i in 0..3000 {
            let raw = format!("+1800555{i:04}");
            assert_eq!(engine.dialled(&raw).as_deref(), Some(raw.as_str()));
        }
        assert!(engine.dialled.lock().unwrap().len() <= DIALLED_NUMBERS);
    }

    /// The server's engine on a SQLite file reads it directly, without caches; through the
    /// pool (as on PostgreSQL) it keeps them.
    #[tokio::test]
    async fn only_reads_through_the_pool_are_cached() {
        let (file, url) = temp_database("engine");
        let direct = Engine::open(
            sea_orm::Database::connect(&url).await.unwrap(),
            DefaultRegion::default(),
        )
        .await
        .unwrap();
        assert!(direct.direct_sqlite());
        assert!(!direct.caches.on());
        let pooled = Engine::open(
            sea_orm::Database::connect("sqlite::memory:").await.unwrap(),
            DefaultRegion::default(),
        )
        .await
        .unwrap();
        assert!(!pooled.direct_sqlite());
        assert!(pooled.caches.on());
        drop(direct);
        remove_sqlite(&file);
    }

    /// A new SQLite file's path in the temporary directory, and its URL.
    fn temp_database(name: &str) -> (std::path::PathBuf, String) {
        let file = std::env::temp_dir().join(format!(
            "sticky-{name}-{}-{}.db",
            std::process::id(),
            crate::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let url = format!("sqlite://{}?mode=rwc", file.display());
        (file, url)
    }

    /// A SQLite file, its log and its open calls' journal.
    fn remove_sqlite(file: &std::path::Path) {
        for suffix in [
            "",
            "-wal",
            "-shm",
            "-starts.1",
            "-starts.2",
            "-starts.3",
            "-starts.lock",
        ] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    }

    /// A start of `call_id` from one number.
    /// A migrated in-memory database with two tenants.
    pub(super) async fn two_tenants() -> (DatabaseConnection, TenantId, TenantId) {
        let db = crate::db::connect_and_migrate("sqlite::memory:")
            .await
            .unwrap();
        let keys = crate::keys::KeyStore::new(db.clone(), 4, std::time::Duration::from_secs(1));
        let tenant = keys.create_tenant("t").await.unwrap().id;
        let other = keys.create_tenant("o").await.unwrap().id;
        (db, tenant, other)
    }

    pub(super) fn start(call_id: &str) -> crate::commands::StartCall {
        crate::commands::StartCall {
            call_id: crate::domain::CallId::parse(call_id).unwrap(),
            platform: crate::domain::Platform::parse("api").unwrap(),
            hints: crate::commands::IdentityHints {
                ani: Some("+14155551234".into()),
                dnis: None,
                external_ids: Vec::new(),
                attestation: None,
            },
        }
    }

    /// Past its limit of open calls (and once the server is idle, all of them), the journal's
    /// segments retire: the writer thread moves their calls' rows into `calls` (as a start
    /// would have written them) and deletes them. (Which of the two moved a call depends on
    /// timing; `open_calls.rs` tests each alone.)
    #[tokio::test]
    async fn open_calls_past_the_limit_or_idle_move_into_the_database() {
        let (file, url) = temp_database("retire");
        let db = crate::db::connect_and_migrate(&url).await.unwrap();
        let keys = crate::keys::KeyStore::new(db.clone(), 4, std::time::Duration::from_secs(1));
        let tenant = keys.create_tenant("t").await.unwrap().id;
        let limits = open_calls::Limits {
            segment_bytes: 1,
            max_bytes: u64::MAX,
            max_age: std::time::Duration::MAX,
            max_open: 2,
        };
        let engine = Engine::open_with(
            db.clone(),
            DefaultRegion::default(),
            limits,
            cache::DEFAULT_CACHE_BYTES,
        )
        .await
        .unwrap();
        let count = || async {
            use sea_orm::{ConnectionTrait, Statement};
            let row = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    "SELECT COUNT(*) AS n FROM calls WHERE started_at IS NOT NULL",
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        };

        let first = engine.start_call(tenant, start("a")).await.unwrap();
        engine.start_call(tenant, start("b")).await.unwrap();
        engine.start_call(tenant, start("c")).await.unwrap();
        assert_eq!(
            engine.open_calls() + usize::try_from(count().await).unwrap(),
            3
        );
        // The writer looks ten times a second; idle that long, it retires them all.
        for _ in 0..1000 {
            if engine.open_calls() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!((engine.open_calls(), count().await), (0, 3));
        let stored = engine
            .get_call(tenant, &crate::domain::CallId::parse("a").unwrap())
            .await
            .unwrap();
        assert_eq!(stored.confidence, Some(first.confidence));
        // A retry of the moved call replays it from the database.
        let again = engine.start_call(tenant, start("a")).await.unwrap();
        assert_eq!(again.confidence, first.confidence);
        assert_eq!((engine.open_calls(), count().await), (0, 3));
        drop(engine);
        remove_sqlite(&file);
    }
}
