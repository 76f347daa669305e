//! Plans enforced: each tenant's rate limit (requests a minute, with a burst of a few
//! seconds' worth) and monthly quota of calls.
//!
//! - **What counts**: a successful (2xx) answer of the call endpoints — start, end, the
//!   connector webhooks, customer look-ups and exports. Errors, usage, keys, settings and
//!   health never count. A request is admitted against the quota before it runs and counted
//!   only if it succeeded.
//! - **Counting** is in memory and written to the database every second (one `UPDATE` per
//!   tenant that made calls), so a call costs no write of its own. Near the end of a quota
//!   (its last [`sync_margin`] calls) each call is instead reserved in the database atomically
//!   before it runs, and given back if it fails: one process never goes over, and processes
//!   sharing a PostgreSQL database go over by at most what the others counted and had not yet
//!   written — under one second of that tenant's traffic each.
//! - **Rate limits** are per process (a token bucket, `governor`): N processes behind a load
//!   balancer allow up to N times the plan's rate.
//! - A tenant's plan and counts are read again from the database every few seconds, so a plan
//!   change or a grant made by another process (or the CLI) applies within [`REFRESH`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter, clock::DefaultClock};
use poem::http::StatusCode;
use sticky_core::billing::{BillingStore, PeriodUsage};
use sticky_core::engine::TenantId;
use sticky_core::plans::{Plan, Plans, period};
use sticky_core::stats::Sharded;

use crate::error::ApiError;

/// How often a tenant's plan and counts are read again.
pub const REFRESH: Duration = Duration::from_secs(5);
/// How often counts are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Seconds of a plan's rate a burst may take at once.
const BURST_SECONDS: u32 = 5;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Where a tenant stands this period, in this process.
pub struct TenantState {
    plan: Arc<Plan>,
    period: String,
    period_end: DateTime<Utc>,
    /// Calls counted in the database, as last read or written.
    used: AtomicU64,
    /// Credits of the period, as last read.
    credits: AtomicU64,
    /// Calls counted here and not yet written (by thread: no shared cache line per call).
    pending: Sharded,
    limiter: Option<Limiter>,
    /// 1 + when it was read from the database, in [`millis`]; 0: to read again.
    loaded: AtomicU64,
    /// Replaced by a newer state (another plan or period): threads that kept it look again.
    retired: AtomicBool,
}

impl TenantState {
    fn remaining(&self) -> Option<u64> {
        let included = self.plan.calls_per_month?;
        let allowed = included.saturating_add(self.credits.load(Ordering::Relaxed));
        let counted = self
            .used
            .load(Ordering::Relaxed)
            .saturating_add(self.pending.sum());
        Some(allowed.saturating_sub(counted))
    }
}

/// The last calls of a quota that are reserved one by one in the database.
pub fn sync_margin(plan: &Plan) -> u64 {
    let per_second = plan.requests_per_minute.map_or(0, |r| u64::from(r) / 60);
    (2 * per_second).max(10)
}

/// A tenant's rate limit as the `RateLimit-*` headers tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Requests a minute.
    pub limit: u32,
    /// Requests left in the bucket now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

/// Why a request is refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Over the rate limit.
    Rate {
        /// Seconds until a request would be admitted.
        retry_after: u64,
        /// The limit.
        info: RateInfo,
    },
    /// The month's calls are used up.
    Quota {
        /// When the next period starts.
        resets_at: DateTime<Utc>,
        /// The calls the period allowed.
        allowed: u64,
    },
}

impl Refusal {
    /// `rate_limited` or `quota_exceeded`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Rate { .. } => "rate_limited",
            Self::Quota { .. } => "quota_exceeded",
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Rate { retry_after, info } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "over this plan's rate limit of {} requests a minute; retry after {retry_after} s",
                    info.limit
                ),
            )
            .retry_after(retry_after),
            Refusal::Quota { resets_at, allowed } => {
                let wait = (resets_at - Utc::now()).num_seconds().max(1);
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota_exceeded",
                    format!(
                        "this month's {allowed} calls are used; the quota resets at {}",
                        resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                )
                .retry_after(u64::try_from(wait).unwrap_or(1))
            }
        }
    }
}

