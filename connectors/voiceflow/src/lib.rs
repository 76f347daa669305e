//! Voiceflow connector.
//!
//! - The project's **call lifecycle webhooks** (Settings → Webhooks,
//!   <https://docs.voiceflow.com/reference/session-lifecyle>) post `{type, data, time, resource}`
//!   to `/v1/connectors/voiceflow`: `runtime.call.start` starts the call, `runtime.call.end`
//!   ends it; other events (`runtime.session.*`) are acknowledged and ignored. The call id is
//!   Twilio's `data.metadata.callSid`, or `<userID>:<startTime>` for web voice. On phone
//!   deployments the caller is `data.userID` (Voiceflow sets it to the caller's number) or
//!   `metadata.userNumber`, the customer also on outbound calls; Twilio's anonymous sentinels
//!   are withheld callers. Web voice sessions have no number: their `userID` is the external id
//!   `voiceflow_user`.
//! - An **API step** inside the flow (<https://docs.voiceflow.com/docs/api-step>) posts a flat
//!   JSON object to `/start` (or `/end`, or the bare route with `"event"`): `user_id`
//!   (`{user_id}`), `call_id` (optional; `0` or `none`, an unset Voiceflow variable, counts as
//!   absent; else `<user_id>:<timestamp>`), `timestamp` (`{timestamp}`), `channel` (`web` for a
//!   user id that is not a phone number), `ext_<name>` external ids; at the end
//!   `customer_ref`, `intent`, `intent_status`, `intent_due_at`, `summary` and `var_<name>`
//!   variables.
//!
//! The answer is a flat JSON object of strings (`sticky_*`), which the API step captures into
//! variables by path; webhook deliveries ignore it.

pub mod models;

use serde_json::Value;
use sticky_core::commands::{EndCall, IdentityHints, StartCall};
use sticky_core::connector::flat::{
    FlatParams, check_flat_string_map, flat_string_map, hints, is_outbound,
};
use sticky_core::connector::{
    Connector, ConnectorCommand, InboundRequest, Rejection, Rendered, Route, context_fields,
    end_fields,
};
use sticky_core::domain::{CallId, Platform};
use sticky_core::engine::{EndOutcome, StartOutcome};

use crate::models::WebhookEvent;

/// The slug in our URLs.
pub const SLUG: &str = "voiceflow";
/// We keep answers small: they become Voiceflow variables.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024;
/// Longest key we produce.
const MAX_KEY_CHARS: usize = 100;
/// External id name of a web user.
const WEB_USER: &str = "voiceflow_user";

/// The Voiceflow connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct Voiceflow;

fn platform() -> Platform {
    Platform::parse(SLUG).expect("a valid slug")
}

fn number_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn webhook_call_id(event: &WebhookEvent) -> Result<CallId, Rejection> {
    let d = &event.data;
    if let Some(sid) = d.metadata.call_sid.as_deref().filter(|s| !s.is_empty()) {
        return CallId::parse(sid).map_err(|e| Rejection::invalid("data.metadata.callSid", e.0));
    }
    let user = d
        .user_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Rejection::missing("data.userID"))?;
    let start = d
        .start_time
        .as_ref()
        .and_then(number_text)
        .ok_or_else(|| Rejection::missing("data.startTime"))?;
    CallId::parse(&format!("{user}:{start}")).map_err(|e| Rejection::invalid("data.userID", e.0))
}

fn webhook_hints(event: &WebhookEvent) -> Result<IdentityHints, Rejection> {
    let d = &event.data;
    let m = &d.metadata;
    let phone = d.platform.as_deref() != Some("web-voice");
    if !phone {
        let external = d
            .user_id
            .iter()
            .filter(|u| !u.is_empty())
            .map(|u| (WEB_USER.to_owned(), u.clone()))
            .collect();
        return hints(None, None, external, |_| "data.userID".to_owned());
    }
    // The customer's number: `userNumber` (the called party on outbound calls too), else the
    // user id Voiceflow sets to the caller's number. An empty value is a withheld caller.
    let customer = match (&m.user_number, &d.user_id) {
        (Some(n), _) => Some(("data.metadata.userNumber", n.clone())),
        (None, Some(u)) if !m.call_type.as_deref().is_some_and(is_outbound) => {
            Some(("data.userID", u.clone()))
        }
        _ => None,
    };
    let business = m
        .agent_number
        .clone()
        .map(|n| ("data.metadata.agentNumber", n));
    hints(customer, business, Vec::new(), |_| String::new())
}

