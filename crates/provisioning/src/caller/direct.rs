//! HTTP(S) calls straight on hyper's pooled client, the one under reqwest.
//!
//! Why not reqwest for every call: for each request it turns the URL into a URI and back
//! into a URL for its redirect policy (which never follows one here), runs its retry
//! layer (which never retries here) and copies the headers again: about 4 % of the
//! server's CPU under load (`bench --concurrency 128`, profiled with perf). reqwest stays
//! for what this does not do: proxies from the environment (see `Caller::new`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use reqwest::header::HeaderMap;
use rustls_pki_types::CertificateDer;

/// A pooled HTTP/1.1 client with the settings of `Caller::new`'s reqwest client.
#[derive(Clone)]
pub(super) struct Direct {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Direct {
    /// Trusts the public certificate authorities (Mozilla's, as reqwest does) and
    /// `extra_roots`.
    pub(super) fn new(extra_roots: &[CertificateDer<'static>]) -> Result<Direct, String> {
        let mut roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for root in extra_roots {
            roots
                .add(root.clone())
                .map_err(|e| format!("a handler CA certificate: {e}"))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(Duration::from_secs(5)));
        tcp.set_nodelay(true);
        // https:// URLs too: the TLS connector wraps this one.
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
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

/// What went wrong with a call, in the words reqwest's errors get (see `http::describe`).
pub(super) fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    super::http::with_sources(format!("{kind}: {e}"), e)
}
