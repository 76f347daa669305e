//! Call end: link the call's identities to a customer (named, resolved, or a new provisional
//! one), merge provisional customers into named ones, and save variables, intent and summary.
//! Everything happens in one transaction: an end is applied whole or not at all. On SQLite it
//! runs on the one writer; on PostgreSQL beside the tenant's other ends, locking what it
//! touches (`locks.rs`), or under the tenant's lock when it merges or moves a call.
//!
//! The statements are upserts keyed by the unique indexes, so a typical end (a known customer,
//! two identities, a few variables, an intent) is about ten statements whatever the history.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sea_orm::{DbBackend, TransactionTrait};
use serde_json::Value;

use super::cache::Caches;
use super::context;
use super::locks::{self, LockKey, Locking};
use super::sql::{Arg, Conn, Returning, Row, Write};
use super::store::{
    CUSTOMER_COLUMNS, IdentityKey, customer_from_row, customers_by_id, ended_call, find_call,
    find_customer, find_customer_by_ref, load_evidence, lock_customer_by_ref, parse_variables,
};
use super::{EndOutcome, Engine, RecentCall, TenantId};
use crate::commands::{EndCall, VariableChanges};
use crate::domain::{Ani, CustomerRef, ExternalId, IntentStatus};
use crate::entities::{call, customer, identity, intent};
use crate::error::{EngineError, FieldError};
use crate::scoring::{self, Band};

impl Engine {
    /// Remembers what happened on a call. Idempotent on the call id: a repeated end merges
    /// into what earlier ends saved.
    ///
    /// # Errors
    /// [`EngineError::Conflict`] (`no_intent`) for an `intent_status` with no intent to apply it
    /// to; database failures otherwise.
    pub async fn end_call(
        &self,
        tenant: TenantId,
        cmd: EndCall,
    ) -> Result<EndOutcome, EngineError> {
        if cmd.intent_due_at.is_some() && cmd.intent.is_none() {
            return Err(FieldError::new(
                "intent_due_at",
                "`intent_due_at` needs `intent`: a callback is due on an intent",
            )
            .into());
        }
        let numbers = EndNumbers {
            ani: cmd.hints.ani.as_deref().map(|a| Ani::parse(a, self.region)),
            dnis: cmd.hints.dnis.as_deref().and_then(|d| self.dialled(d)),
        };
        let outcome = if let Some(lite) = &self.lite {
            // The writer thread commits it (with others) and updates the caches first.
            lite.end_call(tenant, cmd, numbers).await?
        } else {
            match self.end_beside_others(tenant, &cmd, &numbers).await? {
                Some(outcome) => outcome,
                None => {
                    let (_writer, tx) = self.begin_write(tenant).await?;
                    let (outcome, touched) = end_call_in(
                        Conn::Tx(&tx),
                        &numbers,
                        tenant,
                        &cmd,
                        Locking::Exclusive,
                        self.caches.origin(),
                    )
                    .await?
                    .ok_or_else(exclusive_asked)?;
                    self.commit(tx, touched).await?;
                    outcome
                }
            }
        };
        metrics::counter!("sticky_call_ends_total").increment(1);
        Ok(outcome)
    }
}

