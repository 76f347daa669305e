//! Tenants and API keys.
//!
//! A key is `sc_` and 40 random base-32 characters (200 bits). Its first
//! [`LOOKUP_PREFIX_LEN`] characters are a non-secret lookup prefix stored in clear; the whole
//! key is stored only as a bcrypt hash. Verification runs bcrypt on the blocking pool, and at
//! most once per key per cache period: results are cached in moka, keyed by the SHA-256 of the
//! presented token (never the token itself). Revoking a key evicts its entries at once. An
//! unknown prefix still pays for one bcrypt against a dummy hash, so timing does not tell
//! which prefixes exist.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use moka::future::Cache;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder,
};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::engine::TenantId;
use crate::entities::{api_key, tenant};
use crate::error::{EngineError, FieldError};

/// Characters of a key stored in clear for lookup.
pub const LOOKUP_PREFIX_LEN: usize = 12;
/// Shortest key accepted (also for keys supplied through `STICKY_BOOTSTRAP_API_KEY`).
pub const MIN_KEY_LEN: usize = 24;
/// Longest token even looked at.
pub const MAX_KEY_LEN: usize = 256;
/// Name of the tenant created on an empty database.
pub const DEFAULT_TENANT: &str = "default";

/// One thing a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Start and end calls, connector webhooks, read calls, the agent kit.
    Calls,
    /// Look customers up and export them.
    CustomersRead,
    /// Erase, unlink and resolve.
    CustomersWrite,
    /// Keys, connector secrets, settings, the audit trail.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are written.
    pub const ALL: [Scope; 4] = [
        Scope::Calls,
        Scope::CustomersRead,
        Scope::CustomersWrite,
        Scope::Admin,
    ];

    /// Its name: `calls`, `customers:read`, `customers:write`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::CustomersRead => "customers:read",
            Self::CustomersWrite => "customers:write",
            Self::Admin => "admin",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Self::Calls => 1,
            Self::CustomersRead => 2,
            Self::CustomersWrite => 4,
            Self::Admin => 8,
        }
    }
}

