//! Who a caller is: numbers written the way each region writes them, lines that several
//! customers share.

use serde_json::json;
use sticky_calls_tests::TestApp;

backend_tests!(
    numbers_are_read_in_the_configured_region,
    on_a_shared_line_the_caller_heard_from_last_ranks_first,
    a_number_in_doubt_is_not_greeted_by_name,
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
