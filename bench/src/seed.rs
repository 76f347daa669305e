//! A contact center's history, generated deterministically and written through the engine's
//! bulk import: one to three identities per customer (a number, often a CRM id, sometimes a
//! second number; one number in a thousand shared by two customers), one to twenty past calls
//! (most customers few, some many), five to ten variables, open intents for some.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sticky_core::Engine;
use sticky_core::domain::{CustomerRef, DefaultRegion, ExternalId, IntentName, PhoneNumber};
use sticky_core::engine::{
    ImportReport, ImportedCall, ImportedCustomer, ImportedIdentity, TenantId,
};

const INTENTS: &[&str] = &[
    "refund_request",
    "billing_question",
    "delivery_status",
    "change_address",
    "cancel_subscription",
    "technical_support",
];
const SUMMARIES: &[&str] = &[
    "Customer asked where the parcel is; gave tracking details.",
    "Refund requested for a damaged item; ticket opened.",
    "Billing question about a double charge; explained the pending authorisation.",
    "Moved the delivery address to the new flat.",
    "Router keeps dropping; walked through a factory reset.",
    "Wanted to cancel; offered a discount and the customer stayed.",
];
const VARIABLES: &[&str] = &[
    "name",
    "language",
    "tier",
    "order_id",
    "plan",
    "city",
    "account_status",
    "preferred_channel",
    "last_agent",
    "postcode",
];

/// What the seed writes, as a version: a reused file (`--reuse`) of another shape is seeded
/// again. 2: valid North American numbers; context documents.
pub const SHAPE: u32 = 2;

/// The caller number of customer `i` (customer `i` shares `i - 1`'s number when
/// `i % 1000 == 999`).
pub fn number(i: u64) -> String {
    let owner = if i % 1000 == 999 { i - 1 } else { i };
    north_american(415, owner)
}

/// The `n`th number of a run of North American numbers from area code `area`: valid shapes
/// (area code and exchange from 2 to 9, as real carriers deliver), 8,000,000 per area code.
fn north_american(area: u64, n: u64) -> String {
    let block = n / 10_000;
    format!(
        "+1{}{}{:04}",
        area + block / 800,
        200 + block % 800,
        n % 10_000
    )
}

/// Whether customer `i` shares its number.
pub fn shares_number(i: u64) -> bool {
    i % 1000 == 998 || i % 1000 == 999
}

/// Customer `i`'s CRM id, for 70% of customers.
pub fn crm_id(i: u64) -> Option<String> {
    (i % 10 < 7).then(|| format!("C{i:08}"))
}

/// Customer `i`'s reference.
pub fn customer_ref(i: u64) -> String {
    format!("crm-{i}")
}

/// A number no seeded customer has.
pub fn unknown_number(n: u64) -> String {
    north_american(212, n % 8_000_000)
}

fn customer(i: u64, now: DateTime<Utc>) -> ImportedCustomer {
    let mut rng = StdRng::seed_from_u64(i);
    let region = DefaultRegion::default();
    let mut identities = vec![ImportedIdentity::Ani(
        PhoneNumber::parse(&number(i), region).expect("seed numbers parse"),
    )];
    if let Some(crm) = crm_id(i) {
        identities.push(ImportedIdentity::External(
            ExternalId::new("crm_id", &crm).expect("valid id"),
        ));
    }
    if rng.random_bool(0.2) {
        let second = north_american(628, i);
        identities.push(ImportedIdentity::Ani(
            PhoneNumber::parse(&second, region).expect("seed numbers parse"),
        ));
    }
    // Most customers call a few times, some up to twenty.
    let calls = 1 + (19.0 * rng.random::<f64>().powi(5)) as u64;
    let mut at = now - chrono::Duration::days(rng.random_range(0..365));
    let mut history = Vec::new();
    for j in 0..calls {
        let started = at;
        let ended = started + chrono::Duration::seconds(rng.random_range(30..900));
        history.push(ImportedCall {
            call_id: format!("seed-{i}-{j}"),
            platform: "generic".into(),
            started_at: started,
            ended_at: ended,
            intent: Some(
                IntentName::parse(INTENTS[rng.random_range(0..INTENTS.len())]).expect("valid"),
            ),
            intent_status: Some("resolved"),
            summary: Some(SUMMARIES[rng.random_range(0..SUMMARIES.len())].to_owned()),
        });
        at -= chrono::Duration::days(rng.random_range(1..60));
    }
    history.reverse();
    let count = rng.random_range(5..=10);
    let variables: BTreeMap<String, serde_json::Value> = VARIABLES[..count]
        .iter()
        .map(|name| {
            let value = match *name {
                "name" => json!(format!("Customer {i}")),
                "order_id" => json!(format!("{}", 100_000 + i)),
                other => json!(format!("{other}-{}", rng.random_range(0..50))),
            };
            ((*name).to_owned(), value)
        })
        .collect();
    let open_intents = if rng.random_bool(0.3) {
        vec![IntentName::parse(INTENTS[rng.random_range(0..INTENTS.len())]).expect("valid")]
    } else {
        vec![]
    };
    ImportedCustomer {
        customer_ref: CustomerRef::parse(&customer_ref(i)).expect("valid ref"),
        identities,
        variables,
        calls: history,
        open_intents,
    }
}

/// Imports `n` customers, printing progress to stderr.
pub async fn seed(
    engine: &Engine,
    tenant: TenantId,
    n: u64,
) -> anyhow::Result<(Duration, ImportReport)> {
    const BATCH: u64 = 5_000;
    let started = Instant::now();
    let now = sticky_core::now();
    let mut total = ImportReport::default();
    let mut next = tokio::task::spawn_blocking(move || batch(0, BATCH.min(n), now));
    let mut from = 0;
    while from < n {
        let customers = next.await?;
        let to = (from + BATCH).min(n);
        // Generate the following batch while this one is written.
        let (nf, nt) = (to, (to + BATCH).min(n));
        next = tokio::task::spawn_blocking(move || batch(nf, nt, now));
        let r = engine.import_customers(tenant, customers).await?;
        total.customers += r.customers;
        total.identities += r.identities;
        total.variables += r.variables;
        total.calls += r.calls;
        total.intents += r.intents;
        from = to;
        let secs = started.elapsed().as_secs_f64();
        eprint!(
            "\r  seeded {from}/{n} customers ({:.0}/s, {:.0}s)   ",
            from as f64 / secs.max(1e-9),
            secs
        );
    }
    eprintln!();
    Ok((started.elapsed(), total))
}

fn batch(from: u64, to: u64, now: DateTime<Utc>) -> Vec<ImportedCustomer> {
    (from..to).map(|i| customer(i, now)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_distinct_but_for_the_shared_ones() {
        assert_eq!(number(999), number(998));
        assert_ne!(number(997), number(998));
        assert_eq!(number(1), "+14152000001");
        assert_eq!(number(10_000_001), "+14164000001");
        assert!(shares_number(999) && shares_number(998) && !shares_number(997));
    }

    #[test]
    fn customers_have_the_documented_shape() {
        let now = Utc::now();
        for i in 0..2000 {
            let c = customer(i, now);
            assert!((1..=3).contains(&c.identities.len()));
            assert!((1..=20).contains(&c.calls.len()));
            assert!((5..=10).contains(&c.variables.len()));
            assert!(
                c.calls
                    .windows(2)
                    .all(|w| w[0].started_at <= w[1].started_at)
            );
        }
    }
}
