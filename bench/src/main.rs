//! `sticky-calls-bench`: how fast is call start, end and the HTTP stack under it?
//!
//! For each database (SQLite; PostgreSQL when a URL is given): seed N customers through the
//! engine's bulk import, start the real `sticky-calls` binary on that database, drive HTTP load
//! from this process, and report throughput, latency percentiles, errors, the ratio to a
//! trivial endpoint, the server's CPU per request, the share of the machine's cores left idle,
//! the CPU that other processes on the machine used meanwhile, the server's peak RSS and the
//! database size, with the nice value it ran at (see `server::normal_priority`), as a markdown
//! table
//! (printed and written to `bench-results/latest.md`) and JSON (`bench-results/latest.json`).

mod load;
mod seed;
mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use load::{Measured, Scenario, Target};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::json;
use sticky_core::Engine;
use sticky_core::keys::KeyStore;

/// Benchmark the Sticky Calls server.
#[derive(Parser, Debug)]
#[command(name = "sticky-calls-bench")]
struct Args {
    /// Customers to seed.
    #[arg(long, default_value_t = 1_000_000)]
    customers: u64,
    /// Concurrent connections of the closed-loop scenarios.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Seconds per scenario (default: 4 up to 100k customers, else 10).
    #[arg(long)]
    seconds: Option<u64>,
    /// PostgreSQL server to also run on (a database is created and dropped on it), e.g.
    /// `postgres://postgres@127.0.0.1:5432/test`.
    #[arg(long, env = "STICKY_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Customers to seed on PostgreSQL (default: `--customers`; its bulk import is slower).
    #[arg(long)]
    postgres_customers: Option<u64>,
    /// Skip SQLite.
    #[arg(long)]
    no_sqlite: bool,
    /// Where the databases and the results go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Run only the scenarios whose name contains this text (the trivial endpoint always
    /// runs: the ratios need it), e.g. `--only "known caller by number"`. For profiling.
    #[arg(long)]
    only: Option<String>,
    /// Keep the seeded SQLite file (and its API key) in `--out` and reuse it on the next run
    /// with the same `--customers`, instead of seeding again. For profiling; what each run
    /// writes stays in it (every start's call row, in the database or in its open calls' journal,
    /// and the ends'), so long series drift: compare builds in alternating runs.
    #[arg(long)]
    reuse: bool,
    /// The plan of the benchmark's tenant (default `unlimited`: no limits to check). With a
    /// plan that has limits, every request goes through the rate limiter and every call
    /// through the quota's count; give limits above the load's rate (in `--plans-file`) to
    /// measure their cost rather than their refusals.
    #[arg(long)]
    plan: Option<String>,
    /// A plans file for the server (`STICKY_PLANS_FILE`).
    #[arg(long)]
    plans_file: Option<PathBuf>,
    /// Server processes on the PostgreSQL database, each connection of the load sent to one of
    /// them in turn (as a load balancer spreads connections). SQLite always runs one: its file
    /// has one writing process.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=8))]
    nodes: u64,
    /// Threads each server process runs requests on (`STICKY_WORKER_THREADS`; default: one
    /// per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=512))]
    server_workers: Option<u16>,
}

/// What seeding produced, kept beside a reused SQLite file.
#[derive(serde::Serialize, serde::Deserialize)]
struct Seeded {
    customers: u64,
    /// [`seed::SHAPE`] when it was seeded: a file of another shape is seeded again.
    #[serde(default)]
    shape: u32,
    key: String,
    seed_secs: f64,
    rows: [u64; 5],
}

impl Seeded {
    fn report(&self) -> sticky_core::engine::ImportReport {
        let [customers, identities, variables, calls, intents] = self.rows;
        sticky_core::engine::ImportReport {
            customers,
            identities,
            variables,
            calls,
            intents,
        }
    }
}

struct BackendReport {
    backend: &'static str,
    /// Server processes.
    nodes: usize,
    customers: u64,
    seed_secs: f64,
    rows: sticky_core::engine::ImportReport,
    results: Vec<Measured>,
    peak_rss: Option<u64>,
    db_bytes: Option<u64>,
    ryw: (u64, u64),
}

