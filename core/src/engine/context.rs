//! The call-start read model: each customer's row and context stored as one JSON document in
//! `customer_contexts`, so a known caller's start reads one row (one B-tree descent) instead
//! of the customer, their variables, open intents and latest calls (a dozen descents, each a
//! few page reads: on SQLite every commit empties the read connections' page caches, so at a
//! million customers those reads dominated a start).
//!
//! The document is derived data, kept true in the writes themselves:
//! - every write that changes a customer's context rewrites the document in its own
//!   transaction ([`refresh`]: resolving an intent, an end that merged customers or moved a
//!   call; [`after_end`]: the usual end, which applies what it changed to the stored document
//!   instead of reading the customer's variables and calls back from the tables);
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
use super::store::{find_customer, load_context, load_open_intents};
use super::{CustomerContext, RECENT_CALLS, RecentCall, TenantId};
use crate::commands::VariableChanges;
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

/// What an end changed for the customer its call is linked to (see [`after_end`]).
pub(super) struct EndChange<'a> {
    /// The variables it set or removed.
    pub variables: &'a VariableChanges,
    /// It opened, re-opened or resolved an intent of the customer.
    pub intent_touched: bool,
    /// The call as it is now stored.
    pub call: RecentCall,
    /// The call was linked to this customer before the end (a repeated end).
    pub already_linked: bool,
}

/// Rewrites the document of the customer an end linked its call to, inside the end's
/// transaction: the stored document with the end's changes applied (the customer's row read
/// again, the variables set, the call placed among the latest, the open intents read again
/// if the end touched one). Where the stored document cannot tell the answer (none stored, a
/// tie in end times, a call without an end time among the latest) it is rebuilt from the
/// tables, as [`refresh`] does. Not for an end that merged customers or moved a call from
/// another customer: those rebuild.
pub(super) async fn after_end(
    c: Conn<'_>,
    tenant: TenantId,
    id: i64,
    change: EndChange<'_>,
) -> Result<(), EngineError> {
    match changed_by_end(c, tenant, id, change).await? {
        Some(customer) => store(c, &customer, Replace::Always).await,
        None => refresh(c, tenant, &[id]).await,
    }
}

async fn changed_by_end(
    c: Conn<'_>,
    tenant: TenantId,
    id: i64,
    change: EndChange<'_>,
) -> Result<Option<CachedCustomer>, EngineError> {
    let Some(stored) = read(c, tenant, id).await? else {
        return Ok(None);
    };
    let mut context = stored.context;
    if !place_call(
        &mut context.recent_calls,
        change.call,
        change.already_linked,
    ) {
        return Ok(None);
    }
    let Some(model) = find_customer(c, tenant, id).await? else {
        return Ok(None);
    };
    for (name, value) in change.variables.iter() {
        match value {
            Some(v) => context
                .variables
                .insert(name.as_str().to_owned(), v.clone()),
            None => context.variables.remove(name.as_str()),
        };
    }
    if change.intent_touched {
        context.open_intents = load_open_intents(c, id).await?;
    }
    context.call_count = model.call_count;
    context.first_seen_at = model.first_seen_at;
    context.last_seen_at = model.last_seen_at;
    Ok(Some(CachedCustomer { model, context }))
}

