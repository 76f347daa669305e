//! The bulk path: importing customers with their history in large batches (a CRM migration, the
//! benchmark's seed). One serialised transaction per batch (on a SQLite file, a job of the
//! writer thread, on its direct connection), the rows of a batch built once ([`tables`]) and
//! written with multi-row `INSERT`s of a fixed size on SQLite (so the database reuses its
//! prepared statements) or `COPY ... FROM STDIN` on PostgreSQL, customer ids assigned up front
//! so children need no read-back, and each customer's context document written with it.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::DbBackend;
use sea_orm::sqlx::{self, PgConnection};
use serde_json::Value;

use super::cache::CachedCustomer;
use super::context;
use super::end::Touched;
use super::sql::{Arg, Conn};
use super::store::{CALL_WIDTH, CALL_WRITTEN_COLUMNS, CUSTOMER_COLUMNS, call_args, placeholders};
use super::{
    CustomerContext, Engine, OPEN_INTENTS, OpenIntent, RECENT_CALLS, RecentCall, TenantId,
};
use crate::domain::{CustomerRef, ExternalId, IntentName, PhoneNumber};
use crate::entities::{call, customer, identity};
use crate::error::EngineError;

/// One identity of an imported customer.
#[derive(Debug, Clone)]
pub enum ImportedIdentity {
    /// A caller number.
    Ani(PhoneNumber),
    /// An external id.
    External(ExternalId),
}

/// One past call of an imported customer.
#[derive(Debug, Clone)]
pub struct ImportedCall {
    /// The platform's call id (unique per tenant).
    pub call_id: String,
    /// The platform.
    pub platform: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: DateTime<Utc>,
    /// What it was about.
    pub intent: Option<IntentName>,
    /// `open` or `resolved`.
    pub intent_status: Option<&'static str>,
    /// Its summary.
    pub summary: Option<String>,
}

/// A customer to import. Ids, numbers and names are validated by their types.
#[derive(Debug, Clone)]
pub struct ImportedCustomer {
    /// Reference.
    pub customer_ref: CustomerRef,
    /// Numbers and external ids.
    pub identities: Vec<ImportedIdentity>,
    /// Saved variables.
    pub variables: BTreeMap<String, Value>,
    /// Past calls, oldest first.
    pub calls: Vec<ImportedCall>,
    /// Intents still open.
    pub open_intents: Vec<IntentName>,
}

/// Rows written by an import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Customers.
    pub customers: u64,
    /// Identity links.
    pub identities: u64,
    /// Variables.
    pub variables: u64,
    /// Calls.
    pub calls: u64,
    /// Intents.
    pub intents: u64,
}

/// Rows per multi-row `INSERT` at most: under SQLite's 32,766 bound parameters for the widest
/// table (calls, 23 columns).
const ROWS_PER_INSERT: usize = 1000;

/// Inserts a table's rows in statements of [`ROWS_PER_INSERT`] rows (the same text each
/// time: prepared once per connection).
async fn insert_rows(c: Conn<'_>, table: &Table<'_>) -> Result<(), EngineError> {
    debug_assert_eq!(table.columns.split(',').count(), table.width);
    // SQLite takes positional `?`: sqlx looks each `$n` up by name, which is quadratic in
    // the number of parameters (thousands here).
    let positional = c.backend() == DbBackend::Sqlite;
    for chunk in table.values.chunks(ROWS_PER_INSERT * table.width) {
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            table.name,
            table.columns,
            placeholders(chunk.len() / table.width, table.width, positional)
        );
        c.execute(&sql, chunk).await?;
    }
    Ok(())
}