/// `url` with its database replaced by `name`, its query (`?sslmode=disable`,
/// `?host=/var/run/postgresql` for the Unix socket) kept.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (path, query) = url.split_once('?').map_or((url, ""), |(p, q)| (p, q));
    let (base, _) = path
        .rsplit_once('/')
        .filter(|(base, _)| base.contains("://"))
        .ok_or_else(|| anyhow::anyhow!("the PostgreSQL URL needs a database name"))?;
    Ok(if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    })
}

/// Requests per second of the light, fixed-rate run of known callers' starts.
const LIGHT_RATE: f64 = 1000.0;

/// Runs a load and records the servers' CPU time and storage reads during it.
async fn measure(servers: &server::Servers, run: impl Future<Output = Measured>) -> Measured {
    let mut m = measure_unsettled(servers, run).await;
    m.after = settle(servers).await;
    m
}

/// [`measure`] without waiting for the servers to settle afterwards.
async fn measure_unsettled(
    servers: &server::Servers,
    run: impl Future<Output = Measured>,
) -> Measured {
    let before = (
        servers.cpu_time(),
        servers.storage_reads(),
        server::machine_times(),
        server::OtherProcesses::read(servers),
    );
    let mut m = run.await;
    m.cores_idle = before
        .2
        .zip(server::machine_times())
        .and_then(|(b, a)| a.idle_since(&b));
    m.server_cpu = before
        .0
        .zip(servers.cpu_time())
        .map(|(b, a)| a.saturating_sub(b));
    m.others_cpu = before
        .3
        .zip(server::OtherProcesses::read(servers))
        .map(|(b, a)| {
            Duration::from_secs_f64(a.since(&b) as f64 / server::clock_ticks_per_second() as f64)
        });
    m.storage_reads = before
        .1
        .zip(servers.storage_reads())
        .map(|(b, a)| a.saturating_sub(b));
    m
}

/// Consecutive windows of one paced load, each measured on its own, so that a stall shows in
/// one window's p99 instead of being averaged away over a longer run; the servers settle only
/// after the last one.
async fn paced_windows(
    servers: &server::Servers,
    target: &Target,
    scenario: Scenario,
    concurrency: u64,
    window: Duration,
    rate: f64,
) -> Vec<Measured> {
    let mut out = Vec::new();
    for k in 1..=PACED_WINDOWS {
        let mut m = measure_unsettled(
            servers,
            load::run(target, scenario, concurrency, window, Some(rate)),
        )
        .await;
        m.window = Some((k, PACED_WINDOWS));
        out.push(m);
    }
    if let Some(last) = out.last_mut() {
        last.after = settle(servers).await;
    }
    out
}

/// Consecutive windows of the paced runs at half the known callers' starts' throughput.
const PACED_WINDOWS: u32 = 3;

/// Waits until the server has done the work a scenario left behind, so that the next one
/// does not pay for it, and says what that work cost: the open calls' journal retiring the
/// rows of starts that never ended (a benchmark's starts never end; an idle server moves
/// them into the database once nothing came for a tenth of a second), the checkpoint copying
/// what was written. The server counts as quiet once it used under 5% of a core in each
/// [`SETTLE_LOOK`] of [`SETTLE_QUIET`] (past the 0.2 s at most after which the server counts
/// as idle).
async fn settle(server: &server::Servers) -> Option<load::After> {
    let started = Instant::now();
    let first = server.cpu_time()?;
    let mut last = first;
    let mut still = Duration::ZERO;
    loop {
        tokio::time::sleep(SETTLE_LOOK).await;
        let now = server.cpu_time()?;
        if now.saturating_sub(last) < SETTLE_LOOK / 20 {
            still += SETTLE_LOOK;
        } else {
            still = Duration::ZERO;
        }
        last = now;
        let quiet = still >= SETTLE_QUIET;
        if quiet || started.elapsed() >= SETTLE_LIMIT {
            let after = load::After {
                cpu: now.saturating_sub(first),
                wall: started.elapsed(),
                quiet,
            };
            if !quiet {
                eprintln!(
                    "   the server was still busy {:.0} s after the scenario: going on",
                    after.wall.as_secs_f64()
                );
            } else if after.wall > SETTLE_QUIET + Duration::from_secs(1) {
                eprintln!(
                    "   the server worked on for {:.1} s after it ({:.1} s of CPU)",
                    after.wall.as_secs_f64(),
                    after.cpu.as_secs_f64()
                );
            }
            return Some(after);
        }
    }
}

