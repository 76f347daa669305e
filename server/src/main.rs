//! The `sticky-calls` binary: `serve`, `tenants create NAME`, `keys create --tenant NAME`,
//! `agent prompt FORMAT`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sticky_calls_server::settings::{DatabaseArgs, ServeArgs};
use sticky_calls_server::{Application, Settings};
use sticky_core::db;
use sticky_core::keys::KeyStore;

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
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve(ServeArgs),
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
    /// The AI-agent kit.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
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
        #[command(flatten)]
        database: DatabaseArgs,
    },
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_logging("info");
            let supplied = args.bootstrap_api_key.is_some();
            let app = Application::build(Settings::from(args)).await?;
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
            command: TenantsCommand::Create { name, database },
        } => {
            init_logging("warn");
            let keys = key_store(&database).await?;
            let tenant = keys.create_tenant(&name).await?;
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
                    database,
                },
        } => {
            init_logging("warn");
            let keys = key_store(&database).await?;
            let found = keys
                .find_tenant(&tenant)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no tenant named `{tenant}`"))?;
            let key = keys.create_key(found.id, label, None).await?;
            println!("{}", key.secret);
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
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
