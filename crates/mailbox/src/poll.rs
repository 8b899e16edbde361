//! One poll of one mailbox, and the long-running poller around it.
//!
//! Each poll opens a fresh session (connect, login, select, search, fetch, mark, logout)
//! rather than keeping one open between polls: polls are a minute apart, and a new session
//! each time means no stale connection, NAT timeout or half-dead socket to detect.

use std::collections::HashSet;
use std::time::Duration;

use async_imap::types::Flag;
use futures::TryStreamExt;
use tokio::sync::watch;

use crate::connect::{self, within, Session};
use crate::{Ingest, MailboxConfig, MailboxError, MessageKey};

/// The keyword that marks a message as handed over successfully.
pub const PROCESSED_KEYWORD: &str = "$BillhookProcessed";

/// The longest wait between attempts on a mailbox that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// What a poller remembers between its polls.
#[derive(Default)]
pub(crate) struct PollState {
    /// Messages ingested successfully whose marking then failed, as (UIDVALIDITY, UID).
    /// The next poll only marks them, so a message is never handed twice by one process.
    /// Pruned each poll to what the search still finds, so it cannot grow without bound.
    unmarked: HashSet<(u32, u32)>,
    /// The fallback to `\Seen` is logged once per poller, not on every poll.
    fallback_logged: bool,
}

/// How processed messages are recognised and marked in this folder.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Marking {
    Keyword,
    SeenOnly,
    Move,
}

/// Polls the mailbox once; returns how many messages were ingested successfully.
pub(crate) async fn poll<I: Ingest>(
    cfg: &MailboxConfig,
    ingest: &I,
    state: &mut PollState,
    stop: Option<&watch::Receiver<bool>>,
) -> Result<usize, MailboxError> {
    let cx = Ctx { cfg, stop };
    let mut session = stoppable(stop, connect::login(cfg)).await??;
    let result = run(&cx, &mut session, ingest, state).await;
    // Log out whatever happened; a failure here changes nothing for the messages.
    if !matches!(result, Err(MailboxError::Stopped)) {
        let _ = cx.step("LOGOUT", 1, session.logout()).await;
    }
    result
}

/// What every IMAP step needs: the limits, and the stop signal to give up early.
struct Ctx<'a> {
    cfg: &'a MailboxConfig,
    stop: Option<&'a watch::Receiver<bool>>,
}

impl Ctx<'_> {
    /// Runs one IMAP step within `factor` times the timeout, abandoning it if the poller
    /// is stopped meanwhile. Ingest calls never go through here, so they are never cut.
    async fn step<T>(
        &self,
        step: &'static str,
        factor: u32,
        fut: impl std::future::Future<Output = async_imap::error::Result<T>>,
    ) -> Result<T, MailboxError> {
        stoppable(self.stop, within(self.cfg.timeout() * factor, step, fut))
            .await??
            .map_err(|source| MailboxError::Imap { step, source })
    }

    fn stopping(&self) -> bool {
        self.stop.is_some_and(|s| *s.borrow())
    }
}

