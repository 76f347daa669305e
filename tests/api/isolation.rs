//! Tenant isolation: a second tenant's key sees and changes nothing of the first tenant's, on
//! every endpoint.

use poem::http::StatusCode;
use serde_json::json;
use sticky_calls_tests::TestApp;

backend_tests!(another_tenant_sees_and_changes_nothing_on_any_endpoint);

async fn another_tenant_sees_and_changes_nothing_on_any_endpoint(app: TestApp) {
    // Arrange: tenant `default` has a customer, a call, an intent, a variable and a key.
    app.start_call(json!({"call_id": "c1", "identity_hints": {
        "ani": "+14155551234", "external_ids": {"crm_id": "x"}}}))
        .await;
    app.end_call(
        json!({"call_id": "c1", "customer_ref": "alice", "intent": "refund",
                        "variables": {"secret": "s"}}),
    )
    .await;
    let our_key_id = app.get("/v1/api-keys").await.body["api_keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.new_tenant("other").await;
    let send = |method: &'static str, path: String, body: Option<serde_json::Value>| {
        let other = other.clone();
        let app = &app;
        async move {
            app.send(method, &path, Some(&other), body.map(|b| b.to_string()))
                .await
        }
    };

    // Act and assert, endpoint by endpoint, before the other tenant has data of its own.
    let start = send(
        "POST",
        "/v1/calls/start".into(),
        Some(json!({"call_id": "c1",
        "identity_hints": {"ani": "+14155551234", "external_ids": {"crm_id": "x"}}})),
    )
    .await;
    assert_eq!(start.status, StatusCode::OK);
    assert_eq!(
        start.body["band"], "low",
        "start does not match our customer"
    );
    assert_eq!(start.body["candidates"], json!([]));
    let call = send("GET", "/v1/calls/c1".into(), None).await;
    assert_eq!(
        call.body["customer_ref"],
        serde_json::Value::Null,
        "get call: their own c1"
    );
    assert_eq!(call.body["status"], "in_progress");
    for path in [
        "/v1/customers?ani=%2B14155551234",
        "/v1/customers?external_id=crm_id:x",
    ] {
        let r = send("GET", path.into(), None).await;
        assert_eq!(r.body["customers"], json!([]), "lookup {path}");
    }
    let export = send("GET", "/v1/customers/alice".into(), None).await;
    assert_eq!(export.status, StatusCode::NOT_FOUND, "export");
    let unlink = send(
        "POST",
        "/v1/customers/alice/unlink".into(),
        Some(json!({"external_id": "crm_id:x"})),
    )
    .await;
    assert_eq!(unlink.status, StatusCode::NOT_FOUND, "unlink");
    let resolve = send(
        "POST",
        "/v1/customers/alice/intents/refund/resolve".into(),
        Some(json!({})),
    )
    .await;
    assert_eq!(resolve.status, StatusCode::NOT_FOUND, "resolve intent");
    let erase = send("DELETE", "/v1/customers/alice".into(), None).await;
    assert_eq!(erase.status, StatusCode::NOT_FOUND, "erase");
    let keys = send("GET", "/v1/api-keys".into(), None).await;
    let listed: Vec<&str> = keys.body["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "list keys: only their own");
    assert!(!listed.contains(&our_key_id.as_str()));
    let revoke = send("DELETE", format!("/v1/api-keys/{our_key_id}"), None).await;
    assert_eq!(
        revoke.status,
        StatusCode::NOT_FOUND,
        "revoke another tenant's key"
    );
    // An end naming our ref creates the other tenant's own customer, not a link to ours.
    let end = send(
        "POST",
        "/v1/calls/end".into(),
        Some(json!({"call_id": "c1",
        "customer_ref": "alice", "variables": {"secret": "theirs"}})),
    )
    .await;
    assert_eq!(end.status, StatusCode::OK, "end");
    let theirs = send("GET", "/v1/customers/alice".into(), None).await;
    assert_eq!(theirs.body["variables"], json!({"secret": "theirs"}));
    assert_eq!(theirs.body["intents"], json!([]));
    assert_eq!(theirs.body["call_count"], 1);
    // Erasing the number erases their call from it, not ours.
    let erase_number = send("DELETE", "/v1/customers?ani=%2B14155551234".into(), None).await;
    assert_eq!(erase_number.status, StatusCode::OK, "erase number");
    assert_eq!(erase_number.body["deleted"]["calls"], 1, "their c1 only");
    assert_eq!(
        erase_number.body["deleted"]["identities"], 1,
        "their link only"
    );
    let erase = send("DELETE", "/v1/customers/alice".into(), None).await;
    assert_eq!(erase.status, StatusCode::OK, "erases their own alice");

    // Tenant default still has everything.
    let ours = app.get("/v1/customers/alice").await.body;
    assert_eq!(ours["variables"], json!({"secret": "s"}));
    assert_eq!(ours["intents"][0]["status"], "open");
    assert_eq!(ours["identities"].as_array().unwrap().len(), 2);
    assert_eq!(ours["call_count"], 1);
    let call = app.get("/v1/calls/c1").await.body;
    assert_eq!(call["customer_ref"], "alice");
    assert_eq!(call["status"], "ended");
    assert_eq!(app.get("/v1/api-keys").await.status, StatusCode::OK);
}
