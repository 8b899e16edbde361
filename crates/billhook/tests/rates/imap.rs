//! The IMAP door of the email rates manager, end to end: a real Dovecot, the real
//! server polling it over TLS, a second mailbox that is down.

use serde_json::json;

use crate::dovecot::{free_port, Dovecot};
use crate::harness::{wait_for, Server};
use crate::{data, events_of, table};

#[tokio::test]
async fn decks_in_an_imap_mailbox_are_imported_once_and_flagged() {
    let dovecot = Dovecot::start().await;
    dovecot.append("INBOX", &data("rates_zip.eml")).await;
    dovecot.append("INBOX", &data("unknown_sender.eml")).await;

    let mut s = Server::start().await;
    let id = table(
        &s,
        json!({"name": "Carrier A", "email_sender": "carrier-a\\.example", "email_subject": "deck"}),
    )
    .await;
    // Mailboxes live in the configuration file: restart with one.
    s.kill();
    let config = format!(
        r#"
[[mailboxes]]
name = "down"
host = "127.0.0.1"
port = {down}
tls = "none"
username = "nobody"
password = "nothing"
poll_interval_secs = 1

[[mailboxes]]
name = "carrier"
host = "127.0.0.1"
port = {port}
tls = "implicit"
username = "tester"
password = "secret"
ca_file = "{ca}"
poll_interval_secs = 1
"#,
        down = free_port(),
        port = dovecot.imaps_port,
        ca = dovecot.ca_file.display(),
    );
    std::fs::write(s.dir.path().join("billhook.toml"), config).unwrap();
    s.spawn();

    wait_for(60, "both messages handled", || async {
        let done = !events_of(&s, "importd.process_success").await.is_empty()
            && !events_of(&s, "email_rates_manager.rate_tables_no_match")
                .await
                .is_empty();
        done.then_some(())
    })
    .await;
    let (_, rates) = s.get(&format!("/api/v1/rate_tables/{id}/rates")).await;
    assert!(rates["total"].as_i64().unwrap() > 0, "{rates}");
    let flagged = wait_for(30, "both messages flagged", || async {
        let uids = dovecot.search("INBOX", "KEYWORD $BillhookProcessed").await;
        (uids.len() >= 2).then_some(uids)
    })
    .await;
    assert_eq!(flagged.len(), 2);

    // Restarted, the server takes nothing twice: once a message that arrives after the
    // restart has been handled, the mailbox has been polled again, and the old two did
    // not come back.
    let before = s.events().await.len();
    let (_, imports_before) = s.get("/api/v1/imports").await;
    s.kill();
    s.spawn();
    dovecot.append("INBOX", &data("no_attachments.eml")).await;
    wait_for(60, "the new message handled", || async {
        // Its subject is not the table's: a second `rate_tables_no_match`.
        let n = events_of(&s, "email_rates_manager.rate_tables_no_match")
            .await
            .len();
        (n >= 2).then_some(())
    })
    .await;
    assert_eq!(
        s.events().await.len(),
        before + 1,
        "only the new message's event"
    );
    let (_, imports) = s.get("/api/v1/imports").await;
    assert_eq!(imports["total"], imports_before["total"], "{imports}");
}
