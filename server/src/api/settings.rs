//! `/v1/settings`: the calling tenant's settings of memory — the variables returned only to a
//! caller recognised with high confidence, and how long calls are kept.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use sticky_core::engine::settings::TenantSettings;

use super::ApiTags;
use crate::auth::ApiKeyAuth;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;
use sticky_core::keys::Scope;

/// The tenant's settings of memory.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub struct SettingsDto {
    /// Variables returned only when the caller is recognised with high confidence (`band`
    /// `high`): below it, the agent must verify the caller before anything in them is used,
    /// so starts leave them out of the context. At most 100 names.
    #[oai(default)]
    #[serde(default)]
    pub sensitive_variables: Vec<String>,
    /// Calls (with their summaries) older than this many days are deleted by a background
    /// sweep; `null` (the default) keeps them. 1 to 3650.
    #[oai(default)]
    #[oai(nullable, validator(minimum(value = "1"), maximum(value = "3650")))]
    #[serde(default)]
    pub retention_days: Option<u32>,
}

impl From<&TenantSettings> for SettingsDto {
    fn from(s: &TenantSettings) -> Self {
        Self {
            sensitive_variables: s.sensitive_variables.iter().cloned().collect(),
            retention_days: s.retention_days,
        }
    }
}

#[derive(ApiResponse)]
enum SettingsResponse {
    /// The settings.
    #[oai(status = 200)]
    Ok(Json<SettingsDto>),
}

/// Tenant settings.
pub struct SettingsApi {
    /// Shared state.
    pub state: Arc<AppState>,
}

#[OpenApi(prefix_path = "/v1/settings", tag = "ApiTags::Settings")]
impl SettingsApi {
    /// The calling tenant's settings.
    #[oai(path = "/", method = "get", operation_id = "get_settings")]
    async fn get(&self, auth: ApiKeyAuth) -> Result<SettingsResponse, ApiError> {
        auth.with(Scope::Admin)?;
        let s = self.state.engine.settings(auth.0.tenant).await?;
        Ok(SettingsResponse::Ok(Json(SettingsDto::from(s.as_ref()))))
    }

    /// Replace the calling tenant's settings.
    #[oai(path = "/", method = "put", operation_id = "put_settings")]
    async fn put(
        &self,
        auth: ApiKeyAuth,
        body: StrictJson<SettingsDto>,
    ) -> Result<SettingsResponse, ApiError> {
        auth.with(Scope::Admin)?;
        let settings = TenantSettings::parse(body.0.sensitive_variables, body.0.retention_days)?;
        self.state
            .engine
            .set_settings(auth.0.tenant, &settings)
            .await?;
        super::audit::note(
            &self.state,
            auth.0.tenant,
            "settings_changed",
            None,
            serde_json::json!({
                "sensitive_variables": settings.sensitive_variables.len(),
                "retention_days": settings.retention_days,
            }),
        )
        .await;
        Ok(SettingsResponse::Ok(Json(SettingsDto::from(&settings))))
    }
}
