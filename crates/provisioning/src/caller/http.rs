use std::time::Duration;

use billhook_domain::Timestamp;
use bytes::Bytes;
use http_body_util::BodyExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, USER_AGENT};

use super::direct::{self, Direct};
use super::{capped_text, read_cap, CallMeta, CallOutcome, BODY_CAP};
use crate::retry::parse_retry_after;
use crate::signing::signature_header;

/// Calls a handler through reqwest (used when proxies are configured).
pub(super) async fn call(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    secrets: &[&str],
    meta: &CallMeta<'_>,
    body: &[u8],
    timeout: Duration,
) -> CallOutcome {
    // reqwest adds the user agent and `Accept` of its client.
    let request = client
        .post(url)
        .headers(signed_headers(secrets, meta, body))
        .body(body.to_vec());
    timed(timeout, async {
        match request.send().await {
            Ok(response) => read(response.into(), read_cap(meta.stage)).await,
            Err(e) => failed(describe(&e)),
        }
    })
    .await
}

/// Calls a handler on hyper's client directly (see [`super::direct`]).
pub(super) async fn call_direct(
    client: &Direct,
    uri: hyper::Uri,
    secrets: &[&str],
    meta: &CallMeta<'_>,
    body: &[u8],
    timeout: Duration,
) -> CallOutcome {
    let mut headers = signed_headers(secrets, meta, body);
    headers.insert(USER_AGENT, HeaderValue::from_static(super::USER_AGENT));
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    timed(timeout, async {
        match client
            .post(uri.clone(), headers, Bytes::copy_from_slice(body))
            .await
        {
            Ok(response) => read(response, read_cap(meta.stage)).await,
            Err(e) => failed(direct::describe(&uri, &e)),
        }
    })
    .await
}

/// The spec's headers of a call: its content type and the Standard Webhooks ones.
fn signed_headers(secrets: &[&str], meta: &CallMeta<'_>, body: &[u8]) -> HeaderMap {
    // Header names as constants: given as text, each would be parsed on every call.
    const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
    const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
    // The sender's own clock, as Standard Webhooks has it: the receiver checks it
    // against its clock, and a database whose clock is off should not fail every call.
    let timestamp = Timestamp::machine_now().unix_seconds();
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let value = |text: String| HeaderValue::try_from(text).expect("ASCII without controls");
    headers.insert(WEBHOOK_ID, value(meta.uid.to_string()));
    headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
    headers.insert(
        WEBHOOK_SIGNATURE,
        value(signature_header(secrets, meta.uid, timestamp, body)),
    );
    headers
}

/// The outcome of `call`, or a timeout once `timeout` has passed.
async fn timed(
    timeout: Duration,
    call: impl std::future::Future<Output = CallOutcome>,
) -> CallOutcome {
    match tokio::time::timeout(timeout, call).await {
        Ok(outcome) => outcome,
        Err(_) => failed(format!("timeout after {} ms", timeout.as_millis())),
    }
}

fn failed(error: String) -> CallOutcome {
    CallOutcome {
        error: Some(error),
        ..CallOutcome::default()
    }
}

/// The outcome of a response: its status, `Retry-After` on 429 and 503, and its body
/// read up to `cap` bytes.
async fn read<B>(mut response: hyper::Response<B>, cap: usize) -> CallOutcome
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error,
{
    let status = response.status();
    let retry_after = if status.as_u16() == 429 || status.as_u16() == 503 {
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    } else {
        None
    };
    // An answer declared longer than the cap is not read to it to be refused: its
    // first 64 KiB are read, for the log.
    let declared = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let too_long = declared.is_some_and(|n| n > cap);
    let limit = if too_long { cap.min(BODY_CAP) } else { cap };
    // Read at most the cap; a receiver streaming forever cannot hold the worker.
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit + 1));
    let mut read_error = None;
    let mut ended = false;
    while body.len() <= limit {
        match response.body_mut().frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    body.extend_from_slice(data);
                }
            }
            None => {
                ended = true;
                break;
            }
            Some(Err(e)) => {
                let text = with_sources(format!("bad response: {e}"), &e);
                read_error = Some(format!("reading the response: {text}"));
                break;
            }
        }
    }
    let success = status.is_success() && read_error.is_none();
    let answered = read_error.is_none();
    let cut = answered && (too_long || (!ended && body.len() > limit));
    let error = read_error.or_else(|| (!status.is_success()).then(|| format!("HTTP {status}")));
    CallOutcome {
        success,
        response_status: Some(i64::from(status.as_u16())),
        response_body: Some(capped_text(&body, limit)),
        cut,
        error,
        duration: Duration::ZERO,
        retry_after,
        answered,
        stderr: None,
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_body() || e.is_decode() {
        "bad response"
    } else {
        "request failed"
    };
    with_sources(format!("{kind}: {e}"), e)
}

/// `text` followed by the chain of what caused `e`.
pub(super) fn with_sources(mut text: String, e: &dyn std::error::Error) -> String {
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
