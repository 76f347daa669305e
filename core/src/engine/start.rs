//! Call start: resolve the caller from the hints, answer with the customer's context, and
//! record the call so that a retried start replays the same answer instead of writing again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde::{Deserialize, Serialize};

use super::cache::CachedCustomer;
use super::store::{customers_by_id, evidence, find_call, identity_keys, load_context, load_links};
use super::{Candidate, Engine, StartOutcome, TenantId};
use crate::commands::StartCall;
use crate::domain::{Ani, DefaultRegion};
use crate::entities::{call, customer};
use crate::error::EngineError;
use crate::scoring::{self, Band, Resolution, Signal, SignalKind};

#[derive(Serialize, Deserialize)]
struct StoredSignal {
    signal: String,
    contribution: f64,
    detail: String,
}

#[derive(Serialize, Deserialize)]
struct StoredCandidate {
    customer: i64,
    confidence: f64,
}

/// The dialled number as stored: E.164 when it parses, else the trimmed text.
pub(super) fn normalise_dnis(raw: &str, region: DefaultRegion) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(match Ani::parse(trimmed, region) {
        Ani::Number(n) => n.as_str().to_owned(),
        Ani::Withheld(_) => trimmed.to_owned(),
    })
}

impl Engine {
    /// Answers who is calling.
    ///
    /// # Errors
    /// Only on database failure; an unknown caller is a normal low-confidence outcome.
    pub async fn start_call(
        &self,
        tenant: TenantId,
        cmd: StartCall,
    ) -> Result<StartOutcome, EngineError> {
        // No look-up of the call id first: a retried start is found by the insert's conflict.
        let ani = cmd.hints.ani.as_deref().map(|a| Ani::parse(a, self.region));
        let keys = identity_keys(ani.as_ref(), &cmd.hints.external_ids);
        let (mut links, missing) = self.caches.links(tenant, &keys).await;
        if !missing.is_empty() {
            let epoch = self.caches.epoch();
            let read = load_links(&self.db, tenant, &missing).await?;
            self.caches.fill_links(tenant, epoch, &read).await;
            links.extend(read);
        }
        let now = crate::now();
        let resolution = scoring::resolve(
            &evidence(ani.as_ref(), &cmd.hints.external_ids, &links),
            now,
        );
        let found = Match::from(resolution);
        let row = call::ActiveModel {
            tenant_id: Set(tenant.0),
            call_id: Set(cmd.call_id.as_str().to_owned()),
            platform: Set(cmd.platform.as_str().to_owned()),
            ani: Set(ani
                .as_ref()
                .and_then(Ani::number)
                .map(|n| n.as_str().to_owned())),
            ani_withheld: Set(matches!(ani, Some(Ani::Withheld(_)))),
            dnis: Set(cmd
                .hints
                .dnis
                .as_deref()
                .and_then(|d| normalise_dnis(d, self.region))),
            external_ids: Set(serde_json::to_string(
                &cmd.hints
                    .external_ids
                    .iter()
                    .map(|e| (e.name(), e.value()))
                    .collect::<BTreeMap<_, _>>(),
            )?),
            matched_customer_id: Set(found.customer),
            confidence: Set(Some(found.confidence)),
            band: Set(Some(found.band.as_str().to_owned())),
            recommended_action: Set(Some(found.band.action().to_owned())),
            signals: Set(serde_json::to_string(&stored_signals(&found.signals))?),
            candidates: Set(serde_json::to_string(&found.candidates)?),
            customer_id: Set(None),
            status: Set(call::STATUS_IN_PROGRESS.to_owned()),
            intent: Set(None),
            intent_status: Set(None),
            summary: Set(None),
            variables: Set("{}".to_owned()),
            started_at: Set(Some(now)),
            ended_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        };

        let inserted = self
            .call_writer
            .insert(tenant.0, cmd.call_id.as_str(), row.clone())
            .await?;
        if !inserted {
            // The call id exists: a retried start (answered from what the first recorded), or
            // the call's end arrived first (the start's match is added to it).
            let writer = self.writes.lock().await;
            let existing = find_call(&self.db, tenant, &cmd.call_id)
                .await?
                .ok_or_else(|| EngineError::Corrupt("call vanished during start".into()))?;
            if existing.started_at.is_some() {
                drop(writer);
                return self.replay_start(tenant, existing).await;
            }
            let mut update: call::ActiveModel = existing.into();
            update.matched_customer_id = row.matched_customer_id;
            update.confidence = row.confidence;
            update.band = row.band;
            update.recommended_action = row.recommended_action;
            update.signals = row.signals;
            update.candidates = row.candidates;
            update.started_at = row.started_at;
            update.updated_at = Set(now);
            update.update(&self.db).await?;
        }

        self.outcome(tenant, cmd.call_id.as_str().to_owned(), found)
            .await
    }

