//! One IMAP mailbox to poll, as the operator writes it in the configuration.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS, port 993).
    #[default]
    Implicit,
    /// Plain connection upgraded with STARTTLS before logging in (port 143).
    Starttls,
    /// No TLS at all: only for a server on the same host or a test.
    None,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxConfig {
    /// Operator's label, used in logs and as the source key of every message.
    pub name: String,
    pub host: String,
    /// Defaults to 993 with `tls = "implicit"`, 143 otherwise.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    pub username: String,
    pub password: String,
    #[serde(default = "inbox")]
    pub folder: String,
    /// When set, processed messages are moved to this folder (created if missing);
    /// otherwise they stay and are flagged `$BillhookProcessed` + `\Seen`.
    pub move_to: Option<String>,
    /// Extra PEM CA certificate(s) to trust besides the webpki roots (self-signed servers).
    pub ca_file: Option<PathBuf>,
    #[serde(default = "sixty")]
    pub poll_interval_secs: u64,
    /// Limit for connecting and for each IMAP command, so a hung server cannot stall
    /// a poller; fetching one message body gets ten times as long.
    #[serde(default = "thirty")]
    pub timeout_secs: u64,
}

fn inbox() -> String {
    "INBOX".to_string()
}

fn sixty() -> u64 {
    60
}

fn thirty() -> u64 {
    30
}

impl MailboxConfig {
    /// A configuration with every optional field at its default (implicit TLS, INBOX,
    /// flagging, 60 s interval, 30 s timeouts).
    pub fn new(
        name: impl Into<String>,
        host: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            host: host.into(),
            port: None,
            tls: TlsMode::default(),
            username: username.into(),
            password: password.into(),
            folder: inbox(),
            move_to: None,
            ca_file: None,
            poll_interval_secs: sixty(),
            timeout_secs: thirty(),
        }
    }

    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 993,
            TlsMode::Starttls | TlsMode::None => 143,
        })
    }

    pub fn poll_interval(&self) -> Duration {
        // Zero would make a busy loop against the server.
        Duration::from_secs(self.poll_interval_secs.max(1))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

/// Hand-written so that the password never reaches a log line.
impl fmt::Debug for MailboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxConfig")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.effective_port())
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("folder", &self.folder)
            .field("move_to", &self.move_to)
            .field("ca_file", &self.ca_file)
            .field("poll_interval_secs", &self.poll_interval_secs)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_debug_without_password() {
        let cfg: MailboxConfig = serde_json::from_str(
            r#"{"name":"carrier-a","host":"imap.example.net","username":"rates","password":"hunter2"}"#,
        )
        .unwrap();
        assert_eq!(cfg.tls, TlsMode::Implicit);
        assert_eq!(cfg.effective_port(), 993);
        assert_eq!(cfg.folder, "INBOX");
        assert_eq!(cfg.poll_interval_secs, 60);
        assert_eq!(cfg.timeout_secs, 30);
        assert!(cfg.move_to.is_none() && cfg.ca_file.is_none());
        assert!(!format!("{cfg:?}").contains("hunter2"));

        let cfg: MailboxConfig = serde_json::from_str(
            r#"{"name":"b","host":"h","username":"u","password":"p","tls":"starttls","move_to":"Done"}"#,
        )
        .unwrap();
        assert_eq!((cfg.tls, cfg.effective_port()), (TlsMode::Starttls, 143));
        let cfg: MailboxConfig = serde_json::from_str(
            r#"{"name":"c","host":"h","username":"u","password":"p","tls":"none","port":1143}"#,
        )
        .unwrap();
        assert_eq!((cfg.tls, cfg.effective_port()), (TlsMode::None, 1143));
    }
}