fn webhook(event: &WebhookEvent, route: Route) -> Result<ConnectorCommand, Rejection> {
    let command = match event.kind.as_str() {
        "runtime.call.start" => ConnectorCommand::Start(StartCall {
            call_id: webhook_call_id(event)?,
            platform: platform(),
            hints: webhook_hints(event)?,
        }),
        "runtime.call.end" => ConnectorCommand::End(EndCall::hang_up(
            webhook_call_id(event)?,
            platform(),
            webhook_hints(event)?,
        )),
        _ => {
            return Ok(ConnectorCommand::Ignore {
                reason: "not a call start or end",
            });
        }
    };
    match (&command, route) {
        (ConnectorCommand::End(_), Route::Start) => Err(Rejection::invalid_payload(
            "a runtime.call.end event is an end: send webhooks to /v1/connectors/voiceflow",
        )),
        (ConnectorCommand::Start(_), Route::End) => Err(Rejection::invalid_payload(
            "a runtime.call.start event is a start: send webhooks to /v1/connectors/voiceflow",
        )),
        _ => Ok(command),
    }
}

/// Whether an API step's `call_id` holds no call id: Voiceflow starts every variable at `0`,
/// and our guide resets `sticky_call_id` to `none` before the start step captures it, so
/// either means the start step did not answer.
fn unset_variable(value: &str) -> bool {
    value == "0" || value.eq_ignore_ascii_case("none")
}

fn step_call_id(p: &FlatParams) -> Result<CallId, Rejection> {
    if p.text("call_id")?.is_some_and(|v| !unset_variable(v)) {
        return p.call_id("call_id");
    }
    let user = p
        .text("user_id")?
        .ok_or_else(|| Rejection::missing("user_id"))?;
    let stamp = p.text("timestamp")?.ok_or_else(|| Rejection::Invalid {
        status: 400,
        code: "missing_field",
        message: "send `call_id`, or `timestamp` ({timestamp}) beside `user_id`".into(),
        field: Some("call_id".into()),
    })?;
    CallId::parse(&format!("{user}:{stamp}")).map_err(|e| Rejection::invalid("user_id", e.0))
}

fn step_hints(p: &FlatParams) -> Result<IdentityHints, Rejection> {
    let mut external = p.prefixed("ext_");
    let web = p
        .text("channel")?
        .is_some_and(|c| c.eq_ignore_ascii_case("web"));
    let user = p.text("user_id")?.map(str::to_owned);
    let ani = match user {
        Some(u) if web => {
            external.push((WEB_USER.to_owned(), u));
            None
        }
        Some(u) => Some(("user_id", u)),
        None => None,
    };
    Ok(hints(ani, None, external, |n| match n {
        WEB_USER => "user_id".to_owned(),
        other => format!("ext_{other}"),
    })?
    .with_attestation(p.attestation("attestation")?))
}

fn step(p: &FlatParams, end: bool) -> Result<ConnectorCommand, Rejection> {
    if !end {
        return Ok(ConnectorCommand::Start(StartCall {
            call_id: step_call_id(p)?,
            platform: platform(),
            hints: step_hints(p)?,
        }));
    }
    Ok(ConnectorCommand::End(EndCall {
        call_id: step_call_id(p)?,
        platform: platform(),
        customer_ref: p.customer_ref("customer_ref")?,
        intent: p.intent("intent")?,
        intent_due_at: p.due_at("intent_due_at", "intent")?,
        intent_status: p.intent_status("intent_status")?,
        variables: p.variables(&[])?,
        summary: p.summary(&["summary"])?,
        hints: step_hints(p)?,
    }))
}

fn answer(fields: Vec<(String, String)>) -> Rendered {
    Rendered::json(&flat_string_map(fields, MAX_RESPONSE_BYTES, MAX_KEY_CHARS))
}

impl Connector for Voiceflow {
    fn slug(&self) -> &'static str {
        SLUG
    }

    fn supports_auto_route(&self) -> bool {
        true
    }

    /// Where the webhook URL field refuses `user:key@` credentials, the key goes in the URL's
    /// query instead (`?key=sc_...`).
    fn key_parameter(&self) -> Option<&'static str> {
        Some("key")
    }

    fn parse(
        &self,
        route: Route,
        request: &InboundRequest<'_>,
    ) -> Result<ConnectorCommand, Rejection> {
        let (params, map) = FlatParams::from_json(request.body, "a Voiceflow request")?;
        if map.contains_key("type") && map.contains_key("data") {
            let event: WebhookEvent = serde_json::from_value(Value::Object(map))
                .map_err(|e| Rejection::from_json(&e, "a Voiceflow webhook event"))?;
            return webhook(&event, route);
        }
        if !params.has("user_id") && !params.has("call_id") {
            return Err(Rejection::invalid_payload(
                "expected a Voiceflow webhook event (`type`, `data`) or an API step body with `user_id`",
            ));
        }
        match route {
            Route::Start => step(&params, false),
            Route::End => step(&params, true),
            Route::Auto => step(&params, params.is_end_event()?),
        }
    }

    fn render_start(&self, _request: &InboundRequest<'_>, outcome: &StartOutcome) -> Rendered {
        answer(context_fields(outcome))
    }

    fn render_end(&self, _request: &InboundRequest<'_>, outcome: &EndOutcome) -> Rendered {
        answer(end_fields(outcome))
    }

    fn check_answer(&self, rendered: &Rendered) -> Result<(), String> {
        check_flat_string_map(rendered, MAX_RESPONSE_BYTES)
    }
}
