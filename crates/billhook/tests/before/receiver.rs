//! An HTTP receiver for before handlers on `127.0.0.1:0`: records every payload it gets
//! and answers with whatever the test's behaviour says (status, body, delay).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::harness::wait_for;

/// One answer: status, raw body, and how long to wait before sending it.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    /// `status` with `body` serialised as JSON.
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply::text(status, &body.to_string())
    }

    /// `status` with a raw body.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// 200 with an empty body.
    pub fn empty() -> Reply {
        Reply::text(200, "")
    }

    /// The same answer, `ms` milliseconds later.
    pub fn after_ms(mut self, ms: u64) -> Reply {
        self.delay = Duration::from_millis(ms);
        self
    }
}

type Behaviour = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

struct Shared {
    hits: Mutex<Vec<Value>>,
    behaviour: Mutex<Behaviour>,
}

/// The receiver; stops listening when dropped.
pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// A receiver answering every payload with `behaviour(payload)`.
    pub async fn start(behaviour: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("address").port();
        let shared = Arc::new(Shared {
            hits: Mutex::default(),
            behaviour: Mutex::new(Arc::new(behaviour)),
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { port, shared, task }
    }

    /// Answers 200 with the payload it got: the reference example's behaviour.
    pub async fn echo() -> Receiver {
        Receiver::start(|p| Reply::json(200, p)).await
    }

    /// Answers 200 with the payload whose `data` has `fields` set (top level).
    pub async fn modifying(fields: Value) -> Receiver {
        Receiver::start(move |p| Reply::json(200, &with_data(p, &fields))).await
    }

    /// Answers every request with this reply.
    pub async fn replying(reply: Reply) -> Receiver {
        Receiver::start(move |_| reply.clone()).await
    }

    /// Changes the behaviour.
    pub fn set(&self, behaviour: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        *self.shared.behaviour.lock().unwrap() = Arc::new(behaviour);
    }

    /// The URL handlers are registered with.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Every payload so far, in arrival order.
    pub fn hits(&self) -> Vec<Value> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// How many payloads arrived.
    pub fn count(&self) -> usize {
        self.shared.hits.lock().unwrap().len()
    }

    /// Waits until at least `n` payloads arrived; returns them.
    pub async fn wait_hits(&self, n: usize) -> Vec<Value> {
        wait_for(30, &format!("{n} payloads on the receiver"), || async {
            let hits = self.hits();
            (hits.len() >= n).then_some(hits)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `payload` with `fields` written over its `data`.
pub fn with_data(payload: &Value, fields: &Value) -> Value {
    let mut out = payload.clone();
    for (k, v) in fields.as_object().expect("fields is an object") {
        out["data"][k] = v.clone();
    }
    out
}

async fn answer(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.hits.lock().unwrap().push(payload.clone());
    let behaviour = shared.behaviour.lock().unwrap().clone();
    let reply = behaviour(&payload);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).expect("valid status");
    (status, [("content-type", "application/json")], reply.body).into_response()
}

/// A receiver on its own socket (not hyper, which would send a `Content-Length`) that
/// answers every request 200 with `mib` MiB of spaces in chunks; its URL.
pub async fn chunked_spaces(mib: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_request(&mut conn).await {
                    write_chunked_spaces(&mut conn, mib).await;
                }
            });
        }
    });
    url
}

/// Reads a request's head and as many bytes as its `Content-Length` says; false when
/// the connection ended first.
async fn read_request(conn: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let (mut read, mut buf) = (Vec::new(), [0u8; 65536]);
    loop {
        let Ok(n @ 1..) = conn.read(&mut buf).await else {
            return false;
        };
        read.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&read).to_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if read.len() >= end + 4 + length {
            return true;
        }
    }
}

/// A chunked 200 answer of `mib` chunks of 1 MiB of spaces; stops when the peer stops
/// reading (the server has what it takes).
async fn write_chunked_spaces(conn: &mut tokio::net::TcpStream, mib: usize) {
    use tokio::io::AsyncWriteExt;
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\n\r\n";
    let _ = conn.write_all(head.as_bytes()).await;
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..mib {
        let _ = conn.write_all(b"100000\r\n").await;
        if conn.write_all(&chunk).await.is_err() {
            return;
        }
        let _ = conn.write_all(b"\r\n").await;
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
}
