//! `/v1/calls`: start, end, and read back a call.

use std::collections::BTreeMap;
use std::sync::Arc;

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use serde_json::Value;
use sticky_core::commands::{EndCall, StartCall, VariableChanges, parse_summary};
use sticky_core::domain::{CallId, CustomerRef, IntentName, IntentStatus, Platform};
use sticky_core::engine::{EndOutcome, StartOutcome};

use super::ApiTags;
use super::shared::{ActionDto, BandDto, CallDto, ContextDto, IdentityHintsDto, SignalDto};
use crate::auth::ApiKeyAuth;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;

/// A call is starting: who is it?
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub struct StartCallRequest {
    /// The platform's own call id (1–128 characters). Retrying a start with the same id
    /// returns the same answer and records nothing new.
    pub call_id: String,
    /// What the platform knows about the caller.
    pub identity_hints: Option<IdentityHintsDto>,
    /// The platform the call comes from (`generic` when absent).
    pub platform: Option<String>,
}

fn parse_call_id(raw: &str) -> Result<CallId, ApiError> {
    CallId::parse(raw).map_err(|e| ApiError::invalid("call_id", e.0))
}

fn parse_platform(raw: Option<String>) -> Result<Platform, ApiError> {
    raw.map_or_else(
        || Ok(Platform::generic()),
        |p| Platform::parse(&p).map_err(|e| ApiError::invalid("platform", e.0)),
    )
}

impl TryFrom<StartCallRequest> for StartCall {
    type Error = ApiError;

    fn try_from(r: StartCallRequest) -> Result<Self, ApiError> {
        Ok(Self {
            call_id: parse_call_id(&r.call_id)?,
            platform: parse_platform(r.platform)?,
            hints: r.identity_hints.unwrap_or_default().into_hints()?,
        })
    }
}

/// Another customer the caller could be.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct CandidateDto {
    /// Their reference.
    pub customer_ref: String,
    /// How likely.
    pub confidence: f64,
}

/// Who is probably calling, how sure we are, why, and what we remember.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct StartCallResponse {
    /// The call id, echoed.
    pub call_id: String,
    /// The most likely customer; null when the band is low.
    #[oai(nullable)]
    pub customer_ref: Option<String>,
    /// Confidence in `customer_ref`, 0 to 1.
    pub confidence: f64,
    /// `high` ≥ 0.8, `medium` ≥ 0.5, `low` < 0.5.
    pub band: BandDto,
    /// `greet` (high), `verify` (medium) or `treat_as_new` (low).
    pub recommended_action: ActionDto,
    /// The reasons, each with its contribution.
    pub signals: Vec<SignalDto>,
    /// Other plausible customers when the hints are ambiguous.
    pub candidates: Vec<CandidateDto>,
    /// What we remember about the customer; null when the band is low.
    #[oai(nullable)]
    pub context: Option<ContextDto>,
}

impl From<StartOutcome> for StartCallResponse {
    fn from(o: StartOutcome) -> Self {
        Self {
            call_id: o.call_id,
            customer_ref: o.customer_ref,
            confidence: o.confidence,
            band: o.band.into(),
            recommended_action: o.band.into(),
            signals: o.signals.into_iter().map(Into::into).collect(),
            candidates: o
                .candidates
                .into_iter()
                .map(|c| CandidateDto {
                    customer_ref: c.customer_ref,
                    confidence: c.confidence,
                })
                .collect(),
            context: o.context.map(Into::into),
        }
    }
}

/// A call has ended, or an agent reports what happened on it. Several ends of one call
/// (a platform's hang-up event and an AI agent's summary) merge, in any order.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub struct EndCallRequest {
    /// The platform's call id, as at start.
    pub call_id: String,
    /// Who the caller turned out to be. A provisional customer this call was linked to, or
    /// matched at medium or high confidence, is merged into it.
    pub customer_ref: Option<String>,
    /// What the call was about (`refund_request`).
    pub intent: Option<String>,
    /// `open` (default with an intent) or `resolved`.
    pub intent_status: Option<String>,
    /// Variables to merge into the customer's saved ones (latest wins; `null` removes a key).
    /// At most 100; names up to 64 characters; values up to 4 KiB as JSON.
    pub variables: Option<BTreeMap<String, Value>>,
    /// The call's summary (up to 8 KiB); when absent, `variables.summary` is used.
    pub summary: Option<String>,
    /// Hints known at the end; they complete the start's.
    pub identity_hints: Option<IdentityHintsDto>,
    /// The platform (used when the end is the first we hear of the call).
    pub platform: Option<String>,
}

