//! The `sticky-calls` binary: `serve`, `tenants create NAME`, `keys create --tenant NAME`,
//! `agent prompt FORMAT`, `import --tenant NAME FILE`, `export --tenant NAME`, `backup FILE`,
//! `restore FILE`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sticky_calls_server::backup;
use sticky_calls_server::settings::{DatabaseArgs, ServeArgs};
use sticky_calls_server::transfer::{self, Format, OnError};
use sticky_calls_server::{Application, Settings};
use sticky_core::db;
use sticky_core::domain::DefaultRegion;
use sticky_core::engine::{Engine, TenantId};
use sticky_core::keys::{KeyStore, Scope, Scopes};

/// mimalloc instead of the system allocator: under load glibc's malloc spent over a tenth of the
/// server's time in its own bookkeeping (`_int_malloc`, `malloc_consolidate`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Caller memory for contact centers and AI voice agents.
#[derive(Parser)]
#[command(name = "sticky-calls", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads that run requests (default: one per CPU core). More than the cores lets
    /// requests go on while a thread waits for the disk (SQLite pages not in memory).
    #[arg(long, global = true, env = "STICKY_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=512))]
    worker_threads: Option<u16>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve(Box<ServeArgs>),
    /// Manage tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Add calls to a tenant's current month.
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
    /// The AI-agent kit.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Load customers from a CSV or JSON Lines file into a tenant (on SQLite, with the server
    /// stopped).
    Import {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// The file: CSV with a header row (`customer_ref`, `phone_numbers` separated by `;`,
        /// `ext_<name>`, `var_<name>`) or JSON Lines (`customer_ref`, `phone_numbers`,
        /// `external_ids`, `variables`).
        file: PathBuf,
        /// The file's format (default: `csv` for a `.csv` file, else `jsonl`).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// What a bad row does: `stop` reports it and imports nothing (the whole file is
        /// checked first); `skip` reports it and imports the others.
        #[arg(long, value_enum, default_value = "stop")]
        on_error: OnError,
        /// Region for numbers written without a country code.
        #[arg(long, env = "STICKY_DEFAULT_REGION", default_value = "US")]
        default_region: DefaultRegion,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Write a tenant's customers as JSON Lines, one object per customer as
    /// `GET /v1/customers/{ref}` answers (on SQLite, with the server stopped).
    Export {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// The file to write (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Copy a SQLite database, open calls included, into one new file while the server keeps
    /// running (PostgreSQL: use pg_dump).
    Backup {
        /// The file to write; it must not exist.
        file: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Put a backup in place as the database; the location must hold no database yet.
    Restore {
        /// A file written by `sticky-calls backup`.
        file: PathBuf,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Print a system prompt for an AI agent that answers calls with Sticky Calls.
    Prompt {
        /// `claude`, `chatgpt` or `generic`.
        #[arg(value_parser = ["claude", "chatgpt", "generic"])]
        format: String,
        /// The address agents reach the server at.
        #[arg(
            long,
            env = "STICKY_PUBLIC_BASE_URL",
            default_value = "http://localhost:8080"
        )]
        public_base_url: String,
    },
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Create a tenant and print its first API key, alone, on stdout.
    Create {
        /// Tenant name: a-z, 0-9, `_` and `-`.
        name: String,
        /// Its plan (default `unlimited`).
        #[arg(long, default_value = sticky_core::plans::OPERATOR_DEFAULT)]
        plan: String,
        #[command(flatten)]
        plans: PlansArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Put a tenant on another plan (from now on; this month's count stays).
    SetPlan {
        /// The tenant's name.
        name: String,
        /// The plan's name.
        plan: String,
        #[command(flatten)]
        plans: PlansArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Subcommand)]
enum CreditsCommand {
    /// Add calls to a tenant's current month (they do not roll over).
    Grant {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// How many calls.
        #[arg(value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        calls: u64,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Where the operator's plans are.
#[derive(clap::Args)]
struct PlansArgs {
    /// A TOML file of plans that add to or replace the built-in ones.
    #[arg(long, env = "STICKY_PLANS_FILE")]
    plans_file: Option<PathBuf>,
}

/// The tenant named `name` and the billing store of `database`.
async fn billing_tenant(
    database: &DatabaseArgs,
    name: &str,
) -> anyhow::Result<(sticky_core::billing::BillingStore, TenantId)> {
    let conn = db::connect_and_migrate(&database.database_url).await?;
    let keys = KeyStore::new(conn.clone(), database.bcrypt_cost, Duration::from_secs(1));
    let tenant = keys
        .find_tenant(name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant named `{name}`"))?;
    Ok((sticky_core::billing::BillingStore::new(conn), tenant.id))
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key and print it, alone, on stdout.
    Create {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// A label to recognise the key by.
        #[arg(long)]
        label: Option<String>,
        /// What the key may do, once per scope (default: every scope). A key for platform
        /// webhooks needs only `calls`.
        #[arg(long = "scope", value_parser = ["calls", "customers:read", "customers:write", "admin"])]
        scopes: Vec<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STICKY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn key_store(database: &DatabaseArgs) -> anyhow::Result<KeyStore> {
    let conn = db::connect_and_migrate(&database.database_url).await?;
    Ok(KeyStore::new(
        conn,
        database.bcrypt_cost,
        Duration::from_secs(1),
    ))
}

/// The engine and the tenant named `tenant`, for `import` and `export`.
async fn tenant_engine(
    database: &DatabaseArgs,
    tenant: &str,
    region: DefaultRegion,
) -> anyhow::Result<(Engine, TenantId)> {
    let keys = key_store(database).await?;
    let found = keys
        .find_tenant(tenant)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant named `{tenant}`"))?;
    let conn = db::connect_with_pool(&database.database_url, database.db_max_connections).await?;
    let engine = Engine::open(conn, region)
        .await
        .map_err(|e| anyhow::anyhow!("opening the database (is a server running on it?): {e}"))?;
    Ok((engine, found.id))
}

async fn import(
    tenant: &str,
    file: &std::path::Path,
    format: Option<Format>,
    on_error: OnError,
    region: DefaultRegion,
    database: &DatabaseArgs,
) -> anyhow::Result<()> {
    let format = format.unwrap_or_else(|| Format::of(file));
    let (engine, tenant) = tenant_engine(database, tenant, region).await?;
    // Fails here, before any work, when the file cannot be read or its header is wrong.
    drop(transfer::read(file, format, region)?);
    let bar = if std::io::stderr().is_terminal() {
        let lines = std::fs::read(file)?.iter().filter(|b| **b == b'\n').count() as u64;
        let bar = indicatif::ProgressBar::new(lines);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} rows ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let summary = transfer::import(
        &engine,
        tenant,
        || transfer::read(file, format, region),
        on_error,
        &|read| bar.set_position(read),
    )
    .await;
    bar.finish_and_clear();
    let summary = summary?;
    let w = summary.written;
    eprintln!(
        "imported {} customers ({} numbers and external ids, {} variables); refused {} rows",
        w.customers,
        w.identities,
        w.variables,
        summary.refused.len()
    );
    const SHOWN: usize = 100;
    for e in summary.refused.iter().take(SHOWN) {
        eprintln!("  {e}");
    }
    if summary.refused.len() > SHOWN {
        eprintln!("  ... and {} more", summary.refused.len() - SHOWN);
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_logging("info");
            let supplied = args.bootstrap_api_key.is_some();
            let app = Application::build(Settings::from(*args)).await?;
            if let Some(key) = app.bootstrap_key() {
                if supplied {
                    println!(
                        "Created tenant `default` with the key from STICKY_BOOTSTRAP_API_KEY."
                    );
                } else {
                    println!(
                        "Created tenant `default`. Its API key is shown only this once:\n\n    {}\n",
                        key.secret
                    );
                }
            }
            tracing::info!(port = app.port(), "listening");
            app.run_until_stopped().await?;
        }
        Command::Tenants {
            command:
                TenantsCommand::Create {
                    name,
                    plan,
                    plans,
                    database,
                },
        } => {
            init_logging("warn");
            let catalog = sticky_core::plans::Plans::load(plans.plans_file.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
            catalog.require(&plan).map_err(|e| anyhow::anyhow!(e))?;
            let keys = key_store(&database).await?;
            let tenant = keys.create_tenant(&name).await?;
            if plan != sticky_core::plans::OPERATOR_DEFAULT {
                let (billing, id) = billing_tenant(&database, &name).await?;
                billing.set_plan(id, &plan, "cli").await?;
            }
            let key = keys
                .create_key(tenant.id, Some("first".into()), None)
                .await?;
            println!("{}", key.secret);
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    tenant,
                    label,
                    scopes,
                    database,
                },
        } => {
            init_logging("warn");
            let keys = key_store(&database).await?;
            let found = keys
                .find_tenant(&tenant)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no tenant named `{tenant}`"))?;
            let scopes = if scopes.is_empty() {
                Scopes::ALL
            } else {
                scopes.iter().filter_map(|s| Scope::parse(s)).collect()
            };
            let key = keys
                .create_scoped_key(found.id, label, None, scopes)
                .await?;
            println!("{}", key.secret);
        }
        Command::Tenants {
            command:
                TenantsCommand::SetPlan {
                    name,
                    plan,
                    plans,
                    database,
                },
        } => {
            init_logging("warn");
            let catalog = sticky_core::plans::Plans::load(plans.plans_file.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
            catalog.require(&plan).map_err(|e| anyhow::anyhow!(e))?;
            let (billing, id) = billing_tenant(&database, &name).await?;
            billing.set_plan(id, &plan, "cli").await?;
            eprintln!("tenant `{name}` is on plan `{plan}`");
        }
        Command::Credits {
            command:
                CreditsCommand::Grant {
                    tenant,
                    calls,
                    database,
                },
        } => {
            init_logging("warn");
            let (billing, id) = billing_tenant(&database, &tenant).await?;
            let (period, _, _) = sticky_core::plans::period(chrono::Utc::now());
            billing
                .add_credits(
                    id,
                    &period,
                    calls,
                    "credits_granted",
                    &serde_json::json!({"calls": calls, "period": period, "by": "cli"}),
                    None,
                )
                .await?;
            eprintln!("added {calls} calls to tenant `{tenant}` for {period}");
        }
        Command::Agent {
            command:
                AgentCommand::Prompt {
                    format,
                    public_base_url,
                },
        } => {
            let text = sticky_calls_server::api::agent::prompt(&format, &public_base_url)
                .ok_or_else(|| anyhow::anyhow!("no prompt format `{format}`"))?;
            println!("{text}");
        }
        Command::Import {
            tenant,
            file,
            format,
            on_error,
            default_region,
            database,
        } => {
            init_logging("warn");
            import(&tenant, &file, format, on_error, default_region, &database).await?;
        }
        Command::Export {
            tenant,
            output,
            database,
        } => {
            init_logging("warn");
            let (engine, tenant) =
                tenant_engine(&database, &tenant, DefaultRegion::default()).await?;
            let written = match output {
                Some(path) => {
                    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
                    transfer::export(&engine, tenant, &mut out).await?
                }
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    transfer::export(&engine, tenant, &mut out).await?
                }
            };
            eprintln!("exported {written} customers");
        }
        Command::Backup { file, database } => {
            init_logging("warn");
            let report = backup::backup(&database.database_url, &file).await?;
            let c = report.contents;
            eprintln!(
                "backed up {} tenants, {} customers, {} calls ({} open calls from the journal) \
                 to {} ({} bytes)",
                c.tenants,
                c.customers,
                c.calls,
                report.open_calls,
                file.display(),
                report.bytes
            );
        }
        Command::Restore { file, database } => {
            init_logging("warn");
            let c = backup::restore(&file, &database.database_url).await?;
            eprintln!(
                "restored {} tenants, {} customers, {} calls; start the server with the same \
                 server key (STICKY_SECRET_KEY or its file)",
                c.tenants, c.customers, c.calls
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.worker_threads {
        runtime.worker_threads(usize::from(n));
    }
    let result = match runtime.build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