impl Engine {
    /// On PostgreSQL, an end beside the tenant's other ends: the tenant's lock shared, then
    /// what the end touches (see `locks.rs`). `None` when it needs the tenant to itself (a merge,
    /// a call moving between customers), or elsewhere than on PostgreSQL.
    async fn end_beside_others(
        &self,
        tenant: TenantId,
        cmd: &EndCall,
        numbers: &EndNumbers,
    ) -> Result<Option<EndOutcome>, EngineError> {
        if self.db.get_database_backend() != DbBackend::Postgres {
            return Ok(None);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tx = self.db.begin().await?;
            let ended = async {
                let mut held = named_locks(tenant, cmd, numbers);
                locks::begin_end(Conn::Tx(&tx), tenant, cmd.call_id.as_str(), &mut held).await?;
                end_call_in(
                    Conn::Tx(&tx),
                    numbers,
                    tenant,
                    cmd,
                    Locking::Fine { held: &held },
                    self.caches.origin(),
                )
                .await
            }
            .await;
            match ended {
                Ok(Some((outcome, touched))) => {
                    self.commit(tx, touched).await?;
                    return Ok(Some(outcome));
                }
                Ok(None) => {
                    tx.rollback().await?;
                    return Ok(None);
                }
                Err(e) if attempt < 3 && locks::retryable(&e) => {
                    metrics::counter!("sticky_end_retries_total").increment(1);
                    tx.rollback().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The locks of the identities and reference an end's request names (see `locks.rs`).
fn named_locks(tenant: TenantId, cmd: &EndCall, numbers: &EndNumbers) -> Vec<LockKey> {
    numbers
        .ani
        .as_ref()
        .and_then(Ani::number)
        .map(|n| LockKey::identity(tenant, identity::KIND_ANI, n.as_str()))
        .into_iter()
        .chain(
            cmd.hints
                .external_ids
                .iter()
                .map(|e| LockKey::identity(tenant, identity::KIND_EXTERNAL, &e.pair())),
        )
        .chain(
            cmd.customer_ref
                .as_ref()
                .map(|r| LockKey::customer_ref(tenant, r.as_str())),
        )
        .collect()
}

/// An end run under an exclusive lock asked for it again: a bug.
fn exclusive_asked() -> EngineError {
    EngineError::Corrupt("an end holding its tenant's lock asked for it".into())
}

/// An end's number and dialled number, parsed before the write: parsing a number costs more
/// than most of an end's statements, and on SQLite all ends share one writer thread.
pub(super) struct EndNumbers {
    ani: Option<Ani>,
    dnis: Option<String>,
}

/// What a write changed, for the read caches.
pub(super) struct Touched {
    customers: Vec<i64>,
    identities: Vec<IdentityKey>,
    tenant: TenantId,
    merged: bool,
    /// A merge: the customer merged and the one it was merged into.
    merged_ids: Option<(i64, i64)>,
    /// Other processes were notified in the write's transaction already.
    notified: bool,
}

impl Touched {
    /// These customers' contexts and these identities' links.
    pub(super) fn some(
        tenant: TenantId,
        customers: Vec<i64>,
        identities: Vec<IdentityKey>,
    ) -> Self {
        Self {
            customers,
            identities,
            tenant,
            merged: false,
            merged_ids: None,
            notified: false,
        }
    }

    /// Anything (a merge, an erasure, an import): the caches forget everything.
    pub(super) fn widely(tenant: TenantId) -> Self {
        Self {
            customers: Vec::new(),
            identities: Vec::new(),
            tenant,
            merged: true,
            merged_ids: None,
            notified: false,
        }
    }

    /// The customer an end merged, and the one it merged them into.
    pub(super) fn merged_ids(&self) -> Option<(i64, i64)> {
        self.merged_ids
    }

    /// What other processes must forget (see `crate::coherence`); `None` when nothing, or
    /// when they were told in the write's transaction.
    pub(super) fn change(&self, origin: &str) -> Option<crate::coherence::Change> {
        use crate::coherence::Change;
        if self.notified {
            return None;
        }
        let origin = origin.to_owned();
        if self.merged {
            return Some(Change::Tenant {
                origin,
                tenant: self.tenant.0,
            });
        }
        if self.customers.is_empty() && self.identities.is_empty() {
            return None;
        }
        Some(Change::Customers {
            origin,
            tenant: self.tenant.0,
            customers: self.customers.clone(),
            identities: self
                .identities
                .iter()
                .map(|k| {
                    super::cache::digest_hex(&super::cache::identity_digest(self.tenant, k.0, &k.1))
                })
                .collect(),
        })
    }

    /// After the commit: what the end changed is read again from the database.
    pub(super) async fn forget(&self, caches: &Caches) {
        if self.merged {
            caches.written_widely();
        } else {
            caches
                .written(self.tenant, &self.customers, &self.identities)
                .await;
        }
    }
}

/// Applies an end inside the caller's write transaction.
#[allow(clippy::too_many_lines)]
///
/// With [`Locking::Fine`] it locks what it touches as it goes, and answers `None`, having
/// written nothing, when it would touch two customers: the caller runs it again with the
/// tenant's lock held exclusively.
pub(super) async fn end_call_in(
    tx: Conn<'_>,
    numbers: &EndNumbers,
    tenant: TenantId,
    cmd: &EndCall,
    locking: Locking<'_>,
    origin: &str,
) -> Result<Option<(EndOutcome, Touched)>, EngineError> {
    let (fine, held) = match locking {
        Locking::Exclusive => (false, &[][..]),
        Locking::Fine { held } => (true, held),
    };
    let now = crate::now();
    let existing = find_call(tx, tenant, cmd.call_id.as_str()).await?;
    // What an end saves about the customer (variables, an intent's status) takes the time of
    // its call, not of its arrival: a late or retried end of an earlier call never overwrites
    // what a later call saved. The call's start, else (an end that came first) now.
    let call_time = existing.as_ref().and_then(|c| c.started_at).unwrap_or(now);
    // Whether everything this end saved about the customer was applied (nothing newer kept).
    let mut in_order = true;

    // Intent: named at this end, or the call's own when only a status is given. Checked before
    // anything is written: a rejected end changes nothing.
    let intent_name = cmd
        .intent
        .as_ref()
        .map(|i| i.as_str().to_owned())
        .or_else(|| existing.as_ref().and_then(|c| c.intent.clone()));
    if cmd.intent_status.is_some() && intent_name.is_none() {
        // A well-formed request that this call's state cannot take: a conflict, not bad input.
        return Err(EngineError::Conflict {
            code: "no_intent",
            message: "`intent_status` needs an intent: give `intent`, or end a call that \
                      already has one"
                .to_owned(),
        });
    }

    // The call's hints: what its start recorded, completed by what the end gives.
    let stored_number = existing.as_ref().and_then(|c| c.ani.clone());
    let end_ani = numbers.ani.as_ref();
    let number: Option<String> = stored_number
        .clone()
        .or_else(|| end_ani.and_then(Ani::number).map(|n| n.as_str().to_owned()));
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

    if fine {
        let mut keys: Vec<LockKey> = identities
            .iter()
            .map(|(kind, value)| LockKey::identity(tenant, kind, value))
            .collect();
        keys.extend(
            cmd.customer_ref
                .as_ref()
                .map(|r| LockKey::customer_ref(tenant, r.as_str())),
        );
        locks::lock(tx, keys, held).await?;
    }

    // Who the call belongs to.
    let mut linked_before = existing.as_ref().and_then(|c| c.customer_id);
    let mut merged_from = None;
    let mut merged_ids = None;
    // The customer row this end has locked (PostgreSQL, fine): read with its lock.
    let mut locked = None;
    let target = if let Some(named_ref) = &cmd.customer_ref {
        let named = if fine {
            let named = lock_customer_by_ref(tx, tenant, named_ref.as_str()).await?;
            locked = named.as_ref().map(|n| n.id);
            named
        } else {
            find_customer_by_ref(tx, tenant, named_ref.as_str()).await?
        };
        // The provisional customer this call belongs to: the one it is linked to, or the one
        // its start matched with high confidence. A lower match is only a guess (a shared
        // line, a conflicting CRM id, a number not heard from in years): naming a customer at
        // the end must not fold another caller's history into theirs.
        let provisional = match existing.as_ref().and_then(|c| {
            c.customer_id.or(c
                .matched_customer_id
                .filter(|_| c.band.as_deref() == Some(Band::High.as_str())))
        }) {
            Some(id) => find_customer(tx, tenant, id)
                .await?
                .filter(|p| p.provisional && p.customer_ref != named_ref.as_str()),
            None => None,
        };
        Some(match (provisional, named) {
            // Two customers: under the tenant's lock only.
            (Some(_), Some(_)) if fine => return Ok(None),
            (Some(p), Some(n)) => {
                merge_customers(tx, &p, &n, now).await?;
                if linked_before == Some(p.id) {
                    linked_before = Some(n.id);
                }
                merged_ids = Some((p.id, n.id));
                merged_from = Some(p.customer_ref);
                find_customer(tx, tenant, n.id)
                    .await?
                    .ok_or_else(|| EngineError::Corrupt("merge target vanished".into()))?
            }
            (Some(p), None) => {
                // Read again under its lock: an end beside this one may have named it.
                let p = match fine {
                    true => match lock_customer(tx, tenant, p.id).await? {
                        Some(p) if p.provisional => {
                            locked = Some(p.id);
                            p
                        }
                        _ => return Ok(None),
                    },
                    false => p,
                };
                tx.execute(
                    "UPDATE customers SET customer_ref = $1, provisional = $2, updated_at = $3 \
                     WHERE id = $4",
                    &[
                        named_ref.as_str().into(),
                        false.into(),
                        now.into(),
                        p.id.into(),
                    ],
                )
                .await?;
                customer::Model {
                    customer_ref: named_ref.as_str().to_owned(),
                    provisional: false,
                    updated_at: now,
                    ..p
                }
            }
            (None, Some(n)) => n,
            (None, None) => create_customer(tx, tenant, named_ref, false, now).await?,
        })
    } else if let Some(id) = linked_before {
        find_customer(tx, tenant, id).await?
    } else {
        None
    };
    let target = match target {
        Some(t) => Some(t),
        None if identities.is_empty() => None,
        None => {
            // Resolve at end time: reuse a customer when we are sure or, at medium (a number
            // heard from long ago, or shared), the provisional customer that ranks first among
            // the likely ones: otherwise every unnamed call from such a number would add one
            // more provisional customer to it.
            let ani = number
                .as_ref()
                .map(|n| Ani::Number(crate::domain::PhoneNumber::from_stored(n.clone())));
            let evidence = scoring::Evidence {
                attestation: cmd.hints.attestation,
                ..load_evidence(tx, tenant, ani.as_ref(), &external_ids).await?
            };
            let resolution = scoring::resolve(&evidence, now);
            let sure = match resolution.best {
                Some(best) if resolution.band == Band::High => {
                    find_customer(tx, tenant, best.customer).await?
                }
                Some(best) if resolution.band == Band::Medium => {
                    // The best-ranked provisional customer among the likely ones.
                    let ranked: Vec<i64> = std::iter::once(best.customer)
                        .chain(resolution.candidates.iter().map(|c| c.customer))
                        .collect();
                    let found = customers_by_id(tx, tenant, ranked.iter().copied()).await?;
                    ranked
                        .iter()
                        .find_map(|id| found.get(id).filter(|c| c.provisional).cloned())
                }
                _ => None,
            };
            // A new provisional customer only for identities nobody has: where the number or
            // an id already belongs to someone (a shared line, a customer back after months),
            // a new one would hide them behind it on every unnamed call. The call then stays
            // unlinked until an end names its customer.
            let anyone = match &evidence.ani {
                scoring::AniEvidence::Number(links) => !links.is_empty(),
                _ => false,
            } || evidence.external.iter().any(|e| !e.links.is_empty());
            match sure {
                Some(c) => Some(c),
                None if anyone => None,
                None => {
                    Some(create_customer(tx, tenant, &CustomerRef::generate(), true, now).await?)
                }
            }
        }
    };

    // Link identities and count the call once per customer. `target` stays the customer's row
    // as now stored (their document is written from it).
    let mut target = target;
    if fine && let Some(t) = &mut target {
        if linked_before.is_some_and(|before| before != t.id) {
            // The call moves from one customer to another: under the tenant's lock only.
            return Ok(None);
        }
        // The customer's row as now stored, locked until the commit.
        if locked != Some(t.id) {
            *t = lock_customer(tx, tenant, t.id).await?.ok_or_else(|| {
                EngineError::Corrupt("a customer vanished under a shared tenant lock".into())
            })?;
        }
    }
    let intent_status = match (cmd.intent_status, &cmd.intent) {
        (Some(s), _) => Some(s.as_str().to_owned()),
        (None, Some(_)) => Some(IntentStatus::Open.as_str().to_owned()),
        (None, None) => existing.as_ref().and_then(|c| c.intent_status.clone()),
    };
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
    let dnis = existing
        .as_ref()
        .and_then(|c| c.dnis.clone())
        .or_else(|| numbers.dnis.clone());
    let ended_at = existing.as_ref().and_then(|c| c.ended_at).unwrap_or(now);
    let external_json = serde_json::to_string(&external)?;
    let variables_json = serde_json::to_string(&call_variables)?;
    // Inserted when the end comes first; otherwise only the end's columns change (a start that
    // raced in keeps its match). Written with the customer's rows, below.
    let row = call::Model {
        id: 0,
        tenant_id: tenant.0,
        call_id: cmd.call_id.as_str().to_owned(),
        platform: cmd.platform.as_str().to_owned(),
        ani: number.clone(),
        ani_withheld,
        dnis: dnis.clone(),
        external_ids: external_json,
        matched_customer_id: None,
        confidence: None,
        band: None,
        recommended_action: None,
        signals: "[]".to_owned(),
        candidates: "[]".to_owned(),
        customer_id: target.as_ref().map(|t| t.id),
        status: call::STATUS_ENDED.to_owned(),
        intent: intent_name.clone(),
        intent_status: intent_status.clone(),
        summary: summary.clone(),
        variables: variables_json,
        started_at: None,
        ended_at: Some(ended_at),
        created_at: now,
        updated_at: now,
    };
    // Link identities, count the call once per customer, save its variables and write the
    // call's row: independent writes, run together (one round trip on PostgreSQL). `target`
    // stays the customer's row as now stored (their document is written from it): it was read
    // under this end's locks, so the count's new values are known without reading them back.
    let saved = match &target {
        Some(_) => saved_variables(&cmd.variables)?,
        None => Vec::new(),
    };
    let mut writes = Vec::new();
    let mut newly_linked = false;
    if let Some(t) = &mut target {
        newly_linked = linked_before != Some(t.id);
        for (kind, value) in &identities {
            if newly_linked || !counted.contains(&(*kind, value.clone())) {
                writes.push(link_identity(tenant, t.id, kind, value, now));
            }
        }
        if newly_linked {
            writes.push(Write {
                sql: "UPDATE customers SET call_count = call_count + 1, \
                      first_seen_at = COALESCE(first_seen_at, $1), last_seen_at = $1, \
                      updated_at = $1 WHERE id = $2"
                    .into(),
                args: vec![now.into(), t.id.into()],
            });
            t.call_count += 1;
            t.first_seen_at = t.first_seen_at.or(Some(now));
            t.last_seen_at = Some(now);
            t.updated_at = now;
        }
    }
    let saving = match &target {
        Some(t) if !saved.is_empty() => {
            writes.push(save_variables(tenant, t.id, &saved, call_time));
            Some(writes.len() - 1)
        }
        _ => None,
    };
    writes.push(ended_call(&row));
    // With them, on PostgreSQL in the same statement: the customer's document as stored (the
    // end's changes are applied to it below; none of these writes touches it), and the
    // notification of other processes (delivered at the commit: what the end touches is
    // known by now).
    let usual = target
        .as_ref()
        .filter(|t| merged_from.is_none() && linked_before.is_none_or(|b| b == t.id));
    let mut reads: Vec<Write<'_>> = usual
        .map(|t| context::stored_body_read(tenant, t.id))
        .into_iter()
        .collect();
    let mut touched = Touched {
        customers: target.iter().map(|t| t.id).chain(linked_before).collect(),
        identities: identities.clone(),
        tenant,
        merged: merged_from.is_some(),
        merged_ids,
        notified: false,
    };
    let payload = match tx.backend() {
        DbBackend::Postgres => touched.change(origin).map(|c| c.payload()),
        _ => None,
    };
    if let Some(payload) = &payload {
        reads.push(Write {
            sql: "pg_notify($1, $2)".into(),
            args: vec![crate::coherence::CHANNEL.into(), payload.as_str().into()],
        });
        touched.notified = true;
    }
    // The intent, in the same statement: it answers its row, which the document needs.
    let intent_change = match (&target, &intent_name, &intent_status) {
        (Some(t), Some(name), Some(status))
            if cmd.intent.is_some() || cmd.intent_status.is_some() =>
        {
            Some((
                t.id,
                IntentChange {
                    name,
                    status,
                    call_id: Some(cmd.call_id.as_str()),
                    due_at: cmd.intent_due_at,
                    at: call_time,
                },
            ))
        }
        _ => None,
    };
    let intent_write = intent_change
        .as_ref()
        .map(|(id, change)| intent_upsert(tenant, *id, change));
    let (done, intent_row) = tx
        .execute_together(&writes, &reads, intent_write.as_ref(), intent_from_row)
        .await?;
    // A variable a later call saved is left as it is.
    in_order &= saving.is_none_or(|i| {
        done.changed
            .get(i)
            .is_some_and(|n| usize::try_from(*n).is_ok_and(|n| n == saved.len()))
    });
    let mut body = match usual {
        Some(_) => done.read.into_iter().next().flatten(),
        None => None,
    };
    if let Some(t) = &target {
        if newly_linked && let Some(previous) = linked_before {
            // The call moved to another customer: it no longer counts for the old one, nor
            // do its identities (a number the old customer had only through this call is
            // theirs no more).
            tx.execute(
                "UPDATE customers SET call_count = call_count - 1 \
                 WHERE id = $1 AND call_count > 0",
                &[previous.into()],
            )
            .await?;
            for (kind, value) in &counted {
                tx.execute(
                    "UPDATE identities SET call_count = call_count - 1 \
                     WHERE customer_id = $1 AND kind = $2 AND value = $3 AND call_count > 0",
                    &[previous.into(), (*kind).into(), value.as_str().into()],
                )
                .await?;
            }
            tx.execute(
                "DELETE FROM identities WHERE customer_id = $1 AND call_count = 0",
                &[previous.into()],
            )
            .await?;
        }
        in_order &= unsave_variables(tx, t.id, &cmd.variables, call_time).await?;
        // New expiries of saved variables: the customer's document is rebuilt from the rows.
        in_order &= cmd.variables.retimed().next().is_none();
    }

    let intent_set = match &intent_change {
        Some((id, change)) => Some(intent_as_kept(tx, *id, change.name, intent_row).await?),
        None => None,
    };

    if intent_set
        .as_ref()
        .is_some_and(|i| i.updated_at > call_time)
    {
        // A later call had already set this intent: the end left it as it was.
        in_order = false;
    }
    match &target {
        // The usual end: its changes are applied to the customer's document.
        Some(t) if in_order && merged_from.is_none() && linked_before.is_none_or(|b| b == t.id) => {
            let change = context::EndChange {
                customer: t,
                variables: &cmd.variables,
                intent: intent_set,
                call: RecentCall {
                    call_id: cmd.call_id.as_str().to_owned(),
                    started_at: existing.as_ref().and_then(|c| c.started_at),
                    ended_at: Some(ended_at),
                    intent: intent_name.clone(),
                    intent_status: intent_status.clone(),
                    summary: summary.clone(),
                },
                already_linked: linked_before == Some(t.id),
            };
            context::after_end(tx, tenant, change, body.take()).await?;
        }
        // A merge or a moved call: both customers' documents are rebuilt.
        _ => context::refresh(tx, tenant, &touched.customers).await?,
    }
    Ok(Some((
        EndOutcome {
            call_id: cmd.call_id.as_str().to_owned(),
            customer_ref: target.as_ref().map(|t| t.customer_ref.clone()),
            provisional: target.as_ref().is_some_and(|t| t.provisional),
            merged_from,
        },
        touched,
    )))
}

/// A customer's row, read and locked until the commit (PostgreSQL).
async fn lock_customer(
    c: Conn<'_>,
    tenant: TenantId,
    id: i64,
) -> Result<Option<customer::Model>, EngineError> {
    c.query_one(
        &format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1 AND tenant_id = $2 FOR UPDATE"
        ),
        &[id.into(), tenant.0.into()],
        customer_from_row,
    )
    .await
}

pub(super) async fn create_customer(
    c: Conn<'_>,
    tenant: TenantId,
    customer_ref: &CustomerRef,
    provisional: bool,
    now: DateTime<Utc>,
) -> Result<customer::Model, EngineError> {
    c.query_one(
        &format!(
            "INSERT INTO customers (tenant_id, customer_ref, provisional, call_count, created_at, \
             updated_at) VALUES ($1, $2, $3, 0, $4, $4) RETURNING {CUSTOMER_COLUMNS}"
        ),
        &[
            tenant.0.into(),
            customer_ref.as_str().into(),
            provisional.into(),
            now.into(),
        ],
        customer_from_row,
    )
    .await?
    .ok_or_else(|| EngineError::Corrupt("insert returned no customer".into()))
}

/// Counts one more call on an identity of a customer, creating the link when new.
fn link_identity<'a>(
    tenant: TenantId,
    customer_id: i64,
    kind: &'a str,
    value: &'a str,
    now: DateTime<Utc>,
) -> Write<'a> {
    Write {
        sql: "INSERT INTO identities (tenant_id, customer_id, kind, value, call_count, \
              first_seen_at, last_seen_at) VALUES ($1, $2, $3, $4, 1, $5, $5) \
              ON CONFLICT (customer_id, kind, value) DO UPDATE SET \
              call_count = identities.call_count + 1, last_seen_at = excluded.last_seen_at"
            .into(),
        args: vec![
            tenant.0.into(),
            customer_id.into(),
            kind.into(),
            value.into(),
            now.into(),
        ],
    }
}

/// A variable to save: its name, its value as JSON and when it expires.
type Saved<'a> = (&'a str, String, Option<DateTime<Utc>>);

/// The variables an end gives a value.
fn saved_variables(changes: &VariableChanges) -> Result<Vec<Saved<'_>>, EngineError> {
    changes
        .iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .map(|(name, v)| {
            Ok((
                name.as_str(),
                serde_json::to_string(v)?,
                changes.expires_at(name),
            ))
        })
        .collect()
}

