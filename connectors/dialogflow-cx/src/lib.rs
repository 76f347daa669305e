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
use sticky_core::commands::{EndCall, IdentityHints, StartCall, VariableChanges, parse_summary};
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
];

/// The Dialogflow CX connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct DialogflowCx;

fn platform() -> Platform {
    Platform::parse(SLUG).expect("a valid slug")
}

fn text_param<'a>(
    params: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, Rejection> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Rejection::Invalid {
            status: 400,
            code: "invalid_type",
            message: format!("session parameter `{name}` must be text"),
            field: Some(format!("sessionInfo.parameters.{name}")),
        }),
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

fn hints(p: &Parsed) -> Result<IdentityHints, Rejection> {
    let telephony = p.req.payload.get("telephony").and_then(Value::as_object);
    let caller = telephony
        .and_then(|t| t.get("caller_id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(text_param(&p.params, "caller_id")?.map(str::to_owned));
    let dnis = telephony
        .and_then(|t| t.get("dnis").or_else(|| t.get("called_number")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut external = Vec::new();
    for (k, v) in &p.params {
        if let Some(name) = k.strip_prefix("ext_") {
            match v {
                Value::String(s) if !s.is_empty() => external.push((name.to_owned(), s.clone())),
                Value::Number(n) => external.push((name.to_owned(), n.to_string())),
                _ => {}
            }
        }
    }
    IdentityHints::parse("payload.telephony", caller, dnis, external).map_err(|e| {
        let field = match e.field.as_str() {
            "payload.telephony.ani" => "payload.telephony.caller_id".to_owned(),
            other => other.replace(
                "payload.telephony.external_ids.",
                "sessionInfo.parameters.ext_",
            ),
        };
        Rejection::invalid(field, e.message)
    })
}

fn end(p: &Parsed) -> Result<EndCall, Rejection> {
    let field = |n: &str| format!("sessionInfo.parameters.{n}");
    let variables = p.params.iter().filter(|(k, _)| {
        !RESERVED.contains(&k.as_str()) && !k.starts_with("sticky_") && !k.starts_with("ext_")
    });
    Ok(EndCall {
        call_id: p.call_id.clone(),
        platform: platform(),
        customer_ref: text_param(&p.params, "customer_ref")?
            .map(|r| {
                CustomerRef::parse(r).map_err(|e| Rejection::invalid(field("customer_ref"), e.0))
            })
            .transpose()?,
        intent: text_param(&p.params, "intent")?
            .map(|i| IntentName::parse(i).map_err(|e| Rejection::invalid(field("intent"), e.0)))
            .transpose()?,
        intent_status: text_param(&p.params, "intent_status")?
            .map(|s| {
                IntentStatus::parse(s).map_err(|e| Rejection::invalid(field("intent_status"), e.0))
            })
            .transpose()?,
        summary: text_param(&p.params, "summary")?
            .map(|s| parse_summary(&field("summary"), s.to_owned()))
            .transpose()?,
        variables: VariableChanges::parse(variables.map(|(k, v)| (k.clone(), v.clone()))).map_err(
            |e| {
                Rejection::invalid(
                    e.field.replace("variables.", "sessionInfo.parameters."),
                    e.message,
                )
            },
        )?,
        hints: hints(p)?,
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
            ConnectorCommand::End(end(&p)?)
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
        let variables = ctx
            .map(|c| {
                c.variables
                    .iter()
                    .map(|(k, v)| (format!("sticky_var_{k}"), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
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

    fn render_end(&self, _request: &InboundRequest<'_>, outcome: &EndOutcome) -> Rendered {
        Rendered::json(&json!({"sessionInfo": {"parameters": {
            "sticky_customer_ref": outcome.customer_ref,
            "sticky_provisional": outcome.provisional,
        }}}))
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
        if let Some(si) = obj.get("sessionInfo")
            && !si.get("parameters").is_some_and(Value::is_object)
        {
            return Err("sessionInfo.parameters must be an object".into());
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