/// A request admitted against the quota, to settle once its outcome is known.
#[must_use]
pub enum Ticket {
    /// Counted in memory if it succeeds.
    Count(Arc<TenantState>),
    /// Reserved in the database; given back if it fails.
    Reserved(Arc<TenantState>, TenantId),
}

/// What `GET /v1/usage` shows.
#[derive(Debug, Clone)]
pub struct Usage {
    /// The plan.
    pub plan: Arc<Plan>,
    /// The period's key (`2026-12`), start and end.
    pub period: (String, DateTime<Utc>, DateTime<Utc>),
    /// Counts (pending ones included).
    pub counts: PeriodUsage,
}

/// Milliseconds since the process started using limits.
fn millis() -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

static NEXT_LIMITS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Each thread's copy of the states it used, by (limits instance, tenant): the request
    /// path reads no lock that other threads write.
    static LOCAL: RefCell<HashMap<(u64, i64), Arc<TenantState>>> = RefCell::new(HashMap::new());
}

/// The plans and every tenant's standing.
pub struct Limits {
    id: u64,
    plans: Plans,
    store: BillingStore,
    tenants: RwLock<HashMap<i64, Arc<TenantState>>>,
    /// States replaced while threads may still count on them: flushed once more.
    retired: Mutex<Vec<(i64, Arc<TenantState>)>>,
}

