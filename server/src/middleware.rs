//! The outermost layer of every request: gives it an id (the caller's `x-request-id` when it is
//! a sane token, else a new one), renders every error as our JSON body, and logs one line per
//! request. The log line carries the method, the route with its parameters masked (paths hold
//! call ids and customer refs, query strings may hold phone numbers: neither is logged), the
//! status and the latency; never a body, a header value or a query string.

use std::time::Instant;

use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::error::render;

tokio::task_local! {
    static REQUEST_ID: String;
    /// The rate limit of the request's tenant, once its key is known (for the `RateLimit-*`
    /// headers).
    static RATE: std::cell::Cell<Option<crate::limits::RateInfo>>;
}

/// Tells the request's answer to carry the `RateLimit-*` headers of `info`.
pub fn note_rate(info: crate::limits::RateInfo) {
    let _ = RATE.try_with(|c| c.set(Some(info)));
}

/// The id of the request being handled ("-" outside of one).
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}

fn acceptable_id(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Path segments kept as they are in logs; every other segment is a parameter.
const LITERAL_SEGMENTS: &[&str] = &[
    "v1",
    "calls",
    "start",
    "end",
    "customers",
    "api-keys",
    "unlink",
    "intents",
    "resolve",
    "healthz",
    "readyz",
    "docs",
    "openapi.json",
    "connectors",
    "metrics",
    "settings",
    "audit",
    "usage",
    "billing",
    "events",
    "offers",
    "signup",
    "stripe",
    "webhook",
    "mcp",
    "postman.json",
    "agent",
    "prompts",
    "tools",
    "twilio",
    "amazon-connect",
    "dialogflow-cx",
    "genesys-cloud",
    "nice-cxone",
    "five9",
    "voiceflow",
    "amazon-lex",
];

/// `/v1/calls/CA123` → `/v1/calls/:param`.
pub fn loggable_route(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').skip(1) {
        out.push('/');
        if LITERAL_SEGMENTS.contains(&segment) || segment.is_empty() {
            out.push_str(segment);
        } else {
            out.push_str(":param");
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The middleware function, used with `EndpointExt::around`.
pub async fn request_context<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let id = req
        .header("x-request-id")
        .filter(|v| acceptable_id(v))
        .map_or_else(
            || format!("req_{}", sticky_core::random_token(20)),
            str::to_owned,
        );
    let method = req.method().clone();
    let route = loggable_route(req.uri().path());
    let started = Instant::now();
    let (mut response, rate) = REQUEST_ID
        .scope(
            id.clone(),
            RATE.scope(std::cell::Cell::new(None), async move {
                let response = match next.call(req).await {
                    Ok(r) => r.into_response(),
                    Err(e) => render(e),
                };
                (response, RATE.with(std::cell::Cell::get))
            }),
        )
        .await;
    if let Some(rate) = rate {
        let headers = response.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", u64::from(rate.limit)),
            ("ratelimit-remaining", u64::from(rate.remaining)),
            ("ratelimit-reset", rate.reset),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    crate::metrics::record_request(&route, status, elapsed);
    let micros = elapsed.as_micros();
    if status >= 500 {
        tracing::warn!(request_id = %id, %method, %route, status, micros, "request");
    } else {
        tracing::info!(request_id = %id, %method, %route, status, micros, "request");
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_logged_without_their_parameters() {
        assert_eq!(loggable_route("/v1/calls/CA123"), "/v1/calls/:param");
        assert_eq!(
            loggable_route("/v1/customers/john.doe@example.com/intents/refund/resolve"),
            "/v1/customers/:param/intents/:param/resolve"
        );
        assert_eq!(loggable_route("/v1/calls/start"), "/v1/calls/start");
        assert_eq!(loggable_route("/"), "/");
    }

    #[test]
    fn only_sane_request_ids_are_reused() {
        assert!(acceptable_id("abc-123_x.y"));
        assert!(!acceptable_id(""));
        assert!(!acceptable_id("has space"));
        assert!(!acceptable_id(&"a".repeat(65)));
    }
}
