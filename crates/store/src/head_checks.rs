//! PostgreSQL: deliveries whose queue's head must be looked at again once the
//! transaction that queued them has committed (see [`crate::deliveries::claim`]).
//!
//! A delivery queued behind another one while that one finishes in a concurrent
//! transaction is flagged by neither: each saw the other's row as it was. Whichever of
//! the two commits second must look again. The outcome writer does so after its own
//! commits; the deliveries an action queued behind others are collected here, after its
//! commit, and the engine of the same process looks at their queues before it claims.

use std::sync::{Arc, Mutex};

/// Deliveries to look at, shared by a process's transactions and its engine.
#[derive(Clone, Default)]
pub struct HeadChecks(Arc<Mutex<Vec<i64>>>);

impl HeadChecks {
    /// Adds deliveries whose transaction has committed.
    pub(crate) fn add(&self, ids: &[i64]) {
        if !ids.is_empty() {
            self.0.lock().expect("not poisoned").extend_from_slice(ids);
        }
    }

    /// Takes every delivery added so far.
    pub fn take(&self) -> Vec<i64> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}
