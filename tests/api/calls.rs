//! Call start and end: recognition, idempotency, provisional customers and merges.

use poem::http::StatusCode;
use serde_json::{Value, json};
use sticky_calls_tests::TestApp;

backend_tests!(
    a_second_call_is_recognised_with_its_variables_and_open_intent,
    an_unknown_number_is_low_with_no_customer_and_no_context,
    a_retried_start_returns_the_same_answer_and_writes_no_second_call,
    concurrent_retries_of_one_start_record_one_call,
    starts_recorded_together_keep_each_row_as_answered,
    starts_read_together_each_find_their_own_tenants_caller,
    a_repeated_end_merges_without_duplicating_history,
    an_end_without_customer_ref_creates_a_provisional_customer_recognised_next_time,
    a_number_heard_from_long_ago_keeps_its_provisional_customer,
    unnamed_calls_from_a_shared_number_create_no_customer_to_hide_the_named_ones,
    naming_a_provisional_customer_merges_it_and_leaves_no_trace_on_the_old_ref,
    naming_a_customer_keeps_apart_a_provisional_one_matched_only_at_low_confidence,
    ends_from_two_sources_merge_in_either_order,
    a_resolved_intent_leaves_the_open_list,
    callbacks_are_listed_first_with_where_they_stand,
    a_due_time_reads_back_alike_on_both_databases,
    a_variable_with_a_time_to_live_is_forgotten_when_it_expires,
    a_time_to_live_alone_gives_a_saved_variable_an_expiry,
    a_null_variable_removes_the_key,
    a_withheld_number_is_never_linked_or_matched,
    a_number_shared_by_two_customers_is_medium_with_candidates,
    an_external_id_match_is_high_without_a_number,
    concurrent_ends_from_one_new_number_create_one_provisional_customer,
    the_stored_call_can_be_read_back,
    an_end_before_its_start_is_kept_and_the_late_start_answers,
    summary_falls_back_to_the_summary_variable,
    an_intent_status_without_any_intent_is_rejected_and_nothing_is_written,
    a_rejected_end_among_concurrent_ends_leaves_the_others_committed,
    ends_committed_together_each_see_what_the_ones_before_wrote,
    an_end_that_fails_after_writing_leaves_nothing_and_the_others_keep_everything,
    an_answered_start_survives_a_restart_and_its_end_stores_it_once,
    a_merge_carries_the_calls_still_open_that_matched_the_merged_customer,
);

fn start(call_id: &str, ani: &str) -> Value {
    json!({"call_id": call_id, "identity_hints": {"ani": ani, "dnis": "+18005550100"}})
}

/// A call from +14155551234 ended by `end` (which names nobody): the provisional customer's ref.
async fn a_provisional_customer(app: &TestApp, end: Value) -> String {
    let call_id = end["call_id"].as_str().expect("a call id").to_owned();
    app.start_call(start(&call_id, "+14155551234")).await;
    app.end_call(end).await["customer_ref"]
        .as_str()
        .expect("a customer")
        .to_owned()
}

