//! Call end: link the call's identities to a customer (named, resolved, or a new provisional
//! one), merge provisional customers into named ones, and save variables, intent and summary.
//! Everything happens in one serialised transaction: an end is applied whole or not at all.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait as _},
};
use serde_json::Value;

use super::start::normalise_dnis;
use super::store::{IdentityKey, find_call, find_customer_by_ref, load_evidence, parse_variables};
use super::{EndOutcome, Engine, TenantId};
use crate::commands::EndCall;
use crate::domain::{Ani, CustomerRef, ExternalId, IntentStatus};
use crate::entities::{call, customer, identity, intent, variable};
use crate::error::{EngineError, FieldError};
use crate::scoring::{self, Band};

impl Engine {
    /// Remembers what happened on a call. Idempotent on the call id: a repeated end merges
    /// into what earlier ends saved.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for an `intent_status` with no intent to apply it to; database
    /// failures otherwise.
    pub async fn end_call(
        &self,
        tenant: TenantId,
        cmd: EndCall,
    ) -> Result<EndOutcome, EngineError> {
        let (_writer, tx) = self.begin_write(tenant).await?;
        let (outcome, touched) = self.end_in(&tx, tenant, cmd).await?;
        tx.commit().await?;
        if outcome.merged_from.is_some() {
            self.caches.written_widely();
        } else {
            self.caches
                .written(tenant, &touched.customers, &touched.identities)
                .await;
        }
        Ok(outcome)
    }