impl Limits {
    /// Limits with `plans`, stored through `store`.
    pub fn new(plans: Plans, store: BillingStore) -> Self {
        Self {
            id: NEXT_LIMITS.fetch_add(1, Ordering::Relaxed),
            plans,
            store,
            tenants: RwLock::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The plans.
    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    /// The storage.
    pub fn store(&self) -> &BillingStore {
        &self.store
    }

    /// The tenant's standing, read again when older than [`REFRESH`] or of a past period.
    async fn tenant(&self, tenant: TenantId) -> Result<Arc<TenantState>, ApiError> {
        let now = Utc::now();
        // `loaded` is 1 + the millisecond it was read at; 0: to read again.
        let fresh = |st: &TenantState| {
            let loaded = st.loaded.load(Ordering::Relaxed);
            loaded != 0
                && !st.retired.load(Ordering::Relaxed)
                && now < st.period_end
                && millis().saturating_sub(loaded - 1)
                    < u64::try_from(REFRESH.as_millis()).unwrap_or(u64::MAX)
        };
        let key = (self.id, tenant.0);
        if let Some(st) = LOCAL.with_borrow(|l| l.get(&key).cloned())
            && fresh(&st)
        {
            return Ok(st);
        }
        let current = self
            .tenants
            .read()
            .ok()
            .and_then(|m| m.get(&tenant.0).cloned());
        if let Some(st) = &current
            && fresh(st)
        {
            LOCAL.with_borrow_mut(|l| l.insert(key, st.clone()));
            return Ok(st.clone());
        }
        let st = self.load(tenant, current, now).await?;
        LOCAL.with_borrow_mut(|l| l.insert(key, st.clone()));
        Ok(st)
    }

    /// Reads the tenant's plan and counts again: refreshes `current` in place, or replaces
    /// it when its plan or period changed.
    async fn load(
        &self,
        tenant: TenantId,
        current: Option<Arc<TenantState>>,
        now: DateTime<Utc>,
    ) -> Result<Arc<TenantState>, ApiError> {
        let name = self.store.plan_of(tenant).await?.ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "no such tenant")
        })?;
        let plan = self.plans.get(&name).ok_or_else(|| {
            tracing::error!(plan = %name, "a tenant's plan is not among the configured plans");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            )
        })?;
        let (key, _, end) = period(now);
        let counts = self.store.usage(tenant, &key).await?;
        if let Some(st) = &current
            && st.period == key
            && st.plan == plan
        {
            st.used.store(counts.used, Ordering::Relaxed);
            st.credits.store(counts.credits, Ordering::Relaxed);
            st.loaded.store(millis() + 1, Ordering::Relaxed);
            return Ok(st.clone());
        }
        // New, or its plan or period changed: calls counted here and not yet written move
        // over when the period is the same; the old state is flushed once more for what
        // threads still counted on it.
        let pending = Sharded::new();
        if let Some(old) = &current {
            old.retired.store(true, Ordering::Relaxed);
            if old.period == key {
                pending.add(old.pending.take());
            }
            if let Ok(mut r) = self.retired.lock() {
                r.push((tenant.0, old.clone()));
            }
        }
        let limiter = plan
            .requests_per_minute
            .and_then(NonZeroU32::new)
            .map(|rpm| {
                let burst = NonZeroU32::new(limiter_burst(rpm.get())).unwrap_or(rpm);
                RateLimiter::direct(Quota::per_minute(rpm).allow_burst(burst))
                    .with_middleware::<StateInformationMiddleware>()
            });
        let st = Arc::new(TenantState {
            plan,
            period: key,
            period_end: end,
            used: AtomicU64::new(counts.used),
            credits: AtomicU64::new(counts.credits),
            pending,
            limiter,
            loaded: AtomicU64::new(millis() + 1),
            retired: AtomicBool::new(false),
        });
        if let Ok(mut m) = self.tenants.write() {
            m.insert(tenant.0, st.clone());
        }
        Ok(st)
    }

    /// Takes one request from the tenant's rate limit: its state for the `RateLimit-*`
    /// headers (`None` without a limit), or the refusal.
    ///
    /// # Errors
    /// The refusal (as `Err(Ok(..))`), or a database failure reading the tenant's plan.
    pub async fn rate(
        &self,
        tenant: TenantId,
    ) -> Result<Option<RateInfo>, Result<Refusal, ApiError>> {
        let st = self.tenant(tenant).await.map_err(Err)?;
        let (Some(limiter), Some(rpm)) = (&st.limiter, st.plan.requests_per_minute) else {
            return Ok(None);
        };
        let per_token = 60.0 / f64::from(rpm);
        match limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let burst = limiter_burst(rpm);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let reset = (f64::from(burst.saturating_sub(remaining)) * per_token).ceil() as u64;
                Ok(Some(RateInfo {
                    limit: rpm,
                    remaining,
                    reset,
                }))
            }
            Err(not_until) => {
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&DefaultClock::default()));
                let retry_after = wait.as_secs().saturating_add(1);
                Err(Ok(Refusal::Rate {
                    retry_after,
                    info: RateInfo {
                        limit: rpm,
                        remaining: 0,
                        reset: retry_after,
                    },
                }))
            }
        }
    }

    /// Admits a call against the tenant's quota.
    ///
    /// # Errors
    /// The refusal (as `Err(Ok(..))`), or a database failure.
    pub async fn admit(&self, tenant: TenantId) -> Result<Ticket, Result<Refusal, ApiError>> {
        let st = self.tenant(tenant).await.map_err(Err)?;
        let Some(remaining) = st.remaining() else {
            return Ok(Ticket::Count(st));
        };
        let allowed = st
            .plan
            .calls_per_month
            .unwrap_or_default()
            .saturating_add(st.credits.load(Ordering::Relaxed));
        let refusal = || Refusal::Quota {
            resets_at: st.period_end,
            allowed,
        };
        if remaining == 0 {
            return Err(Ok(refusal()));
        }
        if remaining > sync_margin(&st.plan) {
            return Ok(Ticket::Count(st));
        }
        // The last calls of the quota: reserved one by one, atomically, in the database.
        let included = st.plan.calls_per_month.unwrap_or_default();
        match self
            .store
            .reserve(tenant, &st.period, included)
            .await
            .map_err(|e| Err(ApiError::from(e)))?
        {
            Some(counts) => {
                st.used.store(counts.used, Ordering::Relaxed);
                st.credits.store(counts.credits, Ordering::Relaxed);
                Ok(Ticket::Reserved(st, tenant))
            }
            None => {
                let counts = self
                    .store
                    .usage(tenant, &st.period)
                    .await
                    .map_err(|e| Err(ApiError::from(e)))?;
                st.used.store(counts.used, Ordering::Relaxed);
                st.credits.store(counts.credits, Ordering::Relaxed);
                Err(Ok(refusal()))
            }
        }
    }

    /// Settles an admitted call: counted when it `succeeded`, a reservation given back when
    /// it did not.
    pub async fn settle(&self, ticket: Ticket, succeeded: bool) {
        match ticket {
            Ticket::Count(st) => {
                if succeeded {
                    st.pending.add(1);
                }
            }
            Ticket::Reserved(st, tenant) => {
                if !succeeded {
                    if let Err(e) = self.store.release(tenant, &st.period).await {
                        tracing::warn!(error = %e, "a reserved call was not given back");
                    } else {
                        let _ = st
                            .used
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                                Some(u.saturating_sub(1))
                            });
                    }
                }
            }
        }
    }

    /// Writes the calls counted here since the last time.
    pub async fn flush(&self) {
        let mut states: Vec<(i64, Arc<TenantState>)> = self
            .tenants
            .read()
            .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default();
        if let Ok(mut r) = self.retired.lock() {
            states.append(&mut r);
        }
        for (tenant, st) in states {
            let n = st.pending.take();
            if n == 0 {
                continue;
            }
            match self.store.add_used(TenantId(tenant), &st.period, n).await {
                Ok(counts) => {
                    st.used.store(counts.used, Ordering::Relaxed);
                    st.credits.store(counts.credits, Ordering::Relaxed);
                }
                Err(e) => {
                    st.pending.add(n);
                    tracing::warn!(error = %e, "usage counts not written; retrying");
                }
            }
        }
    }

    /// The tenant's plan and counts now.
    ///
    /// # Errors
    /// Database failures.
    pub async fn usage(&self, tenant: TenantId) -> Result<Usage, ApiError> {
        let st = self.tenant(tenant).await?;
        let p = period(Utc::now());
        let mut counts = self.store.usage(tenant, &p.0).await?;
        if st.period == p.0 {
            counts.used = counts.used.saturating_add(st.pending.sum());
        }
        Ok(Usage {
            plan: st.plan.clone(),
            period: p,
            counts,
        })
    }

    /// Forgets what is known of a tenant (after a plan change or a grant made here): read
    /// again on its next request.
    pub fn forget(&self, tenant: TenantId) {
        if let Ok(m) = self.tenants.read()
            && let Some(st) = m.get(&tenant.0)
        {
            st.loaded.store(0, Ordering::Relaxed);
        }
    }
}

