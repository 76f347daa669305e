//! The SQL the call path runs, written once for both databases.
//!
//! Statements use PostgreSQL's `$1` placeholders (SQLite reads them as `?1`, the same numbered
//! parameter). They run on one of two kinds of connection:
//! - [`Conn::Lite`]: a `rusqlite` connection of this process (the SQLite fast path). A statement
//!   is prepared once per connection and then runs in a few microseconds, on the calling thread.
//!   sqlx's SQLite driver instead hands every statement to a worker thread and back, which costs
//!   more than the read itself (~100 µs a statement on this machine).
//! - [`Conn::Pool`] / [`Conn::Tx`]: sea-orm's pool or transaction (PostgreSQL, and SQLite when no
//!   file path is available, like `sqlite::memory:`).
//!
//! Rows are read by column index through [`Row`], whichever connection produced them.

use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::{ToSqlOutput, ValueRef};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement};

use crate::error::EngineError;

/// A rusqlite connection that async code can hold across `.await` (the mutex makes a shared
/// reference `Send`; it is never contended: one task uses a connection at a time).
pub(super) type LiteConn = Mutex<rusqlite::Connection>;

/// Where a statement runs.
#[derive(Clone, Copy)]
pub(super) enum Conn<'a> {
    Lite(&'a LiteConn),
    Pool(&'a DatabaseConnection),
    Tx(&'a DatabaseTransaction),
}

/// A statement parameter. Nulls carry their type (PostgreSQL needs it).
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<&'a str>),
    Time(Option<DateTime<Utc>>),
    Flag(bool),
}

/// One column's values of several rows, bound as an array: every row's value of a column has
/// the same kind ([`super::store::insert_calls_pg`]).
impl<'a> Arg<'a> {
    fn mismatch() -> EngineError {
        EngineError::Corrupt("a column's values differ in type between rows".into())
    }

    pub(super) fn int(&self) -> Result<Option<i64>, EngineError> {
        match self {
            Arg::Int(v) => Ok(*v),
            _ => Err(Self::mismatch()),
        }
    }

    pub(super) fn real(&self) -> Result<Option<f64>, EngineError> {
        match self {
            Arg::Real(v) => Ok(*v),
            _ => Err(Self::mismatch()),
        }
    }

    pub(super) fn text(&self) -> Result<Option<&'a str>, EngineError> {
        match self {
            Arg::Text(v) => Ok(*v),
            _ => Err(Self::mismatch()),
        }
    }

    pub(super) fn time(&self) -> Result<Option<DateTime<Utc>>, EngineError> {
        match self {
            Arg::Time(v) => Ok(*v),
            _ => Err(Self::mismatch()),
        }
    }

    pub(super) fn flag(&self) -> Result<bool, EngineError> {
        match self {
            Arg::Flag(v) => Ok(*v),
            _ => Err(Self::mismatch()),
        }
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<Option<f64>> for Arg<'_> {
    fn from(v: Option<f64>) -> Self {
        Arg::Real(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}

impl From<DateTime<Utc>> for Arg<'_> {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Time(Some(v))
    }
}

impl From<Option<DateTime<Utc>>> for Arg<'_> {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Arg::Time(v)
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Flag(v)
    }
}

/// Times as sqlx stores them in SQLite (RFC 3339, `+00:00`), so that both drivers read each
/// other's rows and text order stays time order.
pub(super) fn sqlite_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn parse_sqlite_time(text: &str) -> Result<DateTime<Utc>, EngineError> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%F %T%.f%:z"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| EngineError::Corrupt(format!("unreadable time in the database: {e}")))
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value;
        Ok(match *self {
            Arg::Int(Some(v)) => ToSqlOutput::Owned(Value::Integer(v)),
            Arg::Real(Some(v)) => ToSqlOutput::Owned(Value::Real(v)),
            Arg::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Arg::Time(Some(t)) => ToSqlOutput::Owned(Value::Text(sqlite_time(&t))),
            Arg::Flag(v) => ToSqlOutput::Owned(Value::Integer(i64::from(v))),
            Arg::Int(None) | Arg::Real(None) | Arg::Text(None) | Arg::Time(None) => {
                ToSqlOutput::Owned(Value::Null)
            }
        })
    }
}

