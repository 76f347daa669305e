//! Two application instances on one PostgreSQL database, as two server processes behind a
//! load balancer: what one writes, the other answers, within the delivery of a notification
//! (see `sticky_core::coherence`), and never with a 5xx.

use std::time::{Duration, Instant};

use poem::http::StatusCode;
use serde_json::{Value, json};
use sticky_calls_tests::TestApp;

postgres_tests!(
    a_caller_linked_on_one_process_is_recognised_on_the_other,
    an_erasure_on_one_process_never_makes_the_other_answer_5xx,
    a_key_revoked_on_one_process_stops_working_on_the_other,
    twelve_ends_from_one_new_number_over_both_processes_make_one_customer,
    concurrent_ends_naming_one_customer_merge_and_count_every_call,
    after_a_lost_notification_connection_the_caches_are_flushed_and_heard_again,
    two_processes_share_the_end_of_a_quota_exactly,
    a_retention_sweep_on_one_process_is_heard_by_the_other,
);

/// Polls `check` until it holds, for at most five seconds (a notification takes
/// milliseconds); returns how long it took.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    for i in 0.. {
        if check(i).await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unreachable!()
}

async fn start(app: &TestApp, call_id: &str, ani: &str) -> Value {
    let r = app
        .post(
            "/v1/calls/start",
            json!({"call_id": call_id, "identity_hints": {"ani": ani}}),
        )
        .await;
    assert!(r.status.is_success(), "{call_id}: {} {}", r.status, r.body);
    r.body
}

async fn a_caller_linked_on_one_process_is_recognised_on_the_other(a: TestApp) {
    let b = a.second_instance().await;
    // B has seen the number unknown (and may keep "nobody" for it).
    assert_eq!(start(&b, "x-1", "+14155550901").await["band"], "low");
    a.end_call(
        json!({"call_id": "x-1", "customer_ref": "xavier", "variables": {"name": "Xavier"}}),
    )
    .await;
    // A sees its own write at once.
    assert_eq!(
        start(&a, "x-2", "+14155550901").await["customer_ref"],
        "xavier"
    );
    let took =
        eventually("B recognises the caller", |i| {
            let b = &b;
            async move {
                start(b, &format!("x-b-{i}"), "+14155550901").await["customer_ref"] == "xavier"
            }
        })
        .await;
    eprintln!("B recognised the caller after {took:?}");
    // And what changes later (a variable) reaches B's cached context too.
    a.end_call(json!({"call_id": "x-2", "customer_ref": "xavier", "variables": {"tier": "gold"}}))
        .await;
    eventually("B sees the new variable", |i| {
        let b = &b;
        async move {
            start(b, &format!("x-c-{i}"), "+14155550901").await["context"]["variables"]["tier"]
                == "gold"
        }
    })
    .await;
}

