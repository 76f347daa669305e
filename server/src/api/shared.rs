//! Wire types used by several resources, and their conversions from the engine's types.

use std::collections::BTreeMap;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sticky_core::commands::IdentityHints;
use sticky_core::engine::{CallRecord, CallbackState, ContextJson, CustomerContext};
use sticky_core::scoring::{Band, Signal};

use crate::error::ApiError;

/// What the platform knows about the caller.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub struct IdentityHintsDto {
    /// Caller number (ANI) in any common form: E.164, national digits (read in the configured
    /// default region), `tel:` or `sip:` URI. Withheld values (`anonymous`, Twilio's sentinel
    /// numbers ...) are recognised and never used as an identity.
    #[oai(nullable)]
    pub ani: Option<String>,
    /// Dialled number (DNIS).
    #[oai(nullable)]
    pub dnis: Option<String>,
    /// Ids from other systems, by kind: `{"crm_id": "crm_12345"}`.
    #[oai(nullable)]
    pub external_ids: Option<BTreeMap<String, String>>,
    /// The carrier's STIR/SHAKEN verdict on the caller number, when the platform passes it
    /// (Twilio's `StirVerstat` `TN-Validation-Passed-B` is `B`). `A` keeps the number's full
    /// weight, `B` and `C` lower it (one recent call is then `medium`, not `high`), `failed`
    /// makes the number no evidence at all.
    #[oai(nullable)]
    pub attestation: Option<AttestationDto>,
}

/// STIR/SHAKEN attestation of the caller number.
#[derive(Debug, Clone, Copy, Enum, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum AttestationDto {
    /// Full: the carrier vouches for the caller's right to the number.
    #[oai(rename = "A")]
    #[serde(rename = "A")]
    A,
    /// Partial: the carrier knows the caller, not their right to the number.
    #[oai(rename = "B")]
    #[serde(rename = "B")]
    B,
    /// Gateway: the carrier only saw where the call entered its network.
    #[oai(rename = "C")]
    #[serde(rename = "C")]
    C,
    /// Verification failed: probably spoofed.
    #[oai(rename = "failed")]
    #[serde(rename = "failed")]
    Failed,
}

crate::string_enum!(AttestationDto);

impl From<AttestationDto> for sticky_core::domain::Attestation {
    fn from(a: AttestationDto) -> Self {
        match a {
            AttestationDto::A => Self::A,
            AttestationDto::B => Self::B,
            AttestationDto::C => Self::C,
            AttestationDto::Failed => Self::Failed,
        }
    }
}

impl IdentityHintsDto {
    /// Validates into the engine's hints.
    ///
    /// # Errors
    /// 422 naming the field.
    pub fn into_hints(self) -> Result<IdentityHints, ApiError> {
        Ok(IdentityHints::parse(
            "identity_hints",
            self.ani,
            self.dnis,
            self.external_ids.unwrap_or_default(),
        )?
        .with_attestation(self.attestation.map(Into::into)))
    }
}

/// Confidence band.
#[derive(Debug, Clone, Copy, Enum, PartialEq, Eq, Serialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum BandDto {
    /// confidence ≥ 0.8
    High,
    /// 0.5 ≤ confidence < 0.8
    Medium,
    /// confidence < 0.5
    Low,
}

impl From<Band> for BandDto {
    fn from(b: Band) -> Self {
        match b {
            Band::High => Self::High,
            Band::Medium => Self::Medium,
            Band::Low => Self::Low,
        }
    }
}

/// What the agent should do with the answer.
#[derive(Debug, Clone, Copy, Enum, PartialEq, Eq, Serialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ActionDto {
    /// Greet the caller by name and carry on from their context.
    Greet,
    /// Confirm who the caller is before using their context.
    Verify,
    /// Treat the caller as new.
    TreatAsNew,
}