/// Redacts what changes between runs: timestamps and generated refs. A timestamp not in the
/// API's form (RFC 3339 with `+00:00`) stays, so the snapshot shows it.
fn redacted(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if k.ends_with("_at")
                        && val.as_str().is_some_and(|s| {
                            s.ends_with("+00:00") && chrono::DateTime::parse_from_rfc3339(s).is_ok()
                        })
                    {
                        *val = json!("[timestamp]");
                    } else if val
                        .as_str()
                        .is_some_and(|s| s.starts_with("cust_") && s.len() == 21)
                    {
                        *val = json!("[generated ref]");
                    } else {
                        walk(val);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

async fn a_second_call_is_recognised_with_its_variables_and_open_intent(app: TestApp) {
    // Arrange: a first call from a new number, ended with what the agent learned.
    app.start_call(start("call_1", "+14155551234")).await;
    let ended = app
        .end_call(json!({
            "call_id": "call_1", "customer_ref": "cust_abc123",
            "intent": "refund_request", "intent_status": "open",
            "variables": {"name": "John Doe", "order_id": "12345", "amount": "49.99",
                          "summary": "Customer called about refund"}
        }))
        .await;
    assert_eq!(ended["customer_ref"], "cust_abc123");
    assert_eq!(ended["provisional"], false);

    // Act: the same person calls again, number written differently.
    let second = app.start_call(start("call_2", "(415) 555-1234")).await;

    // Assert
    assert_eq!(second["customer_ref"], "cust_abc123");
    assert_eq!(second["band"], "high");
    assert_eq!(second["recommended_action"], "greet");
    let ctx = &second["context"];
    assert_eq!(ctx["variables"]["name"], "John Doe");
    assert_eq!(ctx["open_intents"][0]["intent"], "refund_request");
    assert_eq!(ctx["open_intents"][0]["last_call_id"], "call_1");
    assert_eq!(
        ctx["recent_calls"][0]["summary"],
        "Customer called about refund"
    );
    assert_eq!(ctx["call_count"], 1);
    insta::assert_json_snapshot!("recognised_start", redacted(second));
}

async fn an_unknown_number_is_low_with_no_customer_and_no_context(app: TestApp) {
    let r = app.start_call(start("call_x", "+14155550000")).await;
    assert_eq!(r["band"], "low");
    assert_eq!(r["recommended_action"], "treat_as_new");
    assert_eq!(r["customer_ref"], Value::Null);
    assert_eq!(r["context"], Value::Null);
    assert_eq!(r["candidates"], json!([]));
    insta::assert_json_snapshot!("unknown_start", r);
}

async fn a_retried_start_returns_the_same_answer_and_writes_no_second_call(app: TestApp) {
    app.start_call(start("c1", "+14155551234")).await;
    app.end_call(json!({"call_id": "c1", "customer_ref": "alice"}))
        .await;

    let first = app.start_call(start("c2", "+14155551234")).await;
    let retry = app.start_call(start("c2", "+14155551234")).await;

    assert_eq!(first, retry);
    assert_eq!(app.count_calls().await, 2);
}

async fn concurrent_retries_of_one_start_record_one_call(app: TestApp) {
    app.start_call(start("c1", "+14155551234")).await;
    app.end_call(json!({"call_id": "c1", "customer_ref": "alice"}))
        .await;
    let app = std::sync::Arc::new(app);
    // Retries of one start, and starts of other calls, all at once: the writer batches them.
    let answers = futures::future::join_all((0..16).map(|i| {
        let app = app.clone();
        async move {
            let id = if i % 2 == 0 {
                "c2".to_owned()
            } else {
                format!("other-{i}")
            };
            (id.clone(), app.start_call(start(&id, "+14155551234")).await)
        }
    }))
    .await;
    let retries: Vec<&Value> = answers
        .iter()
        .filter(|(id, _)| id == "c2")
        .map(|(_, a)| a)
        .collect();
    assert!(
        retries.iter().all(|a| *a == retries[0]),
        "one answer for one call"
    );
    assert_eq!(retries[0]["customer_ref"], "alice");
    assert_eq!(app.count_calls().await, 1 + 1 + 8);
}

/// Starts at once, of two tenants whose customers have the same numbers and CRM ids (on
/// PostgreSQL the starts that miss the identity cache are read together, in one statement):
/// each start finds its own tenant's customer, with that customer's memory, and an unknown
/// number finds nobody.
async fn starts_read_together_each_find_their_own_tenants_caller(app: TestApp) {
    let other = app.new_tenant("other").await;
    for i in 0..6 {
        for (key, tenant) in [(None, "a"), (Some(other.as_str()), "b")] {
            let end = json!({"call_id": format!("seed-{tenant}{i}"),
                             "customer_ref": format!("{tenant}{i}"),
                             "identity_hints": {"ani": format!("+1415555{:04}", 3000 + i),
                                                "external_ids": {"crm_id": format!("c{i}")}},
                             "variables": {"who": format!("{tenant}{i}")}});
            let reply = match key {
                Some(k) => app.post_as(k, "/v1/calls/end", end).await,
                None => app.post("/v1/calls/end", end).await,
            };
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
    }
    let app = std::sync::Arc::new(app);
    let starts = (0..48).map(|j| {
        let (app, other) = (app.clone(), other.clone());
        async move {
            let tenant = if j % 2 == 0 { "a" } else { "b" };
            let i = (j / 2) % 6;
            let hints = match j % 6 {
                0 | 1 => json!({"ani": format!("+1415555{:04}", 3000 + i)}),
                2 | 3 => json!({"external_ids": {"crm_id": format!("c{i}")}}),
                _ => json!({"ani": format!("+1415555{:04}", 4000 + j)}),
            };
            let body = json!({"call_id": format!("s{j}"), "identity_hints": hints});
            let reply = match tenant {
                "b" => app.post_as(&other, "/v1/calls/start", body).await,
                _ => app.post("/v1/calls/start", body).await,
            };
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            (j, tenant, i, reply.body)
        }
    });
    for (j, tenant, i, answer) in futures::future::join_all(starts).await {
        if j % 6 >= 4 {
            assert_eq!(answer["customer_ref"], Value::Null, "s{j}: {answer}");
            assert_eq!(answer["band"], "low", "s{j}: {answer}");
            continue;
        }
        let expected = format!("{tenant}{i}");
        assert_eq!(answer["customer_ref"], *expected, "s{j}: {answer}");
        assert_eq!(answer["band"], "high", "s{j}: {answer}");
        assert_eq!(answer["candidates"], json!([]), "s{j}: {answer}");
        assert_eq!(
            answer["context"]["variables"]["who"], *expected,
            "s{j}: {answer}"
        );
    }
}

/// Starts of different shapes at once (the call writer inserts what is waiting as one
/// statement: on PostgreSQL one array per column): every call is stored with its own values,
/// empty ones empty, and its own match.
async fn starts_recorded_together_keep_each_row_as_answered(app: TestApp) {
    app.start_call(start("c0", "+14155551234")).await;
    app.end_call(json!({"call_id": "c0", "customer_ref": "alice"}))
        .await;
    let app = std::sync::Arc::new(app);
    let bodies: Vec<Value> = (0..24)
        .map(|i| match i % 4 {
            0 => json!({"call_id": format!("k{i}"), "platform": "twilio",
                        "identity_hints": {"ani": "+14155551234", "dnis": "+18005550100"}}),
            1 => json!({"call_id": format!("w{i}"),
                        "identity_hints": {"ani": "anonymous"}}),
            2 => json!({"call_id": format!("u{i}"), "platform": "genesys-cloud",
                        "identity_hints": {"ani": format!("+1415555{:04}", 2000 + i),
                                           "external_ids": {"crm_id": format!("x{i}")}}}),
            _ => json!({"call_id": format!("e{i}"),
                        "identity_hints": {"external_ids": {"crm_id": format!("y{i}")}}}),
        })
        .collect();
    let answers = futures::future::join_all(bodies.iter().map(|b| {
        let app = app.clone();
        async move { app.start_call(b.clone()).await }
    }))
    .await;
    for (body, answer) in bodies.iter().zip(&answers) {
        let id = body["call_id"].as_str().unwrap();
        let stored = app.get(&format!("/v1/calls/{id}")).await.body;
        let hints = &body["identity_hints"];
        assert_eq!(stored["call_id"], *id);
        assert_eq!(
            stored["platform"],
            body.get("platform").cloned().unwrap_or(json!("generic")),
            "{id}"
        );
        assert_eq!(stored["status"], "in_progress", "{id}");
        assert_eq!(
            stored["matched_customer_ref"], answer["customer_ref"],
            "{id}"
        );
        assert_eq!(stored["confidence"], answer["confidence"], "{id}");
        assert_eq!(stored["band"], answer["band"], "{id}");
        assert_eq!(
            stored["dnis"],
            hints.get("dnis").cloned().unwrap_or(Value::Null),
            "{id}"
        );
        assert_eq!(
            stored["external_ids"],
            hints.get("external_ids").cloned().unwrap_or(json!({})),
            "{id}"
        );
        match id.as_bytes()[0] {
            b'k' => {
                assert_eq!(stored["ani"], "+14155551234");
                assert_eq!(stored["matched_customer_ref"], "alice");
            }
            b'w' => {
                assert_eq!(stored["ani"], Value::Null);
                assert_eq!(stored["ani_withheld"], true);
            }
            b'u' => assert_eq!(stored["ani"], hints["ani"], "{id}"),
            _ => assert_eq!(stored["ani"], Value::Null, "{id}"),
        }
        if id.starts_with('w') {
            continue;
        }
        assert_eq!(stored["ani_withheld"], false, "{id}");
        assert!(stored["started_at"].is_string(), "{id}");
        assert_eq!(stored["ended_at"], Value::Null, "{id}");
    }
    assert_eq!(app.count_calls().await, 1 + 24);
}

async fn a_repeated_end_merges_without_duplicating_history(app: TestApp) {
    app.start_call(start("c1", "+14155551234")).await;
    let end = json!({"call_id": "c1", "customer_ref": "alice", "intent": "billing",
                     "variables": {"plan": "gold"}});
    app.end_call(end.clone()).await;
    app.end_call(end).await;

    let export = app.get("/v1/customers/alice").await.body;
    assert_eq!(export["call_count"], 1);
    assert_eq!(export["calls"].as_array().unwrap().len(), 1);
    assert_eq!(export["identities"][0]["call_count"], 1);
    assert_eq!(export["intents"].as_array().unwrap().len(), 1);
    let next = app.start_call(start("c2", "+14155551234")).await;
    assert_eq!(next["context"]["recent_calls"].as_array().unwrap().len(), 1);
}

async fn an_end_without_customer_ref_creates_a_provisional_customer_recognised_next_time(
    app: TestApp,
) {
    app.start_call(start("c1", "+14155551234")).await;
    let ended = app
        .end_call(json!({"call_id": "c1", "variables": {"language": "es"}}))
        .await;
    let provisional = ended["customer_ref"].as_str().unwrap().to_owned();
    assert!(provisional.starts_with("cust_"));
    assert_eq!(ended["provisional"], true);

    let next = app.start_call(start("c2", "4155551234")).await;
    assert_eq!(next["customer_ref"], provisional.as_str());
    assert_eq!(next["band"], "high");
    assert_eq!(next["context"]["variables"]["language"], "es");
}

async fn a_number_heard_from_long_ago_keeps_its_provisional_customer(app: TestApp) {
    use sea_orm::{ConnectionTrait, Statement};
    // A provisional customer whose only call was 200 days ago: the number now resolves to
    // them at medium confidence only.
    let p = a_provisional_customer(&app, json!({"call_id": "c1"})).await;
    let db = app.state.engine.db();
    let long_ago = chrono::Utc::now() - chrono::Duration::days(200);
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE identities SET last_seen_at = $1",
        [long_ago.into()],
    ))
    .await
    .unwrap();

    // Act: two more calls from the number, each ended without naming anyone.
    for id in ["c2", "c3"] {
        app.start_call(start(id, "+14155551234")).await;
        let ended = app.end_call(json!({"call_id": id})).await;
        // Assert: the calls join that provisional customer; no new one is made.
        assert_eq!(ended["customer_ref"], p.as_str(), "{id}");
    }
    assert_eq!(app.count_rows("customers").await, 1);
    let export = app.get(&format!("/v1/customers/{p}")).await.body;
    assert_eq!(export["call_count"], 3);
}

async fn unnamed_calls_from_a_shared_number_create_no_customer_to_hide_the_named_ones(
    app: TestApp,
) {
    // A household line: two named customers on it, the first with more history.
    for (id, who) in [
        ("n1", "crm_1"),
        ("n2", "crm_1"),
        ("n3", "crm_1"),
        ("n4", "crm_2"),
    ] {
        app.start_call(start(id, "+14155551234")).await;
        app.end_call(json!({"call_id": id, "customer_ref": who}))
            .await;
    }

    // Act: three calls nobody names.
    for id in ["u1", "u2", "u3"] {
        app.start_call(start(id, "+14155551234")).await;
        let ended = app.end_call(json!({"call_id": id})).await;
        // The number belongs to people already: no provisional customer is made for it.
        assert!(ended["customer_ref"].is_null(), "{ended}");
    }

    // Assert: no customer was added, the named ones are left alone and still the answer.
    assert_eq!(app.count_rows("customers").await, 2);
    let named = app.get("/v1/customers/crm_1").await.body;
    assert_eq!(named["call_count"], 3);
    let next = app.start_call(start("u4", "+14155551234")).await;
    assert!(
        ["crm_1", "crm_2"].contains(&next["customer_ref"].as_str().unwrap_or_default()),
        "{next}"
    );
    // A number nobody has still gets a provisional customer, so its next call is known.
    app.start_call(start("v1", "+14155559876")).await;
    let fresh = app.end_call(json!({"call_id": "v1"})).await;
    assert!(
        fresh["customer_ref"].as_str().unwrap().starts_with("cust_"),
        "{fresh}"
    );
}

async fn naming_a_provisional_customer_merges_it_and_leaves_no_trace_on_the_old_ref(app: TestApp) {
    // The named customer already exists with another number and a variable.
    app.start_call(start("c0", "+14155550000")).await;
    app.end_call(json!({"call_id": "c0", "customer_ref": "crm_42",
                        "variables": {"tier": "gold", "language": "en"}}))
        .await;
    // A new number calls twice; the first end does not know who it is.
    let p = a_provisional_customer(
        &app,
        json!({"call_id": "c1", "intent": "refund", "variables": {"language": "es"}}),
    )
    .await;
    let second = app.start_call(start("c2", "+14155551234")).await;
    assert_eq!(second["customer_ref"], p.as_str());

    // Act: the second call's end names the customer.
    let ended = app
        .end_call(json!({"call_id": "c2", "customer_ref": "crm_42"}))
        .await;

    // Assert: merged, the old ref is gone, the number belongs to crm_42 only.
    assert_eq!(ended["customer_ref"], "crm_42");
    assert_eq!(ended["merged_from"], p.as_str());
    assert_eq!(
        app.get(&format!("/v1/customers/{p}")).await.status,
        StatusCode::NOT_FOUND
    );
    let found = app.get("/v1/customers?ani=%2B14155551234").await.body;
    assert_eq!(found["customers"].as_array().unwrap().len(), 1);
    assert_eq!(found["customers"][0]["customer_ref"], "crm_42");
    let export = app.get("/v1/customers/crm_42").await.body;
    assert_eq!(export["call_count"], 3);
    assert_eq!(export["calls"].as_array().unwrap().len(), 3);
    assert_eq!(export["variables"]["tier"], "gold");
    assert_eq!(
        export["variables"]["language"], "es",
        "the later value wins"
    );
    assert_eq!(export["intents"][0]["intent"], "refund");
    let ani = export["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["value"] == "+14155551234")
        .unwrap();
    assert_eq!(ani["call_count"], 2);
    let again = app.start_call(start("c3", "+14155551234")).await;
    assert_eq!(again["customer_ref"], "crm_42");
    assert_eq!(again["band"], "high");
    assert_eq!(again["candidates"], json!([]));
}

async fn naming_a_customer_keeps_apart_a_provisional_one_matched_only_at_low_confidence(
    app: TestApp,
) {
    // A provisional customer for a number, then a second call from that number whose start
    // matched them only at low confidence (as a conflicting CRM id or a number not heard from
    // in years would score it; set directly here).
    let p = a_provisional_customer(
        &app,
        json!({"call_id": "c1", "variables": {"language": "es"}}),
    )
    .await;
    let second = app.start_call(start("c2", "+14155551234")).await;
    assert_eq!(second["customer_ref"], p.as_str());
    use sea_orm::{ConnectionTrait, Statement};
    app.state.engine.move_open_calls().await.unwrap();
    let db = app.state.engine.db();
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "UPDATE calls SET band = 'low', confidence = 0.2 WHERE call_id = 'c2'",
    ))
    .await
    .unwrap();

    // Act: the end names someone.
    let ended = app
        .end_call(json!({"call_id": "c2", "customer_ref": "crm_77"}))
        .await;

    // Assert: the call is crm_77's; the provisional customer and their history stay apart.
    assert_eq!(ended["customer_ref"], "crm_77");
    assert_eq!(ended["merged_from"], Value::Null);
    let kept = app.get(&format!("/v1/customers/{p}")).await;
    assert_eq!(kept.status, StatusCode::OK);
    assert_eq!(kept.body["variables"]["language"], "es");
    let named = app.get("/v1/customers/crm_77").await.body;
    assert_eq!(named["variables"], json!({}));
    assert_eq!(named["calls"].as_array().unwrap().len(), 1);
}

