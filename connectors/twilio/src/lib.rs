//! Twilio connector.
//!
//! - The incoming-call voice webhook (form-encoded; <https://www.twilio.com/docs/voice/twiml#request-parameters>)
//!   is a call start; its `StirVerstat` is the caller id's STIR/SHAKEN attestation. We answer TwiML that `<Redirect>`s Twilio to the customer's own voice URL,
//!   given to us as the `next` query parameter of our webhook URL, with the caller's context
//!   appended as `sticky_*` query parameters: a number's voice URL can point at us with no code.
//! - The status callback (<https://www.twilio.com/docs/voice/api/call-resource#statuscallback>)
//!   with a final `CallStatus` is a call end; other statuses are acknowledged and ignored.
//! - A Studio "Make HTTP Request" widget (<https://www.twilio.com/docs/studio/widget-library/http-request>)
//!   posting JSON is a start (or an end on `/end`), answered with a flat JSON object the widget
//!   parses.
//!
//! `X-Twilio-Signature` is verified (see [`signature`]) whenever the tenant has stored its
//! auth token with `PUT /v1/connectors/twilio/settings`.

pub mod models;
pub mod signature;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sticky_core::commands::{EndCall, IdentityHints, StartCall, VariableChanges, parse_summary};
use sticky_core::connector::flat::{self, is_outbound, json_len};
use sticky_core::connector::{
    Connector, ConnectorCommand, InboundRequest, PlatformSecret, Rejection, Rendered, Route,
    context_fields,
};
use sticky_core::domain::{CallId, CustomerRef, IntentName, IntentStatus, Platform};
use sticky_core::engine::{EndOutcome, StartOutcome};

use crate::models::{StatusCallback, StudioRequest, VoiceWebhook};

/// The slug in our URLs.
pub const SLUG: &str = "twilio";
/// Longest redirect URL we produce: Twilio documents no limit for TwiML redirects; 4,000
/// characters is the limit it documents for its other callback URLs.
pub const MAX_REDIRECT_URL: usize = 4000;
/// Studio's HTTP Request widget parses responses of at most 64 kB.
pub const MAX_STUDIO_BYTES: usize = 64 * 1000;
/// `CallStatus` values after which a call is over.
const FINAL_STATUSES: &[&str] = &["completed", "busy", "failed", "no-answer", "canceled"];

/// The Twilio connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct Twilio;

fn platform() -> Platform {
    Platform::parse(SLUG).expect("a valid slug")
}

fn call_id(raw: Option<String>, field: &str) -> Result<CallId, Rejection> {
    let raw = raw.ok_or_else(|| Rejection::missing(field))?;
    CallId::parse(&raw).map_err(|e| Rejection::invalid(field, e.0))
}

/// Twilio sends its parameters form-encoded in a POST body, or in the query string when the
/// webhook is configured for GET.
fn is_form(request: &InboundRequest<'_>) -> bool {
    request.method == "GET" || request.content_type() == "application/x-www-form-urlencoded"
}

/// The Twilio parameters of a form request: the body, or the query for GET.
fn twilio_params(request: &InboundRequest<'_>) -> Result<Vec<(String, String)>, Rejection> {
    if request.method == "GET" {
        Ok(request
            .query
            .iter()
            .filter(|(k, _)| k != "next")
            .cloned()
            .collect())
    } else {
        form_pairs(request.body)
    }
}

fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, Rejection> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map_err(|_| Rejection::malformed("the body is not a valid form-encoded Twilio request"))
}

fn from_pairs<T: serde::de::DeserializeOwned>(pairs: &[(String, String)]) -> Result<T, Rejection> {
    let encoded = serde_urlencoded::to_string(pairs)
        .map_err(|_| Rejection::malformed("the form could not be read"))?;
    serde_urlencoded::from_str(&encoded)
        .map_err(|_| Rejection::malformed("the form could not be read"))
}