    /// A customer's row and context, from the cache or the database.
    async fn cached_customer(&self, id: i64) -> Result<Option<Arc<CachedCustomer>>, EngineError> {
        if let Some(hit) = self.caches.customer(id).await {
            return Ok(Some(hit));
        }
        let epoch = self.caches.epoch();
        let Some(model) = customer::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(None);
        };
        let context = load_context(&self.db, &model).await?;
        let value = Arc::new(CachedCustomer { model, context });
        self.caches.fill_customer(epoch, value.clone()).await;
        Ok(Some(value))
    }

    /// Builds the answer: references, and the context when the band is not low.
    async fn outcome(
        &self,
        tenant: TenantId,
        call_id: String,
        found: Match,
    ) -> Result<StartOutcome, EngineError> {
        let best = match found.customer {
            Some(id) if found.band != Band::Low => self.cached_customer(id).await?,
            _ => None,
        };
        let candidates = if found.candidates.is_empty() {
            Vec::new()
        } else {
            let refs: HashMap<i64, customer::Model> = customers_by_id(
                &self.db,
                tenant,
                found.candidates.iter().map(|c| c.customer),
            )
            .await?;
            found
                .candidates
                .iter()
                .filter_map(|c| {
                    refs.get(&c.customer).map(|m| Candidate {
                        customer_ref: m.customer_ref.clone(),
                        confidence: c.confidence,
                    })
                })
                .collect()
        };
        Ok(StartOutcome {
            call_id,
            customer_ref: best.as_ref().map(|b| b.model.customer_ref.clone()),
            confidence: found.confidence,
            band: found.band,
            signals: found.signals,
            candidates,
            context: best.map(|b| b.context.clone()),
        })
    }

    /// A retried start: the match recorded at the first start, with the current context.
    async fn replay_start(
        &self,
        tenant: TenantId,
        row: call::Model,
    ) -> Result<StartOutcome, EngineError> {
        let stored: Vec<StoredSignal> = serde_json::from_str(&row.signals)?;
        let candidates: Vec<StoredCandidate> = serde_json::from_str(&row.candidates)?;
        let confidence = row.confidence.unwrap_or(0.0);
        let found = Match {
            customer: row.matched_customer_id,
            confidence,
            band: Band::of(confidence),
            signals: stored
                .into_iter()
                .filter_map(|s| {
                    Some(Signal {
                        kind: SignalKind::from_name(&s.signal)?,
                        contribution: s.contribution,
                        detail: s.detail,
                    })
                })
                .collect(),
            candidates,
        };
        self.outcome(tenant, row.call_id, found).await
    }
}

/// The part of a resolution that is stored with the call and replayed.
struct Match {
    customer: Option<i64>,
    confidence: f64,
    band: Band,
    signals: Vec<Signal>,
    candidates: Vec<StoredCandidate>,
}

impl From<Resolution> for Match {
    fn from(r: Resolution) -> Self {
        Self {
            customer: r.best.map(|b| b.customer),
            confidence: r.confidence,
            band: r.band,
            signals: r.signals,
            candidates: r
                .candidates
                .into_iter()
                .map(|c| StoredCandidate {
                    customer: c.customer,
                    confidence: c.confidence,
                })
                .collect(),
        }
    }
}

fn stored_signals(signals: &[Signal]) -> Vec<StoredSignal> {
    signals
        .iter()
        .map(|s| StoredSignal {
            signal: s.kind.as_str().to_owned(),
            contribution: s.contribution,
            detail: s.detail.clone(),
        })
        .collect()
}
