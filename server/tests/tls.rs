//! HTTPS served directly (`STICKY_TLS_CERT`, `STICKY_TLS_KEY`), with a certificate authority
//! and a `localhost` certificate the test generates: TLS 1.3 and 1.2 are served (the API
//! included), TLS 1.1 is refused, plain HTTP gets no answer, and a bad certificate stops the
//! start before the database is touched.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use support::{BIN, Server};

const KEY: &str = "tls-test-key-0123456789abcdef0123";

/// A CA, and a certificate for `localhost` signed by it: (CA PEM, leaf PEM, leaf key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Sticky Calls test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// Writes the files; returns (CA file, certificate file, key file).
fn write_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, leaf, key) = certificates();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca).unwrap();
    std::fs::write(&paths.1, leaf).unwrap();
    std::fs::write(&paths.2, key).unwrap();
    paths
}

/// One HTTPS request to `localhost` with a client that trusts `ca` and speaks only
/// `version`: the negotiated version and the raw answer.
fn https(
    port: u16,
    ca: &Path,
    version: &'static rustls::SupportedProtocolVersion,
    request: &str,
) -> (rustls::ProtocolVersion, String) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    // The server closes after answering (`Connection: close`); rustls reports a close
    // without close_notify as an error once the answer is in.
    let _ = tls.read_to_end(&mut answer);
    let version = tls.conn.protocol_version().unwrap();
    (version, String::from_utf8_lossy(&answer).into_owned())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// Whether `openssl s_client` completes a handshake with the server at `version` (`-tls1_1`,
/// `-tls1_2`), with OpenSSL's own floor lowered so that only the server can refuse.
fn openssl_handshakes(port: u16, ca: &Path, version: &str) -> bool {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
            version,
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-CAfile",
        ])
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("Verify return code: 0 (ok)")
}

#[test]
fn https_with_tls_1_2_and_1_3_only() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let url = format!("sqlite://{}", dir.path().join("tls.db").display());
    let server = Server::start(
        &url,
        dir.path(),
        &[
            ("STICKY_TLS_CERT", cert.to_str().unwrap()),
            ("STICKY_TLS_KEY", key.to_str().unwrap()),
            ("STICKY_BOOTSTRAP_API_KEY", KEY),
        ],
    );
    let (version, answer) = https(server.port, &ca, &rustls::version::TLS13, &get("/healthz"));
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (version, answer) = https(server.port, &ca, &rustls::version::TLS12, &get("/healthz"));
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The API itself, authenticated.
    let body = r#"{"call_id":"tls-1","identity_hints":{"ani":"+14155550123"}}"#;
    let start = format!(
        "POST /v1/calls/start HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (_, answer) = https(server.port, &ca, &rustls::version::TLS13, &start);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""call_id":"tls-1""#), "{answer}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = server.try_request("GET", "/healthz", &[], b"");
    assert!(
        plain.as_ref().is_err() || plain.as_ref().is_ok_and(|r| r.status != 200),
        "{plain:?}"
    );

    // TLS 1.1 is refused; the same client at TLS 1.2 gets through.
    assert!(openssl_handshakes(server.port, &ca, "-tls1_2"));
    assert!(!openssl_handshakes(server.port, &ca, "-tls1_1"));
    server.kill();
}

#[test]
fn a_bad_certificate_stops_the_start_before_the_database_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = write_certificates(dir.path());
    let database = dir.path().join("never.db");
    let url = format!("sqlite://{}", database.display());
    let serve = |cert: &Path, key: Option<&Path>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env("STICKY_DATABASE_URL", &url)
            .env("STICKY_BIND", "127.0.0.1:0")
            .env("STICKY_SECRET_KEY", "0f".repeat(32))
            .env("STICKY_TLS_CERT", cert)
            .env_remove("STICKY_TLS_KEY");
        if let Some(key) = key {
            cmd.env("STICKY_TLS_KEY", key);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A certificate without its key.
    let e = serve(&cert, None);
    assert!(e.contains("--tls-key"), "{e}");
    // A key where the certificate should be, and the reverse.
    let e = serve(&key, Some(&key));
    assert!(
        e.contains("STICKY_TLS_CERT") && e.contains("no certificate"),
        "{e}"
    );
    let e = serve(&cert, Some(&cert));
    assert!(e.contains("STICKY_TLS_KEY"), "{e}");
    // A key that is not the certificate's.
    let (_, other_cert, _) = write_certificates(&tempfile::tempdir().unwrap().keep());
    let e = serve(&other_cert, Some(&key));
    assert!(e.contains("usable pair"), "{e}");
    // A missing file.
    let e = serve(&dir.path().join("missing.pem"), Some(&key));
    assert!(e.contains("cannot read"), "{e}");
    // None of them made a database (or a tenant whose first key nobody saw).
    assert!(!database.exists());
}
