//! Starts the real `billhook` binary on `127.0.0.1:0` against a fresh database — a
//! temporary SQLite file, or a database of its own on the PostgreSQL server named by
//! `BILLHOOK_TEST_DATABASE_URL` — and talks to it over HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KEY: &str = "test-admin-key";

/// Where a test server keeps its state.
pub enum Database {
    Sqlite(tempfile::TempDir),
    Postgres {
        admin_url: String,
        name: String,
    },
    /// A database another server owns, known by its URL only; never dropped from here.
    Shared(String),
}

impl Database {
    /// A fresh, empty database of the kind this run tests.
    pub async fn fresh() -> Database {
        match std::env::var("BILLHOOK_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => {
                use sqlx::Connection;
                let name = format!("billhook_test_{}", uuid::Uuid::now_v7().simple());
                let mut conn = sqlx::PgConnection::connect(&url)
                    .await
                    .expect("BILLHOOK_TEST_DATABASE_URL must reach PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                Database::Postgres {
                    admin_url: url,
                    name,
                }
            }
            _ => Database::Sqlite(tempfile::tempdir().expect("temp dir")),
        }
    }

    /// The URL the server is given.
    pub fn url(&self) -> String {
        match self {
            Database::Sqlite(dir) => format!("sqlite:{}", dir.path().join("billhook.db").display()),
            Database::Postgres { admin_url, name } => {
                let base = admin_url
                    .rsplit_once('/')
                    .map_or(admin_url.as_str(), |(b, _)| b);
                format!("{base}/{name}")
            }
            Database::Shared(url) => url.clone(),
        }
    }

    /// True on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        match self {
            Database::Shared(url) => url.starts_with("postgres"),
            _ => matches!(self, Database::Postgres { .. }),
        }
    }

    /// For a test that only PostgreSQL can show: on SQLite it says loudly on stderr that
    /// the test is not run, and why, and answers true (the caller returns).
    pub fn not_run_on_sqlite(&self, why: &str) -> bool {
        if self.is_postgres() {
            return false;
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "NOT RUN on SQLite ({why}); set BILLHOOK_TEST_DATABASE_URL to run it on PostgreSQL"
        );
        true
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Database::Postgres { admin_url, name } = self {
            let (url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside async: use a runtime of its own on a plain thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A running server.
pub struct Server {
    pub db: Database,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra_env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server on a fresh database.
    pub async fn start() -> Server {
        Server::start_with(vec![]).await
    }

    /// Starts a server with extra environment variables.
    pub async fn start_with(env: Vec<(&str, &str)>) -> Server {
        let db = Database::fresh().await;
        let extra_env = env
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut server = Server {
            db,
            base: String::new(),
            http: reqwest::Client::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            extra_env,
        };
        server.spawn();
        server
    }

    /// Starts another server process on an existing database (the URL of a running
    /// server's `db`), e.g. a second scheduler; dropping it leaves the database alone.
    pub async fn start_on(url: &str) -> Server {
        Server::start_on_with(url, vec![]).await
    }

    /// Starts another server process on an existing database with extra environment
    /// variables.
    pub async fn start_on_with(url: &str, env: Vec<(&str, &str)>) -> Server {
        let mut server = Server {
            db: Database::Shared(url.to_string()),
            base: String::new(),
            http: reqwest::Client::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            extra_env: env
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn();
        server
    }

    /// Starts the process (again) on the same database.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_billhook"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database-url")
            .arg(self.db.url())
            .current_dir(self.dir.path())
            .env("BILLHOOK_API_KEY", KEY)
            .env("BILLHOOK_SCHEDULER_INTERVAL_MS", "100")
            .env("BILLHOOK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Handler calls go through a proxy the environment names: the tests' receivers
        // are on this machine, and the tests that want a proxy set one.
        let exceptions = ["NO_PROXY", "no_proxy"];
        for proxy in billhook_provisioning::caller::PROXY_VARIABLES
            .iter()
            .chain(&exceptions)
        {
            cmd.env_remove(proxy);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start billhook");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.strip_prefix("billhook listening on ") {
                        let _ = tx.send(addr.to_string());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("billhook printed its address");
        self.base = addr;
        self.child = Some(child);
    }

    /// Kills the process with SIGKILL: nothing gets to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().expect("wait")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with the admin key; returns status and JSON body (Null if none).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("X-Api-Key", KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Sends a raw body with a content type; for malformed-input tests.
    pub async fn raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .http
            .request(method, self.url(path))
            .header("X-Api-Key", KEY)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PATCH", path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None).await
    }

    /// POSTs and asserts the status, returning the body.
    pub async fn ok(&self, path: &str, body: Value, status: u16) -> Value {
        let (s, v) = self.post(path, body).await;
        assert_eq!(s, status, "POST {path}: {v}");
        v
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status().as_u16(), 200);
        // Prometheus' text format, with its charset: label values may be any UTF-8.
        let kind = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or(""));
        assert_eq!(kind, Some("text/plain; version=0.0.4; charset=utf-8"));
        resp.text().await.expect("metrics text")
    }

    /// All events, oldest first.
    pub async fn events(&self) -> Vec<Value> {
        let mut items = Vec::new();
        loop {
            let path = format!("/api/v1/events?limit=1000&offset={}", items.len());
            let (s, v) = self.get(&path).await;
            assert_eq!(s, 200, "{v}");
            let page = v["items"].as_array().expect("items");
            items.extend(page.iter().cloned());
            if page.is_empty() || items.len() as i64 >= v["total"].as_i64().expect("total") {
                break;
            }
        }
        items.reverse();
        items
    }

    /// Events after the first `skip`, oldest first: what the last requests raised.
    pub async fn events_since(&self, skip: usize) -> Vec<Value> {
        self.events().await.into_iter().skip(skip).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `check` returns `Some`, polling, or panics after `secs` seconds.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `events_id`s of a list of payloads.
pub fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["event"]["events_id"]
                .as_str()
                .expect("events_id")
                .to_string()
        })
        .collect()
}

/// Asserts an error body's code.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["data"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// Writes `body` as `scripts/<name>` in the server's working directory (the default
/// scripts directory `./scripts`), executable or not.
pub fn write_script(s: &Server, name: &str, body: &str, executable: bool) -> std::path::PathBuf {
    write_script_in(&s.dir.path().join("scripts"), name, body, executable)
}

/// Writes `body` as `dir/<name>`, executable or not.
pub fn write_script_in(
    dir: &std::path::Path,
    name: &str,
    body: &str,
    executable: bool,
) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("scripts dir");
    let path = dir.join(name);
    // Write under another name and rename: a script is never seen half-written.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, body).expect("write script");
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::fs::rename(&tmp, &path).expect("rename script");
    path
}
