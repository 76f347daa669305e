//! The engine's bulk import (used to seed the benchmark and for CRM migrations): imported
//! customers are recognised, and customers created afterwards get fresh ids on every backend.

use serde_json::json;
use sticky_calls_tests::TestApp;
use sticky_core::domain::{CustomerRef, DefaultRegion, ExternalId, IntentName, PhoneNumber};
use sticky_core::engine::{ImportedCall, ImportedCustomer, ImportedIdentity};

backend_tests!(imported_customers_are_recognised_and_later_ones_still_get_created);

async fn imported_customers_are_recognised_and_later_ones_still_get_created(app: TestApp) {
    let tenant = app.default_tenant().await;
    let now = sticky_core::now();
    let customers = (0..3)
        .map(|i| ImportedCustomer {
            customer_ref: CustomerRef::parse(&format!("imp-{i}")).unwrap(),
            identities: vec![
                ImportedIdentity::Ani(
                    PhoneNumber::parse(&format!("+1415555000{i}"), DefaultRegion::default())
                        .unwrap(),
                ),
                ImportedIdentity::External(ExternalId::new("crm_id", &format!("X{i}")).unwrap()),
            ],
            variables: [("name".to_owned(), json!(format!("Imported {i}")))].into(),
            calls: vec![ImportedCall {
                call_id: format!("old-{i}"),
                platform: "generic".into(),
                started_at: now - chrono::Duration::days(3),
                ended_at: now - chrono::Duration::days(3) + chrono::Duration::minutes(5),
                intent: Some(IntentName::parse("billing").unwrap()),
                intent_status: Some("resolved"),
                summary: Some("imported call".into()),
            }],
            open_intents: vec![IntentName::parse("refund").unwrap()],
        })
        .collect();
    let report = app
        .state
        .engine
        .import_customers(tenant, customers)
        .await
        .unwrap();
    assert_eq!(
        (
            report.customers,
            report.identities,
            report.variables,
            report.calls,
            report.intents
        ),
        (3, 6, 3, 3, 3)
    );

    let r = app
        .start_call(json!({"call_id": "new-1", "identity_hints": {"ani": "+14155550001"}}))
        .await;
    assert_eq!(r["customer_ref"], "imp-1");
    assert_eq!(r["band"], "high");
    assert_eq!(r["context"]["variables"]["name"], "Imported 1");
    assert_eq!(r["context"]["open_intents"][0]["intent"], "refund");
    assert_eq!(r["context"]["recent_calls"][0]["summary"], "imported call");

    // A customer created after the import does not collide with the imported ids.
    app.end_call(json!({"call_id": "new-2", "customer_ref": "fresh", "identity_hints": {"ani": "+14155559999"}}))
        .await;
    assert_eq!(app.count_rows("customers").await, 4);
}