impl From<Band> for ActionDto {
    fn from(b: Band) -> Self {
        match b {
            Band::High => Self::Greet,
            Band::Medium => Self::Verify,
            Band::Low => Self::TreatAsNew,
        }
    }
}

/// Where a promised callback stands when the call starts.
#[derive(Debug, Clone, Copy, Enum, PartialEq, Eq, Serialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum CallbackStateDto {
    /// Due more than an hour from now.
    Open,
    /// Due within the hour.
    Due,
    /// Past its due time: the promise was missed.
    Overdue,
}

impl From<CallbackState> for CallbackStateDto {
    fn from(s: CallbackState) -> Self {
        match s {
            CallbackState::Open => Self::Open,
            CallbackState::Due => Self::Due,
            CallbackState::Overdue => Self::Overdue,
        }
    }
}

/// One reason behind the confidence.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(rename_all = "snake_case")]
pub struct SignalDto {
    /// `ani_match`, `external_id_match`, `recency`, `shared_ani`, `conflict` or `withheld_ani`.
    pub signal: String,
    /// Weight in natural log-odds (negative lowers the confidence).
    pub contribution: f64,
    /// Human explanation.
    pub detail: String,
}

impl From<Signal> for SignalDto {
    fn from(s: Signal) -> Self {
        Self {
            signal: s.kind.as_str().to_owned(),
            contribution: s.contribution,
            detail: s.detail,
        }
    }
}

/// An open intent.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(rename_all = "snake_case")]
pub struct OpenIntentDto {
    /// Intent name.
    pub intent: String,
    /// When it was (re)opened.
    #[serde(serialize_with = "crate::json::rfc3339")]
    pub opened_at: DateTime<Utc>,
    /// The last call that touched it.
    #[oai(nullable)]
    pub last_call_id: Option<String>,
    /// When a promised callback is due (only for callbacks).
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::rfc3339_opt"
    )]
    pub due_at: Option<DateTime<Utc>>,
    /// For a callback, in a call-start answer: where it stands. Callbacks are listed first,
    /// overdue ones ahead.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<CallbackStateDto>,
}

/// A recent ended call.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(rename_all = "snake_case")]
pub struct RecentCallDto {
    /// The platform's call id.
    pub call_id: String,
    /// Start time (null when only the end was reported).
    #[oai(nullable)]
    #[serde(serialize_with = "crate::json::rfc3339_opt")]
    pub started_at: Option<DateTime<Utc>>,
    /// End time.
    #[oai(nullable)]
    #[serde(serialize_with = "crate::json::rfc3339_opt")]
    pub ended_at: Option<DateTime<Utc>>,
    /// What it was about.
    #[oai(nullable)]
    pub intent: Option<String>,
    /// `open` or `resolved`.
    #[oai(nullable)]
    pub intent_status: Option<String>,
    /// Its summary.
    #[oai(nullable)]
    pub summary: Option<String>,
}

