use serde::{Deserialize, Serialize};

use crate::catalogue::{is_valid_pattern, pattern_allows_before, Stage};
use crate::errors::check_name;
use crate::{wire_enum, FieldErrors, Timestamp};

wire_enum!(
    /// Only enabled handlers are called; archived ones are hidden from the default list.
    HandlerStatus { Enabled => "enabled", Disabled => "disabled", Archived => "archived" }
);

wire_enum!(
    /// How a handler is called.
    HandlerType { Http => "http", Script => "script" }
);

wire_enum!(
    /// How one call of a handler went, in the execution log.
    CallStatus { Success => "success", Fail => "fail" }
);

wire_enum!(
    /// Where an after handler's delivery of an event is.
    DeliveryStatus { Pending => "pending", Succeeded => "succeeded", Failed => "failed" }
);

wire_enum!(
    /// What a failing before handler means for the action.
    OnFailure { Forbid => "forbid", Allow => "allow" }
);

/// The retry schedule of the spec, in seconds after each failed attempt.
pub const DEFAULT_RETRY_SCHEDULE: &[u32] = &[5, 300, 1800, 7200, 18000, 36000, 36000];
/// The longest a call may take.
pub const MAX_TIMEOUT_MS: u32 = 30_000;
/// The longest delay of a retry schedule: 7 days, in seconds.
pub const MAX_RETRY_DELAY_S: u32 = 7 * 86_400;
/// What a retry schedule may be, said when it is not.
pub const RETRY_SCHEDULE_RULE: &str = "at most 50 delays, each 0 to 604800 seconds (7 days)";

/// An operator's handler: an endpoint or script called for matching events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Handler {
    pub id: i64,
    pub name: String,
    pub status: HandlerStatus,
    pub priority: i64,
    pub event: String,
    pub stage: Stage,
    #[serde(rename = "type")]
    pub kind: HandlerType,
    pub task: String,
    pub timeout_ms: u32,
    pub on_failure: OnFailure,
    pub retry_schedule: Vec<u32>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Handler {
    /// Whether it is called with after deliveries: enabled, and an after handler.
    pub fn takes_after_deliveries(&self) -> bool {
        self.status == HandlerStatus::Enabled && self.stage == Stage::After
    }

    /// Checks every field but `task`: it is checked by the application with what the
    /// caller knows (the scripts directory, the URL parser of its calls), and only when
    /// it is set or the handler switched on.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::new();
        check_name(&mut errors, "name", &self.name);
        if !is_valid_pattern(&self.event) {
            errors.add(
                "event",
                format!(
                    "{:?} is not an event id, a prefix pattern such as clients.* or *",
                    self.event
                ),
            );
        } else if self.stage == Stage::Before && !pattern_allows_before(&self.event) {
            errors.add(
                "stage",
                format!("{} is after-only: it has no before stage", self.event),
            );
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            errors.add("timeout_ms", format!("must be 1 to {MAX_TIMEOUT_MS}"));
        }
        if self.retry_schedule.len() > 50
            || self.retry_schedule.iter().any(|s| *s > MAX_RETRY_DELAY_S)
        {
            errors.add("retry_schedule", RETRY_SCHEDULE_RULE);
        }
        errors.into_result()
    }
}

/// A script named relative to the scripts directory: no absolute path, no `..`.
pub fn check_script_name(task: &str) -> Result<(), String> {
    if task.is_empty() {
        return Err("must name a script in the scripts directory".into());
    }
    if task.starts_with('/') || task.split('/').any(|part| part == ".." || part.is_empty()) {
        return Err("must be a path inside the scripts directory (no absolute path, no ..)".into());
    }
    Ok(())
}
