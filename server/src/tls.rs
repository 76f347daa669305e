//! HTTPS served directly: `STICKY_TLS_CERT` and `STICKY_TLS_KEY` name PEM files (the
//! certificate chain, leaf first, and its private key), served through rustls with TLS 1.3
//! and 1.2 only (rustls implements nothing older), HTTP/2 and HTTP/1.1 offered by ALPN.
//!
//! Handshakes run in tasks of their own, bounded by a timeout, so that a client that connects
//! and stalls holds up nobody else's connection; finished ones are handed to the server.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use poem::http::uri::Scheme;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{LocalAddr, RemoteAddr};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const READY: usize = 256;

/// The rustls configuration for a certificate chain and key in PEM files.
///
/// # Errors
/// A file that cannot be read, holds no certificate or no private key, or a key that does not
/// match the certificate; the message names the file (never its contents).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("STICKY_TLS_CERT: cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("STICKY_TLS_CERT: {} is not valid PEM", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "STICKY_TLS_CERT: {} holds no certificate (a PEM `CERTIFICATE` block)",
        cert.display()
    );
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        anyhow::anyhow!(
            "STICKY_TLS_KEY: {} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .context("STICKY_TLS_CERT and STICKY_TLS_KEY do not make a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TCP connections with TLS on top (see the module documentation).
pub struct TlsAcceptor {
    inner: TcpAcceptor,
    tls: tokio_rustls::TlsAcceptor,
    ready_tx: mpsc::Sender<(TlsStream<TcpStream>, LocalAddr, RemoteAddr)>,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, LocalAddr, RemoteAddr)>,
}

impl TlsAcceptor {
    /// TLS with `config` over the connections `inner` accepts.
    pub fn new(inner: TcpAcceptor, config: Arc<ServerConfig>) -> Self {
        let (ready_tx, ready) = mpsc::channel(READY);
        Self {
            inner,
            tls: tokio_rustls::TlsAcceptor::from(config),
            ready_tx,
            ready,
        }
    }
}

impl Acceptor for TlsAcceptor {
    type Io = TlsStream<TcpStream>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            tokio::select! {
                Some((io, local, remote)) = self.ready.recv() => {
                    return Ok((io, local, remote, Scheme::HTTPS));
                }
                accepted = self.inner.accept() => {
                    let (stream, local, remote, _) = accepted?;
                    let (tls, ready) = (self.tls.clone(), self.ready_tx.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(io)) => {
                                let _ = ready.send((io, local, remote)).await;
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    }
}
