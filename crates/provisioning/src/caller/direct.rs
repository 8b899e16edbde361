//! HTTP(S) calls straight on hyper's pooled client, the one under reqwest.
//!
//! Why not reqwest for every call: for each request it turns the URL into a URI and back
//! into a URL for its redirect policy (which never follows one here), runs its retry
//! layer (which never retries here) and copies the headers again: about 4 % of the
//! server's CPU under load (`bench --concurrency 128`, profiled with perf). reqwest stays
//! for what this does not do: proxies from the environment and credentials in a URL
//! (see `Caller::new` and `Caller::parsed_url`). The settings are reqwest's as the
//! caller had them: a 5 s limit on connecting (TCP and TLS), TCP keepalive, idle
//! connections closed after 90 s, HTTP/1.1 offered by ALPN.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::HeaderMap;
use rustls_pki_types::CertificateDer;

/// How long connecting to a handler may take, TLS handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Connector = TimedConnect<HttpsConnector<HttpConnector>>;

/// A pooled HTTP/1.1 client with the settings of `Caller::new`'s reqwest client.
#[derive(Clone)]
pub(super) struct Direct {
    client: Client<Connector, Full<Bytes>>,
}

impl Direct {
    /// Trusts what [`super::tls::client_config`] does.
    pub(super) fn new(extra_roots: &[CertificateDer<'static>]) -> Result<Direct, String> {
        let tls = super::tls::client_config(extra_roots)?;
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        // https:// URLs too: the TLS connector wraps this one.
        tcp.enforce_http(false);
        // http:// or https://, as the URL says.
        let https = HttpsConnector::from((tcp, tls));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(TimedConnect(https));
        Ok(Direct { client })
    }

    /// POSTs `body` with `headers` to `uri`; the response's body is left to be read.
    pub(super) async fn post(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let mut request = Request::post(uri)
            .body(Full::new(body))
            .expect("a URI and headers already valid");
        *request.headers_mut() = headers;
        self.client.request(request).await
    }
}

/// What went wrong with a call to `uri`, in the words reqwest's errors had.
pub(super) fn describe(uri: &Uri, e: &hyper_util::client::legacy::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let text = format!("{kind}: error sending request for url ({uri}): {e}");
    super::http::with_sources(text, e)
}

/// A connector whose connections must be made, TLS handshake included, within
/// [`CONNECT_TIMEOUT`]: hyper's own limit covers only the TCP connect.
#[derive(Clone)]
struct TimedConnect<C>(C);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<Uri> for TimedConnect<C>
where
    C: tower_service::Service<Uri> + Send,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(format!("connecting timed out after {CONNECT_TIMEOUT:?}").into()),
            }
        })
    }
}
