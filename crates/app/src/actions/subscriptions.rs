//! Subscription actions: assign, activate, deactivate, renew, close. A new period
//! charges the package fee as a real charge.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use billhook_domain::entities::{
    Client, ClientStatus, Package, PackageStatus, Subscription, SubscriptionAction,
    SubscriptionStatus,
};
use billhook_domain::payload::previous_of;
use billhook_domain::{Money, Timestamp};
use billhook_store::{clients, packages, subscriptions as store, Conn};
use serde::Deserialize;

use super::transactions::charge_fee;
use super::{lock_client, lock_open_client, lock_other_client};
use crate::input::{only_fields, required};
use crate::pipeline::{client_key, to_json, Action, Effects, Kind, NewEvent, Proposal};
use crate::{AppError, Pipeline};

/// Body of `POST /subscriptions`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct AssignInput {
    pub clients_id: Option<i64>,
    pub packages_id: Option<i64>,
    pub start_dt: Option<Timestamp>,
    /// The rest of the body: refused, naming each field, unless it is one of the
    /// object's (see `only_fields`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// `clients.subscriptions.assign`: a pending subscription; with `activate_now`, also
/// activated in the same transaction when its start is not in the future (its
/// `clients.subscriptions.activate` event, its fee and their events follow the assign's):
/// see [`assign`].
pub struct AssignSubscription {
    pub input: AssignInput,
    pub activate_now: bool,
    /// When [`assign`] began: the activation's before handlers were asked about the
    /// subscription as it was then (see [`Action::began`]).
    pub began: Option<Timestamp>,
}

/// What the activation's before handlers were asked about, ahead of the assign: its
/// client, package and start. An assign that writes other ones (changed by its own
/// before handlers) is not activated with it: the subscription stays pending, due, and
/// the scheduler activates it, asking them about what was written.
fn judged_as(p: &Subscription, input: &AssignInput, now: Timestamp) -> bool {
    Some(p.clients_id) == input.clients_id
        && Some(p.packages_id) == input.packages_id
        && p.start_dt == input.start_dt.unwrap_or(p.start_dt)
        && p.start_dt <= now
}

impl Action for AssignSubscription {
    type Object = Subscription;
    fn event(&self) -> &'static str {
        "clients.subscriptions.assign"
    }
    fn kind(&self) -> Kind {
        Kind::Create
    }
    async fn load(&self, conn: &mut Conn) -> Result<Option<Subscription>, AppError> {
        if let Some(id) = self.input.clients_id {
            lock_open_client(conn, id, "clients_id").await?;
        }
        Ok(None)
    }
    fn propose(
        &self,
        _: Option<&Subscription>,
        now: Timestamp,
    ) -> Result<Proposal<Subscription>, AppError> {
        Ok(Proposal::Change(pending(&self.input, now)?))
    }
    async fn check(
        &self,
        conn: &mut Conn,
        _: Option<&Subscription>,
        p: &Subscription,
    ) -> Result<(), AppError> {
        lock_other_client(conn, self.input.clients_id, p.clients_id).await?;
        let package = packages::get_locked(conn, p.packages_id, true)
            .await?
            .ok_or_else(|| {
                AppError::field(
                    "packages_id",
                    format!("package {} does not exist", p.packages_id),
                )
            })?;
        if package.status == PackageStatus::Archived {
            return Err(AppError::field("packages_id", "package is archived"));
        }
        same_currency(&package, &lock_client(conn, p.clients_id).await?)
    }
    async fn write(
        &self,
        conn: &mut Conn,
        _: Option<&Subscription>,
        mut p: Subscription,
        now: Timestamp,
        effects: &mut Effects,
    ) -> Result<Subscription, AppError> {
        p.id = store::insert(conn, &p).await?;
        if self.activate_now && judged_as(&p, &self.input, now) {
            activate_new(conn, &p, now, effects).await?;
        }
        // The assign's event shows the subscription as assigned; the activation's follows.
        Ok(p)
    }
    fn writable(&self) -> &'static [&'static str] {
        &["clients_id", "packages_id", "start_dt"]
    }
    fn object_id(&self, s: &Subscription) -> i64 {
        s.id
    }
    fn ordering_key(&self, _: Option<&Subscription>, s: &Subscription) -> String {
        client_key(s.clients_id)
    }
    fn began(&self) -> Option<Timestamp> {
        self.began
    }
}

