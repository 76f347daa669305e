//! The bulk path: importing customers with their history in large batches (a CRM migration, the
//! benchmark's seed). One serialised transaction per batch (on a SQLite file, a job of the
//! writer thread, on its direct connection), multi-row `INSERT`s of a fixed size (so the
//! database reuses its prepared statements), customer ids assigned up front so children need
//! no read-back, and each customer's context document written with it.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::Value;

use super::cache::CachedCustomer;
use super::context;
use super::end::Touched;
use super::sql::{Arg, Conn};
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

/// Inserts rows given as consecutive groups of `columns.len()` values, in statements of
/// [`ROWS_PER_INSERT`] rows (the same text each time: prepared once per connection).
async fn insert_rows(
    c: Conn<'_>,
    table: &str,
    columns: &[&str],
    values: &[Arg<'_>],
) -> Result<u64, EngineError> {
    let width = columns.len();
    // SQLite takes positional `?`: sqlx looks each `$n` up by name, which is quadratic in
    // the number of parameters (thousands here).
    let positional = c.backend() == DbBackend::Sqlite;
    let mut written = 0;
    for chunk in values.chunks(ROWS_PER_INSERT * width) {
        let rows = chunk.len() / width;
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        for r in 0..rows {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for k in 0..width {
                if k > 0 {
                    sql.push_str(", ");
                }
                if positional {
                    sql.push('?');
                } else {
                    sql.push('$');
                    sql.push_str(&(r * width + k + 1).to_string());
                }
            }
            sql.push(')');
        }
        c.execute(&sql, chunk).await?;
        written += rows as u64;
    }
    Ok(written)
}

/// An identity row: customer, kind, value, call count, first and last seen.
type IdentityRow = (i64, &'static str, String, i64, DateTime<Utc>, DateTime<Utc>);

/// The rows of one batch, owned, before they are bound.
struct Batch {
    customers: Vec<(customer::Model, String)>,
    identities: Vec<IdentityRow>,
    variables: Vec<(i64, String, String, DateTime<Utc>)>,
    intents: Vec<(i64, String, DateTime<Utc>, Option<String>)>,
    calls: Vec<(i64, Option<String>, ImportedCall)>,
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
            out.calls.push((id, ani.clone(), k));
        }
    }
    Ok(out)
}

/// Writes a batch inside the caller's write transaction.
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
    let t = tenant.0;

    let mut v: Vec<Arg<'_>> = Vec::with_capacity(b.customers.len() * 9);
    for (m, _) in &b.customers {
        v.extend::<[Arg<'_>; _]>([
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
    }
    let customers = insert_rows(
        c,
        "customers",
        &[
            "id",
            "tenant_id",
            "customer_ref",
            "provisional",
            "call_count",
            "first_seen_at",
            "last_seen_at",
            "created_at",
            "updated_at",
        ],
        &v,
    )
    .await?;

    let mut v: Vec<Arg<'_>> = Vec::with_capacity(b.identities.len() * 7);
    for (id, kind, value, count, first, last) in &b.identities {
        v.extend::<[Arg<'_>; _]>([
            t.into(),
            (*id).into(),
            (*kind).into(),
            value.into(),
            (*count).into(),
            (*first).into(),
            (*last).into(),
        ]);
    }
    let identities = insert_rows(
        c,
        "identities",
        &[
            "tenant_id",
            "customer_id",
            "kind",
            "value",
            "call_count",
            "first_seen_at",
            "last_seen_at",
        ],
        &v,
    )
    .await?;

    let mut v: Vec<Arg<'_>> = Vec::with_capacity(b.variables.len() * 5);
    for (id, name, value, at) in &b.variables {
        v.extend::<[Arg<'_>; _]>([
            t.into(),
            (*id).into(),
            name.into(),
            value.into(),
            (*at).into(),
        ]);
    }
    let variables = insert_rows(
        c,
        "variables",
        &["tenant_id", "customer_id", "name", "value", "updated_at"],
        &v,
    )
    .await?;

    let mut v: Vec<Arg<'_>> = Vec::with_capacity(b.intents.len() * 8);
    for (id, name, at, last_call) in &b.intents {
        v.extend::<[Arg<'_>; _]>([
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
    let intents = insert_rows(
        c,
        "intents",
        &[
            "tenant_id",
            "customer_id",
            "intent",
            "status",
            "opened_at",
            "updated_at",
            "resolved_at",
            "last_call_id",
        ],
        &v,
    )
    .await?;

    let mut v: Vec<Arg<'_>> = Vec::with_capacity(b.calls.len() * 23);
    for (id, ani, k) in &b.calls {
        v.extend::<[Arg<'_>; _]>([
            t.into(),
            k.call_id.as_str().into(),
            k.platform.as_str().into(),
            ani.into(),
            false.into(),
            Option::<&str>::None.into(),
            "{}".into(),
            Some(*id).into(),
            Option::<f64>::None.into(),
            Option::<&str>::None.into(),
            Option::<&str>::None.into(),
            "[]".into(),
            "[]".into(),
            Some(*id).into(),
            call::STATUS_ENDED.into(),
            k.intent.as_ref().map(IntentName::as_str).into(),
            k.intent_status.into(),
            k.summary.as_deref().into(),
            "{}".into(),
            Some(k.started_at).into(),
            Some(k.ended_at).into(),
            now.into(),
            now.into(),
        ]);
    }
    let calls = insert_rows(
        c,
        "calls",
        &[
            "tenant_id",
            "call_id",
            "platform",
            "ani",
            "ani_withheld",
            "dnis",
            "external_ids",
            "matched_customer_id",
            "confidence",
            "band",
            "recommended_action",
            "signals",
            "candidates",
            "customer_id",
            "status",
            "intent",
            "intent_status",
            "summary",
            "variables",
            "started_at",
            "ended_at",
            "created_at",
            "updated_at",
        ],
        &v,
    )
    .await?;

    let mut v: Vec<Arg<'_>> = Vec::with_capacity(b.customers.len() * 4);
    for (m, document) in &b.customers {
        v.extend::<[Arg<'_>; _]>([
            m.id.into(),
            t.into(),
            context::FORMAT.into(),
            document.into(),
        ]);
    }
    insert_rows(
        c,
        "customer_contexts",
        &["customer_id", "tenant_id", "format", "body"],
        &v,
    )
    .await?;

    Ok(ImportReport {
        customers,
        identities,
        variables,
        calls,
        intents,
    })
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
        let (_writer, tx) = self.begin_write(tenant).await?;
        let report = import_in(Conn::Tx(&tx), tenant, batch).await?;
        if tx.get_database_backend() == DbBackend::Postgres {
            // Ids were assigned here: move the sequence past them.
            tx.execute_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT setval(pg_get_serial_sequence('customers', 'id'), (SELECT MAX(id) FROM customers))",
            ))
            .await?;
        }
        // Numbers that were unknown until now may be cached as "nobody".
        self.commit(tx, Touched::widely(tenant)).await?;
        Ok(report)
    }
}
