//! Customers outside a call: look-up, GDPR export and erasure, unlinking a wrong identity,
//! resolving an intent; and reading a stored call back.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;

use super::context;
use super::end::{IntentChange, Touched, set_intent};
use super::sql::Conn;
use super::store::{call_record, customers_by_id, find_call, find_customer_by_ref, record_of};
use super::{CallRecord, Engine, TenantId};
use crate::domain::{CallId, CustomerRef, ExternalId, IntentName, IntentStatus, PhoneNumber};
use crate::entities::{call, customer, customer_context, identity, intent, variable};
use crate::error::EngineError;

/// A customer in a look-up result.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerSummary {
    /// Reference.
    pub customer_ref: String,
    /// Created from a number alone, not yet named.
    pub provisional: bool,
    /// Ended calls.
    pub call_count: i64,
    /// First call.
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest call.
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// An identity linked to a customer.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityRecord {
    /// `ani` or `external_id`.
    pub kind: String,
    /// E.164 number, or `name:value`.
    pub value: String,
    /// Ended calls that carried it.
    pub call_count: i64,
    /// First seen.
    pub first_seen_at: DateTime<Utc>,
    /// Last seen.
    pub last_seen_at: DateTime<Utc>,
}

/// An intent of a customer.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentRecord {
    /// Name.
    pub intent: String,
    /// `open` or `resolved`.
    pub status: String,
    /// When (re)opened.
    pub opened_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Last call that touched it.
    pub last_call_id: Option<String>,
    /// When a promised callback is due.
    pub due_at: Option<DateTime<Utc>>,
}

impl From<intent::Model> for IntentRecord {
    fn from(i: intent::Model) -> Self {
        Self {
            intent: i.intent,
            status: i.status,
            opened_at: i.opened_at,
            updated_at: i.updated_at,
            resolved_at: i.resolved_at,
            last_call_id: i.last_call_id,
            due_at: i.due_at,
        }
    }
}

/// Everything stored about a customer (the GDPR export).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerExport {
    /// The customer.
    pub customer: CustomerSummary,
    /// When the record was created.
    pub created_at: DateTime<Utc>,
    /// Linked identities.
    pub identities: Vec<IdentityRecord>,
    /// Saved variables.
    pub variables: BTreeMap<String, Value>,
    /// Intents, open and resolved.
    pub intents: Vec<IntentRecord>,
    /// Calls linked to or matched to the customer, oldest first.
    pub calls: Vec<CallRecord>,
}

/// Rows removed by an erasure, per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErasureReport {
    /// Customer rows (1).
    pub customers: u64,
    /// Identity links.
    pub identities: u64,
    /// Saved variables.
    pub variables: u64,
    /// Intents.
    pub intents: u64,
    /// Calls.
    pub calls: u64,
}

fn summary(m: &customer::Model) -> CustomerSummary {
    CustomerSummary {
        customer_ref: m.customer_ref.clone(),
        provisional: m.provisional,
        call_count: m.call_count,
        first_seen_at: m.first_seen_at,
        last_seen_at: m.last_seen_at,
    }
}

fn not_found() -> EngineError {
    EngineError::not_found("customer_not_found", "no customer with this customer_ref")
}

/// The customers a number is linked to.
async fn linked_to(
    c: &impl sea_orm::ConnectionTrait,
    tenant: TenantId,
    number: &str,
) -> Result<Vec<i64>, EngineError> {
    Ok(identity::Entity::find()
        .select_only()
        .column(identity::Column::CustomerId)
        .filter(identity::Column::TenantId.eq(tenant.0))
        .filter(identity::Column::Kind.eq(identity::KIND_ANI))
        .filter(identity::Column::Value.eq(number))
        .into_tuple::<i64>()
        .all(c)
        .await?)
}

/// The call ids of the calls that `which` selects (one of the conditions below, each of one
/// tenant's calls).
async fn ids_of_calls(
    c: &impl sea_orm::ConnectionTrait,
    which: Condition,
) -> Result<HashSet<String>, EngineError> {
    Ok(call::Entity::find()
        .select_only()
        .column(call::Column::CallId)
        .filter(which)
        .into_tuple::<String>()
        .all(c)
        .await?
        .into_iter()
        .collect())
}

/// The tenant's calls that carry a customer's data: linked to them, or matched to them and
/// never linked. Found through the indexes on the customer columns: the tenant is checked on
/// the rows they find, in a form no index serves (`tenant_id + 0`, the same number). A plain
/// `tenant_id = ?` would lead SQLite, which keeps no statistics to tell it how many rows a
/// tenant has, to walk all the tenant's calls along the index that starts with it: about a
/// second for each million calls, under the write lock in an erasure.
fn calls_of(tenant: TenantId, customer_id: i64) -> Condition {
    calls_of_all(tenant, &[customer_id])
}