async fn an_erasure_on_one_process_never_makes_the_other_answer_5xx(a: TestApp) {
    let b = a.second_instance().await;
    for round in 0..3 {
        let ani = format!("+1415555{:04}", 910 + round);
        let who = format!("yara-{round}");
        a.end_call(json!({"call_id": format!("y-{round}"), "customer_ref": who,
            "identity_hints": {"ani": ani}, "variables": {"secret": "erase me"}}))
            .await;
        // B caches the customer.
        eventually("B recognises", |i| {
            let (b, ani, who) = (&b, &ani, &who);
            async move { start(b, &format!("y-{round}-b-{i}"), ani).await["customer_ref"] == *who }
        })
        .await;
        let r = a.delete(&format!("/v1/customers/{who}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        // At once, before any notification could arrive: B answers, 2xx.
        let now = start(&b, &format!("y-{round}-after"), &ani).await;
        assert!(now.is_object());
        eventually("B forgets the erased customer", |i| {
            let (b, ani) = (&b, &ani);
            async move {
                let r = start(b, &format!("y-{round}-gone-{i}"), ani).await;
                r["band"] == "low" && !r.to_string().contains("erase me")
            }
        })
        .await;
    }
}

async fn a_key_revoked_on_one_process_stops_working_on_the_other(a: TestApp) {
    let b = a.second_instance().await;
    let made = a.post("/v1/api-keys", json!({"label": "temp"})).await.body;
    let (id, secret) = (
        made["key"]["id"].as_str().unwrap().to_owned(),
        made["api_key"].as_str().unwrap().to_owned(),
    );
    // B verifies (and caches) it.
    let r = b
        .send("GET", "/v1/api-keys/current", Some(&secret), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = a.delete(&format!("/v1/api-keys/{id}")).await;
    assert!(r.status.is_success(), "{}", r.body);
    let took = eventually("B refuses the revoked key", |_| {
        let (b, secret) = (&b, &secret);
        async move {
            b.send("GET", "/v1/api-keys/current", Some(secret), None)
                .await
                .status
                == StatusCode::UNAUTHORIZED
        }
    })
    .await;
    eprintln!("B refused the revoked key after {took:?}");
}

async fn twelve_ends_from_one_new_number_over_both_processes_make_one_customer(a: TestApp) {
    let b = a.second_instance().await;
    let ends = (0..12).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move {
            app.post(
                "/v1/calls/end",
                json!({"call_id": format!("z-{i}"), "identity_hints": {"ani": "+14155550920"},
                       "variables": {format!("v{i}"): i}}),
            )
            .await
        }
    });
    let replies = futures::future::join_all(ends).await;
    let refs: std::collections::BTreeSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body["customer_ref"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(refs.len(), 1, "one customer: {refs:?}");
    let found = a.get("/v1/customers?ani=%2B14155550920").await.body;
    assert_eq!(found["customers"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["customers"][0]["call_count"], 12, "{found}");
}

async fn after_a_lost_notification_connection_the_caches_are_flushed_and_heard_again(a: TestApp) {
    use sea_orm::{ConnectionTrait, Statement};
    let b = a.second_instance().await;
    assert_eq!(start(&b, "w-1", "+14155550930").await["band"], "low");
    // Every listening connection of this database drops (B's and A's).
    let db = a.state.engine.db();
    let cut = db
        .execute_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        ))
        .await
        .expect("terminate the listeners");
    assert!(cut.rows_affected() >= 1, "a listener was connected");
    // A write made while B may not hear it is seen by B all the same.
    a.end_call(json!({"call_id": "w-1", "customer_ref": "wanda"}))
        .await;
    eventually("B recognises the caller despite the lost notification", |i| {
        let b = &b;
        async move {
            start(b, &format!("w-b-{i}"), "+14155550930").await["customer_ref"] == "wanda"
        }
    })
    .await;
    // Listening again, B hears later changes.
    a.end_call(
        json!({"call_id": "w-1", "customer_ref": "wanda", "variables": {"after": "reconnect"}}),
    )
    .await;
    eventually("B hears changes after reconnecting", |i| {
        let b = &b;
        async move {
            start(b, &format!("w-c-{i}"), "+14155550930").await["context"]["variables"]["after"]
                == "reconnect"
        }
    })
    .await;
}

/// Both processes serve starts for a `free` tenant (100 calls) that has used 95: exactly 5
/// more succeed between them, whichever process answers.
async fn two_processes_share_the_end_of_a_quota_exactly(app: TestApp) {
    let other = app.second_instance().await;
    let tenant = app.default_tenant().await;
    let store = app.state.limits.store();
    store.set_plan(tenant, "free", "test").await.unwrap();
    let (period, _, _) = sticky_core::plans::period(chrono::Utc::now());
    store.add_used(tenant, &period, 95).await.unwrap();
    app.state.limits.forget(tenant);
    other.state.limits.forget(tenant);
    let mut ok = 0;
    for i in 0..12 {
        let on = if i % 2 == 0 { &app } else { &other };
        let r = on
            .post(
                "/v1/calls/start",
                super::plans::start_body(&format!("two-{i}")),
            )
            .await;
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(r.body["error"]["code"], "quota_exceeded", "{}", r.body);
            }
            s => panic!("{s}: {}", r.body),
        }
    }
    assert_eq!(ok, 5);
    app.state.limits.flush().await;
    other.state.limits.flush().await;
    assert_eq!(store.usage(tenant, &period).await.unwrap().used, 100);
}

