//! The reference example handler (Flask, run with python3) registered for
//! `clients.create`, as the vendor documentation describes it: it receives the event
//! after, and (SPEC §4) is a valid before handler too.

use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::harness::{wait_for, Server};
use crate::util::{client, create_handler, executions, uid_of, wait_deliveries};

/// The example handler of the reference documentation, verbatim.
const FLASK_EXAMPLE: &str = r#"from flask import Flask, request
import json
app = Flask(__name__)
@app.route("/api", methods=['GET', 'POST'])
def api():
    data = json.loads(request.data)
    return json.dumps(data)
if __name__ == "__main__":
    app.run()
"#;

/// The running example and the directory of its source.
struct Python(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the example on a free port with python3; FAILS (never skips) without Flask.
async fn start_flask() -> (Python, u16) {
    let check = Command::new("python3")
        .args(["-c", "import flask"])
        .output()
        .expect("python3 must be installed for the reference handler test");
    assert!(
        check.status.success(),
        "FLASK IS MISSING: `python3 -c 'import flask'` failed — install it with \
         `pip install flask` to run the reference example handler. stderr: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("handler.py"), FLASK_EXAMPLE).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = format!(
        "import sys; sys.path.insert(0, {:?}); import handler; \
         handler.app.run(host='127.0.0.1', port={port})",
        dir.path().display().to_string()
    );
    let python = Python(
        Command::new("python3")
            .args(["-c", &run])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the Flask example"),
        dir,
    );
    wait_for(30, "the Flask example to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    (python, port)
}

#[tokio::test]
async fn the_reference_flask_handler_receives_clients_create() {
    let (_python, port) = start_flask().await;
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "Flask example", "event": "clients.create", "type": "http",
               "task": format!("http://127.0.0.1:{port}/api"), "retry_schedule": [0, 0]}),
    )
    .await;
    let id = h["id"].as_i64().unwrap();
    let c = client(&s, "Flask Client").await;
    let uid = uid_of(&s, "clients.create", c).await;
    wait_deliveries(&s, id, "succeeded", 1, 30).await;
    let log = executions(&s, &format!("handlers_id={id}&status=success")).await;
    assert_eq!(log.len(), 1, "{log:?}");
    let e = &log[0];
    assert_eq!(e["event_uid"], uid);
    assert_eq!(e["response_status"], 200);
    let echoed: Value = serde_json::from_str(e["response_body"].as_str().unwrap())
        .expect("the example echoes JSON");
    assert_eq!(echoed, e["request"], "the example echoes the payload");
    assert_eq!(echoed["data"]["name"], "Flask Client");
}

#[tokio::test]
async fn the_reference_flask_handler_is_a_valid_before_handler() {
    let (_python, port) = start_flask().await;
    let s = Server::start().await;
    let h = create_handler(
        &s,
        json!({"name": "Flask before", "event": "clients.create", "stage": "before",
               "task": format!("http://127.0.0.1:{port}/api")}),
    )
    .await;
    let c = s
        .ok(
            "/api/v1/clients",
            json!({"name": "Echoed", "email": "e@x.org"}),
            201,
        )
        .await;
    assert_eq!(c["name"], "Echoed", "an echo allows the action unchanged");
    assert_eq!(c["email"], "e@x.org");
    let log = executions(&s, &format!("handlers_id={}", h["id"])).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["stage"], "before");
    assert_eq!(log[0]["status"], "success", "{}", log[0]);
}
