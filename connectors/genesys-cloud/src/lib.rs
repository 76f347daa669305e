//! Genesys Cloud connector.
//!
//! - An Architect inbound call flow's **Call Data Action** runs a Web Services Data Action
//!   (<https://help.mypurecloud.com/articles/about-web-services-data-actions-integration/>)
//!   whose request template is `${input.rawRequest}`: the input contract's flat JSON, posted to
//!   `/start` at the start of the call and to `/end` when the flow (or the agent's wrap-up
//!   workflow) knows the outcome. The bare route reads `"event": "start" | "end"`.
//! - The conversation `customer.end` detail event
//!   (`v2.detail.events.conversation.{id}.customer.end`) in its EventBridge envelope, sent by an
//!   EventBridge API destination to `/end` or the bare route, ends the call; other topics and
//!   media are acknowledged and ignored.
//!
//! Request keys, named after Architect's variables: `conversationId` (the call id,
//! `Call.ConversationId`, call-wide across transfers), `ani` (`Call.Ani`, `tel:+1...` or a
//! `sip:` URI), `dnis` (`Call.CalledAddressOriginal`), `direction` (on `outbound` the customer
//! is the called party), `attestation` (the STIR/SHAKEN verdict, `A`/`B`/`C`/`failed`, when
//! the flow has it), `externalContactId` (external id `genesys_contact`), `customerId`
//! (external id `crm_id`), `ext_<name>` external ids; at the end `customerRef`, `intent`,
//! `intentStatus`, `intentDueAt` (a promised callback's due time), `summary`, `wrapupCode`
//! and `language` (saved as variables `wrapup_code` and `language`) and `var_<name>`
//! variables. Other keys are ignored.
//!
//! The answer is a flat JSON object whose every key is always present, typed as the output
//! contract in the guide declares (a missing required output fails the Architect action):
//! [`START_OUTPUTS`] and a `sticky_var_<name>` string per saved variable, with the names in
//! the `vars` query parameter always present; [`END_OUTPUTS`] after an end.

pub mod models;

use serde_json::{Map, Value, json};
use sticky_core::commands::{EndCall, StartCall};
use sticky_core::connector::flat::{FlatParams, attribute_key, hints, is_outbound, json_len};
use sticky_core::connector::{
    Connector, ConnectorCommand, InboundRequest, Rejection, Rendered, Route,
};
use sticky_core::domain::{CallId, Platform};
use sticky_core::engine::{EndOutcome, StartOutcome};
use sticky_core::scoring::Band;

use crate::models::EventBridgeEvent;

/// The slug in our URLs.
pub const SLUG: &str = "genesys-cloud";
/// We keep answers under 32 KB: Genesys documents no limit for a data action's response, and
/// Architect variables are not meant for more.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024;
/// Output keys of a start, with their JSON types, always present.
pub const START_OUTPUTS: &[(&str, &str)] = &[
    ("sticky_call_id", "string"),
    ("sticky_customer_ref", "string"),
    ("sticky_band", "string"),
    ("sticky_confidence", "number"),
    ("sticky_action", "string"),
    ("sticky_known", "boolean"),
    ("sticky_open_intents", "string"),
    ("sticky_call_count", "integer"),
    ("sticky_last_summary", "string"),
];
/// Output keys of an end, with their JSON types, always present.
pub const END_OUTPUTS: &[(&str, &str)] = &[
    ("sticky_call_id", "string"),
    ("sticky_customer_ref", "string"),
    ("sticky_provisional", "boolean"),
];
/// Longest variable output key.
const MAX_KEY_CHARS: usize = 100;

/// The Genesys Cloud connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct GenesysCloud;

fn platform() -> Platform {
    Platform::parse(SLUG).expect("a valid slug")
}

/// Where the caller's number is: the caller on inbound calls, the called party on outbound.
fn data_action_hints(p: &FlatParams) -> Result<sticky_core::commands::IdentityHints, Rejection> {
    let outbound = p.text("direction")?.is_some_and(is_outbound);
    let ani = p.text("ani")?.map(|v| ("ani", v.to_owned()));
    let dnis = p.text("dnis")?.map(|v| ("dnis", v.to_owned()));
    let (customer, business) = if outbound { (dnis, ani) } else { (ani, dnis) };
    let mut external = p.prefixed("ext_");
    if let Some(v) = p.text("externalContactId")? {
        external.push(("genesys_contact".into(), v.to_owned()));
    }
    if let Some(v) = p.text("customerId")? {
        external.push(("crm_id".into(), v.to_owned()));
    }
    Ok(hints(customer, business, external, |name| match name {
        "genesys_contact" => "externalContactId".to_owned(),
        "crm_id" => "customerId".to_owned(),
        other => format!("ext_{other}"),
    })?
    .with_attestation(p.attestation("attestation")?))
}

