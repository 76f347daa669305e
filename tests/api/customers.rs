//! Customers outside a call: look-up, export, erasure, unlinking, resolving intents.

use poem::http::StatusCode;
use serde_json::{Value, json};
use sticky_calls_tests::TestApp;

backend_tests!(
    the_export_holds_everything_stored_about_the_customer,
    the_tenants_export_in_pages_holds_each_customers_export,
    erasure_removes_everything_and_nothing_is_matched_afterwards,
    customers_can_be_looked_up_by_number_or_external_id,
    a_lookup_needs_a_usable_identity,
    all_customers_are_listed_a_page_at_a_time,
    an_unlinked_number_no_longer_matches,
    an_intent_can_be_resolved_outside_a_call,
);

async fn seed(app: &TestApp) {
    app.start_call(json!({"call_id": "c1", "identity_hints": {
        "ani": "+14155551234", "external_ids": {"crm_id": "crm_1"}}}))
        .await;
    app.end_call(
        json!({"call_id": "c1", "customer_ref": "alice", "intent": "refund",
                        "variables": {"name": "Alice"}, "summary": "first"}),
    )
    .await;
}

async fn the_export_holds_everything_stored_about_the_customer(app: TestApp) {
    seed(&app).await;
    // A call that matched alice at its start and has not ended.
    app.start_call(json!({"call_id": "c2", "identity_hints": {"ani": "+14155551234"}}))
        .await;
    let r = app.get("/v1/customers/alice").await;
    assert_eq!(r.status, StatusCode::OK);
    let e = r.body;
    assert_eq!(e["customer_ref"], "alice");
    assert_eq!(e["provisional"], false);
    let values: Vec<&str> = e["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["+14155551234", "crm_id:crm_1"]);
    assert_eq!(e["variables"], json!({"name": "Alice"}));
    assert_eq!(e["intents"][0]["status"], "open");
    assert_eq!(e["calls"][0]["summary"], "first");
    assert_eq!(e["calls"][0]["ani"], "+14155551234");
    assert_eq!(e["calls"][1]["call_id"], "c2");
    assert_eq!(e["calls"][1]["status"], "in_progress");
    assert_eq!(e["calls"].as_array().unwrap().len(), 2);
    let missing = app.get("/v1/customers/nobody").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"]["code"], "customer_not_found");
}

/// The whole tenant's export (`sticky-calls export`) reads customers a page at a time: each
/// customer in it is exactly their own export, whatever else is on the page, and no other
/// tenant's customer is in it.
async fn the_tenants_export_in_pages_holds_each_customers_export(app: TestApp) {
    seed(&app).await;
    // Matched alice at its start, has not ended.
    app.start_call(json!({"call_id": "c2", "identity_hints": {"ani": "+14155551234"}}))
        .await;
    // Matched alice at its start, ended as bob's (from a number of his own too).
    app.start_call(json!({"call_id": "c3", "identity_hints": {"ani": "+14155551234"}}))
        .await;
    app.end_call(json!({"call_id": "c3", "customer_ref": "bob",
        "identity_hints": {"ani": "+14155551235"}, "summary": "bob on alice's line",
        "intent": "billing", "variables": {"tier": "gold"}}))
        .await;
    // A provisional customer, and a customer without calls.
    app.end_call(json!({"call_id": "c4", "identity_hints": {"ani": "+14155551236"}}))
        .await;
    app.end_call(json!({"call_id": "c5", "customer_ref": "cy"}))
        .await;
    let other = app.new_tenant("other").await;
    app.end_call_as(
        &other,
        json!({"call_id": "c1", "customer_ref": "them",
            "identity_hints": {"ani": "+14155551234"}}),
    )
    .await;

    let tenant = app.default_tenant().await;
    let engine = &app.state.engine;
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let page = engine.export_customers(tenant, after, 2).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = *last;
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
    let exports: Vec<_> = pages.into_iter().flatten().map(|(_, e)| e).collect();
    let refs: Vec<&str> = exports
        .iter()
        .map(|e| e.customer.customer_ref.as_str())
        .collect();
    assert_eq!(
        refs[..2],
        ["alice", "bob"],
        "in the order they were created"
    );
    assert!(exports[2].customer.provisional);
    assert_eq!(refs[3], "cy");
    for e in &exports {
        let r = sticky_core::domain::CustomerRef::parse(&e.customer.customer_ref).unwrap();
        assert_eq!(e, &engine.export_customer(tenant, &r).await.unwrap());
    }
    let calls = |i: usize| -> Vec<(&str, Option<&str>, Option<&str>)> {
        exports[i]
            .calls
            .iter()
            .map(|c| {
                (
                    c.call_id.as_str(),
                    c.matched_customer_ref.as_deref(),
                    c.customer_ref.as_deref(),
                )
            })
            .collect()
    };
    assert_eq!(
        calls(0),
        [("c1", None, Some("alice")), ("c2", Some("alice"), None)]
    );
    assert_eq!(calls(1), [("c3", Some("alice"), Some("bob"))]);
    assert_eq!(exports[1].variables["tier"], "gold");
    assert_eq!(exports[1].intents[0].intent, "billing");
    assert_eq!(calls(2), [("c4", None, Some(refs[2]))]);
    assert_eq!(calls(3), [("c5", None, Some("cy"))]);
}

async fn erasure_removes_everything_and_nothing_is_matched_afterwards(app: TestApp) {
    seed(&app).await;
    // A second call that matched alice at start but never ended also carries her number.
    app.start_call(json!({"call_id": "c2", "identity_hints": {"ani": "+14155551234"}}))
        .await;

    let r = app.delete("/v1/customers/alice").await;

    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"customer_ref": "alice", "deleted": {
            "customers": 1, "identities": 2, "variables": 1, "intents": 1, "calls": 2}})
    );
    for table in ["customers", "identities", "variables", "intents", "calls"] {
        assert_eq!(app.count_rows(table).await, 0, "{table} emptied");
    }
    let again = app
        .start_call(json!({"call_id": "c3", "identity_hints": {
            "ani": "+14155551234", "external_ids": {"crm_id": "crm_1"}}}))
        .await;
    assert_eq!(again["band"], "low");
    assert_eq!(again["customer_ref"], Value::Null);
    assert_eq!(
        app.get("/v1/customers/alice").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("/v1/calls/c1").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/v1/customers?ani=%2B14155551234").await.body["customers"],
        json!([])
    );
    assert_eq!(
        app.delete("/v1/customers/alice").await.status,
        StatusCode::NOT_FOUND
    );
    // Nor after a restart: no record of an erased call is read back as an open call.
    let app = app.restarted().await;
    for call in ["c1", "c2"] {
        assert_eq!(
            app.get(&format!("/v1/calls/{call}")).await.status,
            StatusCode::NOT_FOUND,
            "{call}"
        );
    }
    assert_eq!(app.count_calls().await, 1, "c3 only");
}

