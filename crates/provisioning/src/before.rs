//! The before chain: matching before handlers called one after the other, each seeing
//! the data as the previous one left it, with the response rules of the spec.
//!
//! Its cost is bounded: each call has its timeout, the chain a 30 s deadline, and a
//! handler failing 5 times in a row is skipped for a cool-down (its `on_failure` applied
//! at once) so that a dead endpoint does not slow every request down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use billhook_domain::catalogue::Stage;
use billhook_domain::entities::{Handler, OnFailure};
use billhook_domain::payload::{payload, previous_of, EventHeader};
use billhook_domain::timestamp::same_time;
use billhook_domain::Timestamp;
use billhook_store::executions::{self, Execution};
use billhook_store::{handlers, Db, StoreError};
use serde_json::{Map, Value};

use crate::caller::{CallMeta, CallOutcome, Caller};
use crate::metrics::Metrics;

/// The whole chain never takes longer than this.
pub const CHAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Consecutive failures after which a handler is skipped for [`COOL_DOWN`].
pub const FAILURES_BEFORE_COOL_DOWN: u32 = 5;
/// How long a failing handler is skipped.
pub const COOL_DOWN: Duration = Duration::from_secs(30);

/// Why the chain refused the action.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The handler said no (422 `forbidden_by_handler`).
    Forbidden {
        message: String,
        handlers_id: i64,
        handler: String,
    },
    /// The handler failed and its `on_failure` is forbid (422 `handler_failed`).
    Failed {
        message: String,
        handlers_id: i64,
        handler: String,
    },
}

/// The last handler that changed the data: answerable for it if the database then
/// refuses the result.
#[derive(Debug, Clone)]
pub struct Modifier {
    pub handlers_id: i64,
    pub handler: String,
    pub on_failure: OnFailure,
}

/// What the chain is called about.
pub struct BeforeEvent<'a> {
    /// When the action began, before its before handlers ran: the payload's `dt` in
    /// every call of the chain, and the after event's (README), so that a receiver can
    /// pair the stages of one action.
    pub dt: Timestamp,
    pub events_id: &'a str,
    pub uid: &'a str,
    /// `None` on create.
    pub object_id: Option<i64>,
    /// The object before the action (`null` on create), for `previous`.
    pub current: &'a Value,
    /// Fields the request could set; a handler may change only these.
    pub writable: &'a [&'a str],
}

/// Checks a modified object as the request itself is checked.
pub type Validate<'a> = &'a (dyn Fn(&Value) -> Result<(), String> + Sync);

/// Runs before handlers. Cheap to clone.
#[derive(Clone)]
pub struct BeforeChain {
    db: Db,
    caller: Caller,
    health: Arc<Mutex<HashMap<i64, Health>>>,
    /// Every enabled before handler, read at most once a second: asking the database on
    /// every action would cost each request a query even with no handler at all.
    cache: Arc<Mutex<Option<Snapshot>>>,
    metrics: Arc<Metrics>,
}

/// The enabled before handlers and when they were read.
type Snapshot = (Instant, Vec<Handler>);

/// How long the list of before handlers is trusted. Changes made through this process
/// apply at once; changes made by another process sharing the database within this.
const HANDLERS_FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Health {
    failures: u32,
    cooling_until: Option<Instant>,
}

/// What one handler's answer means.
enum Verdict {
    Allow(Option<Value>),
    Forbid(String),
    Failure(String),
}

impl Verdict {
    /// What an allowing handler changed in `sent`, for the log's `modified`.
    fn modified(&self, sent: &Value) -> Option<Value> {
        match self {
            Verdict::Allow(Some(new)) => Some(Value::Object(changes(sent, new))),
            _ => None,
        }
    }

    /// The execution log's status and error of call `o` with this verdict: an allowing
    /// script's stderr is kept as an after call's is; the error is cut as response
    /// bodies are (a forbid's message comes from an answer read up to 8 MiB).
    fn logged(&self, o: Option<&CallOutcome>) -> (&'static str, Option<String>) {
        let (status, error) = match self {
            Verdict::Allow(_) => ("success", o.and_then(|o| o.error.clone())),
            Verdict::Forbid(m) => ("fail", Some(format!("forbidden: {m}"))),
            Verdict::Failure(m) => ("fail", Some(m.clone())),
        };
        (status, crate::caller::logged(error))
    }
}

