//! `sticky-calls backup` and `sticky-calls restore`: a consistent copy of a live SQLite
//! deployment in one file, and that file put back into an empty location.
//!
//! A SQLite deployment keeps its data in the database file, its write-ahead log, and the open
//! calls' journal beside them (`<db>-starts.<n>`: starts of calls that have not ended). A
//! backup, while the server keeps answering:
//!
//! 1. copies the journal's segments (what is in them when each is read; a record being
//!    appended at that moment may be cut short, and is skipped when read back, as after a
//!    crash: its start had not been answered);
//! 2. then copies the database, log included, with SQLite's online backup in one step (one
//!    read transaction: a consistent snapshot, and the server's writes do not wait for it);
//! 3. opens the copy with its copied journal beside it, which reads the journal back as a
//!    server would, and moves every open call into the copy's `calls`; a record whose call
//!    reached the database between steps 1 and 2 is already there and is skipped;
//! 4. leaves one self-contained file (rollback journal mode, no `-wal` beside it).
//!
//! Whatever was acknowledged before the backup began is in it: a start still open then is in a
//! segment copied in step 1, or, if its segment retired before it was copied, in the database
//! by then (a segment is deleted only once its calls are committed there); an end is committed
//! before it is answered. Writes acknowledged while it runs may or may not be in it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OpenFlags};
use sticky_core::db;
use sticky_core::domain::DefaultRegion;
use sticky_core::engine::Engine;

/// What a backup or a restore holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contents {
    /// Tenants.
    pub tenants: i64,
    /// Customers.
    pub customers: i64,
    /// Calls, open ones included.
    pub calls: i64,
}

/// What `backup` did.
#[derive(Debug, Clone, Copy)]
pub struct BackupReport {
    /// What the file holds.
    pub contents: Contents,
    /// Open calls whose start was in the journal, now in the file's `calls`.
    pub open_calls: usize,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// The file a `sqlite:` URL names; an error for PostgreSQL and in-memory databases.
///
/// # Errors
/// A URL that names no SQLite file.
pub fn sqlite_file(url: &str) -> anyhow::Result<PathBuf> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        bail!(
            "this is a PostgreSQL database: back it up with pg_dump and restore it with \
             pg_restore (see docs/operations.md); keep the server key as well"
        );
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        bail!("the database URL must start with sqlite:// or postgres://");
    };
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        bail!("the database URL names no file (an in-memory database has nothing to back up)");
    }
    Ok(PathBuf::from(path))
}

/// `base` with `suffix` appended to its file name.
fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = base.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The open calls' journal segments beside `database`, with their numbers.
fn journal_segments(database: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let dir = match database.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = database.file_name().and_then(|n| n.to_str()) else {
        bail!("the database file name is not valid UTF-8");
    };
    let prefix = format!("{name}-starts.");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(seq) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        found.push((seq.to_owned(), entry.path()));
    }
    Ok(found)
}

/// The database's files that a restore must not overwrite or mix with.
fn existing_files(database: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = ["", "-wal", "-shm"]
        .iter()
        .map(|s| with_suffix(database, s))
        .filter(|p| p.exists())
        .collect();
    if database
        .parent()
        .is_none_or(|d| d.as_os_str().is_empty() || d.exists())
    {
        files.extend(journal_segments(database)?.into_iter().map(|(_, p)| p));
    }
    Ok(files)
}

