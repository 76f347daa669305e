//! `/v1/calls`: start, end, and read back a call.

use std::collections::BTreeMap;
use std::sync::Arc;

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sticky_core::commands::{EndCall, StartCall, VariableChanges, parse_summary};
use sticky_core::domain::{CallId, CustomerRef, IntentName, IntentStatus, Platform, parse_due_at};
use sticky_core::engine::{EndOutcome, StartAnswer};

use super::ApiTags;
use super::shared::{ActionDto, BandDto, CallDto, ContextField, IdentityHintsDto, SignalDto};
use crate::auth::ApiKeyAuth;
use crate::error::ApiError;
use crate::json::{DirectJson, StrictJson};
use crate::state::AppState;
use sticky_core::keys::Scope;

/// A call is starting: who is it?
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub struct StartCallRequest {
    /// The platform's own call id (1–128 characters). Retrying a start with the same id
    /// returns the same answer and records nothing new.
    pub call_id: String,
    /// What the platform knows about the caller.
    #[oai(nullable)]
    #[serde(default, deserialize_with = "crate::json::optional_object")]
    pub identity_hints: Option<IdentityHintsDto>,
    /// The platform the call comes from (`generic` when absent).
    #[oai(nullable)]
    pub platform: Option<String>,
    /// Also answer with `agent_context`: the caller's memory framed for an AI agent's prompt
    /// in this format.
    #[oai(nullable)]
    pub agent_format: Option<AgentFormatDto>,
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
#[derive(Debug, Clone, Object, Serialize)]
#[oai(rename_all = "snake_case")]
pub struct CandidateDto {
    /// Their reference.
    pub customer_ref: String,
    /// How likely.
    pub confidence: f64,
    /// When one of the call's identities was last seen with them. Among customers of equal
    /// confidence (a line several people share), the most recently seen ranks first.
    #[oai(nullable)]
    #[serde(serialize_with = "sticky_core::wire::rfc3339_opt")]
    pub last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Their history behind this match: ended calls from this number, plus one per matching
    /// external id. The next tie-break, after `last_seen_at`.
    pub calls: u64,
}

/// Who is probably calling, how sure we are, why, and what we remember.
#[derive(Debug, Clone, Object, Serialize)]
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
    pub context: Option<ContextField>,
    /// With `agent_format` in the request: the caller's memory framed for an AI agent's
    /// prompt, as data that stored text can never turn into instructions (`<`, `>`, `&` and
    /// backticks inside it are `\u` escapes).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_context: Option<String>,
}

/// How an agent's prompt frames the caller's memory (see `GET /v1/agent/prompts/{format}`).
#[derive(Debug, Clone, Copy, poem_openapi::Enum, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AgentFormatDto {
    /// XML sections, for Claude.
    Claude,
    /// Markdown, for ChatGPT.
    Chatgpt,
    /// Plain text with BEGIN/END markers.
    Generic,
}

crate::string_enum!(AgentFormatDto, ConsentDto);

impl From<AgentFormatDto> for sticky_core::agent::AgentFormat {
    fn from(f: AgentFormatDto) -> Self {
        match f {
            AgentFormatDto::Claude => Self::Claude,
            AgentFormatDto::Chatgpt => Self::ChatGpt,
            AgentFormatDto::Generic => Self::Generic,
        }
    }
}

