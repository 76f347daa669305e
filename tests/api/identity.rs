//! Who a caller is: numbers written the way each region writes them.

use serde_json::json;
use sticky_calls_tests::TestApp;

backend_tests!(numbers_are_read_in_the_configured_region,);

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
