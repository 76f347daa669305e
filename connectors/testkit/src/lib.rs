//! What every connector must pass, in one place, so a connector without it stands out.
//!
//! Fixtures live in `<connector>/tests/fixtures/` and are named `<route>__<name>.<ext>`:
//! `route` is `start`, `end` or `auto`; `ext` is `json` or `form`. [`conformance`] checks
//! that every fixture parses and that its answers obey the platform's limits, and that empty,
//! garbage and wrong-typed bodies are refused with a 4xx rejection. [`describe`] turns a
//! fixture into a JSON value (parsed command and rendered answers) for an insta snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use sticky_core::connector::{Connector, ConnectorCommand, InboundRequest, Rejection, Route};
use sticky_core::engine::{
    Candidate, CustomerContext, EndOutcome, OpenIntent, RecentCall, StartOutcome,
};
use sticky_core::scoring::{Band, Signal, SignalKind};

/// A request built from a fixture, owning its parts.
#[derive(Debug, Clone)]
pub struct OwnedRequest {
    /// Which URL was called.
    pub route: Route,
    /// Full URL.
    pub url: String,
    /// Lower-case headers.
    pub headers: Vec<(String, String)>,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl OwnedRequest {
    /// A request to `route` of connector `slug` with `query` and a body of `content_type`.
    pub fn new(
        slug: &str,
        route: Route,
        content_type: &str,
        query: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Self {
        let path = match route {
            Route::Start => format!("/v1/connectors/{slug}/start"),
            Route::End => format!("/v1/connectors/{slug}/end"),
            Route::Auto => format!("/v1/connectors/{slug}"),
        };
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let qs = serde_urlencoded::to_string(&query).unwrap_or_default();
        let url = if qs.is_empty() {
            format!("https://sticky.example.com{path}")
        } else {
            format!("https://sticky.example.com{path}?{qs}")
        };
        Self {
            route,
            url,
            headers: vec![("content-type".into(), content_type.to_owned())],
            query,
            body,
        }
    }

    /// Borrowed view for a connector.
    pub fn inbound(&self) -> InboundRequest<'_> {
        InboundRequest {
            method: "POST",
            url: &self.url,
            headers: &self.headers,
            query: &self.query,
            body: &self.body,
        }
    }
}

/// A fixture file.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// File name.
    pub name: String,
    /// Route from the name.
    pub route: Route,
    /// Content type from the extension.
    pub content_type: &'static str,
    /// Contents.
    pub body: Vec<u8>,
}

impl Fixture {
    /// The request a platform would send with this fixture to `connector`.
    pub fn request(&self, connector: &dyn Connector, query: &[(&str, &str)]) -> OwnedRequest {
        OwnedRequest::new(
            connector.slug(),
            self.route,
            self.content_type,
            query,
            self.body.clone(),
        )
    }
}

fn route_of(name: &str) -> Route {
    match name.split("__").next() {
        Some("start") => Route::Start,
        Some("end") => Route::End,
        Some("auto") => Route::Auto,
        _ => panic!("fixture {name} must be named <start|end|auto>__<name>.<json|form>"),
    }
}

/// Reads one fixture.
pub fn fixture(path: &Path) -> Fixture {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let content_type = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        Some("form") => "application/x-www-form-urlencoded",
        _ => panic!("fixture {name} must end in .json or .form"),
    };
    let mut body = std::fs::read(path).expect("fixture readable");
    if content_type.ends_with("urlencoded") {
        while body.last().is_some_and(u8::is_ascii_whitespace) {
            body.pop();
        }
    }
    Fixture {
        route: route_of(&name),
        name,
        content_type,
        body,
    }
}

/// All fixtures of a directory, sorted by name.
pub fn fixtures(dir: &Path) -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixture directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.iter().map(|p| fixture(p)).collect()
}

fn at(day: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 10, 0, 0).unwrap()
}