/// Saves variables as of `now` (the time of the call they came from): a variable a later
/// call set is left as it is, so fewer rows than `saved` change then. One statement (at most
/// [`crate::commands::MAX_VARIABLES`] rows), not one per variable.
fn save_variables<'a>(
    tenant: TenantId,
    customer_id: i64,
    saved: &'a [Saved<'a>],
    now: DateTime<Utc>,
) -> Write<'a> {
    let mut sql = String::from(
        "INSERT INTO variables (tenant_id, customer_id, name, value, updated_at, expires_at) \
         VALUES ",
    );
    let mut args: Vec<Arg<'_>> = vec![tenant.0.into(), customer_id.into(), now.into()];
    for (i, (name, json, expires_at)) in saved.iter().enumerate() {
        let n = args.len();
        sql.push_str(&format!(
            "{}($1, $2, ${}, ${}, $3, ${})",
            if i == 0 { "" } else { ", " },
            n + 1,
            n + 2,
            n + 3
        ));
        args.push((*name).into());
        args.push(json.as_str().into());
        args.push((*expires_at).into());
    }
    sql.push_str(
        " ON CONFLICT (customer_id, name) DO UPDATE SET value = excluded.value, \
         updated_at = excluded.updated_at, expires_at = excluded.expires_at \
         WHERE variables.updated_at <= excluded.updated_at",
    );
    Write {
        sql: sql.into(),
        args,
    }
}

