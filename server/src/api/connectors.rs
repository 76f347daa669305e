//! `PUT /v1/connectors/{platform}/settings`: a tenant's secret for a platform (Twilio's auth
//! token, to verify `X-Twilio-Signature`). Stored encrypted; never returned or logged.

use std::sync::Arc;

use poem_openapi::param::Path;
use poem_openapi::{ApiResponse, OpenApi};
use serde_json::Value;

use super::ApiTags;
use crate::auth::ApiKeyAuth;
use crate::connectors::{find, rejection};
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;
use sticky_core::keys::Scope;

#[derive(ApiResponse)]
enum SettingsResponse {
    /// Stored; signatures are verified from now on.
    #[oai(status = 204)]
    Stored,
}

/// Connector settings.
pub struct ConnectorsApi {
    /// Shared state.
    pub state: Arc<AppState>,
}

#[OpenApi(prefix_path = "/v1/connectors", tag = "ApiTags::Connectors")]
impl ConnectorsApi {
    /// Store the calling tenant's secret for a platform.
    ///
    /// Twilio: `{"auth_token": "..."}` (Console → Account → API keys & tokens). Once set,
    /// every Twilio webhook must carry a valid `X-Twilio-Signature`. The platform webhooks
    /// themselves (`POST /v1/connectors/{platform}/start`, `/end`, and `/v1/connectors/{platform}`)
    /// take each platform's native payload; see the integration guides.
    #[oai(
        path = "/:platform/settings",
        method = "put",
        operation_id = "put_connector_settings"
    )]
    async fn put_settings(
        &self,
        auth: ApiKeyAuth,
        /// `twilio`.
        platform: Path<String>,
        body: StrictJson<Value>,
    ) -> Result<SettingsResponse, ApiError> {
        auth.with(Scope::Admin)?;
        let connector = find(&self.state, &platform.0)?;
        let secret = connector.parse_settings(&body.0).map_err(rejection)?;
        self.state
            .secrets
            .set(auth.0.tenant, connector.slug(), &secret)
            .await?;
        super::audit::note(
            &self.state,
            auth.0.tenant,
            "connector_settings_changed",
            Some(connector.slug()),
            serde_json::json!({}),
        )
        .await;
        Ok(SettingsResponse::Stored)
    }
}
