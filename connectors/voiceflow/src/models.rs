//! Voiceflow's project webhook payloads, as far as this connector reads them. Unknown fields
//! are ignored: Voiceflow adds fields over time.

use serde::Deserialize;
use serde_json::Value;

/// A project webhook event (Settings → Webhooks):
/// <https://docs.voiceflow.com/reference/session-lifecyle>. `type` is `runtime.call.start`,
/// `runtime.call.end`, `runtime.session.start`, `runtime.session.end` ...
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEvent {
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's data.
    pub data: CallData,
    /// When it happened.
    pub time: Option<Value>,
    /// `project-<projectID>`.
    pub resource: Option<String>,
}

/// `data` of a call event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallData {
    /// The conversation's user: the caller's number on phone deployments, any id on web voice.
    #[serde(rename = "userID")]
    pub user_id: Option<String>,
    /// The project.
    #[serde(rename = "projectID")]
    pub project_id: Option<String>,
    /// When the call started (Unix milliseconds).
    pub start_time: Option<Value>,
    /// `twilio` or `web-voice`.
    pub platform: Option<String>,
    /// The telephony details (phone calls only).
    #[serde(default)]
    pub metadata: CallMetadata,
}

/// `data.metadata` of a phone call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallMetadata {
    /// Twilio's call id.
    pub call_sid: Option<String>,
    /// `inbound`, `outbound`, `prototype-outbound`.
    pub call_type: Option<String>,
    /// The customer's number.
    pub user_number: Option<String>,
    /// The agent's (the Voiceflow project's) number.
    pub agent_number: Option<String>,
}
