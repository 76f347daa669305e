//! Prometheus metrics (`GET /metrics`): requests by route and status, their latency, and how
//! many callers were recognised. Recorded with the `metrics` macros (the engine counts starts
//! by band and ends); exported by `metrics-exporter-prometheus`. Labels hold routes with their
//! parameters masked and bands, never a tenant's data.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::http::StatusCode;
use poem::web::Data;
use poem::{Request, Response, handler};
use std::sync::Arc;

use crate::error::ApiError;
use crate::state::AppState;

/// Latency buckets, in seconds: a start is answered in about a millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How often recorded latencies are folded into the histograms, scraped or not.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use (every application in a process shares
/// it). `None` when another recorder was installed first (the host embeds us).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("sticky_http_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full("sticky_end_batch_size".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
                )
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                })
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(
        "sticky_http_requests_total",
        "HTTP requests answered, by route (parameters masked) and status"
    );
    metrics::describe_histogram!(
        "sticky_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's arrival to its answer, by route"
    );
    metrics::describe_counter!(
        "sticky_call_starts_total",
        "Call starts answered, by band: high (recognised), medium (to verify), low (new)"
    );
    metrics::describe_counter!("sticky_call_ends_total", "Call ends stored");
    metrics::describe_histogram!(
        "sticky_end_batch_size",
        "Ends run together in one transaction (PostgreSQL)"
    );
    metrics::describe_counter!(
        "sticky_end_batches_failed_total",
        "Batches of ends that failed, whose ends ran again one by one (PostgreSQL)"
    );
    metrics::describe_counter!(
        "sticky_end_retries_total",
        "Ends run again alone after PostgreSQL broke a deadlock"
    );
    metrics::describe_counter!(
        "sticky_ends_waited_apart_total",
        "Ends that waited apart from their batch for their tenant's lock, held by another \
         write of that tenant (an erasure, an import, a sweep) (PostgreSQL)"
    );
    metrics::describe_counter!(
        "sticky_cache_lookups_total",
        "Look-ups in the in-process caches, by cache and result (hit, miss)"
    );
    metrics::describe_gauge!(
        "sticky_db_pool_connections",
        "Database pool connections, by state (idle, in_use)"
    );
    metrics::describe_gauge!(
        "sticky_open_calls",
        "Calls started and not ended whose start waits in the open calls' journal (SQLite)"
    );
    metrics::describe_gauge!(
        "sticky_journal_bytes",
        metrics::Unit::Bytes,
        "Size on disk of the open calls' journal (SQLite)"
    );
}

/// The values read at scrape time: cache look-ups, the pool, the journal.
fn record_state(state: &AppState) {
    for (name, lookups) in sticky_core::stats::all() {
        let (hits, misses) = lookups.read();
        metrics::counter!("sticky_cache_lookups_total", "cache" => name, "result" => "hit")
            .absolute(hits);
        metrics::counter!("sticky_cache_lookups_total", "cache" => name, "result" => "miss")
            .absolute(misses);
    }
    let (open, idle) = state.engine.pool_connections();
    let idle = u32::try_from(idle).unwrap_or(u32::MAX);
    metrics::gauge!("sticky_db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("sticky_db_pool_connections", "state" => "in_use")
        .set(f64::from(open.saturating_sub(idle)));
    #[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
    {
        metrics::gauge!("sticky_open_calls").set(state.engine.open_calls() as f64);
        metrics::gauge!("sticky_journal_bytes").set(state.engine.journal_bytes() as f64);
    }
}

/// Most (route, status) pairs a thread keeps handles for; past it, it starts over.
const HANDLES_PER_THREAD: usize = 512;

/// A thread's series by status, then route.
type Handles = HashMap<u16, HashMap<String, (Counter, Histogram)>>;

thread_local! {
    /// The series of each (route, status) this thread has answered: looking a series up in
    /// the registry by its labels costs more than the rest of a trivial request's metrics.
    static HANDLES: RefCell<Handles> = RefCell::new(HashMap::new());
}

/// Records one answered request.
pub fn record_request(route: &str, status: u16, elapsed: Duration) {
    // An unknown path would add a series per shape of path: they share one.
    let route = if status == 404 || status == 405 {
        "unmatched"
    } else {
        route
    };
    HANDLES.with_borrow_mut(|handles| {
        if let Some((counter, histogram)) = handles.get(&status).and_then(|r| r.get(route)) {
            counter.increment(1);
            histogram.record(elapsed.as_secs_f64());
            return;
        }
        if handles.values().map(HashMap::len).sum::<usize>() >= HANDLES_PER_THREAD {
            handles.clear();
        }
        let counter = metrics::counter!(
            "sticky_http_requests_total",
            "route" => route.to_owned(),
            "status" => status.to_string()
        );
        let histogram =
            metrics::histogram!("sticky_http_request_duration_seconds", "route" => route.to_owned());
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
        handles
            .entry(status)
            .or_default()
            .insert(route.to_owned(), (counter, histogram));
    });
}

/// `GET /metrics`: the Prometheus text format. With `STICKY_METRICS_TOKEN` set, only for
/// `Authorization: Bearer <token>`.
#[handler]
pub fn endpoint(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    if let Some(token) = &state.metrics_token {
        let given = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        let same: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into();
        if !same {
            return poem::error::ResponseError::as_response(&ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "`/metrics` needs `Authorization: Bearer` with the metrics token",
            ));
        }
    }
    match handle() {
        Some(h) => {
            record_state(&state);
            Response::builder()
                .content_type("text/plain; version=0.0.4")
                .body(h.render())
        }
        None => poem::error::ResponseError::as_response(&ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder is installed in this process",
        )),
    }
}
