//! Handlers of the Provisioning API: registration, secrets, test calls, recovery, and
//! the monitoring reads (execution log, deliveries).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use billhook_domain::catalogue::{self, Stage, EVENT_TYPES};
use billhook_domain::entities::{
    check_script_name, Handler, HandlerStatus, HandlerType, OnFailure, DEFAULT_RETRY_SCHEDULE,
};
use billhook_domain::{FieldErrors, Timestamp};
use billhook_provisioning::before::{self, BeforeChain};
use billhook_provisioning::caller::{self, CallMeta};
use billhook_provisioning::{signing, Caller, HandlerCache};
use billhook_store::deliveries::{self, Retried};
pub use billhook_store::deliveries::{Backlog, Delivery, DeliveryQuery};
use billhook_store::executions;
pub use billhook_store::executions::{Execution, ExecutionQuery};
use billhook_store::handlers as store;
pub use billhook_store::handlers::HandlerQuery;
use billhook_store::{events, Db, Page, StoreError};
use serde::Deserialize;
use serde_json::Value;

use crate::input::{not_null, nullable, only_fields_hinted, only_settable, required};
use crate::pipeline::to_json;
use crate::queries::List;
use crate::AppError;

/// How long a rotated-out secret keeps signing.
const OLD_SECRET_GRACE_SECONDS: i64 = 24 * 3600;

/// Body of `POST /handlers` and `PATCH /handlers/{id}`. Each field tells an absent one
/// (`None`) from a `null` (`Some(None)`): a create takes `null` for the default (or "is
/// required"), a PATCH refuses it (no handler field can be empty; it answered 200 and
/// changed nothing).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(
    description = "Body of POST /api/v1/handlers and PATCH /api/v1/handlers/{id}. \
    In a POST, null takes the field's default (for name, event and task: a 422 \"is required\"); \
    in a PATCH, null is a 422: no handler field can be empty."
)]
pub struct HandlerInput {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<HandlerStatus>)]
    pub status: Option<Option<HandlerStatus>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub priority: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub event: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Stage>)]
    pub stage: Option<Option<Stage>>,
    #[serde(rename = "type")]
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<HandlerType>)]
    pub kind: Option<Option<HandlerType>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub task: Option<Option<String>>,
    /// Wider than the handler's: a negative or huge value is a 422 on the field, like
    /// one out of range, not serde's "expected u32" (on `retry_schedule[0]`).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub timeout_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<OnFailure>)]
    pub on_failure: Option<Option<OnFailure>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<i64>>)]
    pub retry_schedule: Option<Option<Vec<i64>>>,
    /// The rest of the body: a PATCH refuses it unless sent back as read (see
    /// `only_settable`); a POST refuses a field a handler does not have (a misspelt
    /// `retry_shedule` created a handler on the default schedule).
    #[serde(flatten)]
    #[schema(ignore)]
    pub rest: serde_json::Map<String, Value>,
}

/// A handler with its signing secret (shown on create).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WithSecret {
    #[serde(flatten)]
    pub handler: Handler,
    pub secret: String,
}

/// The handler service.
#[derive(Clone)]
pub struct Handlers {
    db: Db,
    caller: Caller,
    before: BeforeChain,
    cache: HandlerCache,
    /// Wakes the delivery engines when deliveries are set back to pending or a handler
    /// changes.
    pipeline: crate::pipeline::Pipeline,
}

impl Handlers {
    /// Handlers stored in `db`, called through `caller`.
    pub fn new(
        db: Db,
        caller: Caller,
        before: BeforeChain,
        cache: HandlerCache,
        pipeline: crate::pipeline::Pipeline,
    ) -> Handlers {
        Handlers {
            db,
            caller,
            before,
            cache,
            pipeline,
        }
    }

    /// Commits a transaction that set deliveries back to pending, and has every engine
    /// (this process's and, on PostgreSQL, the others') look for them now rather than at
    /// its next fallback poll.
    async fn commit_requeued(&self, tx: billhook_store::Tx) -> Result<(), AppError> {
        tx.commit().await?;
        self.pipeline.committed();
        Ok(())
    }

    /// Makes every cached copy of handlers see a change at once, and the delivery
    /// engines look again: a handler enabled again has deliveries waiting for it.
    fn changed(&self) {
        self.before.invalidate();
        self.cache.invalidate();
        self.pipeline.committed();
    }