impl From<Arg<'_>> for sea_orm::Value {
    fn from(a: Arg<'_>) -> Self {
        match a {
            Arg::Int(v) => sea_orm::Value::BigInt(v),
            Arg::Real(v) => sea_orm::Value::Double(v),
            Arg::Text(v) => sea_orm::Value::String(v.map(str::to_owned)),
            Arg::Time(v) => sea_orm::Value::ChronoDateTimeUtc(v),
            Arg::Flag(v) => sea_orm::Value::Bool(Some(v)),
        }
    }
}

/// One result row, read by column index.
pub(super) trait Row {
    fn int(&self, i: usize) -> Result<Option<i64>, EngineError>;
    fn real(&self, i: usize) -> Result<Option<f64>, EngineError>;
    fn text(&self, i: usize) -> Result<Option<String>, EngineError>;
    fn time(&self, i: usize) -> Result<Option<DateTime<Utc>>, EngineError>;
    fn flag(&self, i: usize) -> Result<bool, EngineError>;

    /// A column that must not be null.
    fn int_req(&self, i: usize) -> Result<i64, EngineError> {
        self.int(i)?.ok_or_else(|| null_column(i))
    }
    fn text_req(&self, i: usize) -> Result<String, EngineError> {
        self.text(i)?.ok_or_else(|| null_column(i))
    }
    fn time_req(&self, i: usize) -> Result<DateTime<Utc>, EngineError> {
        self.time(i)?.ok_or_else(|| null_column(i))
    }
}

fn null_column(i: usize) -> EngineError {
    EngineError::Corrupt(format!("unexpected NULL in result column {i}"))
}

/// A SQLite error of the direct connections: a full disk is [`EngineError::Storage`].
pub(super) fn lite_err(e: rusqlite::Error) -> EngineError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return EngineError::Storage {
            full: true,
            detail: format!("sqlite: {e}"),
        };
    }
    EngineError::Database(sea_orm::DbErr::Custom(format!("sqlite: {e}")))
}

impl Row for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> Result<Option<i64>, EngineError> {
        self.get(i).map_err(lite_err)
    }
    fn real(&self, i: usize) -> Result<Option<f64>, EngineError> {
        self.get(i).map_err(lite_err)
    }
    fn text(&self, i: usize) -> Result<Option<String>, EngineError> {
        self.get(i).map_err(lite_err)
    }
    fn time(&self, i: usize) -> Result<Option<DateTime<Utc>>, EngineError> {
        match self.get_ref(i).map_err(lite_err)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map_err(|e| EngineError::Corrupt(format!("time is not UTF-8: {e}")))
                .and_then(parse_sqlite_time)
                .map(Some),
            other => Err(EngineError::Corrupt(format!(
                "time column {i} holds {:?}",
                other.data_type()
            ))),
        }
    }
    fn flag(&self, i: usize) -> Result<bool, EngineError> {
        Ok(self.get::<_, i64>(i).map_err(lite_err)? != 0)
    }
}

