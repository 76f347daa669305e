//! Self-registration and payment: signup only when open (and limited per address), offers
//! with the operator's payment links carrying the tenant's id, and Stripe's webhook applying a
//! plan or calls once per event, with payloads signed here exactly as Stripe signs them.

use hmac::{Hmac, KeyInit, Mac};
use poem::http::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use sticky_calls_server::Settings;
use sticky_calls_tests::TestApp;

backend_tests!(
    signup_works_only_when_open_and_is_limited_per_address,
    a_signup_that_fails_half_way_stores_nothing,
    offers_carry_the_tenants_id_and_stripe_payments_apply_once,
);

const SECRET: &str = "whsec_test_0123456789abcdef";

async fn restarted_with(app: TestApp, change: impl FnOnce(&mut Settings)) -> TestApp {
    let stopped = app.stop();
    let mut settings = stopped.settings();
    change(&mut settings);
    stopped.start_with(settings).await
}

/// `POST /v1/signup`, without a key, with a name or without one.
async fn signup(app: &TestApp, name: Option<&str>) -> sticky_calls_tests::Reply {
    let body = match name {
        Some(name) => json!({ "name": name }),
        None => json!({}),
    };
    app.send("POST", "/v1/signup", None, Some(body.to_string()))
        .await
}

fn plans_file(text: &str) -> std::path::PathBuf {
    let file = std::env::temp_dir().join(format!(
        "sticky-plans-{}-{}.toml",
        std::process::id(),
        sticky_core::random_token(8)
    ));
    std::fs::write(&file, text).unwrap();
    file
}

async fn signup_works_only_when_open_and_is_limited_per_address(app: TestApp) {
    let closed = signup(&app, None).await;
    assert_eq!(closed.status, StatusCode::NOT_FOUND, "{}", closed.body);

    let app = restarted_with(app, |s| s.signup_open = true).await;
    let made = signup(&app, Some("agent-one")).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(made.body["plan"], "free");
    assert_eq!(made.body["tenant"], "agent-one");
    let key = made.body["api_key"].as_str().unwrap().to_owned();
    // The key works, on its own tenant, which starts empty and on `free`.
    let usage = app.send("GET", "/v1/usage", Some(&key), None).await;
    assert_eq!(usage.body["plan"], "free", "{}", usage.body);
    assert_eq!(usage.body["included"], 100);
    assert_eq!(usage.body["tenant_id"], made.body["tenant_id"]);
    app.end_call(json!({"call_id": "b-1", "customer_ref": "default-cust",
        "identity_hints": {"ani": "+14155550166"}}))
        .await;
    let theirs = app
        .send("GET", "/v1/customers?ani=%2B14155550166", Some(&key), None)
        .await;
    assert_eq!(theirs.body["customers"], json!([]), "{}", theirs.body);
    // A taken name is a conflict; a bad one names the field.
    let taken = signup(&app, Some("agent-one")).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    // Three attempts an hour from one address (the refused one counted): a third works, a
    // fourth waits.
    let third = signup(&app, None).await;
    assert_eq!(third.status, StatusCode::CREATED, "{}", third.body);
    let more = signup(&app, None).await;
    assert_eq!(more.status, StatusCode::TOO_MANY_REQUESTS, "{}", more.body);
    assert_eq!(more.body["error"]["code"], "too_many_attempts");
}

async fn a_signup_that_fails_half_way_stores_nothing(app: TestApp) {
    let app = restarted_with(app, |s| s.signup_open = true).await;
    let tables = ["tenants", "api_keys", "billing_events"];
    let mut before = Vec::new();
    for t in tables {
        before.push(app.count_rows(t).await);
    }
    // The key's row cannot be written: the tenant and its plan were, in the same transaction.
    let (inject, remove) = if app.on_postgres() {
        (
            "CREATE FUNCTION no_keys() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER no_keys BEFORE INSERT ON api_keys \
             FOR EACH ROW EXECUTE FUNCTION no_keys()",
            "DROP TRIGGER no_keys ON api_keys",
        )
    } else {
        (
            "CREATE TRIGGER no_keys BEFORE INSERT ON api_keys \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            "DROP TRIGGER no_keys",
        )
    };
    app.execute_sql(inject).await;
    let failed = signup(&app, Some("half-way")).await;
    assert_eq!(
        failed.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        failed.body
    );
    for (t, n) in tables.iter().zip(&before) {
        assert_eq!(app.count_rows(t).await, *n, "nothing kept in {t}");
    }
    // Once the database takes keys again, the same name signs up: nothing half-made holds it.
    app.execute_sql(remove).await;
    let made = signup(&app, Some("half-way")).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(app.count_rows("tenants").await, before[0] + 1);
}

/// A `Stripe-Signature` header for `body`, as Stripe makes it.
fn stripe_signature(body: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

fn checkout(event_id: &str, tenant: i64, metadata: Value) -> String {
    json!({
        "id": event_id,
        "object": "event",
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": "cs_test_a1", "object": "checkout.session",
            "client_reference_id": tenant.to_string(),
            "amount_total": 900, "currency": "usd",
            "metadata": metadata,
        }},
    })
    .to_string()
}