    /// Checks `h`, and its task too when `with_task`: when the task is set and when the
    /// handler is switched on. Not on other changes, so that a handler whose script has
    /// gone (or whose URL an older version accepted) can still be disabled, archived or
    /// edited, while turning it on, which would fail every call, is refused.
    fn check(&self, h: &Handler, with_task: bool) -> Result<(), AppError> {
        let mut errors = h.validate().err().unwrap_or_default();
        if with_task {
            if let Err(message) = self.check_task(h) {
                errors.add("task", message);
            }
        }
        Ok(errors.into_result()?)
    }

    /// The task as the caller will use it: a URL it can call, or a script in the scripts
    /// directory that it can run.
    fn check_task(&self, h: &Handler) -> Result<(), String> {
        match h.kind {
            HandlerType::Http => caller::check_url(&h.task),
            HandlerType::Script => {
                check_script_name(&h.task)?;
                check_script_file(self.caller.scripts_dir(), &h.task)
            }
        }
    }

    /// Registers a handler; returns it with its new secret.
    pub async fn create(&self, i: HandlerInput) -> Result<WithSecret, AppError> {
        let now = Timestamp::now();
        let secret_hint = |key: &str| {
            (key == "secret").then_some("is made by billhook: see /handlers/{id}/secret/rotate")
        };
        let mut h = only_fields_hinted(&i.rest, secret_hint, || {
            Ok(Handler {
                id: 0,
                name: required(i.name.flatten(), "name")?,
                status: i.status.flatten().unwrap_or(HandlerStatus::Enabled),
                priority: i.priority.flatten().unwrap_or(100),
                event: required(i.event.flatten(), "event")?,
                stage: i.stage.flatten().unwrap_or(Stage::After),
                kind: i.kind.flatten().unwrap_or(HandlerType::Http),
                task: required(i.task.flatten(), "task")?,
                timeout_ms: i.timeout_ms.flatten().map_or(Ok(5000), timeout)?,
                on_failure: i.on_failure.flatten().unwrap_or(OnFailure::Forbid),
                retry_schedule: i
                    .retry_schedule
                    .flatten()
                    .map_or_else(|| Ok(DEFAULT_RETRY_SCHEDULE.to_vec()), schedule)?,
                created_at: now,
                updated_at: now,
            })
        })?;
        self.check(&h, true)?;
        let secret = signing::new_secret();
        let mut tx = self.db.begin().await?;
        h.id = store::insert(&mut tx, &h, &secret).await?;
        tx.commit().await?;
        self.changed();
        Ok(WithSecret { handler: h, secret })
    }

    /// Lists handlers (archived hidden unless asked for).
    pub async fn list(&self, q: &HandlerQuery, page: Page) -> Result<List<Handler>, AppError> {
        let mut conn = self.db.read.acquire().await?;
        Ok(store::list(&mut conn, q, page).await?.into())
    }

    /// One handler.
    pub async fn get(&self, id: i64) -> Result<Handler, AppError> {
        let mut conn = self.db.read.acquire().await?;
        store::get(&mut conn, id)
            .await?
            .ok_or_else(|| AppError::not_found("handler", id))
    }

    /// Changes a handler's fields.
    pub async fn update(&self, id: i64, i: HandlerInput) -> Result<Handler, AppError> {
        let mut tx = self.db.begin().await?;
        let mut h = store::get(&mut tx, id)
            .await?
            .ok_or_else(|| AppError::not_found("handler", id))?;
        let was = h.clone();
        only_settable(&i.rest, &to_json(&h)?, |_| None)?;
        let mut nulls = FieldErrors::new();
        let (name, status, priority, event, stage) = (
            not_null(i.name, "name", &mut nulls),
            not_null(i.status, "status", &mut nulls),
            not_null(i.priority, "priority", &mut nulls),
            not_null(i.event, "event", &mut nulls),
            not_null(i.stage, "stage", &mut nulls),
        );
        let (kind, task, timeout_ms, on_failure, retry_schedule) = (
            not_null(i.kind, "type", &mut nulls),
            not_null(i.task, "task", &mut nulls),
            not_null(i.timeout_ms, "timeout_ms", &mut nulls),
            not_null(i.on_failure, "on_failure", &mut nulls),
            not_null(i.retry_schedule, "retry_schedule", &mut nulls),
        );
        nulls.into_result()?;
        // Whether the task is set or the handler switched on (see `check`).
        let mut task_checked = false;
        if let Some(v) = name {
            h.name = v;
        }
        if let Some(v) = status {
            task_checked |= v == HandlerStatus::Enabled && was.status != HandlerStatus::Enabled;
            h.status = v;
        }
        if let Some(v) = priority {
            h.priority = v;
        }
        if let Some(v) = event {
            h.event = v;
        }
        if let Some(v) = stage {
            h.stage = v;
        }
        if let Some(v) = kind {
            task_checked |= v != h.kind;
            h.kind = v;
        }
        if let Some(v) = task {
            task_checked |= v != h.task;
            h.task = v;
        }
        if let Some(v) = timeout_ms {
            h.timeout_ms = timeout(v)?;
        }
        if let Some(v) = on_failure {
            h.on_failure = v;
        }
        if let Some(v) = retry_schedule {
            h.retry_schedule = schedule(v)?;
        }
        if h == was {
            return Ok(was); // nothing changed: its updated_at stays, as other objects' do
        }
        h.updated_at = Timestamp::now();
        self.check(&h, task_checked)?;
        store::update(&mut tx, &h).await?;
        let archived = h.status == HandlerStatus::Archived && was.status != HandlerStatus::Archived;
        let made_before = h.stage == Stage::Before && was.stage == Stage::After;
        if archived || made_before {
            deliveries::fail_uncalled(&mut tx, Some(id), h.updated_at).await?;
        }
        if h.takes_after_deliveries() && !was.takes_after_deliveries() {
            deliveries::flag_heads_of(&mut tx, id).await?;
        }
        tx.commit().await?;
        self.changed();
        Ok(h)
    }