async fn run<I: Ingest>(
    cx: &Ctx<'_>,
    session: &mut Session,
    ingest: &I,
    state: &mut PollState,
) -> Result<usize, MailboxError> {
    let cfg = cx.cfg;
    let mailbox = cx.step("SELECT", 1, session.select(&cfg.folder)).await?;
    let uid_validity = mailbox.uid_validity.ok_or_else(|| {
        MailboxError::Protocol(format!("no UIDVALIDITY for folder {:?}", cfg.folder))
    })?;

    let marking = if cfg.move_to.is_some() {
        Marking::Move
    } else if mailbox
        .permanent_flags
        .iter()
        .any(|f| *f == Flag::MayCreate || matches!(f, Flag::Custom(k) if k == PROCESSED_KEYWORD))
    {
        Marking::Keyword
    } else {
        if !state.fallback_logged {
            tracing::warn!(
                mailbox = %cfg.name,
                folder = %cfg.folder,
                "server does not allow the {PROCESSED_KEYWORD} keyword; marking processed messages \\Seen and polling UNSEEN only"
            );
            state.fallback_logged = true;
        }
        Marking::SeenOnly
    };
    // UNDELETED: a message waiting for EXPUNGE (ours after COPY, or the operator's) is not
    // to be imported.
    let query = match marking {
        Marking::Keyword => format!("UNDELETED UNKEYWORD {PROCESSED_KEYWORD}"),
        Marking::SeenOnly => "UNDELETED UNSEEN".to_string(),
        // Processed messages leave the folder.
        Marking::Move => "UNDELETED".to_string(),
    };
    let transfer = if marking == Marking::Move {
        let caps = cx.step("CAPABILITY", 1, session.capabilities()).await?;
        Transfer {
            can_move: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
        }
    } else {
        Transfer::default()
    };

    let found = cx.step("SEARCH", 1, session.uid_search(&query)).await?;
    let mut uids: Vec<u32> = found.into_iter().collect();
    uids.sort_unstable();
    state
        .unmarked
        .retain(|(v, u)| *v == uid_validity && uids.binary_search(u).is_ok());

    let mut ingested = 0;
    for uid in uids {
        if cx.stopping() {
            break;
        }
        // Untagged responses (EXPUNGE after MOVE, EXISTS) are not needed; the channel is
        // bounded and drops extras, emptying it keeps memory flat.
        while session.unsolicited_responses.try_recv().is_ok() {}

        if !state.unmarked.contains(&(uid_validity, uid)) {
            // One message at a time: a big mailbox is never held in memory at once.
            let Some(raw) = fetch(cx, session, uid).await? else {
                continue; // expunged since the search
            };
            let key = MessageKey {
                mailbox: cfg.name.clone(),
                uid_validity,
                uid,
            };
            let size = raw.len();
            if let Err(e) = ingest.ingest(raw, key.clone()).await {
                tracing::warn!(mailbox = %cfg.name, key = %key, error = %e, "ingest failed; the message stays for the next poll");
                continue;
            }
            tracing::info!(mailbox = %cfg.name, key = %key, bytes = size, "message ingested");
            ingested += 1;
            state.unmarked.insert((uid_validity, uid));
        }
        mark(cx, session, uid, marking, transfer).await?;
        state.unmarked.remove(&(uid_validity, uid));
    }
    Ok(ingested)
}

/// The raw RFC 822 bytes of one message, without setting `\Seen` (BODY.PEEK).
async fn fetch(
    cx: &Ctx<'_>,
    session: &mut Session,
    uid: u32,
) -> Result<Option<Vec<u8>>, MailboxError> {
    // A big attachment over a slow link may take longer than a plain command.
    let fetched: Vec<_> = cx
        .step("FETCH", 10, async {
            session
                .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
                .await?
                .try_collect()
                .await
        })
        .await?;
    // Unsolicited FETCH responses (flag changes of other messages) may come along.
    Ok(fetched
        .iter()
        .find(|f| f.uid == Some(uid))
        .and_then(|f| f.body())
        .map(<[u8]>::to_vec))
}

/// What the server offers for moving messages, asked once per poll.
#[derive(Clone, Copy, Default)]
struct Transfer {
    can_move: bool,
    uidplus: bool,
}

async fn mark(
    cx: &Ctx<'_>,
    session: &mut Session,
    uid: u32,
    marking: Marking,
    transfer: Transfer,
) -> Result<(), MailboxError> {
    let uid_set = uid.to_string();
    match marking {
        Marking::Keyword => {
            let flags = format!("+FLAGS.SILENT ({PROCESSED_KEYWORD} \\Seen)");
            store(cx, session, &uid_set, &flags).await
        }
        Marking::SeenOnly => store(cx, session, &uid_set, "+FLAGS.SILENT (\\Seen)").await,
        Marking::Move => {
            let dest = cx.cfg.move_to.as_deref().unwrap_or_default();
            // Read in the destination too, for an operator looking at it.
            store(cx, session, &uid_set, "+FLAGS.SILENT (\\Seen)").await?;
            match move_to(cx, session, &uid_set, dest, transfer).await {
                Err(MailboxError::Imap {
                    source: async_imap::error::Error::No(text),
                    ..
                }) if text.to_ascii_uppercase().contains("TRYCREATE") => {
                    tracing::info!(mailbox = %cx.cfg.name, folder = %dest, "creating the move_to folder");
                    cx.step("CREATE", 1, session.create(dest)).await?;
                    move_to(cx, session, &uid_set, dest, transfer).await
                }
                other => other,
            }
        }
    }
}

