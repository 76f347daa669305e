//! Who a caller is: numbers written the way each region writes them, lines that several
//! customers share.

use poem::http::StatusCode;
use serde_json::json;
use sticky_calls_tests::TestApp;

backend_tests!(
    numbers_are_read_in_the_configured_region,
    on_a_shared_line_the_caller_heard_from_last_ranks_first,
    a_number_in_doubt_is_not_greeted_by_name,
    erasure_by_number_removes_what_was_kept_for_it_and_nothing_else,
    a_caller_without_consent_is_not_remembered_and_their_number_is_forgotten,
    a_late_end_of_an_earlier_call_never_overwrites_what_a_later_call_saved,
    sensitive_variables_are_returned_only_at_high_confidence,
    calls_past_the_retention_period_are_swept,
    a_long_retention_sweep_deletes_every_old_call_chunk_by_chunk,
    a_call_moved_to_another_customer_takes_its_number_along,
    a_provisional_customer_is_merged_only_when_the_call_was_theirs,
);

async fn numbers_are_read_in_the_configured_region(app: TestApp) {
    let stopped = app.stop();
    let mut settings = stopped.settings();
    settings.default_region = "GB".parse().unwrap();
    let app = stopped.start_with(settings).await;
    // A Leeds number in its national form, then from abroad with the international prefix.
    app.end_call(json!({"call_id": "leeds-1", "customer_ref": "leeds",
        "identity_hints": {"ani": "0113 496 0000"}}))
        .await;
    assert_eq!(
        app.get("/v1/calls/leeds-1").await.body["ani"],
        "+441134960000"
    );
    let again = app
        .start_call(json!({"call_id": "leeds-2", "identity_hints": {"ani": "00 44 113 496 0000"}}))
        .await;
    assert_eq!(again["customer_ref"], "leeds", "{again}");
    let plus = app
        .start_call(json!({"call_id": "leeds-3", "identity_hints": {"ani": "+44 113 496 0000"}}))
        .await;
    assert_eq!(plus["customer_ref"], "leeds", "{plus}");
    let found = app.get("/v1/customers?ani=01134960000").await.body;
    assert_eq!(found["customers"][0]["customer_ref"], "leeds", "{found}");
}

