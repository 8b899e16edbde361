//! Charges and payments: create, update, delete; each moves the client's balance.

use billhook_domain::entities::{Transaction, TransactionKind};
use billhook_domain::{Money, Timestamp};
use billhook_store::{transactions as store, Conn};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{lock_client, lock_open_client, lock_other_client};
use crate::balance::apply_delta;
use crate::input::{nullable, only_fields, only_settable, required};
use crate::pipeline::{client_key, to_json, Action, Effects, Kind, NewEvent, Proposal};
use crate::AppError;

/// Body of `POST /charges` and `POST /payments`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct TransactionInput {
    pub clients_id: Option<i64>,
    pub amount: Option<Money>,
    pub dt: Option<Timestamp>,
    pub notes: Option<String>,
    /// The rest of the body: refused, naming each field, unless it is one of the
    /// object's (see `only_fields`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// Body of `PATCH /charges/{id}` and `PATCH /payments/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct TransactionPatch {
    pub amount: Option<Money>,
    pub dt: Option<Timestamp>,
    #[serde(default, deserialize_with = "nullable")]
    pub notes: Option<Option<String>>,
    /// The rest of the body: refused unless sent back as read (see `only_settable`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub rest: Map<String, Value>,
}

impl crate::input::Patch for TransactionPatch {
    const NULLABLE: &'static [&'static str] = &["notes"];
    fn rest(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.rest
    }
}

fn event(kind: TransactionKind, verb: &str) -> &'static str {
    match (kind, verb) {
        (TransactionKind::Charge, "create") => "accounting.charges.create",
        (TransactionKind::Charge, "update") => "accounting.charges.update",
        (TransactionKind::Charge, _) => "accounting.charges.delete",
        (TransactionKind::Payment, "create") => "accounting.payments.create",
        (TransactionKind::Payment, "update") => "accounting.payments.update",
        (TransactionKind::Payment, _) => "accounting.payments.delete",
    }
}

/// Stores a new transaction and moves the balance (pushing a balance event if it
/// crosses zero). Shared by the create action and by subscription fees.
async fn insert(
    conn: &mut Conn,
    kind: TransactionKind,
    mut t: Transaction,
    now: Timestamp,
    effects: &mut Effects,
) -> Result<Transaction, AppError> {
    t.id = store::insert(conn, kind, &t).await?;
    apply_delta(
        conn,
        t.clients_id,
        kind.balance_delta(t.amount),
        now,
        effects,
    )
    .await?;
    Ok(t)
}

/// Charges a fee inside another action (a subscription period): a real charge with its
/// own `accounting.charges.create` event, pushed before any balance event it causes.
pub(crate) async fn charge_fee(
    conn: &mut Conn,
    clients_id: i64,
    amount: Money,
    notes: String,
    now: Timestamp,
    effects: &mut Effects,
) -> Result<(), AppError> {
    if amount == Money::ZERO {
        return Ok(());
    }
    let charge = Transaction {
        id: 0,
        clients_id,
        amount,
        dt: now,
        notes: Some(notes),
        created_at: now,
        updated_at: now,
    };
    let mut balance_events = Effects::default();
    let charge = insert(
        conn,
        TransactionKind::Charge,
        charge,
        now,
        &mut balance_events,
    )
    .await?;
    effects.push(NewEvent {
        events_id: "accounting.charges.create",
        object_id: Some(charge.id),
        ordering_key: client_key(clients_id),
        data: to_json(&charge)?,
        previous: Map::new(),
    });
    effects.append(balance_events);
    Ok(())
}

/// `accounting.charges.create` / `accounting.payments.create`.
pub struct CreateTransaction {
    pub kind: TransactionKind,
    pub input: TransactionInput,
}

