//! Dialogflow CX's WebhookRequest, as far as this connector reads it. Unknown fields are
//! ignored. <https://cloud.google.com/dialogflow/cx/docs/reference/rest/v3/WebhookRequest>

use serde::Deserialize;
use serde_json::{Map, Value};

/// A webhook call from a CX agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRequest {
    /// Unique id of the detect-intent response that called us.
    pub detect_intent_response_id: Option<String>,
    /// The session and its parameters.
    pub session_info: Option<SessionInfo>,
    /// The fulfillment that called us; its `tag` selects start or end.
    pub fulfillment_info: Option<FulfillmentInfo>,
    /// Channel payload; telephony calls carry `telephony.caller_id`.
    #[serde(default)]
    pub payload: Map<String, Value>,
    /// Language of the conversation.
    pub language_code: Option<String>,
}

/// `sessionInfo`.
#[derive(Debug, Clone, Deserialize)]
pub struct SessionInfo {
    /// `projects/<p>/locations/<l>/agents/<a>/sessions/<session id>` (or `.../environments/<e>/sessions/<id>`).
    pub session: Option<String>,
    /// Session parameters.
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// `fulfillmentInfo`.
#[derive(Debug, Clone, Deserialize)]
pub struct FulfillmentInfo {
    /// The tag set on the fulfillment in the console.
    pub tag: Option<String>,
}
