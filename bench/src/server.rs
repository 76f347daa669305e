//! The real `sticky-calls` binary as a separate process.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running server.
pub struct Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The server binary next to this one, built in release mode when missing.
pub fn binary() -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()?;
    let path = here.with_file_name("sticky-calls");
    if !path.exists() {
        eprintln!("building the server binary (cargo build --release --bin sticky-calls)...");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--bin", "sticky-calls"])
            .status()?;
        anyhow::ensure!(status.success(), "building the server failed");
        anyhow::ensure!(path.exists(), "no server binary at {}", path.display());
    }
    Ok(path)
}

impl Server {
    /// Starts `sticky-calls serve` on `database_url`, on a free port.
    pub fn start(
        binary: &PathBuf,
        database_url: &str,
        dir: &std::path::Path,
        plans_file: Option<&std::path::Path>,
        worker_threads: Option<u16>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(binary);
        if let Some(file) = plans_file {
            command.env("STICKY_PLANS_FILE", file);
        }
        if let Some(n) = worker_threads {
            command.env("STICKY_WORKER_THREADS", n.to_string());
        }
        let mut child = command
            .arg("serve")
            .env("STICKY_DATABASE_URL", database_url)
            .env("STICKY_BIND", "127.0.0.1:0")
            .env("STICKY_LOG", "warn,poem::server=info")
            .env("STICKY_SECRET_KEY_FILE", dir.join("bench.secret"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .rsplit(':')
                    .next()
                    .filter(|_| line.contains("listening"))
                    .and_then(|p| p.trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                } else if line.contains("ERROR") || line.contains("WARN") {
                    eprintln!("  server: {line}");
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| anyhow::anyhow!("the server did not start"))?;
        Ok(Self { child, port })
    }

    /// CPU time the server has used so far, summed over its threads
    /// (`/proc/PID/task/*/schedstat`, nanoseconds on the CPU).
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).ok()?;
        let mut ns: u64 = 0;
        // A thread that ends between the listing and the read (an idle blocking-pool thread
        // of the server's runtime) is skipped; its time drops out of later sums too, which
        // the callers' saturating differences absorb.
        for task in tasks.flatten() {
            if let Some(t) = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            {
                ns += t;
            }
        }
        Some(std::time::Duration::from_nanos(ns))
    }

