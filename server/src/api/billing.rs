//! `/v1/usage`, `/v1/billing/offers` and `/v1/billing/events`: where the calling tenant stands
//! on its plan this month, what it can buy, and the history of its plan changes, grants and
//! payments; `/v1/signup` (off unless `STICKY_SIGNUP=open`): a new tenant on `free`, for an
//! agent that signs itself up.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem::http::StatusCode;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;
use sticky_core::keys::Scope;

use super::ApiTags;
use crate::auth::ApiKeyAuth;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;

/// A new tenant.
#[derive(Debug, Clone, Default, Object, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// Its name: 1 to 64 of a-z, 0-9, `_` and `-` (default: one is made up).
    #[oai(nullable)]
    pub name: Option<String>,
}

/// A tenant just made, with its key.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct SignupDto {
    /// The tenant's id (the `client_reference_id` of its payments).
    pub tenant_id: i64,
    /// Its name.
    pub tenant: String,
    /// Its plan (`free`).
    pub plan: String,
    /// Its first API key, with every scope: shown this once.
    pub api_key: String,
}

/// A plan on offer.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct OfferDto {
    /// The plan's name.
    pub plan: String,
    /// A name to show.
    #[oai(nullable)]
    pub label: Option<String>,
    /// Calls a month; null: no quota.
    #[oai(nullable)]
    pub calls_per_month: Option<u64>,
    /// Requests a minute; null: no rate limit.
    #[oai(nullable)]
    pub requests_per_minute: Option<u32>,
    /// Price a month, in cents.
    #[oai(nullable)]
    pub price_cents: Option<u64>,
    /// Where to pay: the operator's payment link with this tenant's id as
    /// `client_reference_id`; null when the plan is not sold online.
    #[oai(nullable)]
    pub checkout_url: Option<String>,
}

/// What the tenant can buy.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct OffersDto {
    /// The tenant's current plan.
    pub current_plan: String,
    /// Plans with a price or a payment link.
    pub offers: Vec<OfferDto>,
}

#[derive(ApiResponse)]
enum SignupResponse {
    /// The tenant and its key.
    #[oai(status = 201)]
    Created(Json<SignupDto>),
}

#[derive(ApiResponse)]
enum OffersResponse {
    /// The offers.
    #[oai(status = 200)]
    Ok(Json<OffersDto>),
}

/// `url` with `client_reference_id=<tenant>` added to its query.
fn checkout_url(url: &str, tenant: i64) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}client_reference_id={tenant}")
}

/// The calling tenant's plan and this month's calls.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct UsageDto {
    /// The tenant's id.
    pub tenant_id: i64,
    /// The plan's name.
    pub plan: String,
    /// The current period's start (00:00 UTC on the first of the month).
    pub period_start: DateTime<Utc>,
    /// The current period's end (the next one's start).
    pub period_end: DateTime<Utc>,
    /// Calls the plan includes a month; null: no quota.
    #[oai(nullable)]
    pub included: Option<u64>,
    /// Calls added to this period (grants, purchases).
    pub credits: u64,
    /// Calls counted this period (successful call starts and ends, connector calls, customer
    /// look-ups and exports).
    pub used: u64,
    /// Calls left this period; null: no quota.
    #[oai(nullable)]
    pub remaining: Option<u64>,
    /// Requests a minute the plan allows; null: no rate limit.
    #[oai(nullable)]
    pub requests_per_minute: Option<u32>,
}

/// One billing event.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct BillingEventDto {
    /// When.
    pub at: DateTime<Utc>,
    /// `plan_changed`, `credits_granted` or `payment`.
    pub kind: String,
    /// What changed (plan names, call counts, the payment's reference).
    pub detail: Value,
}

/// The tenant's billing events.
#[derive(Debug, Clone, Object)]
pub struct BillingEventListDto {
    /// Newest first.
    pub events: Vec<BillingEventDto>,
}

#[derive(ApiResponse)]
enum UsageResponse {
    /// The tenant's usage.
    #[oai(status = 200)]
    Ok(Json<UsageDto>),
}

#[derive(ApiResponse)]
enum EventsResponse {
    /// The events.
    #[oai(status = 200)]
    Ok(Json<BillingEventListDto>),
}

/// Usage and billing.
pub struct BillingApi {
    /// Shared state.
    pub state: Arc<AppState>,
}

