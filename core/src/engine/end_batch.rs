//! Ends on PostgreSQL, in batches. An end alone is a transaction of seven round trips (its
//! begin, its locks, its call's row, its customer's row, its writes, its customer's document,
//! its commit), and on a busy server the round trips and the statements' own overhead, not
//! the rows they write, were most of what an end cost the server and PostgreSQL. So ends hand
//! their request to a few worker tasks; a worker takes whatever ends are waiting, up to
//! [`MAX_ENDS`] (while another batch runs, only once [`ENOUGH`] are waiting or that batch
//! has finished: [`next_batch`]), and runs them in one transaction:
//!
//! 1. one statement takes the locks of all of them (`locks::begin_ends`). A tenant's lock is
//!    only tried: when another write of that tenant holds it (an erasure, an import's
//!    transaction, a retention sweep), the batch gives way and runs again without that
//!    tenant's ends, which wait for the lock apart ([`Apart`]), so that one tenant's write
//!    holds up no other tenant's ends;
//! 2. one reads all their calls' rows, one the customers they name, locked, and (when there
//!    are any) one the customers their calls are linked to, locked;
//! 3. each end is decided as it would be alone (`end::decide`), one after the other, given
//!    what step 2 read for it ([`Known`]); usually that reads nothing more;
//! 4. the writes of the ends decided run together ([`apply_together`]): one statement for all
//!    of them (identity links, customers' counts, variables, call rows, intents, each a
//!    data-modifying `WITH` clause over all their rows), which also reads the customers'
//!    stored documents and notifies other processes; then what is left of each end
//!    (`end::finish`), and their new documents stored in one statement;
//! 5. one commit.
//!
//! The ends of a batch give what running them one at a time would. What step 2 read for an end
//! is not used where an end before it in the batch wrote it (its call, its customer, a
//! reference). Writes run together only for ends that touch different calls, customers and
//! identities: an end that touches what an end decided before it will write (known from its
//! request and its call's row, or found only once decided: a customer it resolved to) is
//! decided after those writes have run. An end that needs its tenant to itself (a merge, a call
//! moving between customers) writes nothing in the batch and runs under the tenant's lock
//! once the batch has committed; an end refused (`no_intent`, found before it writes anything)
//! is refused alone. Any other failure rolls the batch back and its ends run again one by
//! one, each in a transaction of its own (up to three times when PostgreSQL chose it to give
//! way in a deadlock), so one bad end fails alone.
//!
//! Each end's reply waits for the commit; the caches forget what the batch changed before any
//! of its ends is answered, and other processes hear of it at the commit (the notifications
//! are sent with the writes). The commit does not wait for the log's flush unless
//! `STICKY_SYNC=full` (`locks::begin_ends`, `docs/operations.md`).
//!
//! Rows are sent as JSON arrays (`json_to_recordset`, `json_populate_recordset`), one
//! parameter whatever their number: the statements' text never changes, so each is prepared
//! once per connection.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sea_orm::{DatabaseConnection, DbBackend, TransactionTrait};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use super::cache::{CachedCustomer, Caches};
use super::context;
use super::end::{
    Applied, Decided, EndNumbers, INTENT_COLUMNS, Known, Touched, VARIABLE_SAVED, apply, decide,
    finish, identity_linked, intent_kept, named_locks,
};
use super::locks::{self, LockKey, Locking};
use super::sql::{Arg, Conn};
use super::store::{
    CALL_COLUMNS, CALL_WRITTEN_COLUMNS, CUSTOMER_COLUMNS, call_args, call_ended, call_from_row,
    customer_from_row,
};
use super::{EndOutcome, TenantId};
use crate::commands::EndCall;
use crate::domain::IntentStatus;
use crate::entities::{call, customer, identity};
use crate::error::EngineError;

/// Ends per batch at most: a batch's ends wait for the last of them.
const MAX_ENDS: usize = 32;

/// Worker tasks at most, each running one batch at a time on one of the pool's connections.
const MAX_WORKERS: u32 = 4;

/// Batches running at once from which a worker holds back a small batch (see [`next_batch`]).
const BUSY: usize = 1;

/// Ends waiting that make a batch worth starting however many batches run.
const ENOUGH: usize = 8;

/// How long a small batch waits at most while others run: a batch held up (waiting for a lock
/// another end holds, say) does not hold up the others for longer.
const HOLD: std::time::Duration = std::time::Duration::from_millis(5);

/// How an end was dealt with.
pub(super) enum Ended {
    Done(EndOutcome),
    /// It needs its tenant to itself (a merge, a call moving between customers): nothing was
    /// written; the request, back.
    NeedsTenant(Box<(EndCall, EndNumbers)>),
}

struct Pending {
    tenant: TenantId,
    cmd: EndCall,
    numbers: EndNumbers,
    reply: oneshot::Sender<Result<Ended, EngineError>>,
}

/// What became of one end of a batch.
enum Outcome {
    Done(EndOutcome, Touched),
    NeedsTenant,
    Refused(EngineError),
}

