//! The before chain as the pipeline runs it, shared by a request's action
//! ([`Pipeline::run`]) and an import's rows ([`Pipeline::prepare_create`]): call the
//! chain on the proposed object, decode what a modifying handler returned, and settle
//! whether the modified object or the request's own is written.

use billhook_domain::entities::{Handler, OnFailure};
use billhook_domain::Timestamp;
use billhook_provisioning::before::{BeforeEvent, Modifier};
use billhook_store::Conn;
use serde_json::Value;

use crate::pipeline::{describe, refused, to_json, Action, Kind, Pipeline};
use crate::AppError;

/// A proposal after the chain: the request's own object and, when a handler changed
/// it, the changed object and that handler.
pub(crate) struct Judged<O> {
    pub proposed: O,
    pub modified: Option<(O, Modifier)>,
}

impl Pipeline {
    /// Calls the before chain on `proposed` (outside any transaction), for an action
    /// that began at `now`.
    pub(crate) async fn judge<A: Action>(
        &self,
        action: &A,
        handlers: &[Handler],
        current: Option<&A::Object>,
        proposed: A::Object,
        now: Timestamp,
    ) -> Result<Judged<A::Object>, AppError> {
        // An object asked about before it is stored has no id yet: a create's, and a
        // new subscription's activation asked about with its assign (its id is 0 then).
        let object_id = current.map(|c| action.object_id(c)).filter(|&id| id != 0);
        let creating = action.kind() == Kind::Create;
        let mut data = to_json(&proposed)?;
        if creating || object_id.is_none() {
            data["id"] = Value::Null;
        }
        let current_json = match current {
            Some(c) if object_id.is_none() => {
                let mut c = to_json(c)?;
                c["id"] = Value::Null;
                c
            }
            Some(c) => to_json(c)?,
            None => Value::Null,
        };
        let uid = uuid::Uuid::now_v7().to_string();
        let event = BeforeEvent {
            dt: now,
            events_id: action.event(),
            uid: &uid,
            object_id,
            current: &current_json,
            writable: action.writable(),
        };
        let decode = |v: &Value| -> Result<A::Object, AppError> {
            let mut v = v.clone();
            if creating || object_id.is_none() {
                v["id"] = Value::from(0);
            }
            let object: A::Object =
                serde_json::from_value(v).map_err(|e| AppError::BadRequest(e.to_string()))?;
            action.validate(current, &object)?;
            Ok(object)
        };
        let validate = |v: &Value| decode(v).map(|_| ()).map_err(|e| describe(&e));
        let (final_data, modifier) = self
            .before
            .run(handlers, &event, data, &validate)
            .await
            .map_err(refused)?;
        let modified = match modifier {
            Some(m) => Some((decode(&final_data)?, m)),
            None => None,
        };
        Ok(Judged { proposed, modified })
    }
}

/// The object to write. The database-backed checks judge a modified object; if they
/// refuse it, that is the modifying handler's failure, settled by its `on_failure`.
pub(crate) async fn settle<A: Action>(
    action: &A,
    conn: &mut Conn,
    current: Option<&A::Object>,
    judged: Judged<A::Object>,
) -> Result<A::Object, AppError> {
    let Some((modified, m)) = judged.modified else {
        return Ok(judged.proposed);
    };
    match action.check(conn, current, &modified).await {
        Ok(()) => Ok(modified),
        Err(e) if m.on_failure == OnFailure::Allow => {
            tracing::info!(handler = m.handlers_id, error = %describe(&e), "modified data refused; using the request's own");
            Ok(judged.proposed)
        }
        Err(e) => Err(AppError::HandlerFailed {
            message: format!("the modified data is invalid: {}", describe(&e)),
            handlers_id: m.handlers_id,
            handler: m.handler,
        }),
    }
}