/// The rest of an end's variable changes ([`save_variables`] saves the values): new expiries
/// and removals (given `null`), as of `now`, unless a later call set the variable since.
/// `false` when any change was left out.
async fn unsave_variables(
    c: Conn<'_>,
    customer_id: i64,
    changes: &VariableChanges,
    now: DateTime<Utc>,
) -> Result<bool, EngineError> {
    let mut all_applied = true;
    let removed: Vec<&str> = changes
        .iter()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    let retimed: Vec<_> = changes.retimed().collect();
    if !retimed.is_empty() {
        // A new expiry for a saved value, unless a later call saved the variable since.
        let mut args: Vec<Arg<'_>> = vec![customer_id.into(), now.into()];
        let mut cases = String::new();
        let mut names = Vec::new();
        for (name, at) in &retimed {
            let n = args.len();
            cases.push_str(&format!(" WHEN ${} THEN ${}", n + 1, n + 2));
            names.push(format!("${}", n + 1));
            args.push(name.as_str().into());
            args.push(Some(*at).into());
        }
        c.execute(
            &format!(
                "UPDATE variables SET expires_at = CASE name{cases} END \
                 WHERE customer_id = $1 AND updated_at <= $2 AND name IN ({})",
                names.join(", ")
            ),
            &args,
        )
        .await?;
    }
    if !removed.is_empty() {
        let list: Vec<String> = (0..removed.len()).map(|i| format!("${}", i + 3)).collect();
        let mut args: Vec<Arg<'_>> = vec![customer_id.into(), now.into()];
        args.extend(removed.iter().map(|name| Arg::from(*name)));
        c.execute(
            &format!(
                "DELETE FROM variables WHERE customer_id = $1 AND updated_at <= $2 \
                 AND name IN ({})",
                list.join(", ")
            ),
            &args,
        )
        .await?;
        let kept = c
            .query_one(
                &format!(
                    "SELECT COUNT(*) FROM variables WHERE customer_id = $1 AND updated_at > $2 \
                     AND name IN ({})",
                    list.join(", ")
                ),
                &args,
                |r| r.int_req(0),
            )
            .await?
            .unwrap_or(0);
        all_applied &= kept == 0;
    }
    Ok(all_applied)
}