/// The subscription `i` assigns at `now`, pending: what the assign writes, and what
/// the activation's before handlers are asked about ahead of it.
fn pending(i: &AssignInput, now: Timestamp) -> Result<Subscription, AppError> {
    only_fields(&i.rest, || {
        Ok(Subscription {
            id: 0,
            clients_id: required(i.clients_id, "clients_id")?,
            packages_id: required(i.packages_id, "packages_id")?,
            status: SubscriptionStatus::Pending,
            start_dt: i.start_dt.unwrap_or(now),
            period_start: None,
            period_end: None,
            created_at: now,
            updated_at: now,
        })
    })
}

/// Activates `pending`, just assigned in this transaction, as its activation would:
/// its `clients.subscriptions.activate` event, then its fee's events.
async fn activate_new(
    conn: &mut Conn,
    pending: &Subscription,
    now: Timestamp,
    effects: &mut Effects,
) -> Result<(), AppError> {
    let package = packages::get(conn, pending.packages_id)
        .await?
        .ok_or_else(|| AppError::Internal(format!("package {} missing", pending.packages_id)))?;
    let activation = ChangeSubscription::with_package(pending.id, package);
    let Proposal::Change(next) = activation.propose(Some(pending), now)? else {
        return Ok(());
    };
    let mut fee = Effects::default();
    let active = activation
        .write(conn, Some(pending), next, now, &mut fee)
        .await?;
    let data = to_json(&active)?;
    effects.push(NewEvent {
        events_id: activation.event(),
        object_id: Some(active.id),
        ordering_key: client_key(active.clients_id),
        previous: previous_of(&to_json(pending)?, &data),
        data,
    });
    effects.append(fee);
    Ok(())
}

/// A package's fee is charged to the client as it is, unconverted: only a client billed
/// in its currency may have it.
fn same_currency(package: &Package, client: &Client) -> Result<(), AppError> {
    if package.currency == client.currency {
        return Ok(());
    }
    Err(AppError::field(
        "packages_id",
        format!(
            "package {}'s fee is in {}; client {} is billed in {}",
            package.id, package.currency, client.id, client.currency
        ),
    ))
}

/// `POST /subscriptions`: assigns, and activates at once when the start is not in the
/// future — as one change: the activation's before handlers are asked first, about the
/// subscription as it would be (no id yet, like a create's), and if they refuse nothing
/// is written. (Two actions, a refused activation left an assigned subscription behind
/// a 422, its `assign` event sent, and the scheduler activated and charged it later.)
/// Returns the subscription as it is after both.
pub async fn assign(pipeline: &Pipeline, input: AssignInput) -> Result<Subscription, AppError> {
    let now = Timestamp::now();
    let activate_now = input.start_dt.is_none_or(|t| t <= now);
    if activate_now {
        ask_activation_ahead(pipeline, &input, now).await?;
    }
    let assigned = pipeline
        .run(AssignSubscription {
            input,
            activate_now,
            began: Some(now),
        })
        .await?;
    if !activate_now {
        return Ok(assigned);
    }
    let mut conn = pipeline.db().read.acquire().await?;
    store::get(&mut conn, assigned.id)
        .await?
        .ok_or_else(|| AppError::not_found("subscription", assigned.id))
}

