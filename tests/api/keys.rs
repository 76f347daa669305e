//! API keys: created, listed without secrets, revoked at once; bootstrap from the environment.

use poem::http::StatusCode;
use serde_json::json;
use sticky_calls_server::Application;
use sticky_calls_tests::TestApp;

backend_tests!(
    a_created_key_works_is_listed_without_its_secret_and_stops_at_revocation,
    keys_are_stored_only_as_bcrypt_hashes,
    a_database_that_has_a_tenant_is_not_bootstrapped_again,
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
