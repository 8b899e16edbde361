use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{capped_text, read_cap, CallMeta, CallOutcome, BODY_CAP};

/// The search path of a script when the server has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The server's variables a script gets besides `PATH`, when the server has them.
const PASSED: &[&str] = &["HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// The environment a script starts from, read from the server's through `var`: `PATH`
/// (or [`DEFAULT_PATH`]) and [`PASSED`], nothing else. The server's environment holds
/// its secrets (`BILLHOOK_API_KEY`, a password in `BILLHOOK_DATABASE_URL`, whatever the
/// operator's service manager sets), and a handler script is an operator's integration,
/// not something to hand the admin key or the database to.
pub(super) fn environment(var: impl Fn(&str) -> Option<OsString>) -> Vec<(&'static str, OsString)> {
    let set = |name: &str| var(name).filter(|value| !value.is_empty());
    let path = set("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let passed = PASSED.iter().filter_map(|&name| Some((name, set(name)?)));
    std::iter::once(("PATH", path)).chain(passed).collect()
}

/// Runs `scripts_dir/task` without a shell, in its own process group so that a timeout
/// kills everything it started, with `env` (see [`environment`]) and the spec's
/// `BILLHOOK_*` variables of the event as its whole environment.
pub(super) async fn call(
    scripts_dir: &Path,
    env: &[(&'static str, OsString)],
    task: &str,
    meta: &CallMeta<'_>,
    body: &[u8],
    timeout: Duration,
) -> CallOutcome {
    let failed = |error: String| CallOutcome {
        error: Some(error),
        ..CallOutcome::default()
    };
    // Checked at each call, not only when the handler was saved: the file may have been
    // replaced since by a link leading out of the directory.
    if let Err(e) = super::check_inside(scripts_dir, task) {
        return failed(format!("cannot run script: {e}"));
    }
    let path = scripts_dir.join(task);
    let mut child = match Command::new(&path)
        .current_dir(scripts_dir)
        .env_clear()
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env("BILLHOOK_EVENT", meta.events_id)
        .env("BILLHOOK_STAGE", meta.stage.as_str())
        .env(
            "BILLHOOK_OBJECT_ID",
            meta.object_id.map(|i| i.to_string()).unwrap_or_default(),
        )
        .env("BILLHOOK_EVENT_UID", meta.uid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run script {}: {e}", path.display())),
    };
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let body = body.to_vec();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let cap = read_cap(meta.stage);
    let mut cut = false;
    let deadline = tokio::time::Instant::now() + timeout;
    let status = {
        let mut reading = std::pin::pin!(async {
            let (out_cut, _) = tokio::join!(
                read_capped(stdout, &mut out, cap),
                read_capped(stderr, &mut err, BODY_CAP)
            );
            cut = out_cut;
        });
        // A script that does not read its stdin must not block us: write errors are
        // ignored, and its exit is watched apart from the writing (what it left in the
        // background may hold its stdin open, unread, with the payload half written).
        let mut writing = std::pin::pin!(async move {
            let _ = stdin.write_all(&body).await;
        });
        let mut exiting = std::pin::pin!(child.wait());
        let (mut written, mut read_all) = (false, false);
        let status = loop {
            tokio::select! {
                _ = &mut writing, if !written => written = true,
                _ = &mut reading, if !read_all => read_all = true,
                status = &mut exiting => break Some(status),
                _ = tokio::time::sleep_until(deadline) => break None,
            }
        };
        if status.is_none() {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) with a negative pid signals the process group we
                // created for this script; no memory is involved.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
        if !read_all {
            // The script has exited or been killed: what is still in its pipes is read,
            // but what it started in the background (outside its group, or left running
            // after a success) may hold them open for as long as it runs. Its exit
            // decides: it was taken for a timeout, run again, and its work killed.
            let _ = tokio::time::timeout(OUTPUT_AFTER_EXIT, &mut reading).await;
        }
        status
    };
    let stderr = capped_text(&err, BODY_CAP);
    let with_stderr = |why: String| match stderr.trim() {
        "" => why,
        said => format!("{why}: {said}"),
    };
    match status {
        Some(Ok(status)) => {
            let code = status.code();
            let success = status.success();
            let error = match (success, stderr.trim()) {
                (false, _) => Some(with_stderr(match code {
                    Some(c) => format!("exit code {c}"),
                    None => killed_by(status.signal()),
                })),
                // What a script that succeeded wrote to stderr (a warning, a trace) is
                // kept too; the status says the call succeeded.
                (true, "") => None,
                (true, said) => Some(format!("stderr: {said}")),
            };
            CallOutcome {
                success,
                response_status: code.map(i64::from),
                response_body: Some(capped_text(&out, cap)),
                cut,
                error,
                duration: Duration::ZERO,
                retry_after: None,
                answered: code.is_some(),
                stderr: Some(stderr),
            }
        }
        Some(Err(e)) => failed(format!("waiting for the script: {e}")),
        None => {
            // What it wrote before it was killed is kept: it is what shows where it hung.
            let why = format!("timeout after {} ms: script killed", timeout.as_millis());
            CallOutcome {
                response_body: (!out.is_empty()).then(|| capped_text(&out, cap)),
                error: Some(with_stderr(why)),
                ..CallOutcome::default()
            }
        }
    }
}

/// How long the output of a script that has exited (or was killed) is still read: what
/// it started in the background and left holding its stdout or stderr is not waited
/// for. Its pipes are closed then: a background job writing to them later gets SIGPIPE.
const OUTPUT_AFTER_EXIT: Duration = Duration::from_millis(100);

/// Reads into `kept` up to `cap` bytes, then drains the rest so the script never blocks
/// on a full pipe; whether there was more than `cap`.
async fn read_capped(mut r: impl AsyncRead + Unpin, kept: &mut Vec<u8>, cap: usize) -> bool {
    // On the heap: in the future, two of these (stdout, stderr) made the future of
    // every call 17 KiB, HTTP calls included, copied whole each time one was started.
    let mut buf = vec![0u8; 8192];
    let mut cut = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return cut,
            Ok(n) => {
                let take = n.min(cap - kept.len());
                kept.extend_from_slice(&buf[..take]);
                cut |= take < n;
            }
        }
    }
}

/// What ended a script that did not exit: the signal, by number and, for the usual ones,
/// by name (it said "killed by a signal" and no more).
fn killed_by(signal: Option<i32>) -> String {
    let name = match signal {
        Some(1) => " (SIGHUP)",
        Some(2) => " (SIGINT)",
        Some(6) => " (SIGABRT)",
        Some(9) => " (SIGKILL)",
        Some(11) => " (SIGSEGV)",
        Some(13) => " (SIGPIPE)",
        Some(15) => " (SIGTERM)",
        _ => "",
    };
    match signal {
        Some(n) => format!("killed by signal {n}{name}"),
        None => "killed by a signal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PATH` always (the server's, or the default when it has none or an empty one);
    /// the passed variables the server has; nothing else.
    #[test]
    fn a_script_gets_path_and_the_passed_variables_only() {
        let server = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let full = server(&[
            ("PATH", "/opt/bin:/bin"),
            ("HOME", "/var/lib/billhook"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("TZ", "UTC"),
            ("TMPDIR", "/tmp/b"),
            ("BILLHOOK_API_KEY", "secret"),
            ("BILLHOOK_DATABASE_URL", "postgres://u:pw@db/b"),
            ("SOME_SECRET", "x"),
        ]);
        let shown = |env: Vec<(&str, OsString)>| {
            env.into_iter()
                .map(|(n, v)| format!("{n}={}", v.to_string_lossy()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shown(environment(full)),
            [
                "PATH=/opt/bin:/bin",
                "HOME=/var/lib/billhook",
                "LANG=C.UTF-8",
                "LC_ALL=C",
                "TZ=UTC",
                "TMPDIR=/tmp/b"
            ]
        );
        assert_eq!(
            shown(environment(server(&[("HOME", "/h"), ("SOME_SECRET", "x")]))),
            [format!("PATH={DEFAULT_PATH}"), "HOME=/h".into()]
        );
        assert_eq!(
            shown(environment(server(&[("PATH", "")]))),
            [format!("PATH={DEFAULT_PATH}")]
        );
    }
}