/// The tenant's calls that carry the data of any of these customers (see [`calls_of`]).
fn calls_of_all(tenant: TenantId, customer_ids: &[i64]) -> Condition {
    let ids = || customer_ids.iter().copied();
    Condition::all()
        .add(
            Expr::col((call::Entity, call::Column::TenantId))
                .add(0)
                .eq(tenant.0),
        )
        .add(
            Condition::any()
                .add(call::Column::CustomerId.is_in(ids()))
                .add(
                    // `customer_id + 0`: for many ids SQLite would otherwise read the calls
                    // linked to nobody (`customer_id IS NULL`) along the customer index.
                    Condition::all()
                        .add(
                            Expr::col((call::Entity, call::Column::CustomerId))
                                .add(0)
                                .is_null(),
                        )
                        .add(call::Column::MatchedCustomerId.is_in(ids())),
                ),
        )
}

/// The tenant's customers after the id `after`, in the order of their ids, up to `limit`.
/// Along the ids (the tenant checked as `tenant_id + 0`, as in [`calls_of`]): `tenant_id = ?`
/// would read and sort all the tenant's customers for each page.
fn customers_after(tenant: TenantId, after: i64, limit: u64) -> sea_orm::Select<customer::Entity> {
    customer::Entity::find()
        .filter(
            Expr::col((customer::Entity, customer::Column::TenantId))
                .add(0)
                .eq(tenant.0),
        )
        .filter(customer::Column::Id.gt(after))
        .order_by_asc(customer::Column::Id)
        .limit(limit)
}

/// Of these calls (ids and call ids), those still from the number: read by id alone (the ids
/// are one tenant's, and a call's tenant and id never change).
fn still_from(ids: Vec<i64>, number: &str) -> sea_orm::Select<call::Entity> {
    call::Entity::find()
        .select_only()
        .column(call::Column::Id)
        .column(call::Column::CallId)
        .filter(call::Column::Id.is_in(ids))
        .filter(call::Column::Ani.eq(number))
}

/// Calls read or deleted by id at a time (a statement's list of them).
const BY_ID: usize = 500;

/// The tenant's calls from a number. No index leads to them: a statement with this
/// condition reads all the tenant's calls.
fn calls_from(tenant: TenantId, number: &str) -> Condition {
    Condition::all()
        .add(call::Column::TenantId.eq(tenant.0))
        .add(call::Column::Ani.eq(number))
}

/// The tenant's intents that point at one of these calls (ids and call ids). Intents have no
/// index on their calls, so each statement reads all the tenant's intents: for up to
/// `per_statement` calls one statement names them, and for more (a switchboard's number, with
/// thousands of calls) the intents that point at any call are read once and sorted out here,
/// rather than read again for each list of calls.
async fn intents_pointing_at(
    c: &impl sea_orm::ConnectionTrait,
    tenant: TenantId,
    calls: &[(i64, String)],
    per_statement: usize,
) -> Result<Vec<i64>, EngineError> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let query = intent::Entity::find()
        .select_only()
        .column(intent::Column::Id)
        .filter(intent::Column::TenantId.eq(tenant.0));
    if calls.len() <= per_statement {
        return Ok(query
            .filter(intent::Column::LastCallId.is_in(calls.iter().map(|c| c.1.as_str())))
            .into_tuple()
            .all(c)
            .await?);
    }
    let wanted: HashSet<&str> = calls.iter().map(|c| c.1.as_str()).collect();
    Ok(query
        .column(intent::Column::LastCallId)
        .filter(intent::Column::LastCallId.is_not_null())
        .into_tuple::<(i64, String)>()
        .all(c)
        .await?
        .into_iter()
        .filter(|(_, call)| wanted.contains(call.as_str()))
        .map(|(id, _)| id)
        .collect())
}

impl Engine {
    /// A stored call.
    ///
    /// # Errors
    /// `call_not_found` when the tenant has no call with that id.
    pub async fn get_call(
        &self,
        tenant: TenantId,
        call_id: &CallId,
    ) -> Result<CallRecord, EngineError> {
        let open = match &self.lite {
            Some(lite) => lite.open_call(tenant, call_id.as_str())?,
            None => None,
        };
        let row = match open {
            Some(row) => row,
            None => find_call(Conn::Pool(&self.db), tenant, call_id.as_str())
                .await?
                .ok_or_else(|| {
                    EngineError::not_found("call_not_found", "no call with this call_id")
                })?,
        };
        call_record(Conn::Pool(&self.db), tenant, row).await
    }

