//! Who a caller is: numbers written the way each region writes them, lines that several
//! customers share.

use serde_json::json;
use sticky_calls_tests::TestApp;

backend_tests!(
    numbers_are_read_in_the_configured_region,
    on_a_shared_line_the_caller_heard_from_last_ranks_first,
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
