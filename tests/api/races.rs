//! Requests that meet: two ends of one call at once, an end racing the erasure of its
//! customer, an erasure and the calls of other customers that merely matched the erased one,
//! and a retried request whose body changed.

use poem::http::StatusCode;
use serde_json::json;
use sticky_calls_tests::TestApp;

backend_tests!(
    two_ends_of_one_call_at_once_make_one_ended_call,
    an_end_racing_the_erasure_of_its_customer_never_brings_erased_data_back,
    an_erasure_clears_other_customers_calls_that_matched_the_erased_one,
    a_retried_start_with_another_body_is_answered_as_the_call_it_retries,
    a_retried_end_with_another_body_merges_into_the_call,
);

async fn two_ends_of_one_call_at_once_make_one_ended_call(app: TestApp) {
    app.start_call(json!({"call_id": "both", "identity_hints": {"ani": "+14155550101"}}))
        .await;
    for round in 0..5 {
        let id = format!("both-{round}");
        let ani = format!("+1415555{:04}", 200 + round);
        let a = app.post(
            "/v1/calls/end",
            json!({"call_id": id, "identity_hints": {"ani": ani}, "variables": {"a": round}}),
        );
        let b = app.post(
            "/v1/calls/end",
            json!({"call_id": id, "identity_hints": {"ani": ani}, "variables": {"b": round}}),
        );
        let (a, b) = tokio::join!(a, b);
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(b.status, StatusCode::OK, "{}", b.body);
        assert_eq!(
            a.body["customer_ref"], b.body["customer_ref"],
            "both ends name one customer"
        );
        let call = app.get(&format!("/v1/calls/{id}")).await.body;
        assert_eq!(call["status"], "ended");
        let customer = app
            .get(&format!(
                "/v1/customers/{}",
                a.body["customer_ref"].as_str().unwrap()
            ))
            .await
            .body;
        assert_eq!(customer["call_count"], 1, "round {round}: {customer}");
        assert_eq!(
            customer["variables"]["a"], round,
            "round {round}: {customer}"
        );
        assert_eq!(
            customer["variables"]["b"], round,
            "round {round}: {customer}"
        );
    }
    assert_eq!(app.count_calls().await, 6);
}

async fn an_end_racing_the_erasure_of_its_customer_never_brings_erased_data_back(app: TestApp) {
    for round in 0..4 {
        let who = format!("erased-{round}");
        let ani = format!("+1415555{:04}", 300 + round);
        let first = format!("first-{round}");
        app.end_call(
            json!({"call_id": first, "customer_ref": who, "identity_hints": {"ani": ani},
            "summary": "a summary to forget", "variables": {"secret": "to forget"}}),
        )
        .await;
        let second = format!("second-{round}");
        app.start_call(json!({"call_id": second, "identity_hints": {"ani": ani}}))
            .await;
        let path = format!("/v1/customers/{who}");
        let erase = app.delete(&path);
        let end = app.post(
            "/v1/calls/end",
            json!({"call_id": second, "identity_hints": {"ani": ani}, "variables": {"later": "kept"}}),
        );
        let (erase, end) = tokio::join!(erase, end);
        assert_eq!(erase.status, StatusCode::OK, "{}", erase.body);
        assert!(end.status.is_success(), "{}: {}", end.status, end.body);
        // Whichever came first, what the erasure removed stays removed.
        assert_eq!(
            app.get(&format!("/v1/calls/{first}")).await.status,
            StatusCode::NOT_FOUND
        );
        let found = app
            .get(&format!("/v1/customers?ani=%2B1415555{:04}", 300 + round))
            .await
            .body;
        for c in found["customers"].as_array().unwrap() {
            let export = app
                .get(&format!(
                    "/v1/customers/{}",
                    c["customer_ref"].as_str().unwrap()
                ))
                .await
                .body
                .to_string();
            assert!(!export.contains("to forget"), "round {round}: {export}");
        }
        let next = app
            .start_call(
                json!({"call_id": format!("third-{round}"), "identity_hints": {"ani": ani}}),
            )
            .await;
        assert!(!next.to_string().contains("to forget"), "{next}");
    }
}

