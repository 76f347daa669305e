//! A write that holds or waits for its tenant's lock on PostgreSQL (an erasure, an import's
//! transaction, a retention sweep: each takes the tenant's advisory lock) holds up none of the
//! calls of other tenants, and none of its own tenant's new starts: no process-wide lock stands
//! behind it, and the tenant's ends wait for it apart from the other tenants' ends. And an end
//! is not held up by a start's call row being written for its customer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use serde_json::json;
use sticky_calls_tests::TestApp;

postgres_tests!(
    a_write_waiting_for_its_tenant_holds_up_no_other_call,
    an_end_is_not_held_up_by_a_call_row_being_written_for_its_customer,
);

/// Long enough for any call on a test machine; the calls below take milliseconds unless
/// something holds them up until the tenant's lock is let go, which happens only after.
const PATIENCE: Duration = Duration::from_secs(20);

/// Ends of the waiting tenant: more than the most workers that run batches of ends (four).
const OWN_ENDS: usize = 6;

async fn a_write_waiting_for_its_tenant_holds_up_no_other_call(app: TestApp) {
    app.start_call(json!({"call_id": "a-1", "identity_hints": {"ani": "+14155550111"}}))
        .await;
    app.end_call(json!({"call_id": "a-1", "customer_ref": "alice"}))
        .await;
    let other = app.new_tenant("other").await;
    let tenant = app.default_tenant().await;

    // Tenant `default`'s lock, held by another connection as a long write of it would.
    let db = sea_orm::Database::connect(&app.database_url)
        .await
        .expect("connect");
    let holder = db.begin().await.expect("begin");
    holder
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [tenant.0.into()],
        ))
        .await
        .expect("tenant lock");

    // The erasure of alice waits for that lock, and so do ends of the tenant, sent a few
    // milliseconds apart: more of them than the server has workers running batches of ends,
    // each of which would otherwise wait for the lock with its batch.
    let erasure = app.delete("/v1/customers/alice");
    let sent = AtomicUsize::new(0);
    let own_ends = futures::future::join_all((0..OWN_ENDS).map(|i| {
        let (app, sent) = (&app, &sent);
        async move {
            tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
            sent.fetch_add(1, Ordering::SeqCst);
            app.post(
                "/v1/calls/end",
                json!({"call_id": format!("a-9-{i}"), "customer_ref": format!("carol-{i}")}),
            )
            .await
        }
    }));
    let meanwhile = async {
        // Until PostgreSQL shows the erasure waiting (in this test's database: other tests
        // share the server).
        let waiting = Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        );
        let mut tries = 0;
        loop {
            let row = db.query_one_raw(waiting.clone()).await.expect("pg_locks");
            let n: i64 = row.expect("a row").try_get("", "n").expect("n");
            if n > 0 {
                break;
            }
            tries += 1;
            assert!(
                tries < 2_000,
                "the erasure never waited for the tenant's lock"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Once the tenant's ends have all been sent and taken up.
        while sent.load(Ordering::SeqCst) < OWN_ENDS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;

        // The other tenant's calls go on.
        let start = |call_id: &str| {
            app.post_as(
                &other,
                "/v1/calls/start",
                json!({"call_id": call_id, "identity_hints": {"ani": "+14155550222"}}),
            )
        };
        let first = tokio::time::timeout(PATIENCE, start("b-1"))
            .await
            .expect("another tenant's start is not held up");
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(first.body["band"], "low");
        let end = tokio::time::timeout(
            PATIENCE,
            app.post_as(
                &other,
                "/v1/calls/end",
                json!({"call_id": "b-1", "customer_ref": "bob"}),
            ),
        )
        .await
        .expect("another tenant's end is not held up");
        assert_eq!(end.status, 200, "{}", end.body);
        let again = tokio::time::timeout(PATIENCE, start("b-2"))
            .await
            .expect("another tenant's start is not held up");
        assert_eq!(again.body["customer_ref"], "bob", "{}", again.body);

        // And the waiting tenant's own starts: a start takes no tenant lock. Alice is not
        // erased yet, so she is recognised.
        let own = tokio::time::timeout(
            PATIENCE,
            app.post(
                "/v1/calls/start",
                json!({"call_id": "a-2", "identity_hints": {"ani": "+14155550111"}}),
            ),
        )
        .await
        .expect("the tenant's own start is not held up by its waiting erasure");
        assert_eq!(own.status, 200, "{}", own.body);
        assert_eq!(own.body["customer_ref"], "alice", "{}", own.body);

        holder.rollback().await.expect("let go");
    };
    let (erased, own_ended, ()) = tokio::join!(erasure, own_ends, meanwhile);
    assert_eq!(erased.status, 200, "{}", erased.body);
    // The tenant's ends waited for the lock, then ran.
    for (i, ended) in own_ended.iter().enumerate() {
        assert_eq!(ended.status, 200, "{}", ended.body);
        let carol = app.get(&format!("/v1/customers/carol-{i}")).await;
        assert_eq!(carol.status, 200, "{}", carol.body);
    }

    // Once the lock is let go, the erasure ran whole: alice's calls, the one started while it
    // waited among them, are gone.
    let call = app.get("/v1/calls/a-2").await;
    assert_eq!(call.status, 404, "{}", call.body);
    let gone = app
        .post(
            "/v1/calls/start",
            json!({"call_id": "a-3", "identity_hints": {"ani": "+14155550111"}}),
        )
        .await;
    assert_eq!(gone.body["band"], "low", "{}", gone.body);
}

