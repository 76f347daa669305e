//! The end-to-end test harness: `spawn_app(Backend)` builds the real application with the same
//! `Application::build` as `main`, on a fresh database (a SQLite temp file, or a uniquely named
//! PostgreSQL database on the server `STICKY_TEST_POSTGRES_URL` names), with tenant `default` and its
//! key, and typed helpers for the HTTP calls.

use std::sync::Arc;
use std::time::Duration;

use poem::endpoint::BoxEndpoint;
use poem::test::TestClient;
use poem::{EndpointExt, http::StatusCode};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::Value;
use sticky_calls_server::state::AppState;
use sticky_calls_server::{Application, Settings};

/// The environment variable naming the PostgreSQL server for tests
/// (`postgres://postgres@127.0.0.1:5432/test`).
pub const POSTGRES_URL_VAR: &str = "STICKY_TEST_POSTGRES_URL";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A new database on the PostgreSQL server named by [`POSTGRES_URL_VAR`].
    Postgres,
}

/// A running application and a client for it.
pub struct TestApp {
    /// Client over the full HTTP stack (middleware, routing, auth).
    pub client: TestClient<BoxEndpoint<'static>>,
    /// The key of tenant `default`.
    pub key: String,
    /// The engine and key store.
    pub state: Arc<AppState>,
    /// The database URL (to open a second application on the same data).
    pub database_url: String,
    /// Which backend.
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

/// A response: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Parsed body.
    pub body: Value,
    /// The `x-request-id` header.
    pub request_id: Option<String>,
}

/// A response kept as text (TwiML, platform JSON).
#[derive(Debug)]
pub struct RawReply {
    /// HTTP status.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: String,
    /// Body.
    pub text: String,
}

impl RawReply {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// Whether this process has dropped the databases earlier runs left behind.
static LEFT_BEHIND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Drops the test databases of test processes that are no longer running (`sc_test_<pid>_...`
/// with no such process). A run leaves its databases behind (for a look at a failure; dropping
/// each after its test made the suite half as slow again: every `DROP DATABASE` checkpoints
/// the server), until the next run begins.
async fn drop_left_behind(conn: &sea_orm::DatabaseConnection) {
    let Ok(rows) = conn
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT datname FROM pg_database WHERE datname LIKE 'sc\\_test\\_%'",
        ))
        .await
    else {
        return;
    };
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let pid = name.split('_').nth(2).unwrap_or_default();
        let running = pid.parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if !running {
            drop_database(conn, &name).await;
        }
    }
}

/// Drops a database nobody is connected to (without `FORCE`: on a server that test runs of
/// other machines share, whose processes this one cannot see, one still in use stays).
async fn drop_database(conn: &sea_orm::DatabaseConnection, name: &str) {
    let _ = conn
        .execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("DROP DATABASE IF EXISTS \"{name}\""),
        ))
        .await;
}

/// A fresh database on the PostgreSQL server named by [`POSTGRES_URL_VAR`].
///
/// # Panics
/// When the variable is not set: PostgreSQL tests are `#[ignore]`d, so this runs only when
/// someone asked for them (`-- --ignored`), and a test that was asked for must not pass
/// without running.
async fn postgres_database() -> String {
    let admin = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_URL_VAR} is not set: PostgreSQL tests need a server \
             (e.g. {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/test)"
        )
    });
    let name = format!(
        "sc_test_{}_{}",
        std::process::id(),
        sticky_core::random_token(10)
    );
    let conn = Database::connect(&admin)
        .await
        .expect("connect to the PostgreSQL test server");
    // The first test to get here drops them; the others go on meanwhile.
    if !LEFT_BEHIND.swap(true, std::sync::atomic::Ordering::Relaxed) {
        drop_left_behind(&conn).await;
    }
    conn.execute_raw(Statement::from_string(
        DbBackend::Postgres,
        format!("CREATE DATABASE {name}"),
    ))
    .await
    .expect("create a test database");
    let _ = conn.close().await;
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database name");
    format!("{base}/{name}")
}

