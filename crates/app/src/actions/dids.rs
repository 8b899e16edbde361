//! DID actions: create, update and the status transitions of the spec's table.

use billhook_domain::entities::{Did, DidAction, DidStatus};
use billhook_domain::{FieldErrors, IsoDuration, Timestamp};
use billhook_store::{accounts, dids as store, Conn};
use serde::Deserialize;

use super::{lock_client, lock_open_client};
use crate::input::{nullable, only_fields, only_settable, refuse_fields, required};
use crate::pipeline::{client_key, to_json, Action, Effects, Kind, Proposal};
use crate::AppError;

/// How long a DID stays on hold when the request does not say.
const DEFAULT_HOLD_DAYS: u32 = 30;

/// Body of `POST /dids`, `PATCH /dids/{id}` and of the transitions.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct DidInput {
    pub number: Option<String>,
    pub status: Option<DidStatus>,
    #[serde(default, deserialize_with = "nullable")]
    pub clients_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    pub accounts_id: Option<Option<i64>>,
    /// `hold`: whole days on hold (default 30).
    pub hold_days: Option<u32>,
    /// `hold`: an ISO 8601 duration instead of days (`PT2S`).
    pub hold_for: Option<IsoDuration>,
    /// `hold`: an explicit end of the hold. (`null` is what a DID not held reads: a
    /// PATCH takes it back from such a DID only.)
    #[serde(default, deserialize_with = "nullable")]
    pub hold_until: Option<Option<Timestamp>>,
    /// `hold`: where the DID goes when the hold ends (default stock).
    #[serde(default, deserialize_with = "nullable")]
    pub status_after_hold: Option<Option<DidStatus>>,
    /// The rest of the body: a PATCH refuses it unless sent back as read (see
    /// `only_settable`), a transition refuses it (a misspelt `hold_days` fell back to
    /// the default with a 200), a POST unless it is one of the DID's fields (see
    /// `only_fields`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl crate::input::Patch for DidInput {
    // A DID that is not held reads `null` for the last two: sent back, they pass.
    const NULLABLE: &'static [&'static str] = &[
        "clients_id",
        "accounts_id",
        "hold_until",
        "status_after_hold",
    ];
    fn rest(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.rest
    }
}

/// What a DID action does.
pub enum DidChange {
    /// `dids.create`.
    Create,
    /// `dids.update`.
    Patch,
    /// A status transition through the API.
    Transition(DidAction),
    /// The end of a hold, done by the scheduler: the DID moves to its
    /// `status_after_hold` with that status's event.
    HoldEnded(DidAction),
}

/// Refuses, in a `PATCH`, a value other than the current one of a field that only the
/// DID's transitions change: such a field was ignored with a 200, and the caller took
/// the change as made. Its current value passes (a body sent back as it was read).
fn not_patched(i: &DidInput, cur: &Did) -> Result<(), AppError> {
    let mut errors = FieldErrors::new();
    const TRANSITIONS: &str =
        "POST /api/v1/dids/{id}/reserve, activate, block, hold, stock or archive";
    if i.status.is_some_and(|s| s != cur.status) {
        errors.add(
            "status",
            format!("changes through the DID's transitions: {TRANSITIONS}"),
        );
    }
    if i.clients_id.is_some_and(|c| c != cur.clients_id) {
        errors.add(
            "clients_id",
            "changes through POST /api/v1/dids/{id}/activate (stock or archive free it)",
        );
    }
    if i.hold_until.is_some_and(|t| t != cur.hold_until) {
        errors.add("hold_until", "set by POST /api/v1/dids/{id}/hold");
    }
    if i.status_after_hold
        .is_some_and(|s| s != cur.status_after_hold)
    {
        errors.add("status_after_hold", "set by POST /api/v1/dids/{id}/hold");
    }
    for (given, name) in [
        (i.hold_days.is_some(), "hold_days"),
        (i.hold_for.is_some(), "hold_for"),
    ] {
        if given {
            errors.add(name, "taken by POST /api/v1/dids/{id}/hold only");
        }
    }
    Ok(errors.into_result()?)
}

/// Every DID action.
pub struct DidActionRequest {
    pub id: i64,
    pub change: DidChange,
    pub input: DidInput,
}