/// The handle ends use on PostgreSQL (see the module's comment).
pub(super) struct EndBatcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl EndBatcher {
    /// Starts the workers on the current tokio runtime; `None` off PostgreSQL. A quarter of the
    /// pool's connections, at most [`MAX_WORKERS`], at least one.
    pub(super) fn spawn(db: &DatabaseConnection, caches: Arc<Caches>) -> Option<Self> {
        if db.get_database_backend() != DbBackend::Postgres {
            return None;
        }
        let pool = db
            .get_postgres_connection_pool()
            .options()
            .get_max_connections();
        let workers = (pool / 4).clamp(1, MAX_WORKERS);
        let (queue, rx) = mpsc::unbounded_channel::<Pending>();
        let rx = Arc::new(Mutex::new(rx));
        let running = Arc::new(Running::default());
        let apart = Arc::new(Apart::default());
        for _ in 0..workers {
            let (db, caches, rx, running, apart) = (
                db.clone(),
                caches.clone(),
                rx.clone(),
                running.clone(),
                apart.clone(),
            );
            tokio::spawn(async move {
                loop {
                    // The queue is held while a batch is gathered, not while it runs.
                    let batch = next_batch(&mut *rx.lock().await, &running).await;
                    let Some((batch, _running)) = batch else {
                        break;
                    };
                    run(&db, &caches, &apart, batch).await;
                }
            });
        }
        Some(Self { queue })
    }

    /// Runs an end with the others waiting.
    pub(super) async fn end(
        &self,
        tenant: TenantId,
        cmd: EndCall,
        numbers: EndNumbers,
    ) -> Result<Ended, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                tenant,
                cmd,
                numbers,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The batches running, and a signal when one finishes.
#[derive(Default)]
struct Running {
    count: AtomicUsize,
    finished: Notify,
}

/// One batch counted in [`Running`] until dropped.
struct Started<'r>(&'r Running);

impl Drop for Started<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.finished.notify_waiters();
    }
}

/// The next batch: the ends waiting (waiting for one if there are none), up to [`MAX_ENDS`],
/// counted as running until the guard returned with it is dropped; `None` once the queue is
/// closed. An end starts at once when no batch runs; while [`BUSY`] batches run, a batch of
/// fewer than [`ENOUGH`] ends waits for more ends or for a batch to finish, for [`HOLD`] at
/// most. A batch costs the same seven round trips whatever its size: workers that took each
/// end as it came ran most of their batches with one end, and ends went faster with fewer,
/// fuller batches (`bench-results/HISTORY.md`).
async fn next_batch<'r, T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    running: &'r Running,
) -> Option<(Vec<T>, Started<'r>)> {
    let mut batch = Vec::new();
    if !super::batch::gather(rx, &mut batch, MAX_ENDS).await {
        return None;
    }
    let until = tokio::time::Instant::now() + HOLD;
    while batch.len() < ENOUGH {
        // Registered before the count is read, so that a batch finishing in between wakes it.
        let finished = running.finished.notified();
        if running.count.load(Ordering::Acquire) < BUSY {
            break;
        }
        // Ends first: once they are there, the batch takes them rather than leave at the hold.
        tokio::select! {
            biased;
            more = rx.recv() => match more {
                Some(end) => batch.push(end),
                None => break,
            },
            () = finished => {}
            () = tokio::time::sleep_until(until) => break,
        }
        super::batch::gather(rx, &mut batch, MAX_ENDS).await;
    }
    running.count.fetch_add(1, Ordering::AcqRel);
    Some((batch, Started(running)))
}

fn stopped() -> EngineError {
    EngineError::Corrupt("the end batcher has stopped".into())
}

/// Runs a worker's batch, then (if it failed) each of its ends alone, and answers each end.
/// The ends of tenants whose lock another write holds (an erasure, an import, a sweep) are
/// left to wait [`Apart`], and the others run without them: one tenant's write holds up no
/// other tenant's ends.
async fn run(
    db: &DatabaseConnection,
    caches: &Arc<Caches>,
    apart: &Arc<Apart>,
    batch: Vec<Pending>,
) {
    let mut batch = batch;
    let result = loop {
        match together(db, caches, &batch, false).await {
            Ok(Tried::Blocked(tenants)) => {
                let (held, free): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .partition(|end| tenants.contains(&end.tenant.0));
                apart.take(db, caches, held);
                if free.is_empty() {
                    return;
                }
                batch = free;
            }
            Ok(Tried::Ran(outcomes)) => break Ok(outcomes),
            Err(e) => break Err(e),
        }
    };
    settle(db, caches, batch, result).await;
}