/// A recognised caller with a full context.
pub fn known_caller(call_id: &str) -> StartOutcome {
    StartOutcome {
        call_id: call_id.to_owned(),
        customer_ref: Some("cust_abc123".into()),
        confidence: 0.93,
        band: Band::High,
        signals: vec![Signal {
            kind: SignalKind::AniMatch,
            contribution: 4.69,
            detail: "4 calls, last 2 days ago".into(),
        }],
        candidates: vec![],
        context: Some(CustomerContext {
            variables: BTreeMap::from([
                ("name".to_owned(), json!("John Doe")),
                ("order_id".to_owned(), json!("12345")),
                ("vip".to_owned(), json!(true)),
                ("loyalty.tier".to_owned(), json!("gold")),
            ]),
            open_intents: vec![OpenIntent {
                intent: "refund_request".into(),
                opened_at: at(20),
                last_call_id: Some("call_prev".into()),
                due_at: None,
                state: None,
            }],
            variable_expiry: Default::default(),
            recent_calls: vec![RecentCall {
                call_id: "call_prev".into(),
                started_at: Some(at(20)),
                ended_at: Some(at(20)),
                intent: Some("refund_request".into()),
                intent_status: Some("open".into()),
                summary: Some("Asked about a refund for order 12345".into()),
            }],
            call_count: 4,
            first_seen_at: Some(at(1)),
            last_seen_at: Some(at(20)),
        }),
    }
}

/// An ambiguous caller (a shared number).
pub fn ambiguous_caller(call_id: &str) -> StartOutcome {
    let mut o = known_caller(call_id);
    o.confidence = 0.7;
    o.band = Band::Medium;
    o.candidates = vec![Candidate {
        customer_ref: "cust_other".into(),
        confidence: 0.6,
        last_seen_at: Some(at(3)),
        calls: 1,
    }];
    o
}

/// A caller we do not know.
pub fn unknown_caller(call_id: &str) -> StartOutcome {
    StartOutcome {
        call_id: call_id.to_owned(),
        customer_ref: None,
        confidence: 0.0474,
        band: Band::Low,
        signals: vec![],
        candidates: vec![],
        context: None,
    }
}

/// A caller with a context big enough to test the platform's size limits.
pub fn huge_context(call_id: &str) -> StartOutcome {
    let mut o = known_caller(call_id);
    if let Some(ctx) = o.context.as_mut() {
        for i in 0..100 {
            ctx.variables
                .insert(format!("var_{i:03}"), json!("x".repeat(4000)));
        }
        for i in 0..20 {
            ctx.open_intents.push(OpenIntent {
                intent: format!("intent_{i}_{}", "y".repeat(100)),
                opened_at: at(2),
                last_call_id: None,
                due_at: None,
                state: None,
            });
        }
    }
    o
}

/// The answer to an end.
pub fn ended(call_id: &str) -> EndOutcome {
    EndOutcome {
        call_id: call_id.to_owned(),
        customer_ref: Some("cust_abc123".into()),
        provisional: false,
        merged_from: None,
    }
}

fn describe_command(cmd: &ConnectorCommand) -> Value {
    let hints = |h: &sticky_core::commands::IdentityHints| {
        json!({
            "ani": h.ani,
            "dnis": h.dnis,
            "external_ids": h.external_ids.iter().map(|e| (e.name().to_owned(), Value::String(e.value().to_owned()))).collect::<serde_json::Map<_, _>>(),
            "attestation": h.attestation.map(|a| a.as_str()),
        })
    };
    match cmd {
        ConnectorCommand::Start(s) => json!({
            "start": {"call_id": s.call_id.as_str(), "platform": s.platform.as_str(), "hints": hints(&s.hints)}
        }),
        ConnectorCommand::End(e) => {
            let mut end = json!({
                "call_id": e.call_id.as_str(),
                "platform": e.platform.as_str(),
                "customer_ref": e.customer_ref.as_ref().map(|r| r.as_str()),
                "intent": e.intent.as_ref().map(|i| i.as_str()),
                "intent_status": e.intent_status.map(|s| s.as_str()),
                "summary": e.summary,
                "variables": e.variables.iter().map(|(k, v)| (k.as_str().to_owned(), v.cloned().unwrap_or(Value::Null))).collect::<serde_json::Map<_, _>>(),
                "hints": hints(&e.hints),
            });
            // Only callbacks show it, so that other ends' snapshots stay as they were.
            if let Some(due) = e.intent_due_at {
                end["intent_due_at"] = json!(due.to_rfc3339());
            }
            json!({ "end": end })
        }
        ConnectorCommand::Ignore { reason } => json!({"ignore": reason}),
    }
}

fn body_value(r: &sticky_core::connector::Rendered) -> Value {
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    json!({"status": r.status, "content_type": r.content_type, "body": body})
}