impl From<StartAnswer> for StartCallResponse {
    fn from(o: StartAnswer) -> Self {
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
                    last_seen_at: c.last_seen_at,
                    calls: c.calls,
                })
                .collect(),
            context: o.context.map(ContextField),
            agent_context: None,
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
    #[oai(nullable)]
    pub customer_ref: Option<String>,
    /// What the call was about (`refund_request`).
    #[oai(nullable)]
    pub intent: Option<String>,
    /// `open` (default with an intent) or `resolved`.
    #[oai(nullable)]
    pub intent_status: Option<String>,
    /// When the intent is a promised callback, when it is due (RFC 3339 with its offset,
    /// `2026-12-05T15:00:00Z`). Needs `intent`. The next start lists the intent with a
    /// `state` of `due` (from an hour before) or `overdue`, those first.
    #[oai(nullable)]
    pub intent_due_at: Option<String>,
    /// Variables to merge into the customer's saved ones (latest wins; `null` removes a key).
    /// At most 100; names up to 64 characters; values up to 4 KiB as JSON.
    #[oai(nullable)]
    pub variables: Option<BTreeMap<String, Value>>,
    /// A time to live, in seconds from now, for the customer's variables
    /// (`{"otp_verified": 900}`): once it has passed, starts and exports leave the variable out
    /// and an hourly sweep deletes it. A variable this end saves expires with its new value; a
    /// saved one it does not mention keeps its value and gets the new expiry (unless a later
    /// call saved it since); one it removes, or that was never saved, has nothing to expire.
    /// Saving the variable again without one keeps it for good.
    #[oai(nullable)]
    pub variable_ttl_seconds: Option<BTreeMap<String, u64>>,
    /// The call's summary (up to 8,192 characters); when absent, `variables.summary` is used.
    #[oai(nullable)]
    pub summary: Option<String>,
    /// Hints known at the end; they complete the start's.
    #[oai(nullable)]
    #[serde(default, deserialize_with = "crate::json::optional_object")]
    pub identity_hints: Option<IdentityHintsDto>,
    /// The platform (used when the end is the first we hear of the call).
    #[oai(nullable)]
    pub platform: Option<String>,
    /// `none` when the caller did not consent to being remembered: nothing of this call is
    /// stored, and what was kept for its number is erased (as `DELETE /v1/customers?ani=`
    /// does). Default `granted`.
    #[oai(nullable)]
    pub consent: Option<ConsentDto>,
}

impl TryFrom<EndCallRequest> for EndCall {
    type Error = ApiError;

    fn try_from(r: EndCallRequest) -> Result<Self, ApiError> {
        if r.intent_due_at.is_some() && r.intent.is_none() {
            return Err(ApiError::invalid(
                "intent_due_at",
                "`intent_due_at` needs `intent`: a callback is due on an intent",
            ));
        }
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
            intent_due_at: r
                .intent_due_at
                .map(|d| parse_due_at(&d).map_err(|e| ApiError::invalid("intent_due_at", e.0)))
                .transpose()?,
            variables: VariableChanges::parse(r.variables.unwrap_or_default())?.with_ttls(
                "variable_ttl_seconds",
                r.variable_ttl_seconds.unwrap_or_default(),
                sticky_core::now(),
            )?,
            summary: r.summary.map(|s| parse_summary("summary", s)).transpose()?,
            hints: r.identity_hints.unwrap_or_default().into_hints()?,
        })
    }
}