/// The activation's before handlers asked about the subscription `input` would assign,
/// activated; their refusal is the request's. Nothing to ask about when the input is
/// not valid: the assign refuses it.
async fn ask_activation_ahead(
    pipeline: &Pipeline,
    input: &AssignInput,
    now: Timestamp,
) -> Result<(), AppError> {
    let handlers = pipeline
        .before
        .handlers_for(SubscriptionAction::Activate.event())
        .await?;
    let (Some(clients_id), Some(packages_id)) = (input.clients_id, input.packages_id) else {
        return Ok(());
    };
    if handlers.is_empty() {
        return Ok(());
    }
    let (package, client) = {
        let mut conn = pipeline.db().read.acquire().await?;
        let package = packages::get(&mut conn, packages_id).await?;
        (package, clients::get(&mut conn, clients_id, false).await?)
    };
    let (Some(package), Some(client)) = (package, client) else {
        return Ok(());
    };
    // Nor when the assign refuses it for what it is: no handler is asked about it.
    if client.status == ClientStatus::Archived || same_currency(&package, &client).is_err() {
        return Ok(());
    }
    let pending = pending(input, now)?;
    let activation = ChangeSubscription::with_package(0, package);
    let Proposal::Change(active) = activation.propose(Some(&pending), now)? else {
        return Ok(());
    };
    pipeline
        .judge(&activation, &handlers, Some(&pending), active, now)
        .await?;
    Ok(())
}

/// A status change of a subscription.
pub struct ChangeSubscription {
    pub id: i64,
    pub action: SubscriptionAction,
    /// Set by the scheduler: act only if still due (another scheduler may have done it),
    /// otherwise do nothing.
    pub only_if_due: bool,
    package: Mutex<Option<Package>>,
    /// The subscription's client is archived (set by `load`): it takes no new charge.
    client_archived: AtomicBool,
}

impl ChangeSubscription {
    /// A change requested through the API.
    pub fn new(id: i64, action: SubscriptionAction) -> Self {
        ChangeSubscription {
            id,
            action,
            only_if_due: false,
            package: Mutex::new(None),
            client_archived: AtomicBool::new(false),
        }
    }

    /// The activation of subscription `id` (0: not stored yet) of `package`, loaded.
    fn with_package(id: i64, package: Package) -> Self {
        ChangeSubscription {
            package: Mutex::new(Some(package)),
            ..Self::new(id, SubscriptionAction::Activate)
        }
    }

    /// A change the scheduler makes when a date has passed.
    pub fn scheduled(id: i64, action: SubscriptionAction) -> Self {
        ChangeSubscription {
            only_if_due: true,
            ..Self::new(id, action)
        }
    }

    fn package(&self) -> Result<Package, AppError> {
        self.package
            .lock()
            .expect("not poisoned: no panics while held")
            .clone()
            .ok_or_else(|| AppError::Internal("package not loaded".into()))
    }

    /// The change starts a new period, whose fee (not zero) is a charge, which an
    /// archived client does not take (SPEC §3). The client's status is `load`'s.
    fn charges_archived(&self, cur: &Subscription, next: &Subscription) -> Result<bool, AppError> {
        Ok(cur.period_start != next.period_start
            && self.client_archived.load(Ordering::Relaxed)
            && self.package()?.fee != Money::ZERO)
    }

    fn archived(&self, cur: &Subscription) -> AppError {
        AppError::Conflict(format!(
            "client {} is archived and accepts no new transactions: subscription {} cannot {} \
             (it would charge the package fee)",
            cur.clients_id,
            self.id,
            self.action.name()
        ))
    }

    fn is_due(&self, s: &Subscription, now: Timestamp) -> bool {
        match self.action {
            SubscriptionAction::Renew => s.period_end.is_some_and(|end| end <= now),
            SubscriptionAction::Activate => s.start_dt <= now,
            _ => true,
        }
    }
}

