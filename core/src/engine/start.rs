//! Call start: resolve the caller from the hints, answer with the customer's context, and
//! record the call so that a retried start replays the same answer instead of writing again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::cache::CustomerAnswer;
use super::context;
use super::end::Touched;
use super::sql::Conn;
use super::store::{
    Bodies, customers_by_id, evidence, find_call, identity_keys, insert_calls, load_links,
};
use super::{Candidate, Engine, ReadConn, StartAnswer, TenantId};
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

#[derive(Clone, Serialize, Deserialize)]
struct StoredCandidate {
    customer: i64,
    confidence: f64,
    /// Absent in matches stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    calls: u64,
}

/// Whether a database error is a foreign-key violation. The call writer hands its errors
/// back as text (one batch answers many starts), so the text is read too.
fn is_foreign_key_violation(e: &sea_orm::DbErr) -> bool {
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
    ) || {
        let text = e.to_string();
        text.contains("violates foreign key constraint")
            || text.contains("FOREIGN KEY constraint failed")
    }
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

/// What recording a start's call row found.
pub(super) enum Recorded {
    /// This start is the call's first: its match is stored.
    New,
    /// This start came after the call's end, which linked the call to this customer: the
    /// match is stored and the customer's context document rewritten (the call's start time
    /// is part of it), so their cached context is out of date.
    AfterEnd(i64),
    /// A start of this call was recorded before (a retry): its match is replayed.
    Earlier(Box<call::Model>),
}

/// Inserts a start's call row unless its call id exists (`false`): then [`after_conflict`]
/// tells a retried start from a start that came after its call's end.
pub(super) async fn insert_start(c: Conn<'_>, row: &call::Model) -> Result<bool, EngineError> {
    Ok(!insert_calls(c, &[row]).await?.is_empty())
}

/// A start whose call id exists: replay a retried start, or add the match to an ended call
/// (and rewrite the document of the customer the end linked it to). Several statements: the
/// caller runs it atomically.
pub(super) async fn after_conflict(
    c: Conn<'_>,
    row: &call::Model,
) -> Result<Recorded, EngineError> {
    let existing = find_call(c, TenantId(row.tenant_id), &row.call_id)
        .await?
        .ok_or_else(|| EngineError::Corrupt("call vanished during start".into()))?;
    if existing.started_at.is_some() {
        return Ok(Recorded::Earlier(Box::new(existing)));
    }
    c.execute(
        "UPDATE calls SET matched_customer_id = $1, confidence = $2, band = $3, \
         recommended_action = $4, signals = $5, candidates = $6, started_at = $7, updated_at = $8 \
         WHERE id = $9 AND started_at IS NULL",
        &[
            row.matched_customer_id.into(),
            row.confidence.into(),
            (&row.band).into(),
            (&row.recommended_action).into(),
            (&row.signals).into(),
            (&row.candidates).into(),
            row.started_at.into(),
            row.updated_at.into(),
            existing.id.into(),
        ],
    )
    .await?;
    Ok(match existing.customer_id {
        Some(customer) => {
            context::refresh(c, TenantId(row.tenant_id), &[customer]).await?;
            Recorded::AfterEnd(customer)
        }
        None => Recorded::New,
    })
}

impl Engine {
    /// Answers who is calling (with the context in its JSON form: [`StartAnswer::decode`]
    /// decodes it).
    ///
    /// # Errors
    /// Only on database failure; an unknown caller is a normal low-confidence outcome.
    pub async fn start_call(
        &self,
        tenant: TenantId,
        cmd: StartCall,
    ) -> Result<StartAnswer, EngineError> {
        // A match read from a cache entry that another process's erasure made stale names a
        // customer that no longer exists: the call row refuses it (foreign key). The caches
        // forget everything and the start runs once more, from the database.
        let answer = match self.start_call_once(tenant, &cmd).await {
            Err(EngineError::Database(e))
                if self.lite.is_none() && is_foreign_key_violation(&e) =>
            {
                self.caches.written_widely();
                self.start_call_once(tenant, &cmd).await
            }
            other => other,
        }?;
        // Below high confidence the tenant's sensitive variables are left out.
        let answer = self.without_sensitive(tenant, answer).await?;
        // How many callers were recognised: what a contact center buys this for.
        metrics::counter!("sticky_call_starts_total", "band" => answer.band.as_str()).increment(1);
        self.as_of_now(answer)
    }