/// An identity row: customer, kind, value, call count, first and last seen.
type IdentityRow = (i64, &'static str, String, i64, DateTime<Utc>, DateTime<Utc>);

/// The rows of one batch, owned, before they are bound.
struct Batch {
    customers: Vec<(customer::Model, String)>,
    identities: Vec<IdentityRow>,
    variables: Vec<(i64, String, String, DateTime<Utc>)>,
    intents: Vec<(i64, String, DateTime<Utc>, Option<String>)>,
    calls: Vec<call::Model>,
}

fn batch_rows(
    tenant: TenantId,
    first_id: i64,
    customers: Vec<ImportedCustomer>,
    now: DateTime<Utc>,
) -> Result<Batch, EngineError> {
    let mut out = Batch {
        customers: Vec::with_capacity(customers.len()),
        identities: Vec::new(),
        variables: Vec::new(),
        intents: Vec::new(),
        calls: Vec::new(),
    };
    for (id, mut c) in (first_id..).zip(customers) {
        // Stored to the microsecond (PostgreSQL's precision), so the documents hold exactly
        // what the tables hold.
        for k in &mut c.calls {
            k.started_at = k.started_at.trunc_subsecs(6);
            k.ended_at = k.ended_at.trunc_subsecs(6);
        }
        let first = c.calls.first().map(|k| k.started_at);
        let last = c.calls.last().map(|k| k.ended_at);
        let model = customer::Model {
            id,
            tenant_id: tenant.0,
            customer_ref: c.customer_ref.as_str().to_owned(),
            provisional: false,
            call_count: c.calls.len() as i64,
            first_seen_at: first,
            last_seen_at: last,
            created_at: now,
            updated_at: now,
        };
        let document = context::document_for(&imported_document(&c, model.clone(), now))?;
        out.customers.push((model, document));
        for ident in &c.identities {
            let (kind, value) = match ident {
                ImportedIdentity::Ani(n) => (identity::KIND_ANI, n.as_str().to_owned()),
                ImportedIdentity::External(e) => (identity::KIND_EXTERNAL, e.pair()),
            };
            out.identities.push((
                id,
                kind,
                value,
                (c.calls.len() as i64).max(1),
                first.unwrap_or(now),
                last.unwrap_or(now),
            ));
        }
        for (name, value) in &c.variables {
            out.variables.push((
                id,
                name.clone(),
                serde_json::to_string(value)?,
                last.unwrap_or(now),
            ));
        }
        for name in &c.open_intents {
            out.intents.push((
                id,
                name.as_str().to_owned(),
                last.unwrap_or(now),
                c.calls.last().map(|k| k.call_id.clone()),
            ));
        }
        let ani = c.identities.iter().find_map(|i| match i {
            ImportedIdentity::Ani(n) => Some(n.as_str().to_owned()),
            ImportedIdentity::External(_) => None,
        });
        for k in c.calls {
            out.calls.push(call::Model {
                id: 0,
                tenant_id: tenant.0,
                call_id: k.call_id,
                platform: k.platform,
                ani: ani.clone(),
                ani_withheld: false,
                dnis: None,
                external_ids: "{}".to_owned(),
                matched_customer_id: Some(id),
                confidence: None,
                band: None,
                recommended_action: None,
                signals: "[]".to_owned(),
                candidates: "[]".to_owned(),
                customer_id: Some(id),
                status: call::STATUS_ENDED.to_owned(),
                intent: k.intent.map(|i| i.as_str().to_owned()),
                intent_status: k.intent_status.map(str::to_owned),
                summary: k.summary,
                variables: "{}".to_owned(),
                started_at: Some(k.started_at),
                ended_at: Some(k.ended_at),
                created_at: now,
                updated_at: now,
            });
        }
    }
    Ok(out)
}

/// One table's rows of a batch, bound: `width` values per row, one per column of `columns`.
struct Table<'a> {
    name: &'static str,
    columns: &'static str,
    width: usize,
    values: Vec<Arg<'a>>,
}

impl Table<'_> {
    fn rows(&self) -> u64 {
        (self.values.len() / self.width) as u64
    }
}