/// A start's call row names the customer it matched, and the foreign key's check share-locks
/// that customer's row until the row's batch commits (on any process). An end writing to the
/// customer locks the row only against other writers of it (`FOR NO KEY UPDATE`), so neither
/// waits for the other: here the share lock is held by another connection while ends of the
/// customer's calls run, one for each way an end finds its customer (the call's link, its
/// start's match, a reference, the caller's number). (An end that gives a provisional
/// customer its reference changes a key, and waits.)
async fn an_end_is_not_held_up_by_a_call_row_being_written_for_its_customer(app: TestApp) {
    let ani = "+14155550111";
    app.start_call(json!({"call_id": "a-1", "identity_hints": {"ani": ani}}))
        .await;
    app.end_call(json!({"call_id": "a-1", "customer_ref": "alice"}))
        .await;
    let linked = app
        .start_call(json!({"call_id": "a-2", "identity_hints": {"ani": ani}}))
        .await;
    assert_eq!(linked["customer_ref"], "alice", "{linked}");
    let tenant = app.default_tenant().await;

    // What a start's insert of a call row for alice takes, held by another connection.
    let db = sea_orm::Database::connect(&app.database_url)
        .await
        .expect("connect");
    let holder = db.begin().await.expect("begin");
    let locked = holder
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id FROM customers WHERE tenant_id = $1 AND customer_ref = 'alice' FOR KEY SHARE",
            [tenant.0.into()],
        ))
        .await
        .expect("share lock");
    assert_eq!(locked.rows_affected(), 1);

    let ends = [
        // Its call is linked to alice (by its first end).
        json!({"call_id": "a-1", "variables": {"via_link": "link"}}),
        // Its start recognised her.
        json!({"call_id": "a-2", "variables": {"via": "start"}}),
        // It names her.
        json!({"call_id": "a-3", "customer_ref": "alice", "variables": {"via_ref": "ref"}}),
        // Its caller's number is hers.
        json!({"call_id": "a-4", "identity_hints": {"ani": ani}, "variables": {"via_number": "number"}}),
    ];
    for end in ends {
        let ended = tokio::time::timeout(PATIENCE, app.post("/v1/calls/end", end.clone()))
            .await
            .unwrap_or_else(|_| {
                panic!("an end of alice's waited for a call row being written: {end}")
            });
        assert_eq!(ended.status, 200, "{}", ended.body);
        assert_eq!(ended.body["customer_ref"], "alice", "{}", ended.body);
    }
    holder.rollback().await.expect("let go");

    let next = app
        .start_call(json!({"call_id": "a-5", "identity_hints": {"ani": ani}}))
        .await;
    let variables = &next["context"]["variables"];
    assert_eq!(variables["via_link"], "link", "{next}");
    assert_eq!(variables["via"], "start", "{next}");
    assert_eq!(variables["via_ref"], "ref", "{next}");
    assert_eq!(variables["via_number"], "number", "{next}");
}