async fn on_a_shared_line_the_caller_heard_from_last_ranks_first(app: TestApp) {
    for (i, who) in ["oldest", "middle", "latest"].iter().enumerate() {
        app.end_call(json!({"call_id": format!("home-{i}"), "customer_ref": who,
            "identity_hints": {"ani": "+14155550700"}}))
            .await;
    }
    let r = app
        .start_call(json!({"call_id": "home-next", "identity_hints": {"ani": "+14155550700"}}))
        .await;
    assert_eq!(r["customer_ref"], "latest", "{r}");
    assert_eq!(r["band"], "medium", "a shared line is never high: {r}");
    let candidates = r["candidates"].as_array().unwrap();
    let refs: Vec<&str> = candidates
        .iter()
        .map(|c| c["customer_ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["middle", "oldest"], "{r}");
    for c in candidates {
        assert_eq!(c["confidence"], r["confidence"], "equals: {r}");
        assert_eq!(c["calls"], 1);
    }
    // The list says why: each was last seen before the one ahead of it.
    let seen: Vec<&str> = candidates
        .iter()
        .map(|c| c["last_seen_at"].as_str().unwrap())
        .collect();
    assert!(seen[0] > seen[1], "{r}");
}

async fn a_number_in_doubt_is_not_greeted_by_name(app: TestApp) {
    app.end_call(json!({"call_id": "real-1", "customer_ref": "gina",
        "identity_hints": {"ani": "+14155550800"}, "variables": {"name": "Gina"}}))
        .await;
    let start = |id: &str, attestation: Option<&str>| {
        let mut hints = json!({"ani": "+14155550800"});
        if let Some(a) = attestation {
            hints["attestation"] = json!(a);
        }
        json!({"call_id": id, "identity_hints": hints})
    };
    let full = app.start_call(start("att-a", Some("A"))).await;
    assert_eq!(full["band"], "high", "{full}");
    let none = app.start_call(start("att-none", None)).await;
    assert_eq!(none["band"], "high", "no verdict keeps the weight: {none}");
    let partial = app.start_call(start("att-b", Some("B"))).await;
    assert_eq!(partial["band"], "medium", "{partial}");
    assert_eq!(partial["recommended_action"], "verify");
    assert!(
        partial["signals"].to_string().contains("attestation"),
        "{partial}"
    );
    let spoofed = app.start_call(start("att-failed", Some("failed"))).await;
    assert_eq!(spoofed["band"], "low", "{spoofed}");
    assert!(spoofed["customer_ref"].is_null(), "{spoofed}");
    assert!(
        spoofed["context"].is_null(),
        "no memory for a spoofed number: {spoofed}"
    );
    let bad = app
        .post("/v1/calls/start", start("att-bad", Some("D")))
        .await;
    assert!(bad.status.is_client_error(), "{}", bad.body);
    assert!(
        bad.body["error"]["field"]
            .as_str()
            .unwrap_or_default()
            .contains("attestation"),
        "{}",
        bad.body
    );

    // Twilio passes the carrier's verdict as StirVerstat.
    let form = |sid: &str, verstat: &str| {
        format!(
            "CallSid={sid}&From=%2B14155550800&To=%2B18005550100&CallStatus=ringing&Direction=inbound&StirVerstat={verstat}"
        )
    };
    let headers = vec![
        ("authorization", format!("Bearer {}", app.key)),
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];
    let url = "/v1/connectors/twilio/start?next=https%3A%2F%2Fa.example%2Fv";
    let r = app
        .send_raw(url, &headers, form("CAatt1", "TN-Validation-Failed-A"))
        .await;
    assert!(r.text.contains("sticky_band=low"), "{}", r.text);
    let r = app
        .send_raw(url, &headers, form("CAatt2", "TN-Validation-Passed-A"))
        .await;
    assert!(r.text.contains("sticky_band=high"), "{}", r.text);
}

async fn erasure_by_number_removes_what_was_kept_for_it_and_nothing_else(app: TestApp) {
    // A provisional customer known only by the number, a named one who also called from it
    // and from elsewhere, and another tenant's caller on the same number; a call from the
    // number that has not ended.
    app.start_call(json!({"call_id": "n-1", "identity_hints": {"ani": "+14155550950"}}))
        .await;
    app.end_call(
        json!({"call_id": "n-1", "identity_hints": {"ani": "+14155550950"},
        "summary": "forget this call", "intent": "billing", "variables": {"x": "forget"}}),
    )
    .await;
    app.end_call(json!({"call_id": "n-2", "customer_ref": "hana",
        "identity_hints": {"ani": "+14155550950", "external_ids": {"crm_id": "crm-hana"}},
        "summary": "also from the number", "intent": "refund"}))
        .await;
    app.end_call(json!({"call_id": "n-3", "customer_ref": "hana",
        "identity_hints": {"ani": "+14155550951"}, "summary": "from her own line"}))
        .await;
    let other = app.new_tenant("other").await;
    app.end_call_as(
        &other,
        json!({"call_id": "n-9", "customer_ref": "them",
            "identity_hints": {"ani": "+14155550950"}, "summary": "their memory"}),
    )
    .await;

    app.start_call(json!({"call_id": "n-0", "identity_hints": {"ani": "+14155550950"}}))
        .await;

    let r = app.delete("/v1/customers?ani=(415)%20555-0950").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let deleted = &r.body["deleted"];
    assert_eq!(deleted["calls"], 3, "{}", r.body);
    assert!(deleted["identities"].as_u64().unwrap() >= 2, "{}", r.body);
    assert!(
        deleted["customers"].as_u64().unwrap() >= 1,
        "the provisional customer: {}",
        r.body
    );
    assert!(
        !r.body.to_string().contains("4155550950"),
        "the answer repeats no number"
    );

    // The number names nobody now, and its calls are gone.
    let found = app.get("/v1/customers?ani=%2B14155550950").await.body;
    assert_eq!(found["customers"], json!([]), "{found}");
    for id in ["n-0", "n-1", "n-2"] {
        assert_eq!(
            app.get(&format!("/v1/calls/{id}")).await.status,
            StatusCode::NOT_FOUND
        );
    }
    let start = app
        .start_call(json!({"call_id": "n-4", "identity_hints": {"ani": "+14155550950"}}))
        .await;
    assert_eq!(start["band"], "low", "{start}");
    // Hana keeps the rest: her own line, her CRM id, the call from it.
    let hana = app.get("/v1/customers/hana").await.body;
    assert_eq!(hana["call_count"], 1, "{hana}");
    let text = hana.to_string();
    assert!(
        text.contains("from her own line") && !text.contains("also from the number"),
        "{hana}"
    );
    // Her intent stays, no longer pointing at the erased call.
    assert_eq!(hana["intents"][0]["intent"], "refund", "{hana}");
    assert_eq!(
        hana["intents"][0]["last_call_id"],
        serde_json::Value::Null,
        "{hana}"
    );
    let by_crm = app
        .start_call(
            json!({"call_id": "n-5", "identity_hints": {"external_ids": {"crm_id": "crm-hana"}}}),
        )
        .await;
    assert_eq!(by_crm["customer_ref"], "hana", "{by_crm}");
    assert!(
        !by_crm.to_string().contains("also from the number"),
        "{by_crm}"
    );
    // The other tenant's memory of the number is theirs and stays.
    let theirs = app
        .send(
            "GET",
            "/v1/customers?ani=%2B14155550950",
            Some(&other),
            None,
        )
        .await;
    assert_eq!(
        theirs.body["customers"][0]["customer_ref"], "them",
        "{}",
        theirs.body
    );
    // Nor after a restart: no record of an erased call is read back as an open call.
    let app = app.restarted().await;
    for id in ["n-0", "n-1", "n-2"] {
        assert_eq!(
            app.get(&format!("/v1/calls/{id}")).await.status,
            StatusCode::NOT_FOUND,
            "{id}"
        );
    }
    assert_eq!(app.get("/v1/calls/n-4").await.status, StatusCode::OK);
    // A number that is not one has nothing kept for it.
    let bad = app.delete("/v1/customers?ani=anonymous").await;
    assert_eq!(bad.status, StatusCode::OK, "{}", bad.body);
    assert_eq!(bad.body["deleted"]["identities"], 0, "{}", bad.body);
}

async fn a_caller_without_consent_is_not_remembered_and_their_number_is_forgotten(app: TestApp) {
    // Remembered from an earlier call, then a call in which the caller says no.
    app.end_call(
        json!({"call_id": "c-1", "identity_hints": {"ani": "+14155550960"},
        "summary": "an earlier call", "variables": {"name": "Ivo"}}),
    )
    .await;
    app.start_call(json!({"call_id": "c-2", "identity_hints": {"ani": "+14155550960"}}))
        .await;
    let r = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "c-2", "consent": "none", "summary": "said no",
                   "variables": {"name": "Ivo"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["customer_ref"].is_null(), "{}", r.body);
    for id in ["c-1", "c-2"] {
        assert_eq!(
            app.get(&format!("/v1/calls/{id}")).await.status,
            StatusCode::NOT_FOUND,
            "{id}"
        );
    }
    let next = app
        .start_call(json!({"call_id": "c-3", "identity_hints": {"ani": "+14155550960"}}))
        .await;
    assert_eq!(next["band"], "low", "{next}");
    assert!(!next.to_string().contains("Ivo"), "{next}");
    // A withheld caller's call without consent is removed alone.
    app.start_call(json!({"call_id": "c-4", "identity_hints": {"ani": "anonymous"}}))
        .await;
    let r = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "c-4", "consent": "none"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(app.get("/v1/calls/c-4").await.status, StatusCode::NOT_FOUND);
    // Nor after a restart: no record of a forgotten call is read back as an open call.
    let app = app.restarted().await;
    for id in ["c-1", "c-2", "c-4"] {
        assert_eq!(
            app.get(&format!("/v1/calls/{id}")).await.status,
            StatusCode::NOT_FOUND,
            "{id}"
        );
    }
    assert_eq!(app.get("/v1/calls/c-3").await.status, StatusCode::OK);
    let bad = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "c-5", "consent": "maybe"}),
        )
        .await;
    assert!(bad.status.is_client_error(), "{}", bad.body);
}

