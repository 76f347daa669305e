//! The Sticky Calls memory engine.
//!
//! - [`domain`]: parsed value types (phone numbers, ids).
//! - [`scoring`]: identity resolution and confidence, pure and table-tested.
//! - [`engine`]: call memory on top of a sea-orm database (start, end, customers, erasure).
//! - [`keys`]: tenants and API keys (bcrypt hashes, cached verification).
//! - [`connector`]: the trait every platform connector implements.
//! - [`agent`]: the caller's memory rendered for an AI agent, inert as data.
//! - [`coherence`]: cache invalidation across server processes on one PostgreSQL database.
//! - [`wire`]: how timestamps are written in JSON.
//!
//! This crate knows nothing about HTTP: the server and the connectors translate wire formats
//! into the commands defined in [`commands`].

pub mod agent;
pub mod audit;
pub mod billing;
pub mod coherence;
pub mod commands;
pub mod connector;
pub mod db;
pub mod domain;
pub mod engine;
pub mod entities;
pub mod error;
pub mod keys;
pub mod plans;
pub mod scoring;
pub mod secrets;
pub mod stats;
pub mod wire;

pub use engine::Engine;
pub use error::{EngineError, FieldError};

/// Random lower-case base-32 text (a-z, 2-7) from the OS generator: for ids and secrets.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The current time, truncated to microseconds: the precision PostgreSQL stores, so a value
/// read back equals the value written on every backend.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