/// Builds the application on a fresh database.
///
/// # Panics
/// When the database cannot be made (for PostgreSQL: [`POSTGRES_URL_VAR`] unset).
pub async fn spawn_app(backend: Backend) -> TestApp {
    let (database_url, dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("test.db").display());
            (url, Some(dir))
        }
        Backend::Postgres => (postgres_database().await, None),
    };
    let app = Application::build(settings(&database_url))
        .await
        .expect("application builds");
    let key = app
        .bootstrap_key()
        .expect("an empty database bootstraps tenant `default`")
        .secret
        .clone();
    TestApp {
        client: TestClient::new(app.endpoint().map_to_response().boxed()),
        key,
        state: app.state(),
        database_url,
        backend,
        _dir: dir,
    }
}

/// A stopped [`TestApp`]'s database (its temporary directory lives as long as this).
pub struct Stopped {
    /// The database URL.
    pub database_url: String,
    key: String,
    backend: Backend,
    dir: Option<tempfile::TempDir>,
}

impl Stopped {
    /// Test settings on this database.
    pub fn settings(&self) -> Settings {
        settings(&self.database_url)
    }

    /// A new application on this database, with the stopped one's key.
    pub async fn start(self) -> TestApp {
        let settings = self.settings();
        self.start_with(settings).await
    }

    /// A new application on this database with other settings (another server key ...).
    pub async fn start_with(self, settings: Settings) -> TestApp {
        let app = Application::build(settings)
            .await
            .expect("application builds");
        TestApp {
            client: TestClient::new(app.endpoint().map_to_response().boxed()),
            key: self.key,
            state: app.state(),
            database_url: self.database_url,
            backend: self.backend,
            _dir: self.dir,
        }
    }
}

/// Settings for tests: a free port, a cheap bcrypt cost.
pub fn settings(database_url: &str) -> Settings {
    Settings {
        database_url: database_url.to_owned(),
        db_max_connections: None,
        bind: "127.0.0.1:0".into(),
        default_region: Default::default(),
        bcrypt_cost: 4,
        key_cache_ttl: Duration::from_secs(300),
        cache_bytes: sticky_core::engine::DEFAULT_CACHE_BYTES,
        bootstrap_api_key: None,
        public_base_url: None,
        secret_key: Some("0f".repeat(32)),
        secret_key_file: "unused-in-tests.secret".into(),
        full_sync: false,
        metrics_token: None,
        tls: None,
        plans_file: None,
        signup_open: false,
        stripe_webhook_secret: None,
    }
}

impl TestApp {
    /// Creates another tenant and returns its key.
    pub async fn new_tenant(&self, name: &str) -> String {
        let t = self.state.keys.create_tenant(name).await.expect("tenant");
        self.state
            .keys
            .create_key(t.id, None, None)
            .await
            .expect("key")
            .secret
    }

