//! A webhook receiver on `127.0.0.1`: records every request (headers, body, arrival
//! time) and answers as told — fail the next N requests (500, or 429/503 with a
//! `Retry-After`), be slow for one client, reply a given body on a path, or be down (not
//! listening) and come up again on the same port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::harness::wait_for;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Hit {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
}

impl Hit {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// `webhook-id`: the event uid.
    pub fn uid(&self) -> String {
        self.header("webhook-id")
    }

    /// `event.events_id` of the payload.
    pub fn events_id(&self) -> String {
        self.json["event"]["events_id"]
            .as_str()
            .unwrap_or_default()
            .into()
    }

    /// The client the payload concerns: `data.clients_id`, else (client events) `data.id`.
    pub fn client(&self) -> Option<i64> {
        let data = &self.json["data"];
        data["clients_id"].as_i64().or_else(|| {
            self.events_id()
                .starts_with("clients.")
                .then(|| data["id"].as_i64())
                .flatten()
        })
    }
}

#[derive(Default)]
struct Behaviour {
    /// Answers planned for the next requests, in order: status and delay.
    plan: std::collections::VecDeque<(u16, Duration)>,
    /// Answer the next `fail_next` requests with `fail_status` (and `Retry-After`).
    fail_next: usize,
    fail_status: u16,
    retry_after: Option<String>,
    /// Requests about this client wait this long before the answer.
    slow: Option<(i64, Duration)>,
    /// Body answered on a path (default: empty).
    replies: HashMap<String, String>,
}

#[derive(Default)]
struct Shared {
    hits: Mutex<Vec<Hit>>,
    behaviour: Mutex<Behaviour>,
    /// Requests being answered now, and the most there were at once.
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn start(shared: &Arc<Shared>) -> InFlight {
        use std::sync::atomic::Ordering::SeqCst;
        let now = shared.in_flight.fetch_add(1, SeqCst) + 1;
        shared.most_in_flight.fetch_max(now, SeqCst);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// TCP connections that complete a TLS handshake, for `axum::serve`. A handshake that
/// fails (a caller that does not trust the certificate) only drops that connection.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(stream);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The receiver.
pub struct Receiver {
    pub port: u16,
    /// Serves HTTPS with this configuration; plain HTTP without.
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    running: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl Receiver {
    /// A receiver listening on a free port.
    pub async fn start() -> Receiver {
        let r = Receiver::reserved();
        r.up().await;
        r
    }

    /// A receiver serving HTTPS with the certificate chain and key given (PEM).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Receiver {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        let mut r = Receiver::reserved();
        r.tls = Some(Arc::new(config));
        r.up().await;
        r
    }

    /// A receiver on a free port that is not listening yet (down until [`Receiver::up`]).
    pub fn reserved() -> Receiver {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = probe.local_addr().expect("address").port();
        drop(probe);
        Receiver {
            port,
            tls: None,
            shared: Arc::default(),
            running: Mutex::new(None),
        }
    }

    /// Starts listening on the receiver's port.
    pub async fn up(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the receiver's port again");
        let app = axum::Router::new()
            .fallback(record)
            .with_state(self.shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let stopped = async {
            let _ = rx.await;
        };
        let task = match &self.tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
            }),
            Some(config) => {
                let listener = TlsListener {
                    tcp: listener,
                    acceptor: tokio_rustls::TlsAcceptor::from(config.clone()),
                };
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await;
                })
            }
        };
        *self.running.lock().unwrap() = Some((tx, task));
    }

    /// Stops listening and closes every connection: the port refuses connections.
    pub async fn down(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some((tx, task)) = running {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// The most requests it was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.shared
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Answers the next `n` requests with `status` (and a `Retry-After` if given).
    pub fn fail(&self, n: usize, status: u16, retry_after: Option<&str>) {
        let mut b = self.shared.behaviour.lock().unwrap();
        b.fail_next = n;
        b.fail_status = status;
        b.retry_after = retry_after.map(str::to_string);
    }

    /// Answers every request with 500 until told otherwise.
    pub fn fail_always(&self) {
        self.fail(usize::MAX, 500, None);
    }

    /// Answers every request with 200 again.
    pub fn succeed(&self) {
        self.fail(0, 500, None);
    }

    /// The next requests get these answers (status after a delay), in order; before
    /// any other behaviour.
    pub fn plan(&self, answers: &[(u16, Duration)]) {
        let mut b = self.shared.behaviour.lock().unwrap();
        b.plan = answers.iter().copied().collect();
    }

    /// Requests about client `id` are answered after `delay`.
    pub fn slow_for_client(&self, id: i64, delay: Duration) {
        self.shared.behaviour.lock().unwrap().slow = Some((id, delay));
    }

    /// The body answered on `path`.
    pub fn reply(&self, path: &str, body: &str) {
        let mut b = self.shared.behaviour.lock().unwrap();
        b.replies.insert(path.to_string(), body.to_string());
    }

    /// Every request so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// The requests on `path`, in arrival order.
    pub fn hits_on(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    /// Waits until `path` has had at least `n` requests; returns them.
    pub async fn wait_hits(&self, path: &str, n: usize, secs: u64) -> Vec<Hit> {
        let what = format!("{n} requests on {path}");
        wait_for(secs, &what, || async {
            let hits = self.hits_on(path);
            (hits.len() >= n).then_some(hits)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.running.lock().unwrap().take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::start(&shared);
    let hit = Hit {
        at: Instant::now(),
        path: uri.path().to_string(),
        headers,
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body,
    };
    let planned = shared.behaviour.lock().unwrap().plan.pop_front();
    if let Some((status, delay)) = planned {
        shared.hits.lock().unwrap().push(hit);
        tokio::time::sleep(delay).await;
        return StatusCode::from_u16(status)
            .expect("valid status")
            .into_response();
    }
    let (failure, delay, reply) = {
        let mut b = shared.behaviour.lock().unwrap();
        let reply = b.replies.get(&hit.path).cloned().unwrap_or_default();
        let failure = (b.fail_next > 0).then(|| {
            b.fail_next = b.fail_next.saturating_sub(1);
            (b.fail_status, b.retry_after.clone())
        });
        let delay = b
            .slow
            .and_then(|(client, d)| (hit.client() == Some(client)).then_some(d));
        (failure, delay, reply)
    };
    shared.hits.lock().unwrap().push(hit);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    match failure {
        Some((status, retry_after)) => {
            let status = StatusCode::from_u16(status).expect("valid status");
            let mut resp = (status, "receiver told to fail").into_response();
            if let Some(ra) = retry_after {
                resp.headers_mut()
                    .insert("retry-after", ra.parse().expect("header value"));
            }
            resp
        }
        None => (StatusCode::OK, reply).into_response(),
    }
}