async fn ends_from_two_sources_merge_in_either_order(app: TestApp) {
    for (call, agent_first) in [("c1", true), ("c2", false)] {
        app.start_call(start(call, "+14155551234")).await;
        let platform_end = json!({"call_id": call, "platform": "generic"});
        let agent_end = json!({"call_id": call, "customer_ref": "bob",
                               "intent": "moving", "summary": format!("agent summary {call}")});
        if agent_first {
            app.end_call(agent_end).await;
            app.end_call(platform_end).await;
        } else {
            app.end_call(platform_end).await;
            app.end_call(agent_end).await;
        }
        let stored = app.get(&format!("/v1/calls/{call}")).await.body;
        assert_eq!(stored["customer_ref"], "bob", "agent first: {agent_first}");
        assert_eq!(stored["summary"], format!("agent summary {call}"));
        assert_eq!(stored["intent"], "moving");
        assert_eq!(stored["status"], "ended");
    }
    let export = app.get("/v1/customers/bob").await.body;
    assert_eq!(export["call_count"], 2);
    let customers = app.get("/v1/customers?ani=4155551234").await.body;
    assert_eq!(customers["customers"].as_array().unwrap().len(), 1);
}

async fn a_resolved_intent_leaves_the_open_list(app: TestApp) {
    app.start_call(start("c1", "+14155551234")).await;
    app.end_call(json!({"call_id": "c1", "customer_ref": "a", "intent": "refund"}))
        .await;
    app.start_call(start("c2", "+14155551234")).await;
    app.end_call(json!({"call_id": "c2", "intent": "refund", "intent_status": "resolved"}))
        .await;
    let third = app.start_call(start("c3", "+14155551234")).await;
    assert_eq!(third["context"]["open_intents"], json!([]));
    assert_eq!(
        third["context"]["recent_calls"][0]["intent_status"],
        "resolved"
    );
}