/// How long [`settle`] watches the server's CPU at a time.
const SETTLE_LOOK: Duration = Duration::from_millis(100);
/// How long the server must stay quiet for [`settle`].
const SETTLE_QUIET: Duration = Duration::from_millis(500);
/// How long [`settle`] waits at most.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// Copies the SQLite log into the database file and empties it, so that no scenario pays for
/// checkpointing what the seed (or an earlier run on a reused file) wrote: the server's
/// checkpoint thread would otherwise copy up to 256 MB of it during the first scenarios.
async fn checkpoint(url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let db = Database::connect(url).await?;
    db.execute_raw(Statement::from_string(
        DbBackend::Sqlite,
        "PRAGMA wal_checkpoint(TRUNCATE)",
    ))
    .await?;
    db.close().await?;
    eprintln!(
        "   log checkpointed into the database file in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads the SQLite file (and its log), so that a scenario starts with the database in the
/// operating system's page cache, as on a server that has been answering calls; the seed, an
/// earlier run or the time since may have left only part of it there (some virtual machines
/// hand idle page cache back to their host, this one at about 20 MB/s: hence before every
/// scenario, not once). Each scenario reports what it still read from storage.
///
/// It reads as SQLite does, without read-ahead: on Linux 6.x, read-ahead of a sequential read
/// caches ext4 files in large folios, and a 4 KB write into one costs ~15 times as much as
/// into a page cached on its own (measured here: 46 µs against 3 µs), which made the
/// checkpoint thread, which writes pages into the file, a quarter of the server's CPU. A
/// server's cache fills from SQLite's own page-sized reads, so its pages are cached singly.
/// With `evict`, what is cached is dropped first (after a sync), so the cache is in that state
/// whatever read the file before (`cp`, an earlier version of this benchmark).
fn warm(file: &Path, evict: bool) -> anyhow::Result<()> {
    use std::io::Read;
    let started = Instant::now();
    let mut bytes = 0u64;
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", file.display());
        let Ok(mut f) = std::fs::OpenOptions::new()
            .read(true)
            .write(evict)
            .open(&path)
        else {
            continue;
        };
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{Advice, fadvise};
            if evict {
                f.sync_all()?;
                fadvise(&f, 0, None, Advice::DontNeed)?;
            }
            fadvise(&f, 0, None, Advice::Random)?;
        }
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
    }
    eprintln!(
        "   database read into the page cache{}: {:.0} MB in {:.1} s",
        if evict { " (evicted first)" } else { "" },
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Sends ends (known customers, variables and an intent) until the server's log file stops
/// growing: it has reached the length at which the server starts it over, and from then on its
/// frames are written over blocks the file already has. A server keeps that file from its
/// first writes until it stops, but the benchmark starts each server with none (the log is
/// emptied before, see [`checkpoint`]), and growing it costs the writer thread a block
/// allocation and zeroing per frame: profiled at 1M customers, 40% more writer CPU during the
/// first 2-3 s of writes, which all fell on the first scenario that writes. What those ends
/// save stays in the database. (Ends, because a start's row waits in the open calls' journal,
/// not in the log: see ARCHITECTURE.md.)
///
/// The log also starts over early whenever the checkpoint catches up with the writer, so the
/// file may stand still for a moment before it has grown to its working size (seen: 209 of
/// 271 MB after one second): it counts as grown once it has not grown for [`GROW_QUIET`].
async fn grow_log(target: &Target, file: &Path, concurrency: u64) {
    let log = PathBuf::from(format!("{}-wal", file.display()));
    let size = || std::fs::metadata(&log).map_or(0, |m| m.len());
    let started = Instant::now();
    let starts = std::cell::Cell::new(0);
    let steps = |d: Duration| usize::try_from(d.as_millis() / GROW_STEP.as_millis()).unwrap_or(1);
    let grown = until_it_stops_growing(size, steps(GROW_LIMIT), steps(GROW_QUIET), || async {
        let m = load::run(target, Scenario::End, concurrency, GROW_STEP, None).await;
        starts.set(starts.get() + m.ok);
        if let Some(e) = &m.first_error {
            eprintln!("   first error while growing the log: {e}");
        }
    })
    .await;
    eprintln!(
        "   log file {} ({:.0} MB) by {} ends in {:.1} s",
        if grown {
            "grown to its working size"
        } else if size() == 0 {
            "not found (is the server on another file?)"
        } else {
            "still growing after the time allowed"
        },
        size() as f64 / 1e6,
        starts.get(),
        started.elapsed().as_secs_f64()
    );
}

/// How long [`grow_log`] sends load between two looks at the file.
const GROW_STEP: Duration = Duration::from_millis(500);
/// How long the file must stand still to count as grown.
const GROW_QUIET: Duration = Duration::from_secs(2);
/// How long [`grow_log`] sends load at most.
const GROW_LIMIT: Duration = Duration::from_secs(60);

/// Runs `step` until `size` is not zero and has not grown during the last `quiet` steps
/// (`true`), or `steps` times (`false`).
async fn until_it_stops_growing<F, Fut>(
    size: impl Fn() -> u64,
    steps: usize,
    quiet: usize,
    mut step: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut largest = size();
    let mut still = 0;
    for _ in 0..steps {
        step().await;
        let now = size();
        if now > largest {
            largest = now;
            still = 0;
        } else if now > 0 {
            still += 1;
            if still >= quiet {
                return true;
            }
        }
    }
    false
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn run_backend(
    args: &Args,
    customers: u64,
    backend: &'static str,
    url: String,
    admin: Option<(String, String)>,
) -> anyhow::Result<BackendReport> {
    let kept = args.out.join("bench.seed.json");
    let reused: Option<Seeded> = (admin.is_none() && args.reuse)
        .then(|| std::fs::read(&kept).ok())
        .flatten()
        .and_then(|b| serde_json::from_slice::<Seeded>(&b).ok())
        .filter(|s| s.customers == customers && s.shape == seed::SHAPE);
    let seeded = match reused {
        Some(s) => {
            eprintln!("== {backend}: reusing the {customers} customers seeded before");
            s
        }
        None => {
            let s = seed_backend(customers, backend, &url).await?;
            if admin.is_none() && args.reuse {
                std::fs::write(&kept, serde_json::to_vec(&s)?)?;
            }
            s
        }
    };
    let (key, seed_secs, rows) = (seeded.key.clone(), seeded.seed_secs, seeded.report());
    if admin.is_none() {
        checkpoint(&url).await?;
        warm(&args.out.join("bench.db"), true)?;
    }

    if let Some(plan) = &args.plan {
        let db = sticky_core::db::connect_and_migrate(&url).await?;
        let keys = KeyStore::new(db.clone(), 4, Duration::from_secs(60));
        let tenant = keys
            .find_tenant("bench")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no tenant `bench`"))?;
        sticky_core::billing::BillingStore::new(db)
            .set_plan(tenant.id, plan, "bench")
            .await?;
    }
    // Several processes only on PostgreSQL; started one after the other (each migrates).
    let nodes = if admin.is_some() { args.nodes } else { 1 };
    let mut started = Vec::new();
    for _ in 0..nodes {
        started.push(server::Server::start(
            &server::binary()?,
            &url,
            &args.out,
            args.plans_file.as_deref(),
            args.server_workers,
        )?);
    }
    let server = server::Servers(started);
    let target = Target::new(
        server
            .0
            .iter()
            .map(|s| format!("http://127.0.0.1:{}", s.port))
            .collect(),
        key,
        customers,
    );
    let secs = args
        .seconds
        .unwrap_or(if customers <= 100_000 { 4 } else { 10 });
    let d = Duration::from_secs(secs);
    // Warm the key cache and connections.
    let _ = load::run(
        &target,
        Scenario::Trivial,
        args.concurrency,
        Duration::from_secs(1),
        None,
    )
    .await;
    let rewarm = || {
        if admin.is_none() {
            warm(&args.out.join("bench.db"), false)
        } else {
            Ok(())
        }
    };
    let mut results = Vec::new();
    let wanted = |s: Scenario| {
        s == Scenario::Trivial
            || args
                .only
                .as_ref()
                .is_none_or(|o| s.name().contains(o.as_str()))
    };
    let scenarios: Vec<Scenario> = [
        Scenario::Trivial,
        Scenario::StartKnownAni,
        Scenario::StartKnownCrm,
        Scenario::StartUnknown,
        Scenario::End,
        Scenario::Mix,
    ]
    .into_iter()
    .filter(|&s| wanted(s))
    .collect();
    // Every scenario but the trivial endpoint writes.
    if admin.is_none() && scenarios.iter().any(|&s| s != Scenario::Trivial) {
        grow_log(&target, &args.out.join("bench.db"), args.concurrency).await;
    }
    for s in scenarios {
        rewarm()?;
        eprintln!("   {} ...", s.name());
        let m = measure(&server, load::run(&target, s, args.concurrency, d, None)).await;
        if let Some(e) = &m.first_error {
            eprintln!("   first error: {e}");
        }
        results.push(m);
    }
    if let Some(known) = results
        .iter()
        .find(|m| m.scenario == Scenario::StartKnownAni)
        .map(Measured::throughput)
    {
        rewarm()?;
        eprintln!(
            "   start: known caller at half of its throughput ({:.0}/s), {PACED_WINDOWS} windows ...",
            known / 2.0
        );
        results.extend(
            paced_windows(
                &server,
                &target,
                Scenario::StartKnownAni,
                args.concurrency,
                d,
                known / 2.0,
            )
            .await,
        );
        // The same start at a fixed, light rate: its latency without queueing, comparable
        // between runs of different sizes (the growth from 10k to 1M customers).
        rewarm()?;
        eprintln!("   start: known caller at {LIGHT_RATE:.0}/s ...");
        let light = measure(
            &server,
            load::run(
                &target,
                Scenario::StartKnownAni,
                args.concurrency,
                d,
                Some(LIGHT_RATE),
            ),
        )
        .await;
        results.push(light);
        // The trivial endpoint at the half rate: the latency floor of the HTTP stack, the
        // load generator and this machine's scheduling, against which to read the paced
        // starts' latencies.
        // In windows like the starts': a stall that shows in both is the machine's (or the
        // load generator's), not the start path's.
        rewarm()?;
        eprintln!(
            "   trivial at {:.0}/s, {PACED_WINDOWS} windows ...",
            known / 2.0
        );
        results.extend(
            paced_windows(
                &server,
                &target,
                Scenario::Trivial,
                args.concurrency,
                d,
                known / 2.0,
            )
            .await,
        );
    }
    let ryw = if args.only.is_none() {
        eprintln!("   read-your-writes ...");
        load::read_your_writes(&target, 200).await?
    } else {
        (0, 0)
    };
    let peak_rss = server.peak_rss();
    drop(server);

    let db_bytes = match &admin {
        None => {
            let file = url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            Some(size(file.clone()) + size(format!("{file}-wal")))
        }
        Some((admin_url, name)) => {
            let conn = Database::connect(admin_url).await?;
            let row = conn
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!("SELECT pg_database_size('{name}') AS n"),
                ))
                .await?;
            let n = row
                .and_then(|r| r.try_get::<i64>("", "n").ok())
                .map(|n| n as u64);
            conn.execute_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ))
            .await?;
            n
        }
    };
    Ok(BackendReport {
        backend,
        nodes: usize::try_from(nodes).unwrap_or(1),
        customers,
        seed_secs,
        rows,
        results,
        peak_rss,
        db_bytes,
        ryw,
    })
}