/// Removes a database file and everything beside it that belongs to it.
fn remove_database(database: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal", "-starts.lock"] {
        let _ = std::fs::remove_file(with_suffix(database, suffix));
    }
    if let Ok(segments) = journal_segments(database) {
        for (_, path) in segments {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn sqlite_url(file: &Path) -> String {
    format!("sqlite://{}", file.display())
}

/// Counts what a Sticky Calls database holds; an error if it is not one.
fn contents(conn: &Connection) -> anyhow::Result<Contents> {
    let count = |table: &str| -> anyhow::Result<i64> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .with_context(|| format!("not a Sticky Calls database (no `{table}` table)"))
    };
    Ok(Contents {
        tenants: count("tenants")?,
        customers: count("customers")?,
        calls: count("calls")?,
    })
}

/// Copies the live database behind `database_url` (a running server may keep writing to it)
/// into `out`, which must not exist. See the module documentation.
///
/// # Errors
/// A PostgreSQL URL, a missing database, an existing `out`, or a failure to read or write;
/// nothing is left at `out` then.
pub async fn backup(database_url: &str, out: &Path) -> anyhow::Result<BackupReport> {
    let live = sqlite_file(database_url)?;
    if !live.is_file() {
        bail!("no database at {}", live.display());
    }
    if out.exists() {
        bail!("{} exists already: name a new file", out.display());
    }
    let partial = with_suffix(out, ".partial");
    remove_database(&partial);
    let result = backup_into(&live, &partial).await;
    match result {
        Ok(open_calls) => {
            std::fs::rename(&partial, out)
                .with_context(|| format!("renaming the backup to {}", out.display()))?;
            remove_database(&partial);
            let conn = Connection::open_with_flags(out, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            Ok(BackupReport {
                contents: contents(&conn)?,
                open_calls,
                bytes: std::fs::metadata(out)?.len(),
            })
        }
        Err(e) => {
            remove_database(&partial);
            Err(e)
        }
    }
}

/// Steps 1-4 into `partial`; how many open calls came from the journal.
async fn backup_into(live: &Path, partial: &Path) -> anyhow::Result<usize> {
    // 1. The journal first (see the module documentation for why this order).
    for (seq, path) in journal_segments(live)? {
        match std::fs::read(&path) {
            Ok(data) => std::fs::write(with_suffix(partial, &format!("-starts.{seq}")), data)
                .context("writing the journal's copy")?,
            // Retired meanwhile: its calls are in the database now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    // 2. The database, in one read transaction.
    let (src_path, dst_path) = (live.to_path_buf(), partial.to_path_buf());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let src = Connection::open_with_flags(
            &src_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {}", src_path.display()))?;
        src.busy_timeout(Duration::from_secs(30))?;
        contents(&src)?;
        let mut dst = Connection::open(&dst_path).context("creating the copy")?;
        let copy = rusqlite::backup::Backup::new(&src, &mut dst).context("copying the database")?;
        copy.step(-1).context("copying the database")?;
        Ok(())
    })
    .await??;
    // 3. Read the copied journal back into the copy, as a server would on opening it.
    let conn = db::connect_and_migrate(&sqlite_url(partial))
        .await
        .context("opening the copy")?;
    let engine = Engine::open(conn.clone(), DefaultRegion::default())
        .await
        .context("reading the journal's copy back")?;
    let open_calls = engine.open_calls();
    engine
        .move_open_calls()
        .await
        .context("moving the open calls into the copy")?;
    drop(engine);
    conn.close().await?;
    // 4. One file: the log checkpointed into it and the journal's copies gone.
    let path = partial.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for (_, segment) in journal_segments(&path)? {
            std::fs::remove_file(segment)?;
        }
        let _ = std::fs::remove_file(with_suffix(&path, "-starts.lock"));
        let conn = Connection::open(&path)?;
        // Leaving WAL mode needs the file alone: the engine's threads close their connections
        // as they stop, just after it is dropped (SQLite's busy handler does not wait here).
        let mut tries = 0;
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 300 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                r => break r.context("making the copy one file")?,
            }
        };
        if !mode.eq_ignore_ascii_case("delete") {
            bail!("the copy is still in use (journal mode {mode})");
        }
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            bail!("the copy failed SQLite's check: {check}");
        }
        drop(conn);
        std::fs::File::open(&path)?.sync_all()?;
        Ok(())
    })
    .await??;
    Ok(open_calls)
}