async fn a_null_variable_removes_the_key(app: TestApp) {
    app.start_call(start("c1", "+14155551234")).await;
    app.end_call(json!({"call_id": "c1", "customer_ref": "a",
                        "variables": {"keep": 1, "drop": "x"}}))
        .await;
    app.end_call(json!({"call_id": "c1", "variables": {"drop": null, "keep": 2}}))
        .await;
    let next = app.start_call(start("c2", "+14155551234")).await;
    assert_eq!(next["context"]["variables"], json!({"keep": 2}));
}

async fn a_withheld_number_is_never_linked_or_matched(app: TestApp) {
    for (i, ani) in [
        "anonymous",
        "+266696687",
        "",
        "sip:anonymous@anonymous.invalid",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("w{i}");
        let r = app.start_call(start(&id, ani)).await;
        assert_eq!(r["band"], "low", "ani {ani:?}");
        assert_eq!(r["signals"][0]["signal"], "withheld_ani", "ani {ani:?}");
        let ended = app.end_call(json!({"call_id": id})).await;
        assert_eq!(ended["customer_ref"], Value::Null, "ani {ani:?}");
        assert_eq!(
            app.get(&format!("/v1/calls/{id}")).await.body["ani_withheld"],
            true
        );
    }
    assert_eq!(app.count_rows("identities").await, 0);
    assert_eq!(app.count_rows("customers").await, 0);
}

async fn a_number_shared_by_two_customers_is_medium_with_candidates(app: TestApp) {
    for (call, who) in [("c1", "mum"), ("c2", "dad")] {
        app.start_call(start(call, "+14155551234")).await;
        app.end_call(json!({"call_id": call, "customer_ref": who}))
            .await;
    }
    let r = app.start_call(start("c3", "+14155551234")).await;
    assert_eq!(r["band"], "medium");
    assert_eq!(r["recommended_action"], "verify");
    let signals: Vec<&str> = r["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["signal"].as_str().unwrap())
        .collect();
    assert!(signals.contains(&"shared_ani"), "{signals:?}");
    let best = r["customer_ref"].as_str().unwrap();
    let other = r["candidates"][0]["customer_ref"].as_str().unwrap();
    let mut both = [best, other];
    both.sort_unstable();
    assert_eq!(both, ["dad", "mum"]);
}

async fn an_external_id_match_is_high_without_a_number(app: TestApp) {
    app.start_call(
        json!({"call_id": "c1", "identity_hints": {"external_ids": {"crm_id": "crm_12345"}}}),
    )
    .await;
    app.end_call(json!({"call_id": "c1", "customer_ref": "cust_9"}))
        .await;
    let r = app
        .start_call(
            json!({"call_id": "c2", "identity_hints": {"external_ids": {"crm_id": "crm_12345"}}}),
        )
        .await;
    assert_eq!(r["customer_ref"], "cust_9");
    assert_eq!(r["band"], "high");
    assert_eq!(r["signals"][0]["signal"], "external_id_match");
}

async fn concurrent_ends_from_one_new_number_create_one_provisional_customer(app: TestApp) {
    let app = std::sync::Arc::new(app);
    let ends = (0..12).map(|i| {
        let app = app.clone();
        async move {
            app.end_call(json!({"call_id": format!("c{i}"),
                                "identity_hints": {"ani": "+14155551234"}}))
                .await["customer_ref"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    });
    let refs: Vec<String> = futures::future::join_all(ends).await;
    assert!(refs.iter().all(|r| r == &refs[0]), "{refs:?}");
    assert_eq!(app.count_rows("customers").await, 1);
    let export = app.get(&format!("/v1/customers/{}", refs[0])).await.body;
    assert_eq!(export["call_count"], 12);
}

async fn the_stored_call_can_be_read_back(app: TestApp) {
    app.start_call(json!({"call_id": "CA123", "platform": "twilio",
                          "identity_hints": {"ani": "tel:+1-415-555-1234", "dnis": "8005550100",
                                             "external_ids": {"crm_id": "7"}}}))
        .await;
    let r = app.get("/v1/calls/CA123").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["ani"], "+14155551234");
    assert_eq!(r.body["dnis"], "+18005550100");
    assert_eq!(r.body["platform"], "twilio");
    assert_eq!(r.body["status"], "in_progress");
    assert_eq!(r.body["external_ids"], json!({"crm_id": "7"}));
    insta::assert_json_snapshot!("stored_call", redacted(r.body));
    let missing = app.get("/v1/calls/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"]["code"], "call_not_found");
}

async fn an_end_before_its_start_is_kept_and_the_late_start_answers(app: TestApp) {
    app.end_call(json!({"call_id": "c1", "customer_ref": "zed",
                        "identity_hints": {"ani": "+14155551234"}, "summary": "early"}))
        .await;
    let late = app.start_call(start("c1", "+14155551234")).await;
    assert_eq!(late["customer_ref"], "zed");
    // The context is read while the start is recorded; recording this one rewrote the
    // customer's document (the call now has a start time), and the answer shows that.
    let recent = &late["context"]["recent_calls"][0];
    assert_eq!(recent["call_id"], "c1");
    assert!(recent["started_at"].is_string(), "{recent}");
    let stored = app.get("/v1/calls/c1").await.body;
    assert_eq!(stored["status"], "ended");
    assert_eq!(stored["summary"], "early");
    assert_eq!(stored["customer_ref"], "zed");
}

async fn summary_falls_back_to_the_summary_variable(app: TestApp) {
    app.start_call(start("c1", "+14155551234")).await;
    app.end_call(json!({"call_id": "c1", "variables": {"summary": "from variables"}}))
        .await;
    assert_eq!(
        app.get("/v1/calls/c1").await.body["summary"],
        "from variables"
    );
    app.end_call(json!({"call_id": "c1", "summary": "explicit",
                        "variables": {"summary": "ignored for the call"}}))
        .await;
    assert_eq!(app.get("/v1/calls/c1").await.body["summary"], "explicit");
}

async fn an_intent_status_without_any_intent_is_rejected_and_nothing_is_written(app: TestApp) {
    app.start_call(start("c1", "+14155551234")).await;
    let r = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "c1", "intent_status": "resolved",
                                       "variables": {"x": 1}}),
        )
        .await;
    // Well-formed, but this call has no intent to take a status: a conflict with its state.
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "no_intent");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`intent_status`"),
        "{}",
        r.body
    );
    assert_eq!(
        app.count_rows("customers").await,
        0,
        "the transaction rolled back"
    );
    assert_eq!(app.get("/v1/calls/c1").await.body["status"], "in_progress");
}