const INTENT_COLUMNS: &str = "id, tenant_id, customer_id, intent, status, opened_at, updated_at, \
     resolved_at, last_call_id, due_at";

fn intent_from_row(r: &dyn Row) -> Result<intent::Model, EngineError> {
    Ok(intent::Model {
        id: r.int_req(0)?,
        tenant_id: r.int_req(1)?,
        customer_id: r.int_req(2)?,
        intent: r.text_req(3)?,
        status: r.text_req(4)?,
        opened_at: r.time_req(5)?,
        updated_at: r.time_req(6)?,
        resolved_at: r.time(7)?,
        last_call_id: r.text(8)?,
        due_at: r.time(9)?,
    })
}

/// A change to one intent of a customer.
pub(super) struct IntentChange<'a> {
    pub name: &'a str,
    /// `open` or `resolved`.
    pub status: &'a str,
    /// The call that made it (none for a resolution through the API).
    pub call_id: Option<&'a str>,
    /// A promised callback's due time.
    pub due_at: Option<DateTime<Utc>>,
    /// When it was made.
    pub at: DateTime<Utc>,
}

/// Opens, re-opens or resolves an intent of a customer. Re-opening a resolved intent restarts
/// its `opened_at`; a change without a call keeps the last call that touched it. A due time
/// is kept until the status changes or another is given.
pub(super) async fn set_intent(
    c: Conn<'_>,
    tenant: TenantId,
    customer_id: i64,
    change: IntentChange<'_>,
) -> Result<intent::Model, EngineError> {
    let upsert = intent_upsert(tenant, customer_id, &change);
    let updated = c
        .query_one(
            &format!("{} RETURNING {}", upsert.write.sql, upsert.columns),
            &upsert.write.args,
            intent_from_row,
        )
        .await?;
    intent_as_kept(c, customer_id, change.name, updated).await
}

