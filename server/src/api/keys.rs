//! `/v1/api-keys`: the calling tenant's keys. Any number per tenant; the secret is returned
//! once, at creation.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use sticky_core::keys::ApiKeyInfo;

use super::ApiTags;
use crate::auth::ApiKeyAuth;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;
use sticky_core::keys::{Scope, Scopes};

/// A new key's options.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Free text to recognise the key by (up to 128 characters).
    #[oai(nullable, validator(max_length = 128))]
    pub label: Option<String>,
    /// What the key may do (default: every scope of the key that creates it, which may only
    /// grant scopes it has). Put a `calls`-only key into platform webhooks.
    #[oai(nullable, validator(min_items = 1))]
    pub scopes: Option<Vec<ScopeDto>>,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum, Deserialize)]
#[serde(try_from = "String")]
pub enum ScopeDto {
    /// Start and end calls, connector webhooks, read calls.
    #[oai(rename = "calls")]
    #[serde(rename = "calls")]
    Calls,
    /// Look customers up and export them.
    #[oai(rename = "customers:read")]
    #[serde(rename = "customers:read")]
    CustomersRead,
    /// Erase customers and numbers, unlink identities, resolve intents.
    #[oai(rename = "customers:write")]
    #[serde(rename = "customers:write")]
    CustomersWrite,
    /// Keys, connector secrets, settings, the audit trail.
    #[oai(rename = "admin")]
    #[serde(rename = "admin")]
    Admin,
}

crate::string_enum!(ScopeDto);

impl From<ScopeDto> for Scope {
    fn from(s: ScopeDto) -> Self {
        match s {
            ScopeDto::Calls => Self::Calls,
            ScopeDto::CustomersRead => Self::CustomersRead,
            ScopeDto::CustomersWrite => Self::CustomersWrite,
            ScopeDto::Admin => Self::Admin,
        }
    }
}

impl From<Scope> for ScopeDto {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Calls => Self::Calls,
            Scope::CustomersRead => Self::CustomersRead,
            Scope::CustomersWrite => Self::CustomersWrite,
            Scope::Admin => Self::Admin,
        }
    }
}

/// A key, without its secret.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct ApiKeyDto {
    /// Public id, used to revoke it.
    pub id: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// The label given at creation.
    #[oai(nullable)]
    pub label: Option<String>,
    /// What the key may do.
    pub scopes: Vec<ScopeDto>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<ApiKeyInfo> for ApiKeyDto {
    fn from(k: ApiKeyInfo) -> Self {
        Self {
            id: k.id,
            prefix: k.prefix,
            label: k.label,
            scopes: k.scopes.iter().map(Into::into).collect(),
            created_at: k.created_at,
        }
    }
}

/// A key just created.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct CreatedKeyDto {
    /// The key as stored.
    pub key: ApiKeyDto,
    /// The secret: shown this once, stored only as a bcrypt hash.
    pub api_key: String,
}

/// The tenant's keys.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct ApiKeyListDto {
    /// Oldest first.
    pub api_keys: Vec<ApiKeyDto>,
}

#[derive(ApiResponse)]
enum CreateResponse {
    /// Created; the secret is in `api_key`.
    #[oai(status = 201)]
    Created(Json<CreatedKeyDto>),
}

#[derive(ApiResponse)]
enum ListResponse {
    /// The keys.
    #[oai(status = 200)]
    Ok(Json<ApiKeyListDto>),
}

/// The key a request was made with.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct CurrentKeyDto {
    /// The key's id.
    pub key_id: String,
}

#[derive(ApiResponse)]
enum CurrentResponse {
    /// The key is valid.
    #[oai(status = 200)]
    Ok(Json<CurrentKeyDto>),
}

#[derive(ApiResponse)]
enum RevokeResponse {
    /// Revoked: the key stops working at once.
    #[oai(status = 204)]
    Revoked,
}

/// API-key endpoints.
pub struct KeysApi {
    /// Shared state.
    pub state: Arc<AppState>,
}

#[OpenApi(prefix_path = "/v1/api-keys", tag = "ApiTags::ApiKeys")]
impl KeysApi {
    /// Create an API key for the calling tenant.
    #[oai(path = "/", method = "post", operation_id = "create_api_key")]
    async fn create(
        &self,
        auth: ApiKeyAuth,
        body: StrictJson<CreateKeyRequest>,
    ) -> Result<CreateResponse, ApiError> {
        auth.with(Scope::Admin)?;
        let own = auth.0.scopes;
        let scopes = match body.0.scopes {
            Some(asked) => {
                let asked: Scopes = asked.into_iter().map(Scope::from).collect();
                if let Some(missing) = asked.iter().find(|s| !own.contains(*s)) {
                    return Err(ApiError::insufficient_scope(missing).with_field("scopes"));
                }
                asked
            }
            None => own,
        };
        let key = self
            .state
            .keys
            .create_scoped_key(auth.0.tenant, body.0.label, None, scopes)
            .await?;
        super::audit::note(
            &self.state,
            auth.0.tenant,
            "api_key_created",
            Some(&key.info.id),
            serde_json::json!({"by_key": auth.0.key_id, "scopes": scopes.to_text()}),
        )
        .await;
        Ok(CreateResponse::Created(Json(CreatedKeyDto {
            key: key.info.into(),
            api_key: key.secret,
        })))
    }

    /// List the calling tenant's API keys.
    #[oai(path = "/", method = "get", operation_id = "list_api_keys")]
    async fn list(&self, auth: ApiKeyAuth) -> Result<ListResponse, ApiError> {
        auth.with(Scope::Admin)?;
        let keys = self.state.keys.list_keys(auth.0.tenant).await?;
        Ok(ListResponse::Ok(Json(ApiKeyListDto {
            api_keys: keys.into_iter().map(Into::into).collect(),
        })))
    }

    /// Check a key: which key is this? Touches no data (and serves as the benchmark's
    /// baseline for the cost of the HTTP stack and authentication).
    #[oai(path = "/current", method = "get", operation_id = "current_api_key")]
    async fn current(&self, auth: ApiKeyAuth) -> Result<CurrentResponse, ApiError> {
        Ok(CurrentResponse::Ok(Json(CurrentKeyDto {
            key_id: auth.0.key_id,
        })))
    }

    /// Revoke an API key of the calling tenant.
    #[oai(path = "/:id", method = "delete", operation_id = "revoke_api_key")]
    async fn revoke(
        &self,
        auth: ApiKeyAuth,
        /// The key's id (`key_...`).
        id: Path<String>,
    ) -> Result<RevokeResponse, ApiError> {
        auth.with(Scope::Admin)?;
        self.state.keys.revoke_key(auth.0.tenant, &id.0).await?;
        super::audit::note(
            &self.state,
            auth.0.tenant,
            "api_key_revoked",
            Some(&id.0),
            serde_json::json!({"by_key": auth.0.key_id}),
        )
        .await;
        Ok(RevokeResponse::Revoked)
    }
}
