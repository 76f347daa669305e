//! Platform secrets that must be read back (a Twilio auth token, to verify its signatures):
//! encrypted at rest with ChaCha20-Poly1305 under a server key that never enters the database.
//! The tenant id and platform are the associated data, so a ciphertext copied to another row
//! does not decrypt. Decrypted secrets are cached briefly; setting one evicts it.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use moka::future::Cache;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter,
    sea_query::OnConflict,
};

use crate::connector::PlatformSecret;
use crate::engine::TenantId;
use crate::entities::connector_setting;
use crate::error::EngineError;

/// The server's 32-byte encryption key.
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

impl ServerKey {
    /// Parses 64 hexadecimal characters.
    ///
    /// # Errors
    /// When the text is not 32 bytes of hex.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the server key must be 64 hexadecimal characters (32 bytes)".into());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| "the server key must be hexadecimal".to_owned())?;
        }
        Ok(Self(key))
    }

    /// A new random key, as 64 hex characters.
    pub fn generate_hex() -> String {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Encrypted per-tenant platform secrets.
pub struct SecretStore {
    db: DatabaseConnection,
    cipher: ChaCha20Poly1305,
    cache: Cache<(i64, String), Option<PlatformSecret>>,
}

fn aad(tenant: TenantId, platform: &str) -> Vec<u8> {
    format!("sticky-calls/{}/{platform}", tenant.0).into_bytes()
}

impl SecretStore {
    /// A store over `db` with the server key.
    pub fn new(db: DatabaseConnection, key: &ServerKey) -> Self {
        Self {
            db,
            cipher: ChaCha20Poly1305::new(&Key::from(key.0)),
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
        }
    }

    /// Stores (replaces) the tenant's secret for a platform.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set(
        &self,
        tenant: TenantId,
        platform: &str,
        secret: &PlatformSecret,
    ) -> Result<(), EngineError> {
        use rand::RngCore;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.0.as_bytes(),
                    aad: &aad(tenant, platform),
                },
            )
            .map_err(|_| EngineError::Corrupt("encryption failed".into()))?;
        connector_setting::Entity::insert(connector_setting::ActiveModel {
            tenant_id: Set(tenant.0),
            platform: Set(platform.to_owned()),
            nonce: Set(B64.encode(nonce)),
            ciphertext: Set(B64.encode(sealed)),
            updated_at: Set(crate::now()),
            ..Default::default()
        })
        .on_conflict(
            OnConflict::columns([
                connector_setting::Column::TenantId,
                connector_setting::Column::Platform,
            ])
            .update_columns([
                connector_setting::Column::Nonce,
                connector_setting::Column::Ciphertext,
                connector_setting::Column::UpdatedAt,
            ])
            .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        self.forget(tenant.0, platform).await;
        crate::coherence::notify(
            &self.db,
            &crate::coherence::Change::Secret {
                origin: crate::coherence::process_origin().to_owned(),
                tenant: tenant.0,
                platform: platform.to_owned(),
            },
        )
        .await?;
        Ok(())
    }

    /// Forgets the cached secret of a tenant and platform (changed here or by another process).
    pub async fn forget(&self, tenant: i64, platform: &str) {
        self.cache.invalidate(&(tenant, platform.to_owned())).await;
    }

    /// Forgets every cached secret.
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// The tenant's secret for a platform, if it set one.
    ///
    /// # Errors
    /// Database failures, or a ciphertext that does not decrypt under this server's key.
    pub async fn get(
        &self,
        tenant: TenantId,
        platform: &str,
    ) -> Result<Option<PlatformSecret>, EngineError> {
        let key = (tenant.0, platform.to_owned());
        let cached = self.cache.get(&key).await;
        crate::stats::PLATFORM_SECRETS.record(cached.is_some());
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let row = connector_setting::Entity::find()
            .filter(connector_setting::Column::TenantId.eq(tenant.0))
            .filter(connector_setting::Column::Platform.eq(platform))
            .one(&self.db)
            .await?;
        let secret = match row {
            None => None,
            Some(r) => {
                let nonce = B64
                    .decode(&r.nonce)
                    .map_err(|_| EngineError::Corrupt("stored nonce".into()))?;
                let sealed = B64
                    .decode(&r.ciphertext)
                    .map_err(|_| EngineError::Corrupt("stored ciphertext".into()))?;
                let nonce: [u8; 12] = nonce
                    .try_into()
                    .map_err(|_| EngineError::Corrupt("stored nonce length".into()))?;
                let plain = self
                    .cipher
                    .decrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: &sealed,
                            aad: &aad(tenant, platform),
                        },
                    )
                    .map_err(|_| {
                        EngineError::Corrupt(
                            "a stored platform secret does not decrypt: was the server key changed?"
                                .into(),
                        )
                    })?;
                Some(PlatformSecret(String::from_utf8(plain).map_err(|_| {
                    EngineError::Corrupt("stored secret is not text".into())
                })?))
            }
        };
        self.cache.insert(key, secret.clone()).await;
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_keys_are_64_hex_characters() {
        assert!(ServerKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(ServerKey::from_hex("abc").is_err());
        assert!(ServerKey::from_hex(&"zz".repeat(32)).is_err());
        let generated = ServerKey::generate_hex();
        assert!(ServerKey::from_hex(&generated).is_ok());
        assert_ne!(generated, ServerKey::generate_hex());
    }
}