/// How a handler's test call went: the log's status, error and `modified`.
pub struct TestVerdict {
    pub status: &'static str,
    pub error: Option<String>,
    pub modified: Option<Value>,
}

/// Fields no request sets, whatever the action: a change to one fails every real call.
const READ_ONLY: &[&str] = &["id", "created_at", "updated_at", "balance"];

/// Judges a handler's answer to a test call with `data`. A before handler's, by the
/// rules of a real call: `{"allow": false}`, a 4xx or a script's non-zero exit forbid;
/// a broken answer, or a change to a field no request sets ([`READ_ONLY`]), is a
/// failure. A test has no request, so which of the other fields it could set, and how
/// the result would be checked, are unknown: their changes are shown in `modified`,
/// not judged.
pub fn judge_test(stage: Stage, o: &CallOutcome, data: &Value) -> TestVerdict {
    if stage == Stage::After {
        // An after handler's answer is judged by its status alone, as a delivery's is.
        return TestVerdict {
            status: if o.success { "success" } else { "fail" },
            error: o.error.clone(),
            modified: None,
        };
    }
    let settable: Vec<&str> = data
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys().map(String::as_str))
        .filter(|k| !READ_ONLY.contains(k))
        .collect();
    let verdict = interpret(o, data, &settable, &|_| Ok(()));
    let (status, error) = verdict.logged(Some(o));
    TestVerdict {
        status,
        error,
        modified: verdict.modified(data),
    }
}

impl BeforeChain {
    /// A chain calling through `caller` and logging to `db`.
    pub fn new(db: Db, caller: Caller) -> BeforeChain {
        BeforeChain {
            db,
            caller,
            health: Arc::default(),
            cache: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// The same chain counting its calls into `metrics` (shared with the delivery engine).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> BeforeChain {
        self.metrics = metrics;
        self
    }

    /// Forgets the cached handler list (a handler changed).
    pub fn invalidate(&self) {
        *self.cache.lock().expect("not poisoned") = None;
    }

    /// Enabled before handlers matching `events_id`, in calling order.
    pub async fn handlers_for(&self, events_id: &str) -> Result<Vec<Handler>, StoreError> {
        let cached = {
            let cache = self.cache.lock().expect("not poisoned");
            cache
                .as_ref()
                .filter(|(at, _)| at.elapsed() < HANDLERS_FRESH_FOR)
                .map(|(_, all)| all.clone())
        };
        let all = match cached {
            Some(all) => all,
            None => {
                let mut conn = self.db.read.acquire().await?;
                let all = handlers::enabled_before(&mut conn).await?;
                *self.cache.lock().expect("not poisoned") = Some((Instant::now(), all.clone()));
                all
            }
        };
        Ok(all
            .into_iter()
            .filter(|h| billhook_domain::catalogue::pattern_matches(&h.event, events_id))
            .collect())
    }

    /// Calls `handlers` in order on `data`; returns the data as the last one left it.
    pub async fn run(
        &self,
        handlers: &[Handler],
        event: &BeforeEvent<'_>,
        mut data: Value,
        validate: Validate<'_>,
    ) -> Result<(Value, Option<Modifier>), Refusal> {
        let deadline = Instant::now() + CHAIN_DEADLINE;
        let mut modifier = None;
        for h in handlers {
            let now = Instant::now();
            let cooling = {
                let health = self.health.lock().expect("not poisoned");
                health
                    .get(&h.id)
                    .and_then(|s| s.cooling_until)
                    .is_some_and(|until| until > now)
            };
            let (verdict, outcome, request) = if cooling {
                let message = format!(
                    "skipped: cooling down after {FAILURES_BEFORE_COOL_DOWN} consecutive failures"
                );
                (
                    Verdict::Failure(message.clone()),
                    None,
                    self.request(event, &data),
                )
            } else {
                let request = self.request(event, &data);
                let remaining = deadline.saturating_duration_since(now);
                let outcome = if remaining.is_zero() {
                    CallOutcome {
                        error: Some("the before chain's 30 s deadline passed".into()),
                        ..CallOutcome::default()
                    }
                } else {
                    let mut bounded = h.clone();
                    let ms = u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX);
                    bounded.timeout_ms = bounded.timeout_ms.min(ms.max(1));
                    self.call(&bounded, event, &request).await
                };
                let verdict = interpret(&outcome, &data, event.writable, validate);
                self.record_health(h.id, matches!(verdict, Verdict::Failure(_)));
                let label = match verdict {
                    Verdict::Allow(_) => "allow",
                    Verdict::Forbid(_) => "forbid",
                    Verdict::Failure(_) => "failure",
                };
                let m = &self.metrics;
                m.record(&m.before_calls, h.id, label, outcome.duration);
                (verdict, Some(outcome), request)
            };
            let modified = verdict.modified(&data);
            self.log(h, event, request, outcome.as_ref(), &verdict, modified)
                .await;
            match verdict {
                Verdict::Allow(Some(new)) => {
                    data = new;
                    modifier = Some(Modifier {
                        handlers_id: h.id,
                        handler: h.name.clone(),
                        on_failure: h.on_failure,
                    });
                }
                Verdict::Allow(None) => {}
                Verdict::Forbid(message) => {
                    return Err(Refusal::Forbidden {
                        message: shortened(message),
                        handlers_id: h.id,
                        handler: h.name.clone(),
                    })
                }
                Verdict::Failure(message) => {
                    if h.on_failure == OnFailure::Forbid {
                        return Err(Refusal::Failed {
                            message: shortened(message),
                            handlers_id: h.id,
                            handler: h.name.clone(),
                        });
                    }
                }
            }
        }
        Ok((data, modifier))
    }

