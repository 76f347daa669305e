//! API-key authentication as a poem-openapi security scheme: `Authorization: Bearer <key>`.
//! The tenant of every request comes from here, never from a body.

use std::sync::Arc;

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};
use sticky_core::keys::{AuthContext, Scope};

use crate::error::ApiError;
use crate::state::AppState;

/// An API key, sent as `Authorization: Bearer <key>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_key")]
pub struct ApiKeyAuth(pub AuthContext);

impl ApiKeyAuth {
    /// The key's context, if it has `scope`.
    ///
    /// # Errors
    /// 403 `insufficient_scope`.
    pub fn with(&self, scope: Scope) -> Result<&AuthContext, ApiError> {
        require(&self.0, scope)?;
        Ok(&self.0)
    }
}

/// Whether the key has `scope`.
///
/// # Errors
/// 403 `insufficient_scope`.
pub fn require(ctx: &AuthContext, scope: Scope) -> Result<(), ApiError> {
    if ctx.scopes.contains(scope) {
        Ok(())
    } else {
        Err(ApiError::insufficient_scope(scope))
    }
}

async fn check_key(req: &Request, bearer: Bearer) -> poem::Result<AuthContext> {
    let state = req.data::<Arc<AppState>>().ok_or_else(|| {
        ApiError::new(
            poem::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    })?;
    let ctx = authenticate_token(state, req, &bearer.token).await?;
    check_rate(state, ctx.tenant).await?;
    Ok(ctx)
}

/// Takes a request from the tenant's rate limit; notes the `RateLimit-*` headers.
///
/// # Errors
/// 429 `rate_limited`, or a database failure reading the tenant's plan.
pub async fn check_rate(
    state: &AppState,
    tenant: sticky_core::engine::TenantId,
) -> Result<(), ApiError> {
    match state.limits.rate(tenant).await {
        Ok(Some(info)) => {
            crate::middleware::note_rate(info);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(Ok(refusal)) => {
            if let crate::limits::Refusal::Rate { info, .. } = &refusal {
                crate::middleware::note_rate(*info);
            }
            Err(refusal.into())
        }
        Err(Err(e)) => Err(e),
    }
}

/// Verifies an API key (shared by the REST API and the connector webhooks). A key not yet
/// known costs a bcrypt verification: those are limited per client address (the socket's,
/// not a forwarded header a client could vary), so a flood of wrong keys is refused with 429
/// before any bcrypt runs, and requests with known keys go on being served.
///
/// # Errors
/// 401 for an unknown key; 429 `too_many_attempts`; database failures.
pub async fn authenticate_token(
    state: &AppState,
    req: &Request,
    token: &str,
) -> Result<AuthContext, ApiError> {
    // The usual case, a key verified before: no limit, no bcrypt.
    if let Some(known) = state.keys.cached(token).await {
        return known.ok_or_else(ApiError::unauthorized);
    }
    let digest = sticky_core::keys::digest(token);
    if !state.counted_keys.contains_key(&digest) {
        state.counted_keys.insert(digest, ()).await;
        let address = req
            .remote_addr()
            .as_socket_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        if let Err(not_until) = state.verifications.check_key(&address) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(ApiError::too_many_attempts(
                wait.as_secs().saturating_add(1),
            ));
        }
    }
    match state.keys.authenticate(token).await {
        Ok(Some(ctx)) => Ok(ctx),
        Ok(None) => Err(ApiError::unauthorized()),
        Err(e) => Err(ApiError::from(e)),
    }
}