    async fn end_in(
        &self,
        tx: &DatabaseTransaction,
        tenant: TenantId,
        cmd: EndCall,
    ) -> Result<(EndOutcome, Touched), EngineError> {
        let now = crate::now();
        let existing = find_call(tx, tenant, &cmd.call_id).await?;

        // The call's hints: what its start recorded, completed by what the end gives.
        let stored_number = existing.as_ref().and_then(|c| c.ani.clone());
        let end_ani = cmd.hints.ani.as_deref().map(|a| Ani::parse(a, self.region));
        let number: Option<String> = stored_number.clone().or_else(|| {
            end_ani
                .as_ref()
                .and_then(Ani::number)
                .map(|n| n.as_str().to_owned())
        });
        let ani_withheld = number.is_none()
            && (existing.as_ref().is_some_and(|c| c.ani_withheld)
                || matches!(end_ani, Some(Ani::Withheld(_))));
        let stored_external: BTreeMap<String, String> = match &existing {
            Some(c) => serde_json::from_str(&c.external_ids)?,
            None => BTreeMap::new(),
        };
        let mut external = stored_external.clone();
        for id in &cmd.hints.external_ids {
            external
                .entry(id.name().to_owned())
                .or_insert_with(|| id.value().to_owned());
        }
        let external_ids: Vec<ExternalId> = external
            .iter()
            .filter_map(|(n, v)| ExternalId::new(n, v).ok())
            .collect();
        let identities: Vec<(&'static str, String)> = number
            .iter()
            .map(|n| (identity::KIND_ANI, n.clone()))
            .chain(
                external_ids
                    .iter()
                    .map(|e| (identity::KIND_EXTERNAL, e.pair())),
            )
            .collect();
        // Identities an earlier end of this call already counted.
        let counted: BTreeSet<(&'static str, String)> = match &existing {
            Some(c) if c.customer_id.is_some() => stored_number
                .iter()
                .map(|n| (identity::KIND_ANI, n.clone()))
                .chain(
                    stored_external
                        .iter()
                        .map(|(n, v)| (identity::KIND_EXTERNAL, format!("{n}:{v}"))),
                )
                .collect(),
            _ => BTreeSet::new(),
        };

        // Who the call belongs to.
        let mut linked_before = existing.as_ref().and_then(|c| c.customer_id);
        let mut merged_from = None;
        let target = if let Some(named_ref) = &cmd.customer_ref {
            let named = find_customer_by_ref(tx, tenant, named_ref.as_str()).await?;
            let provisional = match existing
                .as_ref()
                .and_then(|c| c.customer_id.or(c.matched_customer_id))
            {
                Some(id) => customer::Entity::find_by_id(id)
                    .one(tx)
                    .await?
                    .filter(|p| p.provisional && p.customer_ref != named_ref.as_str()),
                None => None,
            };
            Some(match (provisional, named) {
                (Some(p), Some(n)) => {
                    merge_customers(tx, &p, &n, now).await?;
                    if linked_before == Some(p.id) {
                        linked_before = Some(n.id);
                    }
                    merged_from = Some(p.customer_ref);
                    customer::Entity::find_by_id(n.id)
                        .one(tx)
                        .await?
                        .ok_or_else(|| EngineError::Corrupt("merge target vanished".into()))?
                }
                (Some(p), None) => {
                    let mut promote: customer::ActiveModel = p.into();
                    promote.customer_ref = Set(named_ref.as_str().to_owned());
                    promote.provisional = Set(false);
                    promote.updated_at = Set(now);
                    promote.update(tx).await?
                }
                (None, Some(n)) => n,
                (None, None) => create_customer(tx, tenant, named_ref, false, now).await?,
            })
        } else if let Some(id) = linked_before {
            customer::Entity::find_by_id(id).one(tx).await?
        } else {
            None
        };
        let target = match target {
            Some(t) => Some(t),
            None if identities.is_empty() => None,
            None => {
                // Resolve at end time: reuse a customer only when we are sure.
                let ani = number
                    .as_ref()
                    .map(|n| Ani::Number(crate::domain::PhoneNumber::from_stored(n.clone())));
                let evidence = load_evidence(tx, tenant, ani.as_ref(), &external_ids).await?;
                let resolution = scoring::resolve(&evidence, now);
                let sure = match resolution.best {
                    Some(best) if resolution.band == Band::High => {
                        customer::Entity::find_by_id(best.customer).one(tx).await?
                    }
                    _ => None,
                };
                match sure {
                    Some(c) => Some(c),
                    None => Some(
                        create_customer(tx, tenant, &CustomerRef::generate(), true, now).await?,
                    ),
                }
            }
        };

        // Link identities and count the call once per customer.
        if let Some(t) = &target {
            let newly_linked = linked_before != Some(t.id);
            for (kind, value) in &identities {
                if newly_linked || !counted.contains(&(*kind, value.clone())) {
                    link_identity(tx, tenant, t.id, kind, value, now).await?;
                }
            }
            if newly_linked {
                let mut stats: customer::ActiveModel = t.clone().into();
                stats.call_count = Set(t.call_count + 1);
                stats.first_seen_at = Set(Some(t.first_seen_at.unwrap_or(now)));
                stats.last_seen_at = Set(Some(now));
                stats.updated_at = Set(now);
                stats.update(tx).await?;
                if let Some(previous) = linked_before {
                    // The call moved to another customer: it no longer counts for the old one.
                    customer::Entity::update_many()
                        .col_expr(
                            customer::Column::CallCount,
                            Expr::col(customer::Column::CallCount).sub(1),
                        )
                        .filter(customer::Column::Id.eq(previous))
                        .filter(customer::Column::CallCount.gt(0))
                        .exec(tx)
                        .await?;
                }
            }
            for (name, value) in cmd.variables.iter() {
                set_variable(tx, tenant, t.id, name.as_str(), value, now).await?;
            }
        }

        // Intent: named at this end, or the call's own when only a status is given.
        let intent_name = cmd
            .intent
            .as_ref()
            .map(|i| i.as_str().to_owned())
            .or_else(|| existing.as_ref().and_then(|c| c.intent.clone()));
        if cmd.intent_status.is_some() && intent_name.is_none() {
            return Err(FieldError::new(
                "intent_status",
                "needs an intent: give `intent`, or end a call that already has one",
            )
            .into());
        }
        let intent_status = match (cmd.intent_status, &cmd.intent) {
            (Some(s), _) => Some(s.as_str().to_owned()),
            (None, Some(_)) => Some(IntentStatus::Open.as_str().to_owned()),
            (None, None) => existing.as_ref().and_then(|c| c.intent_status.clone()),
        };
        if let (Some(t), Some(name), Some(status)) = (&target, &intent_name, &intent_status)
            && (cmd.intent.is_some() || cmd.intent_status.is_some())
        {
            set_intent(
                tx,
                tenant,
                t.id,
                name,
                status,
                Some(cmd.call_id.as_str()),
                now,
            )
            .await?;
        }

        // The call itself.
        let mut call_variables = match &existing {
            Some(c) => parse_variables(&c.variables)?,
            None => BTreeMap::new(),
        };
        for (name, value) in cmd.variables.iter() {
            match value {
                Some(v) => call_variables.insert(name.as_str().to_owned(), v.clone()),
                None => call_variables.remove(name.as_str()),
            };
        }
        let summary = cmd
            .summary
            .clone()
            .or_else(|| {
                cmd.variables
                    .get("summary")
                    .and_then(Value::as_str)
                    .and_then(|s| {
                        crate::commands::parse_summary("variables.summary", s.to_owned()).ok()
                    })
            })
            .or_else(|| existing.as_ref().and_then(|c| c.summary.clone()));
        let dnis = existing.as_ref().and_then(|c| c.dnis.clone()).or_else(|| {
            cmd.hints
                .dnis
                .as_deref()
                .and_then(|d| normalise_dnis(d, self.region))
        });
        let mut row: call::ActiveModel = match &existing {
            Some(c) => c.clone().into(),
            None => call::ActiveModel {
                tenant_id: Set(tenant.0),
                call_id: Set(cmd.call_id.as_str().to_owned()),
                platform: Set(cmd.platform.as_str().to_owned()),
                matched_customer_id: Set(None),
                confidence: Set(None),
                band: Set(None),
                recommended_action: Set(None),
                signals: Set("[]".into()),
                candidates: Set("[]".into()),
                started_at: Set(None),
                created_at: Set(now),
                ..Default::default()
            },
        };
        row.ani = Set(number);
        row.ani_withheld = Set(ani_withheld);
        row.dnis = Set(dnis);
        row.external_ids = Set(serde_json::to_string(&external)?);
        row.customer_id = Set(target.as_ref().map(|t| t.id));
        row.status = Set(call::STATUS_ENDED.to_owned());
        row.intent = Set(intent_name);
        row.intent_status = Set(intent_status);
        row.summary = Set(summary);
        row.variables = Set(serde_json::to_string(&call_variables)?);
        row.ended_at = Set(Some(
            existing.as_ref().and_then(|c| c.ended_at).unwrap_or(now),
        ));
        row.updated_at = Set(now);
        if existing.is_some() {
            row.update(tx).await?;
        } else {
            row.insert(tx).await?;
        }

        let touched = Touched {
            customers: target.iter().map(|t| t.id).chain(linked_before).collect(),
            identities,
        };
        Ok((
            EndOutcome {
                call_id: cmd.call_id.as_str().to_owned(),
                customer_ref: target.as_ref().map(|t| t.customer_ref.clone()),
                provisional: target.as_ref().is_some_and(|t| t.provisional),
                merged_from,
            },
            touched,
        ))
    }
}

/// What an end changed, for the read caches.
struct Touched {
    customers: Vec<i64>,
    identities: Vec<IdentityKey>,
}

pub(super) async fn create_customer(
    c: &impl ConnectionTrait,
    tenant: TenantId,
    customer_ref: &CustomerRef,
    provisional: bool,
    now: DateTime<Utc>,
) -> Result<customer::Model, EngineError> {
    Ok(customer::ActiveModel {
        tenant_id: Set(tenant.0),
        customer_ref: Set(customer_ref.as_str().to_owned()),
        provisional: Set(provisional),
        call_count: Set(0),
        first_seen_at: Set(None),
        last_seen_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(c)
    .await?)
}

/// Counts one more call on an identity of a customer, creating the link when new.
async fn link_identity(
    c: &impl ConnectionTrait,
    tenant: TenantId,
    customer_id: i64,
    kind: &str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    let found = identity::Entity::find()
        .filter(identity::Column::CustomerId.eq(customer_id))
        .filter(identity::Column::Kind.eq(kind))
        .filter(identity::Column::Value.eq(value))
        .one(c)
        .await?;
    match found {
        Some(m) => {
            let count = m.call_count + 1;
            let mut m: identity::ActiveModel = m.into();
            m.call_count = Set(count);
            m.last_seen_at = Set(now);
            m.update(c).await?;
        }
        None => {
            identity::ActiveModel {
                tenant_id: Set(tenant.0),
                customer_id: Set(customer_id),
                kind: Set(kind.to_owned()),
                value: Set(value.to_owned()),
                call_count: Set(1),
                first_seen_at: Set(now),
                last_seen_at: Set(now),
                ..Default::default()
            }
            .insert(c)
            .await?;
        }
    }
    Ok(())
}

/// Saves (or with `None`, removes) one variable of a customer.
async fn set_variable(
    c: &impl ConnectionTrait,
    tenant: TenantId,
    customer_id: i64,
    name: &str,
    value: Option<&Value>,
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    let found = variable::Entity::find()
        .filter(variable::Column::CustomerId.eq(customer_id))
        .filter(variable::Column::Name.eq(name))
        .one(c)
        .await?;
    match (found, value) {
        (Some(m), Some(v)) => {
            let mut m: variable::ActiveModel = m.into();
            m.value = Set(serde_json::to_string(v)?);
            m.updated_at = Set(now);
            m.update(c).await?;
        }
        (Some(m), None) => {
            variable::Entity::delete_by_id(m.id).exec(c).await?;
        }
        (None, Some(v)) => {
            variable::ActiveModel {
                tenant_id: Set(tenant.0),
                customer_id: Set(customer_id),
                name: Set(name.to_owned()),
                value: Set(serde_json::to_string(v)?),
                updated_at: Set(now),
                ..Default::default()
            }
            .insert(c)
            .await?;
        }
        (None, None) => {}
    }
    Ok(())
}

/// Opens, re-opens or resolves an intent of a customer.
pub(super) async fn set_intent(
    c: &impl ConnectionTrait,
    tenant: TenantId,
    customer_id: i64,
    name: &str,
    status: &str,
    call_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<intent::Model, EngineError> {
    let resolved_at = (status == IntentStatus::Resolved.as_str()).then_some(now);
    let found = intent::Entity::find()
        .filter(intent::Column::CustomerId.eq(customer_id))
        .filter(intent::Column::Intent.eq(name))
        .one(c)
        .await?;
    Ok(match found {
        Some(m) => {
            let reopened = m.status != status && status == IntentStatus::Open.as_str();
            let opened_at = if reopened { now } else { m.opened_at };
            let mut m: intent::ActiveModel = m.into();
            m.status = Set(status.to_owned());
            m.opened_at = Set(opened_at);
            m.updated_at = Set(now);
            m.resolved_at = Set(resolved_at);
            if let Some(id) = call_id {
                m.last_call_id = Set(Some(id.to_owned()));
            }
            m.update(c).await?
        }
        None => {
            intent::ActiveModel {
                tenant_id: Set(tenant.0),
                customer_id: Set(customer_id),
                intent: Set(name.to_owned()),
                status: Set(status.to_owned()),
                opened_at: Set(now),
                updated_at: Set(now),
                resolved_at: Set(resolved_at),
                last_call_id: Set(call_id.map(str::to_owned)),
                ..Default::default()
            }
            .insert(c)
            .await?
        }
    })
}

/// Moves everything of `from` (a provisional customer) into `into` and deletes `from`:
/// identities (counts added), calls, variables and intents (the most recently updated wins).
async fn merge_customers(
    tx: &DatabaseTransaction,
    from: &customer::Model,
    into: &customer::Model,
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    let theirs = identity::Entity::find()
        .filter(identity::Column::CustomerId.eq(into.id))
        .all(tx)
        .await?;
    for mine in identity::Entity::find()
        .filter(identity::Column::CustomerId.eq(from.id))
        .all(tx)
        .await?
    {
        match theirs
            .iter()
            .find(|t| t.kind == mine.kind && t.value == mine.value)
        {
            Some(t) => {
                let mut update: identity::ActiveModel = t.clone().into();
                update.call_count = Set(t.call_count + mine.call_count);
                update.first_seen_at = Set(Ord::min(t.first_seen_at, mine.first_seen_at));
                update.last_seen_at = Set(Ord::max(t.last_seen_at, mine.last_seen_at));
                update.update(tx).await?;
                identity::Entity::delete_by_id(mine.id).exec(tx).await?;
            }
            None => {
                let mut m: identity::ActiveModel = mine.into();
                m.customer_id = Set(into.id);
                m.update(tx).await?;
            }
        }
    }

    let theirs = variable::Entity::find()
        .filter(variable::Column::CustomerId.eq(into.id))
        .all(tx)
        .await?;
    for mine in variable::Entity::find()
        .filter(variable::Column::CustomerId.eq(from.id))
        .all(tx)
        .await?
    {
        match theirs.iter().find(|t| t.name == mine.name) {
            Some(t) => {
                if mine.updated_at > t.updated_at {
                    let mut t: variable::ActiveModel = t.clone().into();
                    t.value = Set(mine.value.clone());
                    t.updated_at = Set(mine.updated_at);
                    t.update(tx).await?;
                }
                variable::Entity::delete_by_id(mine.id).exec(tx).await?;
            }
            None => {
                let mut m: variable::ActiveModel = mine.into();
                m.customer_id = Set(into.id);
                m.update(tx).await?;
            }
        }
    }

    let theirs = intent::Entity::find()
        .filter(intent::Column::CustomerId.eq(into.id))
        .all(tx)
        .await?;
    for mine in intent::Entity::find()
        .filter(intent::Column::CustomerId.eq(from.id))
        .all(tx)
        .await?
    {
        match theirs.iter().find(|t| t.intent == mine.intent) {
            Some(t) => {
                if mine.updated_at > t.updated_at {
                    let mut t: intent::ActiveModel = t.clone().into();
                    t.status = Set(mine.status.clone());
                    t.opened_at = Set(mine.opened_at);
                    t.updated_at = Set(mine.updated_at);
                    t.resolved_at = Set(mine.resolved_at);
                    t.last_call_id = Set(mine.last_call_id.clone());
                    t.update(tx).await?;
                }
                intent::Entity::delete_by_id(mine.id).exec(tx).await?;
            }
            None => {
                let mut m: intent::ActiveModel = mine.into();
                m.customer_id = Set(into.id);
                m.update(tx).await?;
            }
        }
    }

    call::Entity::update_many()
        .col_expr(call::Column::CustomerId, Expr::value(into.id))
        .filter(call::Column::CustomerId.eq(from.id))
        .exec(tx)
        .await?;
    call::Entity::update_many()
        .col_expr(call::Column::MatchedCustomerId, Expr::value(into.id))
        .filter(call::Column::MatchedCustomerId.eq(from.id))
        .exec(tx)
        .await?;

    let mut merged: customer::ActiveModel = into.clone().into();
    merged.call_count = Set(into.call_count + from.call_count);
    merged.first_seen_at = Set(match (into.first_seen_at, from.first_seen_at) {
        (Some(a), Some(b)) => Some(Ord::min(a, b)),
        (a, b) => a.or(b),
    });
    merged.last_seen_at = Set(Ord::max(into.last_seen_at, from.last_seen_at));
    merged.updated_at = Set(now);
    merged.update(tx).await?;
    customer::Entity::delete_by_id(from.id).exec(tx).await?;
    Ok(())
}