async fn store(
    cx: &Ctx<'_>,
    session: &mut Session,
    uid_set: &str,
    query: &str,
) -> Result<(), MailboxError> {
    cx.step("STORE", 1, async {
        session
            .uid_store(uid_set, query)
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await
    .map(drop)
}

/// MOVE, or COPY + \Deleted + EXPUNGE where MOVE (RFC 6851) is missing.
async fn move_to(
    cx: &Ctx<'_>,
    session: &mut Session,
    uid_set: &str,
    dest: &str,
    transfer: Transfer,
) -> Result<(), MailboxError> {
    if transfer.can_move {
        return cx.step("MOVE", 1, session.uid_mv(uid_set, dest)).await;
    }
    cx.step("COPY", 1, session.uid_copy(uid_set, dest)).await?;
    store(cx, session, uid_set, "+FLAGS.SILENT (\\Deleted)").await?;
    // Without UIDPLUS, EXPUNGE also removes other messages already flagged \Deleted in
    // this folder, which is what their \Deleted flag asks for anyway.
    cx.step("EXPUNGE", 1, async {
        if transfer.uidplus {
            session
                .uid_expunge(uid_set)
                .await?
                .try_collect::<Vec<_>>()
                .await
        } else {
            session.expunge().await?.try_collect::<Vec<_>>().await
        }
    })
    .await
    .map(drop)
}

/// Runs `fut` unless `stop` turns true first (then `Err(Stopped)`): shutdown does not wait
/// for a slow server. Ingest calls are only started between these points, never cut.
async fn stoppable<T>(
    stop: Option<&watch::Receiver<bool>>,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, MailboxError> {
    let Some(stop) = stop else {
        return Ok(fut.await);
    };
    let mut stop = stop.clone();
    tokio::select! {
        r = fut => Ok(r),
        _ = stopped(&mut stop) => Err(MailboxError::Stopped),
    }
}

/// Completes when `stop` is true or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The poller of one mailbox: polls, then waits its interval (longer after failures).
pub(crate) async fn run_poller<I: Ingest>(
    cfg: MailboxConfig,
    ingest: std::sync::Arc<I>,
    mut stop: watch::Receiver<bool>,
) {
    let mut state = PollState::default();
    let mut failures: u32 = 0;
    tracing::info!(mailbox = %cfg.name, host = %cfg.host, folder = %cfg.folder, "mailbox poller started");
    loop {
        if *stop.borrow() {
            break;
        }
        let wait = match poll(&cfg, &*ingest, &mut state, Some(&stop)).await {
            Ok(n) => {
                if failures > 0 {
                    tracing::info!(mailbox = %cfg.name, "mailbox reachable again");
                }
                failures = 0;
                tracing::debug!(mailbox = %cfg.name, ingested = n, "mailbox polled");
                cfg.poll_interval()
            }
            Err(MailboxError::Stopped) => break,
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(cfg.poll_interval(), failures);
                tracing::warn!(mailbox = %cfg.name, error = %e, retry_in_secs = wait.as_secs(), "mailbox poll failed");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    tracing::info!(mailbox = %cfg.name, "mailbox poller stopped");
}

/// The interval, doubled for each further consecutive failure, capped at 15 minutes
/// (or the interval itself when that is longer).
fn backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF.max(interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let m = Duration::from_secs(60);
        assert_eq!(backoff(m, 1), m);
        assert_eq!(backoff(m, 2), m * 2);
        assert_eq!(backoff(m, 4), m * 8);
        assert_eq!(backoff(m, 100), MAX_BACKOFF);
        let h = Duration::from_secs(3600);
        assert_eq!(backoff(h, 5), h);
    }
}
