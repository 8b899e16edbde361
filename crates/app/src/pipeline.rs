//! The action pipeline: the one way anything changes.
//!
//! An action is declared once (its event, how it loads and locks, how it proposes the
//! new object, its checks and its write); [`Pipeline::run`] runs every action the same
//! way: load → propose → check → (before chain) → write → events, all in one database
//! transaction, so an acknowledged change always has its events and a refused one has
//! none.

use std::future::Future;
use std::sync::Arc;

use billhook_domain::payload::previous_of;
use billhook_domain::Timestamp;
use billhook_provisioning::before::{BeforeChain, Refusal};
use billhook_store::{events, outbox, Conn, Db, StoreError, Tx};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::AppError;

/// What an action does to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Update,
    Delete,
}

/// The outcome of `propose`: a new object, or nothing to do (no write, no event).
pub enum Proposal<T> {
    Change(T),
    Unchanged,
}

/// An event to insert with the action's transaction.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub events_id: &'static str,
    pub object_id: Option<i64>,
    pub ordering_key: String,
    pub data: Value,
    pub previous: Map<String, Value>,
}

/// Events that an action's write raises besides its own (a fee's charge, a balance that
/// crossed zero); they are stored after the action's own event, in push order.
#[derive(Debug, Default)]
pub struct Effects {
    events: Vec<NewEvent>,
}

impl Effects {
    /// Adds a derived event.
    pub fn push(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// Adds every event of `other`, in order.
    pub fn append(&mut self, other: Effects) {
        self.events.extend(other.events);
    }
}

/// One kind of change, declared once.
pub trait Action: Send + Sync {
    /// The object the action touches, as handlers receive it in `data`.
    type Object: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync;

    /// The event the action raises.
    fn event(&self) -> &'static str;

    /// Whether it creates, updates or deletes.
    fn kind(&self) -> Kind;

    /// Locks the rows that order this action (the client's, on PostgreSQL) and loads the
    /// current object; `None` for a create. Runs inside the write transaction.
    fn load(
        &self,
        conn: &mut Conn,
    ) -> impl Future<Output = Result<Option<Self::Object>, AppError>> + Send;

    /// Builds the proposed object from the current one and the request; refuses a
    /// transition the state does not allow.
    fn propose(
        &self,
        current: Option<&Self::Object>,
        now: Timestamp,
    ) -> Result<Proposal<Self::Object>, AppError>;

    /// Validates the proposal, including rules that need the database (references,
    /// uniqueness, an archived client).
    fn check(
        &self,
        conn: &mut Conn,
        current: Option<&Self::Object>,
        proposed: &Self::Object,
    ) -> impl Future<Output = Result<(), AppError>> + Send;

    /// Writes the proposal and returns the stored object (with its id); pushes derived
    /// events into `effects`.
    fn write(
        &self,
        conn: &mut Conn,
        current: Option<&Self::Object>,
        proposed: Self::Object,
        now: Timestamp,
        effects: &mut Effects,
    ) -> impl Future<Output = Result<Self::Object, AppError>> + Send;

    /// The fields of the object the request could set: all a before handler may change.
    fn writable(&self) -> &'static [&'static str] {
        &[]
    }

    /// The rules of the object that need no database, applied to what a before handler
    /// returns.
    fn validate(
        &self,
        _current: Option<&Self::Object>,
        _object: &Self::Object,
    ) -> Result<(), AppError> {
        Ok(())
    }

    /// The id of the object, for `object_id`.
    fn object_id(&self, object: &Self::Object) -> i64;

    /// The ordering key: the client the object belongs to after the action (or before,
    /// when the action detached it), else the object itself.
    fn ordering_key(&self, current: Option<&Self::Object>, stored: &Self::Object) -> String;

    /// When the action began, if before the pipeline runs it (the events' `dt`, and the
    /// `now` it is proposed at): an assign whose activation's before handlers were asked
    /// ahead, about the payload of that time. `None`: when the pipeline takes it up.
    fn began(&self) -> Option<Timestamp> {
        None
    }
}

/// Runs actions. Cheap to clone: one `Arc`, because every action sent to the writer
/// thread takes a clone (its parts hold strings and a dozen `Arc`s of their own).
#[derive(Clone)]
pub struct Pipeline(Arc<Parts>);

/// What [`Pipeline`] holds.
pub struct Parts {
    db: Db,
    wake: Arc<Notify>,
    pub(crate) before: BeforeChain,
    object_turns: crate::turns::Turns,
}

impl std::ops::Deref for Pipeline {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl Pipeline {
    /// A pipeline writing to `db`.
    pub fn new(db: Db, before: BeforeChain) -> Pipeline {
        Pipeline(Arc::new(Parts {
            db,
            wake: Arc::new(Notify::new()),
            before,
            object_turns: crate::turns::Turns::default(),
        }))
    }

