//! Dialogflow CX connector.
//!
//! A CX agent calls one webhook URL (`/v1/connectors/dialogflow-cx`) from several
//! fulfillments; the fulfillment's tag says what it wants: `sticky-start` at the start of the
//! conversation, `sticky-end` when the agent has learned what the call was about
//! (<https://cloud.google.com/dialogflow/cx/docs/concept/webhook>). `/start` and `/end` take
//! the same request whatever its tag.
//!
//! - call id: the session id (last segment of `sessionInfo.session`);
//! - caller: `payload.telephony.caller_id` (the Phone Gateway and telephony integrations),
//!   else the session parameter `caller_id`;
//! - session parameters `ext_<name>` are external ids; at the end `customer_ref`, `intent`,
//!   `intent_status` and `summary` say who and what, and every other parameter (not
//!   `sticky_*`) is a variable to save (`null` removes it).
//!
//! The answer is a WebhookResponse
//! (<https://cloud.google.com/dialogflow/cx/docs/reference/rest/v3/WebhookResponse>) setting
//! session parameters `sticky_customer_ref`, `sticky_band`, `sticky_confidence`,
//! `sticky_action`, `sticky_open_intents`, `sticky_call_count`, `sticky_last_summary` and
//! `sticky_var_<name>`; with a `greeting` query parameter (`Welcome back, {name}!`) a
//! recognised caller also gets that text as a fulfillment message.

pub mod models;

use serde_json::{Map, Value, json};
use sticky_core::commands::{
    EndCall, IdentityHints, MAX_VARIABLES, StartCall, VariableChanges, parse_summary,
};
use sticky_core::connector::flat::flat_string_map;
use sticky_core::connector::{
    Connector, ConnectorCommand, InboundRequest, Rejection, Rendered, Route,
};
use sticky_core::domain::{CallId, CustomerRef, IntentName, IntentStatus, Platform};
use sticky_core::engine::{EndOutcome, StartOutcome};
use sticky_core::scoring::Band;

use crate::models::WebhookRequest;

/// The slug in our URLs.
pub const SLUG: &str = "dialogflow-cx";
/// Tag of the fulfillment that starts a call.
pub const START_TAG: &str = "sticky-start";
/// Tag of the fulfillment that ends a call.
pub const END_TAG: &str = "sticky-end";
/// We keep answers well under the webhook response limits.
pub const MAX_RESPONSE_BYTES: usize = 48 * 1024;
/// Session parameters that are instructions, not variables.
const RESERVED: &[&str] = &[
    "customer_ref",
    "intent",
    "intent_status",
    "summary",
    "caller_id",
    "ani",
    "phone_number",
];

/// The Dialogflow CX connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct DialogflowCx;

fn platform() -> Platform {
    Platform::parse(SLUG).expect("a valid slug")
}

/// A session parameter as text: strings as they are, numbers (from `@sys.number`) as their
/// digits (`12345.0` is `12345`). `None` when absent, null or empty.
fn text_param(params: &Map<String, Value>, name: &str) -> Result<Option<String>, Rejection> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(number_text(n))),
        Some(_) => Err(Rejection::Invalid {
            status: 400,
            code: "invalid_type",
            message: format!("session parameter `{name}` must be text or a number"),
            field: Some(format!("sessionInfo.parameters.{name}")),
        }),
    }
}

/// A number as CX users wrote it: `@sys.number` gives `12345.0` for "12345".
fn number_text(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{f:.0}"),
        _ => n.to_string(),
    }
}

struct Parsed {
    req: WebhookRequest,
    call_id: CallId,
    params: Map<String, Value>,
}

fn read(body: &[u8]) -> Result<Parsed, Rejection> {
    let req: WebhookRequest = serde_json::from_slice(body)
        .map_err(|e| Rejection::from_json(&e, "a Dialogflow CX WebhookRequest"))?;
    let info = req
        .session_info
        .as_ref()
        .ok_or_else(|| Rejection::missing("sessionInfo"))?;
    let session = info
        .session
        .as_deref()
        .ok_or_else(|| Rejection::missing("sessionInfo.session"))?;
    let id = session.rsplit('/').next().unwrap_or_default();
    let call_id = CallId::parse(id).map_err(|e| Rejection::invalid("sessionInfo.session", e.0))?;
    let params = info.parameters.clone();
    Ok(Parsed {
        req,
        call_id,
        params,
    })
}

