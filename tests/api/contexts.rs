//! The context documents call starts read (`engine/context.rs`): every write keeps each
//! customer's document equal to what the tables say, erasure removes it, and a customer
//! without one (stored by an older version) is answered from the tables and gets one.

use chrono::Duration;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use sticky_calls_tests::TestApp;
use sticky_core::domain::{CustomerRef, DefaultRegion, ExternalId, IntentName, PhoneNumber};
use sticky_core::engine::{ImportedCall, ImportedCustomer, ImportedIdentity, TenantId};

backend_tests!(
    context_documents_follow_every_write,
    a_customer_without_a_document_is_answered_from_the_tables_and_gets_one,
);

async fn tenant(app: &TestApp) -> TenantId {
    TenantId(
        app.state
            .keys
            .find_tenant("default")
            .await
            .unwrap()
            .unwrap()
            .id
            .0,
    )
}

async fn out_of_date(app: &TestApp) -> Vec<String> {
    app.state
        .engine
        .context_documents_out_of_date(tenant(app).await)
        .await
        .unwrap()
}

/// A customer whose history is out of order and longer than a context shows: calls ending
/// in another order than they started, more open intents than a context carries, variables
/// of every JSON type, times with nanoseconds.
fn awkward_customer(i: u32) -> ImportedCustomer {
    let base = sticky_core::now() - Duration::days(30) + Duration::nanoseconds(123_456_789);
    ImportedCustomer {
        customer_ref: CustomerRef::parse(&format!("awk-{i}")).unwrap(),
        identities: vec![
            ImportedIdentity::Ani(
                PhoneNumber::parse(&format!("+1415555010{i}"), DefaultRegion::default()).unwrap(),
            ),
            ImportedIdentity::External(ExternalId::new("crm_id", &format!("A{i}")).unwrap()),
        ],
        variables: [
            ("name".to_owned(), json!(format!("Awkward {i}"))),
            ("balance".to_owned(), json!(12.375)),
            ("vip".to_owned(), json!(true)),
            ("tags".to_owned(), json!(["a", {"b": null}])),
        ]
        .into(),
        calls: (0..8)
            .map(|k| ImportedCall {
                call_id: format!("awk-{i}-{k}"),
                platform: "generic".into(),
                started_at: base + Duration::hours(k),
                // Every other call ends after the next one.
                ended_at: base
                    + Duration::hours(k)
                    + Duration::minutes(if k % 2 == 0 { 90 } else { 5 }),
                intent: (k % 3 == 0).then(|| IntentName::parse("billing").unwrap()),
                intent_status: (k % 3 == 0).then_some("resolved"),
                summary: (k != 7).then(|| format!("call {k}")),
            })
            .collect(),
        open_intents: (0..23)
            .map(|n| IntentName::parse(&format!("topic-{n}")).unwrap())
            .collect(),
    }
}

async fn context_documents_follow_every_write(app: TestApp) {
    let t = tenant(&app).await;
    app.state
        .engine
        .import_customers(t, (0..3).map(awkward_customer).collect())
        .await
        .unwrap();
    assert_eq!(
        out_of_date(&app).await,
        Vec::<String>::new(),
        "after the import"
    );
    let r = app
        .start_call(json!({"call_id": "c1", "identity_hints": {"ani": "+14155550100"}}))
        .await;
    assert_eq!(r["customer_ref"], "awk-0");
    assert_eq!(r["context"]["recent_calls"].as_array().unwrap().len(), 5);
    assert_eq!(r["context"]["open_intents"].as_array().unwrap().len(), 20);
    assert_eq!(r["context"]["variables"]["tags"], json!(["a", {"b": null}]));

    // An end saving variables and an intent.
    app.end_call(
        json!({"call_id": "c1", "customer_ref": "awk-0", "intent": "refund",
        "summary": "wants a refund", "variables": {"vip": false, "new": 1}}),
    )
    .await;
    assert_eq!(
        out_of_date(&app).await,
        Vec::<String>::new(),
        "after an end"
    );
    // A new number: a provisional customer; then naming a customer merges it.
    app.end_call(
        json!({"call_id": "c2", "identity_hints": {"ani": "+14155550999"},
        "variables": {"lang": "fr"}}),
    )
    .await;
    app.end_call(json!({"call_id": "c3", "identity_hints": {"ani": "+14155550999"}}))
        .await;
    app.end_call(json!({"call_id": "c3", "customer_ref": "awk-1", "identity_hints": {"ani": "+14155550999"}}))
        .await;
    assert_eq!(
        out_of_date(&app).await,
        Vec::<String>::new(),
        "after a merge"
    );
    // A call moved from one customer to another.
    app.end_call(json!({"call_id": "c4", "customer_ref": "awk-1", "summary": "first guess"}))
        .await;
    app.end_call(json!({"call_id": "c4", "customer_ref": "awk-2"}))
        .await;
    assert_eq!(
        out_of_date(&app).await,
        Vec::<String>::new(),
        "after a move"
    );
    // Resolving an intent outside a call.
    let r = app
        .post("/v1/customers/awk-2/intents/topic-3/resolve", json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        out_of_date(&app).await,
        Vec::<String>::new(),
        "after a resolve"
    );
    let r = app
        .start_call(json!({"call_id": "c5", "identity_hints": {"external_ids": {"crm_id": "A2"}}}))
        .await;
    assert!(
        !r["context"]["open_intents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["intent"] == "topic-3")
    );
    assert_eq!(r["context"]["recent_calls"][0]["call_id"], "c4");

    // Erasure leaves no document behind (it holds summaries and variables).
    assert_eq!(app.delete("/v1/customers/awk-0").await.status, 200);
    assert_eq!(
        out_of_date(&app).await,
        Vec::<String>::new(),
        "after an erasure"
    );
    assert_eq!(
        app.count_rows("customer_contexts").await,
        app.count_rows("customers").await
    );
}

async fn a_customer_without_a_document_is_answered_from_the_tables_and_gets_one(app: TestApp) {
    app.end_call(json!({"call_id": "c1", "customer_ref": "alice",
        "identity_hints": {"ani": "+14155550100"}, "variables": {"plan": "gold"}}))
        .await;
    let db = app.state.engine.db();
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "DELETE FROM customer_contexts",
    ))
    .await
    .unwrap();
    assert_eq!(out_of_date(&app).await, vec!["alice".to_owned()]);

    let r = app
        .start_call(json!({"call_id": "c2", "identity_hints": {"ani": "+14155550100"}}))
        .await;
    assert_eq!(r["customer_ref"], "alice");
    assert_eq!(r["context"]["variables"]["plan"], "gold");
    // The document is stored after the answer, off the caller's path.
    for _ in 0..200 {
        if app.count_rows("customer_contexts").await == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(out_of_date(&app).await, Vec::<String>::new());
}