impl Action for CreateTransaction {
    type Object = Transaction;
    fn event(&self) -> &'static str {
        event(self.kind, "create")
    }
    fn kind(&self) -> Kind {
        Kind::Create
    }
    async fn load(&self, conn: &mut Conn) -> Result<Option<Transaction>, AppError> {
        if let Some(id) = self.input.clients_id {
            lock_open_client(conn, id, "clients_id").await?;
        }
        Ok(None)
    }
    fn propose(
        &self,
        _: Option<&Transaction>,
        now: Timestamp,
    ) -> Result<Proposal<Transaction>, AppError> {
        let i = &self.input;
        let made = only_fields(&i.rest, || {
            Ok(Transaction {
                id: 0,
                clients_id: required(i.clients_id, "clients_id")?,
                amount: required(i.amount, "amount")?,
                dt: i.dt.unwrap_or(now),
                notes: i.notes.clone(),
                created_at: now,
                updated_at: now,
            })
        })?;
        Ok(Proposal::Change(made))
    }
    async fn check(
        &self,
        conn: &mut Conn,
        _: Option<&Transaction>,
        p: &Transaction,
    ) -> Result<(), AppError> {
        lock_other_client(conn, self.input.clients_id, p.clients_id).await?;
        Ok(p.validate()?)
    }
    async fn write(
        &self,
        conn: &mut Conn,
        _: Option<&Transaction>,
        p: Transaction,
        now: Timestamp,
        effects: &mut Effects,
    ) -> Result<Transaction, AppError> {
        insert(conn, self.kind, p, now, effects).await
    }
    fn writable(&self) -> &'static [&'static str] {
        Transaction::WRITABLE
    }
    fn validate(&self, _current: Option<&Transaction>, t: &Transaction) -> Result<(), AppError> {
        Ok(t.validate()?)
    }
    fn object_id(&self, t: &Transaction) -> i64 {
        t.id
    }
    fn ordering_key(&self, _: Option<&Transaction>, t: &Transaction) -> String {
        client_key(t.clients_id)
    }
}

/// `…update` (with a patch) or `…delete` (without) of a charge or payment.
pub struct ChangeTransaction {
    pub kind: TransactionKind,
    pub id: i64,
    pub patch: Option<TransactionPatch>,
}

impl Action for ChangeTransaction {
    type Object = Transaction;
    fn event(&self) -> &'static str {
        event(
            self.kind,
            if self.patch.is_some() {
                "update"
            } else {
                "delete"
            },
        )
    }
    fn kind(&self) -> Kind {
        if self.patch.is_some() {
            Kind::Update
        } else {
            Kind::Delete
        }
    }
    async fn load(&self, conn: &mut Conn) -> Result<Option<Transaction>, AppError> {
        let what = self.kind.as_str();
        // The client's id never changes, so reading it before taking the lock is safe.
        let t = store::get(conn, self.kind, self.id)
            .await?
            .ok_or_else(|| AppError::not_found(what, self.id))?;
        lock_client(conn, t.clients_id).await?;
        Ok(store::get(conn, self.kind, self.id).await?)
    }
    fn propose(
        &self,
        current: Option<&Transaction>,
        now: Timestamp,
    ) -> Result<Proposal<Transaction>, AppError> {
        let current = current.ok_or_else(|| AppError::not_found(self.kind.as_str(), self.id))?;
        let mut next = current.clone();
        let Some(patch) = &self.patch else {
            return Ok(Proposal::Change(next));
        };
        only_settable(&patch.rest, &to_json(current)?, |field| {
            (field == "clients_id")
                .then_some("cannot change: delete it and add it to the other client")
        })?;
        if let Some(v) = patch.amount {
            next.amount = v;
        }
        if let Some(v) = patch.dt {
            next.dt = v;
        }
        if let Some(v) = &patch.notes {
            next.notes = v.clone();
        }
        if &next == current {
            return Ok(Proposal::Unchanged);
        }
        next.updated_at = now;
        Ok(Proposal::Change(next))
    }
    async fn check(
        &self,
        _: &mut Conn,
        _: Option<&Transaction>,
        p: &Transaction,
    ) -> Result<(), AppError> {
        Ok(p.validate()?)
    }
    async fn write(
        &self,
        conn: &mut Conn,
        current: Option<&Transaction>,
        p: Transaction,
        now: Timestamp,
        effects: &mut Effects,
    ) -> Result<Transaction, AppError> {
        let old = current.map_or(Money::ZERO, |c| self.kind.balance_delta(c.amount));
        let new = if self.patch.is_some() {
            store::update(conn, &p).await?;
            self.kind.balance_delta(p.amount)
        } else {
            store::delete(conn, p.id).await?;
            Money::ZERO
        };
        let delta = Money::from_micros(new.micros() - old.micros());
        apply_delta(conn, p.clients_id, delta, now, effects).await?;
        Ok(p)
    }
    fn writable(&self) -> &'static [&'static str] {
        match self.patch {
            Some(_) => &Transaction::WRITABLE[1..],
            None => &[],
        }
    }
    fn validate(&self, _current: Option<&Transaction>, t: &Transaction) -> Result<(), AppError> {
        Ok(t.validate()?)
    }
    fn object_id(&self, t: &Transaction) -> i64 {
        t.id
    }
    fn ordering_key(&self, _: Option<&Transaction>, t: &Transaction) -> String {
        client_key(t.clients_id)
    }
}
