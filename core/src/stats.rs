//! Counters of the in-process caches' hits and misses, read by the server's `/metrics`, and
//! [`Sharded`], the counter they (and the plans' usage counts) are made of: a look-up on the
//! hot path pays one uncontended relaxed increment, not a metrics-registry look-up, and
//! threads counting at once do not pass one cache line back and forth.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards of a [`Sharded`] counter (threads beyond it share).
const SHARDS: usize = 16;

/// One counter on its own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A counter split by thread: adding touches the calling thread's shard only.
#[derive(Debug)]
pub struct Sharded([Padded; SHARDS]);

impl Default for Sharded {
    fn default() -> Self {
        Self::new()
    }
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

fn shard() -> usize {
    SHARD.with(|s| {
        s.get().unwrap_or_else(|| {
            let i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(Some(i));
            i
        })
    })
}

impl Sharded {
    /// Zero.
    pub const fn new() -> Self {
        Self([const { Padded(AtomicU64::new(0)) }; SHARDS])
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total.
    pub fn sum(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
    }

    /// The total, leaving zero (each shard is taken atomically: nothing added meanwhile is
    /// lost, it is in the total or stays for the next take).
    pub fn take(&self) -> u64 {
        self.0.iter().map(|p| p.0.swap(0, Ordering::Relaxed)).sum()
    }
}

/// Hits and misses of one cache.
#[derive(Debug, Default)]
pub struct Lookups {
    hits: Sharded,
    misses: Sharded,
}

impl Lookups {
    /// Counts a look-up: `hit` when the cache answered.
    pub fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.add(1);
    }

    /// (hits, misses) so far.
    pub fn read(&self) -> (u64, u64) {
        (self.hits.sum(), self.misses.sum())
    }
}

/// The caches of a process, by the name `/metrics` reports them under.
pub static API_KEYS: Lookups = Lookups::new();
/// Platform secrets (decrypted connector settings).
pub static PLATFORM_SECRETS: Lookups = Lookups::new();
/// Tenants' settings.
pub static TENANT_SETTINGS: Lookups = Lookups::new();
/// Identity links (number or external id to customers), where the call path caches them
/// (PostgreSQL and other pooled databases; a SQLite file is read directly).
pub static IDENTITIES: Lookups = Lookups::new();
/// Customers' answers (context documents), as for [`IDENTITIES`].
pub static CUSTOMERS: Lookups = Lookups::new();

/// Every cache with its name.
pub fn all() -> [(&'static str, &'static Lookups); 5] {
    [
        ("api_keys", &API_KEYS),
        ("platform_secrets", &PLATFORM_SECRETS),
        ("tenant_settings", &TENANT_SETTINGS),
        ("identities", &IDENTITIES),
        ("customers", &CUSTOMERS),
    ]
}

impl Lookups {
    const fn new() -> Self {
        Self {
            hits: Sharded::new(),
            misses: Sharded::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_counter_adds_up_across_threads_and_is_taken_once() {
        let c = std::sync::Arc::new(Sharded::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(1)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.sum(), 8000);
        assert_eq!(c.take(), 8000);
        assert_eq!(c.sum(), 0);
    }

    #[test]
    fn hits_and_misses_are_counted_apart() {
        let l = Lookups::new();
        l.record(true);
        l.record(true);
        l.record(false);
        assert_eq!(l.read(), (2, 1));
    }
}
