//! Calling a handler: over HTTP(S) or as a local script, with the payload, headers or
//! environment of the spec, a timeout, and capped responses.

mod direct;
mod http;
mod script;
mod tls;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use billhook_domain::catalogue::Stage;
use billhook_domain::entities::{Handler, HandlerType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The execution log keeps response bodies and script output up to this size (64 KiB),
/// and an after call's answer is read no further.
pub const BODY_CAP: usize = 64 * 1024;

/// A before handler's answer is read up to this size (8 MiB), and judged whole: the
/// reference's example handler echoes the payload, which may be far over [`BODY_CAP`]
/// (an account with thousands of IPs, a client with many tags), and cut there it was
/// no JSON, so the action failed. The log keeps its first [`BODY_CAP`] as for any call.
pub const ANSWER_CAP: usize = 8 * 1024 * 1024;

/// How much of a call's answer (body, or a script's stdout) is read.
fn read_cap(stage: Stage) -> usize {
    match stage {
        Stage::Before => ANSWER_CAP,
        Stage::After => BODY_CAP,
    }
}

/// What one call produced.
#[derive(Debug, Clone, Default)]
pub struct CallOutcome {
    /// 2xx, or a script's exit 0.
    pub success: bool,
    /// HTTP status, or a script's exit code.
    pub response_status: Option<i64>,
    /// The body, or a script's stdout: its first 64 KiB, or for a before call its
    /// first 8 MiB ([`ANSWER_CAP`]; see [`logged`]).
    pub response_body: Option<String>,
    /// The answer went on past what was read of it.
    pub cut: bool,
    /// Why the call failed: timeout, connection, non-2xx, exit code and stderr; for a
    /// script that succeeded, what it wrote to stderr (`stderr: …`), if anything.
    pub error: Option<String>,
    /// How long the call took, exact: what `/metrics` sums (a receiver answering in
    /// 0.4 ms added nothing to a sum of whole milliseconds); the log shows
    /// [`CallOutcome::duration_ms`].
    pub duration: Duration,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
    /// A script's stderr (its message when it forbids an action).
    pub stderr: Option<String>,
    /// The handler was called and answered (HTTP status, or a script's exit code), as
    /// opposed to a timeout, a network error or a script that could not run or was
    /// killed.
    pub answered: bool,
}

impl CallOutcome {
    /// The call's duration in whole milliseconds, as the execution log shows it.
    pub fn duration_ms(&self) -> i64 {
        i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX)
    }
}

/// What the call is about, for headers and environment.
#[derive(Debug, Clone)]
pub struct CallMeta<'a> {
    pub events_id: &'a str,
    pub uid: &'a str,
    pub object_id: Option<i64>,
    pub stage: Stage,
}

