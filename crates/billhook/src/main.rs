//! `billhook`: the server and its administration commands.

mod allocator;
mod bench;
mod bench_recovering;
mod bench_relay;
mod config;
mod email;
mod open_files;
mod serve;

use anyhow::Context;
use billhook_app::keys::KeyRing;
use billhook_store::Db;
use clap::{Parser, Subcommand};

use config::{Config, Overrides};

#[global_allocator]
static ALLOCATOR: allocator::Mimalloc = allocator::Mimalloc;

/// billhook: a telecom billing core with a Provisioning API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (default: ./billhook.toml when it exists).
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the API, the delivery workers and the scheduler.
    Serve,
    /// Applies the database migrations and exits.
    Migrate,
    /// Measures delivery throughput and latency against the machine's ceiling.
    Bench(bench::BenchArgs),
    /// The relay `bench --relay` measures (it starts this itself).
    #[command(hide = true)]
    BenchRelay {
        /// Where each request's body goes on to.
        #[arg(long)]
        to: String,
    },
    /// Manages API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The email rates manager.
    EmailRates {
        #[command(subcommand)]
        command: EmailRatesCommand,
    },
}

#[derive(Subcommand)]
enum EmailRatesCommand {
    /// Handles one RFC 822 message read from standard input (for an MTA pipe).
    Ingest,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Creates a key and prints it (only this once).
    Create {
        /// A name to recognise the key by.
        #[arg(default_value = "api")]
        name: String,
    },
    /// Lists keys (never the keys themselves).
    List,
    /// Revokes a key by id.
    Revoke { id: i64 },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), &cli.overrides)?;
    config::init_logging(&config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve::run(config).await,
            Command::Migrate => {
                let db = open(&config).await?;
                db.close().await;
                println!("migrations applied");
                Ok(())
            }
            Command::Keys { command } => keys(&config, command).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchRelay { to } => bench_relay::serve(to).await,
            Command::EmailRates {
                command: EmailRatesCommand::Ingest,
            } => email::ingest_stdin(&config).await,
        }
    })
}

/// Connects to the configured database and applies pending migrations.
pub async fn open(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database_url)
        .await
        .with_context(|| format!("connecting to {}", config::redact(&config.database_url)))?;
    db.migrate().await.context("applying migrations")?;
    Ok(db)
}

/// The import runner's settings from the configuration.
pub fn import_config(config: &Config) -> billhook_app::imports::ImportConfig {
    billhook_app::imports::ImportConfig {
        dir: config.imports_dir.clone(),
        lease: std::time::Duration::from_secs(config.import_lease_secs.max(1)),
    }
}

/// The certificate authorities trusted for HTTPS handlers besides the public ones: those
/// of `handler_ca_file`, read at start so that a bad file stops the server with the
/// reason instead of failing every call later.
pub fn handler_roots(config: &Config) -> anyhow::Result<billhook_app::TrustedRoots> {
    match &config.handler_ca_file {
        Some(path) => billhook_app::TrustedRoots::from_pem_file(path).map_err(anyhow::Error::msg),
        None => Ok(billhook_app::TrustedRoots::default()),
    }
}

async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let db = open(config).await?;
    let ring = KeyRing::new(db.clone(), None);
    match command {
        KeysCommand::Create { name } => {
            let (id, key) = ring.create(&name).await?;
            println!("created key {id} ({name}): {key}");
            println!("store it now: only its hash is kept");
        }
        KeysCommand::List => {
            for k in ring.list().await? {
                let state = match k.revoked_at {
                    Some(t) => format!("revoked {t}"),
                    None => "live".to_string(),
                };
                println!(
                    "{}\t{}\t{}…\tcreated {}\t{}",
                    k.id, k.name, k.prefix, k.created_at, state
                );
            }
        }
        KeysCommand::Revoke { id } => {
            ring.revoke(id).await?;
            println!("revoked key {id}");
        }
    }
    db.close().await;
    Ok(())
}
