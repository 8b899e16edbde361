//! Script handlers: payload on stdin, `BILLHOOK_*` environment and none of the
//! server's secrets, stdout logged, a non-zero exit retried — from the default scripts
//! directory (`./scripts`, relative to the server's working directory) and from an
//! absolute `BILLHOOK_SCRIPTS_DIR`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::harness::write_script_in;
use crate::harness::{wait_for, Server};
use crate::util::{client, create_handler, executions, rename, uid_of, wait_deliveries};

/// A server and the scripts directory it runs scripts from.
struct Scripts {
    s: Server,
    dir: PathBuf,
    _abs: Option<tempfile::TempDir>,
}

/// Variables of the server's environment that no script may see (besides
/// `BILLHOOK_API_KEY`, which every test server has).
const SECRETS: [(&str, &str); 2] = [
    ("BILLHOOK_TEST_SECRET_MARKER", "marker-6f0c2e"),
    ("SOME_SECRET", "hunter2-6f0c2e"),
];

/// A server with the default `./scripts`.
async fn default_dir() -> Scripts {
    let s = Server::start_with(SECRETS.to_vec()).await;
    let dir = s.dir.path().join("scripts");
    Scripts { s, dir, _abs: None }
}

/// A server with `BILLHOOK_SCRIPTS_DIR` set to an absolute directory.
async fn absolute_dir() -> Scripts {
    let abs = tempfile::tempdir().unwrap();
    let dir = abs.path().to_path_buf();
    let mut env = vec![("BILLHOOK_SCRIPTS_DIR", dir.to_str().unwrap())];
    env.extend(SECRETS);
    let s = Server::start_with(env).await;
    Scripts {
        s,
        dir,
        _abs: Some(abs),
    }
}

/// Reads `dir/name` once it exists.
async fn wait_file(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    wait_for(30, &format!("{}", path.display()), || async {
        std::fs::read_to_string(&path).ok()
    })
    .await
}

#[tokio::test]
async fn a_script_in_the_default_dir_gets_its_payload_and_environment() {
    stdin_and_environment(default_dir().await).await;
}

#[tokio::test]
async fn a_script_in_an_absolute_dir_gets_its_payload_and_environment() {
    stdin_and_environment(absolute_dir().await).await;
}

#[tokio::test]
async fn a_script_in_the_default_dir_exiting_non_zero_is_retried() {
    non_zero_is_retried(default_dir().await).await;
}

#[tokio::test]
async fn a_script_in_an_absolute_dir_exiting_non_zero_is_retried() {
    non_zero_is_retried(absolute_dir().await).await;
}