/// Answers the ends of a batch that ran (`result`), or, if it failed, runs each of them alone
/// first.
async fn settle(
    db: &DatabaseConnection,
    caches: &Caches,
    batch: Vec<Pending>,
    result: Result<Vec<Outcome>, EngineError>,
) {
    #[allow(clippy::cast_precision_loss)] // at most MAX_ENDS
    metrics::histogram!("sticky_end_batch_size").record(batch.len() as f64);
    let outcomes: Vec<Result<Outcome, EngineError>> = match result {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        // The database is out of reach: every end is told so (503), none is tried again.
        Err(EngineError::Database(
            e @ (sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_)),
        )) => batch.iter().map(|_| Err(e.clone().into())).collect(),
        Err(e) if batch.len() == 1 && !locks::retryable(&e) => vec![Err(e)],
        // One end failed, or PostgreSQL chose the batch to give way in a deadlock: each end
        // again, alone, so that one bad end fails alone. Not logged: the error may quote an
        // end's values.
        Err(_) => {
            metrics::counter!("sticky_end_batches_failed_total").increment(1);
            let mut outcomes = Vec::with_capacity(batch.len());
            for end in &batch {
                outcomes.push(alone(db, caches, end).await);
            }
            outcomes
        }
    };
    for (end, outcome) in batch.into_iter().zip(outcomes) {
        answer(end, outcome);
    }
}