/// Seeds `customers` customers through the engine's bulk import.
async fn seed_backend(customers: u64, backend: &str, url: &str) -> anyhow::Result<Seeded> {
    eprintln!("== {backend}: seeding {customers} customers");
    let db = sticky_core::db::connect_and_migrate(url).await?;
    let keys = KeyStore::new(db.clone(), 4, Duration::from_secs(60));
    let tenant = keys.create_tenant("bench").await?;
    let key = keys
        .create_key(tenant.id, Some("bench".into()), None)
        .await?
        .secret;
    // As the server runs it: on a SQLite file, the import is a job of the writer thread.
    let engine = Engine::open(db.clone(), Default::default()).await?;
    let (seed_time, rows) = seed::seed(&engine, tenant.id, customers).await?;
    eprintln!(
        "   {} customers, {} identities, {} variables, {} calls, {} intents in {:.1}s",
        rows.customers,
        rows.identities,
        rows.variables,
        rows.calls,
        rows.intents,
        seed_time.as_secs_f64()
    );
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA wal_checkpoint(TRUNCATE)",
        ))
        .await?;
    }
    // Planner statistics after the bulk load, on PostgreSQL only: SQLite's planner does well on
    // these indexed point queries without them, and with the statistics ANALYZE writes
    // (`sqlite_stat4`) SQLite recompiles a statement whenever a bound value changes, which
    // cost a measurable share of every start here.
    if db.get_database_backend() == DbBackend::Postgres {
        db.execute_raw(Statement::from_string(DbBackend::Postgres, "ANALYZE"))
            .await?;
    }
    drop(engine);
    db.close().await?;

    Ok(Seeded {
        customers,
        shape: seed::SHAPE,
        key,
        seed_secs: seed_time.as_secs_f64(),
        rows: [
            rows.customers,
            rows.identities,
            rows.variables,
            rows.calls,
            rows.intents,
        ],
    })
}

