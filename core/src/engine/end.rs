//! Call end: link the call's identities to a customer (named, resolved, or a new provisional
//! one), merge provisional customers into named ones, and save variables, intent and summary.
//! Everything happens in one transaction: an end is applied whole or not at all. On SQLite it
//! runs on the one writer; on PostgreSQL in a batch of the ends waiting (`end_batch.rs`),
//! beside the tenant's other ends, locking what it touches (`locks.rs`), or under the
//! tenant's lock when it merges or moves a call.
//!
//! The statements are upserts keyed by the unique indexes, so a typical end (a known customer,
//! two identities, a few variables, an intent) is about ten statements whatever the history.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sea_orm::DbBackend;
use serde_json::Value;

use super::cache::{CachedCustomer, Caches};
use super::context;
use super::end_batch::Ended;
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
        } else if let Some(ends) = &self.end_batcher {
            // PostgreSQL: with the other ends waiting, in one transaction.
            match ends.end(tenant, cmd, numbers).await? {
                Ended::Done(outcome) => outcome,
                Ended::NeedsTenant(request) => {
                    let (cmd, numbers) = *request;
                    self.end_exclusively(tenant, &cmd, &numbers).await?
                }
            }
        } else {
            self.end_exclusively(tenant, &cmd, &numbers).await?
        };
        metrics::counter!("sticky_call_ends_total").increment(1);
        Ok(outcome)
    }

    /// An end under its tenant's lock held exclusively: a merge or a call moving between
    /// customers on PostgreSQL; every end on in-memory SQLite.
    async fn end_exclusively(
        &self,
        tenant: TenantId,
        cmd: &EndCall,
        numbers: &EndNumbers,
    ) -> Result<EndOutcome, EngineError> {
        let (_writer, tx) = self.begin_write(tenant).await?;
        let (outcome, touched) = end_call_in(
            Conn::Tx(&tx),
            numbers,
            tenant,
            cmd,
            Locking::Exclusive,
            self.caches.origin(),
        )
        .await?
        .ok_or_else(exclusive_asked)?;
        self.commit(tx, touched).await?;
        Ok(outcome)
    }
}

/// The locks of the identities and reference an end's request names (see `locks.rs`).
pub(super) fn named_locks(tenant: TenantId, cmd: &EndCall, numbers: &EndNumbers) -> Vec<LockKey> {
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

/// What a batch of ends (`end_batch.rs`) read for one of them before running it, under the
/// locks the end would have taken first, so that it does not read them itself: its call's row
/// and the customer it names, or the one its call is linked to, locked. Left out (`None`)
/// where an end run before it in the batch may have changed them; an end run alone knows
/// nothing and reads everything.
#[derive(Debug, Default)]
pub(super) struct Known {
    /// The call's row; `Some(None)`: no row yet.
    pub call: Option<Option<call::Model>>,
    /// The customer the request names, locked; `Some(None)`: no customer has that reference.
    pub named: Option<Option<customer::Model>>,
    /// The customer the call is linked to, locked.
    pub linked: Option<customer::Model>,
}

/// Nothing known: an end under the tenant's exclusive lock reads everything itself.
const NOTHING_KNOWN: &Known = &Known {
    call: None,
    named: None,
    linked: None,
};

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

    /// The customers whose rows or documents changed.
    pub(super) fn customer_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.customers.iter().copied()
    }

    /// The identities whose links changed.
    pub(super) fn identity_keys(&self) -> &[IdentityKey] {
        &self.identities
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

/// Applies an end inside the caller's write transaction: [`decide`], its writes in one round
/// trip ([`apply`]), [`finish`], and the customer's document stored.
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
    let Some(decided) = decide(tx, numbers, tenant, cmd, locking, origin).await? else {
        return Ok(None);
    };
    let applied = apply(tx, &decided).await?;
    let (outcome, touched, document) = finish(tx, decided, applied).await?;
    if let Some(document) = document {
        context::store_documents(tx, std::slice::from_ref(&document)).await?;
    }
    Ok(Some((outcome, touched)))
}

