//! A real Dovecot for the tests: a private configuration in a tempdir, plain IMAP and IMAPS
//! on free loopback ports, a self-signed CA generated per test, a passwd-file user and
//! maildir storage, run in the foreground as a child process and stopped on drop.

#![allow(dead_code)] // each test binary uses a different part of it

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod ca;

use billhook_mailbox::{Ingest, MailboxConfig, MessageKey, TlsMode};
use futures::TryStreamExt;

pub const USER: &str = "tester";
pub const PASSWORD: &str = "secret";

pub struct Dovecot {
    child: Child,
    dir: tempfile::TempDir,
    pub imap_port: u16,
    pub imaps_port: u16,
    /// PEM of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
}

fn dovecot_binary() -> PathBuf {
    // /usr/sbin is not on a non-root PATH.
    for candidate in ["dovecot", "/usr/sbin/dovecot"] {
        if Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "dovecot is not installed: apt-get install dovecot-imapd; .ci/run installs it \
         (crates/mailbox/tests/install-dovecot.sh)"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A CA and a server certificate for localhost / 127.0.0.1 signed by it, written to
/// `dir`; returns the CA's file.
fn certificates(dir: &Path) -> PathBuf {
    let (ca, cert, key) = ca::private_ca();
    write(&dir.join("server.pem"), &cert);
    write(&dir.join("server.key"), &key);
    let ca_file = dir.join("ca.pem");
    write(&ca_file, &ca);
    ca_file
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Dovecot {
    pub async fn start() -> Dovecot {
        Self::start_with("").await
    }

    /// Starts with `extra` appended to the configuration (e.g. a capability list).
    pub async fn start_with(extra: &str) -> Dovecot {
        let binary = dovecot_binary();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca_file = certificates(d);
        for sub in ["run", "state", "home"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }

        // Dovecot refuses root for its login processes and for mail access: as root
        // (CI), those run as nobody; otherwise everything runs as the current user.
        let root = unsafe { libc::geteuid() } == 0;
        let me = command_output("id", &["-un"]);
        let my_group = command_output("id", &["-gn"]);
        let (login_user, mail_uid, mail_gid) = if root {
            let nogroup = command_output("id", &["-gn", "nobody"]);
            ("nobody".to_string(), "nobody".to_string(), nogroup)
        } else {
            (me.clone(), me.clone(), my_group.clone())
        };
        let home = d.join("home").join(USER);
        std::fs::create_dir_all(&home).unwrap();
        if root {
            // The mail processes (nobody) must reach and own the home directory.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            let status = Command::new("chown")
                .args(["-R", &format!("{mail_uid}:{mail_gid}")])
                .arg(d.join("home"))
                .status()
                .unwrap();
            assert!(status.success(), "chown of the test home failed");
        }

        let passwd = d.join("passwd");
        write(&passwd, &format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n"));
        let imap_port = free_port();
        let imaps_port = free_port();
        let conf = d.join("dovecot.conf");
        let dp = d.display();
        write(
            &conf,
            &format!(
                r#"# Private test instance; nothing from /etc/dovecot is read.
protocols = imap
listen = 127.0.0.1
base_dir = {dp}/run
state_dir = {dp}/state
log_path = {dp}/dovecot.log
default_internal_user = {me}
default_internal_group = {my_group}
default_login_user = {login_user}
first_valid_uid = 0
first_valid_gid = 0
mail_uid = {mail_uid}
mail_gid = {mail_gid}
mail_home = {dp}/home/%u
mail_location = maildir:~/Maildir
ssl = yes
ssl_cert = <{dp}/server.pem
ssl_key = <{dp}/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dp}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dp}/passwd
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
{extra}
"#
            ),
        );

        let child = Command::new(&binary)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting dovecot");
        let mut dovecot = Dovecot {
            child,
            dir,
            imap_port,
            imaps_port,
            ca_file,
        };
        dovecot.wait_ready().await;
        dovecot
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("dovecot exited at start ({status}): {err}\n{}", self.log());
            }
            // Ready once a login works: the auth process is up too.
            if let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_secs(2), self.try_session()).await
            {
                let _ = s.logout().await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dovecot did not accept a login within 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// A mailbox configuration for this server with a short timeout.
    pub fn config(&self, name: &str, tls: TlsMode) -> MailboxConfig {
        let mut cfg = MailboxConfig::new(name, "127.0.0.1", USER, PASSWORD);
        cfg.tls = tls;
        cfg.port = Some(match tls {
            TlsMode::Implicit => self.imaps_port,
            TlsMode::Starttls | TlsMode::None => self.imap_port,
        });
        if tls != TlsMode::None {
            cfg.ca_file = Some(self.ca_file.clone());
        }
        cfg.poll_interval_secs = 1;
        cfg.timeout_secs = 10;
        cfg
    }

    async fn try_session(
        &self,
    ) -> Result<async_imap::Session<tokio::net::TcpStream>, Box<dyn std::error::Error>> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.imap_port)).await?;
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await?.ok_or("no greeting")?;
        client
            .login(USER, PASSWORD)
            .await
            .map_err(|(e, _)| e.into())
    }

    /// A separate IMAP session to set up and inspect the mailbox (not the crate under test).
    pub async fn session(&self) -> async_imap::Session<tokio::net::TcpStream> {
        self.try_session().await.expect("test IMAP session")
    }

    /// Delivers a message into `folder` by IMAP APPEND, so Dovecot owns the files.
    pub async fn append(&self, folder: &str, raw: &[u8]) {
        let mut s = self.session().await;
        s.append(folder, None, None, raw).await.expect("APPEND");
        s.logout().await.unwrap();
    }

    /// UIDs in `folder` matching an IMAP search.
    pub async fn search(&self, folder: &str, query: &str) -> Vec<u32> {
        let mut s = self.session().await;
        s.select(folder).await.expect("SELECT");
        let mut uids: Vec<u32> = s
            .uid_search(query)
            .await
            .expect("SEARCH")
            .into_iter()
            .collect();
        uids.sort_unstable();
        s.logout().await.unwrap();
        uids
    }

    /// Raw bytes of one message as the server stores them.
    pub async fn raw(&self, folder: &str, uid: u32) -> Vec<u8> {
        let mut s = self.session().await;
        s.select(folder).await.unwrap();
        let fetched: Vec<_> = s
            .uid_fetch(uid.to_string(), "BODY.PEEK[]")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let body = fetched[0].body().unwrap().to_vec();
        drop(fetched);
        s.logout().await.unwrap();
        body
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its children; SIGKILL only if it does not.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A short RFC 822 message with CRLF line ends, as a server returns them.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: carrier@example.net\r\nTo: rates@example.com\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Records what it is handed; fails the first `fail_first` calls.
#[derive(Default)]
pub struct Recorder {
    pub got: Mutex<Vec<(MessageKey, Vec<u8>)>>,
    pub fail_first: AtomicUsize,
}

impl Recorder {
    pub fn failing(n: usize) -> Self {
        Recorder {
            fail_first: AtomicUsize::new(n),
            ..Default::default()
        }
    }

    pub fn keys(&self) -> Vec<MessageKey> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl Ingest for Recorder {
    async fn ingest(&self, raw: Vec<u8>, key: MessageKey) -> Result<(), String> {
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("ingester refused (test)".to_string());
        }
        self.got.lock().unwrap().push((key, raw));
        Ok(())
    }
}