    async fn start_call_once(
        &self,
        tenant: TenantId,
        cmd: &StartCall,
    ) -> Result<StartAnswer, EngineError> {
        // No look-up of the call id in `calls` first: a retried start is found by the insert's
        // conflict (on a SQLite file, by the journal or a look-up in `Lite::record_start`).
        let ani = cmd.hints.ani.as_deref().map(|a| Ani::parse(a, self.region));
        let keys = identity_keys(ani.as_ref(), &cmd.hints.external_ids);
        // Taken before the start's first read (see `Lite::record_start`).
        let ends = self.open_ends_seen();
        // A retry of a call still open replays its journal record. Looked up before the
        // start's read transaction begins: a call that leaves the journal (moved into `calls`)
        // leaves it after its row is committed, so if it is not found here, the snapshot sees
        // its row, and the retry is recognised there.
        if let Some(lite) = &self.lite
            && let Some(earlier) = lite.open_call(tenant, cmd.call_id.as_str())?
        {
            return self.replay_start(tenant, earlier).await;
        }
        let epoch = self.caches.epoch();
        let reads = self.start_reads()?;
        let (mut links, missing) = self.caches.links(tenant, &keys).await;
        // On PostgreSQL the linked customers' documents come with their links, in case the
        // customer's answer is not cached either: one round trip, shared with the other starts
        // waiting (`batch::LinkReader`).
        let mut bodies = Bodies::new();
        if !missing.is_empty() {
            let read = match &self.link_reader {
                Some(reader) => {
                    let (read, read_bodies) = reader.read(tenant, missing).await?;
                    bodies = read_bodies;
                    read
                }
                None => load_links(reads.conn(), tenant, &missing).await?,
            };
            self.caches.fill_links(tenant, epoch, &read).await;
            links.extend(read);
        }
        let now = crate::now();
        let resolution = scoring::resolve(
            &scoring::Evidence {
                attestation: cmd.hints.attestation,
                ..evidence(ani.as_ref(), &cmd.hints.external_ids, &links)
            },
            now,
        );
        let found = Match::from(resolution);
        let row = call::Model {
            id: 0,
            tenant_id: tenant.0,
            call_id: cmd.call_id.as_str().to_owned(),
            platform: cmd.platform.as_str().to_owned(),
            ani: ani
                .as_ref()
                .and_then(Ani::number)
                .map(|n| n.as_str().to_owned()),
            ani_withheld: matches!(ani, Some(Ani::Withheld(_))),
            dnis: cmd.hints.dnis.as_deref().and_then(|d| self.dialled(d)),
            external_ids: serde_json::to_string(
                &cmd.hints
                    .external_ids
                    .iter()
                    .map(|e| (e.name(), e.value()))
                    .collect::<BTreeMap<_, _>>(),
            )?,
            matched_customer_id: found.customer,
            confidence: Some(found.confidence),
            band: Some(found.band.as_str().to_owned()),
            recommended_action: Some(found.band.action().to_owned()),
            signals: serde_json::to_string(&stored_signals(&found.signals))?,
            candidates: serde_json::to_string(&found.candidates)?,
            customer_id: None,
            status: call::STATUS_IN_PROGRESS.to_owned(),
            intent: None,
            intent_status: None,
            summary: None,
            variables: "{}".to_owned(),
            started_at: Some(now),
            ended_at: None,
            created_at: now,
            updated_at: now,
        };

        // The context is read while the call is recorded (through the pool, the writer
        // commits its row meanwhile): it does not depend on this start's row, except after the
        // call's end, when recording the start rewrote the customer's document, or for a retry.
        let call_id = cmd.call_id.as_str().to_owned();
        let (recorded, answer) = tokio::join!(
            self.record_start(tenant, row, &reads, ends),
            self.outcome(
                tenant,
                call_id.clone(),
                found.clone(),
                &reads,
                epoch,
                &mut bodies
            )
        );
        drop(reads);
        // After the call's end, or for a retry, the context is read again (the end's writes
        // may be newer than what this start read).
        match recorded? {
            Recorded::New => answer,
            Recorded::AfterEnd(_) => {
                let epoch = self.caches.epoch();
                let reads = self.reader()?;
                self.outcome(tenant, call_id, found, &reads, epoch, &mut Bodies::new())
                    .await
            }
            Recorded::Earlier(existing) => self.replay_start(tenant, *existing).await,
        }
    }