/// What we remember about the customer.
#[derive(Debug, Clone, Object, Serialize)]
#[oai(rename_all = "snake_case")]
pub struct ContextDto {
    /// Saved variables (latest value of each).
    pub variables: BTreeMap<String, Value>,
    /// Intents still open, most recently touched first.
    pub open_intents: Vec<OpenIntentDto>,
    /// The latest ended calls, most recent first (at most 5).
    pub recent_calls: Vec<RecentCallDto>,
    /// Ended calls linked to the customer.
    pub call_count: i64,
    /// First call.
    #[oai(nullable)]
    #[serde(serialize_with = "crate::json::rfc3339_opt")]
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest call.
    #[oai(nullable)]
    #[serde(serialize_with = "crate::json::rfc3339_opt")]
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl From<CustomerContext> for ContextDto {
    fn from(c: CustomerContext) -> Self {
        Self {
            variables: c.variables,
            open_intents: c
                .open_intents
                .into_iter()
                .map(|i| OpenIntentDto {
                    intent: i.intent,
                    opened_at: i.opened_at,
                    last_call_id: i.last_call_id,
                    due_at: i.due_at,
                    state: i.state.map(Into::into),
                })
                .collect(),
            recent_calls: c
                .recent_calls
                .into_iter()
                .map(|k| RecentCallDto {
                    call_id: k.call_id,
                    started_at: k.started_at,
                    ended_at: k.ended_at,
                    intent: k.intent,
                    intent_status: k.intent_status,
                    summary: k.summary,
                })
                .collect(),
            call_count: c.call_count,
            first_seen_at: c.first_seen_at,
            last_seen_at: c.last_seen_at,
        }
    }
}

/// A customer's context in the engine's JSON form ([`ContextJson`], as their stored document
/// holds it): the start answer carries it as it is, and the OpenAPI document describes it as
/// a [`ContextDto`], whose writer gives the same bytes (a test in `api/calls.rs` checks it).
#[derive(Debug, Clone)]
pub struct ContextField(pub ContextJson);

impl Type for ContextField {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        ContextDto::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        ContextDto::schema_ref()
    }

    fn register(registry: &mut Registry) {
        ContextDto::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ToJSON for ContextField {
    fn to_json(&self) -> Option<Value> {
        serde_json::from_str(self.0.get().get()).ok()
    }
}

impl ParseFromJSON for ContextField {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let context: CustomerContext = serde_json::from_value(value.unwrap_or_default())
            .map_err(|e| ParseError::custom(e.to_string()))?;
        ContextJson::new(&context)
            .map(Self)
            .map_err(|e| ParseError::custom(e.to_string()))
    }
}

impl Serialize for ContextField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.get().serialize(s)
    }
}

/// A stored call.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct CallDto {
    /// The platform's call id.
    pub call_id: String,
    /// Where the call came from.
    pub platform: String,
    /// `in_progress` or `ended`.
    pub status: String,
    /// Caller number in E.164 (null when withheld, unusable or not given).
    #[oai(nullable)]
    pub ani: Option<String>,
    /// Whether the caller number was withheld or unusable.
    pub ani_withheld: bool,
    /// Dialled number as stored (E.164 when it parsed).
    #[oai(nullable)]
    pub dnis: Option<String>,
    /// External ids given with the call.
    pub external_ids: BTreeMap<String, String>,
    /// The customer the start matched (any band).
    #[oai(nullable)]
    pub matched_customer_ref: Option<String>,
    /// The start's confidence.
    #[oai(nullable)]
    pub confidence: Option<f64>,
    /// The start's band.
    #[oai(nullable)]
    pub band: Option<String>,
    /// The customer the call belongs to after its end.
    #[oai(nullable)]
    pub customer_ref: Option<String>,
    /// What the call was about.
    #[oai(nullable)]
    pub intent: Option<String>,
    /// `open` or `resolved`.
    #[oai(nullable)]
    pub intent_status: Option<String>,
    /// Summary.
    #[oai(nullable)]
    pub summary: Option<String>,
    /// Variables the call's ends saved.
    pub variables: BTreeMap<String, Value>,
    /// Start time (null when only the end was reported).
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    /// End time (null while in progress).
    #[oai(nullable)]
    pub ended_at: Option<DateTime<Utc>>,
}

impl From<CallRecord> for CallDto {
    fn from(c: CallRecord) -> Self {
        Self {
            call_id: c.call_id,
            platform: c.platform,
            status: c.status,
            ani: c.ani,
            ani_withheld: c.ani_withheld,
            dnis: c.dnis,
            external_ids: c.external_ids,
            matched_customer_ref: c.matched_customer_ref,
            confidence: c.confidence,
            band: c.band,
            customer_ref: c.customer_ref,
            intent: c.intent,
            intent_status: c.intent_status,
            summary: c.summary,
            variables: c.variables,
            started_at: c.started_at,
            ended_at: c.ended_at,
        }
    }
}