    /// Sets the status (enable, disable, archive).
    pub async fn set_status(&self, id: i64, status: HandlerStatus) -> Result<Handler, AppError> {
        self.update(
            id,
            HandlerInput {
                status: Some(Some(status)),
                ..HandlerInput::default()
            },
        )
        .await
    }

    /// Deletes a handler and its deliveries; its execution log stays. On PostgreSQL the
    /// delete waits a moment for the transactions writing deliveries (see
    /// `store::delete`); behind a long one (an import) it tries again a few times, then
    /// answers 409 rather than hold every event up.
    pub async fn delete(&self, id: i64) -> Result<Handler, AppError> {
        let mut tries = 0;
        loop {
            match self.try_delete(id).await {
                Ok(Some(h)) => {
                    self.changed();
                    return Ok(h);
                }
                Ok(None) => return Err(AppError::not_found("handler", id)),
                Err(e) if e.is_lock_timeout() && tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) if e.is_lock_timeout() => {
                    return Err(AppError::Conflict(format!(
                        "handler {id} was not deleted: a long transaction is writing \
                         deliveries (an import?); try again once it has ended"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The handler deleted, if there was one.
    async fn try_delete(&self, id: i64) -> Result<Option<Handler>, StoreError> {
        let mut tx = self.db.begin().await?;
        let Some(h) = store::get(&mut tx, id).await? else {
            return Ok(None);
        };
        store::delete(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Some(h))
    }

    /// The signing secrets: the current one, and the previous ones still signing.
    pub async fn secrets(&self, id: i64) -> Result<store::Secrets, AppError> {
        let mut conn = self.db.read.acquire().await?;
        store::secrets(&mut conn, id)
            .await?
            .ok_or_else(|| AppError::not_found("handler", id))
    }

    /// Replaces the secret; the old one signs too for 24 hours, and those replaced before
    /// until their own 24 hours end.
    pub async fn rotate_secret(&self, id: i64) -> Result<String, AppError> {
        let secret = signing::new_secret();
        let mut tx = self.db.begin().await?;
        let now = Timestamp::now();
        let until = now.add_seconds(OLD_SECRET_GRACE_SECONDS);
        if !store::rotate_secret(&mut tx, id, &secret, now, until).await? {
            return Err(AppError::not_found("handler", id));
        }
        tx.commit().await?;
        self.changed();
        Ok(secret)
    }

    /// Calls the handler now with the sample of `events_id` (default: its own event, or
    /// the first event its pattern matches) and returns the logged execution.
    pub async fn test(&self, id: i64, events_id: Option<String>) -> Result<Execution, AppError> {
        let h = self.get(id).await?;
        let event = match events_id {
            Some(e) => catalogue::find(&e)
                .ok_or_else(|| AppError::field("events_id", format!("unknown event {e:?}")))?,
            None => EVENT_TYPES
                .iter()
                .find(|t| catalogue::pattern_matches(&h.event, t.id))
                .ok_or_else(|| AppError::field("events_id", "the handler matches no event"))?,
        };
        if h.stage == Stage::Before && !event.before_capable {
            return Err(AppError::field(
                "events_id",
                format!("{} has no before stage", event.id),
            ));
        }
        let mut sample = event.sample_for(h.stage);
        let uid = uuid::Uuid::now_v7().to_string();
        sample["event"]["uid"] = Value::String(uid.clone());
        let object_id = sample["event"]["object_id"].as_i64();
        let request = serde_json::value::to_raw_value(&sample).expect("JSON values serialise");
        let body = request.get().as_bytes();
        let secrets = {
            let mut conn = self.db.read.acquire().await?;
            store::secrets(&mut conn, id)
                .await?
                .ok_or_else(|| AppError::not_found("handler", id))?
        };
        let meta = CallMeta {
            events_id: event.id,
            uid: &uid,
            object_id,
            stage: h.stage,
        };
        let outcome = self
            .caller
            .call(&h, &secrets.signing(Timestamp::now()), &meta, body)
            .await;
        // A before handler's answer is judged as a real call's would be (a forbid is a
        // failed call there).
        let judged = before::judge_test(h.stage, &outcome, &sample["data"]);
        let mut execution = Execution {
            id: 0,
            dt: Timestamp::now(),
            handlers_id: h.id,
            handler: h.name.clone(),
            events_id: event.id.into(),
            event_uid: uid,
            // A test call is about no stored object (the sample's id may be a real one)
            // and is no delivery attempt: attempt 0 tells it apart in the log.
            object_id: None,
            stage: h.stage.as_str().into(),
            attempt: 0,
            status: judged.status.into(),
            duration_ms: outcome.duration_ms(),
            request,
            response_status: outcome.response_status,
            response_body: caller::logged(outcome.response_body),
            error: judged.error,
            modified: judged.modified,
            deliveries_id: None,
        };
        let mut tx = self.db.begin().await?;
        execution.id = executions::insert(&mut tx, &execution).await?;
        tx.commit().await?;
        Ok(execution)
    }

    /// Re-queues the handler's failed deliveries of events raised in `[since, until]`.
    pub async fn recover(
        &self,
        id: i64,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<u64, AppError> {
        self.get(id).await?;
        let now = Timestamp::now();
        // An empty window is a mistake in the request, not a recovery of nothing.
        match until {
            Some(until) if until < since => {
                return Err(AppError::field("until", "must not be before since"));
            }
            None if now < since => {
                return Err(AppError::field(
                    "since",
                    "is in the future (the window ends now without until)",
                ));
            }
            _ => {}
        }
        let mut tx = self.db.begin().await?;
        refuse_if_uncalled(&mut tx, id).await?;
        let n = deliveries::recover(&mut tx, id, since, until.unwrap_or(now), now).await?;
        self.commit_requeued(tx).await?;
        Ok(n)
    }

    /// The execution log.
    pub async fn executions(
        &self,
        q: &ExecutionQuery,
        page: Page,
    ) -> Result<List<Execution>, AppError> {
        let mut conn = self.db.read.acquire().await?;
        Ok(executions::list(&mut conn, q, page).await?.into())
    }

    /// Deliveries.
    pub async fn deliveries(
        &self,
        q: &DeliveryQuery,
        page: Page,
    ) -> Result<List<Delivery>, AppError> {
        let mut conn = self.db.read.acquire().await?;
        Ok(deliveries::list(&mut conn, q, page).await?.into())
    }

    /// A delivery tried again now: a failed one for one more attempt, a pending one
    /// waiting for its next attempt at once (see `deliveries::retry`).
    pub async fn retry_delivery(&self, id: i64) -> Result<Delivery, AppError> {
        let mut tx = self.db.begin().await?;
        if let Some(handlers_id) = deliveries::handler_of(&mut tx, id).await? {
            refuse_if_uncalled(&mut tx, handlers_id).await?;
        }
        match deliveries::retry(&mut tx, id, Timestamp::now()).await? {
            Retried::Requeued | Retried::MadeDue => {}
            Retried::NotFound => return Err(AppError::not_found("delivery", id)),
            Retried::Succeeded => {
                return Err(AppError::Conflict(format!(
                    "delivery {id} has succeeded; only failed and pending deliveries can be retried"
                )))
            }
            Retried::Leased => {
                return Err(AppError::Conflict(format!(
                    "delivery {id} is being delivered now"
                )))
            }
        }
        self.commit_requeued(tx).await?;
        let mut conn = self.db.read.acquire().await?;
        let q = DeliveryQuery {
            id: Some(id),
            ..DeliveryQuery::default()
        };
        let (mut items, _) = deliveries::list(&mut conn, &q, Page::default()).await?;
        items
            .pop()
            .ok_or_else(|| AppError::not_found("delivery", id))
    }

    /// The id and stage of every handler not archived, by id.
    pub async fn live(&self) -> Result<Vec<(i64, Stage)>, AppError> {
        let mut conn = self.db.read.acquire().await?;
        Ok(store::live(&mut conn).await?)
    }

    /// Pending deliveries by handler: how many, and when the oldest was created.
    pub async fn backlog(&self) -> Result<Vec<Backlog>, AppError> {
        let mut conn = self.db.read.acquire().await?;
        Ok(deliveries::backlog(&mut conn).await?)
    }

    /// One event's payload with the delivery state of each handler.
    pub async fn event_with_deliveries(&self, uid: &str) -> Result<Value, AppError> {
        let mut conn = self.db.read.acquire().await?;
        let event = events::get(&mut conn, uid)
            .await?
            .ok_or_else(|| AppError::not_found("event", uid))?;
        let q = DeliveryQuery {
            event_seq: Some(event.seq),
            ..DeliveryQuery::default()
        };
        let (list, _) = deliveries::list(
            &mut conn,
            &q,
            Page {
                limit: 1000,
                offset: 0,
            },
        )
        .await?;
        let mut value = crate::queries::event_payload(&event);
        value["deliveries"] = serde_json::to_value(list).expect("serialisable");
        Ok(value)
    }
}

/// The script must exist inside the scripts directory and be executable.
fn check_script_file(dir: &Path, task: &str) -> Result<(), String> {
    let path: PathBuf = dir.join(task);
    let meta = std::fs::metadata(&path).map_err(|_| {
        format!(
            "no script {task:?} in the scripts directory {}",
            dir.display()
        )
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("script {task:?} is not an executable file"));
    }
    caller::check_inside(dir, task)?;
    check_runnable(&path).map_err(|why| format!("script {task:?} cannot run: {why}"))
}

/// What the system would refuse to run, read from the file's start: a script without a
/// `#!` line ("Exec format error": scripts run without a shell), or whose `#!` line
/// names an interpreter that is not there, often one saved with Windows line ends
/// (`/bin/sh\r`). Such a handler was accepted and failed every call.
fn check_runnable(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut head = Vec::with_capacity(256);
    std::fs::File::open(path)
        .and_then(|f| f.take(256).read_to_end(&mut head))
        .map_err(|e| format!("cannot read it: {e}"))?;
    if head.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let Some(line) = head.strip_prefix(b"#!") else {
        return Err("it has no #! line naming its interpreter, nor is it a program".into());
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    if line.ends_with(b"\r") {
        return Err("its #! line ends with a carriage return (Windows line ends)".into());
    }
    let line = String::from_utf8_lossy(line);
    let Some(interpreter) = line.split_whitespace().next() else {
        return Err("its #! line names no interpreter".into());
    };
    if !Path::new(interpreter).is_file() {
        return Err(format!("its interpreter {interpreter} does not exist"));
    }
    Ok(())
}

/// A handler's `timeout_ms` as given; one out of `u32` is out of range as one over the
/// maximum is (the handler's own check says which range).
fn timeout(v: i64) -> Result<u32, AppError> {
    u32::try_from(v).map_err(|_| {
        AppError::field(
            "timeout_ms",
            format!("must be 1 to {}", billhook_domain::entities::MAX_TIMEOUT_MS),
        )
    })
}

/// A handler's `retry_schedule` as given (seconds): a negative or huge delay is refused
/// on the field, as one over 7 days is.
fn schedule(v: Vec<i64>) -> Result<Vec<u32>, AppError> {
    v.into_iter()
        .map(|s| {
            u32::try_from(s).map_err(|_| {
                AppError::field(
                    "retry_schedule",
                    billhook_domain::entities::RETRY_SCHEDULE_RULE,
                )
            })
        })
        .collect()
}

/// Refuses to set deliveries of an archived or before handler going again: the engine
/// sends nothing for it, so they would stay pending for ever, in the backlog gauges
/// (archive, or the change of stage, failed them for that reason). The handler's row
/// is held until the commit, so an archive on another server cannot come between the
/// check and the write.
async fn refuse_if_uncalled(tx: &mut billhook_store::Tx, id: i64) -> Result<(), AppError> {
    let (status, stage) = store::status_held(tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("handler", id))?;
    if status == HandlerStatus::Archived {
        return Err(AppError::InvalidTransition(format!(
            "handler {id} is archived and sends nothing: enable it first"
        )));
    }
    if stage == Stage::Before {
        return Err(AppError::InvalidTransition(format!(
            "handler {id} is a before handler and takes no after deliveries: \
             make it an after handler first"
        )));
    }
    Ok(())
}