/// Ends of one tenant run side by side on PostgreSQL, each locking what it touches; those that
/// merge a provisional customer into a named one take the tenant's lock. Mixed at once over
/// both processes: ends naming one new reference from new numbers, ends of calls whose
/// provisional customer is merged into it, and plain ends of its known number.
async fn concurrent_ends_naming_one_customer_merge_and_count_every_call(a: TestApp) {
    let b = a.second_instance().await;
    // Four provisional customers, one per number, each from an unnamed call.
    for i in 0..4 {
        let r = a
            .post(
                "/v1/calls/end",
                json!({"call_id": format!("p-{i}"), "identity_hints": {"ani": format!("+1415555093{i}")}}),
            )
            .await;
        assert_eq!(r.body["provisional"], true, "{}", r.body);
    }
    let ends = (0..16).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let body = match i % 4 {
            // A new number naming zoe.
            0 => json!({"call_id": format!("n-{i}"), "customer_ref": "zoe",
                        "identity_hints": {"ani": format!("+141555509{:02}", 40 + i)},
                        "variables": {format!("v{i}"): i}}),
            // A new call from a provisional number naming zoe: a merge.
            1 => json!({"call_id": format!("m-{i}"), "customer_ref": "zoe",
                        "identity_hints": {"ani": format!("+1415555093{}", i / 4)},
                        "intent": "billing"}),
            // The provisional customer's own first call, named at a second end: a merge.
            2 => json!({"call_id": format!("p-{}", i / 4), "customer_ref": "zoe"}),
            // An unnamed call from a number zoe will have, or from nobody yet.
            _ => json!({"call_id": format!("u-{i}"),
                        "identity_hints": {"ani": format!("+141555509{:02}", 40 + i - 3)}}),
        };
        async move { app.post("/v1/calls/end", body).await }
    });
    for r in futures::future::join_all(ends).await {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let zoe = a.get("/v1/customers/zoe").await;
    assert_eq!(zoe.status, StatusCode::OK, "{}", zoe.body);
    // Every provisional customer was merged into zoe: one customer per number is left.
    for i in 0..4 {
        let found = a
            .get(&format!("/v1/customers?ani=%2B1415555093{i}"))
            .await
            .body;
        let refs: Vec<&str> = found["customers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["customer_ref"].as_str().unwrap())
            .collect();
        assert_eq!(refs, ["zoe"], "number {i}: {found}");
    }
    // zoe's calls: 4 new numbers, 4 merged-in calls, 4 provisional first calls, and the
    // unnamed ends that found her number (counted once each, whatever the order).
    let calls = zoe.body["calls"].as_array().unwrap().len();
    assert!(calls >= 12, "{}", zoe.body);
    assert_eq!(
        zoe.body["call_count"].as_u64().unwrap(),
        u64::try_from(calls).unwrap(),
        "the count is the calls linked: {}",
        zoe.body
    );
    assert_eq!(zoe.body["intents"][0]["intent"], "billing", "{}", zoe.body);
}

/// A retention sweep tells the other processes which customers' answers lost calls: one that
/// cached such an answer stops listing the deleted call.
async fn a_retention_sweep_on_one_process_is_heard_by_the_other(a: TestApp) {
    let b = a.second_instance().await;
    let r = a
        .send(
            "PUT",
            "/v1/settings",
            Some(&a.key),
            Some(json!({"retention_days": 30}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ani = "+14155550930";
    for (id, summary) in [("s-old", "an old call"), ("s-new", "a recent call")] {
        a.end_call(json!({"call_id": id, "customer_ref": "sol",
            "identity_hints": {"ani": ani}, "summary": summary}))
            .await;
    }
    a.backdate_calls(&["s-old"], 40).await;
    // B caches sol's answer, the old call in it.
    eventually("B lists the old call", |i| {
        let b = &b;
        async move {
            let r = start(b, &format!("s-b-{i}"), ani).await;
            r["customer_ref"] == "sol" && r.to_string().contains("an old call")
        }
    })
    .await;
    let swept = a
        .state
        .engine
        .sweep_retention(sticky_core::now())
        .await
        .expect("sweep");
    assert_eq!(swept, 1);
    eventually("B forgets the swept call", |i| {
        let b = &b;
        async move {
            let r = start(b, &format!("s-b-after-{i}"), ani).await.to_string();
            r.contains("a recent call") && !r.contains("an old call")
        }
    })
    .await;
}
