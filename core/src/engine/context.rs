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
use serde_json::value::RawValue;

use super::cache::{CachedCustomer, CustomerAnswer};
use super::sql::{Conn, Write};
use super::store::{find_customer, load_context, load_open_intents};
use super::{
    ContextJson, CustomerContext, OPEN_INTENTS, OpenIntent, RECENT_CALLS, RecentCall, TenantId,
};
use crate::commands::VariableChanges;
use crate::domain::IntentStatus;
use crate::entities::{customer, intent};
use crate::error::EngineError;

/// The document's shape. Bump it when [`CustomerContext`], its JSON form or what it selects
/// changes (how many recent calls, say): older documents are then read as missing and rebuilt.
/// 3: the context is written as the API writes it (timestamps `+00:00`), since a start sends
/// it as it is stored ([`read_answer`]).
pub(super) const FORMAT: i64 = 3;

/// What the document stores beyond the context (the customer's id and tenant are its key).
#[derive(Deserialize)]
struct Document {
    customer_ref: String,
    provisional: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    context: CustomerContext,
    /// See [`CachedCustomer::newest_open_intent`] (format 2).
    newest_open_intent: Option<DateTime<Utc>>,
}

/// What a start reads of a [`Document`]: the context stays JSON text.
#[derive(Deserialize)]
struct AnswerDocument {
    customer_ref: String,
    context: Box<RawValue>,
}

/// [`Document`] as written: borrowed, so that writing one clones nothing.
#[derive(Serialize)]
struct DocumentRef<'a> {
    customer_ref: &'a str,
    provisional: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    context: &'a CustomerContext,
    newest_open_intent: Option<DateTime<Utc>>,
}

/// A customer's document as stored.
pub(super) fn document_for(c: &CachedCustomer) -> Result<String, EngineError> {
    Ok(serde_json::to_string(&DocumentRef {
        customer_ref: &c.model.customer_ref,
        provisional: c.model.provisional,
        created_at: c.model.created_at,
        updated_at: c.model.updated_at,
        context: &c.context,
        newest_open_intent: c.newest_open_intent,
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
        newest_open_intent: d.newest_open_intent,
    })
}

/// The stored document of a customer of `tenant`, if there is one of the current format.
async fn stored_body(
    c: Conn<'_>,
    tenant: TenantId,
    id: i64,
) -> Result<Option<String>, EngineError> {
    c.query_one(
        &format!("SELECT {BODY}"),
        &[id.into(), tenant.0.into(), FORMAT.into()],
        |r| r.text(0),
    )
    .await
    .map(Option::flatten)
}

/// The stored document's body of the current format, as a value (null when none).
const BODY: &str = "(SELECT body FROM customer_contexts \
     WHERE customer_id = $1 AND tenant_id = $2 AND format = $3)";

/// [`stored_body`] as a read of [`Conn::execute_together`]; [`after_end`] takes its value.
pub(super) fn stored_body_read(tenant: TenantId, id: i64) -> Write<'static> {
    Write {
        sql: BODY.into(),
        args: vec![id.into(), tenant.0.into(), FORMAT.into()],
    }
}

/// The stored document of a customer of `tenant`, decoded.
pub(super) async fn read(
    c: Conn<'_>,
    tenant: TenantId,
    id: i64,
) -> Result<Option<CachedCustomer>, EngineError> {
    let body = stored_body(c, tenant, id).await?;
    body.map(|b| decode(id, tenant, &b)).transpose()
}

/// What a start answers with about a customer of `tenant`, from their stored document if
/// there is one of the current format; the context is not decoded.
pub(super) async fn read_answer(
    c: Conn<'_>,
    tenant: TenantId,
    id: i64,
) -> Result<Option<CustomerAnswer>, EngineError> {
    let body = stored_body(c, tenant, id).await?;
    body.map(|b| answer_of(tenant, id, &b)).transpose()
}

/// What a start answers with about a customer, from their stored document's body.
pub(super) fn answer_of(
    tenant: TenantId,
    id: i64,
    body: &str,
) -> Result<CustomerAnswer, EngineError> {
    let d: AnswerDocument = serde_json::from_str(body)?;
    // Sent as it is: at least the shape the API promises (a damaged document is an error, as
    // it is when decoded).
    if !d.context.get().starts_with('{') {
        return Err(EngineError::Corrupt(format!(
            "the context document of customer {id} holds no object"
        )));
    }
    Ok(CustomerAnswer {
        id,
        tenant,
        customer_ref: d.customer_ref,
        context: ContextJson::stored(d.context),
    })
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
    let (context, newest_open_intent) = load_context(c, &model).await?;
    Ok(Some(CachedCustomer {
        model,
        context,
        newest_open_intent,
    }))
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
    /// The customer's row as now stored.
    pub customer: &'a customer::Model,
    /// The variables it set or removed.
    pub variables: &'a VariableChanges,
    /// The intent it opened, re-opened or resolved, as now stored.
    pub intent: Option<intent::Model>,
    /// The call as it is now stored.
    pub call: RecentCall,
    /// The call was linked to this customer before the end (a repeated end).
    pub already_linked: bool,
}

