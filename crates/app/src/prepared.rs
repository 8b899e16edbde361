//! Creates prepared ahead of their transaction, for imports: every row's before chain
//! runs first, outside any transaction (it may take seconds per row), and only then are
//! all rows written in one transaction, so an import is all or nothing and holds no lock
//! while handlers are called.

use billhook_domain::Timestamp;
use billhook_store::Tx;

use crate::judged::settle;
use crate::pipeline::{checked_proposal, unchanged, Action, Kind, Pipeline};
use crate::AppError;

/// An object made ahead of its write, and when its action began: the `dt` of the payloads
/// its before handlers were sent, and of its event.
pub struct Made<O> {
    pub object: O,
    pub began: Timestamp,
}

impl Pipeline {
    /// Builds, checks and passes through the before chain the object a create action
    /// would write. Nothing is written.
    pub async fn prepare_create<A: Action>(&self, action: &A) -> Result<Made<A::Object>, AppError> {
        debug_assert_eq!(action.kind(), Kind::Create);
        let now = Timestamp::now();
        let made = |object| Made { object, began: now };
        let (current, proposed) = {
            let mut conn = self.db().read.acquire().await?;
            checked_proposal(&mut conn, action, now).await?
        };
        let Some(proposed) = proposed else {
            return unchanged(current).map(made);
        };
        let handlers = self.before.handlers_for(action.event()).await?;
        if handlers.is_empty() {
            return Ok(made(proposed));
        }
        let judged = self.judge(action, &handlers, None, proposed, now).await?;
        let mut conn = self.db().read.acquire().await?;
        settle(action, &mut conn, None, judged).await.map(made)
    }

    /// Writes an object made by [`Pipeline::prepare_create`] inside the caller's
    /// transaction, checked again against what the transaction sees (an earlier row of
    /// the same import may have taken its number).
    pub async fn write_prepared<A: Action>(
        &self,
        tx: &mut Tx,
        action: &A,
        made: Made<A::Object>,
    ) -> Result<A::Object, AppError> {
        // Loaded for its locks (the referenced client's row on PostgreSQL).
        action.load(tx).await?;
        action.check(tx, None, &made.object).await?;
        self.commit_change(tx, action, None, made.object, made.began)
            .await
    }
}