    fn request(&self, event: &BeforeEvent<'_>, data: &Value) -> Value {
        let header = EventHeader {
            dt: event.dt,
            events_id: event.events_id,
            object_id: event.object_id,
            uid: event.uid,
            stage: Stage::Before,
        };
        let previous = Value::Object(previous_of(event.current, data));
        payload(&header, data, &previous)
    }

    async fn call(&self, h: &Handler, event: &BeforeEvent<'_>, request: &Value) -> CallOutcome {
        let secrets = match self.db.read.acquire().await {
            Ok(mut conn) => handlers::secrets(&mut conn, h.id).await.ok().flatten(),
            Err(_) => None,
        };
        let Some(secrets) = secrets else {
            return CallOutcome {
                error: Some("cannot load the handler's secret".into()),
                ..CallOutcome::default()
            };
        };
        let meta = CallMeta {
            events_id: event.events_id,
            uid: event.uid,
            object_id: event.object_id,
            stage: Stage::Before,
        };
        let body = serde_json::to_vec(request).expect("JSON values serialise");
        self.caller
            .call(h, &secrets.signing(Timestamp::now()), &meta, &body)
            .await
    }

    fn record_health(&self, id: i64, failed: bool) {
        let mut health = self.health.lock().expect("not poisoned");
        let state = health.entry(id).or_default();
        if failed {
            state.failures += 1;
            if state.failures >= FAILURES_BEFORE_COOL_DOWN {
                state.failures = 0;
                state.cooling_until = Some(Instant::now() + COOL_DOWN);
            }
        } else {
            *state = Health::default();
        }
    }

    async fn log(
        &self,
        h: &Handler,
        event: &BeforeEvent<'_>,
        request: Value,
        outcome: Option<&CallOutcome>,
        verdict: &Verdict,
        modified: Option<Value>,
    ) {
        let (status, error) = verdict.logged(outcome);
        let row = Execution {
            id: 0,
            dt: Timestamp::now(),
            handlers_id: h.id,
            handler: h.name.clone(),
            events_id: event.events_id.into(),
            event_uid: event.uid.into(),
            object_id: event.object_id,
            stage: Stage::Before.as_str().into(),
            attempt: 1,
            status: status.into(),
            duration_ms: outcome.map_or(0, CallOutcome::duration_ms),
            request: serde_json::value::to_raw_value(&request).expect("JSON values serialise"),
            response_status: outcome.and_then(|o| o.response_status),
            response_body: crate::caller::logged(outcome.and_then(|o| o.response_body.clone())),
            error,
            modified,
            deliveries_id: None,
        };
        // The log must not decide the action: a failed write is reported, not raised.
        let written = async {
            let mut tx = self.db.begin().await?;
            executions::insert(&mut tx, &row).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        };
        if let Err(e) = written.await {
            tracing::warn!(error = %e, "before-stage execution not logged");
        }
    }
}

