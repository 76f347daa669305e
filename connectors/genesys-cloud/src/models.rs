//! Genesys Cloud's native payloads, as far as this connector reads them. The data action's
//! request is whatever the admin's template renders, read as [`sticky_core::connector::flat::FlatParams`];
//! the conversation end event has a fixed shape. Unknown fields are ignored.

use serde::Deserialize;

/// A Genesys Cloud event delivered by the Amazon EventBridge integration
/// (<https://help.mypurecloud.com/articles/about-the-amazon-eventbridge-integration/>) to an
/// EventBridge API destination pointing at us. `detail-type` is the topic pattern with a
/// literal `{id}` (`v2.detail.events.conversation.{id}.customer.end`).
#[derive(Debug, Clone, Deserialize)]
pub struct EventBridgeEvent {
    /// The topic pattern.
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    /// `aws.partner/genesys.com/cloud/<orgId>/<name>`.
    pub source: Option<String>,
    /// The Genesys notification.
    pub detail: Detail,
}

/// `detail` of the envelope.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    /// The topic with the real conversation id.
    pub topic_name: Option<String>,
    /// The event.
    pub event_body: CustomerEndEvent,
}

/// A conversation detail event's body: for `customer.end`, a `CustomerEndEvent`
/// (<https://developer.genesys.cloud/notificationsalerts/notifications/available-topics>,
/// `v2.detail.events.conversation.{id}.customer.end`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerEndEvent {
    /// The conversation, call-wide (transfers keep it).
    pub conversation_id: Option<String>,
    /// `INBOUND` or `OUTBOUND`.
    pub direction: Option<String>,
    /// `VOICE`, `CALLBACK`, `CHAT` ...
    pub media_type: Option<String>,
    /// The calling address (`tel:+14155550142`).
    pub ani: Option<String>,
    /// The called address.
    pub dnis: Option<String>,
    /// `ENDPOINT`, `CLIENT`, `TRANSFER` ...
    pub disconnect_type: Option<String>,
    /// The external contact, when Genesys matched one.
    pub external_contact_id: Option<String>,
}
