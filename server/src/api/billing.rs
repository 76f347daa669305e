//! `/v1/usage` and `/v1/billing/events`: where the calling tenant stands on its plan this
//! month, and the history of its plan changes, grants and payments.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;
use sticky_core::keys::Scope;

use super::ApiTags;
use crate::auth::ApiKeyAuth;
use crate::error::ApiError;
use crate::state::AppState;

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
