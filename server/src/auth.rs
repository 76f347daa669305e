//! API-key authentication as a poem-openapi security scheme: `Authorization: Bearer <key>`.
//! The tenant of every request comes from here, never from a body.

use std::sync::Arc;

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};
use sticky_core::keys::AuthContext;

use crate::error::ApiError;
use crate::state::AppState;

/// An API key, sent as `Authorization: Bearer <key>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_key")]
pub struct ApiKeyAuth(pub AuthContext);

async fn check_key(req: &Request, bearer: Bearer) -> poem::Result<AuthContext> {
    let state = req.data::<Arc<AppState>>().ok_or_else(|| {
        ApiError::new(
            poem::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    })?;
    Ok(authenticate_token(state, &bearer.token).await?)
}

/// Verifies an API key (shared by the REST API and the connector webhooks).
///
/// # Errors
/// 401 for an unknown key; database failures.
pub async fn authenticate_token(state: &AppState, token: &str) -> Result<AuthContext, ApiError> {
    match state.keys.authenticate(token).await {
        Ok(Some(ctx)) => Ok(ctx),
        Ok(None) => Err(ApiError::unauthorized()),
        Err(e) => Err(ApiError::from(e)),
    }
}