    /// Bytes the server has read from storage so far (`read_bytes` of `/proc/PID/io`: reads
    /// the page cache answered are not counted).
    pub fn storage_reads(&self) -> Option<u64> {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).ok()?;
        let line = io.lines().find(|l| l.starts_with("read_bytes:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

/// The server processes of one run (one, or several on one PostgreSQL database), measured
/// together: their CPU time and storage reads summed, their peak memory summed.
pub struct Servers(pub Vec<Server>);

impl Servers {
    /// Summed [`Server::cpu_time`]: `None` when one of them is unreadable.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        self.0.iter().map(Server::cpu_time).sum()
    }

    /// Summed [`Server::storage_reads`].
    pub fn storage_reads(&self) -> Option<u64> {
        self.0.iter().map(Server::storage_reads).sum()
    }

    /// Summed [`Server::peak_rss`] (each process's own peak, which need not have coincided).
    pub fn peak_rss(&self) -> Option<u64> {
        self.0.iter().map(Server::peak_rss).sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time a process (`/proc/{process}`: a process id, or `self`) has used so far in clock
/// ticks, its threads that have ended and the children it has reaped included (`utime`,
/// `stime`, `cutime` and `cstime` of `/proc/{process}/stat`).
fn process_ticks(process: &str) -> Option<u64> {
    parse_process_ticks(&std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?)
}

/// `utime + stime + cutime + cstime` of a `/proc/PID/stat` line: its 14th to 17th fields,
/// counted after the command's name in parentheses (which may hold spaces and parentheses
/// itself).
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    (11..=14).try_fold(0u64, |sum, i| {
        Some(sum + fields.get(i)?.parse::<u64>().ok()?)
    })
}

/// Every process's CPU time so far, in clock ticks ([`process_ticks`]), but the benchmark's
/// own (the load generator) and the servers'.
#[derive(Debug)]
pub struct OtherProcesses(std::collections::HashMap<u32, u64>);

impl OtherProcesses {
    /// Reads `/proc`; `None` where it cannot be read.
    pub fn read(servers: &Servers) -> Option<Self> {
        let mut ours: Vec<u32> = servers.0.iter().map(|s| s.child.id()).collect();
        ours.push(std::process::id());
        let mut ticks = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A process that ended since the listing is skipped: its time counts through its
            // parent's, once reaped.
            if let Some(t) = (!ours.contains(&pid))
                .then(|| process_ticks(&pid.to_string()))
                .flatten()
            {
                ticks.insert(pid, t);
            }
        }
        Some(Self(ticks))
    }

    /// The CPU time, in clock ticks, that these processes used since `earlier`: each one's
    /// growth, all of it for a process that was not there (or whose id a new process took);
    /// a process that started and ended in between counts through the parent that reaped it
    /// (RabbitMQ's server, for the VM it boots every minute).
    pub fn since(&self, earlier: &Self) -> u64 {
        self.0
            .iter()
            .map(|(pid, &now)| match earlier.0.get(pid) {
                Some(&then) if then <= now => now - then,
                _ => now,
            })
            .sum()
    }
}

/// The machine's cores' time so far, summed over all of them (`/proc/stat`, in clock ticks):
/// what every process (server, database, load generator) left idle, and the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineTimes {
    idle: u64,
    total: u64,
}

impl MachineTimes {
    /// From `/proc/stat`'s first line (`cpu  user nice system idle iowait irq softirq steal
    /// ...`): idle counts `idle` and `iowait`; the total, the first eight fields (`guest`
    /// time is counted in `user` already).
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().next()?;
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        if ticks.len() < 5 {
            return None;
        }
        Some(Self {
            idle: ticks[3] + ticks[4],
            total: ticks.iter().sum(),
        })
    }

    /// The share of the cores' time left idle between `earlier` and these times (0 to 1), when
    /// any time passed.
    pub fn idle_since(&self, earlier: &Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        (total > 0).then(|| idle as f64 / total as f64)
    }
}

/// The unit of `/proc`'s times.
#[cfg(target_os = "linux")]
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// The unit of `/proc`'s times (only Linux has it).
#[cfg(not(target_os = "linux"))]
pub fn clock_ticks_per_second() -> u64 {
    100
}

/// The machine's cores' time so far, when readable (Linux).
pub fn machine_times() -> Option<MachineTimes> {
    MachineTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The scheduling priority the benchmark ran at (its nice value), which the server and the
/// load generator share: it starts the server, which inherits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// The nice value of the run (`None` where it cannot be read).
    pub nice: Option<i32>,
    /// The nice value the benchmark was started with, when that was above 0 and it lowered
    /// it to 0.
    pub started_at: Option<i32>,
}

impl Priority {
    /// What the report says of it: nothing at normal priority; a lowered value; or, when the
    /// run stayed at a lower priority, that its latencies include the other processes'.
    pub fn note(&self) -> Option<String> {
        match (self.nice, self.started_at) {
            (Some(0), Some(was)) => Some(format!(
                "Started at nice {was}; the benchmark lowered it to 0 (normal priority) before \
                 starting the server and the load."
            )),
            (Some(n), _) if n > 0 => Some(format!(
                "Run at nice {n}, a lower priority than the machine's other processes at 0, which \
                 take the cores first whenever they run: the latencies include their bursts. \
                 Started by a user allowed to lower it (root, `CAP_SYS_NICE` or `RLIMIT_NICE`), \
                 the benchmark runs at 0."
            )),
            _ => None,
        }
    }
}

