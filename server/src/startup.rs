//! Startup as a value: [`Application::build`] connects the database, runs migrations,
//! bootstraps the first tenant, and binds the listener (port 0 allowed); `main` and the tests
//! use the very same builder.

use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::web::Json;
use poem::{
    Endpoint, EndpointExt, IntoResponse, Response, Route, Server, handler, http::StatusCode,
};
use sticky_core::keys::{KeyStore, NewKey};
use sticky_core::secrets::{SecretStore, ServerKey};
use sticky_core::{Engine, db};

use crate::api;
use crate::connectors;
use crate::error::ApiError;
use crate::middleware::request_context;
use crate::settings::Settings;
use crate::state::AppState;

/// The listening socket: plain HTTP, or HTTPS (`STICKY_TLS_CERT`).
enum Bound {
    Plain(TcpAcceptor),
    Tls(crate::tls::TlsAcceptor),
}

/// A built, bound, not yet running server.
pub struct Application {
    state: Arc<AppState>,
    acceptor: Bound,
    port: u16,
    bootstrap_key: Option<NewKey>,
}

impl Application {
    /// Connects, migrates, bootstraps and binds.
    ///
    /// # Errors
    /// When the database cannot be opened or migrated, the bootstrap key is unacceptable, or
    /// the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Everything that can be refused is checked, and the port bound, before the database
        // is touched: a first start that fails creates no tenant whose key nobody saw.
        let public_base_url = match settings.public_base_url.clone() {
            Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                anyhow::bail!("STICKY_PUBLIC_BASE_URL must start with https:// or http://")
            }
            other => other,
        };
        let tls = match &settings.tls {
            Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
            None => None,
        };
        let server_key = load_server_key(&settings)?;
        let plans = sticky_core::plans::Plans::load(settings.plans_file.as_deref())
            .map_err(|e| anyhow::anyhow!(e))?;
        let tcp = TcpListener::bind(settings.bind.as_str())
            .into_acceptor()
            .await
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", settings.bind))?;
        let port = tcp
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().map(std::net::SocketAddr::port))
            .unwrap_or_default();
        let acceptor = match tls {
            Some(config) => Bound::Tls(crate::tls::TlsAcceptor::new(tcp, config)),
            None => Bound::Plain(tcp),
        };
        // Before the first connection: it is a setting of each SQLite connection.
        if settings.full_sync {
            db::set_full_sync(true);
        }
        let db = db::connect_with_pool(&settings.database_url, settings.db_max_connections).await?;
        let keys = KeyStore::new(db.clone(), settings.bcrypt_cost, settings.key_cache_ttl);
        let secrets = SecretStore::new(db.clone(), &server_key);
        // The phone-number metadata loads on first use (about half a second in a debug
        // build): load it now, so that the first caller with a national number does not wait.
        let _ = sticky_core::domain::Ani::parse("2025550123", settings.default_region);
        let engine = Engine::open_with_cache(db, settings.default_region, settings.cache_bytes)
            .await
            .map_err(|e| anyhow::anyhow!("opening the database for the call path: {e}"))?;
        let billing = sticky_core::billing::BillingStore::new(engine.db().clone());
        for (tenant, plan) in billing.all_plans().await? {
            plans
                .require(&plan)
                .map_err(|e| anyhow::anyhow!("tenant `{tenant}`: {e}"))?;
        }
        let bootstrap_key = keys
            .bootstrap(settings.bootstrap_api_key.clone())
            .await
            .map_err(|e| anyhow::anyhow!("bootstrapping tenant `default`: {e}"))?;
        let limits = Arc::new(crate::limits::Limits::new(plans, billing));
        let state = Arc::new(AppState {
            engine,
            keys,
            secrets,
            connectors: connectors::registry(),
            public_base_url,
            verifications: crate::state::verification_limiter(),
            counted_keys: crate::state::counted_keys(),
            metrics_token: settings.metrics_token,
            limits: limits.clone(),
            signup_open: settings.signup_open,
            signups: crate::state::signup_limiter(),
            stripe_webhook_secret: settings.stripe_webhook_secret,
        });
        // Installed before the first request, so that every request is counted.
        if crate::metrics::handle().is_none() {
            tracing::warn!("another metrics recorder is installed: GET /metrics answers 503");
        }
        crate::coherence::spawn(&state);
        spawn_retention_sweep(&state);
        crate::limits::spawn_flusher(limits);
        Ok(Self {
            state,
            acceptor,
            port,
            bootstrap_key,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The key created for tenant `default` when the database was empty.
    pub fn bootstrap_key(&self) -> Option<&NewKey> {
        self.bootstrap_key.as_ref()
    }

    /// Shared state (tests use it to create tenants and keys).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// The complete HTTP application, for poem's test client.
    pub fn endpoint(&self) -> impl Endpoint + use<> {
        routes(self.state.clone())
    }

    /// Serves until Ctrl-C or SIGTERM, then drains for up to 10 seconds.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let routes = routes(self.state);
        let grace = Some(Duration::from_secs(10));
        match self.acceptor {
            Bound::Plain(a) => {
                Server::new_with_acceptor(a)
                    .run_with_graceful_shutdown(routes, shutdown_signal(), grace)
                    .await
            }
            Bound::Tls(a) => {
                Server::new_with_acceptor(a)
                    .run_with_graceful_shutdown(routes, shutdown_signal(), grace)
                    .await
            }
        }
    }
}