impl TryFrom<EndCallRequest> for EndCall {
    type Error = ApiError;

    fn try_from(r: EndCallRequest) -> Result<Self, ApiError> {
        Ok(Self {
            call_id: parse_call_id(&r.call_id)?,
            platform: parse_platform(r.platform)?,
            customer_ref: r
                .customer_ref
                .map(|c| CustomerRef::parse(&c).map_err(|e| ApiError::invalid("customer_ref", e.0)))
                .transpose()?,
            intent: r
                .intent
                .map(|i| IntentName::parse(&i).map_err(|e| ApiError::invalid("intent", e.0)))
                .transpose()?,
            intent_status: r
                .intent_status
                .map(|s| {
                    IntentStatus::parse(&s).map_err(|e| ApiError::invalid("intent_status", e.0))
                })
                .transpose()?,
            variables: VariableChanges::parse(r.variables.unwrap_or_default())?,
            summary: r.summary.map(|s| parse_summary("summary", s)).transpose()?,
            hints: r.identity_hints.unwrap_or_default().into_hints()?,
        })
    }
}

/// What the end did.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct EndCallResponse {
    /// The call id, echoed.
    pub call_id: String,
    /// The customer the call is linked to; null when it carried no identity at all.
    #[oai(nullable)]
    pub customer_ref: Option<String>,
    /// Whether that customer is provisional (created from the number alone).
    pub provisional: bool,
    /// A provisional customer merged into `customer_ref` by this end.
    #[oai(skip_serializing_if_is_none)]
    pub merged_from: Option<String>,
}

impl From<EndOutcome> for EndCallResponse {
    fn from(o: EndOutcome) -> Self {
        Self {
            call_id: o.call_id,
            customer_ref: o.customer_ref,
            provisional: o.provisional,
            merged_from: o.merged_from,
        }
    }
}

#[derive(ApiResponse)]
enum StartResponse {
    /// The caller, resolved (a low band is a normal answer).
    #[oai(status = 200)]
    Ok(Json<StartCallResponse>),
}

#[derive(ApiResponse)]
enum EndResponse {
    /// Saved.
    #[oai(status = 200)]
    Ok(Json<EndCallResponse>),
}

#[derive(ApiResponse)]
enum GetCallResponse {
    /// The stored call.
    #[oai(status = 200)]
    Ok(Json<CallDto>),
}

/// Call endpoints.
pub struct CallsApi {
    /// Shared state.
    pub state: Arc<AppState>,
}

#[OpenApi(prefix_path = "/v1/calls", tag = "ApiTags::Calls")]
impl CallsApi {
    /// Start a call: who is calling?
    ///
    /// Resolves the caller from the identity hints and answers with the most likely customer,
    /// the confidence and its signals, other candidates, and the customer's memory.
    #[oai(path = "/start", method = "post", operation_id = "start_call")]
    async fn start(
        &self,
        auth: ApiKeyAuth,
        body: StrictJson<StartCallRequest>,
    ) -> Result<StartResponse, ApiError> {
        let cmd = StartCall::try_from(body.0)?;
        let outcome = self.state.engine.start_call(auth.0.tenant, cmd).await?;
        Ok(StartResponse::Ok(Json(outcome.into())))
    }

    /// End a call: remember what happened.
    ///
    /// Links the call's identities to the customer (named, resolved with high confidence, a
    /// provisional one resolved with medium confidence, or a new provisional one), merges
    /// variables, records the intent and summary.
    #[oai(path = "/end", method = "post", operation_id = "end_call")]
    async fn end(
        &self,
        auth: ApiKeyAuth,
        body: StrictJson<EndCallRequest>,
    ) -> Result<EndResponse, ApiError> {
        let cmd = EndCall::try_from(body.0)?;
        let outcome = self.state.engine.end_call(auth.0.tenant, cmd).await?;
        Ok(EndResponse::Ok(Json(outcome.into())))
    }

    /// Read a stored call.
    #[oai(path = "/:call_id", method = "get", operation_id = "get_call")]
    async fn get(
        &self,
        auth: ApiKeyAuth,
        /// The platform's call id (URL-encoded).
        call_id: Path<String>,
    ) -> Result<GetCallResponse, ApiError> {
        let call_id = parse_call_id(&call_id.0)?;
        let call = self.state.engine.get_call(auth.0.tenant, &call_id).await?;
        Ok(GetCallResponse::Ok(Json(call.into())))
    }
}