async fn customers_can_be_looked_up_by_number_or_external_id(app: TestApp) {
    seed(&app).await;
    for query in [
        "ani=%2B14155551234",
        "ani=415-555-1234",
        "external_id=crm_id:crm_1",
    ] {
        let r = app.get(&format!("/v1/customers?{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{query}");
        assert_eq!(r.body["customers"][0]["customer_ref"], "alice", "{query}");
        assert_eq!(r.body["customers"][0]["call_count"], 1, "{query}");
    }
    let none = app.get("/v1/customers?ani=%2B14155550000").await;
    assert_eq!(none.body["customers"], json!([]));
}

async fn a_lookup_needs_a_usable_identity(app: TestApp) {
    // A number that is not one (withheld, too short) is nobody's: an empty look-up.
    for query in ["?ani=anonymous", "?ani=12"] {
        let r = app.get(&format!("/v1/customers{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
        assert_eq!(r.body["customers"], json!([]), "{query}");
    }
    for (query, field) in [
        ("?ani=", "ani"),
        ("?external_id=nocolon", "external_id"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?after=a%20b", "after"),
    ] {
        let r = app.get(&format!("/v1/customers{query}")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(r.body["error"]["code"], "invalid_value", "{query}");
        assert_eq!(r.body["error"]["field"], field, "{query}");
    }
}

async fn an_unlinked_number_no_longer_matches(app: TestApp) {
    seed(&app).await;
    let r = app
        .post("/v1/customers/alice/unlink", json!({"ani": "4155551234"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["removed"], 1);
    let next = app
        .start_call(json!({"call_id": "c2", "identity_hints": {"ani": "+14155551234"}}))
        .await;
    assert_eq!(next["band"], "low");
    let again = app
        .post("/v1/customers/alice/unlink", json!({"ani": "4155551234"}))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.body["error"]["code"], "identity_not_found");
    let both = app
        .post(
            "/v1/customers/alice/unlink",
            json!({"ani": "4155551234", "external_id": "crm_id:crm_1"}),
        )
        .await;
    assert_eq!(both.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn an_intent_can_be_resolved_outside_a_call(app: TestApp) {
    seed(&app).await;
    let r = app
        .post("/v1/customers/alice/intents/refund/resolve", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "resolved");
    assert_eq!(r.body["last_call_id"], "c1");
    assert!(r.body["resolved_at"].is_string());
    let next = app
        .start_call(json!({"call_id": "c2", "identity_hints": {"ani": "+14155551234"}}))
        .await;
    assert_eq!(next["context"]["open_intents"], json!([]));
    let unknown = app
        .post("/v1/customers/alice/intents/nothing/resolve", json!({}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["code"], "intent_not_found");
}

async fn all_customers_are_listed_a_page_at_a_time(app: TestApp) {
    let refs = ["carol", "alice", "dave", "bob", "erin"];
    for (i, r) in refs.iter().enumerate() {
        app.end_call(json!({"call_id": format!("l{i}"), "customer_ref": r,
            "identity_hints": {"ani": format!("+1415555020{i}")}}))
            .await;
    }
    // A customer of another tenant is never listed.
    let other = app.new_tenant("other-list").await;
    let theirs = app
        .post_as(
            &other,
            "/v1/calls/end",
            json!({"call_id": "x", "customer_ref": "aaron"}),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.body);

    let mut seen = Vec::new();
    let mut query = "/v1/customers?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get(&query).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let customers = page.body["customers"].as_array().unwrap();
        assert!(customers.len() <= 2, "{}", page.body);
        seen.extend(
            customers
                .iter()
                .map(|c| c["customer_ref"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        match page.body["next_after"].as_str() {
            Some(after) => query = format!("/v1/customers?limit=2&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, ["alice", "bob", "carol", "dave", "erin"]);
    assert_eq!(pages, 3);
    let all = app.get("/v1/customers").await.body;
    assert_eq!(all["customers"].as_array().unwrap().len(), 5, "{all}");
    assert_eq!(all["next_after"], Value::Null, "{all}");
    assert_eq!(all["customers"][1]["call_count"], 1, "{all}");
    let mine = app
        .send("GET", "/v1/customers", Some(&other), None)
        .await
        .body;
    assert_eq!(mine["customers"][0]["customer_ref"], "aaron", "{mine}");
    assert_eq!(mine["customers"].as_array().unwrap().len(), 1, "{mine}");
    // With a filter, `after` and `limit` narrow the matches (alice called from 0201).
    let by_number = app
        .get("/v1/customers?ani=%2B14155550201&after=aaa&limit=1")
        .await;
    assert_eq!(
        by_number.body["customers"][0]["customer_ref"], "alice",
        "{}",
        by_number.body
    );
    let past = app
        .get("/v1/customers?ani=%2B14155550201&after=alice")
        .await;
    assert_eq!(past.body["customers"], json!([]), "{}", past.body);
}