/// A burst of [`BURST_SECONDS`] of the rate, at least one request.
fn limiter_burst(rpm: u32) -> u32 {
    (rpm.saturating_mul(BURST_SECONDS) / 60).max(1)
}

/// Runs a call that counts: admitted against the tenant's quota first (429
/// `quota_exceeded` when it is used up), counted if it succeeds.
///
/// # Errors
/// The refusal, or what `work` fails with.
pub async fn counted<T>(
    state: &crate::state::AppState,
    tenant: TenantId,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let ticket = match state.limits.admit(tenant).await {
        Ok(t) => t,
        Err(Ok(refusal)) => return Err(refusal.into()),
        Err(Err(e)) => return Err(e),
    };
    let result = work.await;
    state.limits.settle(ticket, result.is_ok()).await;
    result
}

/// Writes counts every [`FLUSH_EVERY`], for as long as the process runs.
pub fn spawn_flusher(limits: Arc<Limits>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            limits.flush().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_two_seconds_of_rate_or_ten_calls() {
        let mut plan = Plans::builtin().get("scale").unwrap().as_ref().clone();
        assert_eq!(sync_margin(&plan), 2 * (10_000 / 60));
        plan.requests_per_minute = None;
        assert_eq!(sync_margin(&plan), 10);
        assert_eq!(limiter_burst(100), 8);
        assert_eq!(limiter_burst(10_000), 833);
        assert_eq!(limiter_burst(60), 5);
        assert_eq!(limiter_burst(1), 1);
    }
}