impl Row for sea_orm::QueryResult {
    fn int(&self, i: usize) -> Result<Option<i64>, EngineError> {
        Ok(self.try_get_by_index(i)?)
    }
    fn real(&self, i: usize) -> Result<Option<f64>, EngineError> {
        Ok(self.try_get_by_index(i)?)
    }
    fn text(&self, i: usize) -> Result<Option<String>, EngineError> {
        Ok(self.try_get_by_index(i)?)
    }
    fn time(&self, i: usize) -> Result<Option<DateTime<Utc>>, EngineError> {
        Ok(self.try_get_by_index(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, EngineError> {
        Ok(self.try_get_by_index(i)?)
    }
}

/// `$1` → `?1`: SQLite's numbered parameters mean the same as PostgreSQL's.
fn sqlite_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    if sql.contains('$') {
        sql.replace('$', "?").into()
    } else {
        sql.into()
    }
}

impl Conn<'_> {
    /// The backend's SQL dialect.
    pub(super) fn backend(&self) -> DbBackend {
        match self {
            Conn::Lite(_) => DbBackend::Sqlite,
            Conn::Pool(c) => c.get_database_backend(),
            Conn::Tx(c) => c.get_database_backend(),
        }
    }

    fn statement(&self, sql: &str, args: &[Arg<'_>]) -> Statement {
        let backend = self.backend();
        let sql = match backend {
            DbBackend::Postgres => sql.into(),
            _ => sqlite_sql(sql),
        };
        Statement::from_sql_and_values(backend, sql, args.iter().map(|a| (*a).into()))
    }

    /// Runs a statement; the number of rows it changed.
    pub(super) async fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, EngineError> {
        match self {
            Conn::Lite(c) => {
                let c = c.lock().map_err(|_| poisoned())?;
                let mut stmt = c.prepare_cached(&sqlite_sql(sql)).map_err(lite_err)?;
                let n = stmt
                    .execute(rusqlite::params_from_iter(args.iter()))
                    .map_err(lite_err)?;
                Ok(n as u64)
            }
            Conn::Pool(c) => Ok(c
                .execute_raw(self.statement(sql, args))
                .await?
                .rows_affected()),
            Conn::Tx(c) => Ok(c
                .execute_raw(self.statement(sql, args))
                .await?
                .rows_affected()),
        }
    }

    /// Runs writes that do not depend on each other, answering the rows each changed. On
    /// PostgreSQL they go as one statement of data-modifying `WITH` clauses: one round trip
    /// instead of one each. Such clauses share one snapshot and see none of each other's
    /// changes, so each write must be an `INSERT`, `UPDATE` or `DELETE` without `RETURNING`
    /// that neither reads what another changes nor changes a row another changes (checked by
    /// the tests of the engine on both databases). Elsewhere they run one after the other.
    ///
    /// `reads` are scalar expressions evaluated after the writes (a parenthesised `SELECT` of
    /// one text value, a function call), in the same statement on PostgreSQL: they see the
    /// database as it was before the writes, so none may read what they change.
    ///
    /// `returning` is one more write, under the same rules, that answers the row it wrote
    /// (`None` when it wrote none), mapped by `map` from its [`Returning::columns`].
    pub(super) async fn execute_together<T>(
        &self,
        writes: &[Write<'_>],
        reads: &[Write<'_>],
        returning: Option<&Returning<'_>>,
        mut map: impl FnMut(&dyn Row) -> Result<T, EngineError>,
    ) -> Result<(Together, Option<T>), EngineError> {
        let statements = writes.len() + reads.len() + usize::from(returning.is_some());
        if statements < 2 || self.backend() != DbBackend::Postgres {
            let mut done = Together {
                changed: Vec::with_capacity(writes.len()),
                read: Vec::with_capacity(reads.len()),
            };
            for w in writes {
                done.changed.push(self.execute(&w.sql, &w.args).await?);
            }
            let returned = match returning {
                Some(r) => {
                    let sql = format!("{} RETURNING {}", r.write.sql, r.columns);
                    self.query_one(&sql, &r.write.args, &mut map).await?
                }
                None => None,
            };
            for r in reads {
                let value = self
                    .query_one(&format!("SELECT {}", r.sql), &r.args, |row| row.text(0))
                    .await?;
                done.read.push(value.flatten());
            }
            return Ok((done, returned));
        }
        let (sql, args) = together(writes, reads, returning);
        self.query_one(&sql, &args, |r| {
            let done = Together {
                changed: (0..writes.len())
                    .map(|i| r.int_req(i).map(|n| u64::try_from(n).unwrap_or(0)))
                    .collect::<Result<_, EngineError>>()?,
                read: (0..reads.len())
                    .map(|i| r.text(writes.len() + i))
                    .collect::<Result<_, EngineError>>()?,
            };
            let at = writes.len() + reads.len();
            let returned = match returning {
                // No row written: the outer join's columns are null, the first (its id) too.
                Some(_) if r.int(at)?.is_some() => Some(map(&Shifted { row: r, by: at })?),
                _ => None,
            };
            Ok((done, returned))
        })
        .await?
        .ok_or_else(|| EngineError::Corrupt("writes run together answered nothing".into()))
    }

    /// Runs a query and maps every row.
    pub(super) async fn query<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        mut map: impl FnMut(&dyn Row) -> Result<T, EngineError>,
    ) -> Result<Vec<T>, EngineError> {
        match self {
            Conn::Lite(c) => {
                let c = c.lock().map_err(|_| poisoned())?;
                let mut stmt = c.prepare_cached(&sqlite_sql(sql)).map_err(lite_err)?;
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(args.iter()))
                    .map_err(lite_err)?;
                let mut out = Vec::new();
                while let Some(r) = rows.next().map_err(lite_err)? {
                    out.push(map(r)?);
                }
                Ok(out)
            }
            Conn::Pool(c) => c
                .query_all_raw(self.statement(sql, args))
                .await?
                .iter()
                .map(|r| map(r))
                .collect(),
            Conn::Tx(c) => c
                .query_all_raw(self.statement(sql, args))
                .await?
                .iter()
                .map(|r| map(r))
                .collect(),
        }
    }

    /// Runs a query expected to give at most one row.
    pub(super) async fn query_one<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        map: impl FnMut(&dyn Row) -> Result<T, EngineError>,
    ) -> Result<Option<T>, EngineError> {
        Ok(self.query(sql, args, map).await?.into_iter().next())
    }
}

/// A write for [`Conn::execute_together`].
pub(super) struct Write<'a> {
    pub sql: std::borrow::Cow<'a, str>,
    pub args: Vec<Arg<'a>>,
}

