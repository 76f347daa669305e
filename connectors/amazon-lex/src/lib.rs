//! Amazon Lex V2 connector.
//!
//! A bot's Lambda code hook (<https://docs.aws.amazon.com/lexv2/latest/dg/lambda.html>) runs a
//! small forwarding Lambda (in the guide) that posts the code hook event
//! (<https://docs.aws.amazon.com/lexv2/latest/dg/lambda-input-format.html>) to
//! `/v1/connectors/amazon-lex` and returns our answer as its own. `invocationSource`
//! `DialogCodeHook` is a start (every turn runs it; a repeated start of a call is answered
//! again without counting a new call), `FulfillmentCodeHook` an end. `/start` and `/end` take
//! the same event whatever its source.
//!
//! - call id: the session attribute `call_id` when the contact flow sets one (Connect's
//!   `$.InitialContactId`, Genesys Cloud's `Call.ConversationId`), else `sessionId`;
//! - caller: the session attribute `CustomerNumber`, `ani`, `caller_id` or `phone_number`, set
//!   by Connect's "Get customer input" block or Genesys Cloud (any form, `tel:` URIs too);
//!   session attributes `ext_<name>` are external ids, `attestation` the STIR/SHAKEN verdict;
//! - end: the intent's `name`, its status from the attribute `intent_status` (else `resolved`
//!   once Lex is fulfilling it, `open` when it failed), a promised callback's due time from the
//!   attribute `intent_due_at`, the summary from the attribute
//!   `summary` (else `inputTranscript`), filled slots as variables named after the slot
//!   (`interpretedValue`), attributes `var_<name>` as variables and `customer_ref`.
//!
//! The answer is a Lex V2 response
//! (<https://docs.aws.amazon.com/lexv2/latest/dg/lambda-response-format.html>) that keeps the
//! dialog going: the event's intent, `Delegate` after a dialog hook and `Close` with the intent
//! `Fulfilled` after fulfillment, and the event's session attributes plus the `sticky_*`
//! context fields (strings only).

pub mod models;

use serde_json::{Map, Value, json};
use sticky_core::commands::{EndCall, IdentityHints, StartCall};
use sticky_core::connector::flat::{FlatParams, attribute_key, hints, json_len};
use sticky_core::connector::{
    Connector, ConnectorCommand, InboundRequest, Rejection, Rendered, Route, context_fields,
    end_fields,
};
use sticky_core::domain::{CallId, IntentName, IntentStatus, Platform};
use sticky_core::engine::{EndOutcome, StartOutcome};

use crate::models::CodeHookEvent;

/// The slug in our URLs.
pub const SLUG: &str = "amazon-lex";
/// Session attributes that may hold the caller's number, in order of preference.
pub const CALLER_ATTRIBUTES: &[&str] = &["CustomerNumber", "ani", "caller_id", "phone_number"];
/// The most session-attribute text we return. Lex limits a session's attributes (and a
/// Connect flow reads them back); 12,000 bytes stays within every documented quota.
pub const MAX_ATTRIBUTE_BYTES: usize = 12_000;
/// Dialog action types a Lex V2 response may carry.
const DIALOG_ACTIONS: &[&str] = &[
    "Close",
    "ConfirmIntent",
    "Delegate",
    "ElicitIntent",
    "ElicitSlot",
];

/// The Amazon Lex V2 connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct AmazonLex;

fn platform() -> Platform {
    Platform::parse(SLUG).expect("a valid slug")
}

fn is_fulfillment(event: &CodeHookEvent) -> bool {
    event.invocation_source == "FulfillmentCodeHook"
}

struct Parsed {
    event: CodeHookEvent,
    attributes: FlatParams,
    call_id: CallId,
}

