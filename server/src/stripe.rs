//! `POST /v1/billing/stripe/webhook`: payments from Stripe, when `STICKY_STRIPE_WEBHOOK_SECRET`
//! is set (else the route answers 404).
//!
//! The `Stripe-Signature` header (`t=<unix seconds>,v1=<hex>`, several `v1` during a secret
//! rotation) must hold an HMAC-SHA256, under the endpoint's signing secret, of
//! `"<t>.<raw body>"`, compared in constant time, with `t` within five minutes of now:
//! anything else is 400 `invalid_signature`. On `checkout.session.completed` the tenant named by
//! `client_reference_id` (its id, as the billing offers put it in the checkout URL) gets the
//! plan in `metadata.plan`, or the calls in `metadata.calls` added to its current month. Each
//! event applies once: Stripe's event id is kept, and a replay answers 200 with
//! `"duplicate": true`. Other event types are acknowledged and ignored.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{Body, Request, handler};
use serde_json::{Value, json};
use sha2::Sha256;
use sticky_core::engine::TenantId;

use crate::error::ApiError;
use crate::state::AppState;

/// How far a signature's timestamp may be from now.
const TOLERANCE_SECONDS: i64 = 300;
/// Largest event accepted.
const MAX_BODY: usize = 256 * 1024;

/// Whether `header` signs `body` under `secret` at a time within the tolerance of `now`.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), &'static str> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.push(s),
            _ => {}
        }
    }
    let t = timestamp.ok_or("the Stripe-Signature header has no timestamp")?;
    if (now - t).abs() > TOLERANCE_SECONDS {
        return Err("the signature's timestamp is more than five minutes from now");
    }
    for signature in signatures {
        let Some(bytes) = hex(signature) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| "the signing secret is unusable")?;
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // Constant time.
        if mac.verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err("no v1 signature matches")
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// The webhook.
#[handler]
pub async fn webhook(
    state: Data<&Arc<AppState>>,
    req: &Request,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Some(secret) = &state.stripe_webhook_secret else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        ));
    };
    let body = body.into_bytes_limit(MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "events are limited to 256 KiB",
        )
    })?;
    let header = req
        .header("stripe-signature")
        .ok_or_else(|| bad("invalid_signature", "no Stripe-Signature header"))?;
    verify(secret, header, &body, chrono::Utc::now().timestamp())
        .map_err(|m| bad("invalid_signature", m))?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|_| bad("malformed_json", "the event is not JSON"))?;
    let id = event["id"]
        .as_str()
        .ok_or_else(|| bad("missing_field", "the event has no id").with_field("id"))?;
    let kind = event["type"].as_str().unwrap_or_default();
    if kind != "checkout.session.completed" {
        return Ok(Json(json!({"received": true, "ignored": kind})));
    }
    let session = &event["data"]["object"];
    let tenant = session["client_reference_id"]
        .as_str()
        .and_then(|r| r.parse::<i64>().ok())
        .map(TenantId)
        .ok_or_else(|| {
            ApiError::invalid(
                "data.object.client_reference_id",
                "must be the tenant id the billing offer's checkout URL carries",
            )
        })?;
    let store = state.limits.store();
    if store.plan_of(tenant).await?.is_none() {
        return Err(ApiError::invalid(
            "data.object.client_reference_id",
            "no tenant with this id",
        ));
    }
    let metadata = &session["metadata"];
    let detail = json!({
        "stripe_event": id,
        "checkout_session": session["id"],
        "amount_total": session["amount_total"],
        "currency": session["currency"],
    });
    let applied = if let Some(plan) = metadata["plan"].as_str() {
        state
            .limits
            .plans()
            .require(plan)
            .map_err(|m| ApiError::invalid("data.object.metadata.plan", m))?;
        let mut detail = detail;
        detail["plan"] = json!(plan);
        store.pay_for_plan(tenant, plan, &detail, id).await?
    } else if let Some(calls) = metadata["calls"]
        .as_str()
        .and_then(|c| c.parse::<u64>().ok())
        .or_else(|| metadata["calls"].as_u64())
        .filter(|c| *c > 0)
    {
        let (period, _, _) = sticky_core::plans::period(chrono::Utc::now());
        let mut detail = detail;
        detail["calls"] = json!(calls);
        detail["period"] = json!(period);
        store
            .add_credits(tenant, &period, calls, "payment", &detail, Some(id))
            .await?
    } else {
        return Err(ApiError::invalid(
            "data.object.metadata",
            "needs `plan` (a plan's name) or `calls` (a positive number)",
        ));
    };
    state.limits.forget(tenant);
    tracing::info!(applied, "stripe checkout processed");
    Ok(Json(json!({"received": true, "duplicate": !applied})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn a_signature_made_as_stripe_makes_it_verifies() {
        let body = br#"{"id":"evt_1"}"#;
        let t = 1_700_000_000;
        let header = format!("t={t},v1={},v0=abc", sign("whsec_x", t, body));
        assert_eq!(verify("whsec_x", &header, body, t + 10), Ok(()));
        // During a rotation, any v1 may match.
        let header = format!("t={t},v1=00ff,v1={}", sign("whsec_x", t, body));
        assert_eq!(verify("whsec_x", &header, body, t), Ok(()));
    }

    #[test]
    fn wrong_stale_or_tampered_signatures_fail() {
        let body = br#"{"id":"evt_1"}"#;
        let t = 1_700_000_000;
        let good = sign("whsec_x", t, body);
        let header = format!("t={t},v1={good}");
        assert!(verify("whsec_other", &header, body, t).is_err());
        assert!(verify("whsec_x", &header, br#"{"id":"evt_2"}"#, t).is_err());
        assert!(verify("whsec_x", &header, body, t + 301).is_err());
        assert!(verify("whsec_x", &header, body, t - 301).is_err());
        assert!(verify("whsec_x", &format!("v1={good}"), body, t).is_err());
        assert!(verify("whsec_x", &format!("t={t},v1=zz"), body, t).is_err());
        assert!(verify("whsec_x", "", body, t).is_err());
    }
}
