//! Amazon Lex V2's Lambda code hook event, as far as this connector reads it
//! (<https://docs.aws.amazon.com/lexv2/latest/dg/lambda-input-format.html>). Unknown fields are
//! ignored: "new fields may appear without a version change". The intent is kept as received,
//! so that the answer can hand it back unchanged.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The event Lex passes to the code hook Lambda (our forwarding Lambda posts it unchanged).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeHookEvent {
    /// `1.0`.
    pub message_version: Option<String>,
    /// `DialogCodeHook` or `FulfillmentCodeHook`.
    pub invocation_source: String,
    /// `Speech`, `DTMF` or `Text`.
    pub input_mode: Option<String>,
    /// The session: Amazon Connect passes its contact id.
    pub session_id: Option<String>,
    /// What the caller said last.
    pub input_transcript: Option<String>,
    /// The session state.
    pub session_state: SessionState,
    /// Request attributes (`x-amz-lex:channels:platform` ...).
    #[serde(default)]
    pub request_attributes: Option<Map<String, Value>>,
}

/// `sessionState` of the event and of the answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionState {
    /// String-to-string attributes: the caller number set by Connect or Genesys, ours.
    #[serde(default)]
    pub session_attributes: Option<Map<String, Value>>,
    /// The current intent (`name`, `slots`, `state`, `confirmationState`), kept whole.
    pub intent: Option<Map<String, Value>>,
    /// Active contexts, handed back unchanged.
    #[serde(default)]
    pub active_contexts: Option<Value>,
}