async fn post_event(app: &TestApp, body: &str, signature: &str) -> (StatusCode, Value) {
    let r = app
        .client
        .post("/v1/billing/stripe/webhook")
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await;
    let status = r.0.status();
    let bytes = r.0.into_body().into_vec().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn offers_carry_the_tenants_id_and_stripe_payments_apply_once(app: TestApp) {
    let tenant = app.default_tenant().await.0;
    let now = chrono::Utc::now().timestamp();
    // Without a secret the webhook does not exist.
    let body = checkout("evt_0", tenant, json!({"plan": "tiny"}));
    let (status, _) = post_event(&app, &body, &stripe_signature(&body, now)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let file = plans_file(
        "[plans.tiny]\ncalls_per_month = 5\nprice_cents = 900\n\
         checkout_url = \"https://buy.stripe.com/test_tiny\"\nlabel = \"Tiny\"\n\
         [plans.big]\ncalls_per_month = 1000\nprice_cents = 9900\n\
         checkout_url = \"https://pay.example/big?locale=en\"\n",
    );
    let app = restarted_with(app, |s| {
        s.plans_file = Some(file.clone());
        s.stripe_webhook_secret = Some(SECRET.into());
    })
    .await;
    // Read at start only.
    let _ = std::fs::remove_file(&file);
    let offers = app.get("/v1/billing/offers").await;
    assert_eq!(offers.status, StatusCode::OK, "{}", offers.body);
    assert_eq!(offers.body["current_plan"], "unlimited");
    let list = offers.body["offers"].as_array().unwrap();
    let url_of = |plan: &str| {
        list.iter()
            .find(|o| o["plan"] == plan)
            .unwrap_or_else(|| panic!("{plan} offered: {}", offers.body))["checkout_url"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        url_of("tiny"),
        format!("https://buy.stripe.com/test_tiny?client_reference_id={tenant}")
    );
    assert_eq!(
        url_of("big"),
        format!("https://pay.example/big?locale=en&client_reference_id={tenant}")
    );
    assert!(list.iter().all(|o| o["plan"] != "unlimited"));

    // Bad signatures: 400, nothing applied.
    let body = checkout("evt_1", tenant, json!({"plan": "tiny"}));
    for signature in [
        stripe_signature(&body.replace("tiny", "big"), now),
        stripe_signature(&body, now - 600),
        format!("t={now},v1=00"),
        String::new(),
    ] {
        let (status, answer) = post_event(&app, &body, &signature).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_signature", "{answer}");
    }
    assert_eq!(app.get("/v1/usage").await.body["plan"], "unlimited");

    // The plan applies once; a replay is acknowledged and changes nothing.
    let (status, answer) = post_event(&app, &body, &stripe_signature(&body, now)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["duplicate"], false);
    assert_eq!(app.get("/v1/usage").await.body["plan"], "tiny");
    let (status, answer) = post_event(&app, &body, &stripe_signature(&body, now)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["duplicate"], true);

    // Calls bought apply to this month, once.
    let calls = checkout("evt_2", tenant, json!({"calls": "50"}));
    for expected_duplicate in [false, true] {
        let (status, answer) = post_event(&app, &calls, &stripe_signature(&calls, now)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["duplicate"], expected_duplicate);
    }
    let usage = app.get("/v1/usage").await;
    assert_eq!(usage.body["credits"], 50, "{}", usage.body);
    assert_eq!(usage.body["remaining"], 55, "{}", usage.body);
    let events = app.get("/v1/billing/events").await;
    let kinds: Vec<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["payment", "plan_changed", "payment"],
        "{}",
        events.body
    );

    // Other events are acknowledged; an unknown tenant or plan is refused, naming the field.
    let other = json!({"id": "evt_3", "type": "invoice.paid", "data": {"object": {}}}).to_string();
    let (status, _) = post_event(&app, &other, &stripe_signature(&other, now)).await;
    assert_eq!(status, StatusCode::OK);
    let nobody = checkout("evt_4", 987_654, json!({"plan": "tiny"}));
    let (status, answer) = post_event(&app, &nobody, &stripe_signature(&nobody, now)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "data.object.client_reference_id");
    let gold = checkout("evt_5", tenant, json!({"plan": "gold"}));
    let (status, answer) = post_event(&app, &gold, &stripe_signature(&gold, now)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "data.object.metadata.plan");

    // Another tenant's key sees none of it.
    let other_key = app.new_tenant("billing-other").await;
    let theirs = app
        .send("GET", "/v1/billing/events", Some(&other_key), None)
        .await;
    assert_eq!(theirs.body["events"], json!([]));
    let theirs = app.send("GET", "/v1/usage", Some(&other_key), None).await;
    assert_eq!(theirs.body["plan"], "unlimited");
}