async fn stdin_and_environment(sc: Scripts) {
    let s = &sc.s;
    let out = tempfile::tempdir().unwrap();
    let d = out.path().display();
    let script = format!(
        r#"#!/bin/sh
set -e
u="$BILLHOOK_EVENT_UID"
cat > "{d}/.$u.json"
printf '%s\n%s\n%s\n%s\n' "$BILLHOOK_EVENT" "$BILLHOOK_STAGE" "$BILLHOOK_OBJECT_ID" "$BILLHOOK_EVENT_UID" > "{d}/.$u.env"
env > "{d}/.$u.vars"
mv "{d}/.$u.json" "{d}/$u.json"
mv "{d}/.$u.env" "{d}/$u.env"
mv "{d}/.$u.vars" "{d}/$u.vars"
echo "stored $u"
"#
    );
    write_script_in(&sc.dir, "record.sh", &script, true);
    let h = create_handler(
        s,
        json!({"name": "rec", "event": "clients.*", "type": "script", "task": "record.sh",
               "retry_schedule": [0]}),
    )
    .await;
    let c = client(s, "Scripted").await;
    rename(s, c, "Scripted 2").await;
    for events_id in ["clients.create", "clients.update"] {
        let uid = uid_of(s, events_id, c).await;
        let stdin: Value =
            serde_json::from_str(&wait_file(out.path(), &format!("{uid}.json")).await)
                .expect("JSON on stdin");
        let (_, mut logged) = s.get(&format!("/api/v1/events/{uid}")).await;
        logged.as_object_mut().unwrap().remove("deliveries");
        assert_eq!(stdin, logged, "the payload on stdin");
        let env = wait_file(out.path(), &format!("{uid}.env")).await;
        let lines: Vec<&str> = env.lines().collect();
        assert_eq!(
            lines,
            [events_id, "after", &c.to_string(), &uid],
            "BILLHOOK_EVENT, _STAGE, _OBJECT_ID, _EVENT_UID"
        );
        only_the_script_environment(&wait_file(out.path(), &format!("{uid}.vars")).await);
    }
    let done = wait_deliveries(s, h["id"].as_i64().unwrap(), "succeeded", 2, 30).await;
    assert_eq!(done.len(), 2);
    let log = executions(s, &format!("handlers_id={}", h["id"])).await;
    assert_eq!(log.len(), 2, "{log:?}");
    for e in &log {
        assert_eq!(e["status"], "success", "{e}");
        assert_eq!(e["attempt"], 1);
        let uid = e["event_uid"].as_str().unwrap();
        assert!(
            e["response_body"]
                .as_str()
                .is_some_and(|b| b.contains(&format!("stored {uid}"))),
            "stdout is logged: {e}"
        );
    }
}

/// `env`'s output holds `PATH` (the server's, which it has from the test), the spec's
/// four `BILLHOOK_*` variables and nothing but the variables a script may get and what
/// the shell sets itself: not the admin key, nor anything else of the server's.
fn only_the_script_environment(env: &str) {
    let names: BTreeSet<&str> = env
        .lines()
        .filter_map(|line| Some(line.split_once('=')?.0))
        .collect();
    let billhook: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("BILLHOOK_"))
        .collect();
    assert_eq!(
        billhook,
        [
            "BILLHOOK_EVENT",
            "BILLHOOK_EVENT_UID",
            "BILLHOOK_OBJECT_ID",
            "BILLHOOK_STAGE"
        ],
        "{env}"
    );
    let path = std::env::var("PATH").expect("the tests run with a PATH");
    assert!(env.lines().any(|l| l == format!("PATH={path}")), "{env}");
    let passed = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];
    let shell = ["PWD", "OLDPWD", "SHLVL", "_"];
    for name in &names {
        assert!(
            name.starts_with("BILLHOOK_") || passed.contains(name) || shell.contains(name),
            "{name} reached the script: {env}"
        );
    }
    assert!(!env.contains(crate::harness::KEY), "the admin key: {env}");
    for (name, value) in SECRETS {
        assert!(
            !env.contains(value),
            "{name}'s value reached the script: {env}"
        );
    }
}