fn markdown(args: &Args, priority: server::Priority, reports: &[BackendReport]) -> String {
    let mut out = format!(
        "# Sticky Calls benchmark\n\n{} connections, {} cores, {}, tenant plan `{}`{}{}.\n",
        args.concurrency,
        std::thread::available_parallelism().map_or(0, usize::from),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        args.plan.as_deref().unwrap_or("unlimited"),
        args.server_workers
            .map(|n| format!(", {n} server worker threads"))
            .unwrap_or_default(),
        priority
            .nice
            .map(|n| format!(", nice {n}"))
            .unwrap_or_default()
    );
    if let Some(note) = priority.note() {
        out.push_str(&format!("\n{note}\n"));
    }
    out.push_str(&format!(
        "\nCores idle: the share of the machine's cores that no process (server, database, load \
         generator) used during the scenario. A closed-loop scenario that leaves cores idle is \
         not bound by the CPU alone (its requests also wait: for the database, for each other, \
         for a core the scheduler has yet to give them): its req/s is what {} connections get, \
         not necessarily the most the machine can serve.\n\nOthers' CPU: the CPU time the \
         machine spent during the scenario on anything but the servers and the load generator \
         (the database's server when it runs on this machine, other services, the kernel's \
         threads; a process that ended counts through the parent that reaped it), from each \
         process's own times in 10 ms ticks. At half the known starts' throughput the cores \
         have little to spare: another process's burst (a service's periodic job that takes a \
         core for a few hundred milliseconds) shows here and in that window's p99 at once.\n",
        args.concurrency
    ));
    for r in reports {
        let trivial = r.results[0].throughput();
        out.push_str(&format!(
            "\n## {}, {} customers{}\n\nSeed: {:.1} s ({} customers, {} identities, {} variables, {} calls, {} intents). \
             Database: {}. Server peak RSS{}: {}. Read-your-writes: {} violations in {} end→start pairs.\n\n",
            r.backend,
            r.customers,
            if r.nodes > 1 { format!(", {} server processes", r.nodes) } else { String::new() },
            r.seed_secs,
            r.rows.customers,
            r.rows.identities,
            r.rows.variables,
            r.rows.calls,
            r.rows.intents,
            r.db_bytes.map_or("?".into(), |b| format!("{:.0} MB", b as f64 / 1e6)),
            if r.nodes > 1 { " (summed)" } else { "" },
            r.peak_rss.map_or("?".into(), |b| format!("{:.0} MB", b as f64 / 1e6)),
            r.ryw.1,
            r.ryw.0,
        ));
        out.push_str("| scenario | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | vs trivial | server CPU µs/req | CPU after, µs/req | storage reads KB/req | cores idle | others' CPU ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for m in &r.results {
            let name = match (m.rate, m.window) {
                (Some(rate), Some((k, of))) => format!(
                    "{} at {:.0}/s (paced, window {k} of {of})",
                    m.scenario.name(),
                    rate
                ),
                (Some(rate), None) => format!("{} at {:.0}/s (paced)", m.scenario.name(), rate),
                (None, _) => m.scenario.name().to_owned(),
            };
            let h = &m.latency;
            out.push_str(&format!(
                "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.0}% | {} | {} | {} | {} | {} |\n",
                m.throughput(),
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                m.errors,
                100.0 * m.throughput() / trivial.max(1e-9),
                m.server_cpu_per_request_us()
                    .map_or("?".into(), |us| format!("{us:.0}")),
                m.cpu_after_per_request_us()
                    .map_or("?".into(), |(us, quiet)| {
                        format!("{us:.0}{}", if quiet { "" } else { " (still busy)" })
                    }),
                m.storage_kb_per_request()
                    .map_or("?".into(), |kb| format!("{kb:.1}")),
                m.cores_idle
                    .map_or("?".into(), |idle| format!("{:.0}%", 100.0 * idle)),
                m.others_cpu
                    .map_or("?".into(), |cpu| format!("{:.0}", cpu.as_secs_f64() * 1e3)),
            ));
        }
        for (scenario, what) in [
            (Scenario::StartKnownAni, "Known callers' starts"),
            (Scenario::Trivial, "The trivial endpoint"),
        ] {
            let windows: Vec<&Measured> = r
                .results
                .iter()
                .filter(|m| m.window.is_some() && m.scenario == scenario)
                .collect();
            let p99s: Vec<f64> = windows
                .iter()
                .map(|m| ms(m.latency.value_at_quantile(0.99)))
                .collect();
            if let Some(worst) = p99s.iter().copied().reduce(f64::max) {
                out.push_str(&format!(
                    "\n{what} at half the known starts' throughput, p99 of each of {} consecutive windows: {} ms (worst {worst:.2} ms); others' CPU in each: {} ms.\n",
                    p99s.len(),
                    p99s.iter()
                        .map(|p| format!("{p:.2}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    windows
                        .iter()
                        .map(|m| m
                            .others_cpu
                            .map_or("?".into(), |cpu| format!("{:.0}", cpu.as_secs_f64() * 1e3)))
                        .collect::<Vec<_>>()
                        .join(", "),
                ));
            }
        }
    }
    out
}

fn json_report(
    args: &Args,
    priority: server::Priority,
    reports: &[BackendReport],
) -> serde_json::Value {
    json!({
        "concurrency": args.concurrency,
        "nice": priority.nice,
        "nice_at_start": priority.started_at,
        "server_worker_threads": args.server_workers,
        "backends": reports.iter().map(|r| json!({
            "backend": r.backend,
            "server_processes": r.nodes,
            "customers": r.customers,
            "seed_seconds": r.seed_secs,
            "rows": {"customers": r.rows.customers, "identities": r.rows.identities, "variables": r.rows.variables, "calls": r.rows.calls, "intents": r.rows.intents},
            "database_bytes": r.db_bytes,
            "server_peak_rss_bytes": r.peak_rss,
            "read_your_writes": {"checked": r.ryw.0, "violations": r.ryw.1},
            "scenarios": r.results.iter().map(|m| json!({
                "scenario": m.scenario.name(),
                "paced_rate": m.rate,
                "window": m.window.map(|(k, of)| json!({"index": k, "of": of})),
                "requests_per_second": m.throughput(),
                "ok": m.ok,
                "errors": m.errors,
                "first_error": m.first_error,
                "latency_ms": {
                    "p50": ms(m.latency.value_at_quantile(0.5)),
                    "p90": ms(m.latency.value_at_quantile(0.9)),
                    "p99": ms(m.latency.value_at_quantile(0.99)),
                    "p99_9": ms(m.latency.value_at_quantile(0.999)),
                },
                "ratio_to_trivial": m.throughput() / r.results[0].throughput().max(1e-9),
                "server_cpu_us_per_request": m.server_cpu_per_request_us(),
                "after": m.after.map(|a| json!({
                    "server_cpu_us_per_request": m.cpu_after_per_request_us().map(|(us, _)| us),
                    "seconds": a.wall.as_secs_f64(),
                    "quiet": a.quiet,
                })),
                "server_storage_read_kb_per_request": m.storage_kb_per_request(),
                "cores_idle": m.cores_idle,
                "others_cpu_ms": m.others_cpu.map(|cpu| cpu.as_secs_f64() * 1e3),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Writes what has been measured so far (a later backend's failure keeps the earlier ones).
fn write(args: &Args, priority: server::Priority, reports: &[BackendReport]) -> anyhow::Result<()> {
    std::fs::write(
        args.out.join("latest.md"),
        markdown(args, priority, reports),
    )?;
    std::fs::write(
        args.out.join("latest.json"),
        serde_json::to_string_pretty(&json_report(args, priority, reports))?,
    )?;
    eprintln!(
        "written to {}/latest.md and latest.json",
        args.out.display()
    );
    Ok(())
}

/// The SQLite file's URL; the file is removed first unless it is reused.
fn fresh_sqlite(out: &Path, reuse: bool, customers: u64) -> anyhow::Result<String> {
    let file = out.join("bench.db");
    let kept = std::fs::read(out.join("bench.seed.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Seeded>(&b).ok())
        .is_some_and(|s| s.customers == customers && s.shape == seed::SHAPE);
    if !(reuse && kept && file.exists()) {
        remove_sqlite(&file);
        let _ = std::fs::remove_file(out.join("bench.seed.json"));
    }
    Ok(format!("sqlite://{}", file.display()))
}

/// Removes a SQLite file with its log and the server's open calls' journal
/// (`<file>-starts.<n>`), which belongs to that file.
fn remove_sqlite(file: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    let prefix = format!(
        "{}-starts.",
        file.file_name().unwrap_or_default().to_string_lossy()
    );
    let dir = file.parent().unwrap_or(Path::new("."));
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// mimalloc, as in the server: glibc's malloc took a third of the seed's time in its own
/// bookkeeping, and the load generator shares the server's cores.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before the runtime's threads exist, so that they and the server inherit it.
    let priority = server::normal_priority();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args, priority))
}

async fn run(args: Args, priority: server::Priority) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let mut reports = Vec::new();
    if !args.no_sqlite {
        let url = fresh_sqlite(&args.out, args.reuse, args.customers)?;
        reports.push(run_backend(&args, args.customers, "SQLite", url, None).await?);
        write(&args, priority, &reports)?;
    }
    if let Some(admin) = args.postgres_url.as_ref().filter(|u| !u.is_empty()) {
        let name = format!("sc_bench_{}", std::process::id());
        let conn = Database::connect(admin.as_str()).await?;
        conn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("CREATE DATABASE {name}"),
        ))
        .await?;
        conn.close().await?;
        let url = with_database(admin, &name)?;
        let customers = args.postgres_customers.unwrap_or(args.customers);
        reports.push(
            run_backend(
                &args,
                customers,
                "PostgreSQL",
                url,
                Some((admin.clone(), name)),
            )
            .await?,
        );
        write(&args, priority, &reports)?;
    }
    println!("{}", markdown(&args, priority, &reports));
    if !args.reuse {
        remove_sqlite(&args.out.join("bench.db"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn the_database_is_replaced_and_the_query_kept() {
        let url = |u: &str| with_database(u, "b").unwrap();
        assert_eq!(
            url("postgres://p@127.0.0.1:5432/test"),
            "postgres://p@127.0.0.1:5432/b"
        );
        assert_eq!(
            url("postgres://p@localhost/test?host=/var/run/postgresql"),
            "postgres://p@localhost/b?host=/var/run/postgresql"
        );
        assert_eq!(
            url("postgres://p@h/test?sslmode=disable"),
            "postgres://p@h/b?sslmode=disable"
        );
        assert!(with_database("postgres:test", "b").is_err());
    }

    /// Runs [`until_it_stops_growing`] over a file whose size after each step is the next of
    /// `sizes` (it starts at the first), asking for 2 quiet steps; returns what it returned and
    /// the steps it ran.
    async fn grow(sizes: &[u64], steps: usize) -> (bool, usize) {
        let ran = Cell::new(0);
        let grown = until_it_stops_growing(
            || sizes[ran.get().min(sizes.len() - 1)],
            steps,
            2,
            || {
                ran.set(ran.get() + 1);
                async {}
            },
        )
        .await;
        (grown, ran.get())
    }

    #[tokio::test]
    async fn the_log_is_grown_until_it_stands_still_for_long_enough() {
        // No file yet, then growing, then written over its own blocks.
        assert_eq!(grow(&[0, 0, 100, 250, 271, 271, 271], 60).await, (true, 6));
        // One still step is not enough: the log started over early, then grew past it.
        assert_eq!(
            grow(&[0, 209, 209, 260, 271, 271, 271], 60).await,
            (true, 6)
        );
        // A file emptied meanwhile stands still too (it is no larger than before).
        assert_eq!(grow(&[0, 300, 10, 10], 60).await, (true, 3));
        // Still growing when the steps run out.
        assert_eq!(grow(&[0, 1, 2, 3, 4, 5], 3).await, (false, 3));
        // No file at all is never grown.
        assert_eq!(grow(&[0], 5).await, (false, 5));
    }
}
