//! The bulk path: importing customers with their history in large batches (a CRM migration, the
//! benchmark's seed). One serialised transaction per batch, multi-row `INSERT`s of a fixed
//! size (so the database reuses its prepared statements), customer ids assigned up front so
//! children need no read-back.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::{Expr, Func, Query};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, Statement,
};
use serde_json::Value;

use super::cache::CachedCustomer;
use super::context;
use super::end::Touched;
use super::{
    CustomerContext, Engine, OPEN_INTENTS, OpenIntent, RECENT_CALLS, RecentCall, TenantId,
};
use crate::domain::{CustomerRef, ExternalId, IntentName, PhoneNumber};
use crate::entities::{call, customer, customer_context, identity, intent, variable};
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

/// Rows per multi-row INSERT: under SQLite's 32,766 bound parameters for the widest table
/// (calls, 24 columns).
const ROWS_PER_INSERT: usize = 1000;

async fn insert_all<A>(tx: &DatabaseTransaction, rows: Vec<A>) -> Result<u64, EngineError>
where
    A: sea_orm::ActiveModelTrait,
{
    let mut written = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(ROWS_PER_INSERT).collect();
        written += chunk.len() as u64;
        <A::Entity as EntityTrait>::insert_many(chunk)
            .exec_without_returning(tx)
            .await?;
    }
    Ok(written)
}

/// The context of a customer the import creates, as `load_context` would read it from the
/// rows written here (a test checks that they agree).
fn imported_context(
    c: &ImportedCustomer,
    model: &customer::Model,
    now: DateTime<Utc>,
) -> CustomerContext {
    let last = c.calls.last();
    let touched = last.map_or(now, |k| k.ended_at);
    let mut ended: Vec<(usize, &ImportedCall)> = c.calls.iter().enumerate().collect();
    // Latest end first, then the latest written (the row id).
    ended.sort_by(|(i, x), (j, y)| y.ended_at.cmp(&x.ended_at).then(j.cmp(i)));
    CustomerContext {
        variables: c.variables.clone(),
        open_intents: c
            .open_intents
            .iter()
            .take(OPEN_INTENTS as usize)
            .map(|name| OpenIntent {
                intent: name.as_str().to_owned(),
                opened_at: touched,
                last_call_id: last.map(|k| k.call_id.clone()),
            })
            .collect(),
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
    }
}

impl Engine {
    /// Imports a batch of customers in one transaction: all of it or nothing.
    ///
    /// # Errors
    /// A reference or call id that already exists (409 `conflict` at the HTTP layer), or
    /// database failures.
    pub async fn import_customers(
        &self,
        tenant: TenantId,
        batch: Vec<ImportedCustomer>,
    ) -> Result<ImportReport, EngineError> {
        let (_writer, tx) = self.begin_write(tenant).await?;
        let now = crate::now();
        let backend = tx.get_database_backend();
        let max: Option<i64> = {
            let mut q = Query::select();
            q.expr(Func::max(Expr::col(customer::Column::Id)))
                .from(customer::Entity);
            let row = tx.query_one_raw(backend.build(&q)).await?;
            row.and_then(|r| r.try_get_by_index::<Option<i64>>(0).ok().flatten())
        };

        let mut customers = Vec::with_capacity(batch.len());
        let mut identities = Vec::new();
        let mut variables = Vec::new();
        let mut calls = Vec::new();
        let mut intents = Vec::new();
        let mut documents = Vec::with_capacity(batch.len());
        for (id, mut c) in (max.unwrap_or(0) + 1..).zip(batch) {
            // Stored to the microsecond (PostgreSQL's precision), so the documents written
            // below hold exactly what the tables hold.
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
            documents.push(customer_context::ActiveModel {
                customer_id: Set(id),
                tenant_id: Set(tenant.0),
                format: Set(context::FORMAT),
                body: Set(context::document_for(&CachedCustomer {
                    context: imported_context(&c, &model, now),
                    model: model.clone(),
                })?),
            });
            customers.push(customer::ActiveModel {
                id: Set(id),
                tenant_id: Set(tenant.0),
                customer_ref: Set(model.customer_ref),
                provisional: Set(false),
                call_count: Set(model.call_count),
                first_seen_at: Set(first),
                last_seen_at: Set(last),
                created_at: Set(now),
                updated_at: Set(now),
            });
            for ident in &c.identities {
                let (kind, value) = match ident {
                    ImportedIdentity::Ani(n) => (identity::KIND_ANI, n.as_str().to_owned()),
                    ImportedIdentity::External(e) => (identity::KIND_EXTERNAL, e.pair()),
                };
                identities.push(identity::ActiveModel {
                    tenant_id: Set(tenant.0),
                    customer_id: Set(id),
                    kind: Set(kind.to_owned()),
                    value: Set(value),
                    call_count: Set((c.calls.len() as i64).max(1)),
                    first_seen_at: Set(first.unwrap_or(now)),
                    last_seen_at: Set(last.unwrap_or(now)),
                    ..Default::default()
                });
            }
            for (name, value) in &c.variables {
                variables.push(variable::ActiveModel {
                    tenant_id: Set(tenant.0),
                    customer_id: Set(id),
                    name: Set(name.clone()),
                    value: Set(serde_json::to_string(value)?),
                    updated_at: Set(last.unwrap_or(now)),
                    ..Default::default()
                });
            }
            for name in &c.open_intents {
                intents.push(intent::ActiveModel {
                    tenant_id: Set(tenant.0),
                    customer_id: Set(id),
                    intent: Set(name.as_str().to_owned()),
                    status: Set("open".into()),
                    opened_at: Set(last.unwrap_or(now)),
                    updated_at: Set(last.unwrap_or(now)),
                    resolved_at: Set(None),
                    last_call_id: Set(c.calls.last().map(|k| k.call_id.clone())),
                    ..Default::default()
                });
            }
            let ani = c.identities.iter().find_map(|i| match i {
                ImportedIdentity::Ani(n) => Some(n.as_str().to_owned()),
                ImportedIdentity::External(_) => None,
            });
            for k in c.calls {
                calls.push(call::ActiveModel {
                    tenant_id: Set(tenant.0),
                    call_id: Set(k.call_id),
                    platform: Set(k.platform),
                    ani: Set(ani.clone()),
                    ani_withheld: Set(false),
                    dnis: Set(None),
                    external_ids: Set("{}".into()),
                    matched_customer_id: Set(Some(id)),
                    confidence: Set(None),
                    band: Set(None),
                    recommended_action: Set(None),
                    signals: Set("[]".into()),
                    candidates: Set("[]".into()),
                    customer_id: Set(Some(id)),
                    status: Set(call::STATUS_ENDED.into()),
                    intent: Set(k.intent.map(|i| i.as_str().to_owned())),
                    intent_status: Set(k.intent_status.map(str::to_owned)),
                    summary: Set(k.summary),
                    variables: Set("{}".into()),
                    started_at: Set(Some(k.started_at)),
                    ended_at: Set(Some(k.ended_at)),
                    created_at: Set(now),
                    updated_at: Set(now),
                    ..Default::default()
                });
            }
        }
        let report = ImportReport {
            customers: insert_all(&tx, customers).await?,
            identities: insert_all(&tx, identities).await?,
            variables: insert_all(&tx, variables).await?,
            intents: insert_all(&tx, intents).await?,
            calls: insert_all(&tx, calls).await?,
        };
        insert_all(&tx, documents).await?;
        if backend == DbBackend::Postgres {
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
