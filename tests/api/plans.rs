//! Plans: a tenant on a tiny plan meets its quota (429 `quota_exceeded`, failed requests not
//! counted, connector calls failing open), a grant lifts it once, a slow plan meets its rate
//! limit (429 `rate_limited` with `Retry-After` and `RateLimit-*` headers). (Two processes
//! sharing the end of a quota: `scale_out.rs`.)

use poem::http::StatusCode;
use serde_json::{Value, json};
use sticky_calls_tests::TestApp;
use sticky_core::engine::TenantId;

backend_tests!(
    a_tiny_plan_meets_its_quota_and_a_grant_lifts_it,
    a_slow_plan_meets_its_rate_limit_with_headers,
);

/// The app again, with `plans` as its plans file, and tenant `default` on `plan`.
async fn with_plans(app: TestApp, plans: &str, plan: &str) -> (TestApp, TenantId) {
    let file = std::env::temp_dir().join(format!(
        "sticky-plans-{}-{}.toml",
        std::process::id(),
        sticky_core::random_token(8)
    ));
    std::fs::write(&file, plans).unwrap();
    let stopped = app.stop();
    let mut settings = stopped.settings();
    settings.plans_file = Some(file.clone());
    let app = stopped.start_with(settings).await;
    // Read at start only.
    let _ = std::fs::remove_file(&file);
    let tenant = app.default_tenant().await;
    app.state
        .limits
        .store()
        .set_plan(tenant, plan, "test")
        .await
        .unwrap();
    app.state.limits.forget(tenant);
    (app, tenant)
}

pub(crate) fn start_body(call_id: &str) -> Value {
    json!({"call_id": call_id, "identity_hints": {"ani": "+14155550177"}})
}