/// The new document of the customer an end linked its call to, for the caller to store in
/// the end's transaction ([`store_documents`]): the stored document with the end's changes
/// applied (the customer's row read again, the variables set, the call placed among the
/// latest, the intent it touched placed among the open ones). Where the stored document cannot
/// tell the answer (none stored, a tie in end times, a call without an end time among the
/// latest) it is rebuilt from the tables and stored here, as [`refresh`] does (`None`); the
/// open intents alone are read back when an intent left a full list or was not touched after
/// every other. Not for an end that merged customers or moved a call from another customer:
/// those rebuild.
///
/// `body`: the stored document's body, read in this transaction after the customer's row was
/// locked ([`stored_body_read`]).
pub(super) async fn after_end(
    c: Conn<'_>,
    tenant: TenantId,
    change: EndChange<'_>,
    body: Option<String>,
) -> Result<Option<CachedCustomer>, EngineError> {
    let id = change.customer.id;
    match changed_by_end(c, tenant, change, body).await? {
        Some(customer) => Ok(Some(customer)),
        None => {
            refresh(c, tenant, &[id]).await?;
            Ok(None)
        }
    }
}

/// Stores customers' documents; on PostgreSQL in one statement, whatever their number.
pub(super) async fn store_documents(
    c: Conn<'_>,
    documents: &[CachedCustomer],
) -> Result<(), EngineError> {
    if documents.len() < 2 || c.backend() != sea_orm::DbBackend::Postgres {
        for document in documents {
            store(c, document, Replace::Always).await?;
        }
        return Ok(());
    }
    let rows = documents
        .iter()
        .map(|d| {
            Ok(serde_json::json!({
                "c": d.model.id, "t": d.model.tenant_id, "b": document_for(d)?,
            }))
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    c.execute(
        "INSERT INTO customer_contexts (customer_id, tenant_id, format, body) \
         SELECT x.c, x.t, $2, x.b FROM json_to_recordset($1::json) AS x(c int8, t int8, b text) \
         ON CONFLICT (customer_id) DO UPDATE SET format = excluded.format, body = excluded.body",
        &[serde_json::to_string(&rows)?.as_str().into(), FORMAT.into()],
    )
    .await?;
    Ok(())
}

async fn changed_by_end(
    c: Conn<'_>,
    tenant: TenantId,
    change: EndChange<'_>,
    body: Option<String>,
) -> Result<Option<CachedCustomer>, EngineError> {
    let id = change.customer.id;
    let Some(stored) = body.map(|b| decode(id, tenant, &b)).transpose()? else {
        return Ok(None);
    };
    let mut context = stored.context;
    let mut newest_open_intent = stored.newest_open_intent;
    if !place_call(
        &mut context.recent_calls,
        change.call,
        change.already_linked,
    ) {
        return Ok(None);
    }
    let model = change.customer.clone();
    for (name, value) in change.variables.iter() {
        match value {
            Some(v) => {
                match change.variables.expires_at(name) {
                    Some(at) => context.variable_expiry.insert(name.as_str().to_owned(), at),
                    None => context.variable_expiry.remove(name.as_str()),
                };
                context
                    .variables
                    .insert(name.as_str().to_owned(), v.clone())
            }
            None => {
                context.variable_expiry.remove(name.as_str());
                context.variables.remove(name.as_str())
            }
        };
    }
    if let Some(touched) = &change.intent
        && !place_intent(&mut context.open_intents, &mut newest_open_intent, touched)
    {
        (context.open_intents, newest_open_intent) = load_open_intents(c, id).await?;
    }
    context.call_count = model.call_count;
    context.first_seen_at = model.first_seen_at;
    context.last_seen_at = model.last_seen_at;
    Ok(Some(CachedCustomer {
        model,
        context,
        newest_open_intent,
    }))
}

/// Puts an intent an end touched where the tables would list it among the open ones (last
/// touched first, at most [`OPEN_INTENTS`]). `false` when the list cannot tell: an intent
/// opened no later than the newest listed one (they are ordered by time, then row id), or a
/// listed one resolved from a full list (the next one is not in it) or from its head (the
/// next one's time is not known).
fn place_intent(
    open: &mut Vec<OpenIntent>,
    newest: &mut Option<DateTime<Utc>>,
    touched: &intent::Model,
) -> bool {
    let max = usize::try_from(OPEN_INTENTS).unwrap_or(usize::MAX);
    let listed = open.iter().position(|i| i.intent == touched.intent);
    if touched.status == IntentStatus::Open.as_str() {
        let first = match *newest {
            Some(t) => touched.updated_at > t,
            None => open.is_empty(),
        };
        if !first {
            return false;
        }
        if let Some(i) = listed {
            open.remove(i);
        }
        open.insert(
            0,
            OpenIntent {
                intent: touched.intent.clone(),
                opened_at: touched.opened_at,
                last_call_id: touched.last_call_id.clone(),
                due_at: touched.due_at,
                state: None,
            },
        );
        open.truncate(max);
        *newest = Some(touched.updated_at);
        return true;
    }
    match listed {
        // Not open before, or older than every listed one: the list stays.
        None => true,
        Some(i) if i > 0 && open.len() < max => {
            open.remove(i);
            true
        }
        Some(_) => false,
    }
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

    fn intent(name: &str, status: &str, minute: i64) -> intent::Model {
        let at = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap() + Duration::minutes(minute);
        intent::Model {
            id: 1,
            tenant_id: 1,
            customer_id: 1,
            intent: name.into(),
            status: status.into(),
            opened_at: at,
            updated_at: at,
            resolved_at: None,
            last_call_id: Some("c".into()),
            due_at: None,
        }
    }

    /// `(listed names, newest minute, touched (name, status, minute))` → names after and the
    /// newest minute, or `None` where the open intents must be read back.
    #[test]
    fn a_touched_intent_goes_where_the_tables_would_list_it() {
        type Case<'a> = (&'a [&'a str], Option<i64>, (&'a str, &'a str, i64));
        type Expected<'a> = Option<(Vec<&'a str>, Option<i64>)>;
        let full: Vec<String> = (0..20).map(|n| format!("t{n}")).collect();
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let mut cases: Vec<(Case, Expected)> = vec![
            // Opened after every other: first.
            ((&[], None, ("a", "open", 5)), Some((vec!["a"], Some(5)))),
            (
                (&["b", "c"], Some(3), ("a", "open", 5)),
                Some((vec!["a", "b", "c"], Some(5))),
            ),
            (
                (&["b", "a"], Some(3), ("a", "open", 5)),
                Some((vec!["a", "b"], Some(5))),
            ),
            // Not after the newest (a clock behind, or the same instant): read back.
            ((&["b"], Some(5), ("a", "open", 5)), None),
            ((&["b"], Some(7), ("a", "open", 5)), None),
            // An inconsistent document: read back.
            ((&["b"], None, ("a", "open", 5)), None),
            // Resolved: dropped from the middle or the end of a short list...
            (
                (&["a", "b", "c"], Some(3), ("b", "resolved", 9)),
                Some((vec!["a", "c"], Some(3))),
            ),
            // ...not from its head (the next one's time is unknown)...
            ((&["a", "b"], Some(3), ("a", "resolved", 9)), None),
            // ...and not listed: nothing changes.
            (
                (&["a"], Some(3), ("z", "resolved", 9)),
                Some((vec!["a"], Some(3))),
            ),
        ];
        // A full list: the oldest falls off when one is opened; resolving a listed one needs
        // the next one, which it does not hold.
        let mut opened: Vec<&str> = vec!["new"];
        opened.extend(&full[..19]);
        cases.push((
            (&full, Some(3), ("new", "open", 5)),
            Some((opened, Some(5))),
        ));
        cases.push(((&full, Some(3), ("t7", "resolved", 5)), None));
        for ((listed, newest, (name, status, minute)), expected) in cases {
            let mut open: Vec<OpenIntent> = listed
                .iter()
                .map(|n| OpenIntent {
                    intent: (*n).into(),
                    opened_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
                    last_call_id: None,
                    due_at: None,
                    state: None,
                })
                .collect();
            let base = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
            let mut at = newest.map(|m| base + Duration::minutes(m));
            let touched = intent(name, status, minute);
            let placed = place_intent(&mut open, &mut at, &touched);
            let got = placed.then(|| {
                (
                    open.iter().map(|i| i.intent.as_str()).collect::<Vec<_>>(),
                    at.map(|t| (t - base).num_minutes()),
                )
            });
            assert_eq!(
                got, expected,
                "{listed:?} newest {newest:?} + {name} {status} at {minute}"
            );
            if placed && status == "open" {
                assert_eq!(open[0].opened_at, touched.opened_at);
                assert_eq!(open[0].last_call_id, touched.last_call_id);
            }
        }
    }
}
