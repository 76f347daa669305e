//! Queries shared by the engine's operations: finding a call, gathering the evidence for a set
//! of hints, and loading a customer's context. Each is a bounded number of indexed queries
//! whatever the size of the customer's history.

use std::collections::{BTreeMap, HashMap};

use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::Value;

use super::{
    CallRecord, CustomerContext, OPEN_INTENTS, OpenIntent, RECENT_CALLS, RecentCall, TenantId,
};
use crate::domain::{Ani, CallId, ExternalId};
use crate::entities::{call, customer, identity, intent, variable};
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

/// Variables, open intents and recent calls of one customer: three indexed queries.
pub(super) async fn load_context(
    c: &impl ConnectionTrait,
    customer: &customer::Model,
) -> Result<CustomerContext, EngineError> {
    let variables = variable::Entity::find()
        .filter(variable::Column::CustomerId.eq(customer.id))
        .all(c)
        .await?
        .into_iter()
        .map(|v| Ok((v.name, serde_json::from_str(&v.value)?)))
        .collect::<Result<BTreeMap<_, _>, EngineError>>()?;
    let open_intents = intent::Entity::find()
        .filter(intent::Column::CustomerId.eq(customer.id))
        .filter(intent::Column::Status.eq("open"))
        .order_by_desc(intent::Column::UpdatedAt)
        .order_by_asc(intent::Column::Id)
        .limit(OPEN_INTENTS)
        .all(c)
        .await?
        .into_iter()
        .map(|i| OpenIntent {
            intent: i.intent,
            opened_at: i.opened_at,
            last_call_id: i.last_call_id,
        })
        .collect();
    let recent_calls = call::Entity::find()
        .filter(call::Column::CustomerId.eq(customer.id))
        .filter(call::Column::Status.eq(call::STATUS_ENDED))
        .order_by_desc(call::Column::EndedAt)
        .order_by_desc(call::Column::Id)
        .limit(RECENT_CALLS)
        .all(c)
        .await?
        .into_iter()
        .map(|k| RecentCall {
            call_id: k.call_id,
            started_at: k.started_at,
            ended_at: k.ended_at,
            intent: k.intent,
            intent_status: k.intent_status,
            summary: k.summary,
        })
        .collect();
    Ok(CustomerContext {
        variables,
        open_intents,
        recent_calls,
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