    /// Customers linked to a number or an external id, most recently seen first.
    ///
    /// # Errors
    /// Database failures only.
    pub async fn find_customers(
        &self,
        tenant: TenantId,
        ani: Option<&PhoneNumber>,
        external_id: Option<&ExternalId>,
    ) -> Result<Vec<CustomerSummary>, EngineError> {
        // One statement per identity, each along the index on (tenant, kind, value): with both
        // in one (an `OR`), SQLite would walk all the tenant's identities.
        let keys = ani
            .map(|n| (identity::KIND_ANI, n.as_str().to_owned()))
            .into_iter()
            .chain(external_id.map(|e| (identity::KIND_EXTERNAL, e.pair())));
        let mut ids = BTreeSet::new();
        for (kind, value) in keys {
            ids.extend(
                identity::Entity::find()
                    .select_only()
                    .column(identity::Column::CustomerId)
                    .filter(identity::Column::TenantId.eq(tenant.0))
                    .filter(identity::Column::Kind.eq(kind))
                    .filter(identity::Column::Value.eq(value))
                    .limit(100)
                    .into_tuple::<i64>()
                    .all(&self.db)
                    .await?,
            );
        }
        let ids = ids.into_iter().take(100);
        let mut found: Vec<customer::Model> = customers_by_id(Conn::Pool(&self.db), tenant, ids)
            .await?
            .into_values()
            .collect();
        found.sort_by(|a, b| {
            b.last_seen_at
                .cmp(&a.last_seen_at)
                .then(a.customer_ref.cmp(&b.customer_ref))
        });
        Ok(found.iter().map(summary).collect())
    }