/// The customer's number and the business's: the caller on inbound calls, the called party
/// (`To`) on calls the business placed (`Direction` `outbound-api`).
fn hints(
    from: Option<String>,
    to: Option<String>,
    direction: Option<&str>,
) -> Result<IdentityHints, Rejection> {
    let from = from.map(|v| ("From", v));
    let to = to.map(|v| ("To", v));
    let (customer, business) = if direction.is_some_and(is_outbound) {
        (to, from)
    } else {
        (from, to)
    };
    flat::hints(customer, business, Vec::new(), str::to_owned)
}

/// The customer's own voice URL, where the call continues after we answer.
fn next_url<'a>(request: &'a InboundRequest<'_>) -> Result<&'a str, Rejection> {
    let next = request
        .query_param("next")
        .ok_or_else(|| Rejection::Invalid {
            status: 400,
            code: "missing_field",
            message: "add your own voice URL to our webhook URL as the `next` query parameter \
                  (…/v1/connectors/twilio/start?next=https%3A%2F%2Fyour.app%2Fvoice)"
                .into(),
            field: Some("next".into()),
        })?;
    let ok_scheme = next.starts_with("https://") || next.starts_with("http://");
    if !ok_scheme || next.len() > 2048 || next.chars().any(char::is_whitespace) {
        return Err(Rejection::invalid(
            "next",
            "`next` must be an http(s) URL of at most 2048 characters",
        ));
    }
    Ok(next)
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The fields put into the redirect URL by default: ids, band and confidence, no personal
/// data. A URL lands in Twilio's request logs and the customer's web server logs; names,
/// variables and summaries come from `GET /v1/calls/{id}` or the start's REST answer, or, for
/// a tenant that opts in with `context=full` on our webhook URL, in the redirect too.
pub const REDIRECT_FIELDS: &[&str] = &[
    "sticky_call_id",
    "sticky_customer_ref",
    "sticky_band",
    "sticky_confidence",
    "sticky_action",
];

/// The redirect's context pairs: the default fields (or all with `context=full`), chosen in
/// order of importance while the URL stays within its limit, then sorted by name, the order in
/// which Twilio fetches them.
fn redirect_fields(request: &InboundRequest<'_>, outcome: &StartOutcome) -> Vec<(String, String)> {
    let full = request.query_param("context") == Some("full");
    let mut fields: Vec<(String, String)> = context_fields(outcome)
        .into_iter()
        .filter(|(k, _)| full || REDIRECT_FIELDS.contains(&k.as_str()))
        .collect();
    let next = request.query_param("next").unwrap_or_default();
    let mut len = next.len();
    fields.retain(|pair| {
        let cost = 1 + serde_urlencoded::to_string([pair]).map_or(usize::MAX, |e| e.len());
        if len.saturating_add(cost) > MAX_REDIRECT_URL {
            return false;
        }
        len += cost;
        true
    });
    fields.sort();
    fields
}

/// `next` with the context appended.
fn redirect_url(next: &str, pairs: &[(String, String)]) -> String {
    let mut url = next.to_owned();
    let mut sep = if next.contains('?') { '&' } else { '?' };
    for pair in pairs {
        url.push(sep);
        url.push_str(&serde_urlencoded::to_string([pair]).unwrap_or_default());
        sep = '&';
    }
    url
}

fn studio_json(outcome: &StartOutcome) -> Value {
    let ctx = outcome.context.as_ref();
    let mut answer = json!({
        "call_id": outcome.call_id,
        "customer_ref": outcome.customer_ref,
        "band": outcome.band.as_str(),
        "confidence": outcome.confidence,
        "recommended_action": outcome.band.action(),
        "open_intents": ctx.map(|c| c.open_intents.iter().map(|i| i.intent.clone()).collect::<Vec<_>>()).unwrap_or_default(),
        "call_count": ctx.map_or(0, |c| c.call_count),
        "last_summary": ctx.and_then(|c| c.recent_calls.first()).and_then(|c| c.summary.clone()),
        "variables": {},
    });
    // Studio parses a response of at most 64 kB: variables are added while they fit.
    let mut size = serde_json::to_vec(&answer).map_or(0, |b| b.len());
    let mut variables = Map::new();
    for (name, value) in ctx.map(|c| &c.variables).into_iter().flatten() {
        let cost = json_len(name) + serde_json::to_vec(value).map_or(usize::MAX, |b| b.len()) + 2;
        if size.saturating_add(cost) > MAX_STUDIO_BYTES {
            continue;
        }
        size += cost;
        variables.insert(name.clone(), value.clone());
    }
    answer["variables"] = Value::Object(variables);
    answer
}

fn parse_studio(route: Route, body: &[u8]) -> Result<ConnectorCommand, Rejection> {
    let req: StudioRequest = serde_json::from_slice(body)
        .map_err(|e| Rejection::from_json(&e, "a Studio request as our guide describes it"))?;
    let call_id = call_id(Some(req.call_sid), "CallSid")?;
    let mut hints = hints(req.from, req.to, req.direction.as_deref())?;
    hints.external_ids =
        IdentityHints::parse("external_ids", None, None, req.external_ids)?.external_ids;
    Ok(match route {
        Route::End => ConnectorCommand::End(EndCall {
            call_id,
            platform: platform(),
            customer_ref: req
                .customer_ref
                .filter(|r| !r.is_empty())
                .map(|r| {
                    CustomerRef::parse(&r).map_err(|e| Rejection::invalid("customer_ref", e.0))
                })
                .transpose()?,
            intent: req
                .intent
                .filter(|i| !i.is_empty())
                .map(|i| IntentName::parse(&i).map_err(|e| Rejection::invalid("intent", e.0)))
                .transpose()?,
            intent_due_at: None,
            intent_status: req
                .intent_status
                .filter(|s| !s.is_empty())
                .map(|s| {
                    IntentStatus::parse(&s).map_err(|e| Rejection::invalid("intent_status", e.0))
                })
                .transpose()?,
            variables: VariableChanges::parse(req.variables)?,
            summary: req
                .summary
                .filter(|s| !s.is_empty())
                .map(|s| parse_summary("summary", s))
                .transpose()?,
            hints,
        }),
        _ => ConnectorCommand::Start(StartCall {
            call_id,
            platform: platform(),
            hints,
        }),
    })
}

impl Connector for Twilio {
    fn slug(&self) -> &'static str {
        SLUG
    }

    fn parse_settings(&self, settings: &Value) -> Result<PlatformSecret, Rejection> {
        let obj = settings
            .as_object()
            .ok_or_else(|| Rejection::malformed("settings must be a JSON object"))?;
        if let Some(unknown) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "auth_token" | "subaccount_tokens"))
        {
            return Err(Rejection::Invalid {
                status: 400,
                code: "unknown_field",
                message: format!(
                    "unknown field `{unknown}`, expected `auth_token` and `subaccount_tokens`"
                ),
                field: Some(unknown.clone()),
            });
        }
        let token = auth_token(
            obj.get("auth_token")
                .ok_or_else(|| Rejection::missing("auth_token"))?,
            "auth_token",
        )?;
        let Some(subaccounts) = obj.get("subaccount_tokens") else {
            return Ok(PlatformSecret(token.to_owned()));
        };
        let subaccounts = subaccounts.as_object().ok_or_else(|| Rejection::Invalid {
            status: 400,
            code: "invalid_type",
            message: "`subaccount_tokens` maps subaccount SIDs (AC...) to their auth tokens".into(),
            field: Some("subaccount_tokens".into()),
        })?;
        let mut tokens = Map::new();
        for (sid, value) in subaccounts {
            let field = format!("subaccount_tokens.{sid}");
            if !(sid.len() == 34
                && sid.starts_with("AC")
                && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(Rejection::invalid(
                    field,
                    "a subaccount SID is AC followed by 32 hex characters",
                ));
            }
            tokens.insert(sid.clone(), json!(auth_token(value, &field)?));
        }
        Ok(PlatformSecret(
            json!({"auth_token": token, "subaccount_tokens": tokens}).to_string(),
        ))
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&PlatformSecret>,
    ) -> Result<(), Rejection> {
        let Some(secret) = secret else {
            return Ok(());
        };
        let bad = |message: &str| Rejection::BadSignature {
            message: message.to_owned(),
        };
        let signature = request
            .header("x-twilio-signature")
            .ok_or_else(|| bad("missing X-Twilio-Signature header"))?;
        let credentials = basic_credentials(request);
        let creds = credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let params = if request.method == "GET" {
            // A GET is signed over its URL alone: the parameters are in it.
            Vec::new()
        } else if is_form(request) {
            form_pairs(request.body).unwrap_or_default()
        } else {
            let expected = request
                .query_param("bodySHA256")
                .ok_or_else(|| bad("a JSON request must carry bodySHA256 in its URL"))?;
            let actual = signature::body_sha256(request.body);
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                actual.as_bytes(),
                expected.as_bytes(),
            )) {
                return Err(bad("bodySHA256 does not match the body"));
            }
            Vec::new()
        };
        // A subaccount's calls are signed with the subaccount's own token.
        let account = if request.method == "GET" {
            request.query_param("AccountSid").map(str::to_owned)
        } else {
            params
                .iter()
                .find(|(k, _)| k == "AccountSid")
                .map(|(_, v)| v.clone())
        };
        let token = token_for(secret, account.as_deref());
        if signature::is_valid(&token, request.url, creds, &params, signature) {
            Ok(())
        } else {
            Err(bad(
                "X-Twilio-Signature does not match: check the auth token and that the URL Twilio calls is the one we see (set STICKY_PUBLIC_BASE_URL behind a proxy)",
            ))
        }
    }

    fn parse(
        &self,
        route: Route,
        request: &InboundRequest<'_>,
    ) -> Result<ConnectorCommand, Rejection> {
        if !is_form(request) {
            return parse_studio(route, request.body);
        }
        let pairs = twilio_params(request)?;
        match route {
            Route::End => {
                let cb: StatusCallback = from_pairs(&pairs)?;
                let call_id = call_id(cb.call_sid, "CallSid")?;
                let status = cb
                    .call_status
                    .ok_or_else(|| Rejection::missing("CallStatus"))?;
                if !FINAL_STATUSES.contains(&status.as_str()) {
                    return Ok(ConnectorCommand::Ignore {
                        reason: "call not over yet",
                    });
                }
                // A `<Dial>`'s child leg ending (the agent hung up, a transfer moved on) is
                // not the caller's call ending: the parent's status callback says that.
                if cb.parent_call_sid.as_deref().is_some_and(|p| !p.is_empty()) {
                    return Ok(ConnectorCommand::Ignore {
                        reason: "a child leg ended; the call goes on",
                    });
                }
                Ok(ConnectorCommand::End(EndCall::hang_up(
                    call_id,
                    platform(),
                    hints(cb.from, cb.to, cb.direction.as_deref())?,
                )))
            }
            _ => {
                next_url(request)?;
                let hook: VoiceWebhook = from_pairs(&pairs)?;
                // A child leg continues its parent's call: the same call id, no new caller.
                if let Some(parent) = hook.parent_call_sid.filter(|p| !p.is_empty()) {
                    return Ok(ConnectorCommand::Start(StartCall {
                        call_id: call_id(Some(parent), "ParentCallSid")?,
                        platform: platform(),
                        hints: IdentityHints::default(),
                    }));
                }
                // The carrier's STIR/SHAKEN verdict on the caller id (US calls).
                let attestation = hook
                    .stir_verstat
                    .as_deref()
                    .and_then(sticky_core::domain::Attestation::from_twilio);
                Ok(ConnectorCommand::Start(StartCall {
                    call_id: call_id(hook.call_sid, "CallSid")?,
                    platform: platform(),
                    hints: hints(hook.from, hook.to, hook.direction.as_deref())?
                        .with_attestation(attestation),
                }))
            }
        }
    }

    fn render_start(&self, request: &InboundRequest<'_>, outcome: &StartOutcome) -> Rendered {
        if !is_form(request) {
            return Rendered::json(&studio_json(outcome));
        }
        // parse() has checked `next`; an absent one cannot reach here.
        let next = next_url(request).unwrap_or("");
        let url = redirect_url(next, &redirect_fields(request, outcome));
        Rendered::xml(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Redirect method=\"POST\">{}</Redirect></Response>",
            xml_escape(&url)
        ))
    }

    fn render_end(&self, request: &InboundRequest<'_>, outcome: &EndOutcome) -> Rendered {
        if !is_form(request) {
            return Rendered::json(&json!({
                "call_id": outcome.call_id,
                "customer_ref": outcome.customer_ref,
                "provisional": outcome.provisional,
            }));
        }
        empty_twiml()
    }

    fn render_ignored(&self, request: &InboundRequest<'_>, reason: &'static str) -> Rendered {
        if is_form(request) {
            empty_twiml()
        } else {
            Rendered::json(&json!({ "ignored": reason }))
        }
    }

    fn check_answer(&self, rendered: &Rendered) -> Result<(), String> {
        if rendered.status != 200 {
            return Err(format!("status {}", rendered.status));
        }
        let body = std::str::from_utf8(&rendered.body).map_err(|e| e.to_string())?;
        if rendered.content_type.starts_with("text/xml") {
            if !body.starts_with("<?xml")
                || !(body.ends_with("</Response>") || body.ends_with("<Response/>"))
            {
                return Err("TwiML must be an XML document whose root is <Response>".into());
            }
            if let Some(start) = body.find("<Redirect") {
                let inner = &body[start..];
                let url_start = inner.find('>').ok_or("unterminated Redirect")? + 1;
                let url_end = inner.find("</Redirect>").ok_or("unterminated Redirect")?;
                let url = &inner[url_start..url_end];
                if url.contains('<') || url.contains('"') {
                    return Err("the redirect URL is not escaped".into());
                }
                let unescaped = url.replace("&amp;", "&");
                if unescaped.len() > MAX_REDIRECT_URL {
                    return Err(format!("redirect URL of {} bytes", unescaped.len()));
                }
            }
            Ok(())
        } else {
            if body.len() > MAX_STUDIO_BYTES {
                return Err(format!("{} bytes, over Studio's 64 kB", body.len()));
            }
            let v: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
            if v.is_object() {
                Ok(())
            } else {
                Err("Studio needs a JSON object".into())
            }
        }
    }
}