fn read(body: &[u8]) -> Result<Parsed, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| Rejection::malformed("the body is not valid JSON"))?;
    if !value
        .as_object()
        .is_some_and(|o| o.contains_key("invocationSource"))
    {
        return Err(Rejection::invalid_payload(
            "expected an Amazon Lex V2 code hook event (`invocationSource`, `sessionId`, `sessionState`)",
        ));
    }
    let event: CodeHookEvent = serde_json::from_value(value)
        .map_err(|e| Rejection::from_json(&e, "an Amazon Lex V2 code hook event"))?;
    if !matches!(
        event.invocation_source.as_str(),
        "DialogCodeHook" | "FulfillmentCodeHook"
    ) {
        return Err(Rejection::invalid(
            "invocationSource",
            "`invocationSource` must be `DialogCodeHook` or `FulfillmentCodeHook`",
        ));
    }
    let raw = event
        .session_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Rejection::missing("sessionId"))?;
    let session_call_id = CallId::parse(raw).map_err(|e| Rejection::invalid("sessionId", e.0))?;
    if event
        .session_state
        .intent
        .as_ref()
        .and_then(|i| i.get("name"))
        .and_then(Value::as_str)
        .is_none()
    {
        return Err(Rejection::missing("sessionState.intent.name"));
    }
    let attributes = FlatParams::from_map(
        event
            .session_state
            .session_attributes
            .as_ref()
            .unwrap_or(&Map::new()),
    );
    // The contact flow may name the call itself (Connect's `$.InitialContactId`, Genesys
    // Cloud's `Call.ConversationId`), so that the bot's start and end join the platform
    // connector's call and survive transfers.
    let call_id = match attributes.text("call_id").map_err(in_attributes)? {
        Some(id) => {
            CallId::parse(id).map_err(|e| Rejection::invalid(attribute_field("call_id"), e.0))?
        }
        None => session_call_id,
    };
    Ok(Parsed {
        event,
        attributes,
        call_id,
    })
}

fn attribute_field(key: &str) -> String {
    format!("sessionState.sessionAttributes.{key}")
}

/// Rewrites a rejection about a session attribute to name its full path.
fn in_attributes(r: Rejection) -> Rejection {
    match r {
        Rejection::Invalid {
            status,
            code,
            message,
            field,
        } => Rejection::Invalid {
            status,
            code,
            message,
            field: field.map(|f| attribute_field(&f)),
        },
        other => other,
    }
}

fn call_hints(p: &Parsed) -> Result<IdentityHints, Rejection> {
    let caller = p.attributes.first_text(CALLER_ATTRIBUTES)?;
    Ok(hints(caller, None, p.attributes.prefixed("ext_"), |n| {
        format!("ext_{n}")
    })
    .map_err(in_attributes)?
    .with_attestation(
        p.attributes
            .attestation("attestation")
            .map_err(in_attributes)?,
    ))
}

fn intent(p: &Parsed) -> &Map<String, Value> {
    p.event
        .session_state
        .intent
        .as_ref()
        .expect("checked when read")
}

/// Filled slots as text variables: a slot's `value.interpretedValue`, or for a list slot its
/// values joined by commas.
fn slot_values(intent: &Map<String, Value>) -> Vec<(String, Value)> {
    let interpreted = |slot: &Value| {
        slot.pointer("/value/interpretedValue")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut out = Vec::new();
    for (name, slot) in intent
        .get("slots")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let text = interpreted(slot).or_else(|| {
            let values: Vec<String> = slot
                .get("values")?
                .as_array()?
                .iter()
                .filter_map(interpreted)
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        });
        if let Some(t) = text {
            out.push((name.clone(), Value::String(t)));
        }
    }
    out
}

fn end(p: &Parsed) -> Result<EndCall, Rejection> {
    let intent = intent(p);
    let name = intent
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let state = intent
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let status = match p
        .attributes
        .intent_status("intent_status")
        .map_err(in_attributes)?
    {
        Some(s) => s,
        None if state == "Failed" => IntentStatus::Open,
        None => IntentStatus::Resolved,
    };
    // Slots first, so that an explicit `var_<name>` attribute wins over a slot of that name.
    let mut variables: Vec<(String, Value)> = slot_values(intent);
    variables.extend(
        p.attributes
            .prefixed("var_")
            .into_iter()
            .map(|(k, v)| (k, Value::String(v))),
    );
    let variables = sticky_core::commands::VariableChanges::parse(variables).map_err(|e| {
        Rejection::invalid(
            e.field.replace("variables.", "sessionState.intent.slots."),
            e.message,
        )
    })?;
    let summary = match p.attributes.summary(&["summary"]).map_err(in_attributes)? {
        Some(s) => Some(s),
        None => p
            .event
            .input_transcript
            .clone()
            .filter(|t| !t.trim().is_empty())
            .map(|t| sticky_core::commands::parse_summary("inputTranscript", t))
            .transpose()?,
    };
    Ok(EndCall {
        call_id: p.call_id.clone(),
        platform: platform(),
        customer_ref: p
            .attributes
            .customer_ref("customer_ref")
            .map_err(in_attributes)?,
        intent: Some(
            IntentName::parse(name)
                .map_err(|e| Rejection::invalid("sessionState.intent.name", e.0))?,
        ),
        // The event always names its intent, so a due time always has one.
        intent_due_at: p
            .attributes
            .text("intent_due_at")
            .map_err(in_attributes)?
            .map(|d| {
                sticky_core::domain::parse_due_at(d)
                    .map_err(|e| Rejection::invalid(attribute_field("intent_due_at"), e.0))
            })
            .transpose()?,
        intent_status: Some(status),
        variables,
        summary,
        hints: call_hints(p)?,
    })
}