/// The write of [`Conn::execute_together`] that answers its row.
pub(super) struct Returning<'a> {
    /// An `INSERT` (an upsert) or `UPDATE` of at most one row, without `RETURNING`.
    pub write: Write<'a>,
    /// The columns it answers, the first one never null (the row's id).
    pub columns: &'static str,
}

/// A row read from column `by` on: column `i` is the row's column `by + i`.
struct Shifted<'r> {
    row: &'r dyn Row,
    by: usize,
}

impl Row for Shifted<'_> {
    fn int(&self, i: usize) -> Result<Option<i64>, EngineError> {
        self.row.int(self.by + i)
    }
    fn real(&self, i: usize) -> Result<Option<f64>, EngineError> {
        self.row.real(self.by + i)
    }
    fn text(&self, i: usize) -> Result<Option<String>, EngineError> {
        self.row.text(self.by + i)
    }
    fn time(&self, i: usize) -> Result<Option<DateTime<Utc>>, EngineError> {
        self.row.time(self.by + i)
    }
    fn flag(&self, i: usize) -> Result<bool, EngineError> {
        self.row.flag(self.by + i)
    }
}

/// What [`Conn::execute_together`] answers.
pub(super) struct Together {
    /// The rows each write changed.
    pub changed: Vec<u64>,
    /// The value of each read.
    pub read: Vec<Option<String>>,
}

/// PostgreSQL's statement for writes run together: each write a `WITH` clause returning a
/// row for each row it changed, its parameters numbered after the previous ones', and one row
/// of their counts, the reads' values and the columns of the row `returning` wrote (nulls
/// when it wrote none).
fn together<'a>(
    writes: &[Write<'a>],
    reads: &[Write<'a>],
    returning: Option<&Returning<'a>>,
) -> (String, Vec<Arg<'a>>) {
    let mut sql = String::new();
    let mut args = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        sql.push_str(if i == 0 { "WITH " } else { ", " });
        sql.push_str(&format!("w{i} AS ("));
        sql.push_str(&renumbered(&w.sql, args.len()));
        sql.push_str(" RETURNING 1)");
        args.extend(w.args.iter().copied());
    }
    if let Some(r) = returning {
        sql.push_str(if writes.is_empty() { "WITH " } else { ", " });
        sql.push_str("wr AS (");
        sql.push_str(&renumbered(&r.write.sql, args.len()));
        sql.push_str(" RETURNING ");
        sql.push_str(r.columns);
        sql.push(')');
        args.extend(r.write.args.iter().copied());
    }
    let mut columns: Vec<String> = (0..writes.len())
        .map(|i| format!("(SELECT COUNT(*) FROM w{i})"))
        .collect();
    for r in reads {
        columns.push(format!("CAST({} AS TEXT)", renumbered(&r.sql, args.len())));
        args.extend(r.args.iter().copied());
    }
    if !sql.is_empty() {
        sql.push(' ');
    }
    sql.push_str("SELECT ");
    sql.push_str(&columns.join(", "));
    if returning.is_some() {
        sql.push_str(if columns.is_empty() { "wr.*" } else { ", wr.*" });
        sql.push_str(" FROM (SELECT 1) AS one LEFT JOIN wr ON true");
    }
    (sql, args)
}

