//! Queries shared by the engine's operations: finding a call, gathering the evidence for a set
//! of hints, and loading a customer's context. Each is a bounded number of indexed queries
//! whatever the size of the customer's history.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement,
};
use serde_json::Value;

use super::{
    CallRecord, CustomerContext, OPEN_INTENTS, OpenIntent, RECENT_CALLS, RecentCall, TenantId,
};
use crate::domain::{Ani, CallId, ExternalId};
use crate::entities::{call, customer, identity};
use crate::error::EngineError;
use crate::scoring::{AniEvidence, Evidence, ExternalEvidence, IdentityLink};

pub(super) async fn find_call(
    c: &impl ConnectionTrait,
    tenant: TenantId,
    call_id: &CallId,
) -> Result<Option<call::Model>, EngineError> {
    Ok(call::Entity::find()
        .filter(call::Column::TenantId.eq(tenant.0))
        .filter(call::Column::CallId.eq(call_id.as_str()))
        .one(c)
        .await?)
}

pub(super) async fn find_customer_by_ref(
    c: &impl ConnectionTrait,
    tenant: TenantId,
    customer_ref: &str,
) -> Result<Option<customer::Model>, EngineError> {
    Ok(customer::Entity::find()
        .filter(customer::Column::TenantId.eq(tenant.0))
        .filter(customer::Column::CustomerRef.eq(customer_ref))
        .one(c)
        .await?)
}

/// Customers by storage id, for turning scores into references.
pub(super) async fn customers_by_id(
    c: &impl ConnectionTrait,
    tenant: TenantId,
    ids: impl IntoIterator<Item = i64>,
) -> Result<HashMap<i64, customer::Model>, EngineError> {
    let ids: Vec<i64> = ids.into_iter().collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(customer::Entity::find()
        .filter(customer::Column::TenantId.eq(tenant.0))
        .filter(customer::Column::Id.is_in(ids))
        .all(c)
        .await?
        .into_iter()
        .map(|m| (m.id, m))
        .collect())
}

fn as_link(m: &identity::Model) -> IdentityLink {
    IdentityLink {
        customer: m.customer_id,
        call_count: u32::try_from(m.call_count).unwrap_or(u32::MAX),
        last_seen_at: m.last_seen_at,
    }
}

