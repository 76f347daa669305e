//! Amazon Connect connector.
//!
//! - A contact flow's "Invoke AWS Lambda function" block runs a small forwarding Lambda (in
//!   the guide) that posts the flow event
//!   (<https://docs.aws.amazon.com/connect/latest/adminguide/connect-lambda-functions.html>)
//!   to `/start` or `/end` (or to `/v1/connectors/amazon-connect` with the block parameter
//!   `sticky_event` set to `start` or `end`). The answer is the flat string-to-string map a
//!   flow reads as `$.External.<key>`, within Connect's 32 KB limit.
//! - EventBridge "Amazon Connect Contact Event"s
//!   (<https://docs.aws.amazon.com/connect/latest/adminguide/contact-events.html>) sent through
//!   an API destination: `DISCONNECTED` voice contacts end the call; other events are
//!   acknowledged and ignored.
//!
//! The call id is the contact chain's `InitialContactId` (the contact's own id on its first
//! leg), so a transferred leg continues its call; a `DISCONNECTED` event of a contact that was
//! transferred on (`nextContactId` or `transferCompletedTimestamp` present) is ignored, since
//! the call goes on. The customer is `CustomerEndpoint` whichever way the call goes (on an
//! outbound call or a callback it is the called party).
//!
//! Block parameters: `attestation` (`A`/`B`/`C`/`failed`, the STIR/SHAKEN verdict when the
//! flow has one), `ext_<name>` become external ids (`ext_crm_id` → `crm_id`), and at the end
//! `customer_ref`, `intent`, `intent_status`, `intent_due_at` (a promised callback's due
//! time), `summary`, and `var_<name>` variables; contact attributes named `var_<name>` are
//! variables too (parameters win).

pub mod models;

use std::collections::BTreeMap;

use serde_json::Value;
use sticky_core::commands::{EndCall, IdentityHints, StartCall, VariableChanges, parse_summary};
use sticky_core::connector::flat::flat_string_map;
use sticky_core::connector::{
    Connector, ConnectorCommand, InboundRequest, Rejection, Rendered, Route, context_fields,
    end_fields,
};
use sticky_core::domain::{
    Attestation, CallId, CustomerRef, IntentName, IntentStatus, Platform, parse_due_at,
};
use sticky_core::engine::{EndOutcome, StartOutcome};

use crate::models::{EventBridgeEvent, FlowEvent};

/// The slug in our URLs.
pub const SLUG: &str = "amazon-connect";
/// Connect rejects Lambda responses over 32 KB.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024;
/// Longest attribute key we produce.
const MAX_KEY_CHARS: usize = 127;

/// The Amazon Connect connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct AmazonConnect;

fn platform() -> Platform {
    Platform::parse(SLUG).expect("a valid slug")
}

fn call_id(raw: Option<&str>, field: &str) -> Result<CallId, Rejection> {
    let raw = raw.ok_or_else(|| Rejection::missing(field))?;
    CallId::parse(raw).map_err(|e| Rejection::invalid(field, e.0))
}

fn non_empty(v: Option<&String>) -> Option<&str> {
    v.map(String::as_str).filter(|s| !s.trim().is_empty())
}

/// The call a flow event belongs to: the first contact of its chain of transfers
/// (`InitialContactId`), so that a transferred leg continues the call instead of counting a
/// new one; the contact itself when it is the first.
fn flow_call_id(event: &FlowEvent) -> Result<CallId, Rejection> {
    let contact = &event.details.contact_data;
    // The contact id is required even on a later leg: without it this is no contact event.
    call_id(
        contact.contact_id.as_deref(),
        "Details.ContactData.ContactId",
    )?;
    match non_empty(contact.initial_contact_id.as_ref()) {
        Some(initial) => call_id(Some(initial), "Details.ContactData.InitialContactId"),
        None => call_id(
            contact.contact_id.as_deref(),
            "Details.ContactData.ContactId",
        ),
    }
}

fn flow_start(event: &FlowEvent) -> Result<StartCall, Rejection> {
    let call_id = flow_call_id(event)?;
    Ok(StartCall {
        call_id,
        platform: platform(),
        hints: hints(event)?,
    })
}

