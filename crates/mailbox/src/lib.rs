//! IMAP polling for the Email Rates Manager.
//!
//! Carriers send rate decks by email. This crate polls the configured IMAP mailboxes,
//! hands each new message (raw RFC 822 bytes) to an [`Ingest`] implementation and then
//! marks it processed (keyword `$BillhookProcessed` + `\Seen`, or a move to another
//! folder). It knows nothing about rates.
//!
//! Delivery is at least once: a crash between ingesting and marking hands the message
//! again on the next start, so the ingester de-duplicates by [`MessageKey`]. Within one
//! process a message whose ingest succeeded is never handed again, even when marking it
//! failed (the poller retries only the marking).

mod config;
mod connect;
mod poll;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{MailboxConfig, TlsMode};
pub use poll::PROCESSED_KEYWORD;

/// Identifies one message for de-duplication by the ingester. UIDs are only unique
/// within one UIDVALIDITY of one folder, hence all three.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub mailbox: String,
    pub uid_validity: u32,
    pub uid: u32,
}

/// `imap:NAME:UIDVALIDITY:UID`, e.g. `imap:carrier-a:1700000000:42`.
impl fmt::Display for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "imap:{}:{}:{}",
            self.mailbox, self.uid_validity, self.uid
        )
    }
}

/// Receives each new message. `Ok` marks it processed; `Err` leaves it to be handed
/// again on the next poll.
pub trait Ingest: Send + Sync + 'static {
    fn ingest(
        &self,
        raw: Vec<u8>,
        key: MessageKey,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("login refused: {0}")]
    Login(async_imap::error::Error),
    #[error("{step} failed: {source}")]
    Imap {
        step: &'static str,
        source: async_imap::error::Error,
    },
    #[error("{step} timed out after {after:?}")]
    Timeout {
        step: &'static str,
        after: std::time::Duration,
    },
    #[error("unexpected server behaviour: {0}")]
    Protocol(String),
    /// The poller was asked to stop in the middle of a poll.
    #[error("stopped")]
    Stopped,
}

/// Polls one mailbox once (connect, log in, select, search, fetch, ingest, mark, log out)
/// and returns how many messages were ingested successfully (and so marked).
pub async fn poll_once<I: Ingest>(cfg: &MailboxConfig, ingest: &I) -> Result<usize, MailboxError> {
    poll::poll(cfg, ingest, &mut poll::PollState::default(), None).await
}

/// Starts one task per mailbox. Each polls every `poll_interval_secs`; a mailbox that
/// fails (down, bad login, TLS) is logged with its name and retried with a capped backoff,
/// without affecting the others. The tasks end when `stop` becomes `true` (or its sender
/// is dropped): a poll in progress is abandoned at the next IMAP step, never in the middle
/// of an ingest call. Await the handles for a graceful stop.
pub fn spawn_pollers<I: Ingest>(
    configs: Vec<MailboxConfig>,
    ingest: Arc<I>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    configs
        .into_iter()
        .map(|cfg| tokio::spawn(poll::run_poller(cfg, ingest.clone(), stop.clone())))
        .collect()
}