/// A batch's rows, table by table, in the order they are written (parents first).
fn tables(b: &Batch, tenant: TenantId, now: DateTime<Utc>) -> [Table<'_>; 6] {
    let t = tenant.0;
    let mut customers: Vec<Arg<'_>> = Vec::with_capacity(b.customers.len() * 9);
    let mut documents: Vec<Arg<'_>> = Vec::with_capacity(b.customers.len() * 4);
    for (m, document) in &b.customers {
        customers.extend::<[Arg<'_>; _]>([
            m.id.into(),
            t.into(),
            m.customer_ref.as_str().into(),
            false.into(),
            m.call_count.into(),
            m.first_seen_at.into(),
            m.last_seen_at.into(),
            now.into(),
            now.into(),
        ]);
        documents.extend::<[Arg<'_>; _]>([
            m.id.into(),
            t.into(),
            context::FORMAT.into(),
            document.into(),
        ]);
    }
    let mut identities: Vec<Arg<'_>> = Vec::with_capacity(b.identities.len() * 7);
    for (id, kind, value, count, first, last) in &b.identities {
        identities.extend::<[Arg<'_>; _]>([
            t.into(),
            (*id).into(),
            (*kind).into(),
            value.into(),
            (*count).into(),
            (*first).into(),
            (*last).into(),
        ]);
    }
    let mut variables: Vec<Arg<'_>> = Vec::with_capacity(b.variables.len() * 5);
    for (id, name, value, at) in &b.variables {
        variables.extend::<[Arg<'_>; _]>([
            t.into(),
            (*id).into(),
            name.into(),
            value.into(),
            (*at).into(),
        ]);
    }
    let mut intents: Vec<Arg<'_>> = Vec::with_capacity(b.intents.len() * 8);
    for (id, name, at, last_call) in &b.intents {
        intents.extend::<[Arg<'_>; _]>([
            t.into(),
            (*id).into(),
            name.into(),
            "open".into(),
            (*at).into(),
            (*at).into(),
            Option::<DateTime<Utc>>::None.into(),
            last_call.into(),
        ]);
    }
    [
        Table {
            name: "customers",
            columns: CUSTOMER_COLUMNS,
            width: 9,
            values: customers,
        },
        Table {
            name: "identities",
            columns: "tenant_id, customer_id, kind, value, call_count, first_seen_at, last_seen_at",
            width: 7,
            values: identities,
        },
        Table {
            name: "variables",
            columns: "tenant_id, customer_id, name, value, updated_at",
            width: 5,
            values: variables,
        },
        Table {
            name: "intents",
            columns: "tenant_id, customer_id, intent, status, opened_at, updated_at, resolved_at, \
                      last_call_id",
            width: 8,
            values: intents,
        },
        Table {
            name: "calls",
            columns: CALL_WRITTEN_COLUMNS,
            width: CALL_WIDTH,
            values: b.calls.iter().flat_map(call_args).collect(),
        },
        Table {
            name: "customer_contexts",
            columns: "customer_id, tenant_id, format, body",
            width: 4,
            values: documents,
        },
    ]
}

fn report(tables: &[Table<'_>; 6]) -> ImportReport {
    ImportReport {
        customers: tables[0].rows(),
        identities: tables[1].rows(),
        variables: tables[2].rows(),
        intents: tables[3].rows(),
        calls: tables[4].rows(),
    }
}

/// Writes a batch inside the caller's write transaction, in multi-row `INSERT`s (SQLite;
/// PostgreSQL imports with [`import_copy`]).
pub(super) async fn import_in(
    c: Conn<'_>,
    tenant: TenantId,
    customers: Vec<ImportedCustomer>,
) -> Result<ImportReport, EngineError> {
    let now = crate::now();
    let max = c
        .query_one("SELECT MAX(id) FROM customers", &[], |r| r.int(0))
        .await?
        .flatten();
    let b = batch_rows(tenant, max.unwrap_or(0) + 1, customers, now)?;
    let tables = tables(&b, tenant, now);
    for table in &tables {
        insert_rows(c, table).await?;
    }
    Ok(report(&tables))
}

/// Writes a batch inside the caller's PostgreSQL transaction with `COPY ... FROM STDIN`: the
/// same rows as [`import_in`], without a statement to parse and plan per thousand rows nor
/// thousands of bound parameters (about twice as fast as the multi-row inserts here).
async fn import_copy(
    conn: &mut PgConnection,
    tenant: TenantId,
    customers: Vec<ImportedCustomer>,
) -> Result<ImportReport, EngineError> {
    let now = crate::now();
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM customers")
        .fetch_one(&mut *conn)
        .await
        .map_err(sqlx_err)?;
    let b = batch_rows(tenant, max.unwrap_or(0) + 1, customers, now)?;
    let tables = tables(&b, tenant, now);
    for table in &tables {
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY {} ({}) FROM STDIN",
                table.name, table.columns
            ))
            .await
            .map_err(sqlx_err)?;
        let mut buf = Vec::with_capacity(COPY_CHUNK + 4096);
        let mut sent = Ok(());
        for row in table.values.chunks(table.width) {
            copy_row(&mut buf, row);
            if buf.len() >= COPY_CHUNK {
                if let Err(e) = copy.send(std::mem::take(&mut buf)).await {
                    sent = Err(e);
                    break;
                }
                buf.reserve(COPY_CHUNK + 4096);
            }
        }
        if sent.is_ok() && !buf.is_empty() {
            sent = copy.send(buf).await.map(|_| ());
        }
        match sent {
            Ok(()) => {
                copy.finish().await.map_err(sqlx_err)?;
            }
            Err(e) => {
                // The connection must leave copy mode before the transaction rolls back.
                let _ = copy.abort("the import failed").await;
                return Err(sqlx_err(e));
            }
        }
    }
    Ok(report(&tables))
}

