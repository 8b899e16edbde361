//! `billhook bench --relay`: the bound of billhook's shape on this machine. A relay
//! process takes each request and sends its body on to the receiver before it answers:
//! the two HTTP legs of an event (API call in, delivery out) and nothing else, no
//! database, no log. How far it stays below the ceiling is what the HTTP legs cost; how
//! far billhook stays below it is what storing and tracking each event costs.

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

const LISTENING: &str = "billhook relay listening on ";

/// Runs the relay (the hidden `bench-relay` command): each POST /relay goes on to `to`
/// with the same body and the same headers of a delivery, and is answered once the
/// receiver has answered.
pub async fn serve(to: String) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let app = Router::new()
        .route(
            "/relay",
            post(
                |State((http, to)): State<(reqwest::Client, String)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let mut passed = HeaderMap::new();
                    for (name, value) in &headers {
                        let n = name.as_str();
                        if n.starts_with("webhook-") || n == "content-type" || n == "user-agent" {
                            passed.insert(name.clone(), value.clone());
                        }
                    }
                    match http.post(&to).headers(passed).body(body).send().await {
                        Ok(r) if r.status().is_success() => (StatusCode::CREATED, "{\"id\":0}"),
                        _ => (StatusCode::BAD_GATEWAY, "{}"),
                    }
                },
            ),
        )
        .with_state((http, to));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{LISTENING}{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// A relay process sending on to `to`, stopped when dropped.
pub struct Relay {
    pub process: tokio::process::Child,
    /// Its URL to post to.
    pub url: String,
}

impl Relay {
    pub async fn start(to: &str) -> anyhow::Result<Relay> {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.args(["bench-relay", "--to", to]);
        let (process, addr) = crate::bench::spawn_listening(command, LISTENING)
            .await
            .context("starting the relay")?;
        Ok(Relay {
            process,
            url: format!("http://{addr}/relay"),
        })
    }
}