/// Whether the caller agreed to be remembered.
#[derive(Debug, Clone, Copy, poem_openapi::Enum, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ConsentDto {
    /// Remember the call (the default).
    Granted,
    /// Keep nothing of it, and erase what was kept for the number.
    None,
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
    // Written by serde directly: the answer to every call (see `json::DirectJson`).
    #[oai(status = 200)]
    Ok(DirectJson<StartCallResponse>),
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
        auth.with(Scope::Calls)?;
        crate::limits::counted(&self.state, auth.0.tenant, async {
            let agent_format = body.0.agent_format;
            let cmd = StartCall::try_from(body.0)?;
            let outcome = self.state.engine.start_call(auth.0.tenant, cmd).await?;
            let Some(format) = agent_format else {
                return Ok(StartResponse::Ok(DirectJson(outcome.into())));
            };
            let memory =
                sticky_core::agent::caller_memory(&outcome.clone().decode()?, format.into());
            let mut answer = StartCallResponse::from(outcome);
            answer.agent_context = Some(memory);
            Ok(StartResponse::Ok(DirectJson(answer)))
        })
        .await
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
        auth.with(Scope::Calls)?;
        crate::limits::counted(&self.state, auth.0.tenant, async {
            let withheld = body.0.consent == Some(ConsentDto::None);
            let cmd = EndCall::try_from(body.0)?;
            if withheld {
                let ani = cmd
                    .hints
                    .ani
                    .as_deref()
                    .map(|a| sticky_core::domain::Ani::parse(a, self.state.engine.region()));
                let report = self
                    .state
                    .engine
                    .forget_caller(auth.0.tenant, &cmd.call_id, ani.as_ref())
                    .await?;
                super::audit::note(
                    &self.state,
                    auth.0.tenant,
                    "caller_forgotten",
                    None,
                    super::customers::counts(&report),
                )
                .await;
                return Ok(EndResponse::Ok(Json(EndCallResponse {
                    call_id: cmd.call_id.as_str().to_owned(),
                    customer_ref: None,
                    provisional: false,
                    merged_from: None,
                })));
            }
            let outcome = self.state.engine.end_call(auth.0.tenant, cmd).await?;
            Ok(EndResponse::Ok(Json(outcome.into())))
        })
        .await
    }

    /// Read a stored call.
    #[oai(path = "/:call_id", method = "get", operation_id = "get_call")]
    async fn get(
        &self,
        auth: ApiKeyAuth,
        /// The platform's call id (URL-encoded).
        #[oai(validator(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\x00-\x1F\x7F-\x9F]+$"
        ))]
        call_id: Path<String>,
    ) -> Result<GetCallResponse, ApiError> {
        auth.with(Scope::Calls)?;
        let call_id = parse_call_id(&call_id.0)?;
        let call = self.state.engine.get_call(auth.0.tenant, &call_id).await?;
        Ok(GetCallResponse::Ok(Json(call.into())))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};
    use poem::IntoResponse;
    use poem_openapi::types::ToJSON;
    use serde_json::json;

    use sticky_core::engine::{ContextJson, CustomerContext, OpenIntent, RecentCall};

    use super::*;
    use crate::api::shared::ContextDto;

    /// A start sends the context as the engine stores it: that JSON must be exactly what the
    /// schema's type writes for the same context (timestamps `+00:00` with as many digits,
    /// field names and order, `null`s, numbers and string escapes).
    #[test]
    fn the_stored_context_is_what_its_schema_type_writes() {
        for context in contexts() {
            let stored = ContextJson::new(&context).unwrap();
            let dto = ContextDto::from(context.clone());
            let schema = serde_json::to_string(&dto.to_json().unwrap()).unwrap();
            assert_eq!(stored.get().get(), schema);
            assert_eq!(stored.get().get(), serde_json::to_string(&dto).unwrap());
            assert_eq!(stored.decode().unwrap(), context);
        }
    }

    fn signal(name: &str, contribution: f64) -> SignalDto {
        SignalDto {
            signal: name.to_owned(),
            contribution,
            detail: "number seen on 3 calls, the last \"today\"".to_owned(),
        }
    }

    /// Contexts covering every field and both values of each option.
    fn contexts() -> Vec<CustomerContext> {
        let whole = Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap();
        let fraction = whole + Duration::nanoseconds(123_456_789);
        let millis = whole + Duration::milliseconds(250);
        let micros = whole - Duration::days(400) + Duration::microseconds(5);
        let mut variables = BTreeMap::new();
        variables.insert("name".to_owned(), json!("Zoë \"Z\" O'Brien\n\t✓ </script>"));
        variables.insert("balance".to_owned(), json!(-12.5));
        variables.insert("ratio".to_owned(), json!(0.1 + 0.2));
        variables.insert("visits".to_owned(), json!(7));
        variables.insert("big".to_owned(), json!(u64::MAX));
        variables.insert("vip".to_owned(), json!(true));
        variables.insert("cleared".to_owned(), Value::Null);
        variables.insert(
            "order".to_owned(),
            json!({"zeta": [1, 2.25, "x", 1e300], "alpha": {"b": null, "a": false}}),
        );
        vec![
            CustomerContext {
                variables,
                open_intents: vec![
                    OpenIntent {
                        intent: "refund_request".to_owned(),
                        opened_at: fraction,
                        last_call_id: Some("CA01".to_owned()),
                        due_at: None,
                        state: None,
                    },
                    OpenIntent {
                        intent: "callback".to_owned(),
                        opened_at: whole,
                        last_call_id: None,
                        due_at: None,
                        state: None,
                    },
                ],
                variable_expiry: Default::default(),
                recent_calls: vec![
                    RecentCall {
                        call_id: "CA01".to_owned(),
                        started_at: Some(micros),
                        ended_at: Some(fraction),
                        intent: Some("refund_request".to_owned()),
                        intent_status: Some("open".to_owned()),
                        summary: Some("Asked about the invoice; callback promised.".to_owned()),
                    },
                    RecentCall {
                        call_id: "CA00".to_owned(),
                        started_at: None,
                        ended_at: Some(millis),
                        intent: None,
                        intent_status: None,
                        summary: None,
                    },
                ],
                call_count: 3,
                first_seen_at: Some(micros),
                last_seen_at: Some(whole),
            },
            CustomerContext {
                variables: BTreeMap::new(),
                open_intents: Vec::new(),
                variable_expiry: Default::default(),
                recent_calls: Vec::new(),
                call_count: 0,
                first_seen_at: None,
                last_seen_at: None,
            },
        ]
    }

    /// Answers covering every field, both values of each option and every band.
    fn answers() -> Vec<StartCallResponse> {
        let mut contexts = contexts()
            .into_iter()
            .map(|c| ContextField(ContextJson::new(&c).unwrap()));
        let (context, empty) = (contexts.next().unwrap(), contexts.next().unwrap());
        vec![
            StartCallResponse {
                call_id: "CA02".to_owned(),
                customer_ref: Some("crm-42".to_owned()),
                confidence: 0.1 + 0.2 + 0.6,
                band: BandDto::High,
                recommended_action: ActionDto::Greet,
                signals: vec![signal("ani_match", 0.7), signal("crm_id_conflict", -0.25)],
                candidates: Vec::new(),
                context: Some(context),
                agent_context: None,
            },
            StartCallResponse {
                call_id: "CA03".to_owned(),
                customer_ref: Some("prov-1".to_owned()),
                confidence: 0.55,
                band: BandDto::Medium,
                recommended_action: ActionDto::Verify,
                signals: vec![signal("shared_number", 0.0)],
                candidates: vec![CandidateDto {
                    customer_ref: "crm-43".to_owned(),
                    confidence: 1e-7,
                    last_seen_at: None,
                    calls: 1,
                }],
                context: Some(empty),
                agent_context: None,
            },
            StartCallResponse {
                call_id: "CA04".to_owned(),
                customer_ref: None,
                confidence: 0.0,
                band: BandDto::Low,
                recommended_action: ActionDto::TreatAsNew,
                signals: Vec::new(),
                candidates: Vec::new(),
                context: None,
                agent_context: None,
            },
        ]
    }

    /// The start answer is written by serde (`DirectJson`), but the OpenAPI document and every
    /// other answer follow poem-openapi's writer: the two must agree byte for byte (a
    /// timestamp written `Z` instead of `+00:00`, a renamed or reordered field, a dropped
    /// `null` would change the API without any snapshot noticing, since snapshots redact
    /// timestamps).
    #[test]
    fn the_start_answer_is_written_exactly_as_its_schema_type_writes_it() {
        for answer in answers() {
            let schema = serde_json::to_string(&answer.to_json().unwrap()).unwrap();
            let direct = serde_json::to_string(&answer).unwrap();
            assert_eq!(direct, schema);
        }
    }

    #[tokio::test]
    async fn the_start_answer_is_sent_as_json_with_the_schema_writers_bytes() {
        for answer in answers() {
            let schema = serde_json::to_string(&answer.to_json().unwrap()).unwrap();
            let resp = StartResponse::Ok(DirectJson(answer)).into_response();
            assert_eq!(resp.status(), poem::http::StatusCode::OK);
            assert_eq!(
                resp.headers()
                    .get(poem::http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                Some("application/json; charset=utf-8")
            );
            let body = resp.into_body().into_string().await.unwrap();
            assert_eq!(body, schema);
        }
    }
}
