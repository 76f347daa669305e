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
    an_end_applies_its_changes_to_the_document_in_every_order,
    a_customer_without_a_document_is_answered_from_the_tables_and_gets_one,
    a_document_of_an_older_format_is_not_sent_and_is_rebuilt,
    a_damaged_document_is_an_error_not_an_answer,
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

/// Runs a statement on the database directly (an older version's data, say).
async fn execute(app: &TestApp, sql: &str) {
    let db = app.state.engine.db();
    db.execute_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap();
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
fn awkward_name(i: u32) -> String {
    format!("Awkward {i}\t\\N \\ \\t x\r\ny,\"é\"")
}

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
            // What the text formats of bulk loading escape: tab, newline, return,
            // backslash, and what reads as null.
            ("name".to_owned(), json!(awkward_name(i))),
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
                summary: (k != 7).then(|| format!("call {k}\t\\N\n\\")),
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
    assert_eq!(r["context"]["variables"]["name"], awkward_name(0).as_str());
    assert_eq!(
        r["context"]["recent_calls"][0]["summary"], "call 6\t\\N\n\\",
        "{r}"
    );

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
    execute(&app, "DELETE FROM customer_contexts").await;
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

/// Format 2 documents wrote timestamps as chrono's serde does (`Z`); a start sends the
/// stored context as it is, so it must never send one of those: it answers from the tables in
/// the API's form (`+00:00`) and the document is written again in the current format.
async fn a_document_of_an_older_format_is_not_sent_and_is_rebuilt(app: TestApp) {
    app.end_call(json!({"call_id": "c1", "customer_ref": "alice",
        "identity_hints": {"ani": "+14155550100"}, "intent": "refund",
        "variables": {"plan": "gold"}}))
        .await;
    let db = app.state.engine.db();
    let backend = db.get_database_backend();
    let format = || async {
        db.query_one_raw(Statement::from_string(
            backend,
            "SELECT format, body FROM customer_contexts",
        ))
        .await
        .unwrap()
        .map(|r| {
            (
                r.try_get::<i32>("", "format").unwrap(),
                r.try_get::<String>("", "body").unwrap(),
            )
        })
        .unwrap()
    };
    let context_of = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["context"].to_string()
    };
    let (current, body) = format().await;
    assert!(context_of(&body).contains("+00:00\""), "{body}");
    execute(
        &app,
        "UPDATE customer_contexts SET format = 2, body = REPLACE(body, '+00:00\"', 'Z\"')",
    )
    .await;
    assert_eq!(out_of_date(&app).await, vec!["alice".to_owned()]);

    let r = app
        .start_call(json!({"call_id": "c2", "identity_hints": {"ani": "+14155550100"}}))
        .await;
    assert_eq!(r["customer_ref"], "alice");
    let context = &r["context"];
    for at in [
        &context["last_seen_at"],
        &context["first_seen_at"],
        &context["recent_calls"][0]["ended_at"],
        &context["open_intents"][0]["opened_at"],
    ] {
        assert!(
            at.as_str().is_some_and(|t| t.ends_with("+00:00")),
            "{context}"
        );
    }
    for _ in 0..200 {
        if format().await.0 == current {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (rebuilt, body) = format().await;
    assert_eq!(rebuilt, current);
    assert!(!context_of(&body).contains("Z\""), "{body}");
    assert_eq!(out_of_date(&app).await, Vec::<String>::new());
}

/// A start sends the stored context without decoding it, but never something that is not a
/// context object: a damaged document is an internal error, as it was when decoded.
async fn a_damaged_document_is_an_error_not_an_answer(app: TestApp) {
    app.end_call(json!({"call_id": "c1", "customer_ref": "alice",
        "identity_hints": {"ani": "+14155550100"}}))
        .await;
    execute(
        &app,
        r#"UPDATE customer_contexts SET body = '{"customer_ref":"alice","context":"oops"}'"#,
    )
    .await;
    let r = app
        .post(
            "/v1/calls/start",
            json!({"call_id": "c2", "identity_hints": {"ani": "+14155550100"}}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 500, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "internal_error");
    assert!(!r.body.to_string().contains("oops"), "{}", r.body);
}

/// A customer whose calls end at the same instant, or in the future (an import from a system
/// with another clock): an end cannot place its call among the latest from the document alone.
fn clock_skewed_customer() -> ImportedCustomer {
    let later = sticky_core::now() + Duration::days(2);
    ImportedCustomer {
        customer_ref: CustomerRef::parse("skewed").unwrap(),
        identities: vec![ImportedIdentity::Ani(
            PhoneNumber::parse("+14155550177", DefaultRegion::default()).unwrap(),
        )],
        variables: [("plan".to_owned(), json!("silver"))].into(),
        calls: (0..3)
            .map(|k| ImportedCall {
                call_id: format!("skew-{k}"),
                platform: "generic".into(),
                started_at: later - Duration::hours(1),
                ended_at: if k == 0 {
                    later + Duration::hours(1)
                } else {
                    later
                },
                intent: None,
                intent_status: None,
                summary: Some(format!("skewed {k}")),
            })
            .collect(),
        open_intents: vec![IntentName::parse("late").unwrap()],
    }
}

/// The usual end rewrites the customer's document from what it changed (`after_end`), not
/// from the tables: every case where the order of the latest calls or open intents could
/// come out differently is checked against the tables.
async fn an_end_applies_its_changes_to_the_document_in_every_order(app: TestApp) {
    let t = tenant(&app).await;
    app.state
        .engine
        .import_customers(t, vec![awkward_customer(0), clock_skewed_customer()])
        .await
        .unwrap();
    let steps = [
        // A new call of a customer with a full history.
        json!({"call_id": "e1", "customer_ref": "awk-0", "summary": "one",
            "variables": {"vip": null, "n": 1}}),
        // The same call again: new summary, intent opened, a variable changed.
        json!({"call_id": "e1", "customer_ref": "awk-0", "summary": "one, again",
            "intent": "topic-22", "variables": {"n": 2}}),
        // Its intent resolved through the call's own intent.
        json!({"call_id": "e1", "customer_ref": "awk-0", "intent_status": "resolved"}),
        // An old call of theirs (not among the latest) ended again.
        json!({"call_id": "awk-0-0", "customer_ref": "awk-0", "summary": "amended"}),
        // A call that is among the latest, ended again.
        json!({"call_id": "awk-0-6", "customer_ref": "awk-0", "summary": "amended too",
            "intent": "topic-0", "intent_status": "resolved"}),
        // Calls of a customer whose calls end at the same instant and in the future.
        json!({"call_id": "e2", "customer_ref": "skewed", "intent": "early"}),
        json!({"call_id": "skew-1", "customer_ref": "skewed", "summary": "tie"}),
        // A call ended with nothing to link it to, then another call of the customer, then
        // the first named: it goes in below the second (its end time is the earlier one).
        json!({"call_id": "e7", "summary": "nobody yet"}),
        json!({"call_id": "e8", "customer_ref": "awk-0", "summary": "in between"}),
        json!({"call_id": "e7", "customer_ref": "awk-0"}),
        // A new customer, by name, and by number only (a provisional one).
        json!({"call_id": "e3", "customer_ref": "fresh", "identity_hints": {"ani": "+14155550188"}}),
        json!({"call_id": "e4", "customer_ref": "fresh", "variables": {"a": [1, 2.5, "x"]}}),
        // Intents of a customer who had none: opened, one resolved from the middle, the
        // oldest touched again (it moves first), a resolved one opened again.
        json!({"call_id": "f1", "customer_ref": "fresh", "intent": "a1"}),
        json!({"call_id": "f2", "customer_ref": "fresh", "intent": "a2"}),
        json!({"call_id": "f3", "customer_ref": "fresh", "intent": "a3"}),
        json!({"call_id": "f4", "customer_ref": "fresh", "intent": "a2", "intent_status": "resolved"}),
        json!({"call_id": "f5", "customer_ref": "fresh", "intent": "a1"}),
        json!({"call_id": "f6", "customer_ref": "fresh", "intent": "a2"}),
        json!({"call_id": "f7", "customer_ref": "fresh", "intent": "a2", "intent_status": "resolved"}),
        json!({"call_id": "e5", "identity_hints": {"ani": "+14155550199"}, "summary": "who?"}),
        json!({"call_id": "e6", "identity_hints": {"ani": "+14155550199"}, "summary": "again"}),
    ];
    for (i, step) in steps.into_iter().enumerate() {
        app.end_call(step.clone()).await;
        assert_eq!(
            out_of_date(&app).await,
            Vec::<String>::new(),
            "after step {i}: {step}"
        );
    }

    // A start that arrives after its call's end adds its start time to that call, which the
    // customer's latest calls show: the document and the cached context follow.
    let before = app
        .start_call(json!({"call_id": "s1", "identity_hints": {"ani": "+14155550188"}}))
        .await;
    assert_eq!(before["customer_ref"], "fresh");
    app.end_call(json!({"call_id": "late-start", "customer_ref": "fresh"}))
        .await;
    let r = app
        .start_call(json!({"call_id": "late-start", "identity_hints": {"ani": "+14155550188"}}))
        .await;
    assert_eq!(r["customer_ref"], "fresh");
    assert_eq!(
        out_of_date(&app).await,
        Vec::<String>::new(),
        "after a late start"
    );
    let r = app
        .start_call(json!({"call_id": "s2", "identity_hints": {"ani": "+14155550188"}}))
        .await;
    let latest = &r["context"]["recent_calls"][0];
    assert_eq!(latest["call_id"], "late-start");
    assert!(latest["started_at"].is_string(), "{latest}");
}
