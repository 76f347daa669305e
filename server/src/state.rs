//! What every handler shares.

use sticky_core::Engine;
use sticky_core::connector::Connector;
use sticky_core::keys::KeyStore;
use sticky_core::secrets::SecretStore;

/// The engine and the key store, behind one `Arc`.
pub struct AppState {
    /// Call memory.
    pub engine: Engine,
    /// Tenants and API keys.
    pub keys: KeyStore,
    /// Encrypted platform secrets.
    pub secrets: SecretStore,
    /// The connectors served (see `connectors::registry`).
    pub connectors: Vec<Box<dyn Connector>>,
    /// Public base URL platforms call us at, when behind a proxy.
    pub public_base_url: Option<String>,
    /// Keys to verify (with bcrypt) per client address: a flood of wrong keys from one
    /// address is refused before any bcrypt runs.
    pub verifications: governor::DefaultKeyedRateLimiter<String>,
    /// Keys (by digest) counted against their address in the last seconds: concurrent first
    /// uses of one key count once.
    pub counted_keys: moka::future::Cache<[u8; 32], ()>,
    /// The bearer token `GET /metrics` asks for; `None`: open.
    pub metrics_token: Option<String>,
    /// Plans, rate limits and quotas.
    pub limits: std::sync::Arc<crate::limits::Limits>,
    /// `POST /v1/signup` is open.
    pub signup_open: bool,
    /// Signups per client address.
    pub signups: governor::DefaultKeyedRateLimiter<String>,
    /// Stripe's webhook signing secret (`None`: the webhook is off).
    pub stripe_webhook_secret: Option<String>,
}

/// Signups per client address: 3 at once, then one every 20 minutes (3 an hour).
pub fn signup_limiter() -> governor::DefaultKeyedRateLimiter<String> {
    use std::num::NonZeroU32;
    let quota = governor::Quota::per_hour(NonZeroU32::new(3).expect("3 > 0"))
        .allow_burst(NonZeroU32::new(3).expect("3 > 0"));
    governor::RateLimiter::keyed(quota)
}

/// Keys counted recently (see [`AppState::counted_keys`]).
pub fn counted_keys() -> moka::future::Cache<[u8; 32], ()> {
    moka::future::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(std::time::Duration::from_secs(10))
        .build()
}

/// Verifications of not-yet-known keys per client address: a burst of 10, then one every
/// 2 seconds (30 a minute). A client whose key is known (cached) never counts.
pub fn verification_limiter() -> governor::DefaultKeyedRateLimiter<String> {
    use std::num::NonZeroU32;
    let quota = governor::Quota::per_minute(NonZeroU32::new(30).expect("30 > 0"))
        .allow_burst(NonZeroU32::new(10).expect("10 > 0"));
    governor::RateLimiter::keyed(quota)
}