/// The key that encrypts platform secrets: from the settings, else from its file, else a new
/// one written to that file (owner-only).
fn load_server_key(settings: &Settings) -> anyhow::Result<ServerKey> {
    if let Some(hex) = &settings.secret_key {
        return ServerKey::from_hex(hex).map_err(|e| anyhow::anyhow!("STICKY_SECRET_KEY: {e}"));
    }
    let path = &settings.secret_key_file;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            ServerKey::from_hex(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hex = ServerKey::generate_hex();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            std::io::Write::write_all(&mut file, hex.as_bytes())?;
            tracing::info!(path = %path.display(), "created a new server key file");
            ServerKey::from_hex(&hex).map_err(|e| anyhow::anyhow!(e))
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = ctrl_c => {},
            () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}

#[handler]
fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[handler]
async fn readyz(state: poem::web::Data<&Arc<AppState>>) -> Response {
    match state.engine.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            poem::error::ResponseError::as_response(&ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database did not answer",
            ))
        }
    }
}

/// Every route of the server.
pub fn routes(state: Arc<AppState>) -> impl Endpoint + use<> {
    let api = api::service(state.clone());
    let docs = api.swagger_ui();
    // The document with what poem-openapi cannot declare added (see `api::contract`).
    let document = api::contract::document(state.clone());
    let allowed = Arc::new(allowed_methods(&document.to_string()));
    let spec = poem::get(poem::endpoint::make_sync(move |_| {
        poem::web::Json(document.clone())
    }));
    Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .at("/v1/connectors/:platform", poem::post(connectors::auto))
        .at(
            "/v1/connectors/:platform/start",
            poem::post(connectors::start).get(connectors::start),
        )
        .at(
            "/v1/connectors/:platform/end",
            poem::post(connectors::end).get(connectors::end),
        )
        .at("/healthz", healthz)
        .at("/readyz", readyz)
        .at("/metrics", poem::get(crate::metrics::endpoint))
        .at("/mcp", crate::mcp::endpoint(&state))
        .at("/postman.json", poem::get(crate::postman::endpoint))
        .at(
            "/v1/billing/stripe/webhook",
            poem::post(crate::stripe::webhook),
        )
        .data(state)
        .around(request_context)
        .around(move |ep, req| {
            let allowed = allowed.clone();
            async move {
                let path = req.uri().path().to_owned();
                let mut resp = ep.call(req).await?.into_response();
                if resp.status() == poem::http::StatusCode::METHOD_NOT_ALLOWED
                    && let Some(methods) = allow_for(&allowed, &path)
                    && let Ok(v) = poem::http::HeaderValue::from_str(&methods)
                {
                    resp.headers_mut().insert("allow", v);
                }
                Ok(resp)
            }
        })
}

