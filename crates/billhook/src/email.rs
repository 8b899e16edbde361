//! The email rates manager's doors that live in the binary: IMAP pollers (the mailbox
//! crate hands messages to [`Ingester`]) and `billhook email-rates ingest` for an MTA
//! pipe.

use std::io::Read;

use anyhow::Context;
use billhook_app::email_rates::EmailRates;
use billhook_app::App;
use billhook_store::deliveries;

use crate::config::Config;

/// Hands polled messages to the email rates manager, keyed by their mailbox UID.
pub struct Ingester(pub EmailRates);

impl billhook_mailbox::Ingest for Ingester {
    async fn ingest(&self, raw: Vec<u8>, key: billhook_mailbox::MessageKey) -> Result<(), String> {
        match self.0.ingest(&raw, Some(key.to_string())).await {
            Ok(report) => {
                tracing::info!(
                    mailbox = %key.mailbox,
                    sender = %report.sender,
                    subject = %report.subject,
                    duplicate = report.duplicate,
                    outcomes = report.outcomes.len(),
                    "rate deck message handled"
                );
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// `billhook email-rates ingest`: one message from standard input (an MTA's pipe),
/// handled as if it had been posted; prints the report as JSON. An import job it
/// queues is run by the server that uses the same imports directory.
pub async fn ingest_stdin(config: &Config) -> anyhow::Result<()> {
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .context("reading the message from standard input")?;
    anyhow::ensure!(!raw.is_empty(), "no message on standard input");
    let db = crate::open(config).await?;
    let app = App::new(
        db.clone(),
        None,
        config.scripts_dir.clone(),
        crate::handler_roots(config)?,
        crate::import_config(config),
    )?;
    let report = app.email_rates.ingest(&raw, None).await?;
    // No engine runs in this process to look at the queues it queued deliveries behind
    // others in, once committed (PostgreSQL: see billhook_store::head_checks); looked at
    // here, a head that a server's delivery finishing meanwhile left unflagged does not
    // wait for that server's periodic walk of every queue. The message is in: a look
    // that fails leaves them to that walk, and says so.
    if let Err(e) = deliveries::look_at_queued_behind(&db).await {
        tracing::warn!(error = %e, "flagging the heads of queued deliveries failed");
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    db.close().await;
    Ok(())
}