/// Session parameters that may hold the caller's number when the telephony payload does not
/// (a CX agent behind another telephony provider, or a flow that copies it).
const CALLER_PARAMETERS: &[&str] = &["caller_id", "ani", "phone_number"];

fn hints(p: &Parsed) -> Result<IdentityHints, Rejection> {
    let telephony = p.req.payload.get("telephony").and_then(Value::as_object);
    let mut caller = telephony
        .and_then(|t| t.get("caller_id"))
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
        .map(|c| ("payload.telephony.caller_id".to_owned(), c.to_owned()));
    for name in CALLER_PARAMETERS {
        if caller.is_some() {
            break;
        }
        caller =
            text_param(&p.params, name)?.map(|c| (format!("sessionInfo.parameters.{name}"), c));
    }
    let dnis = telephony
        .and_then(|t| t.get("dnis").or_else(|| t.get("called_number")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut external = Vec::new();
    for (k, v) in &p.params {
        if let Some(name) = k.strip_prefix("ext_") {
            match v {
                Value::String(s) if !s.is_empty() => external.push((name.to_owned(), s.clone())),
                Value::Number(n) => external.push((name.to_owned(), number_text(n))),
                _ => {}
            }
        }
    }
    // An id that is not one (a name with a space, an overlong value) is left out, as the end
    // names it in `sticky_skipped`: it must not cost the call its other hints.
    external.retain(|(name, value)| sticky_core::domain::ExternalId::new(name, value).is_ok());
    let caller_field = caller.as_ref().map(|(f, _)| f.clone());
    IdentityHints::parse("payload.telephony", caller.map(|(_, c)| c), dnis, external).map_err(|e| {
        let field = match e.field.as_str() {
            "payload.telephony.ani" => caller_field.clone().unwrap_or_default(),
            other => other.replace(
                "payload.telephony.external_ids.",
                "sessionInfo.parameters.ext_",
            ),
        };
        Rejection::invalid(field, e.message)
    })
}

/// An end read tolerantly: a parameter that cannot be saved (a name or value out of our
/// limits, a malformed customer ref) is left out and named in `skipped`, so that one bad
/// parameter never loses the rest of the call's memory. The answer lists them in
/// `sticky_skipped`.
struct ReadEnd {
    cmd: EndCall,
    skipped: Vec<String>,
}

fn end(p: &Parsed) -> Result<ReadEnd, Rejection> {
    let mut skipped: Vec<String> = Vec::new();
    let mut read = |name: &str, ok: &dyn Fn(&str) -> bool| -> Option<String> {
        match text_param(&p.params, name) {
            Ok(Some(v)) if ok(&v) => Some(v),
            Ok(None) => None,
            _ => {
                skipped.push(name.to_owned());
                None
            }
        }
    };
    let customer_ref = read("customer_ref", &|v| CustomerRef::parse(v).is_ok())
        .and_then(|v| CustomerRef::parse(&v).ok());
    let intent =
        read("intent", &|v| IntentName::parse(v).is_ok()).and_then(|v| IntentName::parse(&v).ok());
    let intent_status = read("intent_status", &|v| IntentStatus::parse(v).is_ok())
        .and_then(|v| IntentStatus::parse(&v).ok());
    let summary = read("summary", &|v| {
        parse_summary("summary", v.to_owned()).is_ok()
    });
    for (k, v) in &p.params {
        if let Some(name) = k.strip_prefix("ext_") {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => number_text(n),
                _ => continue,
            };
            if !text.is_empty() && sticky_core::domain::ExternalId::new(name, &text).is_err() {
                skipped.push(k.clone());
            }
        }
    }
    let mut variables: Vec<(String, Value)> = Vec::new();
    for (k, v) in &p.params {
        if RESERVED.contains(&k.as_str()) || k.starts_with("sticky_") || k.starts_with("ext_") {
            continue;
        }
        // `@sys.number` gives `4455.0` for "4455": saved as the text the caller said.
        let value = match v {
            Value::Number(n) => Value::String(number_text(n)),
            other => other.clone(),
        };
        let one = [(k.clone(), value)];
        if VariableChanges::parse(one.clone()).is_ok() && variables.len() < MAX_VARIABLES {
            variables.extend(one);
        } else {
            skipped.push(k.clone());
        }
    }
    let variables = VariableChanges::parse(variables).map_err(Rejection::from)?;
    Ok(ReadEnd {
        cmd: EndCall {
            call_id: p.call_id.clone(),
            platform: platform(),
            customer_ref,
            intent,
            intent_due_at: None,
            intent_status,
            summary,
            variables,
            hints: hints(p)?,
        },
        skipped,
    })
}

/// `Welcome back, {name}!` with the customer's variables; `None` when a placeholder has no
/// value (better no greeting than a wrong one).
fn greeting(template: &str, outcome: &StartOutcome) -> Option<String> {
    let ctx = outcome.context.as_ref()?;
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let name = &rest[open + 1..close];
        let value = match ctx.variables.get(name)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn with_budget(mut params: Map<String, Value>, extra: Vec<(String, Value)>) -> Map<String, Value> {
    let mut size = serde_json::to_vec(&params).map_or(0, |b| b.len()) + 512;
    for (k, v) in extra {
        let cost = k.len() + serde_json::to_vec(&v).map_or(usize::MAX, |b| b.len()) + 4;
        if size + cost > MAX_RESPONSE_BYTES {
            continue;
        }
        size += cost;
        params.insert(k, v);
    }
    params
}

impl Connector for DialogflowCx {
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
        let is_end = match route {
            Route::Start => false,
            Route::End => true,
            Route::Auto => {
                match p
                    .req
                    .fulfillment_info
                    .as_ref()
                    .and_then(|f| f.tag.as_deref())
                {
                    Some(START_TAG) => false,
                    Some(END_TAG) => true,
                    _ => {
                        return Err(Rejection::invalid(
                            "fulfillmentInfo.tag",
                            format!(
                                "set the fulfillment's webhook tag to `{START_TAG}` or `{END_TAG}`"
                            ),
                        ));
                    }
                }
            }
        };
        Ok(if is_end {
            ConnectorCommand::End(end(&p)?.cmd)
        } else {
            ConnectorCommand::Start(StartCall {
                call_id: p.call_id.clone(),
                platform: platform(),
                hints: hints(&p)?,
            })
        })
    }

    fn render_start(&self, request: &InboundRequest<'_>, outcome: &StartOutcome) -> Rendered {
        let ctx = outcome.context.as_ref();
        let mut params = Map::new();
        params.insert("sticky_call_id".into(), json!(outcome.call_id));
        params.insert("sticky_customer_ref".into(), json!(outcome.customer_ref));
        params.insert("sticky_band".into(), json!(outcome.band.as_str()));
        params.insert("sticky_confidence".into(), json!(outcome.confidence));
        params.insert("sticky_action".into(), json!(outcome.band.action()));
        params.insert(
            "sticky_open_intents".into(),
            json!(
                ctx.map(|c| c
                    .open_intents
                    .iter()
                    .map(|i| i.intent.clone())
                    .collect::<Vec<_>>())
                    .unwrap_or_default()
            ),
        );
        params.insert(
            "sticky_call_count".into(),
            json!(ctx.map_or(0, |c| c.call_count)),
        );
        params.insert(
            "sticky_last_summary".into(),
            json!(
                ctx.and_then(|c| c.recent_calls.first())
                    .and_then(|c| c.summary.clone())
            ),
        );
        // CX parameter names hold letters, digits, `_` and `-`: a variable named `loyalty.tier`
        // comes back as `sticky_var_loyalty_tier` (a dot would read as a path into a composite
        // parameter), and never in place of another variable.
        let names: Vec<(String, String)> = ctx
            .map(|c| {
                c.variables
                    .keys()
                    .map(|k| (format!("sticky_var_{k}"), k.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let keys = flat_string_map(names, usize::MAX, usize::MAX);
        let variables = keys
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(key, name)| {
                let value = ctx?.variables.get(name.as_str()?)?;
                Some((key.clone(), value.clone()))
            })
            .collect();
        let params = with_budget(params, variables);
        let mut response = json!({"sessionInfo": {"parameters": params}});
        let message = request
            .query_param("greeting")
            .filter(|_| outcome.band == Band::High)
            .filter(|t| t.len() <= 512)
            .and_then(|t| greeting(t, outcome));
        if let Some(text) = message {
            response["fulfillmentResponse"] = json!({"messages": [{"text": {"text": [text]}}]});
        }
        Rendered::json(&response)
    }

    fn render_end(&self, request: &InboundRequest<'_>, outcome: &EndOutcome) -> Rendered {
        let mut params = json!({
            "sticky_customer_ref": outcome.customer_ref,
            "sticky_provisional": outcome.provisional,
        });
        let skipped = read(request.body)
            .and_then(|p| end(&p))
            .map(|e| e.skipped)
            .unwrap_or_default();
        if !skipped.is_empty() {
            params["sticky_skipped"] = json!(skipped.join(","));
        }
        Rendered::json(&json!({"sessionInfo": {"parameters": params}}))
    }

    fn render_ignored(&self, _request: &InboundRequest<'_>, _reason: &'static str) -> Rendered {
        Rendered::json(&json!({}))
    }

    fn check_answer(&self, rendered: &Rendered) -> Result<(), String> {
        if rendered.body.len() > MAX_RESPONSE_BYTES {
            return Err(format!("{} bytes", rendered.body.len()));
        }
        let v: Value = serde_json::from_slice(&rendered.body).map_err(|e| e.to_string())?;
        let obj = v.as_object().ok_or("a WebhookResponse is a JSON object")?;
        for key in obj.keys() {
            if ![
                "sessionInfo",
                "fulfillmentResponse",
                "pageInfo",
                "payload",
                "targetPage",
                "targetFlow",
            ]
            .contains(&key.as_str())
            {
                return Err(format!("`{key}` is not a WebhookResponse field"));
            }
        }
        if let Some(si) = obj.get("sessionInfo") {
            let params = si
                .get("parameters")
                .and_then(Value::as_object)
                .ok_or("sessionInfo.parameters must be an object")?;
            if let Some(k) = params.keys().find(|k| {
                !k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }) {
                return Err(format!(
                    "parameter name `{k}` is not letters, digits, `_` and `-`"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sticky_core::engine::CustomerContext;

    fn outcome(vars: &[(&str, Value)]) -> StartOutcome {
        StartOutcome {
            call_id: "s".into(),
            customer_ref: Some("c".into()),
            confidence: 0.9,
            band: Band::High,
            signals: vec![],
            candidates: vec![],
            context: Some(CustomerContext {
                variables: vars
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
                open_intents: vec![],
                variable_expiry: Default::default(),
                recent_calls: vec![],
                call_count: 1,
                first_seen_at: None,
                last_seen_at: None,
            }),
        }
    }

    #[test]
    fn a_greeting_fills_its_placeholders_or_is_left_out() {
        let o = outcome(&[("name", json!("John")), ("n", json!(3))]);
        assert_eq!(
            greeting("Welcome back, {name}!", &o).as_deref(),
            Some("Welcome back, John!")
        );
        assert_eq!(greeting("{n} calls", &o).as_deref(), Some("3 calls"));
        assert_eq!(greeting("Hi {missing}", &o), None);
        assert_eq!(greeting("Hi {name", &o), None);
        assert_eq!(greeting("Plain", &o).as_deref(), Some("Plain"));
    }
}