/// The scopes of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope: keys made before scopes existed, and by default.
    pub const ALL: Scopes = Scopes(15);

    /// Whether `scope` is among them.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether every one of them is among `other`.
    pub fn within(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether there is none.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Each scope, in [`Scope::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// As stored: names separated by spaces.
    pub fn to_text(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    /// From stored text; an unknown name is corrupt data.
    ///
    /// # Errors
    /// An unknown scope name.
    pub fn from_text(text: &str) -> Result<Self, EngineError> {
        text.split_whitespace()
            .map(|n| {
                Scope::parse(n)
                    .ok_or_else(|| EngineError::Corrupt(format!("unknown key scope `{n}`")))
            })
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

/// Who a verified key acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthContext {
    /// The key's tenant.
    pub tenant: TenantId,
    /// The key's public id.
    pub key_id: String,
    /// What it may do.
    pub scopes: Scopes,
}

/// A key as listed (never with its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyInfo {
    /// Public id (`key_...`), used to revoke it.
    pub id: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// Free text given at creation.
    pub label: Option<String>,
    /// What it may do.
    pub scopes: Scopes,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A key checked and hashed, not yet stored (see [`KeyStore::prepare_key`]).
pub struct PreparedKey {
    secret: String,
    prefix: String,
    hash: String,
    label: Option<String>,
    scopes: Scopes,
}

/// A key just created: the only time its secret is known.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The stored part.
    pub info: ApiKeyInfo,
    /// The whole key, to show once.
    pub secret: String,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// Storage id.
    pub id: TenantId,
    /// Unique name.
    pub name: String,
}

/// Key storage and verification.
pub struct KeyStore {
    db: DatabaseConnection,
    cost: u32,
    cache: Cache<[u8; 32], Option<AuthContext>>,
    dummy_hash: OnceCell<String>,
    /// bcrypt verifications running at once: at most [`BCRYPT_AT_ONCE`], so a flood of keys
    /// to verify waits its turn instead of taking every core from requests whose key is known.
    bcrypt_slots: tokio::sync::Semaphore,
}

/// bcrypt verifications at once at most (a few cores' worth; each takes ~50 ms at cost 10).
pub const BCRYPT_AT_ONCE: usize = 2;

/// Validates a tenant name: 1–64 of `a-z0-9_-`.
///
/// # Errors
/// A [`FieldError`] on `name`.
pub fn parse_tenant_name(name: &str) -> Result<&str, FieldError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(name)
    } else {
        Err(FieldError::new(
            "name",
            "tenant names are 1 to 64 characters of a-z, 0-9, `_` and `-`",
        ))
    }
}

/// A key given by an operator (`STICKY_BOOTSTRAP_API_KEY`) must be long enough to be secret.
fn validate_supplied_key(key: &str) -> Result<(), FieldError> {
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len())
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(FieldError::new(
            "api_key",
            format!(
                "a supplied key must be {MIN_KEY_LEN} to {MAX_KEY_LEN} printable ASCII characters without spaces"
            ),
        ));
    }
    Ok(())
}

/// The SHA-256 of a presented key: how verifications are cached (never the key itself).
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl KeyStore {
    /// A store hashing new keys at bcrypt `cost` and caching verifications for `ttl`.
    pub fn new(db: DatabaseConnection, cost: u32, ttl: Duration) -> Self {
        Self {
            db,
            cost,
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            dummy_hash: OnceCell::new(),
            bcrypt_slots: tokio::sync::Semaphore::new(BCRYPT_AT_ONCE),
        }
    }

    /// The cached verification of `token` (a success or a failure), if there is one: then
    /// knowing it costs no bcrypt.
    pub async fn cached(&self, token: &str) -> Option<Option<AuthContext>> {
        let found = self.cache.get(&digest(token)).await;
        crate::stats::API_KEYS.record(found.is_some());
        found
    }

    async fn hash(&self, secret: String) -> Result<String, EngineError> {
        let cost = self.cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(secret, cost))
            .await
            .map_err(|e| EngineError::Corrupt(format!("hashing task failed: {e}")))?
            .map_err(|e| EngineError::Corrupt(format!("bcrypt: {e}")))
    }

    /// Creates a tenant.
    ///
    /// # Errors
    /// `invalid` name, or `tenant_exists`.
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, EngineError> {
        self.create_tenant_in(&self.db, name).await
    }

    /// [`KeyStore::create_tenant`] through `conn` (a transaction of the caller's).
    ///
    /// # Errors
    /// `invalid` name, or `tenant_exists`.
    pub async fn create_tenant_in(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        name: &str,
    ) -> Result<Tenant, EngineError> {
        let name = parse_tenant_name(name)?;
        if tenant::Entity::find()
            .filter(tenant::Column::Name.eq(name))
            .one(conn)
            .await?
            .is_some()
        {
            return Err(EngineError::Conflict {
                code: "tenant_exists",
                message: "a tenant with this name already exists".into(),
            });
        }
        let row = tenant::ActiveModel {
            name: Set(name.to_owned()),
            created_at: Set(crate::now()),
            ..Default::default()
        }
        .insert(conn)
        .await?;
        Ok(Tenant {
            id: TenantId(row.id),
            name: row.name,
        })
    }

    /// A tenant by name.
    ///
    /// # Errors
    /// Database failures.
    pub async fn find_tenant(&self, name: &str) -> Result<Option<Tenant>, EngineError> {
        Ok(tenant::Entity::find()
            .filter(tenant::Column::Name.eq(name))
            .one(&self.db)
            .await?
            .map(|t| Tenant {
                id: TenantId(t.id),
                name: t.name,
            }))
    }

    /// On an empty database, creates the `default` tenant and its first key (`supplied`, or a
    /// generated one) and returns the key; `None` when tenants already exist.
    ///
    /// # Errors
    /// An unacceptable supplied key, or database failures.
    pub async fn bootstrap(&self, supplied: Option<String>) -> Result<Option<NewKey>, EngineError> {
        if tenant::Entity::find().count(&self.db).await? > 0 {
            return Ok(None);
        }
        // Refuse a bad key before anything is written: a tenant without its key would not be
        // bootstrapped again.
        if let Some(key) = &supplied {
            validate_supplied_key(key)?;
        }
        let tenant = self.create_tenant(DEFAULT_TENANT).await?;
        let key = self
            .create_key(tenant.id, Some("bootstrap".into()), supplied)
            .await?;
        Ok(Some(key))
    }

    /// Creates a key with every scope for a tenant: `secret` when given (it must be 24–256
    /// printable ASCII characters), else a random one.
    ///
    /// # Errors
    /// An unacceptable secret, a prefix already in use, or database failures.
    pub async fn create_key(
        &self,
        tenant: TenantId,
        label: Option<String>,
        secret: Option<String>,
    ) -> Result<NewKey, EngineError> {
        self.create_scoped_key(tenant, label, secret, Scopes::ALL)
            .await
    }

    /// [`KeyStore::create_key`] with only `scopes`.
    ///
    /// # Errors
    /// No scope, an unacceptable secret, a prefix already in use, or database failures.
    pub async fn create_scoped_key(
        &self,
        tenant: TenantId,
        label: Option<String>,
        secret: Option<String>,
        scopes: Scopes,
    ) -> Result<NewKey, EngineError> {
        let prepared = self.prepare_key(label, secret, scopes).await?;
        self.insert_key(&self.db, tenant, prepared).await
    }

    /// A new key checked and hashed, ready for [`KeyStore::insert_key`]: bcrypt runs here,
    /// before the caller's transaction, which would otherwise hold the database's write lock
    /// while it hashes.
    ///
    /// # Errors
    /// No scope, an unacceptable secret or label.
    pub async fn prepare_key(
        &self,
        label: Option<String>,
        secret: Option<String>,
        scopes: Scopes,
    ) -> Result<PreparedKey, EngineError> {
        if scopes.is_empty() {
            return Err(FieldError::new("scopes", "a key needs at least one scope").into());
        }
        let secret = match secret {
            Some(s) => {
                validate_supplied_key(&s)?;
                s
            }
            None => format!("sc_{}", crate::random_token(40)),
        };
        if let Some(l) = &label
            && (l.chars().count() > 128 || l.chars().any(char::is_control))
        {
            return Err(FieldError::new(
                "label",
                "must be at most 128 characters without control characters",
            )
            .into());
        }
        let prefix = secret[..LOOKUP_PREFIX_LEN].to_owned();
        Ok(PreparedKey {
            hash: self.hash(secret.clone()).await?,
            secret,
            prefix,
            label,
            scopes,
        })
    }

    /// Stores a prepared key of `tenant` through `conn`.
    ///
    /// # Errors
    /// A prefix already in use, or database failures.
    pub async fn insert_key(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        tenant: TenantId,
        key: PreparedKey,
    ) -> Result<NewKey, EngineError> {
        let PreparedKey {
            secret,
            prefix,
            hash,
            label,
            scopes,
        } = key;
        if api_key::Entity::find()
            .filter(api_key::Column::Prefix.eq(&prefix))
            .one(conn)
            .await?
            .is_some()
        {
            return Err(EngineError::Conflict {
                code: "api_key_exists",
                message: "a key with the same first characters already exists".into(),
            });
        }
        let row = api_key::ActiveModel {
            id: Set(format!("key_{}", crate::random_token(16))),
            tenant_id: Set(tenant.0),
            prefix: Set(prefix),
            secret_hash: Set(hash),
            label: Set(label),
            scopes: Set(scopes.to_text()),
            created_at: Set(crate::now()),
        }
        .insert(conn)
        .await?;
        Ok(NewKey {
            info: info(row)?,
            secret,
        })
    }

    /// The tenant's keys, oldest first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn list_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyInfo>, EngineError> {
        api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(tenant.0))
            .order_by_asc(api_key::Column::CreatedAt)
            .order_by_asc(api_key::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(info)
            .collect()
    }

    /// Deletes a key of the tenant and forgets any cached verification of it.
    ///
    /// # Errors
    /// `api_key_not_found`.
    pub async fn revoke_key(&self, tenant: TenantId, id: &str) -> Result<(), EngineError> {
        // Only what a key id can be reaches the database (PostgreSQL refuses NUL in text).
        let well_formed = id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let deleted = if !well_formed {
            0
        } else {
            api_key::Entity::delete_many()
                .filter(api_key::Column::TenantId.eq(tenant.0))
                .filter(api_key::Column::Id.eq(id))
                .exec(&self.db)
                .await?
                .rows_affected
        };
        if deleted == 0 {
            return Err(EngineError::NotFound {
                code: "api_key_not_found",
                message: "no API key with this id".into(),
            });
        }
        self.forget_key(id)?;
        // Other processes on the database forget it too.
        crate::coherence::notify(
            &self.db,
            &crate::coherence::Change::KeyRevoked {
                origin: crate::coherence::process_origin().to_owned(),
                key_id: id.to_owned(),
            },
        )
        .await?;
        Ok(())
    }

    /// Forgets any cached verification of the key `id` (revoked here or by another process).
    ///
    /// # Errors
    /// When the cache refuses the invalidation.
    pub fn forget_key(&self, id: &str) -> Result<(), EngineError> {
        let id = id.to_owned();
        self.cache
            .invalidate_entries_if(move |_, v| v.as_ref().is_some_and(|c| c.key_id == id))
            .map_err(|e| EngineError::Corrupt(format!("cache: {e}")))?;
        Ok(())
    }

    /// Forgets every cached verification (after notifications from other processes may have
    /// been missed).
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// Verifies a presented token; `None` when it is not a valid key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn authenticate(&self, token: &str) -> Result<Option<AuthContext>, EngineError> {
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&token.len()) || !token.is_ascii() {
            return Ok(None);
        }
        // Concurrent first uses of one key wait for a single verification.
        self.cache
            .try_get_with(digest(token), self.verify(token))
            .await
            .map_err(|shared| {
                Arc::try_unwrap(shared).unwrap_or_else(|e| EngineError::Corrupt(e.to_string()))
            })
    }

    async fn verify(&self, token: &str) -> Result<Option<AuthContext>, EngineError> {
        let row = api_key::Entity::find()
            .filter(api_key::Column::Prefix.eq(&token[..LOOKUP_PREFIX_LEN]))
            .one(&self.db)
            .await?;
        let hash = match &row {
            Some(r) => r.secret_hash.clone(),
            None => self.dummy_hash().await?.to_owned(),
        };
        let presented = token.to_owned();
        let _slot = self
            .bcrypt_slots
            .acquire()
            .await
            .map_err(|e| EngineError::Corrupt(format!("bcrypt slots: {e}")))?;
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(presented, &hash))
            .await
            .map_err(|e| EngineError::Corrupt(format!("verify task failed: {e}")))?
            .unwrap_or(false);
        Ok(match row {
            Some(r) if verified => Some(AuthContext {
                tenant: TenantId(r.tenant_id),
                scopes: Scopes::from_text(&r.scopes)?,
                key_id: r.id,
            }),
            _ => None,
        })
    }

    async fn dummy_hash(&self) -> Result<&str, EngineError> {
        self.dummy_hash
            .get_or_try_init(|| self.hash(crate::random_token(32)))
            .await
            .map(String::as_str)
    }
}

fn info(row: api_key::Model) -> Result<ApiKeyInfo, EngineError> {
    Ok(ApiKeyInfo {
        scopes: Scopes::from_text(&row.scopes)?,
        id: row.id,
        prefix: row.prefix,
        label: row.label,
        created_at: row.created_at,
    })
}
