//! HTTP load from this process against the server process: a fixed number of keep-alive
//! connections, each sending its next request when the previous answer is read (closed loop),
//! or at a fixed rate (open loop; latency then counts from the intended send time, so a slow
//! answer is not hidden by the requests it delayed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::mpsc;

use crate::seed;

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `GET /v1/api-keys/current`: auth and JSON, no database.
    Trivial,
    /// Start for a known caller, by number.
    StartKnownAni,
    /// Start for a known caller, by CRM id.
    StartKnownCrm,
    /// Start for a number nobody has.
    StartUnknown,
    /// End with variables and an intent, for a known customer.
    End,
    /// 50% known by number, 10% by CRM id, 20% unknown, 20% ends.
    Mix,
}

impl Scenario {
    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trivial => "trivial (auth + JSON, no DB)",
            Self::StartKnownAni => "start: known caller by number",
            Self::StartKnownCrm => "start: known caller by CRM id",
            Self::StartUnknown => "start: unknown number",
            Self::End => "end: variables + intent",
            Self::Mix => "mix (50/10/20/20)",
        }
    }
}

/// The service under load: one server process, or several on one database.
#[derive(Clone)]
pub struct Target {
    /// `http://127.0.0.1:PORT` of each process.
    bases: Arc<Vec<String>>,
    /// The process this handle sends to (an index into `bases`).
    node: usize,
    /// API key.
    pub key: String,
    /// Seeded customers.
    pub customers: u64,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Target {
    /// A client for the server processes at `bases` (at least one), sending to the first.
    pub fn new(bases: Vec<String>, key: String, customers: u64) -> Self {
        assert!(!bases.is_empty(), "no server to send to");
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(connector);
        Self {
            bases: Arc::new(bases),
            node: 0,
            key,
            customers,
            client,
        }
    }

    /// The same service, sending to its processes in turn: the `worker`-th connection goes to
    /// process `worker % processes` (what a load balancer spreading connections does).
    pub fn for_worker(&self, worker: u64) -> Self {
        let mut t = self.clone();
        t.node = usize::try_from(worker).unwrap_or(0) % self.bases.len();
        t
    }

    /// Sends one request; `Ok(body)` for a 2xx.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Bytes> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.bases[self.node]))
            .header("authorization", format!("Bearer {}", self.key));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            anyhow::bail!("{status}: {}", String::from_utf8_lossy(&bytes))
        }
    }
}

/// One request of a scenario; `n` makes call ids unique, `pick` chooses the customer.
fn request(
    s: Scenario,
    run: u64,
    n: u64,
    pick: u64,
    customers: u64,
) -> (&'static str, &'static str, Option<String>) {
    let i = pick % customers;
    let call_id = format!("bench-{run}-{n}");
    match s {
        Scenario::Trivial => ("GET", "/v1/api-keys/current", None),
        Scenario::StartKnownAni => (
            "POST",
            "/v1/calls/start",
            Some(json!({"call_id": call_id, "identity_hints": {"ani": seed::number(i), "dnis": "+18005550100"}}).to_string()),
        ),
        Scenario::StartKnownCrm => {
            // Customers with a CRM id are the 70% with i % 10 < 7.
            let j = i - i % 10 + (i % 7);
            (
                "POST",
                "/v1/calls/start",
                Some(json!({"call_id": call_id, "identity_hints": {"external_ids": {"crm_id": seed::crm_id(j.min(customers - 1)).unwrap_or_default()}}}).to_string()),
            )
        }
        Scenario::StartUnknown => (
            "POST",
            "/v1/calls/start",
            Some(json!({"call_id": call_id, "identity_hints": {"ani": seed::unknown_number(pick)}}).to_string()),
        ),
        Scenario::End => (
            "POST",
            "/v1/calls/end",
            Some(json!({
                "call_id": call_id, "customer_ref": seed::customer_ref(i),
                "intent": "billing_question", "intent_status": "open",
                "identity_hints": {"ani": seed::number(i)},
                "variables": {"last_topic": "billing", "plan": "gold", "callback": n.is_multiple_of(2),
                              "summary": "Asked about the invoice; callback promised."}
            }).to_string()),
        ),
        Scenario::Mix => {
            let kind = match n % 10 {
                0..=4 => Scenario::StartKnownAni,
                5 => Scenario::StartKnownCrm,
                6 | 7 => Scenario::StartUnknown,
                _ => Scenario::End,
            };
            request(kind, run, n, pick, customers)
        }
    }
}

/// What a scenario measured.
pub struct Measured {
    /// Scenario.
    pub scenario: Scenario,
    /// Intended rate for an open-loop run.
    pub rate: Option<f64>,
    /// Which of consecutive windows of one paced load this is (1-based), and how many.
    pub window: Option<(u32, u32)>,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
    /// First error seen, for the report.
    pub first_error: Option<String>,
    /// CPU time the server spent during the run (all its threads), when readable.
    pub server_cpu: Option<Duration>,
    /// Bytes the server read from storage (not the page cache) during the run, when readable.
    pub storage_reads: Option<u64>,
    /// The share of the machine's cores left idle during the run (0 to 1), when readable.
    pub cores_idle: Option<f64>,
    /// CPU time the machine spent during the run on anything but the servers and the load
    /// generator (the database's server when it runs here, other services, the kernel's
    /// threads), when readable.
    pub others_cpu: Option<Duration>,
    /// What the server did after the run, until it was quiet, when readable.
    pub after: Option<After>,
}