/// An end in a transaction of its own, again when PostgreSQL chose it to give way. It waits
/// for its tenant's lock: it runs only after its batch failed, which is rare.
async fn alone(
    db: &DatabaseConnection,
    caches: &Caches,
    end: &Pending,
) -> Result<Outcome, EngineError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match together(db, caches, std::slice::from_ref(end), true).await {
            Ok(Tried::Ran(mut outcome)) => return Ok(outcome.remove(0)),
            Ok(Tried::Blocked(_)) => {
                return Err(EngineError::Corrupt(
                    "an end waiting for its tenant's lock gave way".into(),
                ));
            }
            Err(e) if attempt < 3 && locks::retryable(&e) => {
                metrics::counter!("sticky_end_retries_total").increment(1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Ends whose tenant's lock another write holds, waiting for it apart from the workers, so
/// that the workers go on with other tenants' ends. One task per such tenant, on one of the
/// pool's connections, runs that tenant's ends in batches once it has the lock; the ends of
/// that tenant that workers find blocked meanwhile join its queue.
#[derive(Default)]
struct Apart {
    waiting: std::sync::Mutex<std::collections::HashMap<i64, Vec<Pending>>>,
}

impl Apart {
    /// Leaves these ends to wait for their tenants' locks.
    fn take(self: &Arc<Self>, db: &DatabaseConnection, caches: &Arc<Caches>, ends: Vec<Pending>) {
        use std::collections::hash_map::Entry;
        metrics::counter!("sticky_ends_waited_apart_total").increment(ends.len() as u64);
        let Ok(mut waiting) = self.waiting.lock() else {
            for end in ends {
                answer(
                    end,
                    Err(EngineError::Corrupt(
                        "the ends waiting apart were lost".into(),
                    )),
                );
            }
            return;
        };
        for end in ends {
            match waiting.entry(end.tenant.0) {
                Entry::Occupied(mut queue) => queue.get_mut().push(end),
                Entry::Vacant(slot) => {
                    let tenant = *slot.key();
                    slot.insert(vec![end]);
                    let (apart, db, caches) = (self.clone(), db.clone(), caches.clone());
                    tokio::spawn(async move { apart.serve(tenant, &db, &caches).await });
                }
            }
        }
    }

    /// Runs the tenant's waiting ends, a batch at a time, until none is left.
    async fn serve(&self, tenant: i64, db: &DatabaseConnection, caches: &Caches) {
        loop {
            let batch: Vec<Pending> = {
                let Ok(mut waiting) = self.waiting.lock() else {
                    return;
                };
                match waiting.get_mut(&tenant) {
                    Some(queue) if !queue.is_empty() => {
                        let n = queue.len().min(MAX_ENDS);
                        queue.drain(..n).collect()
                    }
                    _ => {
                        waiting.remove(&tenant);
                        return;
                    }
                }
            };
            let result = match together(db, caches, &batch, true).await {
                Ok(Tried::Ran(outcomes)) => Ok(outcomes),
                Ok(Tried::Blocked(_)) => Err(EngineError::Corrupt(
                    "ends waiting for their tenant's lock gave way".into(),
                )),
                Err(e) => Err(e),
            };
            settle(db, caches, batch, result).await;
        }
    }
}

fn answer(end: Pending, outcome: Result<Outcome, EngineError>) {
    let reply = match outcome {
        Ok(Outcome::Done(outcome, _)) => Ok(Ended::Done(outcome)),
        Ok(Outcome::NeedsTenant) => Ok(Ended::NeedsTenant(Box::new((end.cmd, end.numbers)))),
        Ok(Outcome::Refused(e)) | Err(e) => Err(e),
    };
    let _ = end.reply.send(reply);
}

/// What [`together`] did.
enum Tried {
    /// What became of each end, in their order.
    Ran(Vec<Outcome>),
    /// Nothing: these tenants' locks were taken by other writes (only when not waiting).
    Blocked(Vec<i64>),
}

/// Runs the ends in one transaction (see the module's comment) and commits it; what became of
/// each, in their order. Unless `wait`, it gives way (writing nothing) when another write
/// holds or waits for the lock of one of the ends' tenants, and says whose.
async fn together(
    db: &DatabaseConnection,
    caches: &Caches,
    ends: &[Pending],
    wait: bool,
) -> Result<Tried, EngineError> {
    let tx = db.begin().await?;
    let c = Conn::Tx(&tx);
    let mut tenants: Vec<i64> = ends.iter().map(|e| e.tenant.0).collect();
    // Each end's call and the identities and reference its request names.
    let named_keys: Vec<Vec<LockKey>> = ends
        .iter()
        .map(|e| {
            let mut keys = named_locks(e.tenant, &e.cmd, &e.numbers);
            keys.push(LockKey::call(e.tenant, e.cmd.call_id.as_str()));
            keys
        })
        .collect();
    let mut keys: Vec<LockKey> = named_keys.iter().flatten().copied().collect();
    let blocked = locks::begin_ends(c, &mut tenants, &mut keys, wait).await?;
    if !blocked.is_empty() {
        tx.rollback().await?;
        return Ok(Tried::Blocked(blocked));
    }
    let mut calls = read_calls(c, ends).await?;
    let mut named = lock_named(c, ends).await?;
    let mut linked = lock_linked(c, ends, &calls).await?;

    // What the ends decided so far will write: what was read for a later end may be out of date.
    let mut written = Touches::default();
    // Ends decided, their writes not run yet, and what they will touch.
    let mut pending: Vec<(usize, Decided<'_>)> = Vec::new();
    let mut touching = Touches::default();
    let mut outcomes: Vec<Option<Outcome>> = ends.iter().map(|_| None).collect();
    for (i, end) in ends.iter().enumerate() {
        let call_fresh = !written
            .calls
            .contains(&(end.tenant, end.cmd.call_id.as_str()));
        let fresh = |c: &customer::Model| !written.customers.contains(&c.id);
        // What was read for this end, each read used by this end alone.
        let known = Known {
            call: call_fresh.then(|| calls[i].take()),
            named: match (&end.cmd.customer_ref, named[i].take()) {
                (Some(r), n) if !written.refs.contains(&(end.tenant, r.as_str().to_owned())) => {
                    match n {
                        Some(n) if !fresh(&n) => None,
                        n => Some(n),
                    }
                }
                _ => None,
            },
            linked: linked[i].take().filter(|c| call_fresh && fresh(c)),
        };
        // An end that touches what a pending end will write runs after those writes.
        let stored = known.call.as_ref().and_then(Option::as_ref);
        let mut before = named_keys[i].clone();
        before.extend(
            stored
                .map(|s| stored_locks(end.tenant, s))
                .into_iter()
                .flatten(),
        );
        let customers = [
            known.named.as_ref().and_then(Option::as_ref),
            known.linked.as_ref(),
        ];
        if touching.meets(&before, customers.iter().flatten().map(|c| c.id)) {
            written_out(c, &mut pending, &mut outcomes).await?;
            touching = Touches::default();
        }
        let mut known = known;
        let decided = loop {
            let decided = decide(
                c,
                &end.numbers,
                end.tenant,
                &end.cmd,
                Locking::Fine {
                    held: &keys,
                    known: &known,
                },
                caches.origin(),
            )
            .await;
            let decided = match decided {
                Ok(Some(decided)) => decided,
                Ok(None) => break None,
                // Refused before it wrote anything (`decide` checks it first).
                Err(e @ EngineError::Conflict { .. }) => {
                    outcomes[i] = Some(Outcome::Refused(e));
                    break None;
                }
                Err(e) => return Err(e),
            };
            // Found only now (a customer it resolved to, an identity its start recorded): it
            // touches what a pending end will write. Decided again once those are written,
            // unless it wrote already: then the batch gives way and its ends run alone.
            if pending.is_empty() || !touching.meets_decided(&decided) {
                break Some(decided);
            }
            if decided.wrote {
                return Err(EngineError::Corrupt(
                    "an end of a batch met another's writes after writing".into(),
                ));
            }
            drop(decided);
            written_out(c, &mut pending, &mut outcomes).await?;
            touching = Touches::default();
            known = Known::default();
        };
        let Some(decided) = decided else {
            if outcomes[i].is_none() {
                outcomes[i] = Some(Outcome::NeedsTenant);
            }
            continue;
        };
        written.add(&decided);
        touching.add(&decided);
        pending.push((i, decided));
    }
    written_out(c, &mut pending, &mut outcomes).await?;
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| EngineError::Corrupt("an end of a batch was left".into())))
        .collect::<Result<_, _>>()?;
    for outcome in &outcomes {
        if let Outcome::Done(_, touched) = outcome
            && let Some(change) = touched.change(caches.origin())
        {
            crate::coherence::notify(&tx, &change).await?;
        }
    }
    tx.commit().await?;
    for outcome in &outcomes {
        if let Outcome::Done(_, touched) = outcome {
            touched.forget(caches).await;
        }
    }
    Ok(Tried::Ran(outcomes))
}

/// What ends will touch, or touched.
#[derive(Default)]
struct Touches<'e> {
    calls: HashSet<(TenantId, &'e str)>,
    customers: HashSet<i64>,
    refs: HashSet<(TenantId, String)>,
    /// Their calls' and identities' locks.
    locks: HashSet<LockKey>,
}

impl<'e> Touches<'e> {
    fn add(&mut self, d: &Decided<'e>) {
        self.calls.insert((d.tenant, d.cmd.call_id.as_str()));
        self.customers.extend(d.touched.customer_ids());
        self.refs.extend(
            d.cmd
                .customer_ref
                .iter()
                .map(|r| r.as_str().to_owned())
                .chain(d.target.as_ref().map(|t| t.customer_ref.clone()))
                .map(|r| (d.tenant, r)),
        );
        self.locks.extend(decided_locks(d));
    }

    fn meets(&self, locks: &[LockKey], mut customers: impl Iterator<Item = i64>) -> bool {
        locks.iter().any(|k| self.locks.contains(k))
            || customers.any(|c| self.customers.contains(&c))
    }

    fn meets_decided(&self, d: &Decided<'_>) -> bool {
        self.meets(&decided_locks(d), d.touched.customer_ids())
    }
}

/// The locks of what a decided end writes: its call and the identities it touches.
fn decided_locks(d: &Decided<'_>) -> Vec<LockKey> {
    d.touched
        .identity_keys()
        .iter()
        .map(|(kind, value)| LockKey::identity(d.tenant, kind, value))
        .chain([LockKey::call(d.tenant, d.cmd.call_id.as_str())])
        .collect()
}

/// The locks of the identities a call's start recorded.
fn stored_locks(tenant: TenantId, call: &call::Model) -> Vec<LockKey> {
    let external: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&call.external_ids).unwrap_or_default();
    call.ani
        .iter()
        .map(|n| LockKey::identity(tenant, identity::KIND_ANI, n))
        .chain(
            external.iter().map(|(n, v)| {
                LockKey::identity(tenant, identity::KIND_EXTERNAL, &format!("{n}:{v}"))
            }),
        )
        .collect()
}

/// Runs the writes of the pending ends together, then what is left of each ([`finish`]), and
/// stores the documents they answer.
async fn written_out(
    c: Conn<'_>,
    pending: &mut Vec<(usize, Decided<'_>)>,
    outcomes: &mut [Option<Outcome>],
) -> Result<(), EngineError> {
    if pending.is_empty() {
        return Ok(());
    }
    let applied = apply_together(c, pending).await?;
    let mut documents: Vec<CachedCustomer> = Vec::with_capacity(pending.len());
    for ((i, decided), applied) in pending.drain(..).zip(applied) {
        let (outcome, touched, document) = finish(c, decided, applied).await?;
        documents.extend(document);
        outcomes[i] = Some(Outcome::Done(outcome, touched));
    }
    context::store_documents(c, &documents).await
}

/// The writes of ends that touch different calls, customers and identities, in one statement
/// whatever the number of ends (a batch of one: [`apply`], the writes of an end alone). What
/// each end's writes answered, in their order.
async fn apply_together(
    c: Conn<'_>,
    ends: &[(usize, Decided<'_>)],
) -> Result<Vec<Applied>, EngineError> {
    use serde_json::{Value, json};
    if let [(_, alone)] = ends {
        return Ok(vec![apply(c, alone).await?]);
    }
    let mut links = Vec::new();
    let mut counts = Vec::new();
    let mut variables = Vec::new();
    let mut rows = Vec::new();
    let mut bodies = Vec::new();
    let mut notices = Vec::new();
    let mut intents = Vec::new();
    // The end of each customer written (one each: see `Touches`).
    let mut by_customer = std::collections::HashMap::new();
    for (k, (_, d)) in ends.iter().enumerate() {
        if let Some(t) = &d.target {
            by_customer.insert(t.id, k);
            for (kind, value) in &d.links {
                links.push(json!({"t": d.tenant.0, "c": t.id, "k": kind, "v": value,
                                  "at": time(d.now)}));
            }
            if d.newly_linked {
                counts.push(json!({"c": t.id, "at": time(d.now)}));
            }
            for (name, value, expires_at) in &d.saved {
                variables.push(json!({"t": d.tenant.0, "c": t.id, "n": name, "v": value,
                                      "at": time(d.call_time), "e": expires_at.map(time)}));
            }
            if d.usual {
                bodies.push(json!({"k": k, "c": t.id, "t": d.tenant.0}));
            }
        }
        rows.push(Value::Object(
            CALL_WRITTEN_COLUMNS
                .split(", ")
                .zip(call_args(&d.row).iter().map(arg_json))
                .map(|(column, value)| (column.to_owned(), value))
                .collect(),
        ));
        notices.extend(d.notice.clone());
        if let Some((id, i)) = d.intent_change() {
            let resolved = (i.status == IntentStatus::Resolved.as_str()).then_some(i.at);
            intents.push(json!({"t": d.tenant.0, "c": id, "n": i.name, "s": i.status,
                                "at": time(i.at), "r": resolved.map(time), "l": i.call_id,
                                "d": i.due_at.map(time)}));
        }
    }
    let mut applied: Vec<Applied> = ends.iter().map(|_| Applied::default()).collect();
    for (_, d) in ends {
        if let (Some(t), false) = (&d.target, d.saved.is_empty()) {
            applied[by_customer[&t.id]].variables_written = Some(0);
        }
    }
    // One statement: the writes as data-modifying `WITH` clauses (each runs to completion,
    // read or not), the documents as stored (none of the writes touches them) and the
    // notifications; one row for each variable written (0), document (1) and intent
    // written (2), and the count of notifications sent (3).
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH linked AS (INSERT INTO identities (tenant_id, customer_id, kind, value, \
               call_count, first_seen_at, last_seen_at) \
               SELECT x.t, x.c, x.k, x.v, 1, x.at, x.at FROM json_to_recordset($1::json) \
               AS x(t int8, c int8, k text, v text, at timestamptz) {linked} RETURNING 1), \
             counted AS (UPDATE customers SET call_count = call_count + 1, \
               first_seen_at = COALESCE(first_seen_at, x.at), last_seen_at = x.at, \
               updated_at = x.at FROM json_to_recordset($2::json) AS x(c int8, at timestamptz) \
               WHERE customers.id = x.c RETURNING 1), \
             saved AS (INSERT INTO variables (tenant_id, customer_id, name, value, updated_at, \
               expires_at) SELECT x.t, x.c, x.n, x.v, x.at, x.e FROM json_to_recordset($3::json) \
               AS x(t int8, c int8, n text, v text, at timestamptz, e timestamptz) \
               {VARIABLE_SAVED} RETURNING customer_id), \
             ended AS (INSERT INTO calls ({CALL_WRITTEN_COLUMNS}) SELECT {CALL_WRITTEN_COLUMNS} \
               FROM json_populate_recordset(NULL::calls, $4::json) {ended} RETURNING 1), \
             intended AS (INSERT INTO intents (tenant_id, customer_id, intent, status, opened_at, \
               updated_at, resolved_at, last_call_id, due_at) \
               SELECT x.t, x.c, x.n, x.s, x.at, x.at, x.r, x.l, x.d \
               FROM json_to_recordset($5::json) AS x(t int8, c int8, n text, s text, \
               at timestamptz, r timestamptz, l text, d timestamptz) {kept} \
               RETURNING {INTENT_COLUMNS}), \
             stored AS (SELECT x.k, d.body FROM json_to_recordset($6::json) \
               AS x(k int8, c int8, t int8) JOIN customer_contexts d \
               ON d.customer_id = x.c AND d.tenant_id = x.t AND d.format = $7), \
             sent AS (SELECT count(pg_notify($8, p)) AS n \
               FROM json_array_elements_text($9::json) AS j(p)) \
             SELECT 0::int8, customer_id, NULL::text FROM saved \
             UNION ALL SELECT 1::int8, k, body FROM stored \
             UNION ALL SELECT 2::int8, customer_id, row_to_json(intended)::text FROM intended \
             UNION ALL SELECT 3::int8, n, NULL FROM sent",
            linked = identity_linked!(),
            ended = call_ended(),
            kept = intent_kept(),
        )
    });
    let answered = c
        .query(
            &SQL,
            &[
                serde_json::to_string(&links)?.as_str().into(),
                serde_json::to_string(&counts)?.as_str().into(),
                serde_json::to_string(&variables)?.as_str().into(),
                serde_json::to_string(&rows)?.as_str().into(),
                serde_json::to_string(&intents)?.as_str().into(),
                serde_json::to_string(&bodies)?.as_str().into(),
                context::FORMAT.into(),
                crate::coherence::CHANNEL.into(),
                serde_json::to_string(&notices)?.as_str().into(),
            ],
            |r| Ok((r.int_req(0)?, r.int_req(1)?, r.text(2)?)),
        )
        .await?;
    for (kind, key, value) in answered {
        match (kind, value) {
            (0, _) => {
                if let Some(n) = by_customer
                    .get(&key)
                    .and_then(|k| applied[*k].variables_written.as_mut())
                {
                    *n += 1;
                }
            }
            (1, body) => applied[index(key)?].body = body,
            (2, Some(row)) => {
                if let Some(k) = by_customer.get(&key) {
                    applied[*k].intent_row = Some(serde_json::from_str::<IntentRow>(&row)?.into());
                }
            }
            _ => {}
        }
    }
    Ok(applied)
}

/// An intent's row as `row_to_json` gives it.
#[derive(serde::Deserialize)]
struct IntentRow {
    id: i64,
    tenant_id: i64,
    customer_id: i64,
    intent: String,
    status: String,
    opened_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    resolved_at: Option<chrono::DateTime<chrono::Utc>>,
    last_call_id: Option<String>,
    due_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<IntentRow> for crate::entities::intent::Model {
    fn from(r: IntentRow) -> Self {
        Self {
            id: r.id,
            tenant_id: r.tenant_id,
            customer_id: r.customer_id,
            intent: r.intent,
            status: r.status,
            opened_at: r.opened_at,
            updated_at: r.updated_at,
            resolved_at: r.resolved_at,
            last_call_id: r.last_call_id,
            due_at: r.due_at,
        }
    }
}

/// A time as PostgreSQL reads it back exactly (microseconds).
fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A statement parameter as a JSON value (see [`apply_together`]).
fn arg_json(a: &Arg<'_>) -> serde_json::Value {
    use serde_json::Value;
    match *a {
        Arg::Int(v) => v.map_or(Value::Null, Value::from),
        Arg::Real(v) => v.map_or(Value::Null, Value::from),
        Arg::Text(v) => v.map_or(Value::Null, Value::from),
        Arg::Time(v) => v.map_or(Value::Null, |t| Value::from(time(t))),
        Arg::Flag(v) => Value::from(v),
    }
}

/// The ends' call rows (`None`: no row yet), in their order, in one statement.
async fn read_calls(
    c: Conn<'_>,
    ends: &[Pending],
) -> Result<Vec<Option<call::Model>>, EngineError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {CALL_COLUMNS}, x.i FROM json_to_recordset($1::json) AS x(i int8, t int8, c text) \
             JOIN calls ON calls.tenant_id = x.t AND calls.call_id = x.c"
        )
    });
    let wanted: Vec<serde_json::Value> = ends
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"i": i, "t": e.tenant.0, "c": e.cmd.call_id.as_str()}))
        .collect();
    let width = columns(CALL_COLUMNS);
    let mut rows = vec![None; ends.len()];
    for (i, row) in c
        .query(
            &SQL,
            &[serde_json::to_string(&wanted)?.as_str().into()],
            |r| Ok((r.int_req(width)?, call_from_row(r)?)),
        )
        .await?
    {
        rows[index(i)?] = Some(row);
    }
    Ok(rows)
}

