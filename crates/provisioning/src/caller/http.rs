use std::time::Duration;

use billhook_domain::Timestamp;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};

use super::{capped_text, CallMeta, CallOutcome, BODY_CAP};
use crate::retry::parse_retry_after;
use crate::signing::signature_header;

pub(super) async fn call(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    secrets: &[&str],
    meta: &CallMeta<'_>,
    body: &[u8],
    timeout: Duration,
) -> CallOutcome {
    // Header names as constants: given as text, each would be parsed on every call.
    const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
    const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
    let timestamp = Timestamp::now().unix_seconds();
    let request = client
        .post(url)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(WEBHOOK_ID, meta.uid)
        .header(WEBHOOK_TIMESTAMP, timestamp)
        .header(
            WEBHOOK_SIGNATURE,
            signature_header(secrets, meta.uid, timestamp, body),
        )
        .body(body.to_vec());
    match tokio::time::timeout(timeout, send(request)).await {
        Ok(outcome) => outcome,
        Err(_) => CallOutcome {
            error: Some(format!("timeout after {} ms", timeout.as_millis())),
            ..CallOutcome::default()
        },
    }
}

async fn send(request: reqwest::RequestBuilder) -> CallOutcome {
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return CallOutcome {
                error: Some(describe(&e)),
                ..CallOutcome::default()
            }
        }
    };
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
    // Read at most the cap; a receiver streaming forever cannot hold the worker.
    let mut body = Vec::new();
    let mut read_error = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() >= BODY_CAP {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                read_error = Some(format!("reading the response: {}", describe(&e)));
                break;
            }
        }
    }
    let success = status.is_success() && read_error.is_none();
    let answered = read_error.is_none();
    let error = read_error.or_else(|| (!status.is_success()).then(|| format!("HTTP {status}")));
    CallOutcome {
        success,
        response_status: Some(i64::from(status.as_u16())),
        response_body: Some(capped_text(&body)),
        error,
        duration_ms: 0,
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
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