/// Ends are committed in groups: one that fails (after it already wrote, here a provisional
/// customer) is rolled back alone, and the ends committed with it keep everything.
async fn a_rejected_end_among_concurrent_ends_leaves_the_others_committed(app: TestApp) {
    let app = std::sync::Arc::new(app);
    for i in 0..16 {
        app.start_call(start(&format!("c{i}"), &format!("+1415555{:04}", 1000 + i)))
            .await;
    }
    let ends = (0..16).map(|i| {
        let app = app.clone();
        async move {
            let body = if i % 2 == 0 {
                json!({"call_id": format!("c{i}"), "variables": {"n": i}})
            } else {
                json!({"call_id": format!("c{i}"), "intent_status": "resolved",
                       "variables": {"n": i}})
            };
            (i, app.post("/v1/calls/end", body).await.status)
        }
    });
    for (i, status) in futures::future::join_all(ends).await {
        let expected = if i % 2 == 0 {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        };
        assert_eq!(status, expected, "end of c{i}");
    }
    assert_eq!(app.count_rows("customers").await, 8);
    for i in 0..16 {
        let call = app.get(&format!("/v1/calls/c{i}")).await.body;
        if i % 2 == 0 {
            assert_eq!(call["status"], "ended", "c{i}");
            assert_eq!(call["variables"]["n"], i, "c{i}");
        } else {
            assert_eq!(call["status"], "in_progress", "c{i}");
            assert_eq!(call["variables"], json!({}), "c{i}");
        }
    }
}

/// An import of `customers` customers (`imp-0`, `imp-1`, ...), started in the background and
/// given 20 ms: while it runs it holds the tenant's lock (on a SQLite file, the writer), so
/// that ends sent meanwhile queue and are then committed together.
async fn an_import_holding_the_tenant(
    app: &std::sync::Arc<TestApp>,
    tenant: sticky_core::engine::TenantId,
    customers: usize,
) -> tokio::task::JoinHandle<
    Result<sticky_core::engine::ImportReport, sticky_core::error::EngineError>,
