//! Counters of the in-process caches' hits and misses, read by the server's `/metrics`. Plain
//! atomics: a look-up on the hot path pays one relaxed increment, not a metrics-registry
//! look-up.

use std::sync::atomic::{AtomicU64, Ordering};

/// Hits and misses of one cache.
#[derive(Debug, Default)]
pub struct Lookups {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Lookups {
    /// Counts a look-up: `hit` when the cache answered.
    pub fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (hits, misses) so far.
    pub fn read(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
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
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_and_misses_are_counted_apart() {
        let l = Lookups::new();
        l.record(true);
        l.record(true);
        l.record(false);
        assert_eq!(l.read(), (2, 1));
    }
}