    /// Notified after every commit that may have queued deliveries.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The database the pipeline writes to.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Runs `action` in its own transaction and returns the object after it.
    pub async fn run<A: Action + 'static>(&self, action: A) -> Result<A::Object, AppError> {
        let handlers = self.before.handlers_for(action.event()).await?;
        if !handlers.is_empty() {
            // Boxed: its handler calls make its future large, and inline it made the
            // future of every action that large, copied as axum moves it around.
            return Box::pin(self.run_with_before(&action, &handlers)).await;
        }
        // The transaction runs where the database's writes run fastest (SQLite: its
        // writer thread), and to its end even if the request is dropped meanwhile.
        // Boxed: its state is large, and tokio and axum move futures by copying them
        // whole (into the task, the output out of it): a pointer instead of kilobytes.
        let pipeline = self.clone();
        let work = Box::pin(async move { pipeline.run_again_if_undone(&action).await });
        self.db.on_writer(work).await?
    }

    /// Runs `action` in a transaction that another's failure may undo (it needs no
    /// savepoint: see `Db::begin_attempt`), and again if it was; the last try is one
    /// that nothing else can undo.
    async fn run_again_if_undone<A: Action>(&self, action: &A) -> Result<A::Object, AppError> {
        let mut attempt = 0;
        loop {
            let mut tx: Tx = self.db.begin_attempt(attempt).await?;
            let result = self.run_in(&mut tx, action).await?;
            match self.try_commit(tx).await {
                Err(StoreError::Undone) => attempt += 1,
                committed => return committed.map(|()| result).map_err(AppError::from),
            }
        }
    }

    /// Runs `action` (without before handlers) inside `tx`.
    async fn run_in<A: Action>(&self, tx: &mut Tx, action: &A) -> Result<A::Object, AppError> {
        let now = action.began().unwrap_or_else(Timestamp::now);
        let (current, proposed) = checked_proposal(tx, action, now).await?;
        let Some(proposed) = proposed else {
            return unchanged(current);
        };
        self.commit_change(tx, action, current, proposed, now).await
    }

    /// Runs an action that has before handlers: the chain is called outside any
    /// transaction (it may take seconds); then, in the write transaction, the object is
    /// loaded again and, if someone changed it meanwhile, the whole run starts over so
    /// that handlers always judged what is written.
    async fn run_with_before<A: Action>(
        &self,
        action: &A,
        handlers: &[billhook_domain::entities::Handler],
    ) -> Result<A::Object, AppError> {
        // Requests on one object wait for each other here instead of racing through
        // their before chains and failing the re-check (other processes still may).
        let _turn = match action.kind() {
            Kind::Create => None,
            _ => {
                let mut conn = self.db.read.acquire().await?;
                let key = action.load(&mut conn).await?.map(|c| {
                    format!(
                        "{}#{}",
                        std::any::type_name::<A::Object>(),
                        action.object_id(&c)
                    )
                });
                // Never wait for a turn while holding a connection others need.
                drop(conn);
                match key {
                    Some(key) => Some(self.object_turns.lock(key).await),
                    None => None,
                }
            }
        };
        for _ in 0..5 {
            let now = action.began().unwrap_or_else(Timestamp::now);
            let (current, proposed) = {
                let mut conn = self.db.read.acquire().await?;
                checked_proposal(&mut conn, action, now).await?
            };
            let Some(proposed) = proposed else {
                return unchanged(current);
            };
            let current_json = match &current {
                Some(c) => to_json(c)?,
                None => Value::Null,
            };
            let judged = self
                .judge(action, handlers, current.as_ref(), proposed, now)
                .await?;

            let mut tx: Tx = self.db.begin().await?;
            let fresh = action.load(&mut tx).await?;
            let fresh_json = match &fresh {
                Some(c) => to_json(c)?,
                None => Value::Null,
            };
            if fresh_json != current_json {
                tx.rollback().await?;
                continue;
            }
            let object = crate::judged::settle(action, &mut tx, fresh.as_ref(), judged).await?;
            action.check(&mut tx, fresh.as_ref(), &object).await?;
            // A handler may undo the change: then nothing changed, as for any update.
            if action.kind() == Kind::Update {
                if let Some(old) = &fresh {
                    if previous_of(&to_json(old)?, &to_json(&object)?).is_empty() {
                        tx.rollback().await?;
                        return Ok(old.clone());
                    }
                }
            }
            let stored = self
                .commit_change(&mut tx, action, fresh, object, now)
                .await?;
            self.commit(tx).await?;
            return Ok(stored);
        }
        Err(AppError::Conflict(
            "the object kept changing while before handlers ran; try again".into(),
        ))
    }

