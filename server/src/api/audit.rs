//! `/v1/audit`: the calling tenant's administrative actions (see `sticky_core::audit`), and
//! [`note`], which the other handlers call after an action succeeds.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;
use sticky_core::engine::TenantId;

use super::ApiTags;
use crate::auth::ApiKeyAuth;
use crate::error::ApiError;
use crate::state::AppState;
use sticky_core::keys::Scope;

/// Records an action that has succeeded. A failure to record is logged, not returned: the
/// action itself is done.
pub async fn note(
    state: &AppState,
    tenant: TenantId,
    action: &str,
    subject: Option<&str>,
    details: Value,
) {
    if let Err(e) =
        sticky_core::audit::record(state.engine.db(), tenant, action, subject, &details).await
    {
        tracing::warn!(error = %e, action, "audit record failed");
    }
}

/// One administrative action.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct AuditEventDto {
    /// When.
    pub at: DateTime<Utc>,
    /// `api_key_created`, `api_key_revoked`, `customer_erased`, `number_erased`,
    /// `caller_forgotten`, `settings_changed` or `connector_settings_changed`.
    pub action: String,
    /// The key id or platform acted on.
    #[oai(skip_serializing_if_is_none)]
    pub subject: Option<String>,
    /// Counts and setting names (never personal data).
    pub details: Value,
}

/// The tenant's latest actions.
#[derive(Debug, Clone, Object)]
pub struct AuditListDto {
    /// Newest first.
    pub events: Vec<AuditEventDto>,
}

#[derive(ApiResponse)]
enum AuditResponse {
    /// The actions.
    #[oai(status = 200)]
    Ok(Json<AuditListDto>),
}

/// Audit trail.
pub struct AuditApi {
    /// Shared state.
    pub state: Arc<AppState>,
}

#[OpenApi(prefix_path = "/v1/audit", tag = "ApiTags::Audit")]
impl AuditApi {
    /// The calling tenant's latest administrative actions, newest first: keys made and
    /// revoked, erasures with their counts, settings changed. No personal data.
    #[oai(path = "/", method = "get", operation_id = "list_audit_events")]
    async fn list(
        &self,
        auth: ApiKeyAuth,
        /// How many, 1 to 500 (100 by default).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> Result<AuditResponse, ApiError> {
        auth.with(Scope::Admin)?;
        let limit = limit.0.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::invalid("limit", "must be 1 to 500"));
        }
        let events = sticky_core::audit::list(self.state.engine.db(), auth.0.tenant, limit).await?;
        Ok(AuditResponse::Ok(Json(AuditListDto {
            events: events
                .into_iter()
                .map(|e| AuditEventDto {
                    at: e.at,
                    action: e.action,
                    subject: e.subject,
                    details: e.details,
                })
                .collect(),
        })))
    }
}