/// The write of [`set_intent`], answering the intent's row (none when a later call had
/// already set it: see [`intent_as_kept`]).
fn intent_upsert<'a>(
    tenant: TenantId,
    customer_id: i64,
    change: &IntentChange<'a>,
) -> Returning<'a> {
    let resolved_at = (change.status == IntentStatus::Resolved.as_str()).then_some(change.at);
    Returning {
        write: Write {
            sql: format!(
                "INSERT INTO intents (tenant_id, customer_id, intent, status, opened_at, \
                 updated_at, resolved_at, last_call_id, due_at) \
                 VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8) \
                 ON CONFLICT (customer_id, intent) DO UPDATE SET \
                 opened_at = CASE WHEN intents.status <> excluded.status \
                   AND excluded.status = '{open}' \
                   THEN excluded.opened_at ELSE intents.opened_at END, \
                 status = excluded.status, updated_at = excluded.updated_at, \
                 resolved_at = excluded.resolved_at, \
                 last_call_id = COALESCE(excluded.last_call_id, intents.last_call_id), \
                 due_at = CASE WHEN excluded.due_at IS NOT NULL THEN excluded.due_at \
                   WHEN intents.status <> excluded.status THEN NULL ELSE intents.due_at END \
                 WHERE intents.updated_at <= excluded.updated_at",
                open = IntentStatus::Open.as_str(),
            )
            .into(),
            args: vec![
                tenant.0.into(),
                customer_id.into(),
                change.name.into(),
                change.status.into(),
                change.at.into(),
                resolved_at.into(),
                change.call_id.into(),
                change.due_at.into(),
            ],
        },
        columns: INTENT_COLUMNS,
    }
}