/// Certificate authorities trusted for HTTPS handlers besides the public ones (Mozilla's,
/// built in): an operator's internal CA, or the certificate of a self-signed endpoint.
#[derive(Clone, Default)]
pub struct TrustedRoots(Vec<CertificateDer<'static>>);

impl TrustedRoots {
    /// Every certificate of a PEM file; an error names the file and what is wrong, and a
    /// file without any certificate is one (a wrong path must not pass unnoticed).
    pub fn from_pem_file(path: &Path) -> Result<TrustedRoots, String> {
        let bad = |what: String| format!("handler CA file {}: {what}", path.display());
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
        if certificates.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        Ok(TrustedRoots(certificates))
    }
}

/// The `User-Agent` of every call.
const USER_AGENT: &str = concat!("billhook/", env!("CARGO_PKG_VERSION"));

/// Environment variables naming proxies, which reqwest honours (and hyper alone not).
pub const PROXY_VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Calls handlers. Cheap to clone: one pooled HTTP client for every call.
#[derive(Clone)]
pub struct Caller {
    http: reqwest::Client,
    /// Hyper's client without reqwest's layers (see [`direct`]); none when a proxy is
    /// configured, which only reqwest honours.
    direct: Option<direct::Direct>,
    scripts_dir: PathBuf,
    /// What scripts get of the server's environment, read once at start.
    script_env: Arc<[(&'static str, OsString)]>,
    /// Handler URLs already parsed: parsing one (with its host's IDNA processing) on
    /// every call was a visible share of a delivery's CPU.
    urls: Arc<Mutex<HashMap<String, Target>>>,
}

/// A handler's URL, parsed, and as hyper's client takes it.
#[derive(Clone)]
struct Target {
    url: reqwest::Url,
    uri: Option<hyper::Uri>,
}

impl Caller {
    /// A caller running scripts from `scripts_dir`, trusting `roots` for HTTPS besides
    /// the public certificate authorities.
    pub fn new(scripts_dir: PathBuf, roots: TrustedRoots) -> Caller {
        let proxied = PROXY_VARIABLES
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()));
        let direct = match proxied {
            true => {
                tracing::info!("handler calls go through the proxy the environment names");
                None
            }
            false => match direct::Direct::new(&roots.0) {
                Ok(direct) => Some(direct),
                Err(e) => {
                    tracing::warn!(error = %e, "handler calls go through reqwest");
                    None
                }
            },
        };
        let mut http = reqwest::Client::builder();
        match tls::client_config(&roots.0) {
            // The same trust as direct calls, a self-signed endpoint's certificate included.
            Ok(tls) => http = http.use_preconfigured_tls(tls),
            Err(e) => {
                tracing::warn!(error = %e, "HTTPS calls trust the handler CA file as CAs only");
                for root in &roots.0 {
                    match reqwest::Certificate::from_der(root) {
                        Ok(root) => http = http.add_root_certificate(root),
                        Err(e) => {
                            tracing::warn!(error = %e, "a handler CA certificate is left out")
                        }
                    }
                }
            }
        }
        let http = http
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            // Every attempt is billhook's own, on the handler's schedule, and logged:
            // none made silently by the client.
            .retry(reqwest::retry::never())
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .expect("the HTTP client builds with static settings");
        // Scripts run with the scripts directory as their working directory, so the
        // path to them must not be relative to ours.
        let scripts_dir = std::path::absolute(&scripts_dir).unwrap_or(scripts_dir);
        Caller {
            http,
            direct,
            scripts_dir,
            script_env: script::environment(|name| std::env::var_os(name)).into(),
            urls: Arc::default(),
        }
    }

    /// The scripts directory.
    pub fn scripts_dir(&self) -> &std::path::Path {
        &self.scripts_dir
    }

    /// Calls `handler` with `body`, signed with `secrets`; never longer than its timeout.
    pub async fn call(
        &self,
        handler: &Handler,
        secrets: &[&str],
        meta: &CallMeta<'_>,
        body: &[u8],
    ) -> CallOutcome {
        let started = Instant::now();
        let timeout = Duration::from_millis(u64::from(handler.timeout_ms.max(1)));
        let mut outcome = match handler.kind {
            HandlerType::Http => match (self.parsed_url(&handler.task), &self.direct) {
                (Some(Target { uri: Some(uri), .. }), Some(direct)) => {
                    http::call_direct(direct, uri, secrets, meta, body, timeout).await
                }
                (Some(Target { url, .. }), _) => {
                    http::call(&self.http, url, secrets, meta, body, timeout).await
                }
                // reqwest parses it again and says what is wrong with it.
                (None, _) => {
                    let url = handler.task.as_str();
                    http::call(&self.http, url, secrets, meta, body, timeout).await
                }
            },
            HandlerType::Script => {
                let (dir, env) = (&self.scripts_dir, &self.script_env);
                script::call(dir, env, &handler.task, meta, body, timeout).await
            }
        };
        outcome.duration = started.elapsed();
        outcome
    }

    /// `task` parsed as a URL, from the cache when it was parsed before.
    fn parsed_url(&self, task: &str) -> Option<Target> {
        let mut urls = self.urls.lock().expect("not poisoned");
        if let Some(target) = urls.get(task) {
            return Some(target.clone());
        }
        let url = reqwest::Url::parse(task).ok()?;
        // Credentials in the URL are sent as basic authentication, which reqwest does
        // and hyper alone not: such a handler is called through reqwest.
        let plain = url.username().is_empty() && url.password().is_none();
        let target = Target {
            uri: plain.then(|| url.as_str().parse().ok()).flatten(),
            url,
        };
        // Handlers are few; a bound keeps edited and deleted ones from piling up.
        if urls.len() >= 1024 {
            urls.clear();
        }
        urls.insert(task.to_string(), target.clone());
        Some(target)
    }
}

/// Checks that `task` is an `http://` or `https://` URL a call can be made to, with the
/// parser of the calls (`url`, under reqwest): a port past 65535 is refused, a scheme
/// in capitals (`HTTP://`, valid per RFC 3986) accepted. The URL is kept as given, and
/// every call parses it the same way ([`Caller::call`]).
pub fn check_url(task: &str) -> Result<(), String> {
    const WANTED: &str = "must be an http:// or https:// URL";
    // The parser drops spaces and controls around a URL and tabs and newlines inside
    // it: such a task is a mistake, not a URL to call.
    if task.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("{WANTED} without spaces or control characters"));
    }
    let url = reqwest::Url::parse(task).map_err(|e| format!("{WANTED}: {e}"))?;
    // For these two schemes the parser has required a host.
    if !matches!(url.scheme(), "http" | "https") {
        return Err(WANTED.into());
    }
    // What the calls send it as: a URL over 64 KiB is not a valid request target.
    if let Err(e) = url.as_str().parse::<hyper::Uri>() {
        return Err(format!("{WANTED}: {e}"));
    }
    Ok(())
}

/// Checks that script `task` of `dir` is inside it once links are followed: a link in
/// the scripts directory may not lead out of it.
pub fn check_inside(dir: &Path, task: &str) -> Result<(), String> {
    let (Ok(real), Ok(root)) = (dir.join(task).canonicalize(), dir.canonicalize()) else {
        return Err(format!("script {task:?} cannot be resolved"));
    };
    if !real.starts_with(root) {
        return Err(format!(
            "script {task:?} leads outside the scripts directory"
        ));
    }
    Ok(())
}

/// Text of at most `cap` bytes, cut at a character boundary, with U+FFFD for what is
/// not UTF-8 and for NUL (see [`without_nul`]).
pub(crate) fn capped_text(bytes: &[u8], cap: usize) -> String {
    let text = without_nul(String::from_utf8_lossy(&bytes[..bytes.len().min(cap)]).into_owned());
    cut_text(text, cap)
}

/// `text` cut to at most `cap` bytes, at a character boundary (and its memory with it:
/// an 8 MiB answer is not kept whole for 64 KiB of log).
pub(crate) fn cut_text(mut text: String, cap: usize) -> String {
    if text.len() > cap {
        let mut end = cap;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.shrink_to_fit();
    }
    text
}

/// A call's response body or error as the execution log keeps it: its first
/// [`BODY_CAP`] bytes (a before call's answer was read further, to be judged, and a
/// forbid's message comes from it).
pub fn logged(text: Option<String>) -> Option<String> {
    text.map(|t| cut_text(t, BODY_CAP))
}

/// A handler's text with U+FFFD in place of NUL: PostgreSQL's text cannot hold a NUL,
/// and a log row with one failed its whole batch of outcomes, whose calls were then made
/// again. Every text a handler sends that is kept or shown passes here.
pub(crate) fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}