/// The customers the ends name by reference, locked, in their order: `None` for an end that
/// names none or a reference no customer has.
async fn lock_named(
    c: Conn<'_>,
    ends: &[Pending],
) -> Result<Vec<Option<customer::Model>>, EngineError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {CUSTOMER_COLUMNS}, x.i FROM json_to_recordset($1::json) AS x(i int8, t int8, r text) \
             JOIN customers ON customers.tenant_id = x.t AND customers.customer_ref = x.r \
             ORDER BY customers.id FOR NO KEY UPDATE OF customers"
        )
    });
    let wanted: Vec<serde_json::Value> = ends
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let r = e.cmd.customer_ref.as_ref()?;
            Some(serde_json::json!({"i": i, "t": e.tenant.0, "r": r.as_str()}))
        })
        .collect();
    customers(c, &SQL, &wanted, ends.len()).await
}

/// The customers the calls of ends that name none are linked to, locked, in the ends' order.
async fn lock_linked(
    c: Conn<'_>,
    ends: &[Pending],
    calls: &[Option<call::Model>],
) -> Result<Vec<Option<customer::Model>>, EngineError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {CUSTOMER_COLUMNS}, x.i FROM json_to_recordset($1::json) AS x(i int8, t int8, c int8) \
             JOIN customers ON customers.id = x.c AND customers.tenant_id = x.t \
             ORDER BY customers.id FOR NO KEY UPDATE OF customers"
        )
    });
    let wanted: Vec<serde_json::Value> = ends
        .iter()
        .zip(calls)
        .enumerate()
        .filter(|(_, (e, _))| e.cmd.customer_ref.is_none())
        .filter_map(|(i, (e, call))| {
            let linked = call.as_ref()?.customer_id?;
            Some(serde_json::json!({"i": i, "t": e.tenant.0, "c": linked}))
        })
        .collect();
    customers(c, &SQL, &wanted, ends.len()).await
}