/// The intent as [`intent_upsert`] left it: the row it answered, else (a later call had
/// already set this intent) the row as that call left it.
async fn intent_as_kept(
    c: Conn<'_>,
    customer_id: i64,
    name: &str,
    updated: Option<intent::Model>,
) -> Result<intent::Model, EngineError> {
    if let Some(intent) = updated {
        return Ok(intent);
    }
    c.query_one(
        &format!("SELECT {INTENT_COLUMNS} FROM intents WHERE customer_id = $1 AND intent = $2"),
        &[customer_id.into(), name.into()],
        intent_from_row,
    )
    .await?
    .ok_or_else(|| EngineError::Corrupt("upsert returned no intent".into()))
}

/// A row of a customer's identities, variables or intents as a merge sees it.
struct Owned {
    id: i64,
    key: String,
    updated_at: DateTime<Utc>,
    count: i64,
    first_seen_at: Option<DateTime<Utc>>,
}

async fn owned(c: Conn<'_>, sql: &str, customer_id: i64) -> Result<Vec<Owned>, EngineError> {
    c.query(sql, &[customer_id.into()], |r| {
        Ok(Owned {
            id: r.int_req(0)?,
            key: r.text_req(1)?,
            updated_at: r.time_req(2)?,
            count: r.int(3)?.unwrap_or(0),
            first_seen_at: r.time(4)?,
        })
    })
    .await
}