async fn a_tiny_plan_meets_its_quota_and_a_grant_lifts_it(app: TestApp) {
    let (app, tenant) = with_plans(app, "[plans.tiny]\ncalls_per_month = 5\n", "tiny").await;
    let usage = app.get("/v1/usage").await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.body);
    assert_eq!(usage.body["plan"], "tiny");
    assert_eq!(usage.body["included"], 5);
    assert_eq!(usage.body["remaining"], 5);
    assert_eq!(usage.body["tenant_id"], tenant.0);

    // Failed requests never count.
    let bad = app
        .post("/v1/calls/start", json!({"identity_hints": {}}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    for i in 0..5 {
        let r = app
            .post("/v1/calls/start", start_body(&format!("q-{i}")))
            .await;
        assert_eq!(r.status, StatusCode::OK, "start {i}: {}", r.body);
    }
    // Not counted: reading a call, usage, keys.
    assert_eq!(app.get("/v1/calls/q-0").await.status, StatusCode::OK);
    assert_eq!(app.get("/v1/api-keys/current").await.status, StatusCode::OK);

    let over = app
        .client
        .post("/v1/calls/start")
        .header("authorization", format!("Bearer {}", app.key))
        .header("content-type", "application/json")
        .body(start_body("q-5").to_string())
        .send()
        .await;
    assert_eq!(over.0.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = over.0.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31 * 86_400).contains(&retry), "{retry}");
    let body: Value =
        serde_json::from_slice(&over.0.into_body().into_vec().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resets at"),
        "{body}"
    );
    // Look-ups count too, and are refused.
    let find = app.get("/v1/customers?ani=%2B14155550177").await;
    assert_eq!(find.status, StatusCode::TOO_MANY_REQUESTS, "{}", find.body);

    // A platform call fails open: the native unknown-caller answer, marked, not counted.
    let hook = app
        .send_raw(
            "/v1/connectors/genesys-cloud/start",
            &[
                ("authorization", format!("Bearer {}", app.key)),
                ("content-type", "application/json".into()),
            ],
            json!({"conversationId": "q-hook", "ani": "tel:+14155550177"}).to_string(),
        )
        .await;
    assert_eq!(hook.status, StatusCode::OK, "{}", hook.text);
    assert_eq!(
        hook.json()["sticky_status"],
        "quota_exceeded",
        "{}",
        hook.text
    );
    assert_eq!(hook.json()["sticky_band"], "low", "{}", hook.text);
    assert_eq!(hook.json()["sticky_known"], false, "{}", hook.text);
    let end = app
        .send_raw(
            "/v1/connectors/genesys-cloud/end",
            &[
                ("authorization", format!("Bearer {}", app.key)),
                ("content-type", "application/json".into()),
            ],
            json!({"conversationId": "q-hook", "ani": "tel:+14155550177", "customerRef": "c"})
                .to_string(),
        )
        .await;
    assert_eq!(end.status, StatusCode::OK, "{}", end.text);
    assert_eq!(
        end.json()["sticky_status"],
        "quota_exceeded",
        "{}",
        end.text
    );
    assert_eq!(
        app.get("/v1/calls/q-hook").await.status,
        StatusCode::NOT_FOUND
    );
    let usage = app.get("/v1/usage").await;
    assert_eq!(
        (usage.body["used"].clone(), usage.body["remaining"].clone()),
        (json!(5), json!(0))
    );

    // Another tenant is not limited by this one.
    let other = app.new_tenant("plans-other").await;
    let r = app
        .post_as(&other, "/v1/calls/start", start_body("other-1"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let theirs = app.send("GET", "/v1/usage", Some(&other), None).await;
    assert_eq!(theirs.body["plan"], "unlimited");
    assert_eq!(theirs.body["remaining"], Value::Null);
    let events = app
        .send("GET", "/v1/billing/events", Some(&other), None)
        .await;
    assert_eq!(events.body["events"], json!([]), "{}", events.body);

    // Two more calls, once.
    let (period, _, _) = sticky_core::plans::period(chrono::Utc::now());
    app.state
        .limits
        .store()
        .add_credits(
            tenant,
            &period,
            2,
            "credits_granted",
            &json!({"calls": 2}),
            None,
        )
        .await
        .unwrap();
    app.state.limits.forget(tenant);
    for i in 6..8 {
        let r = app
            .post("/v1/calls/start", start_body(&format!("q-{i}")))
            .await;
        assert_eq!(r.status, StatusCode::OK, "start {i}: {}", r.body);
    }
    let r = app.post("/v1/calls/start", start_body("q-8")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let usage = app.get("/v1/usage").await;
    assert_eq!(usage.body["credits"], 2);
    assert_eq!(usage.body["used"], 7);
    let events = app.get("/v1/billing/events").await;
    let kinds: Vec<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["credits_granted", "plan_changed"],
        "{}",
        events.body
    );
}

async fn a_slow_plan_meets_its_rate_limit_with_headers(app: TestApp) {
    // 60 a minute: a burst of 5.
    let (app, _) = with_plans(app, "[plans.slow]\nrequests_per_minute = 60\n", "slow").await;
    let get = || {
        app.client
            .get("/v1/api-keys/current")
            .header("authorization", format!("Bearer {}", app.key))
            .send()
    };
    let mut last_remaining = u64::MAX;
    for _ in 0..5 {
        let r = get().await;
        assert_eq!(r.0.status(), StatusCode::OK);
        let h = r.0.headers();
        assert_eq!(h["ratelimit-limit"], "60");
        let remaining: u64 = h["ratelimit-remaining"].to_str().unwrap().parse().unwrap();
        assert!(remaining < last_remaining);
        last_remaining = remaining;
        assert!(h.contains_key("ratelimit-reset"));
    }
    let r = get().await;
    assert_eq!(r.0.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.0.headers()["ratelimit-remaining"], "0");
    assert!(r.0.headers().contains_key("retry-after"));
    let body: Value = serde_json::from_slice(&r.0.into_body().into_vec().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // A platform call over the rate fails open.
    let hook = app
        .send_raw(
            "/v1/connectors/genesys-cloud/start",
            &[
                ("authorization", format!("Bearer {}", app.key)),
                ("content-type", "application/json".into()),
            ],
            json!({"conversationId": "r-hook", "ani": "tel:+14155550178"}).to_string(),
        )
        .await;
    assert_eq!(hook.status, StatusCode::OK, "{}", hook.text);
    assert_eq!(
        hook.json()["sticky_status"],
        "rate_limited",
        "{}",
        hook.text
    );
}