impl DidActionRequest {
    fn target_client(&self, current: Option<&Did>) -> Option<i64> {
        match self.input.clients_id {
            Some(v) => v,
            None => current.and_then(|c| c.clients_id),
        }
    }
}

impl Action for DidActionRequest {
    type Object = Did;
    fn event(&self) -> &'static str {
        match self.change {
            DidChange::Create => "dids.create",
            DidChange::Patch => "dids.update",
            DidChange::Transition(a) | DidChange::HoldEnded(a) => a.event(),
        }
    }
    fn kind(&self) -> Kind {
        match self.change {
            DidChange::Create => Kind::Create,
            _ => Kind::Update,
        }
    }
    async fn load(&self, conn: &mut Conn) -> Result<Option<Did>, AppError> {
        let current = match self.change {
            DidChange::Create => None,
            _ => Some(
                store::get(conn, self.id, true)
                    .await?
                    .ok_or_else(|| AppError::not_found("DID", self.id))?,
            ),
        };
        // Lock order is DID row, then client row: no action locks them the other way.
        if let Some(id) = current.as_ref().and_then(|c| c.clients_id) {
            lock_client(conn, id).await?;
        }
        if let Some(Some(id)) = self.input.clients_id {
            if current.as_ref().and_then(|c| c.clients_id) != Some(id) {
                lock_open_client(conn, id, "clients_id").await?;
            }
        }
        Ok(current)
    }
    fn propose(&self, current: Option<&Did>, now: Timestamp) -> Result<Proposal<Did>, AppError> {
        let i = &self.input;
        let Some(cur) = current else {
            let status = i.status.unwrap_or(DidStatus::Stock);
            let made = only_fields(&i.rest, || {
                if !matches!(
                    status,
                    DidStatus::Stock | DidStatus::Reserved | DidStatus::Active
                ) {
                    return Err(AppError::field(
                        "status",
                        "a new DID must be stock, reserved or active",
                    ));
                }
                Ok(Did {
                    id: 0,
                    number: required(i.number.clone(), "number")?,
                    status,
                    clients_id: i.clients_id.flatten(),
                    accounts_id: i.accounts_id.flatten(),
                    hold_until: None,
                    status_after_hold: None,
                    created_at: now,
                    updated_at: now,
                })
            })?;
            return Ok(Proposal::Change(made));
        };
        let mut next = cur.clone();
        match self.change {
            DidChange::Create => unreachable!("create has no current object"),
            DidChange::Patch => {
                if cur.status == DidStatus::Archived {
                    return Err(AppError::InvalidTransition(format!(
                        "DID {} is archived and cannot change",
                        self.id
                    )));
                }
                not_patched(i, cur)?;
                only_settable(&i.rest, &to_json(cur)?, |_| None)?;
                if let Some(v) = &i.number {
                    next.number = v.clone();
                }
                if let Some(v) = i.accounts_id {
                    next.accounts_id = v;
                }
            }
            DidChange::HoldEnded(action) => {
                if cur.status != DidStatus::Hold || cur.hold_until.is_none_or(|t| t > now) {
                    return Ok(Proposal::Unchanged);
                }
                apply_transition(&mut next, action, self.target_client(current), i, now)?;
            }
            DidChange::Transition(action) => {
                refuse_fields(&i.rest, |_, _| {
                    Some(format!("is not a field of {}", action.name()))
                })?;
                if !action.allowed_from(cur.status) {
                    return Err(AppError::InvalidTransition(format!(
                        "DID {} is {}; it cannot {}",
                        self.id,
                        cur.status.as_str(),
                        action.name()
                    )));
                }
                apply_transition(&mut next, action, self.target_client(current), i, now)?;
            }
        }
        if &next == cur {
            return Ok(Proposal::Unchanged);
        }
        next.updated_at = now;
        Ok(Proposal::Change(next))
    }
    async fn check(&self, conn: &mut Conn, current: Option<&Did>, p: &Did) -> Result<(), AppError> {
        p.validate()?;
        // A client that neither the request nor the DID had (a before handler's) is
        // checked as the request's is in `load`.
        let known = [
            self.input.clients_id.flatten(),
            current.and_then(|c| c.clients_id),
        ];
        if let Some(client) = p.clients_id.filter(|c| !known.contains(&Some(*c))) {
            lock_open_client(conn, client, "clients_id").await?;
        }
        if let (Some(account), Some(client)) = (p.accounts_id, p.clients_id) {
            let owner = accounts::get(conn, account).await?.map(|a| a.clients_id);
            if owner != Some(client) {
                return Err(AppError::field(
                    "accounts_id",
                    format!("account {account} does not belong to client {client}"),
                ));
            }
        }
        if p.status != DidStatus::Archived
            && store::number_taken(conn, &p.number, Some(p.id)).await?
        {
            return Err(AppError::Conflict(format!(
                "number {} is already in use",
                p.number
            )));
        }
        Ok(())
    }
    async fn write(
        &self,
        conn: &mut Conn,
        _: Option<&Did>,
        mut p: Did,
        _: Timestamp,
        _: &mut Effects,
    ) -> Result<Did, AppError> {
        if let DidChange::Create = self.change {
            p.id = store::insert(conn, &p).await?;
        } else {
            store::update(conn, &p).await?;
        }
        Ok(p)
    }
    fn writable(&self) -> &'static [&'static str] {
        match self.change {
            DidChange::Create => &["number", "status", "clients_id", "accounts_id"],
            DidChange::Patch => &["number", "accounts_id"],
            DidChange::Transition(DidAction::Activate | DidAction::Reserve) => {
                &["clients_id", "accounts_id"]
            }
            DidChange::Transition(DidAction::Hold) => &["hold_until", "status_after_hold"],
            _ => &[],
        }
    }
    /// A before handler's result, validated as the request is: a new DID's status, and
    /// a hold's status after it, are refused here as in `propose`.
    fn validate(&self, current: Option<&Did>, d: &Did) -> Result<(), AppError> {
        if current.is_none()
            && !matches!(
                d.status,
                DidStatus::Stock | DidStatus::Reserved | DidStatus::Active
            )
        {
            return Err(AppError::field(
                "status",
                "a new DID must be stock, reserved or active",
            ));
        }
        if d.status_after_hold == Some(DidStatus::Hold) {
            return Err(AppError::field("status_after_hold", "cannot be hold"));
        }
        Ok(d.validate()?)
    }
    fn object_id(&self, d: &Did) -> i64 {
        d.id
    }
    fn ordering_key(&self, current: Option<&Did>, d: &Did) -> String {
        match d.clients_id.or(current.and_then(|c| c.clients_id)) {
            Some(c) => client_key(c),
            None => format!("dids:{}", d.id),
        }
    }
}

