//! The audit trail: every administrative action of a tenant, newest first, with no personal
//! data, and only the tenant's own.

use poem::http::StatusCode;
use serde_json::json;
use sticky_calls_tests::TestApp;

backend_tests!(administrative_actions_are_audited_without_personal_data,);

async fn administrative_actions_are_audited_without_personal_data(app: TestApp) {
    let made = app
        .post("/v1/api-keys", json!({"label": "temp"}))
        .await
        .body;
    let key_id = made["key"]["id"].as_str().unwrap().to_owned();
    let secret = made["api_key"].as_str().unwrap().to_owned();
    app.delete(&format!("/v1/api-keys/{key_id}")).await;
    app.send(
        "PUT",
        "/v1/settings",
        Some(&app.key),
        Some(json!({"sensitive_variables": ["card_last4"], "retention_days": 90}).to_string()),
    )
    .await;
    app.send(
        "PUT",
        "/v1/connectors/twilio/settings",
        Some(&app.key),
        Some(json!({"auth_token": "0123456789abcdef0123456789abcdef"}).to_string()),
    )
    .await;
    app.end_call(json!({"call_id": "a-1", "customer_ref": "zed-personal",
        "identity_hints": {"ani": "+14155550131"}, "summary": "private words"}))
        .await;
    app.delete("/v1/customers/zed-personal").await;
    app.end_call(json!({"call_id": "a-2", "identity_hints": {"ani": "+14155550132"}}))
        .await;
    app.delete("/v1/customers?ani=%2B14155550132").await;
    app.start_call(json!({"call_id": "a-3", "identity_hints": {"ani": "+14155550133"}}))
        .await;
    app.post(
        "/v1/calls/end",
        json!({"call_id": "a-3", "consent": "none"}),
    )
    .await;
    let other = app.new_tenant("other").await;

    let r = app.get("/v1/audit").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let actions: Vec<&str> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "caller_forgotten",
            "number_erased",
            "customer_erased",
            "connector_settings_changed",
            "settings_changed",
            "api_key_revoked",
            "api_key_created",
        ],
        "{}",
        r.body
    );
    let events = &r.body["events"];
    assert_eq!(events[2]["details"]["calls"], 1, "{}", r.body);
    assert_eq!(events[3]["subject"], "twilio");
    assert_eq!(events[6]["subject"], key_id.as_str());
    let text = r.body.to_string();
    for personal in [
        "zed-personal",
        "4155550131",
        "4155550132",
        "4155550133",
        "private words",
        "card_last4",
        "0123456789abcdef",
        secret.as_str(),
    ] {
        assert!(
            !text.contains(personal),
            "the trail holds {personal}: {text}"
        );
    }
    // Another tenant's trail is its own (its creation by the operator is not an API action).
    let theirs = app.send("GET", "/v1/audit", Some(&other), None).await;
    assert_eq!(theirs.body["events"], json!([]), "{}", theirs.body);
    assert_eq!(
        app.get("/v1/audit?limit=2").await.body["events"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let bad = app.get("/v1/audit?limit=0").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
}
