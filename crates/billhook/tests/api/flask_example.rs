//! The reference's example handler (Flask), run for real by the tests that need it.

use std::process::{Child, Command, Stdio};

use crate::harness::wait_for;

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
pub struct Python(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the example on a free port with python3; FAILS (never skips) without Flask.
pub async fn start_flask() -> (Python, u16) {
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