/// Bytes of `COPY` data sent at a time.
const COPY_CHUNK: usize = 1 << 20;

/// One row in `COPY`'s text format: tab-separated fields, `\N` for null, backslash escapes.
fn copy_row(buf: &mut Vec<u8>, row: &[Arg<'_>]) {
    use std::io::Write;
    for (k, arg) in row.iter().enumerate() {
        if k > 0 {
            buf.push(b'\t');
        }
        match *arg {
            Arg::Int(Some(v)) => {
                let _ = write!(buf, "{v}");
            }
            Arg::Real(Some(v)) => {
                let _ = write!(buf, "{v:?}");
            }
            Arg::Text(Some(v)) => copy_text(buf, v),
            Arg::Time(Some(v)) => {
                let _ = write!(buf, "{}", v.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
            }
            Arg::Flag(v) => buf.push(if v { b't' } else { b'f' }),
            Arg::Int(None) | Arg::Real(None) | Arg::Text(None) | Arg::Time(None) => {
                buf.extend_from_slice(b"\\N");
            }
        }
    }
    buf.push(b'\n');
}

/// Text escaped for `COPY`'s text format.
fn copy_text(buf: &mut Vec<u8>, text: &str) {
    for &byte in text.as_bytes() {
        match byte {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(byte),
        }
    }
}

/// A sqlx error of a statement run outside sea-orm, as sea-orm's would be.
pub(super) fn sqlx_err(e: sqlx::Error) -> EngineError {
    // Through `From`: a full disk is told apart there.
    EngineError::from(super::batch::sqlx_failure(e))
}

/// The context of a customer the import creates, as `load_context` would read it from the
/// rows written here (a test checks that they agree).
fn imported_document(
    c: &ImportedCustomer,
    model: customer::Model,
    now: DateTime<Utc>,
) -> CachedCustomer {
    let last = c.calls.last();
    let touched = last.map_or(now, |k| k.ended_at);
    let mut ended: Vec<(usize, &ImportedCall)> = c.calls.iter().enumerate().collect();
    // Latest end first, then the latest written (the row id).
    ended.sort_by(|(i, x), (j, y)| y.ended_at.cmp(&x.ended_at).then(j.cmp(i)));
    let context = CustomerContext {
        variables: c.variables.clone(),
        open_intents: c
            .open_intents
            .iter()
            .take(OPEN_INTENTS as usize)
            .map(|name| OpenIntent {
                intent: name.as_str().to_owned(),
                opened_at: touched,
                last_call_id: last.map(|k| k.call_id.clone()),
                due_at: None,
                state: None,
            })
            .collect(),
        variable_expiry: Default::default(),
        recent_calls: ended
            .into_iter()
            .take(RECENT_CALLS as usize)
            .map(|(_, k)| RecentCall {
                call_id: k.call_id.clone(),
                started_at: Some(k.started_at),
                ended_at: Some(k.ended_at),
                intent: k.intent.as_ref().map(|i| i.as_str().to_owned()),
                intent_status: k.intent_status.map(str::to_owned),
                summary: k.summary.clone(),
            })
            .collect(),
        call_count: model.call_count,
        first_seen_at: model.first_seen_at,
        last_seen_at: model.last_seen_at,
    };
    CachedCustomer {
        model,
        context,
        // Every imported intent was last touched with the customer's last call.
        newest_open_intent: (!c.open_intents.is_empty()).then_some(touched),
    }
}

impl Engine {
    /// Imports a batch of customers in one transaction: all of it or nothing.
    ///
    /// # Errors
    /// A reference or call id that already exists (nothing of the batch is written), or
    /// database failures.
    pub async fn import_customers(
        &self,
        tenant: TenantId,
        batch: Vec<ImportedCustomer>,
    ) -> Result<ImportReport, EngineError> {
        if let Some(lite) = &self.lite {
            // The writer thread runs it (and makes the caches forget everything).
            return lite.import(tenant, batch).await;
        }
        if self.db.get_database_backend() == DbBackend::Postgres {
            return self.import_postgres(tenant, batch).await;
        }
        let (_writer, tx) = self.begin_write(tenant).await?;
        let report = import_in(Conn::Tx(&tx), tenant, batch).await?;
        // Numbers that were unknown until now may be cached as "nobody".
        self.commit(tx, Touched::widely(tenant)).await?;
        Ok(report)
    }

    /// [`Self::import_customers`] on PostgreSQL: on one of sqlx's connections (`COPY` needs
    /// it), under the same locks as [`Self::begin_write`], with the same notification and
    /// forgetting as [`Self::commit`]. In a task of its own, like a commit: a request that
    /// goes away cannot stop it between the commit and the caches' forgetting.
    async fn import_postgres(
        &self,
        tenant: TenantId,
        batch: Vec<ImportedCustomer>,
    ) -> Result<ImportReport, EngineError> {
        let pool = self.db.get_postgres_connection_pool().clone();
        let caches = self.caches.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.map_err(sqlx_err)?;
            sqlx::query(super::TENANT_LOCK)
                .bind(tenant.0)
                .execute(&mut *tx)
                .await
                .map_err(sqlx_err)?;
            let report = import_copy(&mut tx, tenant, batch).await?;
            // Ids were assigned here: move the sequence past them.
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('customers', 'id'), \
                 (SELECT MAX(id) FROM customers))",
            )
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
            // Numbers that were unknown until now may be cached as "nobody", here and in
            // the other processes.
            let touched = Touched::widely(tenant);
            if let Some(change) = touched.change(caches.origin()) {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(crate::coherence::CHANNEL)
                    .bind(change.payload())
                    .execute(&mut *tx)
                    .await
                    .map_err(sqlx_err)?;
            }
            tx.commit().await.map_err(sqlx_err)?;
            touched.forget(&caches).await;
            Ok(report)
        })
        .await
        .map_err(|e| EngineError::Corrupt(format!("an import did not finish: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(args: &[Arg<'_>]) -> String {
        let mut buf = Vec::new();
        copy_row(&mut buf, args);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn copy_rows_escape_what_the_text_format_reads_specially() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            row(&[
                7.into(),
                "a\tb\nc\rd\\e \\N é".into(),
                Option::<&str>::None.into(),
                true.into(),
                false.into(),
                at.into(),
                Option::<f64>::Some(0.5).into(),
                Option::<i64>::None.into(),
            ]),
            "7\ta\\tb\\nc\\rd\\\\e \\\\N é\t\\N\tt\tf\t2026-01-02T03:04:05.123456Z\t0.5\t\\N\n"
        );
        // A whole second keeps its six digits; an empty text is not null.
        let whole = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            row(&[whole.into(), "".into()]),
            "2026-01-02T03:04:05.000000Z\t\n"
        );
    }
}
