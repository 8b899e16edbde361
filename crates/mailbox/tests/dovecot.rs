//! The poller against a real Dovecot (see common/mod.rs for how it is started).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use billhook_mailbox::{poll_once, spawn_pollers, MailboxError, TlsMode};
use common::{message, Dovecot, Recorder};

const PROCESSED: &str = "KEYWORD $BillhookProcessed SEEN";
const UNPROCESSED: &str = "UNKEYWORD $BillhookProcessed";

#[tokio::test]
async fn plain_hands_each_message_over_once_and_flags_it() {
    let dovecot = Dovecot::start().await;
    dovecot
        .append("INBOX", &message("deck-1", "rates one"))
        .await;
    dovecot
        .append("INBOX", &message("deck-2", "rates two"))
        .await;
    let cfg = dovecot.config("carrier-a", TlsMode::None);
    let rec = Recorder::default();

    assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 2);
    assert_eq!(
        poll_once(&cfg, &rec).await.unwrap(),
        0,
        "second poll finds nothing new"
    );

    let keys = rec.keys();
    assert_eq!(keys.len(), 2, "each message exactly once");
    assert_eq!(keys[0].mailbox, "carrier-a");
    assert_eq!(keys[0].uid_validity, keys[1].uid_validity);
    assert!(keys[0].uid < keys[1].uid, "handed in UID order");
    assert_eq!(
        keys[0].to_string(),
        format!("imap:carrier-a:{}:{}", keys[0].uid_validity, keys[0].uid)
    );
    let uids: Vec<u32> = keys.iter().map(|k| k.uid).collect();
    assert_eq!(dovecot.search("INBOX", PROCESSED).await, uids);
    assert!(dovecot.search("INBOX", UNPROCESSED).await.is_empty());

    // A message arriving later is the only one handed on the next poll.
    dovecot
        .append("INBOX", &message("deck-3", "rates three"))
        .await;
    assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 1);
    assert_eq!(rec.keys().len(), 3);
}

#[tokio::test]
async fn raw_bytes_arrive_unchanged() {
    let dovecot = Dovecot::start().await;
    // 8-bit text, a long line, and an attachment-sized body.
    let mut raw = message("deck-raw", "Pr\u{e9}fixe;Tarif\r\n33;0,0123\r\n");
    raw.extend_from_slice(b"--\r\n");
    for i in 0..5000 {
        raw.extend_from_slice(format!("{i};0.{i:04}\r\n").as_bytes());
    }
    raw.extend_from_slice(&[b'x'; 2000]);
    raw.extend_from_slice(b"\r\n");
    dovecot.append("INBOX", &raw).await;
    let uid = dovecot.search("INBOX", "ALL").await[0];
    assert_eq!(
        dovecot.raw("INBOX", uid).await,
        raw,
        "server keeps the bytes"
    );

    let rec = Recorder::default();
    let cfg = dovecot.config("carrier-raw", TlsMode::None);
    assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 1);
    let got = rec.got.lock().unwrap();
    assert_eq!(got[0].1, raw);
}

#[tokio::test]
async fn implicit_tls_trusting_the_test_ca() {
    let dovecot = Dovecot::start().await;
    dovecot
        .append("INBOX", &message("deck-tls", "over tls"))
        .await;
    let cfg = dovecot.config("carrier-tls", TlsMode::Implicit);
    let rec = Recorder::default();
    assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 1);
    assert_eq!(
        rec.got.lock().unwrap()[0].1,
        message("deck-tls", "over tls")
    );
    assert_eq!(dovecot.search("INBOX", PROCESSED).await.len(), 1);
}

#[tokio::test]
async fn starttls_trusting_the_test_ca() {
    let dovecot = Dovecot::start().await;
    dovecot
        .append("INBOX", &message("deck-starttls", "upgraded"))
        .await;
    let cfg = dovecot.config("carrier-starttls", TlsMode::Starttls);
    let rec = Recorder::default();
    assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 1);
    assert_eq!(dovecot.search("INBOX", PROCESSED).await.len(), 1);
}

/// Refused without the CA in both TLS modes: so STARTTLS really upgrades the connection
/// (the test server would accept a plaintext login too).
#[tokio::test]
async fn tls_without_the_ca_is_refused() {
    let dovecot = Dovecot::start().await;
    dovecot
        .append("INBOX", &message("deck-untrusted", "x"))
        .await;
    for tls in [TlsMode::Implicit, TlsMode::Starttls] {
        let mut cfg = dovecot.config("carrier-untrusted", tls);
        cfg.ca_file = None;
        let rec = Recorder::default();
        let err = poll_once(&cfg, &rec).await.unwrap_err();
        assert!(matches!(err, MailboxError::Tls(_)), "{tls:?}: {err}");
        assert!(rec.keys().is_empty());
    }
}

#[tokio::test]
async fn moved_to_another_folder_when_move_to_is_set() {
    let dovecot = Dovecot::start().await;
    dovecot.append("INBOX", &message("deck-move-1", "a")).await;
    dovecot.append("INBOX", &message("deck-move-2", "b")).await;
    let mut cfg = dovecot.config("carrier-move", TlsMode::None);
    // Does not exist yet: created on the first move.
    cfg.move_to = Some("Processed".to_string());
    let rec = Recorder::default();

    assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 2);
    assert!(
        dovecot.search("INBOX", "ALL").await.is_empty(),
        "left the inbox"
    );
    assert_eq!(dovecot.search("Processed", "SEEN").await.len(), 2);

    assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 0);
    assert_eq!(rec.keys().len(), 2);
}