/// The spec's response rules.
fn interpret(o: &CallOutcome, sent: &Value, writable: &[&str], validate: Validate<'_>) -> Verdict {
    if !o.answered {
        return Verdict::Failure(o.error.clone().unwrap_or_else(|| "no answer".into()));
    }
    let status = o.response_status.unwrap_or(-1);
    let body = o.response_body.as_deref().unwrap_or("").trim();
    let is_script = o.stderr.is_some();
    if is_script && status != 0 {
        let stderr = o.stderr.as_deref().unwrap_or("").trim();
        let message = if stderr.is_empty() {
            format!("script exited with {status}")
        } else {
            stderr.to_string()
        };
        return Verdict::Forbid(message);
    }
    if !is_script && (400..500).contains(&status) {
        return Verdict::Forbid(message_of(body).unwrap_or_else(|| format!("HTTP {status}")));
    }
    if !is_script && !(200..300).contains(&status) {
        return Verdict::Failure(o.error.clone().unwrap_or_else(|| format!("HTTP {status}")));
    }
    if o.cut {
        let most = crate::caller::ANSWER_CAP >> 20;
        return Verdict::Failure(format!("the response is longer than {most} MiB"));
    }
    if body.is_empty() {
        return Verdict::Allow(None);
    }
    let Ok(answer) = serde_json::from_str::<Value>(body) else {
        return Verdict::Failure("the response is not valid JSON".into());
    };
    // Anything but an object, or an `allow` that is not a boolean, is a broken answer,
    // not a yes: taken as "allow", `[1, 2]` or `{"allow": "false"}` let everything pass.
    if !answer.is_object() {
        return Verdict::Failure("the response must be a JSON object, or empty".into());
    }
    match answer.get("allow") {
        Some(Value::Bool(false)) => {
            return Verdict::Forbid(message_of(body).unwrap_or_else(|| "forbidden".into()))
        }
        None | Some(Value::Bool(true)) => {}
        Some(_) => return Verdict::Failure("`allow` in the response must be true or false".into()),
    }
    let Some(data) = answer.get("data") else {
        return Verdict::Allow(None);
    };
    if !data.is_object() {
        return Verdict::Failure("`data` in the response must be an object".into());
    }
    // Fields left out of the answer keep their value.
    let changed = changes(sent, data);
    if changed.is_empty() {
        return Verdict::Allow(None);
    }
    if let Some(field) = changed.keys().find(|k| !writable.contains(&k.as_str())) {
        return Verdict::Failure(format!("the handler changed the read-only field {field:?}"));
    }
    let mut merged = sent.clone();
    for (k, v) in changed {
        merged[k] = v;
    }
    match validate(&merged) {
        Ok(()) => Verdict::Allow(Some(merged)),
        Err(message) => Verdict::Failure(format!("the modified data is invalid: {message}")),
    }
}

/// The top-level fields of `new` whose value differs from `old`, with their new value.
fn changes(old: &Value, new: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object()) {
        for (k, v) in new {
            let same = match old.get(k) {
                Some(was) if MONEY.contains(&k.as_str()) => same_amount(was, v),
                Some(was) => was == v || same_time(was, v),
                None => false,
            };
            if !same {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// The money fields of the objects before handlers see. Sent as strings (`"0"`), they
/// may come back as numbers (`0`) or written otherwise (`"0.000"`) by a handler that
/// parsed and re-serialised the payload: the same amount is no change (it was a change
/// to the read-only `balance`, a handler failure, or a `credit` logged as modified).
const MONEY: &[&str] = &["balance", "credit", "amount"];

/// Whether two JSON values are the same amount of money (or the same value).
fn same_amount(a: &Value, b: &Value) -> bool {
    let money = |v: &Value| serde_json::from_value::<billhook_domain::Money>(v.clone()).ok();
    a == b || matches!((money(a), money(b)), (Some(x), Some(y)) if x == y)
}

/// The longest message a refusal puts in the API's answer, in bytes.
const MESSAGE_MAX: usize = 1024;

/// A handler's message as the API answers it: cut to [`MESSAGE_MAX`] bytes (on a
/// character boundary). A script's whole stderr (up to 64 KiB) became the error message
/// the caller's user sees; the execution log keeps up to 64 KiB of it.
fn shortened(message: String) -> String {
    if message.len() <= MESSAGE_MAX {
        return message;
    }
    let mut message = crate::caller::cut_text(message, MESSAGE_MAX);
    message.push_str(" … (cut; the execution log has more of it)");
    message
}

/// `message` or `error.message` of a JSON body.
fn message_of(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.get("message")
        .or_else(|| v.get("error").and_then(|e| e.get("message")))
        .and_then(Value::as_str)
        .map(|m| crate::caller::without_nul(m.to_string()))
}