/// Sets the fields a transition changes.
fn apply_transition(
    next: &mut Did,
    action: DidAction,
    client: Option<i64>,
    i: &DidInput,
    now: Timestamp,
) -> Result<(), AppError> {
    next.status = action.target();
    if action != DidAction::Hold {
        next.hold_until = None;
        next.status_after_hold = None;
    }
    match action {
        DidAction::Reserve | DidAction::Activate => {
            if client != next.clients_id {
                next.accounts_id = None;
            }
            next.clients_id = client;
            if let Some(v) = i.accounts_id {
                next.accounts_id = v;
            }
            if action == DidAction::Activate && next.clients_id.is_none() {
                return Err(AppError::field(
                    "clients_id",
                    "is required to activate a DID",
                ));
            }
        }
        DidAction::Hold => {
            let until = match (i.hold_until.flatten(), i.hold_for) {
                (Some(t), _) => t,
                (None, Some(d)) => d.add_to(now),
                (None, None) => {
                    now.add_seconds(i64::from(i.hold_days.unwrap_or(DEFAULT_HOLD_DAYS)) * 86_400)
                }
            };
            let after = i.status_after_hold.flatten().unwrap_or(DidStatus::Stock);
            if after == DidStatus::Hold {
                return Err(AppError::field("status_after_hold", "cannot be hold"));
            }
            next.hold_until = Some(until);
            next.status_after_hold = Some(after);
        }
        DidAction::Stock | DidAction::Archive => {
            next.clients_id = None;
            next.accounts_id = None;
        }
        DidAction::Block => {}
    }
    Ok(())
}