    /// A page of the tenant's customers in `customer_ref` order: up to `limit` of those whose
    /// reference sorts after `after` (from the first when `None`).
    ///
    /// # Errors
    /// Database failures only.
    pub async fn list_customers(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<CustomerSummary>, EngineError> {
        let mut q = customer::Entity::find().filter(customer::Column::TenantId.eq(tenant.0));
        if let Some(after) = after {
            q = q.filter(customer::Column::CustomerRef.gt(after));
        }
        let page = q
            .order_by_asc(customer::Column::CustomerRef)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(page.iter().map(summary).collect())
    }

    /// Which of `refs` the tenant already has.
    ///
    /// # Errors
    /// Database failures only.
    pub async fn existing_refs(
        &self,
        tenant: TenantId,
        refs: &[&str],
    ) -> Result<Vec<String>, EngineError> {
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        Ok(customer::Entity::find()
            .select_only()
            .column(customer::Column::CustomerRef)
            .filter(customer::Column::TenantId.eq(tenant.0))
            .filter(customer::Column::CustomerRef.is_in(refs.iter().copied()))
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Everything stored about a customer.
    ///
    /// # Errors
    /// `customer_not_found`.
    pub async fn export_customer(
        &self,
        tenant: TenantId,
        customer_ref: &CustomerRef,
    ) -> Result<CustomerExport, EngineError> {
        let c = find_customer_by_ref(Conn::Pool(&self.db), tenant, customer_ref.as_str())
            .await?
            .ok_or_else(not_found)?;
        self.exports(tenant, vec![c])
            .await?
            .pop()
            .map(|(_, e)| e)
            .ok_or_else(not_found)
    }

    /// Everything stored about the tenant's customers after the id `after` (0 for the first),
    /// up to `limit` of them in the order of their ids, each with its id (the last one is the
    /// next page's `after`). Each page is read in a few statements, whatever its size.
    ///
    /// # Errors
    /// Database failures only.
    pub async fn export_customers(
        &self,
        tenant: TenantId,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(i64, CustomerExport)>, EngineError> {
        let page = customers_after(tenant, after, limit).all(&self.db).await?;
        self.exports(tenant, page).await
    }

    /// The exports of these customers of the tenant (read under its filter), in their order:
    /// one statement per table for all of them.
    async fn exports(
        &self,
        tenant: TenantId,
        page: Vec<customer::Model>,
    ) -> Result<Vec<(i64, CustomerExport)>, EngineError> {
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = page.iter().map(|c| c.id).collect();
        // The open calls that matched them are part of their calls.
        if let Some(lite) = &self.lite {
            let mut open = Vec::new();
            for &id in &ids {
                open.extend(lite.open_matching(tenant, id)?);
            }
            lite.move_open(open).await?;
        }
        let mut identities: HashMap<i64, Vec<IdentityRecord>> = HashMap::new();
        for i in identity::Entity::find()
            .filter(identity::Column::CustomerId.is_in(ids.iter().copied()))
            .order_by_asc(identity::Column::Id)
            .all(&self.db)
            .await?
        {
            identities
                .entry(i.customer_id)
                .or_default()
                .push(IdentityRecord {
                    kind: i.kind,
                    value: i.value,
                    call_count: i.call_count,
                    first_seen_at: i.first_seen_at,
                    last_seen_at: i.last_seen_at,
                });
        }
        // An expired variable is gone for every reader, before the sweep deletes it.
        let mut variables: HashMap<i64, BTreeMap<String, Value>> = HashMap::new();
        for v in variable::Entity::find()
            .filter(variable::Column::CustomerId.is_in(ids.iter().copied()))
            .filter(
                Condition::any()
                    .add(variable::Column::ExpiresAt.is_null())
                    .add(variable::Column::ExpiresAt.gt(crate::now())),
            )
            .all(&self.db)
            .await?
        {
            variables
                .entry(v.customer_id)
                .or_default()
                .insert(v.name, serde_json::from_str(&v.value)?);
        }
        let mut intents: HashMap<i64, Vec<IntentRecord>> = HashMap::new();
        for i in intent::Entity::find()
            .filter(intent::Column::CustomerId.is_in(ids.iter().copied()))
            .order_by_asc(intent::Column::Id)
            .all(&self.db)
            .await?
        {
            intents.entry(i.customer_id).or_default().push(i.into());
        }
        let rows = call::Entity::find()
            .filter(calls_of_all(tenant, &ids))
            .order_by_asc(call::Column::Id)
            .all(&self.db)
            .await?;
        // The calls name customers outside the page too (matched at the start, linked to
        // another at the end).
        let mut refs: HashMap<i64, customer::Model> =
            page.iter().map(|c| (c.id, c.clone())).collect();
        let others: Vec<i64> = rows
            .iter()
            .flat_map(|r| r.customer_id.into_iter().chain(r.matched_customer_id))
            .filter(|id| !refs.contains_key(id))
            .collect();
        refs.extend(customers_by_id(Conn::Pool(&self.db), tenant, others).await?);
        let mut calls: HashMap<i64, Vec<CallRecord>> = HashMap::new();
        for row in rows {
            // A call is its linked customer's, else (never linked) its matched customer's.
            let Some(owner) = row.customer_id.or(row.matched_customer_id) else {
                continue;
            };
            calls.entry(owner).or_default().push(record_of(row, &refs)?);
        }
        Ok(page
            .into_iter()
            .map(|c| {
                let export = CustomerExport {
                    customer: summary(&c),
                    created_at: c.created_at,
                    identities: identities.remove(&c.id).unwrap_or_default(),
                    variables: variables.remove(&c.id).unwrap_or_default(),
                    intents: intents.remove(&c.id).unwrap_or_default(),
                    calls: calls.remove(&c.id).unwrap_or_default(),
                };
                (c.id, export)
            })
            .collect())
    }

    /// Erases a customer and everything stored about them, in one transaction.
    ///
    /// # Errors
    /// `customer_not_found`.
    pub async fn erase_customer(
        &self,
        tenant: TenantId,
        customer_ref: &CustomerRef,
    ) -> Result<ErasureReport, EngineError> {
        let c = find_customer_by_ref(Conn::Pool(&self.db), tenant, customer_ref.as_str())
            .await?
            .ok_or_else(not_found)?;
        // The open calls that matched them are erased with the rest.
        let open = match &self.lite {
            Some(lite) => lite.open_matching(tenant, c.id)?,
            None => Vec::new(),
        };
        let scrubbed = self
            .before_erasing(tenant, open, vec![calls_of(tenant, c.id)], HashSet::new())
            .await?;
        let (_writer, tx) = self.begin_write(tenant).await?;
        let c = find_customer_by_ref(Conn::Tx(&tx), tenant, customer_ref.as_str())
            .await?
            .ok_or_else(not_found)?;
        let erased = self.erasing(&tx, calls_of(tenant, c.id)).await?;
        let report = ErasureReport {
            calls: call::Entity::delete_many()
                .filter(calls_of(tenant, c.id))
                .exec(&tx)
                .await?
                .rows_affected,
            identities: identity::Entity::delete_many()
                .filter(identity::Column::CustomerId.eq(c.id))
                .exec(&tx)
                .await?
                .rows_affected,
            variables: variable::Entity::delete_many()
                .filter(variable::Column::CustomerId.eq(c.id))
                .exec(&tx)
                .await?
                .rows_affected,
            intents: intent::Entity::delete_many()
                .filter(intent::Column::CustomerId.eq(c.id))
                .exec(&tx)
                .await?
                .rows_affected,
            customers: {
                // Other customers' calls that merely matched this one at start forget it.
                call::Entity::update_many()
                    .col_expr(
                        call::Column::MatchedCustomerId,
                        Expr::value(Option::<i64>::None),
                    )
                    .filter(call::Column::MatchedCustomerId.eq(c.id))
                    .exec(&tx)
                    .await?;
                // Its context document holds summaries and variables (the foreign key would
                // cascade too; this does not depend on it).
                customer_context::Entity::delete_by_id(c.id)
                    .exec(&tx)
                    .await?;
                customer::Entity::delete_by_id(c.id)
                    .exec(&tx)
                    .await?
                    .rows_affected
            },
        };
        self.commit(tx, Touched::widely(tenant)).await?;
        self.after_erasing(tenant, &scrubbed, erased).await?;
        Ok(report)
    }

    /// Before erasing calls, on a SQLite file: the `open` calls among them move into `calls`
    /// (committed), and the open calls' journal's records of the calls `which` selects are
    /// overwritten (a record whose call has no row would be read back as open, see
    /// `OpenCalls::scrub`). Each of these calls now has its row, so a record of it is of no
    /// use even if the erasure fails. Only this tenant's open calls are looked at. Returns the
    /// calls whose records were looked for: those any of `which` selects (each read apart,
    /// through its own index), and the calls `found` already.
    async fn before_erasing(
        &self,
        tenant: TenantId,
        open: Vec<call::Model>,
        which: Vec<Condition>,
        found: HashSet<String>,
    ) -> Result<HashSet<String>, EngineError> {
        let Some(lite) = &self.lite else {
            return Ok(HashSet::new());
        };
        lite.move_open(open).await?;
        let mut ids = found;
        for which in which {
            ids.extend(ids_of_calls(&self.db, which).await?);
        }
        lite.scrub(tenant, ids.clone(), None).await?;
        Ok(ids)
    }

    /// Inside an erasure's transaction, on a SQLite file: the calls `which` selects, whose
    /// journal records [`Engine::after_erasing`] overwrites if [`Engine::before_erasing`]
    /// did not (a call that ended in between).
    async fn erasing(
        &self,
        tx: &sea_orm::DatabaseTransaction,
        which: Condition,
    ) -> Result<HashSet<String>, EngineError> {
        match self.lite {
            Some(_) => ids_of_calls(tx, which).await,
            None => Ok(HashSet::new()),
        }
    }

    /// After an erasure's commit: the journal's records of the `erased` calls not already
    /// overwritten.
    async fn after_erasing(
        &self,
        tenant: TenantId,
        scrubbed: &HashSet<String>,
        erased: HashSet<String>,
    ) -> Result<(), EngineError> {
        if let Some(lite) = &self.lite {
            let rest = erased
                .into_iter()
                .filter(|id| !scrubbed.contains(id))
                .collect();
            lite.scrub(tenant, rest, None).await?;
        }
        Ok(())
    }

    /// Erases what is kept for a caller number, in one transaction: the calls from it (with
    /// their summaries and variables), its identity links, and the customers known only
    /// through it who were never named (provisional), with everything of theirs. A named
    /// customer who also called from it keeps the rest of their memory; their call count and
    /// context are brought up to date. Other people who share the number keep theirs, less
    /// their calls from it.
    ///
    /// # Errors
    /// Database failures. A number nobody is linked to erases nothing (all counts 0).
    pub async fn erase_number(
        &self,
        tenant: TenantId,
        number: &PhoneNumber,
    ) -> Result<ErasureReport, EngineError> {
        let value = number.as_str();
        // On a SQLite file, the open calls from the number, and those that matched a customer
        // linked to it (erased with them if they were known only through it), move into
        // `calls` first.
        let mut linked_calls = Vec::new();
        if let Some(lite) = &self.lite {
            let mut open = lite.open_with_number(tenant, value)?;
            for id in linked_to(&self.db, tenant, value).await? {
                open.extend(lite.open_matching(tenant, id)?);
                linked_calls.push(calls_of(tenant, id));
            }
            lite.move_open(open).await?;
        }
        // The calls from the number are found before the write lock is taken: numbers have no
        // index (one would cost every call's write), so finding them reads all the tenant's
        // calls, which no write waits for out here. Under the lock those still from the
        // number are read again by id, and erased. A call from the number written meanwhile
        // came after the erasure began, as if it came just after it.
        let found: Vec<(i64, String)> = call::Entity::find()
            .select_only()
            .column(call::Column::Id)
            .column(call::Column::CallId)
            .filter(calls_from(tenant, value))
            .into_tuple()
            .all(&self.db)
            .await?;
        // So are the intents that point at them.
        let pointing = intents_pointing_at(&self.db, tenant, &found, BY_ID).await?;
        let scrubbed = self
            .before_erasing(
                tenant,
                Vec::new(),
                linked_calls,
                found.iter().map(|c| c.1.clone()).collect(),
            )
            .await?;
        let (_writer, tx) = self.begin_write(tenant).await?;
        let linked = linked_to(&tx, tenant, value).await?;
        let mut from_number: Vec<(i64, String)> = Vec::with_capacity(found.len());
        for chunk in found.chunks(BY_ID) {
            let ids = chunk.iter().map(|c| c.0).collect();
            from_number.extend(still_from(ids, value).into_tuple().all(&tx).await?);
        }
        let mut deleted = 0;
        for chunk in from_number.chunks(BY_ID) {
            deleted += call::Entity::delete_many()
                .filter(call::Column::Id.is_in(chunk.iter().map(|c| c.0)))
                .exec(&tx)
                .await?
                .rows_affected;
        }
        let call_ids: Vec<String> = from_number.into_iter().map(|c| c.1).collect();
        let mut erased: HashSet<String> = match self.lite {
            Some(_) => call_ids.iter().cloned().collect(),
            None => HashSet::new(),
        };
        let mut report = ErasureReport {
            calls: deleted,
            identities: identity::Entity::delete_many()
                .filter(identity::Column::TenantId.eq(tenant.0))
                .filter(identity::Column::Kind.eq(identity::KIND_ANI))
                .filter(identity::Column::Value.eq(value))
                .exec(&tx)
                .await?
                .rows_affected,
            customers: 0,
            variables: 0,
            intents: 0,
        };
        // Intents opened on those calls no longer point at them (read again by id: found
        // before the lock).
        let erased_calls: HashSet<&str> = call_ids.iter().map(String::as_str).collect();
        for chunk in pointing.chunks(BY_ID) {
            let still: Vec<i64> = intent::Entity::find()
                .select_only()
                .column(intent::Column::Id)
                .column(intent::Column::LastCallId)
                .filter(intent::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple::<(i64, Option<String>)>()
                .all(&tx)
                .await?
                .into_iter()
                .filter(|(_, call)| call.as_deref().is_some_and(|c| erased_calls.contains(c)))
                .map(|(id, _)| id)
                .collect();
            if still.is_empty() {
                continue;
            }
            intent::Entity::update_many()
                .col_expr(
                    intent::Column::LastCallId,
                    Expr::value(Option::<String>::None),
                )
                .filter(intent::Column::Id.is_in(still))
                .exec(&tx)
                .await?;
        }
        for id in linked {
            let Some(c) = customer::Entity::find_by_id(id).one(&tx).await? else {
                continue;
            };
            let identities_left = identity::Entity::find()
                .filter(identity::Column::CustomerId.eq(id))
                .count(&tx)
                .await?;
            // The document of the context holds recent calls: it is rebuilt on the next read.
            customer_context::Entity::delete_by_id(id).exec(&tx).await?;
            if c.provisional && identities_left == 0 {
                erased.extend(self.erasing(&tx, calls_of(tenant, id)).await?);
                report.calls += call::Entity::delete_many()
                    .filter(calls_of(tenant, id))
                    .exec(&tx)
                    .await?
                    .rows_affected;
                report.variables += variable::Entity::delete_many()
                    .filter(variable::Column::CustomerId.eq(id))
                    .exec(&tx)
                    .await?
                    .rows_affected;
                report.intents += intent::Entity::delete_many()
                    .filter(intent::Column::CustomerId.eq(id))
                    .exec(&tx)
                    .await?
                    .rows_affected;
                report.customers += customer::Entity::delete_by_id(id)
                    .exec(&tx)
                    .await?
                    .rows_affected;
            } else {
                // Their remaining calls are what they are remembered by.
                let ended =
                    format!("FROM calls WHERE calls.customer_id = {id} AND calls.status = 'ended'");
                customer::Entity::update_many()
                    .col_expr(
                        customer::Column::CallCount,
                        Expr::cust(format!("(SELECT COUNT(*) {ended})")),
                    )
                    .col_expr(
                        customer::Column::FirstSeenAt,
                        Expr::cust(format!(
                            "(SELECT MIN(COALESCE(calls.started_at, calls.ended_at)) {ended})"
                        )),
                    )
                    .col_expr(
                        customer::Column::LastSeenAt,
                        Expr::cust(format!(
                            "(SELECT MAX(COALESCE(calls.ended_at, calls.started_at)) {ended})"
                        )),
                    )
                    .filter(customer::Column::Id.eq(id))
                    .exec(&tx)
                    .await?;
            }
        }
        self.commit(tx, Touched::widely(tenant)).await?;
        self.after_erasing(tenant, &scrubbed, erased).await?;
        Ok(report)
    }

    /// A caller withheld consent: nothing of this call is kept, and what was kept for its
    /// number is erased (see [`Engine::erase_number`]). The number is the one given now, else
    /// the one the call's start recorded; a call without a usable number is removed alone.
    ///
    /// # Errors
    /// Database failures.
    pub async fn forget_caller(
        &self,
        tenant: TenantId,
        call_id: &CallId,
        ani: Option<&crate::domain::Ani>,
    ) -> Result<ErasureReport, EngineError> {
        // The call, if it is open, moves into `calls` to be erased there.
        if let Some(lite) = &self.lite
            && let Some(row) = lite.open_call(tenant, call_id.as_str())?
        {
            lite.move_open(vec![row]).await?;
        }
        let stored = call::Entity::find()
            .filter(call::Column::TenantId.eq(tenant.0))
            .filter(call::Column::CallId.eq(call_id.as_str()))
            .one(&self.db)
            .await?;
        let number = match ani.and_then(crate::domain::Ani::number) {
            Some(n) => Some(n.clone()),
            None => stored.and_then(|c| c.ani).map(PhoneNumber::from_stored),
        };
        let mut report = match &number {
            Some(n) => self.erase_number(tenant, n).await?,
            None => ErasureReport::default(),
        };
        let this_call = || {
            Condition::all()
                .add(call::Column::TenantId.eq(tenant.0))
                .add(call::Column::CallId.eq(call_id.as_str()))
        };
        let scrubbed = self
            .before_erasing(tenant, Vec::new(), vec![this_call()], HashSet::new())
            .await?;
        let (_writer, tx) = self.begin_write(tenant).await?;
        let erased = self.erasing(&tx, this_call()).await?;
        report.calls += call::Entity::delete_many()
            .filter(this_call())
            .exec(&tx)
            .await?
            .rows_affected;
        self.commit(tx, Touched::widely(tenant)).await?;
        self.after_erasing(tenant, &scrubbed, erased).await?;
        Ok(report)
    }

    /// The references of customers whose stored context document (what call starts read)
    /// is missing or differs from their rows: empty when every write kept it up to date. A
    /// consistency check for tests and operators; it reads every customer of the tenant.
    ///
    /// # Errors
    /// Database failures.
    pub async fn context_documents_out_of_date(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<String>, EngineError> {
        context::out_of_date(Conn::Pool(&self.db), tenant).await
    }

    /// Removes a wrong identity (a reassigned number) from a customer.
    ///
    /// # Errors
    /// `customer_not_found`, or `identity_not_found` when it is not linked to them.
    pub async fn unlink_identity(
        &self,
        tenant: TenantId,
        customer_ref: &CustomerRef,
        ani: Option<&PhoneNumber>,
        external_id: Option<&ExternalId>,
    ) -> Result<u64, EngineError> {
        let (_writer, tx) = self.begin_write(tenant).await?;
        let c = find_customer_by_ref(Conn::Tx(&tx), tenant, customer_ref.as_str())
            .await?
            .ok_or_else(not_found)?;
        let mut any = Condition::any();
        if let Some(n) = ani {
            any = any.add(
                Condition::all()
                    .add(identity::Column::Kind.eq(identity::KIND_ANI))
                    .add(identity::Column::Value.eq(n.as_str())),
            );
        }
        if let Some(e) = external_id {
            any = any.add(
                Condition::all()
                    .add(identity::Column::Kind.eq(identity::KIND_EXTERNAL))
                    .add(identity::Column::Value.eq(e.pair())),
            );
        }
        let removed = identity::Entity::delete_many()
            .filter(identity::Column::CustomerId.eq(c.id))
            .filter(any)
            .exec(&tx)
            .await?
            .rows_affected;
        if removed == 0 {
            return Err(EngineError::not_found(
                "identity_not_found",
                "that identity is not linked to this customer",
            ));
        }
        let keys: Vec<(&'static str, String)> = ani
            .map(|n| (identity::KIND_ANI, n.as_str().to_owned()))
            .into_iter()
            .chain(external_id.map(|e| (identity::KIND_EXTERNAL, e.pair())))
            .collect();
        self.commit(tx, Touched::some(tenant, vec![c.id], keys))
            .await?;
        Ok(removed)
    }

    /// Marks an intent of a customer resolved, outside any call.
    ///
    /// # Errors
    /// `customer_not_found`, or `intent_not_found` when the customer never had it.
    pub async fn resolve_intent(
        &self,
        tenant: TenantId,
        customer_ref: &CustomerRef,
        name: &IntentName,
    ) -> Result<IntentRecord, EngineError> {
        let (_writer, tx) = self.begin_write(tenant).await?;
        let c = find_customer_by_ref(Conn::Tx(&tx), tenant, customer_ref.as_str())
            .await?
            .ok_or_else(not_found)?;
        let existing = intent::Entity::find()
            .filter(intent::Column::CustomerId.eq(c.id))
            .filter(intent::Column::Intent.eq(name.as_str()))
            .one(&tx)
            .await?
            .ok_or_else(|| {
                EngineError::not_found("intent_not_found", "this customer has no such intent")
            })?;
        let updated = if existing.status == IntentStatus::Resolved.as_str() {
            existing
        } else {
            set_intent(
                Conn::Tx(&tx),
                tenant,
                c.id,
                IntentChange {
                    name: name.as_str(),
                    status: IntentStatus::Resolved.as_str(),
                    call_id: None,
                    due_at: None,
                    at: crate::now(),
                },
            )
            .await?
        };
        context::refresh(Conn::Tx(&tx), tenant, &[c.id]).await?;
        self.commit(tx, Touched::some(tenant, vec![c.id], Vec::new()))
            .await?;
        Ok(updated.into())
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, QueryTrait};

    use super::*;

    /// Under its lock, an erasure finds a customer's calls through the indexes on customers,
    /// and reads again the calls a number's erasure found by their ids, rather than walking
    /// all the tenant's calls.
    #[tokio::test]
    async fn erasures_find_calls_under_the_lock_through_indexes() {
        let tenant = TenantId(7);
        for statement in [
            call::Entity::find()
                .filter(calls_of(tenant, 42))
                .build(DbBackend::Sqlite),
            call::Entity::delete_many()
                .filter(calls_of(tenant, 42))
                .build(DbBackend::Sqlite),
        ] {
            let plan = super::super::sqlite_plan(statement).await;
            assert!(plan.contains("ix_calls_customer_ended"), "{plan}");
            assert!(plan.contains("ix_calls_matched_customer"), "{plan}");
            assert!(!plan.contains("ux_calls_tenant_call_id"), "{plan}");
        }
        let ids: Vec<i64> = (1..=i64::try_from(BY_ID).unwrap()).collect();
        let plan =
            super::super::sqlite_plan(still_from(ids, "+14155550100").build(DbBackend::Sqlite))
                .await;
        assert!(plan.contains("INTEGER PRIMARY KEY"), "{plan}");
    }

    /// The export's pages of customers follow their ids, without sorting the tenant's, and
    /// their calls are found through the customers' indexes.
    #[tokio::test]
    async fn pages_of_customers_follow_their_ids() {
        let plan = super::super::sqlite_plan(
            customers_after(TenantId(7), 1000, 500).build(DbBackend::Sqlite),
        )
        .await;
        assert!(plan.contains("INTEGER PRIMARY KEY"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        // A page's calls are found through the indexes on customers too.
        let ids: Vec<i64> = (1..=500).collect();
        let plan = super::super::sqlite_plan(
            call::Entity::find()
                .filter(calls_of_all(TenantId(7), &ids))
                .build(DbBackend::Sqlite),
        )
        .await;
        assert!(plan.contains("ix_calls_customer_ended"), "{plan}");
        assert!(plan.contains("ix_calls_matched_customer"), "{plan}");
        assert!(!plan.contains("ux_calls_tenant_call_id"), "{plan}");
    }

    /// The intents that point at a number's calls are the same whether the calls are few
    /// (named in one statement) or many (the tenant's intents read once), and never another
    /// tenant's.
    #[tokio::test]
    async fn intents_pointing_at_calls_are_found_for_few_calls_and_many() {
        use sea_orm::{ActiveModelTrait, ActiveValue::Set};
        let (db, tenant, other) = super::super::tests::two_tenants().await;
        let now = crate::now();
        let mut intents = BTreeMap::new();
        for (t, who) in [(tenant, "ana"), (other, "bo")] {
            let customer = customer::ActiveModel {
                tenant_id: Set(t.0),
                customer_ref: Set(who.into()),
                provisional: Set(false),
                call_count: Set(0),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();
            for (name, call) in [
                ("billing", Some("c-1")),
                ("refund", Some("c-2")),
                ("move", None),
            ] {
                let row = intent::ActiveModel {
                    tenant_id: Set(t.0),
                    customer_id: Set(customer.id),
                    intent: Set(name.into()),
                    status: Set("open".into()),
                    opened_at: Set(now),
                    updated_at: Set(now),
                    last_call_id: Set(call.map(Into::into)),
                    ..Default::default()
                }
                .insert(&db)
                .await
                .unwrap();
                intents.insert((t.0, name), row.id);
            }
        }
        let calls = [(1, "c-1".to_owned()), (2, "c-9".to_owned())];
        for per_statement in [1, BY_ID] {
            let mut found = intents_pointing_at(&db, tenant, &calls, per_statement)
                .await
                .unwrap();
            found.sort_unstable();
            assert_eq!(found, [intents[&(tenant.0, "billing")]], "{per_statement}");
        }
        assert!(
            intents_pointing_at(&db, tenant, &[], 1)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// The tenant's check on a customer's calls is a real check, on PostgreSQL as on SQLite.
    #[test]
    fn the_tenant_is_checked_on_a_customers_calls() {
        for (backend, check) in [
            (
                DbBackend::Sqlite,
                r#"WHERE "calls"."tenant_id" + ? = ? AND"#,
            ),
            (
                DbBackend::Postgres,
                r#"WHERE "calls"."tenant_id" + $1 = $2 AND"#,
            ),
        ] {
            let statement = call::Entity::find()
                .filter(calls_of(TenantId(7), 42))
                .build(backend);
            assert!(statement.sql.contains(check), "{}", statement.sql);
            let values = statement.values.unwrap().0;
            assert_eq!(values.get(1), Some(&7_i64.into()));
        }
    }
}