fn hints(event: &FlowEvent) -> Result<IdentityHints, Rejection> {
    let contact = &event.details.contact_data;
    // Only a telephone endpoint is a caller number; a missing or other endpoint is "not
    // given" (chat, tasks), and the engine recognises withheld values in the address.
    let ani = contact
        .customer_endpoint
        .as_ref()
        .filter(|e| e.kind.as_deref().is_none_or(|k| k == "TELEPHONE_NUMBER"))
        .map(|e| e.address.clone().unwrap_or_default());
    let dnis = contact
        .system_endpoint
        .as_ref()
        .and_then(|e| e.address.clone());
    let mut external: Vec<(String, String)> = event
        .details
        .parameters
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("ext_")?;
            (!v.is_empty()).then(|| (name.to_owned(), v.clone()))
        })
        .collect();
    if let Some(id) = non_empty(contact.customer_id.as_ref()) {
        external.push(("connect_customer_id".into(), id.to_owned()));
    }
    let attestation = non_empty(event.details.parameters.get("attestation"))
        .map(|a| {
            Attestation::parse(a)
                .map_err(|e| Rejection::invalid("Details.Parameters.attestation", e.0))
        })
        .transpose()?;
    IdentityHints::parse("Details", ani, dnis, external)
        .map_err(|e| {
            let field = match e.field.as_str() {
                "Details.ani" => "Details.ContactData.CustomerEndpoint.Address".to_owned(),
                "Details.dnis" => "Details.ContactData.SystemEndpoint.Address".to_owned(),
                other => other.replace("Details.external_ids.", "Details.Parameters.ext_"),
            };
            Rejection::invalid(field, e.message)
        })
        .map(|h| h.with_attestation(attestation))
}

fn flow_end(event: &FlowEvent) -> Result<EndCall, Rejection> {
    let contact = &event.details.contact_data;
    let params = &event.details.parameters;
    let call_id = flow_call_id(event)?;
    let mut variables: BTreeMap<String, Value> = BTreeMap::new();
    for (source, prefix) in [(&contact.attributes, "var_"), (params, "var_")] {
        for (k, v) in source {
            if let Some(name) = k.strip_prefix(prefix) {
                variables.insert(name.to_owned(), Value::String(v.clone()));
            }
        }
    }
    let field = |name: &str| format!("Details.Parameters.{name}");
    Ok(EndCall {
        call_id,
        platform: platform(),
        customer_ref: non_empty(params.get("customer_ref"))
            .map(|r| {
                CustomerRef::parse(r).map_err(|e| Rejection::invalid(field("customer_ref"), e.0))
            })
            .transpose()?,
        intent: non_empty(params.get("intent"))
            .map(|i| IntentName::parse(i).map_err(|e| Rejection::invalid(field("intent"), e.0)))
            .transpose()?,
        intent_due_at: non_empty(params.get("intent_due_at"))
            .map(|d| {
                if non_empty(params.get("intent")).is_none() {
                    return Err(Rejection::invalid(
                        field("intent_due_at"),
                        "`intent_due_at` needs `intent`: a callback is due on an intent",
                    ));
                }
                parse_due_at(d).map_err(|e| Rejection::invalid(field("intent_due_at"), e.0))
            })
            .transpose()?,
        intent_status: non_empty(params.get("intent_status"))
            .map(|s| {
                IntentStatus::parse(s).map_err(|e| Rejection::invalid(field("intent_status"), e.0))
            })
            .transpose()?,
        variables: VariableChanges::parse(variables).map_err(|e| {
            Rejection::invalid(
                e.field.replace("variables.", "Details.Parameters.var_"),
                e.message,
            )
        })?,
        summary: non_empty(params.get("summary"))
            .map(|s| parse_summary(&field("summary"), s.to_owned()))
            .transpose()?,
        hints: hints(event)?,
    })
}

fn eventbridge(event: &EventBridgeEvent) -> Result<ConnectorCommand, Rejection> {
    if event.detail_type != "Amazon Connect Contact Event" {
        return Ok(ConnectorCommand::Ignore {
            reason: "not a contact event",
        });
    }
    let d = &event.detail;
    if d.channel
        .as_deref()
        .is_some_and(|c| !c.eq_ignore_ascii_case("voice"))
    {
        return Ok(ConnectorCommand::Ignore {
            reason: "not a voice contact",
        });
    }
    if d.event_type != "DISCONNECTED" {
        return Ok(ConnectorCommand::Ignore {
            reason: "contact not disconnected yet",
        });
    }
    // A contact that was transferred on is one leg of a call that goes on in the next
    // contact; the last leg's disconnect ends the call.
    if non_empty(d.next_contact_id.as_ref()).is_some()
        || d.transfer_completed_timestamp
            .as_ref()
            .is_some_and(|t| !t.is_null())
    {
        return Ok(ConnectorCommand::Ignore {
            reason: "contact transferred; the call goes on",
        });
    }
    call_id(Some(&d.contact_id), "detail.contactId")?;
    let id = match non_empty(d.initial_contact_id.as_ref()) {
        Some(initial) => call_id(Some(initial), "detail.initialContactId")?,
        None => call_id(Some(&d.contact_id), "detail.contactId")?,
    };
    // An event that names the customer's number lets an end of a contact that never ran our
    // flow Lambda (an outbound call, a callback) land on the right customer.
    let phone = |e: &Option<crate::models::EventEndpoint>| {
        e.as_ref()
            .filter(|e| e.kind.as_deref().is_none_or(|k| k == "TELEPHONE_NUMBER"))
            .and_then(|e| e.address.clone())
    };
    let hints = IdentityHints::parse(
        "detail",
        phone(&d.customer_endpoint),
        phone(&d.system_endpoint),
        Vec::new(),
    )
    .map_err(|e| {
        let field = match e.field.as_str() {
            "detail.ani" => "detail.customerEndpoint.address".to_owned(),
            "detail.dnis" => "detail.systemEndpoint.address".to_owned(),
            other => other.to_owned(),
        };
        Rejection::invalid(field, e.message)
    })?;
    Ok(ConnectorCommand::End(EndCall::hang_up(
        id,
        platform(),
        hints,
    )))
}

