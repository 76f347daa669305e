//! Connecting to the database and applying migrations. SQLite (the embedded default) runs in WAL
//! mode with `synchronous=NORMAL`: a committed transaction survives a crash of the server
//! process (only a power loss can lose the last commits), and readers never block the writer.
//! With [`set_full_sync`] (`STICKY_SYNC=full`) it runs with `synchronous=FULL` and the open
//! calls' journal syncs each record: an acknowledged write then survives a power loss too, at
//! the cost of an fsync per commit and per start.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;
use sticky_migrations::Migrator;

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://sticky-calls.db";

/// Adds `mode=rwc` to SQLite URLs so the file is created when missing.
fn with_create_mode(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    }
}

/// Opens a pool on `url` (`sqlite://...` or `postgres://...`) with the default pool size and
/// migrates the schema.
///
/// # Errors
/// When the database cannot be reached or a migration fails.
pub async fn connect_and_migrate(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with_pool(url, None).await
}

/// Default pool size: SQLite serves each connection from a thread of its own, so on small
/// machines fewer connections mean fewer thread hand-offs.
fn default_pool(sqlite: bool) -> u32 {
    if sqlite { 4 } else { 16 }
}

/// Like [`connect_and_migrate`], with `max_connections` connections (default when `None`).
///
/// # Errors
/// When the database cannot be reached or a migration fails.
pub async fn connect_with_pool(
    url: &str,
    max_connections: Option<u32>,
) -> Result<DatabaseConnection, DbErr> {
    let url = with_create_mode(url);
    let mut options = ConnectOptions::new(url.clone());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(ACQUIRE_TIMEOUT);
    let sqlite = url.starts_with("sqlite:");
    let pool = max_connections
        .unwrap_or_else(|| default_pool(sqlite))
        .max(1);
    if sqlite {
        options
            .max_connections(pool)
            .min_connections(1)
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(if full_sync() {
                        SqliteSynchronous::Full
                    } else {
                        SqliteSynchronous::Normal
                    })
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
    } else {
        options.max_connections(pool).min_connections(1);
    }
    let db = Database::connect(options).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// How long a request waits for a database connection before it is answered 503
/// (`database_unavailable`).
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

static FULL_SYNC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every SQLite connection opened from now on sync each commit to the disk
/// (`synchronous=FULL`), and the open calls' journal sync each record. For the whole process:
/// call it before connecting.
pub fn set_full_sync(full: bool) {
    FULL_SYNC.store(full, std::sync::atomic::Ordering::Relaxed);
}

/// Whether acknowledged writes are synced to the disk before they are answered.
pub fn full_sync() -> bool {
    FULL_SYNC.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the connection is SQLite (single writer: transactions must start IMMEDIATE).
pub fn is_sqlite(db: &DatabaseConnection) -> bool {
    db.get_database_backend() == DbBackend::Sqlite
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode_once() {
        assert_eq!(with_create_mode("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            with_create_mode("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            with_create_mode("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
        assert_eq!(with_create_mode("postgres://u@h/db"), "postgres://u@h/db");
    }
}