/// `sql` with each placeholder `$n` made `$(n + by)`.
fn renumbered(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, ch)) = chars.next() {
        out.push(ch);
        if ch != '$' {
            continue;
        }
        let mut n = String::new();
        while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
            n.push(*d);
            chars.next();
        }
        match n.parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&n),
        }
    }
    out
}

fn poisoned() -> EngineError {
    EngineError::Corrupt("a SQLite connection's lock was poisoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_sqlite_parameters() {
        assert_eq!(
            sqlite_sql("SELECT $1, $2, $1 WHERE x = $10"),
            "SELECT ?1, ?2, ?1 WHERE x = ?10"
        );
        assert_eq!(sqlite_sql("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn writes_together_number_their_parameters_in_turn() {
        assert_eq!(
            renumbered("x = $1 AND y = $12 OR $", 3),
            "x = $4 AND y = $15 OR $"
        );
        let (sql, args) = together(
            &[
                Write {
                    sql: "UPDATE a SET x = $1 WHERE id = $2".into(),
                    args: vec![1i64.into(), 2i64.into()],
                },
                Write {
                    sql: "DELETE FROM b WHERE id = $1".into(),
                    args: vec![3i64.into()],
                },
            ],
            &[Write {
                sql: "(SELECT body FROM c WHERE id = $1)".into(),
                args: vec![4i64.into()],
            }],
            None,
        );
        assert_eq!(
            sql,
            "WITH w0 AS (UPDATE a SET x = $1 WHERE id = $2 RETURNING 1), \
             w1 AS (DELETE FROM b WHERE id = $3 RETURNING 1) \
             SELECT (SELECT COUNT(*) FROM w0), (SELECT COUNT(*) FROM w1), \
             CAST((SELECT body FROM c WHERE id = $4) AS TEXT)"
        );
        assert_eq!(args.len(), 4);
        let (sql, _) = together(
            &[],
            &[Write {
                sql: "f($1)".into(),
                args: vec![1i64.into()],
            }],
            None,
        );
        assert_eq!(sql, "SELECT CAST(f($1) AS TEXT)");
    }

    #[test]
    fn a_returning_write_comes_after_the_writes_and_answers_its_row_last() {
        let returning = Returning {
            write: Write {
                sql: "INSERT INTO d (x) VALUES ($1) ON CONFLICT (x) DO UPDATE SET x = $1".into(),
                args: vec![5i64.into()],
            },
            columns: "id, x",
        };
        let (sql, args) = together(
            &[Write {
                sql: "UPDATE a SET x = $1".into(),
                args: vec![1i64.into()],
            }],
            &[Write {
                sql: "f($1)".into(),
                args: vec![2i64.into()],
            }],
            Some(&returning),
        );
        assert_eq!(
            sql,
            "WITH w0 AS (UPDATE a SET x = $1 RETURNING 1), \
             wr AS (INSERT INTO d (x) VALUES ($2) ON CONFLICT (x) DO UPDATE SET x = $2 \
             RETURNING id, x) \
             SELECT (SELECT COUNT(*) FROM w0), CAST(f($3) AS TEXT), wr.* \
             FROM (SELECT 1) AS one LEFT JOIN wr ON true"
        );
        assert_eq!(args.len(), 3);
    }

    #[test]
    fn sqlite_times_round_trip_in_sqlx_format() {
        let t = crate::now();
        let text = sqlite_time(&t);
        assert!(text.ends_with("+00:00"), "{text}");
        assert_eq!(parse_sqlite_time(&text).unwrap(), t);
        let whole = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(sqlite_time(&whole), "2026-01-02T03:04:05+00:00");
    }
}