/// Which of the two payloads this is.
enum Payload {
    Flow(FlowEvent),
    EventBridge(EventBridgeEvent),
}

fn read(body: &[u8]) -> Result<Payload, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| Rejection::malformed("the body is not valid JSON"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Rejection::invalid_payload("an Amazon Connect event is a JSON object"))?;
    if obj.contains_key("detail-type") {
        serde_json::from_value(value)
            .map(Payload::EventBridge)
            .map_err(|e| Rejection::from_json(&e, "an EventBridge contact event"))
    } else if obj.contains_key("Details") {
        serde_json::from_value(value)
            .map(Payload::Flow)
            .map_err(|e| Rejection::from_json(&e, "a contact-flow Lambda event"))
    } else {
        Err(Rejection::invalid_payload(
            "expected a contact-flow Lambda event (`Details`) or an EventBridge contact event (`detail-type`)",
        ))
    }
}

/// Connect's flat string map: attribute keys of letters, digits, `-` and `_`, within 32 KB.
fn flat_map(fields: Vec<(String, String)>) -> Value {
    flat_string_map(fields, MAX_RESPONSE_BYTES, MAX_KEY_CHARS)
}

impl Connector for AmazonConnect {
    fn slug(&self) -> &'static str {
        SLUG
    }

    fn supports_auto_route(&self) -> bool {
        true
    }

    fn parse(
        &self,
        route: Route,
        request: &InboundRequest<'_>,
    ) -> Result<ConnectorCommand, Rejection> {
        match (read(request.body)?, route) {
            (Payload::EventBridge(e), Route::End | Route::Auto) => eventbridge(&e),
            (Payload::EventBridge(_), Route::Start) => Err(Rejection::invalid_payload(
                "an EventBridge contact event is an end: send it to /v1/connectors/amazon-connect",
            )),
            (Payload::Flow(f), Route::Start) => Ok(ConnectorCommand::Start(flow_start(&f)?)),
            (Payload::Flow(f), Route::End) => Ok(ConnectorCommand::End(flow_end(&f)?)),
            (Payload::Flow(f), Route::Auto) => {
                match f.details.parameters.get("sticky_event").map(String::as_str) {
                    None | Some("start") => Ok(ConnectorCommand::Start(flow_start(&f)?)),
                    Some("end") => Ok(ConnectorCommand::End(flow_end(&f)?)),
                    Some(_) => Err(Rejection::invalid(
                        "Details.Parameters.sticky_event",
                        "`sticky_event` must be `start` or `end`",
                    )),
                }
            }
        }
    }

    fn render_start(&self, _request: &InboundRequest<'_>, outcome: &StartOutcome) -> Rendered {
        Rendered::json(&flat_map(context_fields(outcome)))
    }

    fn render_end(&self, _request: &InboundRequest<'_>, outcome: &EndOutcome) -> Rendered {
        Rendered::json(&flat_map(end_fields(outcome)))
    }

    fn render_ignored(&self, _request: &InboundRequest<'_>, reason: &'static str) -> Rendered {
        Rendered::json(&flat_map(vec![("sticky_ignored".into(), reason.into())]))
    }

    fn check_answer(&self, rendered: &Rendered) -> Result<(), String> {
        if rendered.body.len() > MAX_RESPONSE_BYTES {
            return Err(format!(
                "{} bytes, over Connect's 32 KB",
                rendered.body.len()
            ));
        }
        let v: Value = serde_json::from_slice(&rendered.body).map_err(|e| e.to_string())?;
        let obj = v.as_object().ok_or("Connect needs a flat JSON object")?;
        if let Some(k) = obj.keys().find(|k| {
            !k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            return Err(format!("`{k}` is not a valid attribute key"));
        }
        match obj.iter().find(|(_, v)| !v.is_string()) {
            Some((k, _)) => Err(format!(
                "`{k}` is not a string: Connect needs a flat string map"
            )),
            None => Ok(()),
        }
    }
}