/// Puts an ended call where the tables would list it among a customer's latest calls (ended
/// time descending, then row id descending, at most [`RECENT_CALLS`]). `false` when the list
/// cannot tell: it holds no row ids, so an equal end time (or a missing one, which the two
/// databases order differently) needs the tables.
fn place_call(latest: &mut Vec<RecentCall>, call: RecentCall, already_linked: bool) -> bool {
    let full = latest.len() >= usize::try_from(RECENT_CALLS).unwrap_or(usize::MAX);
    if let Some(i) = latest.iter().position(|k| k.call_id == call.call_id) {
        // A repeated end keeps the call's end time, so its place.
        if already_linked && latest[i].ended_at == call.ended_at {
            latest[i] = call;
            return true;
        }
        return false;
    }
    if already_linked {
        // Linked before and not among the latest: older than all of them, and still is.
        return full;
    }
    let Some(ended) = call.ended_at else {
        return false;
    };
    if latest.iter().any(|k| k.ended_at.is_none_or(|t| t == ended)) {
        return false;
    }
    let at = latest
        .iter()
        .position(|k| k.ended_at < Some(ended))
        .unwrap_or(latest.len());
    latest.insert(at, call);
    latest.truncate(usize::try_from(RECENT_CALLS).unwrap_or(usize::MAX));
    true
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

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn call(id: &str, ended_minute: Option<i64>) -> RecentCall {
        let base = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
        RecentCall {
            call_id: id.into(),
            started_at: None,
            ended_at: ended_minute.map(|m| base + Duration::minutes(m)),
            intent: None,
            intent_status: None,
            summary: Some(format!("{id} {ended_minute:?}")),
        }
    }

    fn ids(latest: &[RecentCall]) -> Vec<&str> {
        latest.iter().map(|k| k.call_id.as_str()).collect()
    }

    /// `(latest as (id, minute), the end's call, already linked)` → the ids after, or `None`
    /// where the document cannot tell.
    #[test]
    fn an_ended_call_goes_where_the_tables_would_list_it() {
        type Case = (
            &'static [(&'static str, i64)],
            (&'static str, Option<i64>),
            bool,
        );
        let cases: &[(Case, Option<&[&str]>)] = &[
            // The newest call goes first; the list keeps five.
            (
                (&[("a", 5), ("b", 4)], ("n", Some(9)), false),
                Some(&["n", "a", "b"]),
            ),
            (
                (
                    &[("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1)],
                    ("n", Some(9)),
                    false,
                ),
                Some(&["n", "a", "b", "c", "d"]),
            ),
            // An older one goes below the newer ones, or nowhere when five are newer.
            (
                (&[("a", 5), ("b", 1)], ("n", Some(3)), false),
                Some(&["a", "n", "b"]),
            ),
            ((&[("a", 5)], ("n", Some(3)), false), Some(&["a", "n"])),
            (
                (
                    &[("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1)],
                    ("n", Some(0)),
                    false,
                ),
                Some(&["a", "b", "c", "d", "e"]),
            ),
            // The same end time as a listed call: only row ids order them.
            ((&[("a", 5), ("b", 3)], ("n", Some(3)), false), None),
            // No end time.
            ((&[("a", 5)], ("n", None), false), None),
            // A repeated end of a listed call keeps its place.
            (
                (&[("a", 5), ("b", 3)], ("b", Some(3)), true),
                Some(&["a", "b"]),
            ),
            // ...unless its end time differs from the listed one (the document is stale).
            ((&[("a", 5), ("b", 3)], ("b", Some(4)), true), None),
            // A listed call that was not linked (the document is stale).
            ((&[("a", 5), ("b", 3)], ("b", Some(3)), false), None),
            // A linked call that is not listed: older than five listed ones, and still is...
            (
                (
                    &[("a", 5), ("b", 4), ("c", 3), ("d", 2), ("e", 1)],
                    ("z", Some(0)),
                    true,
                ),
                Some(&["a", "b", "c", "d", "e"]),
            ),
            // ...but with fewer than five listed it should have been there.
            ((&[("a", 5)], ("z", Some(0)), true), None),
        ];
        for ((latest, (id, minute), linked), expected) in cases {
            let mut list: Vec<RecentCall> = latest.iter().map(|(i, m)| call(i, Some(*m))).collect();
            let placed = place_call(&mut list, call(id, *minute), *linked);
            let got = placed.then(|| ids(&list));
            assert_eq!(
                got.as_deref(),
                expected.map(|e| e.to_vec()).as_deref(),
                "{latest:?} + {id} at {minute:?} (linked: {linked})"
            );
        }
        // A repeated end replaces the listed call's other fields.
        let mut list = vec![call("a", Some(5))];
        let mut again = call("a", Some(5));
        again.summary = Some("amended".into());
        assert!(place_call(&mut list, again.clone(), true));
        assert_eq!(list, vec![again]);
    }
}
