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
    match state.keys.authenticate(&bearer.token).await {
        Ok(Some(ctx)) => Ok(ctx),
        Ok(None) => Err(ApiError::unauthorized().into()),
        Err(e) => Err(ApiError::from(e).into()),
    }
}
