//! The real `sticky-calls` binary as a child process, for tests that need one: it is started
//! on a database with its own secret-key file, its port is read from its log, requests go over
//! TCP, and it can be killed (SIGKILL) with everything it printed collected.

#![allow(dead_code)] // Each test binary uses a part of this.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sticky-calls");

/// A running server.
pub struct Server {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    stdout: Arc<Mutex<String>>,
}

/// What a stopped server printed.
pub struct Printed {
    /// Standard output (keys).
    pub stdout: String,
    /// Standard error (the log).
    pub stderr: String,
}

/// A response.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl Server {
    /// Starts `sticky-calls serve` on `database_url`, keeping its secret-key file in `dir`.
    /// `env` adds or overrides variables (`STICKY_BOOTSTRAP_API_KEY`, `STICKY_LOG` ...).
    pub fn start(database_url: &str, dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env("STICKY_DATABASE_URL", database_url)
            .env("STICKY_BIND", "127.0.0.1:0")
            .env("STICKY_BCRYPT_COST", "4")
            .env("STICKY_LOG", "info")
            .env("STICKY_SECRET_KEY_FILE", dir.join("sticky-calls.secret"))
            .env_remove("STICKY_SECRET_KEY")
            .env_remove("STICKY_BOOTSTRAP_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("serve starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let err_pipe = child.stderr.take().expect("stderr");
        let lines = Arc::clone(&stderr);
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                if line.contains("listening")
                    && let Some(port) = line
                        .split("port=")
                        .nth(1)
                        .and_then(|p| p.split_whitespace().next())
                        .and_then(|p| p.parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
                lines.lock().expect("lines").push(line);
            }
        });
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut out_pipe = child.stdout.take().expect("stdout");
        let text = Arc::clone(&stdout);
        let out_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.lock()
                    .expect("stdout")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "serve did not log its port:\n{}",
                    stderr.lock().expect("lines").join("\n")
                );
            }
        };
        Self {
            child,
            port,
            stderr,
            readers: vec![err_reader, out_reader],
            stdout,
        }
    }

    /// Sends a request and reads the whole answer.
    ///
    /// # Panics
    /// When the server does not answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Sends a request; an error when the connection fails or closes without an answer (the
    /// server was killed).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no answer"))?;
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        let chunked = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
        });
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        Ok(Reply { status, body })
    }

    /// A JSON request with a Bearer key; an error when the server is gone.
    pub fn try_json(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: &serde_json::Value,
    ) -> std::io::Result<Reply> {
        let auth = format!("Bearer {key}");
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.try_request(
            method,
            path,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            text.as_bytes(),
        )
    }

    /// A JSON request with a Bearer key.
    ///
    /// # Panics
    /// When the server does not answer.
    pub fn json(&self, method: &str, path: &str, key: &str, body: &serde_json::Value) -> Reply {
        self.try_json(method, path, key, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Waits until a line of standard output satisfies `found`, and returns it.
    ///
    /// # Panics
    /// After a minute without one.
    pub fn stdout_line(&self, found: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = self
                .stdout
                .lock()
                .expect("stdout")
                .lines()
                .map(str::trim)
                .find(|l| found(l))
            {
                return line.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no such line on stdout: {:?}",
                self.stdout.lock().expect("stdout")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.stderr.lock().expect("lines").clone()
    }

    /// Kills the process (SIGKILL) while others still hold this `Server`.
    pub fn kill_now(&self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
    }

    /// Kills the process (SIGKILL: no shutdown code runs) and returns what it printed.
    pub fn kill(mut self) -> Printed {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Printed {
            stdout: self.stdout.lock().expect("stdout").clone(),
            stderr: self.stderr.lock().expect("lines").join("\n"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A PostgreSQL database of its own on the server `STICKY_TEST_POSTGRES_URL` names.
///
/// # Panics
/// When the variable is not set (PostgreSQL tests are `#[ignore]`d: asked for, they must run).
pub async fn postgres_database() -> String {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let admin = std::env::var("STICKY_TEST_POSTGRES_URL")
        .expect("STICKY_TEST_POSTGRES_URL names the PostgreSQL server for this test");
    let name = format!(
        "sc_test_{}_{}",
        std::process::id(),
        sticky_core::random_token(10)
    );
    let conn = Database::connect(&admin).await.expect("connect");
    conn.execute_raw(Statement::from_string(
        DbBackend::Postgres,
        format!("CREATE DATABASE {name}"),
    ))
    .await
    .expect("create a test database");
    let _ = conn.close().await;
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database name");
    format!("{base}/{name}")
}