/// Moves everything of `from` (a provisional customer) into `into` and deletes `from`:
/// identities (counts added), calls, variables and intents (the most recently updated wins).
async fn merge_customers(
    tx: Conn<'_>,
    from: &customer::Model,
    into: &customer::Model,
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    // Identities: keyed by kind and value; the link that stays gets both counts.
    const IDENTITIES: &str = "SELECT id, kind || ' ' || value, last_seen_at, call_count, \
        first_seen_at FROM identities WHERE customer_id = $1";
    let theirs = owned(tx, IDENTITIES, into.id).await?;
    for mine in owned(tx, IDENTITIES, from.id).await? {
        match theirs.iter().find(|t| t.key == mine.key) {
            Some(t) => {
                tx.execute(
                    "UPDATE identities SET call_count = $1, first_seen_at = $2, last_seen_at = $3 \
                     WHERE id = $4",
                    &[
                        (t.count + mine.count).into(),
                        Ord::min(t.first_seen_at, mine.first_seen_at).into(),
                        Ord::max(t.updated_at, mine.updated_at).into(),
                        t.id.into(),
                    ],
                )
                .await?;
                tx.execute("DELETE FROM identities WHERE id = $1", &[mine.id.into()])
                    .await?;
            }
            None => {
                tx.execute(
                    "UPDATE identities SET customer_id = $1 WHERE id = $2",
                    &[into.id.into(), mine.id.into()],
                )
                .await?;
            }
        }
    }

    // Variables and intents: keyed by name; the most recently updated value wins.
    for (table, key, copy) in [
        (
            "variables",
            "name",
            "value = m.value, updated_at = m.updated_at, expires_at = m.expires_at",
        ),
        (
            "intents",
            "intent",
            "status = m.status, opened_at = m.opened_at, updated_at = m.updated_at, \
             resolved_at = m.resolved_at, last_call_id = m.last_call_id, due_at = m.due_at",
        ),
    ] {
        let select =
            format!("SELECT id, {key}, updated_at, NULL, NULL FROM {table} WHERE customer_id = $1");
        let theirs = owned(tx, &select, into.id).await?;
        for mine in owned(tx, &select, from.id).await? {
            match theirs.iter().find(|t| t.key == mine.key) {
                Some(t) => {
                    if mine.updated_at > t.updated_at {
                        tx.execute(
                            &format!(
                                "UPDATE {table} SET {} FROM (SELECT * FROM {table} WHERE id = $1) \
                                 AS m WHERE {table}.id = $2",
                                copy
                            ),
                            &[mine.id.into(), t.id.into()],
                        )
                        .await?;
                    }
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE id = $1"),
                        &[mine.id.into()],
                    )
                    .await?;
                }
                None => {
                    tx.execute(
                        &format!("UPDATE {table} SET customer_id = $1 WHERE id = $2"),
                        &[into.id.into(), mine.id.into()],
                    )
                    .await?;
                }
            }
        }
    }

    for column in ["customer_id", "matched_customer_id"] {
        tx.execute(
            &format!("UPDATE calls SET {column} = $1 WHERE {column} = $2"),
            &[into.id.into(), from.id.into()],
        )
        .await?;
    }
    tx.execute(
        "UPDATE customers SET call_count = $1, first_seen_at = $2, last_seen_at = $3, \
         updated_at = $4 WHERE id = $5",
        &[
            (into.call_count + from.call_count).into(),
            match (into.first_seen_at, from.first_seen_at) {
                (Some(a), Some(b)) => Some(Ord::min(a, b)),
                (a, b) => a.or(b),
            }
            .into(),
            Ord::max(into.last_seen_at, from.last_seen_at).into(),
            now.into(),
            into.id.into(),
        ],
    )
    .await?;
    tx.execute("DELETE FROM customers WHERE id = $1", &[from.id.into()])
        .await?;
    Ok(())
}
