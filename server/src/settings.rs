//! Server configuration, read from the command line or `STICKY_*` environment variables.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use sticky_core::db::DEFAULT_DATABASE_URL;
use sticky_core::domain::DefaultRegion;
use sticky_core::engine::DEFAULT_CACHE_BYTES;

const MIB: u64 = 1024 * 1024;

/// Where the data lives and how keys are hashed: shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://FILE` (the default, created when missing) or `postgres://...`.
    #[arg(long, env = "STICKY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Database connections (default: 4 for SQLite, 16 for PostgreSQL).
    #[arg(long, env = "STICKY_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// bcrypt cost for new API keys (4–31; each step doubles the work).
    #[arg(long, env = "STICKY_BCRYPT_COST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,
}

/// `sticky-calls serve` options.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on (`0.0.0.0:8080` to accept outside connections).
    #[arg(long, env = "STICKY_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Region for caller numbers written without a country code (ISO 3166-1 alpha-2).
    #[arg(long, env = "STICKY_DEFAULT_REGION", default_value = "US")]
    pub default_region: DefaultRegion,
    /// How long a verified API key stays cached, in seconds (revocation evicts at once).
    #[arg(long, env = "STICKY_KEY_CACHE_SECONDS", default_value_t = 300)]
    pub key_cache_seconds: u64,
    /// Megabytes of memory for the caches of identities and customers' answers in front of
    /// PostgreSQL (a SQLite file's call path reads the file instead). A known caller whose
    /// answer is cached costs no read; about 1.3 KB per customer with a 1 KB document.
    #[arg(long, env = "STICKY_CACHE_MB", default_value_t = DEFAULT_CACHE_BYTES / MIB,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub cache_mb: u64,
    /// The first API key of tenant `default`, used only when the database is empty
    /// (24–256 printable characters). Without it a key is generated and printed once.
    #[arg(long, env = "STICKY_BOOTSTRAP_API_KEY", hide_env_values = true)]
    pub bootstrap_api_key: Option<String>,
    /// The public base URL platforms call (`https://sticky.example.com`), when a proxy stands
    /// in front: platform signatures are computed over it. Without it the URL is rebuilt from
    /// the request's `Host` and `X-Forwarded-Proto`/`X-Forwarded-Host`.
    #[arg(long, env = "STICKY_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// Key that encrypts platform secrets at rest: 64 hex characters.
    #[arg(long, env = "STICKY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// `normal`: an acknowledged start or end survives a crash of the server process;
    /// `full`: also a power loss (every commit and every start is synced to the disk first:
    /// slower). SQLite only; PostgreSQL follows its own `synchronous_commit`.
    #[arg(long, env = "STICKY_SYNC", default_value = "normal", value_parser = ["normal", "full"])]
    pub sync: String,
    /// Token `GET /metrics` requires as `Authorization: Bearer <token>`; without it the
    /// metrics are open to whoever reaches the port.
    #[arg(long, env = "STICKY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Where the server key is kept when `STICKY_SECRET_KEY` is not set (created on first
    /// start, readable only by its owner). Keep it out of database backups.
    #[arg(
        long,
        env = "STICKY_SECRET_KEY_FILE",
        default_value = "sticky-calls.secret"
    )]
    pub secret_key_file: PathBuf,
    /// `open`: anyone may create a tenant on the `free` plan with `POST /v1/signup` (limited
    /// per client address); `closed` (the default): that route answers 404.
    #[arg(long, env = "STICKY_SIGNUP", default_value = "closed", value_parser = ["open", "closed"])]
    pub signup: String,
    /// The signing secret of a Stripe webhook endpoint (`whsec_...`): payments at
    /// `POST /v1/billing/stripe/webhook` apply plans and calls. Without it that route is 404.
    #[arg(long, env = "STICKY_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,
    /// A TOML file of plans that add to or replace the built-in ones (see docs/plans.md).
    #[arg(long, env = "STICKY_PLANS_FILE")]
    pub plans_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs `STICKY_TLS_KEY`.
    #[arg(long, env = "STICKY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `STICKY_TLS_CERT`.
    #[arg(long, env = "STICKY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Everything `Application::build` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Database URL.
    pub database_url: String,
    /// Pool size (`None`: the backend's default).
    pub db_max_connections: Option<u32>,
    /// Listen address; port 0 picks a free one.
    pub bind: String,
    /// Region for national numbers.
    pub default_region: DefaultRegion,
    /// bcrypt cost for new keys.
    pub bcrypt_cost: u32,
    /// Verified-key cache period.
    pub key_cache_ttl: Duration,
    /// Bytes of the engine's read caches (PostgreSQL).
    pub cache_bytes: u64,
    /// Key for tenant `default` on an empty database.
    pub bootstrap_api_key: Option<String>,
    /// Public base URL, behind a proxy.
    pub public_base_url: Option<String>,
    /// Server key (hex), or else...
    pub secret_key: Option<String>,
    /// ...the file that holds it (created when missing).
    pub secret_key_file: PathBuf,
    /// Sync every acknowledged write to the disk (`STICKY_SYNC=full`).
    pub full_sync: bool,
    /// The token `GET /metrics` requires (`None`: open).
    pub metrics_token: Option<String>,
    /// Serve HTTPS: the certificate chain's and the private key's PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The plans file (`None`: the built-in plans only).
    pub plans_file: Option<PathBuf>,
    /// `POST /v1/signup` is open.
    pub signup_open: bool,
    /// Stripe's webhook signing secret.
    pub stripe_webhook_secret: Option<String>,
}

impl From<ServeArgs> for Settings {
    fn from(a: ServeArgs) -> Self {
        Self {
            database_url: a.database.database_url,
            db_max_connections: a.database.db_max_connections,
            bind: a.bind,
            default_region: a.default_region,
            bcrypt_cost: a.database.bcrypt_cost,
            key_cache_ttl: Duration::from_secs(a.key_cache_seconds),
            cache_bytes: a.cache_mb * MIB,
            bootstrap_api_key: a.bootstrap_api_key,
            public_base_url: a.public_base_url,
            secret_key: a.secret_key,
            secret_key_file: a.secret_key_file,
            full_sync: a.sync == "full",
            metrics_token: a.metrics_token.filter(|t| !t.is_empty()),
            tls: a.tls_cert.zip(a.tls_key),
            plans_file: a.plans_file,
            signup_open: a.signup == "open",
            stripe_webhook_secret: a.stripe_webhook_secret.filter(|s| !s.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|c| c.serve.into())
    }

    #[test]
    fn the_caches_take_the_megabytes_given_and_refuse_none() {
        assert_eq!(parse(&[]).unwrap().cache_bytes, DEFAULT_CACHE_BYTES);
        assert_eq!(
            parse(&["--cache-mb", "1024"]).unwrap().cache_bytes,
            1024 * 1024 * 1024
        );
        for bad in ["0", "-5", "lots", "2000000"] {
            let arg = format!("--cache-mb={bad}");
            let e = parse(&[&arg]).expect_err(bad);
            assert!(e.to_string().contains("--cache-mb"), "{e}");
        }
    }
}