async fn non_zero_is_retried(sc: Scripts) {
    let s = &sc.s;
    let out = tempfile::tempdir().unwrap();
    let count = out.path().join("count");
    let script = format!(
        r#"#!/bin/sh
cat > /dev/null
n=$(cat '{c}' 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > '{c}'
if [ "$n" -le 2 ]; then echo "not yet $n" >&2; exit 3; fi
echo "fine at $n"
"#,
        c = count.display()
    );
    write_script_in(&sc.dir, "flaky.sh", &script, true);
    let h = create_handler(
        s,
        json!({"name": "flaky", "event": "clients.create", "type": "script",
               "task": "flaky.sh", "retry_schedule": [0, 0, 0]}),
    )
    .await;
    let id = h["id"].as_i64().unwrap();
    let c = client(s, "Retried").await;
    let uid = uid_of(s, "clients.create", c).await;
    let done = wait_deliveries(s, id, "succeeded", 1, 30).await;
    assert_eq!(done[0]["attempts"], 3, "{}", done[0]);
    let mut log = executions(s, &format!("handlers_id={id}")).await;
    log.reverse();
    let summary: Vec<(i64, String)> = log
        .iter()
        .map(|e| {
            (
                e["attempt"].as_i64().unwrap(),
                e["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "fail".into()),
            (2, "fail".into()),
            (3, "success".into())
        ]
    );
    for e in &log {
        assert_eq!(
            e["event_uid"], uid,
            "one event, the same uid on every attempt"
        );
    }
    for e in &log[..2] {
        assert!(
            e["error"].as_str().is_some_and(|t| !t.is_empty()),
            "a failed run says why: {e}"
        );
    }
    assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "3");
}

#[tokio::test]
async fn a_script_past_its_timeout_is_killed_and_the_attempt_fails() {
    let sc = default_dir().await;
    let s = &sc.s;
    let out = tempfile::tempdir().unwrap();
    let late = out.path().join("late");
    let script = format!(
        "#!/bin/sh\ncat > /dev/null\necho 'step 1 done'\necho 'stuck at step 2' >&2\n\
         sleep 3\ntouch '{}'\n",
        late.display()
    );
    write_script_in(&sc.dir, "slow.sh", &script, true);
    let h = create_handler(
        s,
        json!({"name": "slow", "event": "clients.create", "type": "script",
               "task": "slow.sh", "timeout_ms": 300, "retry_schedule": []}),
    )
    .await;
    let id = h["id"].as_i64().unwrap();
    client(s, "Slow script").await;
    let failed = wait_deliveries(s, id, "failed", 1, 30).await;
    assert_eq!(failed[0]["attempts"], 1);
    let log = executions(s, &format!("handlers_id={id}")).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["status"], "fail");
    // What it wrote before it was killed shows where it hung.
    assert_eq!(
        log[0]["error"], "timeout after 300 ms: script killed: stuck at step 2",
        "{}",
        log[0]
    );
    assert_eq!(log[0]["response_body"], "step 1 done\n", "{}", log[0]);
    let took = log[0]["duration_ms"].as_i64().unwrap();
    assert!(
        took < 2000,
        "stopped at the timeout, not after the script: {took} ms"
    );
    // The whole script was killed: it never gets to its last line.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert!(!late.exists(), "the script kept running after its timeout");
}

/// A script that exits 0 after starting something in the background (which keeps its
/// stdout open) succeeds when it exits: it is neither held until its timeout, failed and
/// run again, nor is what it started killed.
#[tokio::test]
async fn a_script_that_leaves_work_in_the_background_succeeds_when_it_exits() {
    let sc = default_dir().await;
    let s = &sc.s;
    let out = tempfile::tempdir().unwrap();
    let later = out.path().join("later");
    let script = format!(
        "#!/bin/sh\ncat > /dev/null\n(sleep 2; touch '{}') &\necho started\nexit 0\n",
        later.display()
    );
    write_script_in(&sc.dir, "spawns.sh", &script, true);
    let h = create_handler(
        s,
        json!({"name": "spawns", "event": "clients.create", "type": "script",
               "task": "spawns.sh", "timeout_ms": 5000, "retry_schedule": [1]}),
    )
    .await;
    let id = h["id"].as_i64().unwrap();
    client(s, "Background work").await;
    let done = wait_deliveries(s, id, "succeeded", 1, 30).await;
    assert_eq!(done[0]["attempts"], 1, "{}", done[0]);
    let log = executions(s, &format!("handlers_id={id}")).await;
    assert_eq!(log.len(), 1, "one call: {log:?}");
    assert_eq!(log[0]["status"], "success", "{}", log[0]);
    assert_eq!(log[0]["response_status"], 0, "{}", log[0]);
    assert_eq!(log[0]["response_body"], "started\n", "{}", log[0]);
    let took = log[0]["duration_ms"].as_i64().unwrap();
    assert!(took < 1500, "done when the script exited: {took} ms");
    wait_file(out.path(), "later").await;
}

/// A script killed by a signal says which one, and what it wrote to stderr.
#[tokio::test]
async fn a_script_killed_by_a_signal_says_which() {
    let sc = default_dir().await;
    let s = &sc.s;
    let script = "#!/bin/sh\ncat > /dev/null\necho 'about to go' >&2\nkill -9 $$\n";
    write_script_in(&sc.dir, "doomed.sh", script, true);
    let h = create_handler(
        s,
        json!({"name": "doomed", "event": "clients.create", "type": "script",
               "task": "doomed.sh", "retry_schedule": []}),
    )
    .await;
    let id = h["id"].as_i64().unwrap();
    client(s, "Doomed script").await;
    wait_deliveries(s, id, "failed", 1, 30).await;
    let log = executions(s, &format!("handlers_id={id}")).await;
    assert_eq!(
        log[0]["error"], "killed by signal 9 (SIGKILL): about to go",
        "{}",
        log[0]
    );
}

/// What a script that succeeds writes to stderr (a warning) is kept in the call's
/// `error`, the status saying it succeeded; it was dropped.
#[tokio::test]
async fn a_script_that_succeeds_keeps_its_stderr() {
    let sc = default_dir().await;
    let s = &sc.s;
    let script = "#!/bin/sh\ncat > /dev/null\necho 'rate table is stale' >&2\necho done\n";
    write_script_in(&sc.dir, "warns.sh", script, true);
    let h = create_handler(
        s,
        json!({"name": "warns", "event": "clients.create", "type": "script",
               "task": "warns.sh"}),
    )
    .await;
    let id = h["id"].as_i64().unwrap();
    client(s, "Warned").await;
    wait_deliveries(s, id, "succeeded", 1, 30).await;
    let log = executions(s, &format!("handlers_id={id}")).await;
    assert_eq!(log[0]["status"], "success", "{}", log[0]);
    assert_eq!(log[0]["response_body"], "done\n", "{}", log[0]);
    assert_eq!(log[0]["error"], "stderr: rate table is stale", "{}", log[0]);
    assert!(log[0]["deliveries_id"].is_i64(), "{}", log[0]);
    let quiet = executions(s, "q=stale").await;
    assert_eq!(quiet.len(), 1, "q finds it: {quiet:?}");
}

/// A script replaced, after its handler was saved, by a link leading out of the scripts
/// directory is not run: the check made when it is saved is made at each call too.
#[tokio::test]
async fn a_script_that_now_leads_outside_the_directory_is_not_run() {
    let sc = default_dir().await;
    let s = &sc.s;
    let out = tempfile::tempdir().unwrap();
    let ran = out.path().join("ran");
    let outside = out.path().join("outside.sh");
    let body = format!("#!/bin/sh\ncat > /dev/null\ntouch '{}'\n", ran.display());
    write_script_in(out.path(), "outside.sh", &body, true);
    write_script_in(&sc.dir, "swap.sh", "#!/bin/sh\nexit 0\n", true);
    let h = create_handler(
        s,
        json!({"name": "swap", "event": "clients.create", "type": "script",
               "task": "swap.sh", "retry_schedule": []}),
    )
    .await;
    let id = h["id"].as_i64().unwrap();
    std::fs::remove_file(sc.dir.join("swap.sh")).unwrap();
    std::os::unix::fs::symlink(&outside, sc.dir.join("swap.sh")).unwrap();
    client(s, "Swapped").await;
    wait_deliveries(s, id, "failed", 1, 30).await;
    let log = executions(s, &format!("handlers_id={id}")).await;
    assert_eq!(
        log[0]["error"],
        "cannot run script: script \"swap.sh\" leads outside the scripts directory",
        "{}",
        log[0]
    );
    let (st, v) = s
        .post(&format!("/api/v1/handlers/{id}/test"), json!({}))
        .await;
    assert_eq!((st, &v["status"]), (200, &json!("fail")), "{v}");
    assert!(
        v.get("deliveries_id").is_some_and(Value::is_null),
        "a test: {v}"
    );
    assert!(!ran.exists(), "the script outside was run");
}