    /// The connection for one start's reads. On a SQLite file they share one read transaction
    /// (one snapshot): each read transaction takes and releases a read lock of the log (a
    /// `fcntl` under a mutex of the process, which the cores contend on), and a start reads
    /// up to three times (its identities, whether its call is stored, the customer's
    /// context). It ends when the connection goes back to the pool.
    fn start_reads(&self) -> Result<ReadConn<'_>, EngineError> {
        let reads = self.reader()?;
        if let ReadConn::Lite(reader) = &reads {
            reader.begin()?;
        }
        Ok(reads)
    }

    /// See [`super::lite::Lite::record_start`]; 0 off a SQLite file.
    fn open_ends_seen(&self) -> u64 {
        self.lite.as_ref().map_or(0, super::lite::Lite::ends_seen)
    }

    /// Records a start, durably before this returns: on a SQLite file in the open calls'
    /// journal (see `engine/open_calls.rs`), else its call row, committed.
    async fn record_start(
        &self,
        tenant: TenantId,
        row: call::Model,
        reads: &ReadConn<'_>,
        ends: u64,
    ) -> Result<Recorded, EngineError> {
        match &self.lite {
            Some(lite) => lite.record_start(row, reads.conn(), ends).await,
            None => {
                if self.call_writer.insert(&row).await? {
                    return Ok(Recorded::New);
                }
                let (_writer, tx) = self.begin_write(tenant).await?;
                let recorded = after_conflict(Conn::Tx(&tx), &row).await?;
                let touched = match &recorded {
                    Recorded::AfterEnd(customer) => {
                        Touched::some(tenant, vec![*customer], Vec::new())
                    }
                    _ => Touched::some(tenant, Vec::new(), Vec::new()),
                };
                self.commit(tx, touched).await?;
                Ok(recorded)
            }
        }
    }

    /// A customer's reference and context: from the cache, else their stored document (read
    /// already, in `bodies`, or now: one row), else the tables (and the document is filled
    /// for next time). A read connection is held only while reading: never across a cache
    /// operation, which may wait.
    async fn cached_customer(
        &self,
        tenant: TenantId,
        id: i64,
        reads: &ReadConn<'_>,
        epoch: u64,
        bodies: &mut Bodies,
    ) -> Result<Option<Arc<CustomerAnswer>>, EngineError> {
        if let Some(hit) = self.caches.customer(tenant, id).await {
            return Ok(Some(hit));
        }
        let (value, built) = {
            let c = reads.conn();
            let stored = match bodies.remove(&id) {
                Some(body) => Some(context::answer_of(tenant, id, &body)?),
                None => context::read_answer(c, tenant, id).await?,
            };
            match stored {
                Some(v) => (v, None),
                None => match context::build(c, tenant, id).await? {
                    Some(v) => (CustomerAnswer::of(&v)?, Some(v)),
                    None => return Ok(None),
                },
            }
        };
        if let Some(built) = built {
            self.fill_context(Arc::new(built));
        }
        let value = Arc::new(value);
        self.caches.fill_customer(epoch, value.clone()).await;
        Ok(Some(value))
    }

    /// Builds the answer: references, and the context when the band is not low.
    async fn outcome(
        &self,
        tenant: TenantId,
        call_id: String,
        found: Match,
        reads: &ReadConn<'_>,
        epoch: u64,
        bodies: &mut Bodies,
    ) -> Result<StartAnswer, EngineError> {
        let best = match found.customer {
            Some(id) if found.band != Band::Low => {
                self.cached_customer(tenant, id, reads, epoch, bodies)
                    .await?
            }
            _ => None,
        };
        let candidates = if found.candidates.is_empty() {
            Vec::new()
        } else {
            let refs: HashMap<i64, customer::Model> = customers_by_id(
                reads.conn(),
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
                        last_seen_at: c.last_seen_at,
                        calls: c.calls,
                    })
                })
                .collect()
        };
        Ok(StartAnswer {
            call_id,
            customer_ref: best.as_ref().map(|b| b.customer_ref.clone()),
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
    ) -> Result<StartAnswer, EngineError> {
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
        let epoch = self.caches.epoch();
        let reads = self.reader()?;
        self.outcome(
            tenant,
            row.call_id,
            found,
            &reads,
            epoch,
            &mut Bodies::new(),
        )
        .await
    }
}

/// The part of a resolution that is stored with the call and replayed.
#[derive(Clone)]
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
                    last_seen_at: c.last_seen_at,
                    calls: c.calls,
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
