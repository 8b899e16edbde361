//! Configuration: defaults < `billhook.toml` (or `--config`) < `BILLHOOK_*` < flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// `sqlite:./billhook.db` (default) or `postgres://…`.
    pub database_url: String,
    /// The admin API key; when unset and none is stored, one is generated.
    pub api_key: Option<String>,
    /// Where script handlers live.
    pub scripts_dir: PathBuf,
    /// A PEM file of certificate authorities that HTTPS handlers' certificates may
    /// also be signed by, besides the public ones: an internal CA, or a self-signed
    /// endpoint's own certificate.
    pub handler_ca_file: Option<PathBuf>,
    /// Log filter (`info`, `billhook=debug,…`).
    pub log: String,
    /// `text` or `json`.
    pub log_format: String,
    /// How often the scheduler looks for due renewals and ended holds, in milliseconds.
    pub scheduler_interval_ms: u64,
    /// How often the delivery engine looks for due deliveries when nothing woke it, in
    /// milliseconds. Commits, manual retries and recoveries wake it at once (on
    /// PostgreSQL also in other processes); this is the fallback.
    pub delivery_poll_ms: u64,
    /// Calls in flight at most to one after handler, each for a different client (a
    /// client's deliveries go one at a time, in order).
    pub handler_concurrency: usize,
    /// Calls in flight at most over all after handlers (320, and at least twice
    /// `handler_concurrency`): what bounds the connections and processes the calls
    /// take. Each handler whose endpoint hangs holds `handler_concurrency` of them until
    /// its calls time out, so with more than this over `handler_concurrency` such
    /// handlers at once, the others wait for those timeouts.
    pub delivery_max_calls: Option<usize>,
    /// Where uploaded import files wait for their job.
    pub imports_dir: PathBuf,
    /// How long a running import is held without renewal; after a crash, the job is
    /// taken up again once it has run out.
    pub import_lease_secs: u64,
    /// How long the execution log keeps a call, and the event log an event all of whose
    /// deliveries succeeded (with those deliveries), in seconds; 0 keeps everything.
    /// An event with a delivery pending or failed stays, whatever its age.
    pub log_retention_secs: u64,
    /// IMAP mailboxes the email rates manager polls.
    #[serde(default, skip_serializing)]
    pub mailboxes: Vec<billhook_mailbox::MailboxConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            database_url: "sqlite:./billhook.db".into(),
            api_key: None,
            scripts_dir: PathBuf::from("./scripts"),
            handler_ca_file: None,
            log: "info".into(),
            log_format: "text".into(),
            scheduler_interval_ms: 1000,
            delivery_poll_ms: 1000,
            handler_concurrency: 64,
            delivery_max_calls: None,
            imports_dir: PathBuf::from("./imports"),
            import_lease_secs: 60,
            log_retention_secs: 30 * 24 * 3600,
            mailboxes: Vec::new(),
        }
    }
}

/// Command-line flags; each overrides the same setting from anywhere else.
#[derive(Debug, Args, Serialize, Default)]
pub struct Overrides {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Database URL.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Scripts directory.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scripts_dir: Option<PathBuf>,
    /// Log filter.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

/// The most calls in flight a setting may ask for: each is a connection (or a script's
/// process) of its own, and the engine's limits are semaphores, which refuse more than
/// a few quintillion permits by panicking in the engine's task.
const MAX_CALLS: usize = 100_000;

impl Config {
    /// Merges the sources in their order of precedence.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                anyhow::ensure!(path.exists(), "config file {} not found", path.display());
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("billhook.toml")),
        }
        let config: Config = figment
            .merge(Env::prefixed("BILLHOOK_"))
            .merge(Serialized::defaults(flags))
            .extract()
            .context("reading the configuration")?;
        let calls = 1..=MAX_CALLS;
        anyhow::ensure!(
            calls.contains(&config.handler_concurrency),
            "handler_concurrency must be from 1 to {MAX_CALLS}, not {}",
            config.handler_concurrency
        );
        if let Some(n) = config.delivery_max_calls {
            anyhow::ensure!(
                calls.contains(&n),
                "delivery_max_calls must be from 1 to {MAX_CALLS}, not {n}"
            );
        }
        anyhow::ensure!(
            matches!(config.log_format.as_str(), "text" | "json"),
            "log_format must be text or json, not {:?}",
            config.log_format
        );
        Ok(config)
    }
}

/// Sets up logging to stderr (stdout carries the few lines meant for the operator).
pub fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .with_context(|| format!("invalid log filter {:?}", config.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