#[OpenApi(tag = "ApiTags::Billing")]
impl BillingApi {
    /// The calling tenant's plan, this month's period, and its calls: included, added,
    /// used, remaining. Any key may read it; reading it never counts.
    #[oai(path = "/v1/usage", method = "get", operation_id = "get_usage")]
    async fn usage(&self, auth: ApiKeyAuth) -> Result<UsageResponse, ApiError> {
        let u = self.state.limits.usage(auth.0.tenant).await?;
        let allowed = u
            .plan
            .calls_per_month
            .map(|c| c.saturating_add(u.counts.credits));
        Ok(UsageResponse::Ok(Json(UsageDto {
            tenant_id: auth.0.tenant.0,
            plan: u.plan.name.clone(),
            period_start: u.period.1,
            period_end: u.period.2,
            included: u.plan.calls_per_month,
            credits: u.counts.credits,
            used: u.counts.used,
            remaining: allowed.map(|a| a.saturating_sub(u.counts.used)),
            requests_per_minute: u.plan.requests_per_minute,
        })))
    }

    /// Create a tenant on the `free` plan and its first key, without an account: for an AI
    /// agent that signs itself up. Only when the operator opened it (`STICKY_SIGNUP=open`;
    /// otherwise 404); a few per client address an hour (429 `too_many_attempts`).
    #[oai(path = "/v1/signup", method = "post", operation_id = "signup")]
    async fn signup(
        &self,
        req: &Request,
        body: StrictJson<SignupRequest>,
    ) -> Result<SignupResponse, ApiError> {
        if !self.state.signup_open {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "signup is not open on this server",
            ));
        }
        let address = req
            .remote_addr()
            .as_socket_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        if let Err(not_until) = self.state.signups.check_key(&address) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many signups from this address; wait and retry",
            )
            .retry_after(wait.as_secs().saturating_add(1)));
        }
        let plan = sticky_core::plans::SIGNUP_DEFAULT;
        self.state.limits.plans().require(plan).map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "signup needs a `free` plan",
            )
        })?;
        let name = body
            .0
            .name
            .unwrap_or_else(|| format!("t-{}", sticky_core::random_token(12)));
        let prepared = self
            .state
            .keys
            .prepare_key(Some("signup".into()), None, sticky_core::keys::Scopes::ALL)
            .await?;
        let (tenant, key) = self
            .state
            .limits
            .store()
            .sign_up(&self.state.keys, &name, plan, prepared)
            .await?;
        Ok(SignupResponse::Created(Json(SignupDto {
            tenant_id: tenant.id.0,
            tenant: tenant.name,
            plan: plan.to_owned(),
            api_key: key.secret,
        })))
    }

    /// The plans the calling tenant can buy, each with its price and its payment link (the
    /// operator's, carrying this tenant's id so that the payment applies to it).
    #[oai(
        path = "/v1/billing/offers",
        method = "get",
        operation_id = "list_billing_offers"
    )]
    async fn offers(&self, auth: ApiKeyAuth) -> Result<OffersResponse, ApiError> {
        let current = self.state.limits.usage(auth.0.tenant).await?.plan;
        let offers = self
            .state
            .limits
            .plans()
            .all()
            .filter(|p| p.price_cents.is_some() || p.checkout_url.is_some())
            .map(|p| OfferDto {
                plan: p.name.clone(),
                label: p.label.clone(),
                calls_per_month: p.calls_per_month,
                requests_per_minute: p.requests_per_minute,
                price_cents: p.price_cents,
                checkout_url: p
                    .checkout_url
                    .as_deref()
                    .map(|u| checkout_url(u, auth.0.tenant.0)),
            })
            .collect();
        Ok(OffersResponse::Ok(Json(OffersDto {
            current_plan: current.name.clone(),
            offers,
        })))
    }

    /// The calling tenant's plan changes, grants and payments, newest first.
    #[oai(
        path = "/v1/billing/events",
        method = "get",
        operation_id = "list_billing_events"
    )]
    async fn events(
        &self,
        auth: ApiKeyAuth,
        /// How many, 1 to 500 (100 by default).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> Result<EventsResponse, ApiError> {
        auth.with(Scope::Admin)?;
        let limit = limit.0.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::invalid("limit", "must be 1 to 500"));
        }
        let events = self
            .state
            .limits
            .store()
            .events(auth.0.tenant, limit)
            .await?;
        Ok(EventsResponse::Ok(Json(BillingEventListDto {
            events: events
                .into_iter()
                .map(|e| BillingEventDto {
                    at: e.at,
                    kind: e.kind,
                    detail: e.detail,
                })
                .collect(),
        })))
    }
}