/// Checks one auth token's shape.
fn auth_token<'a>(value: &'a Value, field: &str) -> Result<&'a str, Rejection> {
    let token = value.as_str().ok_or_else(|| Rejection::Invalid {
        status: 400,
        code: "invalid_type",
        message: format!("`{field}` must be a string"),
        field: Some(field.to_owned()),
    })?;
    if !(16..=128).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Rejection::invalid(
            field,
            "a Twilio auth token is 16 to 128 letters and digits (32 hex characters)",
        ));
    }
    Ok(token)
}

/// The token that signs a request of `account`: the subaccount's own when the tenant stored
/// one, else the main account's. A stored secret is the bare token, or (with subaccounts) a
/// JSON document of both.
fn token_for(secret: &PlatformSecret, account: Option<&str>) -> String {
    if !secret.0.starts_with('{') {
        return secret.0.clone();
    }
    let doc: Value = serde_json::from_str(&secret.0).unwrap_or_default();
    account
        .and_then(|a| doc.get("subaccount_tokens")?.get(a)?.as_str())
        .or_else(|| doc.get("auth_token")?.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn empty_twiml() -> Rendered {
    Rendered::xml("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>".into())
}

/// `user:password` from an `Authorization: Basic` header: Twilio signs the URL as configured,
/// credentials included.
fn basic_credentials(request: &InboundRequest<'_>) -> Option<(String, String)> {
    let value = request.header("authorization")?;
    // Scheme names are case-insensitive (RFC 9110).
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sticky_core::engine::CustomerContext;
    use sticky_core::scoring::Band;

    fn known() -> StartOutcome {
        StartOutcome {
            call_id: "CA1".into(),
            customer_ref: Some("cust_1".into()),
            confidence: 0.93,
            band: Band::High,
            signals: vec![],
            candidates: vec![],
            context: Some(CustomerContext {
                variables: [("name".to_owned(), json!("Ana"))].into_iter().collect(),
                open_intents: vec![],
                variable_expiry: Default::default(),
                recent_calls: vec![],
                call_count: 3,
                first_seen_at: None,
                last_seen_at: None,
            }),
        }
    }

    fn voice_request<'a>(query: &'a [(String, String)]) -> InboundRequest<'a> {
        InboundRequest {
            method: "POST",
            url: "https://sticky.example.com/v1/connectors/twilio/start",
            headers: &[],
            query,
            body: b"",
        }
    }

    #[test]
    fn the_redirect_carries_no_personal_data_unless_the_tenant_opts_in() {
        let query = vec![("next".to_owned(), "https://a.example/voice".to_owned())];
        let fields = redirect_fields(&voice_request(&query), &known());
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "sticky_action",
                "sticky_band",
                "sticky_call_id",
                "sticky_confidence",
                "sticky_customer_ref"
            ],
            "ids, band and confidence only, sorted"
        );
        let query = vec![
            ("next".to_owned(), "https://a.example/voice".to_owned()),
            ("context".to_owned(), "full".to_owned()),
        ];
        let fields = redirect_fields(&voice_request(&query), &known());
        assert!(
            fields
                .iter()
                .any(|(k, v)| k == "sticky_var_name" && v == "Ana")
        );
        assert!(fields.windows(2).all(|w| w[0].0 <= w[1].0), "sorted");
    }

    #[test]
    fn a_studio_answer_stays_under_64_kb() {
        let mut o = known();
        if let Some(ctx) = o.context.as_mut() {
            for i in 0..100 {
                ctx.variables
                    .insert(format!("v{i:03}"), json!("x".repeat(4000)));
            }
        }
        let body = serde_json::to_vec(&studio_json(&o)).unwrap();
        assert!(body.len() <= MAX_STUDIO_BYTES, "{}", body.len());
        assert!(studio_json(&o)["variables"]["name"] == "Ana");
    }

    #[test]
    fn a_subaccount_call_is_checked_with_the_subaccount_token() {
        let sub = format!("AC{}", "b".repeat(32));
        let secret = Twilio
            .parse_settings(&json!({
                "auth_token": "a".repeat(32),
                "subaccount_tokens": {sub.clone(): "c".repeat(32)}
            }))
            .unwrap();
        assert_eq!(token_for(&secret, Some(&sub)), "c".repeat(32));
        assert_eq!(token_for(&secret, Some("ACother")), "a".repeat(32));
        assert_eq!(token_for(&secret, None), "a".repeat(32));
        // A token stored before subaccounts existed is the bare token.
        assert_eq!(
            token_for(&PlatformSecret("d".repeat(32)), Some(&sub)),
            "d".repeat(32)
        );
        let bad = Twilio.parse_settings(
            &json!({"auth_token": "a".repeat(32), "subaccount_tokens": {"AC1": "c".repeat(32)}}),
        );
        assert!(
            matches!(bad, Err(Rejection::Invalid { field: Some(f), .. }) if f == "subaccount_tokens.AC1")
        );
    }

    #[test]
    fn basic_credentials_are_read_in_any_case() {
        let headers = vec![("authorization".to_owned(), "BASIC dTpw".to_owned())];
        let req = InboundRequest {
            method: "POST",
            url: "https://x",
            headers: &headers,
            query: &[],
            body: b"",
        };
        assert_eq!(basic_credentials(&req), Some(("u".into(), "p".into())));
    }
}
