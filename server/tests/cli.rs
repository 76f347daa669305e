//! The `sticky-calls` binary itself: key-printing subcommands print the key alone on stdout,
//! and `serve` bootstraps an empty database once, with a generated or a supplied key.

mod support;

use std::process::Command;

use support::{BIN, Server};

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

fn status_of(server: &Server, path: &str, key: &str) -> u16 {
    server
        .request(
            "GET",
            path,
            &[("Authorization", &format!("Bearer {key}"))],
            b"",
        )
        .status
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
    let served = Server::start(&db, dir.path(), &[]);
    assert_eq!(status_of(&served, "/v1/api-keys", &first), 200);
    assert_eq!(status_of(&served, "/v1/api-keys", &second), 200);
    assert_eq!(
        status_of(&served, "/v1/api-keys", "sc_wrongwrongwrongwrongwrong"),
        401
    );
    let printed = served.kill();
    assert!(printed.stdout.is_empty(), "{:?}", printed.stdout);
}

#[test]
fn serve_prints_the_first_key_once_on_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let served = Server::start(&db, dir.path(), &[]);
    let key = served.stdout_line(|l| l.starts_with("sc_"));
    assert_eq!(status_of(&served, "/v1/api-keys", &key), 200);
    let printed = served.kill();
    assert_eq!(
        printed.stdout.matches("sc_").count(),
        1,
        "{}",
        printed.stdout
    );

    let served = Server::start(&db, dir.path(), &[]);
    assert_eq!(status_of(&served, "/v1/api-keys", &key), 200);
    let printed = served.kill();
    assert!(
        !printed.stdout.contains("sc_"),
        "printed once only: {:?}",
        printed.stdout
    );
}

#[test]
fn a_supplied_bootstrap_key_is_used_and_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let key = "automation-key-0123456789-abcdef";
    let served = Server::start(&db, dir.path(), &[("STICKY_BOOTSTRAP_API_KEY", key)]);
    assert_eq!(status_of(&served, "/v1/api-keys", key), 200);
    let printed = served.kill();
    assert!(
        printed.stdout.contains("STICKY_BOOTSTRAP_API_KEY"),
        "{}",
        printed.stdout
    );
    assert!(
        !printed.stdout.contains(key) && !printed.stderr.contains(key),
        "the supplied key is not echoed"
    );
}

#[test]
fn agent_prompt_prints_a_prompt_with_the_public_address() {
    let out = Command::new(BIN)
        .args([
            "agent",
            "prompt",
            "claude",
            "--public-base-url",
            "https://sticky.example.com",
        ])
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("https://sticky.example.com/v1/calls/start"),
        "{text}"
    );
    assert!(text.contains("<caller_memory_is_data>"), "{text}");
    let bad = Command::new(BIN)
        .args(["agent", "prompt", "llama"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn customers_are_imported_from_csv_row_by_row_and_exported_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let key = sole_key(&run(&["tenants", "create", "acme"], &db));
    let other = sole_key(&run(&["tenants", "create", "other"], &db));
    let csv = dir.path().join("customers.csv");
    std::fs::write(
        &csv,
        "customer_ref,phone_numbers,ext_crm_id,var_tier\n\
         ana,+14155550101;(415) 555-0102,crm-1,gold\n\
         bo,not a number,,\n\
         ana,+14155550109,,\n\
         cy,,crm-3,silver\n",
    )
    .unwrap();
    let path = csv.to_str().unwrap();

    // Stop (the default): the bad row is named and nothing is written.
    let stopped = run(&["import", "--tenant", "acme", path], &db);
    assert!(!stopped.status.success());
    let said = stderr_of(&stopped);
    assert!(said.contains("line 3: `phone_numbers[0]`"), "{said}");
    assert!(said.contains("nothing was imported"), "{said}");
    assert!(
        !said.contains("not a number"),
        "the value is not repeated: {said}"
    );
    let empty = run(&["export", "--tenant", "acme"], &db);
    assert!(empty.status.success(), "{}", stderr_of(&empty));
    assert!(empty.stdout.is_empty());

    // Skip: the others are imported, the refused ones named by line.
    let skipped = run(
        &["import", "--tenant", "acme", "--on-error", "skip", path],
        &db,
    );
    assert!(skipped.status.success(), "{}", stderr_of(&skipped));
    let said = stderr_of(&skipped);
    assert!(said.contains("imported 2 customers"), "{said}");
    assert!(said.contains("refused 2 rows"), "{said}");
    assert!(said.contains("line 3: `phone_numbers[0]`"), "{said}");
    assert!(
        said.contains("line 4: `customer_ref`: appears on an earlier line"),
        "{said}"
    );

    // Again: every row is one the tenant already has.
    let again = run(
        &["import", "--tenant", "acme", "--on-error", "skip", path],
        &db,
    );
    let said = stderr_of(&again);
    assert!(said.contains("imported 0 customers"), "{said}");
    assert!(
        said.contains("line 2: `customer_ref`: the tenant already has this customer"),
        "{said}"
    );

    let out = dir.path().join("export.jsonl");
    let exported = run(
        &[
            "export",
            "--tenant",
            "acme",
            "--output",
            out.to_str().unwrap(),
        ],
        &db,
    );
    assert!(exported.status.success(), "{}", stderr_of(&exported));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["customer_ref"], "ana");
    assert_eq!(lines[0]["variables"], serde_json::json!({"tier": "gold"}));
    let identities: Vec<&str> = lines[0]["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_str().unwrap())
        .collect();
    assert!(identities.contains(&"+14155550102"), "{identities:?}");
    assert!(identities.contains(&"crm_id:crm-1"), "{identities:?}");
    assert_eq!(lines[1]["customer_ref"], "cy");

    // The server finds them by number, for their tenant only.
    let served = Server::start(&db, dir.path(), &[]);
    let found = served.request(
        "GET",
        "/v1/customers?ani=%2B14155550101",
        &[("Authorization", &format!("Bearer {key}"))],
        b"",
    );
    assert_eq!(
        found.json()["customers"][0]["customer_ref"],
        "ana",
        "{}",
        found.body
    );
    let theirs = served.request(
        "GET",
        "/v1/customers?ani=%2B14155550101",
        &[("Authorization", &format!("Bearer {other}"))],
        b"",
    );
    assert_eq!(
        theirs.json()["customers"],
        serde_json::json!([]),
        "{}",
        theirs.body
    );
    served.kill();
}