/// The work a scenario left the server to do once its requests were answered.
#[derive(Clone, Copy, Debug)]
pub struct After {
    /// CPU time the server spent on it (all its threads).
    pub cpu: Duration,
    /// How long until it was quiet.
    pub wall: Duration,
    /// `false` when the benchmark stopped waiting before the server was quiet.
    pub quiet: bool,
}

impl Measured {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU time spent after the run per request, in microseconds, and whether the server
    /// was quiet at the end of it: work deferred by the requests (see `settle` in `main.rs`).
    pub fn cpu_after_per_request_us(&self) -> Option<(f64, bool)> {
        let after = self.after?;
        (self.ok + self.errors > 0).then(|| {
            (
                after.cpu.as_secs_f64() * 1e6 / (self.ok + self.errors) as f64,
                after.quiet,
            )
        })
    }

    /// Server CPU time per answered request, in microseconds: the cost of a request, steadier
    /// than throughput on a machine whose cores the load generator shares.
    pub fn server_cpu_per_request_us(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.ok + self.errors > 0)
            .then(|| cpu.as_secs_f64() * 1e6 / (self.ok + self.errors) as f64)
    }

    /// Storage reads per answered request, in KB: 0 when the database was in the page cache.
    pub fn storage_kb_per_request(&self) -> Option<f64> {
        let bytes = self.storage_reads?;
        (self.ok + self.errors > 0).then(|| bytes as f64 / 1e3 / (self.ok + self.errors) as f64)
    }
}

static RUN: AtomicU64 = AtomicU64::new(0);

/// Runs a scenario for `duration` with `concurrency` connections; with `rate`, paced at that
/// many requests per second in total.
///
/// Paced, the send times come from a thread of their own that sleeps until each one (the
/// operating system's timers are precise to tens of microseconds; tokio's sleep wakes on the
/// next millisecond, which added up to a millisecond of the generator's own lateness to every
/// latency), and any connection free takes the next one. Latency counts from that intended
/// time: when every connection is still waiting for an answer, the requests due meanwhile are
/// counted as waiting too (no coordinated omission).
pub async fn run(
    target: &Target,
    scenario: Scenario,
    concurrency: u64,
    duration: Duration,
    rate: Option<f64>,
) -> Measured {
    let run = RUN.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1000;
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let schedule = rate.map(|r| pacer(started, deadline, Duration::from_secs_f64(1.0 / r)));
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let target = target.for_worker(worker);
        let counter = counter.clone();
        let schedule = schedule.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut pick = worker.wrapping_mul(2_654_435_761);
            loop {
                let sent = match &schedule {
                    Some(due) => match due.lock().await.recv().await {
                        Some(at) => at,
                        None => break,
                    },
                    None if Instant::now() >= deadline => break,
                    None => Instant::now(),
                };
                let n = counter.fetch_add(1, Ordering::Relaxed);
                pick = pick
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let (method, path, body) = request(scenario, run, n, pick >> 17, target.customers);
                match target.send(method, path, body).await {
                    Ok(_) => {
                        ok += 1;
                        let _ = hist.record(sent.elapsed().as_micros().max(1) as u64);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (hist, ok, errors, first_error)
        }));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for t in tasks {
        let (h, o, e, f) = t.await.expect("worker");
        latency.add(h).expect("same bounds");
        ok += o;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    Measured {
        scenario,
        rate,
        window: None,
        ok,
        errors,
        elapsed: started.elapsed(),
        latency,
        first_error,
        server_cpu: None,
        storage_reads: None,
        cores_idle: None,
        others_cpu: None,
        after: None,
    }
}

/// The send times of a paced run, one every `interval` from `started` until `deadline`, each
/// handed out when it is due by a thread that sleeps until then. The channel closes at the
/// deadline.
fn pacer(
    started: Instant,
    deadline: Instant,
    interval: Duration,
) -> Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Instant>>> {
    let (due, schedule) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut at = started;
        while at < deadline {
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if due.send(at).is_err() {
                return;
            }
            at += interval;
        }
    });
    Arc::new(tokio::sync::Mutex::new(schedule))
}

/// Read-your-writes under load: an end saves a fresh value, the start right after must see it.
/// Returns (checked, violations).
pub async fn read_your_writes(target: &Target, rounds: u64) -> anyhow::Result<(u64, u64)> {
    let mut violations = 0;
    let run = RUN.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1000;
    for r in 0..rounds {
        let i = (r * 7919 + 13) % target.customers;
        if seed::shares_number(i) {
            continue;
        }
        let token = format!("ryw-{run}-{r}");
        target
            .send("POST", "/v1/calls/end", Some(json!({"call_id": format!("{token}-end"), "customer_ref": seed::customer_ref(i), "identity_hints": {"ani": seed::number(i)}, "variables": {"ryw": token}}).to_string()))
            .await?;
        let body = target
            .send("POST", "/v1/calls/start", Some(json!({"call_id": format!("{token}-start"), "identity_hints": {"ani": seed::number(i)}}).to_string()))
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        if v["context"]["variables"]["ryw"] != token.as_str() {
            violations += 1;
        }
    }
    Ok((rounds, violations))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pacer hands out one send time per interval until the deadline, each not before it
    /// is due, and then closes.
    #[tokio::test]
    async fn the_pacer_hands_out_each_send_time_when_due() {
        let started = Instant::now();
        let interval = Duration::from_millis(3);
        let schedule = pacer(started, started + Duration::from_millis(30), interval);
        let mut times = Vec::new();
        while let Some(at) = schedule.lock().await.recv().await {
            assert!(Instant::now() >= at, "handed out before it was due");
            times.push(at);
        }
        assert_eq!(times.len(), 10);
        assert_eq!(times[0], started);
        assert!(times.windows(2).all(|w| w[1] - w[0] == interval));
    }
}