async fn an_erasure_clears_other_customers_calls_that_matched_the_erased_one(app: TestApp) {
    // Carol called from a shared line; Dave's call from it matched her at start.
    app.end_call(json!({"call_id": "carol-1", "customer_ref": "carol", "identity_hints": {"ani": "+14155550400"}}))
        .await;
    let start = app
        .start_call(json!({"call_id": "dave-1", "identity_hints": {"ani": "+14155550400"}}))
        .await;
    assert_eq!(start["customer_ref"], "carol");
    app.end_call(json!({"call_id": "dave-1", "customer_ref": "dave"}))
        .await;
    assert_eq!(
        app.get("/v1/calls/dave-1").await.body["matched_customer_ref"],
        "carol"
    );
    let r = app.delete("/v1/customers/carol").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Dave's call stays, and no longer points at Carol.
    let call = app.get("/v1/calls/dave-1").await.body;
    assert_eq!(call["customer_ref"], "dave", "{call}");
    assert!(call["matched_customer_ref"].is_null(), "{call}");
    assert_eq!(
        app.count_rows("calls WHERE matched_customer_id IS NOT NULL AND matched_customer_id NOT IN (SELECT id FROM customers)")
            .await,
        0,
        "no call points at a deleted customer"
    );
    // Later writes to that call work.
    let again = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "dave-1", "intent": "billing"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let next = app
        .start_call(json!({"call_id": "dave-2", "identity_hints": {"ani": "+14155550400"}}))
        .await;
    assert_eq!(next["customer_ref"], "dave", "{next}");
}

async fn a_retried_start_with_another_body_is_answered_as_the_call_it_retries(app: TestApp) {
    app.end_call(json!({"call_id": "known", "customer_ref": "erin", "identity_hints": {"ani": "+14155550500"}}))
        .await;
    let first = app
        .start_call(json!({"call_id": "retry", "identity_hints": {"ani": "+14155550500"}}))
        .await;
    assert_eq!(first["customer_ref"], "erin");
    // The same call id with another caller number: a retry (or a later leg) of that call,
    // answered from its start, and the other number is not taken as this call's.
    let second = app
        .start_call(json!({"call_id": "retry", "identity_hints": {"ani": "+14155550599"}}))
        .await;
    assert_eq!(second["customer_ref"], "erin", "{second}");
    assert_eq!(second["band"], first["band"]);
    let call = app.get("/v1/calls/retry").await.body;
    assert_eq!(call["ani"], "+14155550500", "{call}");
    assert_eq!(app.count_calls().await, 2);
    let stranger = app
        .start_call(json!({"call_id": "stranger", "identity_hints": {"ani": "+14155550599"}}))
        .await;
    assert_eq!(
        stranger["band"], "low",
        "the other number was not linked: {stranger}"
    );
}

async fn a_retried_end_with_another_body_merges_into_the_call(app: TestApp) {
    app.start_call(json!({"call_id": "e-1", "identity_hints": {"ani": "+14155550600"}}))
        .await;
    let first = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "e-1", "customer_ref": "finn", "intent": "billing", "variables": {"a": 1, "b": 1}}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let second = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "e-1", "intent_status": "resolved", "summary": "done", "variables": {"b": 2, "c": 3}}),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["customer_ref"], "finn");
    let finn = app.get("/v1/customers/finn").await.body;
    assert_eq!(finn["call_count"], 1, "{finn}");
    assert_eq!(finn["variables"], json!({"a": 1, "b": 2, "c": 3}), "{finn}");
    let call = app.get("/v1/calls/e-1").await.body;
    assert_eq!(call["intent"], "billing");
    assert_eq!(call["intent_status"], "resolved");
    assert_eq!(call["summary"], "done");
}