/// An identity as the index stores it: (`ani` | `external_id`, value).
pub(super) type IdentityKey = (&'static str, String);

/// The identity keys of a call's hints: its usable number and its external ids.
pub(super) fn identity_keys(ani: Option<&Ani>, external_ids: &[ExternalId]) -> Vec<IdentityKey> {
    ani.and_then(Ani::number)
        .map(|n| (identity::KIND_ANI, n.as_str().to_owned()))
        .into_iter()
        .chain(
            external_ids
                .iter()
                .map(|e| (identity::KIND_EXTERNAL, e.pair())),
        )
        .collect()
}

/// The customers linked to each key: one query over the identity index.
pub(super) async fn load_links(
    c: &impl ConnectionTrait,
    tenant: TenantId,
    keys: &[IdentityKey],
) -> Result<HashMap<IdentityKey, Vec<IdentityLink>>, EngineError> {
    let mut out: HashMap<IdentityKey, Vec<IdentityLink>> =
        keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    if keys.is_empty() {
        return Ok(out);
    }
    let mut any = Condition::any();
    for (kind, value) in keys {
        any = any.add(
            Condition::all()
                .add(identity::Column::Kind.eq(*kind))
                .add(identity::Column::Value.eq(value.as_str())),
        );
    }
    let rows = identity::Entity::find()
        .filter(identity::Column::TenantId.eq(tenant.0))
        .filter(any)
        .all(c)
        .await?;
    for r in &rows {
        if let Some(k) = keys
            .iter()
            .find(|(kind, value)| *kind == r.kind && *value == r.value)
        {
            out.entry(k.clone()).or_default().push(as_link(r));
        }
    }
    Ok(out)
}

/// The scorer's view of a call's hints, from the links of their keys.
pub(super) fn evidence(
    ani: Option<&Ani>,
    external_ids: &[ExternalId],
    links: &HashMap<IdentityKey, Vec<IdentityLink>>,
) -> Evidence {
    let get =
        |kind: &'static str, value: String| links.get(&(kind, value)).cloned().unwrap_or_default();
    let ani = match ani {
        None => AniEvidence::NotGiven,
        Some(Ani::Withheld(reason)) => AniEvidence::Withheld(reason.describe()),
        Some(Ani::Number(n)) => AniEvidence::Number(get(identity::KIND_ANI, n.as_str().to_owned())),
    };
    let external = external_ids
        .iter()
        .map(|id| ExternalEvidence {
            name: id.name().to_owned(),
            links: get(identity::KIND_EXTERNAL, id.pair()),
        })
        .collect();
    Evidence { ani, external }
}

/// Evidence straight from the database (inside a write transaction).
pub(super) async fn load_evidence(
    c: &impl ConnectionTrait,
    tenant: TenantId,
    ani: Option<&Ani>,
    external_ids: &[ExternalId],
) -> Result<Evidence, EngineError> {
    let links = load_links(c, tenant, &identity_keys(ani, external_ids)).await?;
    Ok(evidence(ani, external_ids, &links))
}

pub(super) fn parse_variables(text: &str) -> Result<BTreeMap<String, Value>, EngineError> {
    Ok(serde_json::from_str(text)?)
}

/// Variables, open intents and recent calls of one customer, in one round trip: three
/// indexed selects joined by `UNION ALL` into rows of one shape (`kind`, two texts, two
/// more texts, two times, the row id). One statement instead of three matters: each
/// statement is a hand-off to the database driver's thread, which costs more than the reads.
pub(super) async fn load_context(
    c: &impl ConnectionTrait,
    customer: &customer::Model,
) -> Result<CustomerContext, EngineError> {
    let backend = c.get_database_backend();
    let p = |n: usize| match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    let sql = format!(
        "SELECT 'v' AS kind, name AS a, value AS b, NULL AS c, NULL AS d, updated_at AS t1, NULL AS t2, id AS n \
         FROM variables WHERE customer_id = {} \
         UNION ALL SELECT * FROM (SELECT 'i', intent, last_call_id, NULL, NULL, opened_at, updated_at, id \
           FROM intents WHERE customer_id = {} AND status = 'open' \
           ORDER BY updated_at DESC, id ASC LIMIT {OPEN_INTENTS}) AS i \
         UNION ALL SELECT * FROM (SELECT 'c', call_id, summary, intent, intent_status, started_at, ended_at, id \
           FROM calls WHERE customer_id = {} AND status = '{}' \
           ORDER BY ended_at DESC, id DESC LIMIT {RECENT_CALLS}) AS k",
        p(1),
        p(2),
        p(3),
        call::STATUS_ENDED,
    );
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [customer.id.into(), customer.id.into(), customer.id.into()],
        ))
        .await?;
    let mut variables = BTreeMap::new();
    let mut intents = Vec::new();
    let mut calls = Vec::new();
    for r in rows {
        let kind: String = r.try_get_by_index(0)?;
        let a: Option<String> = r.try_get_by_index(1)?;
        let b: Option<String> = r.try_get_by_index(2)?;
        let t1: Option<DateTime<Utc>> = r.try_get_by_index(5)?;
        let t2: Option<DateTime<Utc>> = r.try_get_by_index(6)?;
        let n: i64 = r.try_get_by_index(7)?;
        match kind.as_str() {
            "v" => {
                let value: Value = serde_json::from_str(b.as_deref().unwrap_or("null"))?;
                variables.insert(a.unwrap_or_default(), value);
            }
            "i" => intents.push((
                t2,
                n,
                OpenIntent {
                    intent: a.unwrap_or_default(),
                    opened_at: t1.unwrap_or_else(crate::now),
                    last_call_id: b,
                },
            )),
            _ => calls.push((
                t2,
                n,
                RecentCall {
                    call_id: a.unwrap_or_default(),
                    summary: b,
                    intent: r.try_get_by_index(3)?,
                    intent_status: r.try_get_by_index(4)?,
                    started_at: t1,
                    ended_at: t2,
                },
            )),
        }
    }
    // UNION ALL keeps no order across its parts: restore each part's.
    intents.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    calls.sort_by(|x, y| y.0.cmp(&x.0).then(y.1.cmp(&x.1)));
    Ok(CustomerContext {
        variables,
        open_intents: intents.into_iter().map(|(_, _, i)| i).collect(),
        recent_calls: calls.into_iter().map(|(_, _, k)| k).collect(),
        call_count: customer.call_count,
        first_seen_at: customer.first_seen_at,
        last_seen_at: customer.last_seen_at,
    })
}

/// A stored call with its customer references resolved.
pub(super) async fn call_record(
    c: &impl ConnectionTrait,
    tenant: TenantId,
    row: call::Model,
) -> Result<CallRecord, EngineError> {
    let refs = customers_by_id(
        c,
        tenant,
        row.matched_customer_id.into_iter().chain(row.customer_id),
    )
    .await?;
    let reference = |id: Option<i64>| {
        id.and_then(|id| refs.get(&id))
            .map(|m| m.customer_ref.clone())
    };
    Ok(CallRecord {
        matched_customer_ref: reference(row.matched_customer_id),
        customer_ref: reference(row.customer_id),
        external_ids: serde_json::from_str(&row.external_ids)?,
        variables: parse_variables(&row.variables)?,
        call_id: row.call_id,
        platform: row.platform,
        status: row.status,
        ani: row.ani,
        ani_withheld: row.ani_withheld,
        dnis: row.dnis,
        confidence: row.confidence,
        band: row.band,
        intent: row.intent,
        intent_status: row.intent_status,
        summary: row.summary,
        started_at: row.started_at,
        ended_at: row.ended_at,
    })
}
