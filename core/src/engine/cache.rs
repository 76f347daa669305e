//! Read caches for the call-start hot path: the identity index (key → linked customers,
//! including "nobody") and customers' answers (customer → reference and context, in its JSON
//! form). Both are bounded in bytes. They sit in front of reads through sea-orm's pool
//! (PostgreSQL: a round trip); on the direct SQLite path they are off ([`Caches::off`]).
//!
//! Correctness first: every write that changes what they hold bumps a global epoch after its
//! commit and then invalidates the keys it touched. A reader that filled an entry checks the
//! epoch before and after inserting and drops its entry if a write happened meanwhile, so an
//! entry read before a commit can never outlive that commit's invalidation. A start right
//! after an end therefore always sees the end (read-your-writes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use moka::future::Cache;

use super::store::IdentityKey;
use super::{ContextJson, CustomerContext, TenantId};
use crate::entities::customer;
use crate::error::EngineError;
use crate::scoring::IdentityLink;

/// A customer's row and context, decoded: what the writes work on and the document stores.
#[derive(Debug, PartialEq)]
pub(super) struct CachedCustomer {
    pub model: customer::Model,
    pub context: CustomerContext,
    /// When the first of `context.open_intents` was last touched (they are ordered by that
    /// time): an end that opens an intent later than it can put it first without reading the
    /// others back.
    pub newest_open_intent: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a start answers with about its best customer, as cached.
#[derive(Debug)]
pub(super) struct CustomerAnswer {
    pub id: i64,
    pub tenant: TenantId,
    pub customer_ref: String,
    pub context: ContextJson,
}

impl CustomerAnswer {
    /// A customer's answer, from their row and context.
    pub(super) fn of(c: &CachedCustomer) -> Result<Self, EngineError> {
        Ok(Self {
            id: c.model.id,
            tenant: TenantId(c.model.tenant_id),
            customer_ref: c.model.customer_ref.clone(),
            context: ContextJson::new(&c.context)?,
        })
    }
}

/// A tenant and the digest of an identity (see [`identity_digest`]).
type IdentityCacheKey = (i64, [u8; 16]);

/// An identity's name in the cache and in notifications to other processes (see
/// `crate::coherence`): the first 16 bytes of SHA-256 over the tenant, kind and value, so
/// that a notification never carries a phone number.
pub(crate) fn identity_digest(tenant: TenantId, kind: &str, value: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(tenant.0.to_be_bytes());
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// A digest as hex, for a notification.
pub(crate) fn digest_hex(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_of_hex(text: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if text.len() != 32 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub(super) struct Caches {
    /// This engine's name in its notifications (random), so that it skips its own.
    origin: String,
    epoch: AtomicU64,
    /// Whether entries may be used: false while the notifications of other processes may be
    /// missed (a PostgreSQL process whose listening connection is down).
    coherent: AtomicBool,
    /// `None` when off (see [`Caches::off`]).
    stores: Option<Stores>,
}

struct Stores {
    identities: Cache<IdentityCacheKey, Arc<Vec<IdentityLink>>>,
    /// By tenant and customer id (ids are unique across tenants; the tenant makes a hit
    /// depend on it too).
    customers: Cache<(i64, i64), Arc<CustomerAnswer>>,
}

/// Bytes both caches may hold together unless the server is told otherwise
/// (`STICKY_CACHE_MB`). Enough for the answers of about 150,000 customers with documents of
/// 1 KB: a cache smaller than the callers who call again misses on most starts, and each miss
/// costs a read, an insertion and an eviction.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

fn answer_weight(a: &CustomerAnswer) -> u32 {
    u32::try_from(128 + a.customer_ref.len() + a.context.get().get().len()).unwrap_or(u32::MAX)
}

impl Caches {
    /// Caches in front of reads through sea-orm's pool (PostgreSQL: a round trip), holding
    /// `bytes` in all: a quarter for identities, whose entries (about 160 bytes) are smaller
    /// than customers' answers (the document and 128 bytes).
    pub(super) fn new(bytes: u64) -> Self {
        let identity_bytes = bytes / 4;
        Self {
            origin: crate::random_token(12),
            epoch: AtomicU64::new(0),
            coherent: AtomicBool::new(true),
            stores: Some(Stores {
                identities: Cache::builder()
                    .max_capacity(identity_bytes)
                    .weigher(|_: &IdentityCacheKey, v: &Arc<Vec<IdentityLink>>| {
                        u32::try_from(112 + v.len() * 48).unwrap_or(u32::MAX)
                    })
                    .build(),
                customers: Cache::builder()
                    .max_capacity(bytes - identity_bytes)
                    .weigher(|_: &(i64, i64), v: &Arc<CustomerAnswer>| answer_weight(v))
                    .build(),
            }),
        }
    }

    /// No caches: every look-up misses and fills nothing. For reads of a local SQLite file,
    /// where a miss costs a few page reads and keeping the caches costs more than that on
    /// traffic that rarely repeats a key before a write invalidates it (an end invalidates its
    /// customer): moka's insertions, evictions and table rebuilds took 6–10 µs per start at
    /// 1M customers, 10–20 µs of CPU in all, of a start of 120–140 µs (`bench-results/HISTORY.md`).
    pub(super) fn off() -> Self {
        Self {
            origin: crate::random_token(12),
            epoch: AtomicU64::new(0),
            coherent: AtomicBool::new(true),
            stores: None,
        }
    }

    /// The stores, when they may be used.
    fn usable(&self) -> Option<&Stores> {
        self.stores
            .as_ref()
            .filter(|_| self.coherent.load(Ordering::Acquire))
    }

    /// Whether other processes' notifications are being heard. Losing them empties the
    /// caches and turns them off; hearing them again (after a fresh `LISTEN`) turns them on,
    /// empty.
    pub(super) fn set_coherent(&self, coherent: bool) {
        self.coherent.store(false, Ordering::Release);
        self.written_widely();
        if coherent {
            self.coherent.store(true, Ordering::Release);
        }
    }

    /// This engine's name in its notifications.
    pub(super) fn origin(&self) -> &str {
        &self.origin
    }

    /// Applies another engine's change (its own are skipped: already applied).
    pub(super) async fn apply(&self, change: &crate::coherence::Change) {
        use crate::coherence::Change;
        if change.origin() == self.origin {
            return;
        }
        match change {
            Change::Customers {
                tenant,
                customers,
                identities,
                ..
            } => {
                let digests: Vec<[u8; 16]> =
                    identities.iter().filter_map(|h| digest_of_hex(h)).collect();
                if digests.len() == identities.len() {
                    self.forget(TenantId(*tenant), customers, &digests).await;
                } else {
                    self.written_widely();
                }
            }
            Change::Tenant { .. } => self.written_widely(),
            Change::KeyRevoked { .. } | Change::Secret { .. } | Change::Settings { .. } => {}
        }
    }

    /// Whether the caches keep anything.
    #[cfg(test)]
    pub(super) fn on(&self) -> bool {
        self.stores.is_some()
    }

    /// The current epoch, to take before reading the database for a cache fill.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The cached links of `keys`; the second value lists the keys missing.
    pub(super) async fn links(
        &self,
        tenant: TenantId,
        keys: &[IdentityKey],
    ) -> (HashMap<IdentityKey, Vec<IdentityLink>>, Vec<IdentityKey>) {
        let mut found = HashMap::new();
        let Some(stores) = self.usable() else {
            return (found, keys.to_vec());
        };
        let mut missing = Vec::new();
        for k in keys {
            match stores
                .identities
                .get(&(tenant.0, identity_digest(tenant, k.0, &k.1)))
                .await
            {
                Some(v) => {
                    crate::stats::IDENTITIES.record(true);
                    found.insert(k.clone(), v.as_ref().clone());
                }
                None => {
                    crate::stats::IDENTITIES.record(false);
                    missing.push(k.clone());
                }
            }
        }
        (found, missing)
    }

    /// Fills identity entries read at `epoch`.
    pub(super) async fn fill_links(
        &self,
        tenant: TenantId,
        epoch: u64,
        read: &HashMap<IdentityKey, Vec<IdentityLink>>,
    ) {
        let Some(stores) = self.usable() else { return };
        if self.epoch() != epoch {
            return;
        }
        for (k, v) in read {
            stores
                .identities
                .insert(
                    (tenant.0, identity_digest(tenant, k.0, &k.1)),
                    Arc::new(v.clone()),
                )
                .await;
        }
        if self.epoch() != epoch || !self.coherent.load(Ordering::Acquire) {
            for k in read.keys() {
                stores
                    .identities
                    .invalidate(&(tenant.0, identity_digest(tenant, k.0, &k.1)))
                    .await;
            }
        }
    }

    pub(super) async fn customer(&self, tenant: TenantId, id: i64) -> Option<Arc<CustomerAnswer>> {
        let found = self.usable()?.customers.get(&(tenant.0, id)).await;
        crate::stats::CUSTOMERS.record(found.is_some());
        found
    }

    /// Fills a customer entry read at `epoch`.
    pub(super) async fn fill_customer(&self, epoch: u64, value: Arc<CustomerAnswer>) {
        let Some(stores) = self.usable() else { return };
        if self.epoch() != epoch {
            return;
        }
        let key = (value.tenant.0, value.id);
        stores.customers.insert(key, value).await;
        if self.epoch() != epoch || !self.coherent.load(Ordering::Acquire) {
            stores.customers.invalidate(&key).await;
        }
    }

    /// After a committed write: what it touched is read again from the database.
    pub(super) async fn written(
        &self,
        tenant: TenantId,
        customers: &[i64],
        identities: &[IdentityKey],
    ) {
        if self.stores.is_none() {
            // Nothing cached (a SQLite file): no digests to compute.
            self.epoch.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let digests: Vec<[u8; 16]> = identities
            .iter()
            .map(|k| identity_digest(tenant, k.0, &k.1))
            .collect();
        self.forget(tenant, customers, &digests).await;
    }

    /// Forgets these customers and identities (by digest).
    async fn forget(&self, tenant: TenantId, customers: &[i64], identities: &[[u8; 16]]) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let Some(stores) = &self.stores else { return };
        for id in customers {
            stores.customers.invalidate(&(tenant.0, *id)).await;
        }
        for d in identities {
            stores.identities.invalidate(&(tenant.0, *d)).await;
        }
    }

    /// After a committed write whose reach is wide (merge, erasure, import): forget all.
    pub(super) fn written_widely(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(stores) = &self.stores {
            stores.identities.invalidate_all();
            stores.customers.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: i64) -> Arc<CustomerAnswer> {
        Arc::new(CustomerAnswer {
            id,
            tenant: TenantId(1),
            customer_ref: format!("c-{id}"),
            context: ContextJson::new(&CustomerContext {
                variables: std::collections::BTreeMap::new(),
                open_intents: Vec::new(),
                variable_expiry: Default::default(),
                recent_calls: Vec::new(),
                call_count: 0,
                first_seen_at: None,
                last_seen_at: None,
            })
            .unwrap(),
        })
    }

    /// What one cache answers after a fill: (links found, keys missing, customer found).
    async fn after_fill(caches: &Caches) -> (usize, usize, bool) {
        let keys: Vec<IdentityKey> = vec![("ani", "+14155550100".into())];
        let link = IdentityLink {
            customer: 7,
            call_count: 2,
            last_seen_at: crate::now(),
        };
        let read = HashMap::from([(keys[0].clone(), vec![link])]);
        caches.fill_links(TenantId(1), caches.epoch(), &read).await;
        caches.fill_customer(caches.epoch(), answer(7)).await;
        let (found, missing) = caches.links(TenantId(1), &keys).await;
        let customer = caches.customer(TenantId(1), 7).await;
        (found.len(), missing.len(), customer.is_some())
    }

    #[tokio::test]
    async fn caches_that_are_off_keep_nothing_and_caches_that_are_on_keep_fills() {
        assert_eq!(
            after_fill(&Caches::new(DEFAULT_CACHE_BYTES)).await,
            (1, 0, true)
        );
        assert_eq!(after_fill(&Caches::off()).await, (0, 1, false));
    }

    /// The bytes given are shared out (a quarter to identities), and a cache full of
    /// customers' answers keeps within its share.
    #[tokio::test]
    async fn caches_hold_the_bytes_they_are_given() {
        let caches = Caches::new(4 * 1024 * 1024);
        let stores = caches.stores.as_ref().unwrap();
        assert_eq!(stores.identities.policy().max_capacity(), Some(1024 * 1024));
        assert_eq!(
            stores.customers.policy().max_capacity(),
            Some(3 * 1024 * 1024)
        );
        let weight = u64::from(answer_weight(&answer(0)));
        let fits = 3 * 1024 * 1024 / weight;
        for id in 0..2 * fits {
            caches
                .fill_customer(caches.epoch(), answer(i64::try_from(id).unwrap()))
                .await;
        }
        stores.customers.run_pending_tasks().await;
        assert!(stores.customers.weighted_size() <= 3 * 1024 * 1024);
        assert!(
            stores.customers.entry_count() > fits / 2,
            "the cache kept too little"
        );
    }

    /// A fill read before a write committed is not kept. (The second check, after the
    /// insert, covers a write that commits while the fill inserts; it needs a race to test.)
    #[tokio::test]
    async fn a_fill_read_before_a_write_is_dropped() {
        let caches = Caches::new(DEFAULT_CACHE_BYTES);
        let keys: Vec<IdentityKey> = vec![("ani", "+14155550100".into())];
        let read = HashMap::from([(keys[0].clone(), Vec::new())]);
        let epoch = caches.epoch();
        caches.written(TenantId(1), &[7], &keys).await;
        caches.fill_customer(epoch, answer(7)).await;
        caches.fill_links(TenantId(1), epoch, &read).await;
        assert!(caches.customer(TenantId(1), 7).await.is_none());
        assert_eq!(caches.links(TenantId(1), &keys).await.1, keys);
        caches.fill_customer(caches.epoch(), answer(7)).await;
        caches.fill_links(TenantId(1), caches.epoch(), &read).await;
        assert!(caches.customer(TenantId(1), 7).await.is_some());
        assert!(caches.links(TenantId(1), &keys).await.1.is_empty());
    }
}
