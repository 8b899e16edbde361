//! Reads: lists and single objects for the API, outside any write transaction.

use billhook_domain::catalogue::Stage;
use billhook_domain::entities::{
    Account, Client, Did, Package, Subscription, Transaction, TransactionKind,
};
use billhook_domain::payload::{payload, EventHeader};
use billhook_store::{accounts, clients, dids, events, packages, subscriptions, transactions, Db};
use serde_json::Value;

pub use billhook_store::clients::ClientQuery;
pub use billhook_store::dids::DidQuery;
pub use billhook_store::events::EventQuery;
pub use billhook_store::Page;

use crate::AppError;

/// A page of results: `{items, total}` in the API.
#[derive(Debug, serde::Serialize)]
pub struct List<T> {
    pub items: Vec<T>,
    pub total: i64,
}

impl<T> From<(Vec<T>, i64)> for List<T> {
    fn from((items, total): (Vec<T>, i64)) -> Self {
        List { items, total }
    }
}

/// Read access to everything stored.
#[derive(Clone)]
pub struct Queries {
    db: Db,
}

macro_rules! conn {
    ($self:ident) => {
        &mut $self.db.read.acquire().await?
    };
}

fn found<T>(what: &str, id: impl std::fmt::Display, v: Option<T>) -> Result<T, AppError> {
    v.ok_or_else(|| AppError::not_found(what, id))
}

impl Queries {
    /// Reads from `db`.
    pub fn new(db: Db) -> Queries {
        Queries { db }
    }

    pub async fn clients(&self, q: &ClientQuery, page: Page) -> Result<List<Client>, AppError> {
        Ok(clients::list(conn!(self), q, page).await?.into())
    }
    pub async fn client(&self, id: i64) -> Result<Client, AppError> {
        found("client", id, clients::get(conn!(self), id, false).await?)
    }
    pub async fn accounts(
        &self,
        clients_id: Option<i64>,
        page: Page,
    ) -> Result<List<Account>, AppError> {
        Ok(accounts::list(conn!(self), clients_id, page).await?.into())
    }
    pub async fn account(&self, id: i64) -> Result<Account, AppError> {
        found("account", id, accounts::get(conn!(self), id).await?)
    }
    pub async fn packages(
        &self,
        status: Option<&str>,
        page: Page,
    ) -> Result<List<Package>, AppError> {
        Ok(packages::list(conn!(self), status, page).await?.into())
    }
    pub async fn package(&self, id: i64) -> Result<Package, AppError> {
        found("package", id, packages::get(conn!(self), id).await?)
    }
    pub async fn subscriptions(
        &self,
        clients_id: Option<i64>,
        status: Option<&str>,
        page: Page,
    ) -> Result<List<Subscription>, AppError> {
        Ok(subscriptions::list(conn!(self), clients_id, status, page)
            .await?
            .into())
    }
    pub async fn subscription(&self, id: i64) -> Result<Subscription, AppError> {
        found(
            "subscription",
            id,
            subscriptions::get(conn!(self), id).await?,
        )
    }
    pub async fn dids(&self, q: &DidQuery, page: Page) -> Result<List<Did>, AppError> {
        Ok(dids::list(conn!(self), q, page).await?.into())
    }
    pub async fn did(&self, id: i64) -> Result<Did, AppError> {
        found("DID", id, dids::get(conn!(self), id, false).await?)
    }
    pub async fn transactions(
        &self,
        kind: TransactionKind,
        clients_id: Option<i64>,
        page: Page,
    ) -> Result<List<Transaction>, AppError> {
        Ok(transactions::list(conn!(self), kind, clients_id, page)
            .await?
            .into())
    }
    pub async fn transaction(
        &self,
        kind: TransactionKind,
        id: i64,
    ) -> Result<Transaction, AppError> {
        found(
            kind.as_str(),
            id,
            transactions::get(conn!(self), kind, id).await?,
        )
    }

    /// Events as handlers receive them in the after stage.
    pub async fn events(&self, q: &EventQuery, page: Page) -> Result<List<Value>, AppError> {
        let (items, total) = events::list(conn!(self), q, page).await?;
        Ok(List {
            items: items.iter().map(event_payload).collect(),
            total,
        })
    }

    /// One event's payload.
    pub async fn event(&self, uid: &str) -> Result<Value, AppError> {
        let e = found("event", uid, events::get(conn!(self), uid).await?)?;
        Ok(event_payload(&e))
    }
}

/// The after-stage payload of a stored event.
pub fn event_payload(e: &events::Event) -> Value {
    let header = EventHeader {
        dt: e.dt,
        events_id: &e.events_id,
        object_id: e.object_id,
        uid: &e.uid,
        stage: Stage::After,
    };
    payload(&header, &e.data, &e.previous)
}
