//! Amazon Connect's native payloads, as far as this connector reads them. Unknown fields are
//! ignored: AWS adds fields over time.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// Reads `null` as the empty value: Connect sends `"Attributes": null` on some contacts.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The event a contact flow's "Invoke AWS Lambda function" block sends (our forwarding Lambda
/// posts it unchanged).
/// <https://docs.aws.amazon.com/connect/latest/adminguide/connect-lambda-functions.html>
#[derive(Debug, Clone, Deserialize)]
pub struct FlowEvent {
    /// The contact and the block's parameters.
    #[serde(rename = "Details")]
    pub details: FlowDetails,
    /// `ContactFlowEvent`.
    #[serde(rename = "Name")]
    pub name: Option<String>,
}

/// `Details` of a flow event.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowDetails {
    /// The contact.
    #[serde(rename = "ContactData")]
    pub contact_data: ContactData,
    /// The key-value parameters set on the Invoke block.
    #[serde(rename = "Parameters", default, deserialize_with = "null_as_default")]
    pub parameters: BTreeMap<String, String>,
}

/// `Details.ContactData`.
#[derive(Debug, Clone, Deserialize)]
pub struct ContactData {
    /// The contact's user-defined attributes.
    #[serde(rename = "Attributes", default, deserialize_with = "null_as_default")]
    pub attributes: BTreeMap<String, String>,
    /// `VOICE`, `CHAT`, `TASK` ...
    #[serde(rename = "Channel")]
    pub channel: Option<String>,
    /// This contact's id.
    #[serde(rename = "ContactId")]
    pub contact_id: Option<String>,
    /// The caller.
    #[serde(rename = "CustomerEndpoint")]
    pub customer_endpoint: Option<Endpoint>,
    /// The Customer Profiles id, when the flow has one.
    #[serde(rename = "CustomerId")]
    pub customer_id: Option<String>,
    /// The first contact of a chain of transfers.
    #[serde(rename = "InitialContactId")]
    pub initial_contact_id: Option<String>,
    /// `INBOUND`, `OUTBOUND`, `TRANSFER`, `CALLBACK` ...
    #[serde(rename = "InitiationMethod")]
    pub initiation_method: Option<String>,
    /// The number the customer called.
    #[serde(rename = "SystemEndpoint")]
    pub system_endpoint: Option<Endpoint>,
}

/// A phone endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    /// The number, E.164 for `TELEPHONE_NUMBER`.
    #[serde(rename = "Address")]
    pub address: Option<String>,
    /// `TELEPHONE_NUMBER` for calls.
    #[serde(rename = "Type")]
    pub kind: Option<String>,
}

/// An "Amazon Connect Contact Event" delivered by EventBridge (an API destination pointing at
/// us). <https://docs.aws.amazon.com/connect/latest/adminguide/contact-events.html>
#[derive(Debug, Clone, Deserialize)]
pub struct EventBridgeEvent {
    /// `Amazon Connect Contact Event`.
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    /// `aws.connect`.
    pub source: Option<String>,
    /// The event.
    pub detail: ContactEventDetail,
}

/// `detail` of a contact event. Older revisions of the documentation spell the fields in
/// PascalCase (`EventType`, `ContactId`); both are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactEventDetail {
    /// `INITIATED`, `CONNECTED_TO_AGENT`, `DISCONNECTED` ...
    #[serde(alias = "EventType")]
    pub event_type: String,
    /// The contact's id.
    #[serde(alias = "ContactId")]
    pub contact_id: String,
    /// `VOICE` (documented samples also show `Voice`), `CHAT` ...
    #[serde(alias = "Channel", default)]
    pub channel: Option<String>,
    /// `INBOUND`, `OUTBOUND`, `TRANSFER`, `QUEUE_TRANSFER`, `CALLBACK`, `API` ...
    #[serde(alias = "InitiationMethod", default)]
    pub initiation_method: Option<String>,
    /// The first contact of a chain of transfers: the call's id.
    #[serde(alias = "InitialContactId", default)]
    pub initial_contact_id: Option<String>,
    /// The contact this one was transferred from.
    #[serde(alias = "PreviousContactId", default)]
    pub previous_contact_id: Option<String>,
    /// The contact this one was transferred to (the contact record's `NextContactId`), when
    /// the event carries it.
    #[serde(alias = "NextContactId", default)]
    pub next_contact_id: Option<String>,
    /// When a transfer of this contact completed (the contact record's
    /// `TransferCompletedTimestamp`), when the event carries it.
    #[serde(alias = "TransferCompletedTimestamp", default)]
    pub transfer_completed_timestamp: Option<serde_json::Value>,
    /// The customer's endpoint, on events that carry it.
    #[serde(alias = "CustomerEndpoint", default)]
    pub customer_endpoint: Option<EventEndpoint>,
    /// The number the contact reached or came from, on events that carry it.
    #[serde(alias = "SystemEndpoint", default)]
    pub system_endpoint: Option<EventEndpoint>,
}

/// An endpoint in a contact event (`{"type": "TELEPHONE_NUMBER", "address": "+1..."}`; older
/// spellings in PascalCase).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEndpoint {
    /// The number.
    #[serde(alias = "Address", default)]
    pub address: Option<String>,
    /// `TELEPHONE_NUMBER` for calls.
    #[serde(alias = "Type", rename = "type", default)]
    pub kind: Option<String>,
}
