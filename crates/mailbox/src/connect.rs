//! Opening an authenticated IMAP session: TCP, TLS (implicit or STARTTLS), greeting, LOGIN.
//! Every step is bounded by the mailbox's timeout, so a server that accepts the connection
//! and then says nothing cannot hold a poller.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{MailboxConfig, MailboxError, TlsMode};

pub(crate) type Session = async_imap::Session<ImapStream>;

/// The transport under the IMAP client: one type for both plain and TLS connections so
/// that the rest of the crate deals with a single `Session` type.
pub(crate) enum ImapStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl fmt::Debug for ImapStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImapStream::Plain(_) => f.write_str("ImapStream::Plain"),
            ImapStream::Tls(_) => f.write_str("ImapStream::Tls"),
        }
    }
}

impl AsyncRead for ImapStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Runs `fut` with the mailbox's timeout, naming the step in the error.
pub(crate) async fn within<T>(
    limit: Duration,
    step: &'static str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, MailboxError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| MailboxError::Timeout { step, after: limit })
}

/// Connects, protects and logs in.
pub(crate) async fn login(cfg: &MailboxConfig) -> Result<Session, MailboxError> {
    let limit = cfg.timeout();
    let port = cfg.effective_port();
    let addr = format!("{}:{}", cfg.host, port);
    let tcp = within(
        limit,
        "connect",
        TcpStream::connect((cfg.host.as_str(), port)),
    )
    .await?
    .map_err(|source| MailboxError::Connect {
        addr: addr.clone(),
        source,
    })?;
    // IMAP is chatty with small commands; do not wait for Nagle.
    let _ = tcp.set_nodelay(true);

    let stream = match cfg.tls {
        TlsMode::None => ImapStream::Plain(tcp),
        TlsMode::Implicit => ImapStream::Tls(Box::new(handshake(cfg, tcp).await?)),
        TlsMode::Starttls => {
            let mut client = async_imap::Client::new(tcp);
            greeting(&mut client, limit).await?;
            within(
                limit,
                "STARTTLS",
                client.run_command_and_check_ok("STARTTLS", None),
            )
            .await?
            .map_err(|source| MailboxError::Imap {
                step: "STARTTLS",
                source,
            })?;
            // The server sends nothing more in clear after its OK, so no buffered bytes
            // are lost by taking the socket back.
            let tcp = client.into_inner();
            ImapStream::Tls(Box::new(handshake(cfg, tcp).await?))
        }
    };

    let mut client = async_imap::Client::new(stream);
    // After STARTTLS there is no second greeting (RFC 3501 6.2.1).
    if cfg.tls != TlsMode::Starttls {
        greeting(&mut client, limit).await?;
    }
    within(limit, "LOGIN", client.login(&cfg.username, &cfg.password))
        .await?
        .map_err(|(e, _client)| MailboxError::Login(e))
}

async fn greeting<T>(
    client: &mut async_imap::Client<T>,
    limit: Duration,
) -> Result<(), MailboxError>
where
    T: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Send,
{
    match within(limit, "greeting", client.read_response()).await? {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(MailboxError::Imap {
            step: "greeting",
            source: async_imap::error::Error::ConnectionLost,
        }),
        Err(e) => Err(MailboxError::Imap {
            step: "greeting",
            source: e.into(),
        }),
    }
}

async fn handshake(
    cfg: &MailboxConfig,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, MailboxError> {
    let connector = TlsConnector::from(tls_config(cfg)?);
    let name = ServerName::try_from(cfg.host.clone())
        .map_err(|e| MailboxError::Tls(format!("invalid server name {:?}: {e}", cfg.host)))?;
    within(cfg.timeout(), "TLS handshake", connector.connect(name, tcp))
        .await?
        .map_err(|e| MailboxError::Tls(e.to_string()))
}

/// webpki roots plus the configured CA file. Built on each connection: it is cheap next
/// to a handshake, and a replaced CA file is picked up without a restart.
fn tls_config(cfg: &MailboxConfig) -> Result<Arc<rustls::ClientConfig>, MailboxError> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.ca_file {
        let bad =
            |e: &dyn fmt::Display| MailboxError::Tls(format!("ca_file {}: {e}", path.display()));
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(&"no PEM certificate in it"));
        }
    }
    // The ring provider explicitly, like reqwest here: no dependence on a process-wide
    // default provider, and no aws-lc in the build.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| MailboxError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
