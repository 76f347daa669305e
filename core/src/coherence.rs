//! Cache coherence between server processes on one PostgreSQL database.
//!
//! Each process caches identity links, customers' answers, verified keys and decrypted
//! platform secrets. A write notifies the others on the channel [`CHANNEL`] (`pg_notify`
//! inside the write's own transaction, so the notification is delivered exactly when the
//! write commits, and never for a write that rolled back); every process listens and forgets
//! what the write touched. Payloads carry ids and hashed identity keys, never a phone number
//! or a key: an identity is named by a 16-byte SHA-256 digest of the tenant, its kind and its
//! value, which is also how the identity cache is keyed.
//!
//! Staleness is bounded by the notification's delivery (milliseconds after the commit).
//! While a process's listening connection is down, its caches are off (every read goes to
//! the database) and they are emptied when it listens again, so a lost notification cannot
//! leave a stale entry behind. A process's own writes invalidate its caches directly, so its
//! reads after its own writes are exact.

use serde::{Deserialize, Serialize};

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "sticky_calls_cache";

/// PostgreSQL refuses payloads of 8000 bytes or more; past this, a change is sent as
/// [`Change::Tenant`] (forget everything of the tenant).
pub const MAX_PAYLOAD: usize = 7000;

/// What a write changed, as other processes need to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// These customers' answers and these identities' links (hex digests).
    Customers {
        /// The writing process, which ignores its own notifications.
        origin: String,
        /// The tenant.
        tenant: i64,
        /// Customer ids.
        customers: Vec<i64>,
        /// Identity digests, hex.
        identities: Vec<String>,
    },
    /// Anything of the tenant (a merge, an erasure, an import).
    Tenant {
        /// The writing process.
        origin: String,
        /// The tenant.
        tenant: i64,
    },
    /// An API key was revoked.
    KeyRevoked {
        /// The writing process.
        origin: String,
        /// The key's id.
        key_id: String,
    },
    /// A tenant's settings changed.
    Settings {
        /// The writing engine.
        origin: String,
        /// The tenant.
        tenant: i64,
    },
    /// A tenant's platform secret changed.
    Secret {
        /// The writing process.
        origin: String,
        /// The tenant.
        tenant: i64,
        /// The platform slug.
        platform: String,
    },
}

impl Change {
    /// The process that wrote.
    pub fn origin(&self) -> &str {
        match self {
            Self::Customers { origin, .. }
            | Self::Tenant { origin, .. }
            | Self::KeyRevoked { origin, .. }
            | Self::Settings { origin, .. }
            | Self::Secret { origin, .. } => origin,
        }
    }

    /// The notification payload: JSON, within PostgreSQL's limit (a change too large to
    /// send is widened to its tenant).
    pub fn payload(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        match self {
            Self::Customers { origin, tenant, .. } if text.len() > MAX_PAYLOAD => {
                serde_json::to_string(&Self::Tenant {
                    origin: origin.clone(),
                    tenant: *tenant,
                })
                .unwrap_or_default()
            }
            _ => text,
        }
    }

    /// Reads a payload; `None` for anything else on the channel.
    pub fn parse(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok()
    }
}

/// A name for changes that are not an engine's (key revocations, secrets): random per
/// process. Listeners apply those whoever sent them.
pub fn process_origin() -> &'static str {
    static ORIGIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(|| crate::random_token(12))
}

/// Notifies the other processes of `change`, inside `conn`'s transaction when it is one
/// (delivered at its commit). Only on PostgreSQL; elsewhere nothing to do.
///
/// # Errors
/// Database failures.
pub async fn notify<C: sea_orm::ConnectionTrait>(
    conn: &C,
    change: &Change,
) -> Result<(), sea_orm::DbErr> {
    use sea_orm::{DbBackend, Statement};
    if conn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [CHANNEL.into(), change.payload().into()],
    ))
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_too_large_to_send_is_widened_to_its_tenant() {
        let big = Change::Customers {
            origin: "o".into(),
            tenant: 7,
            customers: (0..2000).collect(),
            identities: Vec::new(),
        };
        assert_eq!(
            Change::parse(&big.payload()),
            Some(Change::Tenant {
                origin: "o".into(),
                tenant: 7
            })
        );
        let small = Change::KeyRevoked {
            origin: "o".into(),
            key_id: "k".into(),
        };
        assert_eq!(Change::parse(&small.payload()), Some(small));
        assert_eq!(Change::parse("not json"), None);
    }
}