impl Action for ChangeSubscription {
    type Object = Subscription;
    fn event(&self) -> &'static str {
        self.action.event()
    }
    fn kind(&self) -> Kind {
        Kind::Update
    }
    async fn load(&self, conn: &mut Conn) -> Result<Option<Subscription>, AppError> {
        let s = store::get(conn, self.id)
            .await?
            .ok_or_else(|| AppError::not_found("subscription", self.id))?;
        let client = lock_client(conn, s.clients_id).await?;
        let archived = client.status == ClientStatus::Archived;
        self.client_archived.store(archived, Ordering::Relaxed);
        let package = packages::get(conn, s.packages_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("package {} missing", s.packages_id)))?;
        *self.package.lock().expect("not poisoned") = Some(package);
        Ok(store::get(conn, self.id).await?)
    }
    fn propose(
        &self,
        current: Option<&Subscription>,
        now: Timestamp,
    ) -> Result<Proposal<Subscription>, AppError> {
        let cur = current.ok_or_else(|| AppError::not_found("subscription", self.id))?;
        if self.only_if_due && (cur.status != expected_from(self.action) || !self.is_due(cur, now))
        {
            return Ok(Proposal::Unchanged);
        }
        let Some(status) = self.action.target(cur.status) else {
            return Err(AppError::InvalidTransition(format!(
                "subscription {} is {}; it cannot {}",
                self.id,
                cur.status.as_str(),
                self.action.name()
            )));
        };
        let period = self.package()?.period;
        let mut next = cur.clone();
        next.status = status;
        next.updated_at = now;
        let new_period_from = match self.action {
            SubscriptionAction::Activate if cur.status == SubscriptionStatus::Pending => {
                Some(cur.start_dt.min(now))
            }
            // Resuming inside a paid period costs nothing; after it a new one starts.
            SubscriptionAction::Activate => match cur.period_end {
                Some(end) if end > now => None,
                _ => Some(now),
            },
            SubscriptionAction::Renew => Some(cur.period_end.unwrap_or(now)),
            _ => None,
        };
        if let Some(start) = new_period_from {
            next.period_start = Some(start);
            next.period_end = Some(period.add_to(start));
        }
        if self.charges_archived(cur, &next)? {
            // The scheduler leaves it (its query skips archived clients; this is one
            // archived since).
            if self.only_if_due {
                return Ok(Proposal::Unchanged);
            }
            return Err(self.archived(cur));
        }
        Ok(Proposal::Change(next))
    }
    async fn check(
        &self,
        _: &mut Conn,
        current: Option<&Subscription>,
        p: &Subscription,
    ) -> Result<(), AppError> {
        // Again under the client's lock: with before handlers the proposal was made
        // before they were asked, and the client may have been archived meanwhile.
        match current {
            Some(cur) if self.charges_archived(cur, p)? => Err(self.archived(cur)),
            _ => Ok(()),
        }
    }
    async fn write(
        &self,
        conn: &mut Conn,
        current: Option<&Subscription>,
        p: Subscription,
        now: Timestamp,
        effects: &mut Effects,
    ) -> Result<Subscription, AppError> {
        store::update(conn, &p).await?;
        if current.is_some_and(|c| c.period_start != p.period_start) {
            let package = self.package()?;
            let notes = format!(
                "{} fee, subscription {}, period {} to {}",
                package.name,
                p.id,
                p.period_start.map(|t| t.to_string()).unwrap_or_default(),
                p.period_end.map(|t| t.to_string()).unwrap_or_default()
            );
            charge_fee(conn, p.clients_id, package.fee, notes, now, effects).await?;
        }
        Ok(p)
    }
    fn object_id(&self, s: &Subscription) -> i64 {
        s.id
    }
    fn ordering_key(&self, _: Option<&Subscription>, s: &Subscription) -> String {
        client_key(s.clients_id)
    }
}

/// The status a scheduled action expects: renewals of active, starts of pending ones.
fn expected_from(action: SubscriptionAction) -> SubscriptionStatus {
    match action {
        SubscriptionAction::Activate => SubscriptionStatus::Pending,
        _ => SubscriptionStatus::Active,
    }
}