async fn a_late_end_of_an_earlier_call_never_overwrites_what_a_later_call_saved(app: TestApp) {
    let ani = json!({"ani": "+14155550970"});
    app.start_call(json!({"call_id": "late-1", "identity_hints": ani}))
        .await;
    app.start_call(json!({"call_id": "late-2", "identity_hints": ani}))
        .await;
    // Call 2 ends first; then call 1's end arrives late (a retry).
    app.end_call(json!({"call_id": "late-2", "customer_ref": "jo", "intent": "billing",
        "intent_status": "resolved", "summary": "second call", "variables": {"tier": "gold", "plan": "new"}}))
        .await;
    let late = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "late-1", "customer_ref": "jo", "intent": "billing",
            "intent_status": "open", "summary": "first call",
            "variables": {"tier": "silver", "plan": null, "first_only": "kept"}}),
        )
        .await;
    assert_eq!(late.status, StatusCode::OK, "{}", late.body);
    let jo = app.get("/v1/customers/jo").await.body;
    assert_eq!(
        jo["variables"]["tier"], "gold",
        "the later call's value stays: {jo}"
    );
    assert_eq!(
        jo["variables"]["plan"], "new",
        "a late removal does not remove it: {jo}"
    );
    assert_eq!(
        jo["variables"]["first_only"], "kept",
        "what no later call set is saved: {jo}"
    );
    assert_eq!(jo["call_count"], 2, "{jo}");
    let billing = jo["intents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["intent"] == "billing")
        .unwrap();
    assert_eq!(billing["status"], "resolved", "{jo}");
    // The late call itself is recorded as it was.
    assert_eq!(
        app.get("/v1/calls/late-1").await.body["summary"],
        "first call"
    );
    // And the next caller's context says the same as the tables.
    let next = app
        .start_call(json!({"call_id": "late-3", "identity_hints": ani}))
        .await;
    assert_eq!(next["context"]["variables"]["tier"], "gold", "{next}");
    assert_eq!(next["context"]["variables"]["first_only"], "kept", "{next}");
    assert_eq!(next["context"]["open_intents"], json!([]), "{next}");
    assert_eq!(
        app.state
            .engine
            .context_documents_out_of_date(app.default_tenant().await)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
}

async fn sensitive_variables_are_returned_only_at_high_confidence(app: TestApp) {
    let r = app
        .send(
            "PUT",
            "/v1/settings",
            Some(&app.key),
            Some(json!({"sensitive_variables": ["card_last4"]}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["sensitive_variables"], json!(["card_last4"]));
    app.end_call(json!({"call_id": "s-1", "customer_ref": "kim",
        "identity_hints": {"ani": "+14155550980"}, "variables": {"name": "Kim", "card_last4": "4242"}}))
        .await;
    let high = app
        .start_call(json!({"call_id": "s-2", "identity_hints": {"ani": "+14155550980"}}))
        .await;
    assert_eq!(high["band"], "high");
    assert_eq!(high["context"]["variables"]["card_last4"], "4242", "{high}");
    // A partially attested number: medium, and the card digits are not handed out.
    let medium = app
        .start_call(json!({"call_id": "s-3", "identity_hints": {"ani": "+14155550980", "attestation": "B"}}))
        .await;
    assert_eq!(medium["band"], "medium", "{medium}");
    assert_eq!(medium["context"]["variables"]["name"], "Kim", "{medium}");
    assert!(
        medium["context"]["variables"].get("card_last4").is_none(),
        "{medium}"
    );
    // Another tenant's settings are its own.
    let other = app.new_tenant("other").await;
    let theirs = app.send("GET", "/v1/settings", Some(&other), None).await;
    assert_eq!(
        theirs.body,
        json!({"sensitive_variables": [], "retention_days": null}),
        "{}",
        theirs.body
    );
    let bad = app
        .send(
            "PUT",
            "/v1/settings",
            Some(&app.key),
            Some(json!({"retention_days": 0}).to_string()),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert_eq!(bad.body["error"]["field"], "retention_days");
    let bad = app
        .send(
            "PUT",
            "/v1/settings",
            Some(&app.key),
            Some(json!({"sensitive": []}).to_string()),
        )
        .await;
    assert!(bad.status.is_client_error(), "{}", bad.body);
}

/// A retention period of 30 days, and two calls of lee's: `r-old` ("an old call") and `r-new`
/// ("a recent call").
async fn retention_and_two_calls(app: &TestApp) {
    app.send(
        "PUT",
        "/v1/settings",
        Some(&app.key),
        Some(json!({"retention_days": 30}).to_string()),
    )
    .await;
    for (id, summary) in [("r-old", "an old call"), ("r-new", "a recent call")] {
        app.end_call(json!({"call_id": id, "customer_ref": "lee",
            "identity_hints": {"ani": "+14155550990"}, "summary": summary}))
            .await;
    }
}

/// Runs the retention sweep; the calls it deleted.
async fn sweep(app: &TestApp) -> u64 {
    app.state
        .engine
        .sweep_retention(sticky_core::now())
        .await
        .expect("sweep")
}

async fn calls_past_the_retention_period_are_swept(app: TestApp) {
    let other = app.new_tenant("other").await;
    retention_and_two_calls(&app).await;
    app.post_as(
        &other,
        "/v1/calls/end",
        json!({"call_id": "r-theirs", "customer_ref": "them",
        "identity_hints": {"ani": "+14155550990"}, "summary": "their old call"}),
    )
    .await;
    // Two of the calls ended 40 days ago.
    app.backdate_calls(&["r-old", "r-theirs"], 40).await;
    // Lee's answer, as a start reads (and caches) it, lists the old call until the sweep.
    let before = app
        .start_call(json!({"call_id": "r-before", "identity_hints": {"ani": "+14155550990"}}))
        .await;
    assert!(before.to_string().contains("an old call"), "{before}");
    let swept = sweep(&app).await;
    assert_eq!(swept, 1, "only the tenant with a retention period");
    assert_eq!(
        app.get("/v1/calls/r-old").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("/v1/calls/r-new").await.status, StatusCode::OK);
    let theirs = app
        .send("GET", "/v1/calls/r-theirs", Some(&other), None)
        .await;
    assert_eq!(
        theirs.status,
        StatusCode::OK,
        "another tenant keeps its calls"
    );
    let next = app
        .start_call(json!({"call_id": "r-next", "identity_hints": {"ani": "+14155550990"}}))
        .await;
    let text = next.to_string();
    assert!(
        text.contains("a recent call") && !text.contains("an old call"),
        "{next}"
    );
}

/// More old calls than one transaction of the sweep deletes: every one of them goes, and
/// nothing newer.
async fn a_long_retention_sweep_deletes_every_old_call_chunk_by_chunk(app: TestApp) {
    use sea_orm::ConnectionTrait;
    use sticky_core::engine::settings::SWEEP_CHUNK;
    retention_and_two_calls(&app).await;
    app.backdate_calls(&["r-old"], 40).await;
    let db = app.state.engine.db();
    // Two chunks and one call of copies of the old call.
    let copies = 2 * SWEEP_CHUNK;
    let columns = "platform, ani, ani_withheld, dnis, external_ids, matched_customer_id, \
        confidence, band, recommended_action, signals, candidates, customer_id, status, intent, \
        intent_status, summary, variables, started_at, ended_at, created_at, updated_at";
    db.execute_unprepared(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {copies}) \
         INSERT INTO calls (tenant_id, call_id, {columns}) \
         SELECT tenant_id, call_id || '-' || CAST(n.i AS TEXT), {columns} \
         FROM calls CROSS JOIN n WHERE call_id = 'r-old'"
    ))
    .await
    .expect("copies");
    assert_eq!(app.count_calls().await, 2 + i64::try_from(copies).unwrap());

    let swept = sweep(&app).await;
    assert_eq!(swept, copies + 1);
    assert_eq!(app.count_calls().await, 1, "only the recent call is left");
    assert_eq!(app.get("/v1/calls/r-new").await.status, StatusCode::OK);
    assert_eq!(
        app.get(&format!("/v1/calls/r-old-{copies}")).await.status,
        StatusCode::NOT_FOUND
    );
    let lee = app.get("/v1/customers/lee").await.body;
    let text = lee.to_string();
    assert!(
        text.contains("a recent call") && !text.contains("an old call"),
        "{lee}"
    );
    let again = sweep(&app).await;
    assert_eq!(again, 0);
}

async fn a_call_moved_to_another_customer_takes_its_number_along(app: TestApp) {
    // Ada is named on a call from a number she called from only this once...
    app.start_call(json!({"call_id": "m-1", "identity_hints": {"ani": "+14155550111"}}))
        .await;
    app.end_call(json!({"call_id": "m-1", "customer_ref": "ada"}))
        .await;
    // ...then the agent corrects it: it was Bob.
    let moved = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "m-1", "customer_ref": "bob"}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let ada = app.get("/v1/customers/ada").await.body;
    assert_eq!(ada["call_count"], 0, "{ada}");
    assert_eq!(
        ada["identities"],
        json!([]),
        "the number went with the call: {ada}"
    );
    let next = app
        .start_call(json!({"call_id": "m-2", "identity_hints": {"ani": "+14155550111"}}))
        .await;
    assert_eq!(next["customer_ref"], "bob", "{next}");
    assert_eq!(next["band"], "high", "not shared with Ada any more: {next}");
}

async fn a_provisional_customer_is_merged_only_when_the_call_was_theirs(app: TestApp) {
    // Unnamed calls from two new numbers make two provisional customers (the first number's
    // with two calls).
    for (id, ani) in [
        ("p-1", "+14155550121"),
        ("p-1b", "+14155550121"),
        ("p-2", "+14155550122"),
    ] {
        app.start_call(json!({"call_id": id, "identity_hints": {"ani": ani}}))
            .await;
        app.end_call(json!({"call_id": id})).await;
    }
    // A named customer on the first number makes it a shared line.
    app.end_call(
        json!({"call_id": "p-3", "customer_ref": "cy", "identity_hints": {"ani": "+14155550121"}}),
    )
    .await;
    // A call from the shared line matched the provisional customer only at medium: naming
    // Dee at its end does not fold the provisional customer's history into hers.
    let shared = app
        .start_call(json!({"call_id": "p-4", "identity_hints": {"ani": "+14155550121"}}))
        .await;
    assert_eq!(shared["band"], "medium", "{shared}");
    let provisional = shared["customer_ref"].as_str().unwrap().to_owned();
    assert!(
        provisional.starts_with("cust_"),
        "the provisional customer ranks first: {shared}"
    );
    let named = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "p-4", "customer_ref": "dee"}),
        )
        .await;
    assert!(named.body.get("merged_from").is_none(), "{}", named.body);
    let kept = app.get(&format!("/v1/customers/{provisional}")).await;
    assert_eq!(kept.status, StatusCode::OK, "still there: {}", kept.body);
    assert_eq!(kept.body["call_count"], 2, "{}", kept.body);
    // A call its start matched with high confidence is theirs: the provisional customer
    // becomes the named one.
    let high = app
        .start_call(json!({"call_id": "p-5", "identity_hints": {"ani": "+14155550122"}}))
        .await;
    assert_eq!(high["band"], "high", "{high}");
    let merged = app
        .post(
            "/v1/calls/end",
            json!({"call_id": "p-5", "customer_ref": "eve"}),
        )
        .await;
    assert_eq!(merged.body["customer_ref"], "eve", "{}", merged.body);
    let eve = app.get("/v1/customers/eve").await.body;
    assert_eq!(
        eve["call_count"], 2,
        "the provisional history came along: {eve}"
    );
}
