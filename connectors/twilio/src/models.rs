//! Twilio's native payloads, as far as this connector reads them. Unknown fields are ignored:
//! Twilio adds parameters over time.

use serde::Deserialize;

/// The parameters of the incoming-call voice webhook ("A call comes in"), form-encoded.
/// <https://www.twilio.com/docs/voice/twiml#request-parameters>
#[derive(Debug, Clone, Deserialize)]
pub struct VoiceWebhook {
    /// Unique id of the call (`CA` + 32 hex).
    #[serde(rename = "CallSid")]
    pub call_sid: Option<String>,
    /// The caller: E.164, `client:<identity>`, a SIP URI, or a withheld sentinel.
    #[serde(rename = "From")]
    pub from: Option<String>,
    /// The called number.
    #[serde(rename = "To")]
    pub to: Option<String>,
    /// `ringing` for an incoming call.
    #[serde(rename = "CallStatus")]
    pub call_status: Option<String>,
    /// STIR/SHAKEN attestation of the caller id (`TN-Validation-Passed-A` ...).
    #[serde(rename = "StirVerstat")]
    pub stir_verstat: Option<String>,
    /// Set on child legs: the parent call's sid.
    #[serde(rename = "ParentCallSid")]
    pub parent_call_sid: Option<String>,
    /// `inbound`, `outbound-api` (a call the business placed through the API) or
    /// `outbound-dial` (a `<Dial>`'s child leg).
    #[serde(rename = "Direction")]
    pub direction: Option<String>,
    /// The (sub)account the call belongs to.
    #[serde(rename = "AccountSid")]
    pub account_sid: Option<String>,
}

/// The status callback of a call, form-encoded.
/// <https://www.twilio.com/docs/voice/api/call-resource#statuscallback>
#[derive(Debug, Clone, Deserialize)]
pub struct StatusCallback {
    /// The call's sid.
    #[serde(rename = "CallSid")]
    pub call_sid: Option<String>,
    /// `queued`, `ringing`, `in-progress`, `completed`, `busy`, `failed`, `no-answer`,
    /// `canceled`.
    #[serde(rename = "CallStatus")]
    pub call_status: Option<String>,
    /// Seconds, on terminal statuses.
    #[serde(rename = "CallDuration")]
    pub call_duration: Option<String>,
    /// The caller.
    #[serde(rename = "From")]
    pub from: Option<String>,
    /// The called number.
    #[serde(rename = "To")]
    pub to: Option<String>,
    /// Set on child legs: the parent call's sid.
    #[serde(rename = "ParentCallSid")]
    pub parent_call_sid: Option<String>,
    /// `inbound`, `outbound-api` or `outbound-dial`.
    #[serde(rename = "Direction")]
    pub direction: Option<String>,
}

/// The JSON body a Studio "Make HTTP Request" widget sends, as our guide tells admins to
/// write it (Studio lets the flow author choose the body; these are the names we read).
/// <https://www.twilio.com/docs/studio/widget-library/http-request>
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudioRequest {
    /// `{{trigger.call.CallSid}}`
    #[serde(rename = "CallSid")]
    pub call_sid: String,
    /// `{{trigger.call.From}}`
    #[serde(rename = "From", default)]
    pub from: Option<String>,
    /// `{{trigger.call.To}}`
    #[serde(rename = "To", default)]
    pub to: Option<String>,
    /// `{{trigger.call.Direction}}`: on `outbound-api` the customer is `To`.
    #[serde(rename = "Direction", default)]
    pub direction: Option<String>,
    /// Ids from other systems gathered in the flow: `{"crm_id": "{{flow.variables.crm}}"}`.
    #[serde(default)]
    pub external_ids: std::collections::BTreeMap<String, String>,
    /// On an end request: who the caller turned out to be.
    #[serde(default)]
    pub customer_ref: Option<String>,
    /// On an end request: what the call was about.
    #[serde(default)]
    pub intent: Option<String>,
    /// On an end request: `open` or `resolved`.
    #[serde(default)]
    pub intent_status: Option<String>,
    /// On an end request: the summary.
    #[serde(default)]
    pub summary: Option<String>,
    /// On an end request: variables to save.
    #[serde(default)]
    pub variables: std::collections::BTreeMap<String, serde_json::Value>,
}