/// Puts the backup `file` in place as the database behind `database_url`, which must be an
/// empty location (no database file, log or journal there), and migrates it to this version.
///
/// # Errors
/// A PostgreSQL URL, an occupied location, a file that is not a Sticky Calls database, or a
/// failure to write; nothing is left in the location then.
pub async fn restore(file: &Path, database_url: &str) -> anyhow::Result<Contents> {
    let target = sqlite_file(database_url)?;
    if !file.is_file() {
        bail!("no backup at {}", file.display());
    }
    let occupied = existing_files(&target)?;
    if let Some(first) = occupied.first() {
        bail!(
            "{} exists: restore needs an empty location (stop the server and move its \
             database files away first)",
            first.display()
        );
    }
    let source = file.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let conn = Connection::open_with_flags(&source, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", source.display()))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .context("not a SQLite database")?;
        if check != "ok" {
            bail!("the backup failed SQLite's check: {check}");
        }
        contents(&conn)?;
        Ok(())
    })
    .await??;
    let partial = with_suffix(&target, ".partial");
    remove_database(&partial);
    let result = async {
        std::fs::copy(file, &partial).with_context(|| format!("writing {}", partial.display()))?;
        let conn = db::connect_and_migrate(&sqlite_url(&partial))
            .await
            .context("migrating the restored database")?;
        conn.close().await?;
        let path = partial.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Contents> {
            let conn = Connection::open(&path)?;
            // Back to one file before it moves: a log must not be left behind under the
            // partial name.
            let _: String = conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
            let found = contents(&conn)?;
            drop(conn);
            std::fs::File::open(&path)?.sync_all()?;
            Ok(found)
        })
        .await?
    }
    .await;
    match result {
        Ok(found) => {
            std::fs::rename(&partial, &target)
                .with_context(|| format!("moving the database to {}", target.display()))?;
            remove_database(&partial);
            Ok(found)
        }
        Err(e) => {
            remove_database(&partial);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite://data/a.db?mode=rwc").unwrap(),
            PathBuf::from("data/a.db")
        );
        assert_eq!(
            sqlite_file("sqlite:///var/lib/s.db").unwrap(),
            PathBuf::from("/var/lib/s.db")
        );
        assert_eq!(sqlite_file("sqlite:a.db").unwrap(), PathBuf::from("a.db"));
        assert!(
            sqlite_file("postgres://u@h/d")
                .unwrap_err()
                .to_string()
                .contains("pg_dump")
        );
        assert!(sqlite_file("sqlite::memory:").is_err());
        assert!(sqlite_file("mysql://h/d").is_err());
    }

    #[test]
    fn journal_segments_are_the_numbered_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        for name in [
            "s.db",
            "s.db-starts.1",
            "s.db-starts.12",
            "s.db-starts.lock",
            "s.db-starts.",
            "t.db-starts.3",
            "s.db-wal",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let mut seqs: Vec<String> = journal_segments(&db)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        seqs.sort();
        assert_eq!(seqs, ["1", "12"]);
        let mut occupied = existing_files(&db).unwrap();
        occupied.sort();
        assert_eq!(occupied.len(), 4, "{occupied:?}");
    }

    /// A database in the location, or only its journal, refuses a restore; nothing is
    /// written.
    #[tokio::test]
    async fn restore_refuses_an_occupied_location() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("b.db");
        std::fs::write(&backup, b"whatever").unwrap();
        let target = dir.path().join("s.db");
        std::fs::write(with_suffix(&target, "-starts.4"), b"x").unwrap();
        let e = restore(&backup, &sqlite_url(&target)).await.unwrap_err();
        assert!(e.to_string().contains("empty location"), "{e}");
        assert!(!target.exists());
    }

    /// A file that is not a Sticky Calls database is refused before anything is written.
    #[tokio::test]
    async fn restore_refuses_what_is_not_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("s.db");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"not a database at all, just some text").unwrap();
        assert!(restore(&text, &sqlite_url(&target)).await.is_err());
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE things (id INTEGER)")
            .unwrap();
        let e = restore(&other, &sqlite_url(&target)).await.unwrap_err();
        assert!(e.to_string().contains("not a Sticky Calls database"), "{e}");
        assert_eq!(existing_files(&target).unwrap(), Vec::<PathBuf>::new());
    }
}