/// What an end reads, and what it decides from it, before its writes: who the call belongs
/// to (the customer named, resolved, or a new provisional one; a provisional one named or
/// merged, written here), and every row it will write. `None` as [`end_call_in`] answers it,
/// always before writing anything (a batch commits the others' writes with it).
#[allow(clippy::too_many_lines)]
pub(super) async fn decide<'a>(
    tx: Conn<'_>,
    numbers: &EndNumbers,
    tenant: TenantId,
    cmd: &'a EndCall,
    locking: Locking<'_>,
    origin: &str,
) -> Result<Option<Decided<'a>>, EngineError> {
    let (fine, held, known) = match locking {
        Locking::Exclusive => (false, &[][..], NOTHING_KNOWN),
        Locking::Fine { held, known } => (true, held, known),
    };
    let now = crate::now();
    let existing = match &known.call {
        Some(call) => call.clone(),
        None => find_call(tx, tenant, cmd.call_id.as_str()).await?,
    };
    // What an end saves about the customer (variables, an intent's status) takes the time of
    // its call, not of its arrival: a late or retried end of an earlier call never overwrites
    // what a later call saved. The call's start, else (an end that came first) now.
    let call_time = existing.as_ref().and_then(|c| c.started_at).unwrap_or(now);
    // Whether this wrote already (a customer created, named or merged).
    let mut wrote = false;

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
            let named = match &known.named {
                Some(named) => named.clone(),
                None => lock_customer_by_ref(tx, tenant, named_ref.as_str()).await?,
            };
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
            // The named customer themselves (they have the reference): none.
            Some(id) if named.as_ref().is_some_and(|n| n.id == id) => None,
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
                wrote = true;
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
                // Read again under its lock: an end beside this one may have named it. Locked
                // for a change of its key (its reference has a unique index), which also waits
                // for rows being written that name it (a start's call row).
                let p = match fine {
                    true => match lock_customer(tx, tenant, p.id, RowLock::Key).await? {
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
                wrote = true;
                customer::Model {
                    customer_ref: named_ref.as_str().to_owned(),
                    provisional: false,
                    updated_at: now,
                    ..p
                }
            }
            (None, Some(n)) => n,
            // A new customer for a call linked to another: the call would move, under the
            // tenant's lock only (asked before anything is written).
            (None, None) if fine && linked_before.is_some() => return Ok(None),
            (None, None) => {
                wrote = true;
                create_customer(tx, tenant, named_ref, false, now).await?
            }
        })
    } else if let Some(id) = linked_before {
        match &known.linked {
            Some(linked) if fine && linked.id == id => {
                locked = Some(id);
                Some(linked.clone())
            }
            _ => find_customer(tx, tenant, id).await?,
        }
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
                // As above: a call linked to a customer no longer there would move.
                None if fine && linked_before.is_some() => return Ok(None),
                None => {
                    wrote = true;
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
            debug_assert!(!wrote, "asked for the tenant's lock after writing");
            return Ok(None);
        }
        // The customer's row as now stored, locked until the commit.
        if locked != Some(t.id) {
            *t = lock_customer(tx, tenant, t.id, RowLock::NoKey)
                .await?
                .ok_or_else(|| {
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
    // raced in keeps its match). Written with the customer's rows.
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
    // What is written about the customer: identities linked (each counted once per call), the
    // call counted, variables saved. `target` stays the customer's row as now stored (their
    // document is written from it): it was read under this end's locks, so the count's new
    // values are known without reading them back.
    let saved = match &target {
        Some(_) => saved_variables(&cmd.variables)?,
        None => Vec::new(),
    };
    let mut links = Vec::new();
    let mut newly_linked = false;
    if let Some(t) = &mut target {
        newly_linked = linked_before != Some(t.id);
        links = identities
            .iter()
            .filter(|(kind, value)| newly_linked || !counted.contains(&(*kind, value.clone())))
            .cloned()
            .collect();
        if newly_linked {
            t.call_count += 1;
            t.first_seen_at = t.first_seen_at.or(Some(now));
            t.last_seen_at = Some(now);
            t.updated_at = now;
        }
    }
    // The usual end: its changes are applied to the customer's stored document, read with
    // its writes (none of them touches it).
    let usual = target
        .as_ref()
        .is_some_and(|t| merged_from.is_none() && linked_before.is_none_or(|b| b == t.id));
    let mut touched = Touched {
        customers: target.iter().map(|t| t.id).chain(linked_before).collect(),
        identities: identities.clone(),
        tenant,
        merged: merged_from.is_some(),
        merged_ids,
        notified: false,
    };
    // Other processes are notified with the writes (delivered at the commit: what the end
    // touches is known by now).
    let notice = match tx.backend() {
        DbBackend::Postgres => touched.change(origin).map(|c| c.payload()),
        _ => None,
    };
    touched.notified = notice.is_some();
    // The intent, with the writes: it answers its row, which the document needs.
    let intent = match (&target, &intent_name, &intent_status) {
        (Some(t), Some(name), Some(status))
            if cmd.intent.is_some() || cmd.intent_status.is_some() =>
        {
            Some(IntentWrite {
                customer_id: t.id,
                name: name.clone(),
                status: status.clone(),
            })
        }
        _ => None,
    };
    Ok(Some(Decided {
        tenant,
        cmd,
        now,
        call_time,
        started_at: existing.as_ref().and_then(|c| c.started_at),
        target,
        linked_before,
        merged_from,
        newly_linked,
        counted,
        links,
        saved,
        row,
        intent_name,
        intent_status,
        summary,
        ended_at,
        usual,
        intent,
        notice,
        touched,
        wrote,
    }))
}

/// An end decided ([`decide`]): what it writes ([`apply`], or with others
/// `end_batch::apply_together`), and what [`finish`] needs.
pub(super) struct Decided<'a> {
    pub tenant: TenantId,
    pub cmd: &'a EndCall,
    pub now: DateTime<Utc>,
    /// The call's time (see [`decide`]): what the end saves about the customer takes it.
    pub call_time: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    /// The customer the call is linked to, their row as it will be once written.
    pub target: Option<customer::Model>,
    linked_before: Option<i64>,
    merged_from: Option<String>,
    /// The call counts for the customer from this end on.
    pub newly_linked: bool,
    counted: BTreeSet<(&'static str, String)>,
    /// Identities to link to the customer, each counted once more.
    pub links: Vec<(&'static str, String)>,
    /// Variables to save.
    pub saved: Vec<Saved<'a>>,
    /// The call's row.
    pub row: call::Model,
    intent_name: Option<String>,
    intent_status: Option<String>,
    summary: Option<String>,
    ended_at: DateTime<Utc>,
    /// Its changes are applied to the customer's stored document, read with the writes.
    pub usual: bool,
    /// The intent to open, re-open or resolve.
    pub intent: Option<IntentWrite>,
    /// The notification of other processes, sent with the writes.
    pub notice: Option<String>,
    pub touched: Touched,
    /// [`decide`] wrote already (a customer created, named or merged).
    pub wrote: bool,
}

/// The intent an end writes (see [`IntentChange`]).
pub(super) struct IntentWrite {
    pub customer_id: i64,
    pub name: String,
    pub status: String,
}

impl Decided<'_> {
    /// The intent's change, as [`intent_upsert`] writes it.
    pub(super) fn intent_change(&self) -> Option<(i64, IntentChange<'_>)> {
        self.intent.as_ref().map(|i| {
            (
                i.customer_id,
                IntentChange {
                    name: &i.name,
                    status: &i.status,
                    call_id: Some(self.cmd.call_id.as_str()),
                    due_at: self.cmd.intent_due_at,
                    at: self.call_time,
                },
            )
        })
    }
}

/// What an end's writes answered.
#[derive(Default)]
pub(super) struct Applied {
    /// How many of the saved variables were written (none when it saves none).
    pub variables_written: Option<u64>,
    /// The customer's stored document (a usual end).
    pub body: Option<String>,
    /// The intent's row, when the write changed it.
    pub intent_row: Option<intent::Model>,
}

/// An end's writes, run together (one round trip on PostgreSQL).
pub(super) async fn apply(tx: Conn<'_>, d: &Decided<'_>) -> Result<Applied, EngineError> {
    let tenant = d.tenant;
    let mut writes = Vec::new();
    let mut saving = None;
    if let Some(t) = &d.target {
        for (kind, value) in &d.links {
            writes.push(link_identity(tenant, t.id, kind, value, d.now));
        }
        if d.newly_linked {
            writes.push(count_call(t.id, d.now));
        }
        if !d.saved.is_empty() {
            writes.push(save_variables(tenant, t.id, &d.saved, d.call_time));
            saving = Some(writes.len() - 1);
        }
    }
    writes.push(ended_call(&d.row));
    let mut reads: Vec<Write<'_>> = d
        .target
        .as_ref()
        .filter(|_| d.usual)
        .map(|t| context::stored_body_read(tenant, t.id))
        .into_iter()
        .collect();
    if let Some(payload) = &d.notice {
        reads.push(Write {
            sql: "pg_notify($1, $2)".into(),
            args: vec![crate::coherence::CHANNEL.into(), payload.as_str().into()],
        });
    }
    let intent_change = d.intent_change();
    let intent_write = intent_change
        .as_ref()
        .map(|(id, change)| intent_upsert(tenant, *id, change));
    let (done, intent_row) = tx
        .execute_together(&writes, &reads, intent_write.as_ref(), intent_from_row)
        .await?;
    Ok(Applied {
        variables_written: saving.map(|i| done.changed.get(i).copied().unwrap_or(0)),
        body: match d.usual {
            true => done.read.into_iter().next().flatten(),
            false => None,
        },
        intent_row,
    })
}

/// What is left of an end once its writes ran: a call moved from another customer, variables
/// removed or given a new expiry, and the customer's document: the usual end's is answered (the
/// stored one with the end's changes applied) for the caller to store; any other is rebuilt
/// here from the tables.
pub(super) async fn finish(
    tx: Conn<'_>,
    d: Decided<'_>,
    applied: Applied,
) -> Result<(EndOutcome, Touched, Option<CachedCustomer>), EngineError> {
    let (tenant, cmd, call_time) = (d.tenant, d.cmd, d.call_time);
    // Whether everything this end saved about the customer was applied (nothing newer kept).
    // A variable a later call saved is left as it is.
    let mut in_order = applied
        .variables_written
        .is_none_or(|n| usize::try_from(n).is_ok_and(|n| n == d.saved.len()));
    if let Some(t) = &d.target {
        if d.newly_linked
            && let Some(previous) = d.linked_before
        {
            // The call moved to another customer: it no longer counts for the old one, nor
            // do its identities (a number the old customer had only through this call is
            // theirs no more).
            tx.execute(
                "UPDATE customers SET call_count = call_count - 1 \
                 WHERE id = $1 AND call_count > 0",
                &[previous.into()],
            )
            .await?;
            for (kind, value) in &d.counted {
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

    let intent_set = match &d.intent {
        Some(i) => Some(intent_as_kept(tx, i.customer_id, &i.name, applied.intent_row).await?),
        None => None,
    };

    if intent_set
        .as_ref()
        .is_some_and(|i| i.updated_at > call_time)
    {
        // A later call had already set this intent: the end left it as it was.
        in_order = false;
    }
    let document = match &d.target {
        // The usual end: its changes are applied to the customer's document.
        Some(t) if in_order && d.usual => {
            let change = context::EndChange {
                customer: t,
                variables: &cmd.variables,
                intent: intent_set,
                call: RecentCall {
                    call_id: cmd.call_id.as_str().to_owned(),
                    started_at: d.started_at,
                    ended_at: Some(d.ended_at),
                    intent: d.intent_name.clone(),
                    intent_status: d.intent_status.clone(),
                    summary: d.summary.clone(),
                },
                already_linked: d.linked_before == Some(t.id),
            };
            context::after_end(tx, tenant, change, applied.body).await?
        }
        // A merge or a moved call: both customers' documents are rebuilt.
        _ => {
            context::refresh(tx, tenant, &d.touched.customers).await?;
            None
        }
    };
    Ok((
        EndOutcome {
            call_id: cmd.call_id.as_str().to_owned(),
            customer_ref: d.target.as_ref().map(|t| t.customer_ref.clone()),
            provisional: d.target.as_ref().is_some_and(|t| t.provisional),
            merged_from: d.merged_from,
        },
        d.touched,
        document,
    ))
}

/// Counts one more call for a customer.
fn count_call(customer_id: i64, now: DateTime<Utc>) -> Write<'static> {
    Write {
        sql: "UPDATE customers SET call_count = call_count + 1, \
              first_seen_at = COALESCE(first_seen_at, $1), last_seen_at = $1, \
              updated_at = $1 WHERE id = $2"
            .into(),
        args: vec![now.into(), customer_id.into()],
    }
}

/// How a customer's row is locked (PostgreSQL).
#[derive(Debug, Clone, Copy)]
enum RowLock {
    /// For writes that leave its key columns alone (`FOR NO KEY UPDATE`): rows being written
    /// that name the customer (their foreign keys' checks share-lock it) do not wait for it.
    NoKey,
    /// For a change of its reference, which has a unique index (`FOR UPDATE`): waits for those
    /// rows' transactions.
    Key,
}

/// A customer's row, read and locked until the commit (PostgreSQL).
async fn lock_customer(
    c: Conn<'_>,
    tenant: TenantId,
    id: i64,
    lock: RowLock,
) -> Result<Option<customer::Model>, EngineError> {
    let mode = match lock {
        RowLock::NoKey => "NO KEY UPDATE",
        RowLock::Key => "UPDATE",
    };
    c.query_one(
        &format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1 AND tenant_id = $2 FOR {mode}"
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

/// What a link that exists already becomes (see [`link_identity`]).
macro_rules! identity_linked {
    () => {
        "ON CONFLICT (customer_id, kind, value) DO UPDATE SET \
         call_count = identities.call_count + 1, last_seen_at = excluded.last_seen_at"
    };
}
pub(super) use identity_linked;

/// Counts one more call on an identity of a customer, creating the link when new.
fn link_identity<'a>(
    tenant: TenantId,
    customer_id: i64,
    kind: &'a str,
    value: &'a str,
    now: DateTime<Utc>,
) -> Write<'a> {
    Write {
        sql: concat!(
            "INSERT INTO identities (tenant_id, customer_id, kind, value, call_count, \
             first_seen_at, last_seen_at) VALUES ($1, $2, $3, $4, 1, $5, $5) ",
            identity_linked!()
        )
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
pub(super) type Saved<'a> = (&'a str, String, Option<DateTime<Utc>>);

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

/// What a variable that exists already becomes (see [`save_variables`]): the value saved,
/// unless a later call saved it since.
pub(super) const VARIABLE_SAVED: &str = "ON CONFLICT (customer_id, name) DO UPDATE SET \
     value = excluded.value, updated_at = excluded.updated_at, expires_at = excluded.expires_at \
     WHERE variables.updated_at <= excluded.updated_at";

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
    sql.push(' ');
    sql.push_str(VARIABLE_SAVED);
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

pub(super) const INTENT_COLUMNS: &str = "id, tenant_id, customer_id, intent, status, opened_at, updated_at, \
     resolved_at, last_call_id, due_at";

pub(super) fn intent_from_row(r: &dyn Row) -> Result<intent::Model, EngineError> {
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

/// What an intent that exists already becomes (see [`set_intent`]), unless a later call set it
/// since.
pub(super) fn intent_kept() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "ON CONFLICT (customer_id, intent) DO UPDATE SET \
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
    });
    &SQL
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
                 VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8) {}",
                intent_kept()
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