    async fn reply(resp: poem::test::TestResponse) -> Reply {
        let status = resp.0.status();
        let request_id = resp
            .0
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.0.into_body().into_vec().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            request_id,
        }
    }

    /// A request with `key` (or none) and a raw body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> Reply {
        let m = poem::http::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(m, path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        Self::reply(req.send().await).await
    }

    /// A request with arbitrary headers and a raw body (connector webhooks).
    pub async fn send_raw(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: impl Into<Vec<u8>>,
    ) -> RawReply {
        let mut req = self.client.post(path);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        Self::raw(req.body(body.into()).send().await).await
    }

    /// A GET with arbitrary headers (a platform configured for GET webhooks).
    pub async fn get_raw(&self, path: &str, headers: &[(&str, String)]) -> RawReply {
        let mut req = self.client.get(path);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        Self::raw(req.send().await).await
    }

    async fn raw(resp: poem::test::TestResponse) -> RawReply {
        let status = resp.0.status();
        let content_type = resp
            .0
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp.0.into_body().into_string().await.expect("body");
        RawReply {
            status,
            content_type,
            text,
        }
    }

    /// POST JSON as tenant `default`.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.post_as(&self.key, path, body).await
    }

    /// POST JSON with a given key.
    pub async fn post_as(&self, key: &str, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(key), Some(body.to_string()))
            .await
    }

    /// GET as tenant `default`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, Some(&self.key), None).await
    }

    /// DELETE as tenant `default`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, Some(&self.key), None).await
    }

    /// `POST /v1/calls/start`, expecting 200.
    pub async fn start_call(&self, body: Value) -> Value {
        let r = self.post("/v1/calls/start", body).await;
        assert_eq!(r.status, StatusCode::OK, "start failed: {}", r.body);
        r.body
    }

    /// `POST /v1/calls/end`, expecting 200.
    pub async fn end_call(&self, body: Value) -> Value {
        self.end_call_as(&self.key, body).await
    }

    /// Ends a call as the tenant of `key`; asserts success.
    pub async fn end_call_as(&self, key: &str, body: Value) -> Value {
        let r = self.post_as(key, "/v1/calls/end", body).await;
        assert_eq!(r.status, StatusCode::OK, "end failed: {}", r.body);
        r.body
    }

    /// The engine's id of tenant `default` (for calls on the engine itself, such as an import).
    pub async fn default_tenant(&self) -> sticky_core::engine::TenantId {
        let tenant = self
            .state
            .keys
            .find_tenant("default")
            .await
            .expect("tenant look-up")
            .expect("tenant `default` exists");
        sticky_core::engine::TenantId(tenant.id.0)
    }

    /// Another application on this one's database, as a second server process behind the
    /// same load balancer would be (PostgreSQL: a SQLite file has one server at a time).
    pub async fn second_instance(&self) -> TestApp {
        let app = Application::build(settings(&self.database_url))
            .await
            .expect("application builds");
        TestApp {
            client: TestClient::new(app.endpoint().map_to_response().boxed()),
            key: self.key.clone(),
            state: app.state(),
            database_url: self.database_url.clone(),
            backend: self.backend,
            _dir: None,
        }
    }

    /// Counts rows of a table for the whole database (to prove nothing was written).
    /// Stops this application (drops it): what is left is its database. On a SQLite file
    /// one application at a time keeps the open calls' journal, so a second one on the same
    /// file starts from here.
    pub fn stop(self) -> Stopped {
        let TestApp {
            client,
            key,
            state,
            database_url,
            backend,
            _dir,
        } = self;
        drop(client);
        drop(state);
        Stopped {
            database_url,
            key,
            backend,
            dir: _dir,
        }
    }

    /// This application stopped and a new one started on the same database, as a new server
    /// process would be after this one was killed: nothing is kept but the database (and, on
    /// a SQLite file, the open calls' journal beside it). Same key.
    pub async fn restarted(self) -> TestApp {
        self.stop().start().await
    }

    /// Calls stored, counted once the open calls' journal (SQLite file) has moved every open
    /// call into `calls`, which an idle server does within a fraction of a second. Adding the
    /// journal's count to the table's would race with that move and count a call twice or
    /// not at all.
    ///
    /// # Panics
    /// When the journal does not empty within a minute.
    pub async fn count_calls(&self) -> i64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.state.engine.open_calls() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the open calls' journal never emptied"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.count_rows("calls").await
    }

    /// Runs SQL on the application's database (one statement, or several on PostgreSQL), for
    /// tests that inject a fault.
    ///
    /// # Panics
    /// When it fails.
    pub async fn execute_sql(&self, sql: &str) {
        self.state
            .engine
            .db()
            .execute_unprepared(sql)
            .await
            .expect("SQL");
    }

    /// Makes these calls (of any tenant; ids without quotes) end `days` days ago, once every
    /// call is in the `calls` table.
    ///
    /// # Panics
    /// When it fails.
    pub async fn backdate_calls(&self, call_ids: &[&str], days: i64) {
        self.count_calls().await;
        let db = self.state.engine.db();
        let backend = db.get_database_backend();
        let placeholder = match backend {
            DbBackend::Postgres => "$1",
            _ => "?",
        };
        let ids: Vec<String> = call_ids.iter().map(|id| format!("'{id}'")).collect();
        let ended = sticky_core::now() - chrono::Duration::days(days);
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "UPDATE calls SET ended_at = {placeholder} WHERE call_id IN ({})",
                ids.join(", ")
            ),
            [ended.into()],
        ))
        .await
        .expect("backdate");
    }

    /// Whether the application's database is PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.state.engine.db().get_database_backend() == DbBackend::Postgres
    }

    pub async fn count_rows(&self, table: &str) -> i64 {
        let db = self.state.engine.db();
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .expect("count")
            .expect("a row");
        row.try_get::<i64>("", "n").expect("n")
    }
}
