//! Read caches for the call-start hot path: the identity index (key → linked customers,
//! including "nobody") and customers' answers (customer → reference and context, in its JSON
//! form). Both are bounded in bytes.
//!
//! Correctness first: every write that changes what they hold bumps a global epoch after its
//! commit and then invalidates the keys it touched. A reader that filled an entry checks the
//! epoch before and after inserting and drops its entry if a write happened meanwhile, so an
//! entry read before a commit can never outlive that commit's invalidation. A start right
//! after an end therefore always sees the end (read-your-writes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

type IdentityCacheKey = (i64, &'static str, String);

pub(super) struct Caches {
    epoch: AtomicU64,
    identities: Cache<IdentityCacheKey, Arc<Vec<IdentityLink>>>,
    /// By tenant and customer id (ids are unique across tenants; the tenant makes a hit
    /// depend on it too).
    customers: Cache<(i64, i64), Arc<CustomerAnswer>>,
}

/// Bytes the identity cache may hold.
const IDENTITY_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes the customer cache may hold.
const CUSTOMER_CACHE_BYTES: u64 = 48 * 1024 * 1024;

fn answer_weight(a: &CustomerAnswer) -> u32 {
    u32::try_from(128 + a.customer_ref.len() + a.context.get().get().len()).unwrap_or(u32::MAX)
}

impl Caches {
    pub(super) fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            identities: Cache::builder()
                .max_capacity(IDENTITY_CACHE_BYTES)
                .weigher(|k: &IdentityCacheKey, v: &Arc<Vec<IdentityLink>>| {
                    u32::try_from(k.2.len() + 96 + v.len() * 48).unwrap_or(u32::MAX)
                })
                .build(),
            customers: Cache::builder()
                .max_capacity(CUSTOMER_CACHE_BYTES)
                .weigher(|_: &(i64, i64), v: &Arc<CustomerAnswer>| answer_weight(v))
                .build(),
        }
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
        let mut missing = Vec::new();
        for k in keys {
            match self.identities.get(&(tenant.0, k.0, k.1.clone())).await {
                Some(v) => {
                    found.insert(k.clone(), v.as_ref().clone());
                }
                None => missing.push(k.clone()),
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
        if self.epoch() != epoch {
            return;
        }
        for (k, v) in read {
            self.identities
                .insert((tenant.0, k.0, k.1.clone()), Arc::new(v.clone()))
                .await;
        }
        if self.epoch() != epoch {
            for k in read.keys() {
                self.identities
                    .invalidate(&(tenant.0, k.0, k.1.clone()))
                    .await;
            }
        }
    }

    pub(super) async fn customer(&self, tenant: TenantId, id: i64) -> Option<Arc<CustomerAnswer>> {
        self.customers.get(&(tenant.0, id)).await
    }

    /// Fills a customer entry read at `epoch`.
    pub(super) async fn fill_customer(&self, epoch: u64, value: Arc<CustomerAnswer>) {
        if self.epoch() != epoch {
            return;
        }
        let key = (value.tenant.0, value.id);
        self.customers.insert(key, value).await;
        if self.epoch() != epoch {
            self.customers.invalidate(&key).await;
        }
    }

    /// After a committed write: what it touched is read again from the database.
    pub(super) async fn written(
        &self,
        tenant: TenantId,
        customers: &[i64],
        identities: &[IdentityKey],
    ) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for id in customers {
            self.customers.invalidate(&(tenant.0, *id)).await;
        }
        for k in identities {
            self.identities
                .invalidate(&(tenant.0, k.0, k.1.clone()))
                .await;
        }
    }

    /// After a committed write whose reach is wide (merge, erasure, import): forget all.
    pub(super) fn written_widely(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.identities.invalidate_all();
        self.customers.invalidate_all();
    }
}
