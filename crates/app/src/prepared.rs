//! Creates prepared ahead of their transaction, for imports: every row's before chain
//! runs first, outside any transaction (it may take seconds per row), and only then are
//! all rows written in one transaction, so an import is all or nothing and holds no lock
//! while handlers are called.

use billhook_domain::entities::OnFailure;
use billhook_provisioning::before::BeforeEvent;
use billhook_store::Tx;
use serde_json::Value;

use crate::pipeline::{describe, refused, to_json, Action, Kind, Pipeline, Proposal};
use crate::AppError;

impl Pipeline {
    /// Builds, checks and passes through the before chain the object a create action
    /// would write. Nothing is written.
    pub async fn prepare_create<A: Action>(&self, action: &A) -> Result<A::Object, AppError> {
        debug_assert_eq!(action.kind(), Kind::Create);
        let now = billhook_domain::Timestamp::now();
        let proposed = {
            let mut conn = self.db().read.acquire().await?;
            let current = action.load(&mut conn).await?;
            let proposed = match action.propose(current.as_ref(), now)? {
                Proposal::Change(p) => p,
                Proposal::Unchanged => return Err(AppError::Internal("unchanged create".into())),
            };
            action.check(&mut conn, None, &proposed).await?;
            proposed
        };
        let handlers = self.before.handlers_for(action.event()).await?;
        if handlers.is_empty() {
            return Ok(proposed);
        }
        let mut data = to_json(&proposed)?;
        data["id"] = Value::Null;
        let uid = uuid::Uuid::now_v7().to_string();
        let event = BeforeEvent {
            events_id: action.event(),
            uid: &uid,
            object_id: None,
            current: &Value::Null,
            writable: action.writable(),
        };
        let decode = |v: &Value| -> Result<A::Object, AppError> {
            let mut v = v.clone();
            v["id"] = Value::from(0);
            let object: A::Object =
                serde_json::from_value(v).map_err(|e| AppError::BadRequest(e.to_string()))?;
            action.validate(None, &object)?;
            Ok(object)
        };
        let validate = |v: &Value| decode(v).map(|_| ()).map_err(|e| describe(&e));
        let (final_data, modifier) = self
            .before
            .run(&handlers, &event, data, &validate)
            .await
            .map_err(refused)?;
        let Some(m) = modifier else {
            return Ok(proposed);
        };
        let modified = decode(&final_data)?;
        let mut conn = self.db().read.acquire().await?;
        match action.check(&mut conn, None, &modified).await {
            Ok(()) => Ok(modified),
            Err(_) if m.on_failure == OnFailure::Allow => Ok(proposed),
            Err(e) => Err(AppError::HandlerFailed {
                message: format!("the modified data is invalid: {}", describe(&e)),
                handlers_id: m.handlers_id,
                handler: m.handler,
            }),
        }
    }

    /// Writes an object made by [`Pipeline::prepare_create`] inside the caller's
    /// transaction, checked again against what the transaction sees (an earlier row of
    /// the same import may have taken its number).
    pub async fn write_prepared<A: Action>(
        &self,
        tx: &mut Tx,
        action: &A,
        object: A::Object,
    ) -> Result<A::Object, AppError> {
        let now = billhook_domain::Timestamp::now();
        action.load(tx).await?;
        action.check(tx, None, &object).await?;
        self.commit_change(tx, action, None, object, now).await
    }
}
