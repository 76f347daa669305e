//! The `sticky-calls` binary itself: key-printing subcommands print the key alone on stdout,
//! and `serve` bootstraps an empty database once, with a generated or a supplied key.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sticky-calls");

fn db_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("cli.db").display())
}

fn run(args: &[&str], db: &str) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("STICKY_DATABASE_URL", db)
        .env("STICKY_BCRYPT_COST", "4")
        .output()
        .expect("the binary runs")
}

fn sole_key(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stdout: {stdout:?}");
    assert!(
        lines[0].starts_with("sc_") && lines[0].len() == 43,
        "{stdout:?}"
    );
    lines[0].to_owned()
}

/// A running `serve`: its stdout lines and port.
struct Served {
    child: Child,
    port: u16,
    stdout: Vec<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(db: &str, bootstrap: Option<&str>) -> Served {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env("STICKY_DATABASE_URL", db)
        .env("STICKY_BIND", "127.0.0.1:0")
        .env("STICKY_BCRYPT_COST", "4")
        .env("STICKY_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(k) = bootstrap {
        cmd.env("STICKY_BOOTSTRAP_API_KEY", k);
    }
    let mut child = cmd.spawn().expect("serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(port) = line
                .split("port=")
                .nth(1)
                .and_then(|p| p.split_whitespace().next())
                .and_then(|p| p.parse::<u16>().ok())
            {
                let _ = tx.send(port);
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("serve logs its port");
    // Everything printed before "listening" is already in the pipe.
    let mut stdout = child.stdout.take().unwrap();
    let (otx, orx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = otx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let mut text = String::new();
    while let Ok(chunk) = orx.recv_timeout(Duration::from_millis(300)) {
        text.push_str(&chunk);
    }
    Served {
        child,
        port,
        stdout: text.lines().map(str::to_owned).collect(),
    }
}

fn status_of(port: u16, path: &str, key: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response[9..12].parse().unwrap()
}

#[test]
fn tenants_and_keys_commands_print_the_key_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let first = sole_key(&run(&["tenants", "create", "acme"], &db));
    let second = sole_key(&run(&["keys", "create", "--tenant", "acme"], &db));
    assert_ne!(first, second);

    let again = run(&["tenants", "create", "acme"], &db);
    assert!(!again.status.success(), "a tenant name is taken once");
    assert!(again.stdout.is_empty());
    let unknown = run(&["keys", "create", "--tenant", "nobody"], &db);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no tenant named"));

    // Both keys work against the server, which does not bootstrap a database with tenants.
    let served = serve(&db, None);
    assert!(served.stdout.is_empty(), "{:?}", served.stdout);
    assert_eq!(status_of(served.port, "/v1/api-keys", &first), 200);
    assert_eq!(status_of(served.port, "/v1/api-keys", &second), 200);
    assert_eq!(
        status_of(served.port, "/v1/api-keys", "sc_wrongwrongwrongwrongwrong"),
        401
    );
}

#[test]
fn serve_prints_the_first_key_once_on_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let key = {
        let served = serve(&db, None);
        let key = served
            .stdout
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with("sc_"))
            .unwrap_or_else(|| panic!("a key on stdout: {:?}", served.stdout))
            .to_owned();
        assert_eq!(status_of(served.port, "/v1/api-keys", &key), 200);
        key
    };
    let served = serve(&db, None);
    assert!(
        served.stdout.is_empty(),
        "printed once only: {:?}",
        served.stdout
    );
    assert_eq!(status_of(served.port, "/v1/api-keys", &key), 200);
}

#[test]
fn a_supplied_bootstrap_key_is_used_and_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let key = "automation-key-0123456789-abcdef";
    let served = serve(&db, Some(key));
    let printed = served.stdout.join("\n");
    assert!(printed.contains("STICKY_BOOTSTRAP_API_KEY"), "{printed}");
    assert!(!printed.contains(key), "the supplied key is not echoed");
    assert_eq!(status_of(served.port, "/v1/api-keys", key), 200);
}