/// The Lex response: the event's intent and attributes with `fields` added.
fn respond(request: &InboundRequest<'_>, fields: Vec<(String, String)>) -> Rendered {
    let Ok(p) = read(request.body) else {
        // Only reached for a body that parsed a moment ago; answer something Lex accepts.
        return Rendered::json(
            &json!({"sessionState": {"dialogAction": {"type": "ElicitIntent"}},
            "messages": [{"contentType": "PlainText", "content": "How can I help you?"}]}),
        );
    };
    let mut attributes: Map<String, Value> = p
        .event
        .session_state
        .session_attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| v.is_string())
        .collect();
    let mut size: usize = attributes
        .iter()
        .map(|(k, v)| json_len(k) + v.as_str().map_or(0, json_len) + 2)
        .sum();
    for (k, v) in fields {
        let key = attribute_key(&k);
        let cost = json_len(&key) + json_len(&v) + 2;
        if size + cost > MAX_ATTRIBUTE_BYTES {
            continue;
        }
        size += cost;
        attributes.insert(key, Value::String(v));
    }
    let mut intent = intent(&p).clone();
    let action = if is_fulfillment(&p.event) {
        if intent.get("state").and_then(Value::as_str) != Some("Failed") {
            intent.insert("state".into(), json!("Fulfilled"));
        }
        "Close"
    } else {
        "Delegate"
    };
    let mut state = Map::new();
    if let Some(contexts) = &p.event.session_state.active_contexts {
        state.insert("activeContexts".into(), contexts.clone());
    }
    state.insert("dialogAction".into(), json!({"type": action}));
    state.insert("intent".into(), Value::Object(intent));
    state.insert("sessionAttributes".into(), Value::Object(attributes));
    Rendered::json(&json!({"sessionState": state}))
}

impl Connector for AmazonLex {
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
        let p = read(request.body)?;
        let start = match route {
            Route::Start => true,
            Route::End => false,
            Route::Auto => !is_fulfillment(&p.event),
        };
        if start {
            Ok(ConnectorCommand::Start(StartCall {
                call_id: p.call_id.clone(),
                platform: platform(),
                hints: call_hints(&p)?,
            }))
        } else {
            Ok(ConnectorCommand::End(end(&p)?))
        }
    }

    fn render_start(&self, request: &InboundRequest<'_>, outcome: &StartOutcome) -> Rendered {
        respond(request, context_fields(outcome))
    }

    fn render_end(&self, request: &InboundRequest<'_>, outcome: &EndOutcome) -> Rendered {
        respond(request, end_fields(outcome))
    }

    fn render_ignored(&self, request: &InboundRequest<'_>, reason: &'static str) -> Rendered {
        respond(request, vec![("sticky_ignored".into(), reason.into())])
    }

    fn check_answer(&self, rendered: &Rendered) -> Result<(), String> {
        let v: Value = serde_json::from_slice(&rendered.body).map_err(|e| e.to_string())?;
        let state = v
            .get("sessionState")
            .and_then(Value::as_object)
            .ok_or("`sessionState` is required")?;
        let action = state
            .get("dialogAction")
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .ok_or("`sessionState.dialogAction.type` is required")?;
        if !DIALOG_ACTIONS.contains(&action) {
            return Err(format!("`{action}` is not a dialog action"));
        }
        if matches!(action, "Close" | "Delegate")
            && state
                .get("intent")
                .and_then(|i| i.get("name"))
                .and_then(Value::as_str)
                .is_none()
        {
            return Err(format!("{action} needs the intent"));
        }
        if action == "Close"
            && !matches!(
                state
                    .get("intent")
                    .and_then(|i| i.get("state"))
                    .and_then(Value::as_str),
                Some("Fulfilled" | "Failed")
            )
        {
            return Err("Close needs the intent state Fulfilled or Failed".into());
        }
        let attributes = state
            .get("sessionAttributes")
            .and_then(Value::as_object)
            .ok_or("`sessionAttributes` must be an object")?;
        let size: usize = attributes
            .iter()
            .map(|(k, v)| json_len(k) + v.as_str().map_or(0, json_len) + 2)
            .sum();
        if size > MAX_ATTRIBUTE_BYTES {
            return Err(format!("{size} bytes of session attributes"));
        }
        match attributes.iter().find(|(_, v)| !v.is_string()) {
            Some((k, _)) => Err(format!("session attribute `{k}` is not a string")),
            None => Ok(()),
        }
    }
}