/// Each route's path (segments; `None` for a parameter) and the methods it answers.
type Allowed = Vec<(Vec<Option<String>>, Vec<String>)>;

/// The methods of every route: the OpenAPI document's, the connector webhooks' and the probes'.
fn allowed_methods(spec: &str) -> Allowed {
    let segments = |path: &str| -> Vec<Option<String>> {
        path.trim_matches('/')
            .split('/')
            .map(|s| (!(s.starts_with('{') || s.starts_with(':'))).then(|| s.to_owned()))
            .collect()
    };
    let mut out: Allowed = Vec::new();
    let doc: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
    for (path, item) in doc
        .get("paths")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
    {
        let methods: Vec<String> = item
            .as_object()
            .into_iter()
            .flatten()
            .map(|(m, _)| m.to_ascii_uppercase())
            .collect();
        out.push((segments(path), methods));
    }
    for (path, methods) in [
        ("/v1/connectors/:platform", &["POST"][..]),
        ("/v1/connectors/:platform/start", &["GET", "POST"][..]),
        ("/v1/connectors/:platform/end", &["GET", "POST"][..]),
        ("/healthz", &["GET"][..]),
        ("/readyz", &["GET"][..]),
        ("/metrics", &["GET"][..]),
        ("/mcp", &["POST"][..]),
        ("/postman.json", &["GET"][..]),
        ("/v1/billing/stripe/webhook", &["POST"][..]),
        ("/openapi.json", &["GET"][..]),
    ] {
        out.push((
            segments(path),
            methods.iter().map(|m| (*m).to_owned()).collect(),
        ));
    }
    out
}

/// The `Allow` header for `path`: the methods of the routes it matches.
fn allow_for(allowed: &Allowed, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let matching: Vec<&(Vec<Option<String>>, Vec<String>)> = allowed
        .iter()
        .filter(|(pattern, _)| {
            pattern.len() == parts.len()
                && pattern
                    .iter()
                    .zip(&parts)
                    .all(|(p, s)| p.as_deref().is_none_or(|p| p == *s) && !s.is_empty())
        })
        .collect();
    // The router prefers a literal segment to a parameter: only the most literal routes
    // answer (`/v1/calls/start` is not `/v1/calls/{call_id}`).
    let literal = |p: &Vec<Option<String>>| p.iter().filter(|s| s.is_some()).count();
    let best = matching.iter().map(|(p, _)| literal(p)).max()?;
    let mut methods: Vec<&str> = matching
        .iter()
        .filter(|(p, _)| literal(p) == best)
        .flat_map(|(_, m)| m.iter().map(String::as_str))
        .collect();
    methods.sort_unstable();
    methods.dedup();
    (!methods.is_empty()).then(|| methods.join(", "))
}

/// How often tenants' retention periods and variables' times to live are applied.
const RETENTION_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Applies tenants' retention periods and deletes expired variables a minute after start and
/// then every hour (see `Engine::sweep_retention` and `Engine::sweep_expired_variables`); the
/// task ends with the application.
fn spawn_retention_sweep(state: &Arc<AppState>) {
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut wait = std::time::Duration::from_secs(60);
        loop {
            tokio::time::sleep(wait).await;
            wait = RETENTION_SWEEP_EVERY;
            let Some(s) = state.upgrade() else { return };
            match s.engine.sweep_retention(sticky_core::now()).await {
                Ok(0) => {}
                Ok(calls) => {
                    tracing::info!(calls, "retention: deleted calls past their tenant's period")
                }
                Err(e) => tracing::warn!(error = %e, "retention sweep failed; it runs again later"),
            }
            match s.engine.sweep_expired_variables(sticky_core::now()).await {
                Ok(0) => {}
                Ok(variables) => {
                    tracing::info!(
                        variables,
                        "retention: deleted variables past their time to live"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "variable sweep failed; it runs again later"),
            }
        }
    });
}