> {
    let held = (0..customers)
        .map(|i| sticky_core::engine::ImportedCustomer {
            customer_ref: sticky_core::domain::CustomerRef::parse(&format!("imp-{i}")).unwrap(),
            identities: Vec::new(),
            variables: Default::default(),
            calls: Vec::new(),
            open_intents: Vec::new(),
        })
        .collect();
    let import = {
        let app = app.clone();
        tokio::spawn(async move { app.state.engine.import_customers(tenant, held).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    import
}

/// Ends queued behind an import (it holds the tenant's lock), so that on PostgreSQL they run in
/// batches, one transaction each (`end_batch.rs`), where what the batch read for an end may be
/// out of date once an end before it wrote: twelve calls naming one customer, two ends of one
/// call, six calls naming a reference nobody has yet, and another tenant's customer with the
/// same reference. Every count, variable and document comes out as if the ends had run one by
/// one.
async fn ends_committed_together_each_see_what_the_ones_before_wrote(app: TestApp) {
    const IMPORTED: usize = 20_000;
    let other = app.new_tenant("other").await;
    for key in [None, Some(other.as_str())] {
        let seed = json!({"call_id": "seed", "customer_ref": "vip",
                          "identity_hints": {"ani": "+14155550100"}});
        let reply = match key {
            Some(k) => app.post_as(k, "/v1/calls/end", seed).await,
            None => app.post("/v1/calls/end", seed).await,
        };
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    for i in 0..6 {
        app.end_call(
            json!({"call_id": format!("pre-seed{i}"), "customer_ref": format!("pre{i}"),
                            "identity_hints": {"ani": format!("+1415555{:04}", 6000 + i)},
                            "variables": {"kept": i}}),
        )
        .await;
    }
    let app = std::sync::Arc::new(app);
    let tenant = app.default_tenant().await;
    let import = an_import_holding_the_tenant(&app, tenant, IMPORTED).await;
    let ends = (0..38).map(|i| {
        let (app, other) = (app.clone(), other.clone());
        async move {
            let (key, body) = match i {
                0..12 => (None, json!({"call_id": format!("v{i}"), "customer_ref": "vip",
                                      "identity_hints": {"ani": "+14155550100"},
                                      "intent": format!("topic_{i}"),
                                      "variables": {format!("k{i}"): i}})),
                12 | 13 => (None, json!({"call_id": "twice", "customer_ref": "vip",
                                        "variables": {format!("k{i}"): i}})),
                14..20 => (None, json!({"call_id": format!("f{i}"), "customer_ref": "fresh",
                                       "identity_hints": {"ani": "+14155550199"},
                                       "variables": {"last": i}})),
                20..26 => (Some(other), json!({"call_id": format!("v{i}"), "customer_ref": "vip",
                                               "identity_hints": {"ani": "+14155550100"},
                                               "variables": {format!("k{i}"): i}})),
                // Customers of their own, known and new: their writes run together.
                26..32 => (None, json!({"call_id": format!("p{i}"),
                                       "customer_ref": format!("pre{}", i - 26),
                                       "identity_hints": {"ani": format!("+1415555{:04}", 5974 + i)},
                                       "intent": "renewal", "variables": {"n": i}})),
                _ => (None, json!({"call_id": format!("s{i}"), "customer_ref": format!("solo{i}"),
                                  "identity_hints": {"ani": format!("+1415555{:04}", 7000 + i)},
                                  "intent": "renewal", "variables": {"n": i}})),
            };
            let reply = match &key {
                Some(k) => app.post_as(k, "/v1/calls/end", body).await,
                None => app.post("/v1/calls/end", body).await,
            };
            (i, reply)
        }
    });
    for (i, reply) in futures::future::join_all(ends).await {
        assert_eq!(reply.status, StatusCode::OK, "end {i}: {}", reply.body);
    }
    import.await.unwrap().expect("imported");

    // The documents the ends stored (what the next start answers with) count every call.
    let stored_count = |customer_ref: String| {
        let app = app.clone();
        async move {
            use sea_orm::{ConnectionTrait, Statement};
            let db = app.state.engine.db();
            let body: String = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    format!(
                        "SELECT d.body FROM customer_contexts d JOIN customers c \
                         ON c.id = d.customer_id WHERE c.tenant_id = {} \
                         AND c.customer_ref = '{customer_ref}'",
                        tenant.0
                    ),
                ))
                .await
                .unwrap()
                .expect("a document")
                .try_get("", "body")
                .unwrap();
            serde_json::from_str::<Value>(&body).unwrap()["context"]["call_count"].clone()
        }
    };
    assert_eq!(stored_count("vip".into()).await, 14);
    assert_eq!(stored_count("fresh".into()).await, 6);
    for i in 26..38 {
        let (customer_ref, number, calls) = match i {
            26..32 => (format!("pre{}", i - 26), 5974 + i, 2),
            _ => (format!("solo{i}"), 7000 + i, 1),
        };
        assert_eq!(
            stored_count(customer_ref.clone()).await,
            calls,
            "{customer_ref}"
        );
        let next = app
            .start_call(start(&format!("next-{i}"), &format!("+1415555{number:04}")))
            .await;
        assert_eq!(next["customer_ref"], *customer_ref, "{next}");
        let context = &next["context"];
        assert_eq!(context["call_count"], calls, "{context}");
        assert_eq!(context["variables"]["n"], i, "{context}");
        if calls == 2 {
            assert_eq!(context["variables"]["kept"], i - 26, "{context}");
        }
        assert_eq!(context["open_intents"][0]["intent"], "renewal", "{context}");
    }

    // The default tenant's customer: the seed, twelve calls and the one called twice.
    let vip = app.get("/v1/customers/vip").await.body;
    assert_eq!(vip["call_count"], 14, "{vip}");
    let known = app.start_call(start("next-vip", "+14155550100")).await;
    assert_eq!(known["customer_ref"], "vip", "{known}");
    let context = &known["context"];
    assert_eq!(context["call_count"], 14, "{context}");
    for i in 0..14 {
        assert_eq!(context["variables"][format!("k{i}")], i, "k{i}: {context}");
    }
    assert_eq!(
        context["open_intents"].as_array().map(Vec::len),
        Some(12),
        "{context}"
    );
    let twice = app.get("/v1/calls/twice").await.body;
    assert_eq!(twice["variables"], json!({"k12": 12, "k13": 13}), "{twice}");

    // One customer for the new reference, counted once for each of its six calls.
    let fresh = app.get("/v1/customers/fresh").await.body;
    assert_eq!(fresh["call_count"], 6, "{fresh}");
    assert_eq!(
        app.count_rows("customers").await,
        2 + 1 + 6 + 6 + IMPORTED as i64
    );
    let next = app.start_call(start("next-fresh", "+14155550199")).await;
    assert_eq!(next["customer_ref"], "fresh", "{next}");
    assert_eq!(next["context"]["call_count"], 6, "{next}");

    // The other tenant's customer of the same reference: only its own six ends.
    let theirs = app
        .send("GET", "/v1/customers/vip", Some(&other), None)
        .await;
    assert_eq!(theirs.body["call_count"], 7, "{}", theirs.body);
    let mut variables: Vec<&String> = theirs.body["variables"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    variables.sort();
    assert_eq!(variables.len(), 6, "{}", theirs.body);
}

/// A fault injected into the database (a trigger that refuses the call rows of `doomed-*`
/// calls) makes those ends fail after they wrote their provisional customer, identity and
/// variables. On SQLite the ends committed in one group with them run again without them
/// (`lite.rs`, `Guard`); on both databases nothing of a failed end remains and every other end
/// keeps everything.
async fn an_end_that_fails_after_writing_leaves_nothing_and_the_others_keep_everything(
    app: TestApp,
) {
    const IMPORTED: usize = 20_000;
    use sea_orm::ConnectionTrait;
    let db = app.state.engine.db();
    let backend = db.get_database_backend();
    let statements: &[&str] = match backend {
        sea_orm::DbBackend::Postgres => &[
            "CREATE FUNCTION doom() RETURNS trigger AS $$ BEGIN \
             IF NEW.call_id LIKE 'doomed-%' THEN RAISE EXCEPTION 'injected failure'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER doom BEFORE INSERT ON calls FOR EACH ROW EXECUTE FUNCTION doom()",
        ],
        _ => &[
            "CREATE TRIGGER doom BEFORE INSERT ON calls WHEN NEW.call_id LIKE 'doomed-%' \
                BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        ],
    };
    for sql in statements {
        db.execute_raw(sea_orm::Statement::from_string(backend, *sql))
            .await
            .expect("fault injected");
    }
    let app = std::sync::Arc::new(app);
    // A large import keeps the SQLite writer busy while the ends queue, so that they are
    // committed as one group (its rerun is what this test is about).
    let tenant = app.default_tenant().await;
    let import = an_import_holding_the_tenant(&app, tenant, IMPORTED).await;
    let ends = (0..16).map(|i| {
        let app = app.clone();
        async move {
            let call_id = if i % 2 == 0 {
                format!("c{i}")
            } else {
                format!("doomed-{i}")
            };
            let body = json!({"call_id": call_id, "identity_hints": {"ani": format!("+1415555{:04}", 2000 + i)},
                              "intent": "billing", "variables": {"n": i}});
            (i, call_id, app.post("/v1/calls/end", body).await.status)
        }
    });
    for (i, call_id, status) in futures::future::join_all(ends).await {
        if i % 2 == 0 {
            assert_eq!(status, StatusCode::OK, "end of {call_id}");
        } else {
            assert!(status.is_server_error(), "end of {call_id}: {status}");
        }
    }
    import.await.unwrap().expect("imported");
    assert_eq!(app.count_rows("customers").await, 8 + IMPORTED as i64);
    for table in ["identities", "variables", "intents", "calls"] {
        assert_eq!(app.count_rows(table).await, 8, "rows of {table}");
    }
    for i in 0..16 {
        if i % 2 == 0 {
            let call = app.get(&format!("/v1/calls/c{i}")).await.body;
            assert_eq!(call["variables"]["n"], i, "c{i}");
            let next = app
                .start_call(start(
                    &format!("next-{i}"),
                    &format!("+1415555{:04}", 2000 + i),
                ))
                .await;
            assert_eq!(next["context"]["variables"]["n"], i, "c{i}");
        } else {
            let r = app.get(&format!("/v1/calls/doomed-{i}")).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "doomed-{i}");
        }
    }
}

async fn an_answered_start_survives_a_restart_and_its_end_stores_it_once(app: TestApp) {
    app.start_call(start("c1", "+14155551234")).await;
    app.end_call(json!({"call_id": "c1", "customer_ref": "alice"}))
        .await;
    let first = app.start_call(start("c2", "+14155551234")).await;
    assert_eq!(first["customer_ref"], "alice");
    let other = app.new_tenant("other").await;

    // Act: another process on the same database, as after a crash of this one.
    let app = app.restarted().await;

    // Assert: the answered start is there: it can be read, it is the tenant's only, a retry
    // replays it.
    let call = app.get("/v1/calls/c2").await;
    assert_eq!(call.status, StatusCode::OK);
    assert_eq!(call.body["status"], "in_progress");
    assert_eq!(call.body["matched_customer_ref"], "alice");
    let elsewhere = app.send("GET", "/v1/calls/c2", Some(&other), None).await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    assert_eq!(app.count_calls().await, 2);
    assert_eq!(app.start_call(start("c2", "+14155551234")).await, first);
    assert_eq!(app.count_calls().await, 2);
    // Its end stores the call once, with the start's match.
    app.end_call(json!({"call_id": "c2", "summary": "second"}))
        .await;
    assert_eq!(app.count_calls().await, 2);
    assert_eq!(app.count_rows("calls").await, 2);
    let call = app.get("/v1/calls/c2").await.body;
    assert_eq!(call["status"], "ended");
    assert_eq!(call["matched_customer_ref"], "alice");
    assert_eq!(call["customer_ref"], "alice");
    assert_eq!(call["confidence"], first["confidence"]);
    assert_eq!(app.state.engine.open_calls(), 0);
}

async fn a_merge_carries_the_calls_still_open_that_matched_the_merged_customer(app: TestApp) {
    // A named customer; a provisional one, and two calls from their number that have not
    // ended.
    app.start_call(start("c0", "+14155559999")).await;
    app.end_call(json!({"call_id": "c0", "customer_ref": "crm_9"}))
        .await;
    let p = a_provisional_customer(&app, json!({"call_id": "c1"})).await;
    for id in ["c2", "c3"] {
        assert_eq!(
            app.start_call(start(id, "+14155551234")).await["customer_ref"],
            p.as_str()
        );
    }

    // Act: one of them ends naming the customer, which merges the provisional one.
    let ended = app
        .end_call(json!({"call_id": "c2", "customer_ref": "crm_9"}))
        .await;

    // Assert: the other open call now matches the named customer, and is in their export.
    assert_eq!(ended["merged_from"], p.as_str());
    let open = app.get("/v1/calls/c3").await.body;
    assert_eq!(open["status"], "in_progress");
    assert_eq!(open["matched_customer_ref"], "crm_9");
    let export = app.get("/v1/customers/crm_9").await.body;
    let calls: Vec<&str> = export["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(calls, ["c0", "c1", "c2", "c3"]);
    assert_eq!(app.count_calls().await, 4);
}

/// A due time is kept as both databases can store it: to the microsecond, and a leap second
/// as the second after it. The start's answer (the stored document) and the export (the
/// tables) agree.
async fn a_due_time_reads_back_alike_on_both_databases(app: TestApp) {
    let ani = "+14155550432";
    for (call_id, intent, due) in [
        ("due-1", "callback_leap", "2030-12-31T23:59:60Z"),
        ("due-2", "callback_fine", "2030-12-05T15:00:00.123456789Z"),
    ] {
        app.end_call(
            json!({"call_id": call_id, "customer_ref": "lea", "intent": intent,
            "intent_due_at": due, "identity_hints": {"ani": ani}}),
        )
        .await;
    }
    let want = [
        ("callback_leap", "2031-01-01T00:00:00+00:00"),
        ("callback_fine", "2030-12-05T15:00:00.123456+00:00"),
    ];
    let export = app.get("/v1/customers/lea").await.body;
    let answer = app
        .start_call(json!({"call_id": "due-3", "identity_hints": {"ani": ani}}))
        .await;
    for (intents, what) in [
        (&export["intents"], "export"),
        (&answer["context"]["open_intents"], "start"),
    ] {
        for (intent, due) in want {
            let found = intents
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["intent"] == intent)
                .unwrap_or_else(|| panic!("{what}: {intent} in {intents}"));
            assert_eq!(found["due_at"], due, "{what}: {found}");
        }
    }
}

async fn callbacks_are_listed_first_with_where_they_stand(app: TestApp) {
    let now = chrono::Utc::now();
    let at = |minutes: i64| (now + chrono::Duration::minutes(minutes)).to_rfc3339();
    let ani = "+14155550431";
    // Each end touches one intent; the latest touched (`billing`) would rank first without
    // callbacks.
    let ends = [
        ("cb-1", "callback_later", Some(at(24 * 60))),
        ("cb-2", "callback_missed", Some(at(-90))),
        ("cb-3", "callback_soon", Some(at(20))),
        ("cb-4", "billing", None),
    ];
    for (call_id, intent, due) in ends {
        let mut end = json!({"call_id": call_id, "customer_ref": "kim", "intent": intent,
            "identity_hints": {"ani": ani}});
        if let Some(due) = due {
            end["intent_due_at"] = json!(due);
        }
        app.end_call(end).await;
    }
    let answer = app.start_call(start("cb-5", ani)).await;
    let listed: Vec<(String, Value)> = answer["context"]["open_intents"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|i| (i["intent"].as_str().unwrap().to_owned(), i["state"].clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("callback_missed".to_owned(), json!("overdue")),
            ("callback_soon".to_owned(), json!("due")),
            ("callback_later".to_owned(), json!("open")),
            ("billing".to_owned(), Value::Null),
        ],
        "{answer}"
    );
    let soon = &answer["context"]["open_intents"][1];
    let due_at = chrono::DateTime::parse_from_rfc3339(soon["due_at"].as_str().unwrap()).unwrap();
    assert!(
        (due_at.with_timezone(&chrono::Utc) - (now + chrono::Duration::minutes(20)))
            .num_seconds()
            .abs()
            <= 1,
        "{soon}"
    );
    assert!(
        answer["context"]["open_intents"][3].get("due_at").is_none(),
        "{answer}"
    );
    // The customer's record carries the due times, without a state.
    let kim = app.get("/v1/customers/kim").await.body;
    let missed = kim["intents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["intent"] == "callback_missed")
        .unwrap();
    assert!(missed["due_at"].is_string(), "{kim}");
    assert!(missed.get("state").is_none(), "{kim}");
    // The missed callback is made: it leaves the list. A later reopening without a due time
    // is no callback any more.
    app.end_call(json!({"call_id": "cb-5", "customer_ref": "kim",
        "intent": "callback_missed", "intent_status": "resolved"}))
        .await;
    app.end_call(json!({"call_id": "cb-6", "customer_ref": "kim",
        "intent": "callback_soon", "intent_status": "resolved"}))
        .await;
    app.end_call(json!({"call_id": "cb-7", "customer_ref": "kim",
        "intent": "callback_soon", "intent_status": "open"}))
        .await;
    let next = app.start_call(start("cb-8", ani)).await;
    let names: Vec<&str> = next["context"]["open_intents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["intent"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["callback_later", "callback_soon", "billing"],
        "{next}"
    );
    assert!(
        next["context"]["open_intents"][1].get("due_at").is_none(),
        "{next}"
    );
    // Another tenant calling from the same number sees none of it.
    let other = app.new_tenant("other-cb").await;
    let theirs = app
        .post_as(&other, "/v1/calls/start", start("cb-9", ani))
        .await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.body);
    assert!(theirs.body["context"].is_null(), "{}", theirs.body);
}

async fn a_variable_with_a_time_to_live_is_forgotten_when_it_expires(app: TestApp) {
    let ani = "+14155550432";
    app.end_call(json!({"call_id": "ttl-1", "customer_ref": "lee",
        "identity_hints": {"ani": ani},
        "variables": {"otp_verified": true, "offer": "10off", "tier": "gold"},
        "variable_ttl_seconds": {"otp_verified": 1, "offer": 86400}}))
        .await;
    let fresh = app.start_call(start("ttl-2", ani)).await;
    assert_eq!(
        fresh["context"]["variables"],
        json!({"otp_verified": true, "offer": "10off", "tier": "gold"}),
        "{fresh}"
    );
    assert!(
        fresh["context"].get("variable_expiry").is_none(),
        "expiry times are not part of an answer: {fresh}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = app.start_call(start("ttl-3", ani)).await;
    assert_eq!(
        later["context"]["variables"],
        json!({"offer": "10off", "tier": "gold"}),
        "{later}"
    );
    let lee = app.get("/v1/customers/lee").await.body;
    assert_eq!(
        lee["variables"],
        json!({"offer": "10off", "tier": "gold"}),
        "{lee}"
    );
    // The sweep deletes the expired row, and only it; the next answers say the same.
    let swept = app
        .state
        .engine
        .sweep_expired_variables(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(swept, 1);
    let after = app.start_call(start("ttl-4", ani)).await;
    assert_eq!(
        after["context"]["variables"],
        json!({"offer": "10off", "tier": "gold"}),
        "{after}"
    );
    // Saved again without a time to live, the offer is kept for good.
    app.end_call(
        json!({"call_id": "ttl-4", "customer_ref": "lee", "variables": {"offer": "20off"}}),
    )
    .await;
    let in_two_days = chrono::Utc::now() + chrono::Duration::days(2);
    assert_eq!(
        app.state
            .engine
            .sweep_expired_variables(in_two_days)
            .await
            .unwrap(),
        0
    );
    let kept = app.get("/v1/customers/lee").await.body;
    assert_eq!(kept["variables"]["offer"], "20off", "{kept}");
    assert_eq!(
        app.state
            .engine
            .context_documents_out_of_date(app.default_tenant().await)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    // Another tenant calling from the same number sees none of it.
    let other = app.new_tenant("other-ttl").await;
    let theirs = app
        .post_as(&other, "/v1/calls/start", start("ttl-5", ani))
        .await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.body);
    assert!(theirs.body["context"].is_null(), "{}", theirs.body);
}

async fn a_time_to_live_alone_gives_a_saved_variable_an_expiry(app: TestApp) {
    let ani = "+14155550433";
    app.end_call(json!({"call_id": "rt-1", "customer_ref": "kim",
        "identity_hints": {"ani": ani},
        "variables": {"otp_verified": true, "offer": "10off", "tier": "gold"}}))
        .await;
    // Another tenant's customer of the same reference: its time to live touches only its own.
    let other = app.new_tenant("other-rt").await;
    let theirs = app
        .post_as(
            &other,
            "/v1/calls/end",
            json!({"call_id": "rt-9", "customer_ref": "kim",
                "variable_ttl_seconds": {"tier": 1, "offer": 1}}),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.body);
    // A later end names only times to live: `otp_verified` (saved) expires, `ghost` (never
    // saved) is nothing to expire, `offer` is removed by the same end and stays removed.
    app.end_call(json!({"call_id": "rt-2", "customer_ref": "kim",
        "variables": {"offer": null},
        "variable_ttl_seconds": {"otp_verified": 1, "ghost": 60, "offer": 60}}))
        .await;
    let fresh = app.start_call(start("rt-3", ani)).await;
    assert_eq!(
        fresh["context"]["variables"],
        json!({"otp_verified": true, "tier": "gold"}),
        "{fresh}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = app.start_call(start("rt-4", ani)).await;
    assert_eq!(
        later["context"]["variables"],
        json!({"tier": "gold"}),
        "{later}"
    );
    let kim = app.get("/v1/customers/kim").await.body;
    assert_eq!(kim["variables"], json!({"tier": "gold"}), "{kim}");
    assert_eq!(
        app.state
            .engine
            .context_documents_out_of_date(app.default_tenant().await)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    // An earlier call's end that arrives late does not re-time what a later call saved.
    app.start_call(start("rt-5", ani)).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.start_call(start("rt-6", ani)).await;
    app.end_call(json!({"call_id": "rt-6", "customer_ref": "kim", "variables": {"pin": "ok"}}))
        .await;
    app.end_call(json!({"call_id": "rt-5", "customer_ref": "kim",
        "variable_ttl_seconds": {"pin": 1}}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let kept = app.get("/v1/customers/kim").await.body;
    assert_eq!(
        kept["variables"],
        json!({"tier": "gold", "pin": "ok"}),
        "{kept}"
    );
}