/// Puts the benchmark at normal priority (nice 0) when it was started at a lower one and may
/// raise it. Some shells and job runners start commands at nice 5 or more; at that priority
/// the server and the load generator yield the cores to every process at normal priority on
/// the machine (its database and message brokers, their timers and housekeeping), and each
/// of their bursts stalls the paced scenarios (`bench-results/HISTORY.md`, "the benchmark's
/// priority"). A production server does not run below the processes beside it. Call it
/// before any other thread starts: on Linux a nice value belongs to each thread, and new
/// threads and processes inherit their creator's.
pub fn normal_priority() -> Priority {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let Ok(nice) = getpriority_process(None) else {
            return Priority {
                nice: None,
                started_at: None,
            };
        };
        if nice > 0 && setpriority_process(None, 0).is_ok() {
            return Priority {
                nice: getpriority_process(None).ok(),
                started_at: Some(nice),
            };
        }
        Priority {
            nice: Some(nice),
            started_at: None,
        }
    }
    #[cfg(not(target_os = "linux"))]
    Priority {
        nice: None,
        started_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_a_priority_below_normal_and_a_lowered_one() {
        let at = |nice, started_at| Priority { nice, started_at }.note();
        assert_eq!(at(Some(0), None), None);
        assert_eq!(at(None, None), None);
        assert_eq!(at(Some(-5), None), None);
        let lowered = at(Some(0), Some(5)).unwrap();
        assert!(lowered.starts_with("Started at nice 5;"), "{lowered}");
        let low = at(Some(5), None).unwrap();
        assert!(low.starts_with("Run at nice 5,"), "{low}");
        assert!(low.contains("the latencies include their bursts"), "{low}");
    }

    /// Run as this test runs, the benchmark ends at a nice value no higher than it started
    /// with, and at 0 whenever it says it lowered it.
    #[cfg(target_os = "linux")]
    #[test]
    fn normal_priority_never_lowers_the_priority() {
        let before = rustix::process::getpriority_process(None).unwrap();
        let p = std::thread::spawn(normal_priority).join().unwrap();
        let nice = p.nice.unwrap();
        assert!(nice <= before.max(0), "{p:?} from {before}");
        if let Some(was) = p.started_at {
            assert_eq!((was, nice), (before, 0));
        }
    }

    #[test]
    fn idle_share_counts_idle_and_iowait_over_all_time() {
        let before = MachineTimes::parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        let after = MachineTimes::parse("cpu  400 0 150 1000 100 0 0 0 0 0\n").unwrap();
        // 650 ticks passed, 250 of them idle or waiting for I/O.
        let share = after.idle_since(&before).unwrap();
        assert!((share - 250.0 / 650.0).abs() < 1e-9, "{share}");
        assert_eq!(before.idle_since(&before), None);
        assert_eq!(before.idle_since(&after), None);
    }

    #[test]
    fn other_processes_count_their_growth_and_new_processes_whole() {
        let before = OtherProcesses([(1, 100), (2, 50), (3, 500)].into_iter().collect());
        // 1 grew by 20; 2 ended (its parent's growth counts it); 3's id went to a new process
        // with 7 ticks; 4 is new.
        let after = OtherProcesses([(1, 120), (3, 7), (4, 30)].into_iter().collect());
        assert_eq!(after.since(&before), 20 + 7 + 30);
        assert_eq!(before.since(&before), 0);
    }

    #[test]
    fn a_process_cpu_time_is_its_own_and_its_reaped_childrens_ticks() {
        // The name may hold spaces and parentheses; utime 1500, stime 250, cutime 40 and
        // cstime 2 follow it.
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 929 0 0 0 1500 250 40 2 20 0 \
                    3 0 3337 21766144 1088 18446744073709551615";
        assert_eq!(parse_process_ticks(stat), Some(1792));
        assert_eq!(parse_process_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_process_ticks("no name here"), None);
    }

    /// This process's own ticks can be read, and grow with its work.
    #[cfg(target_os = "linux")]
    #[test]
    fn own_ticks_grow_with_work() {
        let before = process_ticks("self").unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_ticks("self").unwrap() > before);
    }

    #[test]
    fn other_text_is_not_read() {
        assert_eq!(MachineTimes::parse("intr 1 2 3\n"), None);
        assert_eq!(MachineTimes::parse("cpu  1 2 x 4 5\n"), None);
        assert_eq!(MachineTimes::parse("cpu  1 2 3\n"), None);
        assert_eq!(MachineTimes::parse(""), None);
    }
}