/// Runs one of the customer reads above over `wanted`; the rows by end.
async fn customers(
    c: Conn<'_>,
    sql: &str,
    wanted: &[serde_json::Value],
    ends: usize,
) -> Result<Vec<Option<customer::Model>>, EngineError> {
    let mut rows = vec![None; ends];
    if wanted.is_empty() {
        return Ok(rows);
    }
    let width = columns(CUSTOMER_COLUMNS);
    for (i, row) in c
        .query(
            sql,
            &[serde_json::to_string(wanted)?.as_str().into()],
            |r| Ok((r.int_req(width)?, customer_from_row(r)?)),
        )
        .await?
    {
        rows[index(i)?] = Some(row);
    }
    Ok(rows)
}

/// How many columns a list of them names.
fn columns(list: &str) -> usize {
    list.split(',').count()
}

fn index(i: i64) -> Result<usize, EngineError> {
    usize::try_from(i).map_err(|_| EngineError::Corrupt("a batch read answered no end".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ExternalId;

    /// Polls `fut` once: its output if that is ready.
    async fn ready_now<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = fut => Some(out),
            () = std::future::ready(()) => None,
        }
    }

    #[tokio::test]
    async fn an_end_starts_at_once_when_no_batch_runs_and_waits_for_company_while_one_does() {
        let running = Running::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(1).unwrap();
        let (first, _first) = next_batch(&mut rx, &running).await.unwrap();
        assert_eq!(first, vec![1]);

        tx.send(2).unwrap();
        let mut next = Box::pin(next_batch(&mut rx, &running));
        assert!(
            ready_now(&mut next).await.is_none(),
            "a lone end waits while a batch runs"
        );
        for end in 3..=ENOUGH + 1 {
            tx.send(end).unwrap();
        }
        let (second, _second) = next.await.unwrap();
        assert_eq!(second.len(), ENOUGH, "enough ends start anyway");
        assert_eq!(running.count.load(Ordering::Acquire), 2);
    }

    #[tokio::test]
    async fn a_waiting_end_starts_when_the_running_batch_finishes() {
        let running = Running::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(1).unwrap();
        let (_, first) = next_batch(&mut rx, &running).await.unwrap();
        tx.send(2).unwrap();
        let mut next = Box::pin(next_batch(&mut rx, &running));
        assert!(ready_now(&mut next).await.is_none());
        drop(first);
        let (second, _second) = ready_now(&mut next)
            .await
            .expect("woken by the batch finishing")
            .unwrap();
        assert_eq!(second, vec![2]);
        assert_eq!(running.count.load(Ordering::Acquire), 1);
        drop(tx);
    }

    #[tokio::test]
    async fn a_waiting_end_starts_after_the_hold_while_a_batch_stays_running() {
        let running = Running::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(1).unwrap();
        let (_, _first) = next_batch(&mut rx, &running).await.unwrap();
        tx.send(2).unwrap();
        let next = next_batch(&mut rx, &running);
        let (second, _second) = tokio::time::timeout(HOLD * 200, next)
            .await
            .expect("a small batch waits for the hold at most")
            .unwrap();
        assert_eq!(second, vec![2]);
        assert_eq!(running.count.load(Ordering::Acquire), 2);
    }

    #[tokio::test]
    async fn no_batch_once_the_queue_is_closed() {
        let running = Running::default();
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        drop(tx);
        assert!(next_batch(&mut rx, &running).await.is_none());
        assert_eq!(running.count.load(Ordering::Acquire), 0);
    }

    fn call_from(ani: Option<&str>, external_ids: &str) -> call::Model {
        call::Model {
            id: 1,
            tenant_id: 3,
            call_id: "c1".into(),
            platform: "api".into(),
            ani: ani.map(str::to_owned),
            ani_withheld: false,
            dnis: None,
            external_ids: external_ids.into(),
            matched_customer_id: None,
            confidence: None,
            band: None,
            recommended_action: None,
            signals: "[]".into(),
            candidates: "[]".into(),
            customer_id: None,
            status: call::STATUS_ENDED.into(),
            intent: None,
            intent_status: None,
            summary: None,
            variables: "{}".into(),
            started_at: None,
            ended_at: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_calls_recorded_identities_lock_as_an_end_naming_them_would() {
        let tenant = TenantId(3);
        let crm = ExternalId::new("crm_id", "7").unwrap();
        assert_eq!(
            stored_locks(
                tenant,
                &call_from(Some("+14155550100"), r#"{"crm_id":"7"}"#)
            ),
            vec![
                LockKey::identity(tenant, identity::KIND_ANI, "+14155550100"),
                LockKey::identity(tenant, identity::KIND_EXTERNAL, &crm.pair()),
            ]
        );
        assert_eq!(stored_locks(tenant, &call_from(None, "{}")), vec![]);
        // Another tenant's identical call locks other keys.
        assert_ne!(
            stored_locks(TenantId(4), &call_from(Some("+14155550100"), "{}")),
            stored_locks(tenant, &call_from(Some("+14155550100"), "{}"))
        );
    }

    #[test]
    fn values_are_sent_as_postgresql_reads_them_back() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-06T08:07:09.005485999+00:00")
            .unwrap()
            .to_utc();
        // Microseconds, as PostgreSQL stores them, cut rather than rounded (as sqlx binds them).
        assert_eq!(time(t), "2026-12-06T08:07:09.005485Z");
        assert_eq!(
            arg_json(&Arg::Time(Some(t))),
            serde_json::json!("2026-12-06T08:07:09.005485Z")
        );
        assert_eq!(arg_json(&Arg::Time(None)), serde_json::Value::Null);
        assert_eq!(
            arg_json(&Arg::Int(Some(i64::MAX))),
            serde_json::json!(i64::MAX)
        );
        assert_eq!(
            arg_json(&Arg::Text(Some("a\"b"))),
            serde_json::json!("a\"b")
        );
        assert_eq!(arg_json(&Arg::Flag(true)), serde_json::json!(true));
        assert_eq!(arg_json(&Arg::Real(None)), serde_json::Value::Null);
    }
}