    /// Writes a checked proposal and its events.
    pub(crate) async fn commit_change<A: Action>(
        &self,
        tx: &mut Tx,
        action: &A,
        current: Option<A::Object>,
        proposed: A::Object,
        now: Timestamp,
    ) -> Result<A::Object, AppError> {
        let mut effects = Effects::default();
        let stored = action
            .write(tx, current.as_ref(), proposed, now, &mut effects)
            .await?;

        let data = to_json(&stored)?;
        let previous = match (action.kind(), &current) {
            (Kind::Update, Some(old)) => previous_of(&to_json(old)?, &data),
            _ => Map::new(),
        };
        let own = NewEvent {
            events_id: action.event(),
            object_id: Some(action.object_id(&stored)),
            ordering_key: action.ordering_key(current.as_ref(), &stored),
            data,
            previous,
        };
        let events: Vec<events::Event> = std::iter::once(own)
            .chain(effects.events)
            .map(|e| stored_event(e, now))
            .collect();
        self.append(tx, &events, now).await?;
        Ok(stored)
    }

    /// The outbox write, and the wake-up of other processes when it commits.
    async fn append(
        &self,
        tx: &mut Tx,
        events: &[events::Event],
        now: Timestamp,
    ) -> Result<(), AppError> {
        outbox::append(tx, self.db.dialect, events, now).await?;
        Ok(())
    }
}

impl Pipeline {
    /// Stores an event that no action raises (an import's end, a message of the email
    /// rates manager) inside the caller's transaction; call [`Pipeline::committed`]
    /// after the commit.
    pub async fn raise(&self, tx: &mut Tx, event: NewEvent) -> Result<(), AppError> {
        let now = Timestamp::now();
        self.append(tx, &[stored_event(event, now)], now).await
    }

    /// Commits an action's transaction and wakes the delivery engines if it queued
    /// deliveries that wait for a claim (the ones handed over need none: see
    /// `billhook_store::handoff`).
    async fn commit(&self, tx: Tx) -> Result<(), AppError> {
        Ok(self.try_commit(tx).await?)
    }

    /// [`Pipeline::commit`] with the store's error, which may be `Undone`.
    async fn try_commit(&self, tx: Tx) -> Result<(), StoreError> {
        let to_claim = tx.has_deliveries_to_claim();
        tx.commit().await?;
        if to_claim {
            self.committed();
        }
        Ok(())
    }

    /// Wakes the delivery engines, this process's and the others', after a transaction
    /// that queued deliveries committed.
    pub fn committed(&self) {
        self.wake.notify_one();
        self.db.announce_deliveries();
    }
}

/// Loads the current object (taking its locks) and builds and checks the proposal;
/// `None` when the action would change nothing.
pub(crate) async fn checked_proposal<A: Action>(
    conn: &mut Conn,
    action: &A,
    now: Timestamp,
) -> Result<(Option<A::Object>, Option<A::Object>), AppError> {
    let current = action.load(conn).await?;
    let proposed = match action.propose(current.as_ref(), now)? {
        Proposal::Change(p) => p,
        Proposal::Unchanged => return Ok((current, None)),
    };
    action.check(conn, current.as_ref(), &proposed).await?;
    Ok((current, Some(proposed)))
}

/// The answer to an action that changes nothing: the object as it is.
pub(crate) fn unchanged<O>(current: Option<O>) -> Result<O, AppError> {
    current.ok_or_else(|| AppError::Internal("unchanged create".into()))
}

/// A refusal of the before chain as the API reports it.
pub(crate) fn refused(r: Refusal) -> AppError {
    match r {
        Refusal::Forbidden {
            message,
            handlers_id,
            handler,
        } => AppError::Forbidden {
            message,
            handlers_id,
            handler,
        },
        Refusal::Failed {
            message,
            handlers_id,
            handler,
        } => AppError::HandlerFailed {
            message,
            handlers_id,
            handler,
        },
    }
}

/// One line for an error, with the fields of a validation error.
pub(crate) fn describe(e: &AppError) -> String {
    match e {
        AppError::Validation(fields) => fields
            .0
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// Serialises an object for a payload.
pub fn to_json<T: Serialize>(value: &T) -> Result<Value, AppError> {
    serde_json::to_value(value).map_err(|e| AppError::Internal(format!("serialise: {e}")))
}

/// The outbox row of a new event.
fn stored_event(e: NewEvent, now: Timestamp) -> events::Event {
    events::Event {
        seq: 0,
        uid: uuid::Uuid::now_v7().to_string(),
        events_id: e.events_id.to_string(),
        object_id: e.object_id,
        ordering_key: e.ordering_key,
        dt: now,
        data: e.data,
        previous: Value::Object(e.previous),
    }
}

/// The ordering key of a client's objects.
pub fn client_key(clients_id: i64) -> String {
    format!("clients:{clients_id}")
}