fn data_action_start(p: &FlatParams) -> Result<StartCall, Rejection> {
    Ok(StartCall {
        call_id: p.call_id("conversationId")?,
        platform: platform(),
        hints: data_action_hints(p)?,
    })
}

fn data_action_end(p: &FlatParams) -> Result<EndCall, Rejection> {
    Ok(EndCall {
        call_id: p.call_id("conversationId")?,
        platform: platform(),
        customer_ref: p.customer_ref("customerRef")?,
        intent: p.intent("intent")?,
        intent_due_at: p.due_at("intentDueAt", "intent")?,
        intent_status: p.intent_status("intentStatus")?,
        variables: p.variables(&[("wrapupCode", "wrapup_code"), ("language", "language")])?,
        summary: p.summary(&["summary"])?,
        hints: data_action_hints(p)?,
    })
}

fn customer_end(event: &EventBridgeEvent) -> Result<ConnectorCommand, Rejection> {
    if !event.detail_type.ends_with(".customer.end") {
        return Ok(ConnectorCommand::Ignore {
            reason: "not a customer end event",
        });
    }
    let body = &event.detail.event_body;
    if body
        .media_type
        .as_deref()
        .is_some_and(|m| !m.eq_ignore_ascii_case("voice"))
    {
        return Ok(ConnectorCommand::Ignore {
            reason: "not a voice conversation",
        });
    }
    // The body names the conversation; the topic does too (`...conversation.<id>.customer.end`).
    let from_topic = event.detail.topic_name.as_deref().and_then(|t| {
        t.strip_prefix("v2.detail.events.conversation.")?
            .strip_suffix(".customer.end")
    });
    let raw = body
        .conversation_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(from_topic)
        .ok_or_else(|| Rejection::missing("detail.eventBody.conversationId"))?;
    let call_id = CallId::parse(raw)
        .map_err(|e| Rejection::invalid("detail.eventBody.conversationId", e.0))?;
    let outbound = body.direction.as_deref().is_some_and(is_outbound);
    let ani = body.ani.clone().map(|v| ("detail.eventBody.ani", v));
    let dnis = body.dnis.clone().map(|v| ("detail.eventBody.dnis", v));
    let (customer, business) = if outbound { (dnis, ani) } else { (ani, dnis) };
    let external: Vec<(String, String)> = body
        .external_contact_id
        .iter()
        .filter(|v| !v.is_empty())
        .map(|v| ("genesys_contact".to_owned(), v.clone()))
        .collect();
    let hints = hints(customer, business, external, |_| {
        "detail.eventBody.externalContactId".to_owned()
    })?;
    Ok(ConnectorCommand::End(EndCall::hang_up(
        call_id,
        platform(),
        hints,
    )))
}

/// The two payloads this connector reads.
enum Payload {
    DataAction(FlatParams),
    EventBridge(Box<EventBridgeEvent>),
}

fn read(request: &InboundRequest<'_>) -> Result<Payload, Rejection> {
    let (params, map) = FlatParams::from_json(request.body, "a Genesys Cloud data action request")?;
    if map.contains_key("detail-type") {
        return serde_json::from_value(Value::Object(map))
            .map(|e| Payload::EventBridge(Box::new(e)))
            .map_err(|e| Rejection::from_json(&e, "a Genesys Cloud EventBridge event"));
    }
    if !params.has("conversationId") {
        return Err(Rejection::Invalid {
            status: 400,
            code: "missing_field",
            message: "`conversationId` is required: map it from Call.ConversationId in the data action's input (or send an EventBridge conversation event)".into(),
            field: Some("conversationId".into()),
        });
    }
    Ok(Payload::DataAction(params))
}

/// The variable names the flow declared as outputs (`?vars=name,order_id`).
fn declared_vars(request: &InboundRequest<'_>) -> Vec<String> {
    request
        .query_param("vars")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| format!("sticky_var_{}", attribute_key(v)))
        .collect()
}