/// The parsed command and the rendered answers of a fixture, for a snapshot.
pub fn describe(connector: &dyn Connector, fixture: &Fixture, query: &[(&str, &str)]) -> Value {
    let req = fixture.request(connector, query);
    let inbound = req.inbound();
    let cmd = connector
        .parse(fixture.route, &inbound)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", fixture.name));
    let answers = match &cmd {
        ConnectorCommand::Start(s) => json!({
            "known_caller": body_value(&connector.render_start(&inbound, &known_caller(s.call_id.as_str()))),
            "unknown_caller": body_value(&connector.render_start(&inbound, &unknown_caller(s.call_id.as_str()))),
        }),
        ConnectorCommand::End(e) => json!({
            "ended": body_value(&connector.render_end(&inbound, &ended(e.call_id.as_str()))),
        }),
        ConnectorCommand::Ignore { reason } => json!({
            "ignored": body_value(&connector.render_ignored(&inbound, reason)),
        }),
    };
    json!({"command": describe_command(&cmd), "answers": answers})
}

fn assert_4xx(what: &str, result: Result<ConnectorCommand, Rejection>) {
    match result {
        Err(Rejection::Invalid { status, code, .. }) => {
            assert!((400..500).contains(&status), "{what}: status {status}");
            assert!(!code.is_empty(), "{what}: a code");
        }
        Err(Rejection::BadSignature { .. }) => panic!("{what}: parse must not check signatures"),
        Ok(cmd) => panic!("{what}: accepted as {cmd:?}"),
    }
}

/// The shared conformance check. `query` is added to every request's URL (a connector may
/// need a parameter such as Twilio's `next`).
pub fn conformance(connector: &dyn Connector, fixture_dir: &Path, query: &[(&str, &str)]) {
    let all = fixtures(fixture_dir);
    assert!(!all.is_empty(), "a connector ships fixtures");
    for f in &all {
        let req = f.request(connector, query);
        let inbound = req.inbound();
        let cmd = connector
            .parse(f.route, &inbound)
            .unwrap_or_else(|e| panic!("fixture {} does not parse: {e}", f.name));
        assert!(
            f.route != Route::Auto || connector.supports_auto_route(),
            "{}: auto fixtures need supports_auto_route",
            f.name
        );
        let rendered = match &cmd {
            ConnectorCommand::Start(s) => vec![
                connector.render_start(&inbound, &known_caller(s.call_id.as_str())),
                connector.render_start(&inbound, &ambiguous_caller(s.call_id.as_str())),
                connector.render_start(&inbound, &unknown_caller(s.call_id.as_str())),
                connector.render_start(&inbound, &huge_context(s.call_id.as_str())),
            ],
            ConnectorCommand::End(e) => {
                vec![connector.render_end(&inbound, &ended(e.call_id.as_str()))]
            }
            ConnectorCommand::Ignore { reason } => vec![connector.render_ignored(&inbound, reason)],
        };
        for r in rendered {
            connector
                .check_answer(&r)
                .unwrap_or_else(|e| panic!("{}: answer breaks the platform's limits: {e}", f.name));
        }
        // A signature check without a stored secret accepts (the API key authenticates).
        assert!(connector.verify(&inbound, None).is_ok(), "{}", f.name);
    }

    let bad_bodies: [(&str, &str, &[u8]); 8] = [
        ("empty JSON", "application/json", b""),
        ("garbage JSON", "application/json", b"\x00\xffnot json"),
        ("JSON array", "application/json", b"[1, 2]"),
        (
            "JSON object of nothing known",
            "application/json",
            b"{\"unexpected\": 1}",
        ),
        (
            "JSON with wrong types",
            "application/json",
            b"{\"CallSid\": 5, \"Details\": 5, \"sessionInfo\": 5, \"detail\": 5}",
        ),
        ("empty form", "application/x-www-form-urlencoded", b""),
        (
            "garbage form",
            "application/x-www-form-urlencoded",
            b"%%%\xff=&&=",
        ),
        (
            "form of nothing known",
            "application/x-www-form-urlencoded",
            b"unexpected=1",
        ),
    ];
    let routes: &[Route] = if connector.supports_auto_route() {
        &[Route::Start, Route::End, Route::Auto]
    } else {
        &[Route::Start, Route::End]
    };
    for &route in routes {
        for (what, content_type, body) in bad_bodies {
            let req =
                OwnedRequest::new(connector.slug(), route, content_type, query, body.to_vec());
            assert_4xx(
                &format!("{what} on {route:?}"),
                connector.parse(route, &req.inbound()),
            );
        }
    }
}