#[tokio::test]
async fn an_ingest_error_leaves_the_message_for_the_next_poll() {
    let dovecot = Dovecot::start().await;
    dovecot
        .append("INBOX", &message("deck-retry", "later"))
        .await;
    let cfg = dovecot.config("carrier-retry", TlsMode::None);
    let rec = Recorder::failing(1);

    assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 0);
    assert!(rec.keys().is_empty());
    assert_eq!(dovecot.search("INBOX", UNPROCESSED).await.len(), 1);
    assert_eq!(
        dovecot.search("INBOX", "UNSEEN").await.len(),
        1,
        "reading did not set \\Seen"
    );

    assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 1);
    assert_eq!(rec.keys().len(), 1);
    assert_eq!(dovecot.search("INBOX", PROCESSED).await.len(), 1);
}

#[tokio::test]
async fn wrong_password_and_closed_port_are_errors() {
    let dovecot = Dovecot::start().await;
    let rec = Recorder::default();
    let mut cfg = dovecot.config("carrier-badpass", TlsMode::None);
    cfg.password = "wrong".to_string();
    let err = poll_once(&cfg, &rec).await.unwrap_err();
    assert!(matches!(err, MailboxError::Login(_)), "{err}");

    let mut cfg = dovecot.config("carrier-closed", TlsMode::None);
    cfg.port = Some(common::free_port());
    let err = poll_once(&cfg, &rec).await.unwrap_err();
    assert!(matches!(err, MailboxError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    // Accepts connections and says nothing: no Dovecot needed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            sockets.push(s);
        }
    });
    let mut cfg = billhook_mailbox::MailboxConfig::new("carrier-hung", "127.0.0.1", "u", "p");
    cfg.tls = TlsMode::None;
    cfg.port = Some(port);
    cfg.timeout_secs = 1;
    let started = Instant::now();
    let err = poll_once(&cfg, &Recorder::default()).await.unwrap_err();
    assert!(matches!(err, MailboxError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    held.abort();
}

#[tokio::test]
async fn pollers_keep_going_when_other_mailboxes_are_down() {
    let dovecot = Dovecot::start().await;
    dovecot
        .append("INBOX", &message("deck-spawn", "alive"))
        .await;

    let mut closed = dovecot.config("down-closed-port", TlsMode::None);
    closed.port = Some(common::free_port());
    let mut bad_login = dovecot.config("down-bad-login", TlsMode::None);
    bad_login.password = "wrong".to_string();
    let good = dovecot.config("up", TlsMode::None);

    let rec = Arc::new(Recorder::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handles = spawn_pollers(vec![closed, bad_login, good], rec.clone(), stop_rx);
    assert_eq!(handles.len(), 3);

    let deadline = Instant::now() + Duration::from_secs(20);
    // Waits until `n` messages were handed over, failing with `what` at the deadline.
    let wait_keys = |n: usize, what: &'static str| {
        let rec = rec.clone();
        async move {
            while rec.keys().len() < n {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_keys(1, "the good mailbox was not polled").await;
    assert_eq!(rec.keys()[0].mailbox, "up");

    // A later message is picked up by the next poll of the same task, once.
    dovecot
        .append("INBOX", &message("deck-spawn-2", "still alive"))
        .await;
    wait_keys(2, "the second message was not polled").await;
    // A third message proves another poll ran: the first two were not handed again.
    dovecot
        .append("INBOX", &message("deck-spawn-3", "polled again"))
        .await;
    wait_keys(3, "the third message was not polled").await;
    let keys = rec.keys();
    let distinct: std::collections::HashSet<_> = keys.iter().collect();
    assert_eq!(
        (keys.len(), distinct.len()),
        (3, 3),
        "nothing handed twice: {keys:?}"
    );

    stop_tx.send(true).unwrap();
    for h in handles {
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("poller stops promptly")
            .unwrap();
    }
}

#[tokio::test]
async fn moved_by_copy_and_expunge_without_the_move_extension() {
    // What the server announces after login; without MOVE the poller copies, flags
    // \Deleted and expunges (UID EXPUNGE with UIDPLUS, plain EXPUNGE without).
    for caps in ["IMAP4rev1 LITERAL+ UIDPLUS", "IMAP4rev1 LITERAL+"] {
        let dovecot = Dovecot::start_with(&format!("imap_capability = {caps}")).await;
        let mut s = dovecot.session().await;
        let announced = s.capabilities().await.unwrap();
        s.logout().await.unwrap();
        assert!(!announced.has_str("MOVE"), "setup: {caps}");
        assert_eq!(announced.has_str("UIDPLUS"), caps.contains("UIDPLUS"));
        dovecot.append("INBOX", &message("deck-copy-1", "a")).await;
        dovecot.append("INBOX", &message("deck-copy-2", "b")).await;
        let mut cfg = dovecot.config("carrier-copy", TlsMode::None);
        cfg.move_to = Some("Processed".to_string());
        let rec = Recorder::default();

        assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 2, "{caps}");
        assert!(dovecot.search("INBOX", "ALL").await.is_empty(), "{caps}");
        assert_eq!(dovecot.search("Processed", "ALL").await.len(), 2, "{caps}");
        assert_eq!(poll_once(&cfg, &rec).await.unwrap(), 0, "{caps}");
        assert_eq!(rec.keys().len(), 2, "{caps}");
    }
}