fn variable_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn start_answer(request: &InboundRequest<'_>, outcome: &StartOutcome) -> Value {
    let ctx = outcome.context.as_ref();
    let mut map = Map::new();
    map.insert("sticky_call_id".into(), json!(outcome.call_id));
    map.insert(
        "sticky_customer_ref".into(),
        json!(outcome.customer_ref.clone().unwrap_or_default()),
    );
    map.insert("sticky_band".into(), json!(outcome.band.as_str()));
    map.insert("sticky_confidence".into(), json!(outcome.confidence));
    map.insert("sticky_action".into(), json!(outcome.band.action()));
    map.insert("sticky_known".into(), json!(outcome.band == Band::High));
    let intents: Vec<&str> = ctx
        .map(|c| c.open_intents.iter().map(|i| i.intent.as_str()).collect())
        .unwrap_or_default();
    map.insert("sticky_open_intents".into(), json!(intents.join(",")));
    map.insert(
        "sticky_call_count".into(),
        json!(ctx.map_or(0, |c| c.call_count)),
    );
    let summary = ctx
        .and_then(|c| c.recent_calls.first())
        .and_then(|c| c.summary.clone())
        .unwrap_or_default();
    map.insert("sticky_last_summary".into(), json!(summary));
    // The declared variables first (always present), then the others while they fit.
    let declared = declared_vars(request);
    for key in &declared {
        map.insert(key.clone(), json!(""));
    }
    let mut size = serde_json::to_vec(&map).map_or(0, |b| b.len());
    let mut others = Vec::new();
    for (name, value) in ctx.map(|c| &c.variables).into_iter().flatten() {
        let Some(text) = variable_text(value) else {
            continue;
        };
        let key = format!("sticky_var_{}", attribute_key(name));
        if declared.contains(&key) {
            size += json_len(&text).saturating_sub(2);
            map.insert(key, json!(text));
        } else {
            others.push((key, text));
        }
    }
    for (key, text) in others {
        let cost = json_len(&key) + json_len(&text) + 2;
        if key.len() > MAX_KEY_CHARS || map.contains_key(&key) || size + cost > MAX_RESPONSE_BYTES {
            continue;
        }
        size += cost;
        map.insert(key, json!(text));
    }
    Value::Object(map)
}

impl Connector for GenesysCloud {
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
        match (read(request)?, route) {
            (Payload::EventBridge(e), Route::End | Route::Auto) => customer_end(&e),
            (Payload::EventBridge(_), Route::Start) => Err(Rejection::invalid_payload(
                "a conversation event is an end: send it to /v1/connectors/genesys-cloud/end",
            )),
            (Payload::DataAction(p), Route::Start) => {
                Ok(ConnectorCommand::Start(data_action_start(&p)?))
            }
            (Payload::DataAction(p), Route::End) => Ok(ConnectorCommand::End(data_action_end(&p)?)),
            (Payload::DataAction(p), Route::Auto) if p.is_end_event()? => {
                Ok(ConnectorCommand::End(data_action_end(&p)?))
            }
            (Payload::DataAction(p), Route::Auto) => {
                Ok(ConnectorCommand::Start(data_action_start(&p)?))
            }
        }
    }

    fn render_start(&self, request: &InboundRequest<'_>, outcome: &StartOutcome) -> Rendered {
        Rendered::json(&start_answer(request, outcome))
    }

    fn render_end(&self, _request: &InboundRequest<'_>, outcome: &EndOutcome) -> Rendered {
        Rendered::json(&json!({
            "sticky_call_id": outcome.call_id,
            "sticky_customer_ref": outcome.customer_ref.clone().unwrap_or_default(),
            "sticky_provisional": outcome.provisional,
        }))
    }

    fn render_ignored(&self, _request: &InboundRequest<'_>, reason: &'static str) -> Rendered {
        Rendered::json(&json!({ "sticky_ignored": reason }))
    }

    fn check_answer(&self, rendered: &Rendered) -> Result<(), String> {
        if rendered.body.len() > MAX_RESPONSE_BYTES {
            return Err(format!("{} bytes, over 32 KB", rendered.body.len()));
        }
        let v: Value = serde_json::from_slice(&rendered.body).map_err(|e| e.to_string())?;
        let obj = v.as_object().ok_or("a data action needs a JSON object")?;
        if let Some((k, _)) = obj.iter().find(|(_, v)| v.is_array() || v.is_object()) {
            return Err(format!("`{k}` is not a scalar"));
        }
        if obj.contains_key("sticky_ignored") {
            return Ok(());
        }
        let outputs = if obj.contains_key("sticky_band") {
            START_OUTPUTS
        } else {
            END_OUTPUTS
        };
        for (key, kind) in outputs {
            let value = obj.get(*key).ok_or(format!("`{key}` is missing"))?;
            let ok = match *kind {
                "string" => value.is_string(),
                "number" => value.is_number(),
                "integer" => value.is_i64() || value.is_u64(),
                "boolean" => value.is_boolean(),
                _ => false,
            };
            if !ok {
                return Err(format!("`{key}` is not a {kind}"));
            }
        }
        match obj
            .iter()
            .find(|(k, v)| k.starts_with("sticky_var_") && !v.is_string())
        {
            Some((k, _)) => Err(format!("`{k}` is not a string")),
            None => Ok(()),
        }
    }
}
