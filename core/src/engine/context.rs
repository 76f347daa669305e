//! The call-start read model: each customer's row and context stored as one JSON document in
//! `customer_contexts`, so a known caller's start reads one row (one B-tree descent) instead
//! of the customer, their variables, open intents and latest calls (a dozen descents, each a
//! few page reads: on SQLite every commit empties the read connections' page caches, so at a
//! million customers those reads dominated a start).
//!
//! The document is derived data, kept true in the writes themselves:
//! - every write that changes a customer's context rewrites the document in its own
//!   transaction ([`refresh`]: an end for each customer it touched, resolving an intent);
//! - the bulk import writes the documents of the customers it creates ([`document_for`]);
//! - deleting a customer (erasure, a merge) deletes it (foreign key, `ON DELETE CASCADE`).
//!
//! A customer without a document (written by an older version) is read from the tables and
//! the document filled with `INSERT .. ON CONFLICT DO NOTHING` ([`fill`]): a write that
//! commits between that read and the fill rewrote the document, so the fill loses and never
//! stores what the write changed. A document of another [`FORMAT`] is read as missing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::cache::CachedCustomer;
use super::sql::Conn;
use super::store::{find_customer, load_context};
use super::{CustomerContext, TenantId};
use crate::entities::customer;
use crate::error::EngineError;

/// The document's shape. Bump it when [`CustomerContext`] or what it selects changes (how many
/// recent calls, say): older documents are then read as missing and rebuilt.
pub(super) const FORMAT: i64 = 1;

/// What the document stores beyond the context (the customer's id and tenant are its key).
#[derive(Serialize, Deserialize)]
struct Document {
    customer_ref: String,
    provisional: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    context: CustomerContext,
}

/// A customer's document as stored.
pub(super) fn document_for(c: &CachedCustomer) -> Result<String, EngineError> {
    Ok(serde_json::to_string(&Document {
        customer_ref: c.model.customer_ref.clone(),
        provisional: c.model.provisional,
        created_at: c.model.created_at,
        updated_at: c.model.updated_at,
        context: c.context.clone(),
    })?)
}

fn decode(id: i64, tenant: TenantId, body: &str) -> Result<CachedCustomer, EngineError> {
    let d: Document = serde_json::from_str(body)?;
    Ok(CachedCustomer {
        model: customer::Model {
            id,
            tenant_id: tenant.0,
            customer_ref: d.customer_ref,
            provisional: d.provisional,
            call_count: d.context.call_count,
            first_seen_at: d.context.first_seen_at,
            last_seen_at: d.context.last_seen_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
        },
        context: d.context,
    })
}

/// The stored document of a customer of `tenant`, if there is one of the current format.
pub(super) async fn read(
    c: Conn<'_>,
    tenant: TenantId,
    id: i64,
) -> Result<Option<CachedCustomer>, EngineError> {
    let body = c
        .query_one(
            "SELECT body FROM customer_contexts \
             WHERE customer_id = $1 AND tenant_id = $2 AND format = $3",
            &[id.into(), tenant.0.into(), FORMAT.into()],
            |r| r.text_req(0),
        )
        .await?;
    body.map(|b| decode(id, tenant, &b)).transpose()
}

/// A customer of `tenant` read from the tables (the document's source).
pub(super) async fn build(
    c: Conn<'_>,
    tenant: TenantId,
    id: i64,
) -> Result<Option<CachedCustomer>, EngineError> {
    let Some(model) = find_customer(c, tenant, id).await? else {
        return Ok(None);
    };
    let context = load_context(c, &model).await?;
    Ok(Some(CachedCustomer { model, context }))
}

/// Rewrites the documents of these customers from the tables, inside the caller's write
/// transaction (customers that no longer exist have none: their deletion removed it).
pub(super) async fn refresh(c: Conn<'_>, tenant: TenantId, ids: &[i64]) -> Result<(), EngineError> {
    let mut done: Vec<i64> = Vec::with_capacity(ids.len());
    for &id in ids {
        if done.contains(&id) {
            continue;
        }
        done.push(id);
        if let Some(customer) = build(c, tenant, id).await? {
            store(c, &customer, Replace::Always).await?;
        }
    }
    Ok(())
}

/// Stores a document read from the tables unless one was written meanwhile (see the module
/// notes); a customer erased meanwhile makes the insert fail its foreign key, which is fine.
pub(super) async fn fill(c: Conn<'_>, customer: &CachedCustomer) -> Result<(), EngineError> {
    store(c, customer, Replace::OtherFormat).await
}

/// Which stored document an upsert replaces.
enum Replace {
    Always,
    /// Only one of another format (a document of this format was written by a write).
    OtherFormat,
}

async fn store(
    c: Conn<'_>,
    customer: &CachedCustomer,
    replace: Replace,
) -> Result<(), EngineError> {
    let condition = match replace {
        Replace::Always => "",
        Replace::OtherFormat => " WHERE customer_contexts.format <> excluded.format",
    };
    c.execute(
        &format!(
            "INSERT INTO customer_contexts (customer_id, tenant_id, format, body) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id) DO UPDATE \
             SET format = excluded.format, body = excluded.body{condition}"
        ),
        &[
            customer.model.id.into(),
            customer.model.tenant_id.into(),
            FORMAT.into(),
            document_for(customer)?.as_str().into(),
        ],
    )
    .await?;
    Ok(())
}

/// The references of the tenant's customers whose document is missing or says something else
/// than the tables (a consistency check: every write keeps them equal).
pub(super) async fn out_of_date(c: Conn<'_>, tenant: TenantId) -> Result<Vec<String>, EngineError> {
    let ids = c
        .query(
            "SELECT id FROM customers WHERE tenant_id = $1 ORDER BY id",
            &[tenant.0.into()],
            |r| r.int_req(0),
        )
        .await?;
    let mut stale = Vec::new();
    for id in ids {
        let Some(truth) = build(c, tenant, id).await? else {
            continue;
        };
        if read(c, tenant, id).await?.as_ref() != Some(&truth) {
            stale.push(truth.model.customer_ref);
        }
    }
    Ok(stale)
}
