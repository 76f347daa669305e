//! API keys: created, listed without secrets, revoked at once; bootstrap from the environment.

use poem::http::StatusCode;
use serde_json::json;
use sticky_calls_server::Application;
use sticky_calls_tests::TestApp;

backend_tests!(
    a_created_key_works_is_listed_without_its_secret_and_stops_at_revocation,
    keys_are_stored_only_as_bcrypt_hashes,
    a_database_that_has_a_tenant_is_not_bootstrapped_again,
    a_flood_of_wrong_keys_is_refused_before_bcrypt_and_known_keys_stay_served,
    scoped_keys_do_only_what_their_scopes_allow,
);

async fn a_created_key_works_is_listed_without_its_secret_and_stops_at_revocation(app: TestApp) {
    let created = app.post("/v1/api-keys", json!({"label": "ivr"})).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let secret = created.body["api_key"].as_str().unwrap().to_owned();
    let id = created.body["key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(created.body["key"]["prefix"].as_str().unwrap()));

    let with_new = app.send("GET", "/v1/api-keys", Some(&secret), None).await;
    assert_eq!(with_new.status, StatusCode::OK);
    let listed = with_new.body.to_string();
    assert!(!listed.contains(&secret), "secrets are never listed");
    assert_eq!(with_new.body["api_keys"].as_array().unwrap().len(), 2);

    let revoked = app.delete(&format!("/v1/api-keys/{id}")).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = app.send("GET", "/v1/api-keys", Some(&secret), None).await;
    assert_eq!(
        after.status,
        StatusCode::UNAUTHORIZED,
        "revocation evicts the cache"
    );
    assert_eq!(after.body["error"]["code"], "unauthorized");
    let twice = app.delete(&format!("/v1/api-keys/{id}")).await;
    assert_eq!(twice.status, StatusCode::NOT_FOUND);
    assert_eq!(twice.body["error"]["code"], "api_key_not_found");
}

async fn keys_are_stored_only_as_bcrypt_hashes(app: TestApp) {
    use sea_orm::{ConnectionTrait, Statement};
    let db = app.state.engine.db();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT prefix, secret_hash FROM api_keys",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let hash: String = rows[0].try_get("", "secret_hash").unwrap();
    assert!(hash.starts_with("$2"), "a bcrypt hash");
    assert!(!hash.contains(&app.key));
    assert!(bcrypt::verify(&app.key, &hash).unwrap());
}

async fn a_database_that_has_a_tenant_is_not_bootstrapped_again(app: TestApp) {
    let stopped = app.stop();
    let mut s = stopped.settings();
    s.bootstrap_api_key = Some("another-key-that-is-long-enough-000".into());
    let second = Application::build(s).await.unwrap();
    assert!(second.bootstrap_key().is_none());
    drop(second);
    let app = stopped.start().await;
    assert_eq!(app.count_rows("tenants").await, 1);
}

async fn a_flood_of_wrong_keys_is_refused_before_bcrypt_and_known_keys_stay_served(app: TestApp) {
    // The real key is known (verified once, then cached).
    let ok = app.get("/v1/api-keys/current").await;
    assert_eq!(ok.status, StatusCode::OK);
    let mut refused = None;
    for i in 0..40 {
        let wrong = format!("sc_wrong{i:040}");
        let r = app
            .send("GET", "/v1/api-keys/current", Some(&wrong), None)
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some((i, r));
            break;
        }
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
    let (after, r) = refused.expect("the flood is refused");
    assert!(after >= 5, "a few wrong keys are verified first: {after}");
    assert_eq!(r.body["error"]["code"], "too_many_attempts", "{}", r.body);
    // Requests with the known key are still served, from the same address.
    for _ in 0..5 {
        assert_eq!(app.get("/v1/api-keys/current").await.status, StatusCode::OK);
    }
    // A connector webhook with a wrong key from that address is refused the same way.
    let hook = app
        .send_raw(
            "/v1/connectors/nice-cxone/start",
            &[
                (
                    "authorization",
                    "Bearer sc_wrongwrongwrongwrongwrongwrong".to_owned(),
                ),
                ("content-type", "application/json".to_owned()),
            ],
            "{\"contactId\": \"1\"}",
        )
        .await;
    assert_eq!(hook.status, StatusCode::TOO_MANY_REQUESTS, "{}", hook.text);
}

/// A key made with some scopes does only what they allow (403 `insufficient_scope` for the
/// rest), may only grant scopes it has, and keys made before scopes existed keep them all.
async fn scoped_keys_do_only_what_their_scopes_allow(app: TestApp) {
    let made = app
        .post(
            "/v1/api-keys",
            json!({"label": "webhooks", "scopes": ["calls"]}),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(made.body["key"]["scopes"], json!(["calls"]));
    let calls = made.body["api_key"].as_str().unwrap().to_owned();
    let send =
        |method: &'static str, path: String, key: String, body: Option<serde_json::Value>| {
            let app = &app;
            async move {
                app.send(method, &path, Some(&key), body.map(|b| b.to_string()))
                    .await
            }
        };

    // What a calls key may do: calls, connector webhooks, and checking itself.
    let start = send(
        "POST",
        "/v1/calls/start".into(),
        calls.clone(),
        Some(json!({"call_id": "s-1", "identity_hints": {"ani": "+14155550191"}})),
    )
    .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let end = send(
        "POST",
        "/v1/calls/end".into(),
        calls.clone(),
        Some(json!({"call_id": "s-1", "customer_ref": "scoped-1"})),
    )
    .await;
    assert_eq!(end.status, StatusCode::OK, "{}", end.body);
    for (method, path) in [("GET", "/v1/calls/s-1"), ("GET", "/v1/api-keys/current")] {
        let r = send(method, path.into(), calls.clone(), None).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path}: {}", r.body);
    }
    let hook = app
        .send_raw(
            "/v1/connectors/genesys-cloud/start",
            &[
                ("authorization", format!("Bearer {calls}")),
                ("content-type", "application/json".into()),
            ],
            json!({"conversationId": "s-2", "ani": "tel:+14155550191"}).to_string(),
        )
        .await;
    assert_eq!(hook.status, StatusCode::OK, "{}", hook.text);

    // What it may not.
    for (method, path, body) in [
        ("GET", "/v1/customers/scoped-1", None),
        ("GET", "/v1/customers?ani=%2B14155550191", None),
        ("DELETE", "/v1/customers/scoped-1", None),
        ("DELETE", "/v1/customers?ani=%2B14155550191", None),
        (
            "POST",
            "/v1/customers/scoped-1/unlink",
            Some(json!({"ani": "+14155550191"})),
        ),
        ("POST", "/v1/api-keys", Some(json!({}))),
        ("GET", "/v1/api-keys", None),
        ("GET", "/v1/settings", None),
        ("GET", "/v1/audit", None),
        (
            "PUT",
            "/v1/connectors/twilio/settings",
            Some(json!({"auth_token": "x"})),
        ),
    ] {
        let r = send(method, path.into(), calls.clone(), body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            r.body
        );
        assert_eq!(r.body["error"]["code"], "insufficient_scope", "{}", r.body);
    }
    // Nothing was erased by the refused requests.
    assert_eq!(
        app.get("/v1/customers/scoped-1").await.status,
        StatusCode::OK
    );

    // A reader reads and does not erase.
    let reader = app
        .post("/v1/api-keys", json!({"scopes": ["customers:read"]}))
        .await;
    let reader = reader.body["api_key"].as_str().unwrap().to_owned();
    let r = send("GET", "/v1/customers/scoped-1".into(), reader.clone(), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = send("DELETE", "/v1/customers/scoped-1".into(), reader, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A key grants only scopes it has.
    let admin = app
        .post("/v1/api-keys", json!({"scopes": ["admin", "calls"]}))
        .await;
    let admin = admin.body["api_key"].as_str().unwrap().to_owned();
    let r = send(
        "POST",
        "/v1/api-keys".into(),
        admin.clone(),
        Some(json!({"scopes": ["customers:write"]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["error"]["field"], "scopes");
    // By default, a new key has its maker's scopes.
    let r = send("POST", "/v1/api-keys".into(), admin, Some(json!({}))).await;
    assert_eq!(
        r.body["key"]["scopes"],
        json!(["calls", "admin"]),
        "{}",
        r.body
    );
    let r = app.post("/v1/api-keys", json!({"scopes": []})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["error"]["field"], "scopes");

    // A key stored before scopes existed (no value written) has every scope.
    use sea_orm::ConnectionTrait;
    let db = app.state.engine.db();
    let tenant = app.default_tenant().await;
    db.execute_unprepared(&format!(
        "INSERT INTO api_keys (id, tenant_id, prefix, secret_hash, label, created_at) \
         VALUES ('key_old', {}, 'sc_oldoldold', 'x', 'old', '2026-01-01T00:00:00Z')",
        tenant.0
    ))
    .await
    .unwrap();
    let listed = app.get("/v1/api-keys").await;
    let old = listed.body["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "key_old")
        .cloned()
        .unwrap();
    assert_eq!(
        old["scopes"],
        json!(["calls", "customers:read", "customers:write", "admin"])
    );
}
