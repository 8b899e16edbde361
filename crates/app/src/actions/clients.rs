//! Client actions: create, update, custom fields, archive, delete.

use billhook_domain::entities::{Client, ClientStatus};
use billhook_domain::{Money, Timestamp};
use billhook_store::{clients as store, Conn};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::lock_client;
use crate::input::{nullable, only_fields, only_settable, required};
use crate::pipeline::{client_key, to_json, Action, Kind, Proposal};
use crate::AppError;

/// Body of `POST /clients`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ClientInput {
    pub name: Option<String>,
    pub status: Option<ClientStatus>,
    pub currency: Option<String>,
    pub credit: Option<Money>,
    #[serde(default, deserialize_with = "nullable")]
    pub email: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub custom_fields: Option<Map<String, Value>>,
    /// The rest of the body: refused, naming each field, unless it is one of the
    /// object's (see `only_fields`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub rest: Map<String, Value>,
}

fn check_settable_status(status: Option<ClientStatus>) -> Result<(), AppError> {
    if status == Some(ClientStatus::Archived) {
        return Err(AppError::field(
            "status",
            "must be active or blocked; archive a client with POST /clients/{id}/archive",
        ));
    }
    Ok(())
}

/// `clients.create`.
pub struct CreateClient(pub ClientInput);

impl Action for CreateClient {
    type Object = Client;
    fn event(&self) -> &'static str {
        "clients.create"
    }
    fn kind(&self) -> Kind {
        Kind::Create
    }
    async fn load(&self, _: &mut Conn) -> Result<Option<Client>, AppError> {
        Ok(None)
    }
    fn propose(&self, _: Option<&Client>, now: Timestamp) -> Result<Proposal<Client>, AppError> {
        let i = &self.0;
        let mut custom_fields = i.custom_fields.clone().unwrap_or_default();
        custom_fields.retain(|_, v| !v.is_null());
        let made = only_fields(&i.rest, || {
            check_settable_status(i.status)?;
            Ok(Client {
                id: 0,
                name: required(i.name.clone(), "name")?,
                status: i.status.unwrap_or(ClientStatus::Active),
                currency: i.currency.clone().unwrap_or_else(|| "USD".into()),
                balance: Money::ZERO,
                credit: i.credit.unwrap_or(Money::ZERO),
                email: i.email.clone().flatten(),
                tags: i.tags.clone().unwrap_or_default(),
                custom_fields,
                created_at: now,
                updated_at: now,
            })
        })?;
        Ok(Proposal::Change(made))
    }
    async fn check(&self, _: &mut Conn, _: Option<&Client>, p: &Client) -> Result<(), AppError> {
        Ok(p.validate()?)
    }
    async fn write(
        &self,
        conn: &mut Conn,
        _: Option<&Client>,
        mut p: Client,
        _: Timestamp,
        _: &mut crate::pipeline::Effects,
    ) -> Result<Client, AppError> {
        p.id = store::insert(conn, &p).await?;
        Ok(p)
    }
    fn writable(&self) -> &'static [&'static str] {
        Client::WRITABLE
    }
    fn validate(&self, current: Option<&Client>, c: &Client) -> Result<(), AppError> {
        // Archiving has its own request: no create or update may archive.
        let was_archived = current.is_some_and(|c| c.status == ClientStatus::Archived);
        if c.status == ClientStatus::Archived && !was_archived {
            check_settable_status(Some(c.status))?;
        }
        Ok(c.validate()?)
    }
    fn object_id(&self, c: &Client) -> i64 {
        c.id
    }
    fn ordering_key(&self, _: Option<&Client>, c: &Client) -> String {
        client_key(c.id)
    }
}

/// Body of `PATCH /clients/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ClientPatch {
    pub name: Option<String>,
    pub status: Option<ClientStatus>,
    pub credit: Option<Money>,
    #[serde(default, deserialize_with = "nullable")]
    pub email: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub currency: Option<String>,
    /// The rest of the body: refused unless sent back as read (see `only_settable`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub rest: Map<String, Value>,
}

impl crate::input::Patch for ClientPatch {
    const NULLABLE: &'static [&'static str] = &["email"];
    fn rest(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.rest
    }
}

/// What kind of change an existing-client action makes.
pub enum ClientChange {
    /// `clients.update`: fields of the body.
    Patch(ClientPatch),
    /// `clients.custom_fields.update`: keys to set, `null` removes.
    CustomFields(Map<String, Value>),
    /// `clients.archive`.
    Archive,
    /// `clients.delete`.
    Delete,
}

/// Every action on an existing client.
pub struct ChangeClient {
    pub id: i64,
    pub change: ClientChange,
}

impl Action for ChangeClient {
    type Object = Client;
    fn event(&self) -> &'static str {
        match self.change {
            ClientChange::Patch(_) => "clients.update",
            ClientChange::CustomFields(_) => "clients.custom_fields.update",
            ClientChange::Archive => "clients.archive",
            ClientChange::Delete => "clients.delete",
        }
    }
    fn kind(&self) -> Kind {
        match self.change {
            ClientChange::Delete => Kind::Delete,
            _ => Kind::Update,
        }
    }
    async fn load(&self, conn: &mut Conn) -> Result<Option<Client>, AppError> {
        lock_client(conn, self.id).await.map(Some)
    }
    fn propose(
        &self,
        current: Option<&Client>,
        now: Timestamp,
    ) -> Result<Proposal<Client>, AppError> {
        let current = current.ok_or_else(|| AppError::not_found("client", self.id))?;
        let mut next = current.clone();
        match &self.change {
            ClientChange::Patch(p) => {
                only_settable(&p.rest, &to_json(current)?, |field| match field {
                    "balance" => Some("moves with the client's charges and payments"),
                    "custom_fields" => {
                        Some("changes through PUT /api/v1/clients/{id}/custom_fields")
                    }
                    _ => None,
                })?;
                // An archived client read and sent back names its own status: it passes.
                if current.status != ClientStatus::Archived {
                    check_settable_status(p.status)?;
                }
                if current.status == ClientStatus::Archived
                    && p.status.is_some_and(|s| s != ClientStatus::Archived)
                {
                    return Err(AppError::InvalidTransition(format!(
                        "client {} is archived; its status cannot change",
                        self.id
                    )));
                }
                if let Some(v) = &p.name {
                    next.name = v.clone();
                }
                if let Some(v) = p.status {
                    next.status = v;
                }
                if let Some(v) = p.credit {
                    next.credit = v;
                }
                if let Some(v) = &p.email {
                    next.email = v.clone();
                }
                if let Some(v) = &p.tags {
                    next.tags = v.clone();
                }
                if let Some(v) = &p.currency {
                    next.currency = v.clone();
                }
            }
            ClientChange::CustomFields(fields) => {
                for (key, value) in fields {
                    if value.is_null() {
                        next.custom_fields.remove(key);
                    } else {
                        next.custom_fields.insert(key.clone(), value.clone());
                    }
                }
            }
            ClientChange::Archive => {
                if current.status == ClientStatus::Archived {
                    return Err(AppError::InvalidTransition(format!(
                        "client {} is already archived",
                        self.id
                    )));
                }
                next.status = ClientStatus::Archived;
            }
            ClientChange::Delete => return Ok(Proposal::Change(next)),
        }
        if &next == current {
            return Ok(Proposal::Unchanged);
        }
        next.updated_at = now;
        Ok(Proposal::Change(next))
    }
    async fn check(
        &self,
        conn: &mut Conn,
        current: Option<&Client>,
        p: &Client,
    ) -> Result<(), AppError> {
        if let ClientChange::Delete = self.change {
            let d = store::dependents(conn, self.id).await?;
            let mut held = Vec::new();
            for (n, what) in [
                (d.accounts, "accounts"),
                (d.open_subscriptions, "open subscriptions"),
                (d.dids, "DIDs"),
                (d.transactions, "transactions"),
            ] {
                if n > 0 {
                    held.push(format!("{n} {what}"));
                }
            }
            if !held.is_empty() {
                return Err(AppError::Conflict(format!(
                    "client {} still has {}",
                    self.id,
                    held.join(", ")
                )));
            }
            return Ok(());
        }
        if let (ClientChange::Patch(_), Some(c)) = (&self.change, current) {
            if c.currency != p.currency {
                let d = store::dependents(conn, self.id).await?;
                if d.transactions > 0 {
                    return Err(AppError::field(
                        "currency",
                        "cannot change once the client has transactions",
                    ));
                }
                // Their fees are charged in their packages' currency, the client's.
                if d.open_subscriptions > 0 {
                    return Err(AppError::field(
                        "currency",
                        "cannot change while the client has subscriptions not closed",
                    ));
                }
            }
        }
        Ok(p.validate()?)
    }
    async fn write(
        &self,
        conn: &mut Conn,
        _: Option<&Client>,
        p: Client,
        _: Timestamp,
        _: &mut crate::pipeline::Effects,
    ) -> Result<Client, AppError> {
        match self.change {
            ClientChange::Delete => store::delete(conn, p.id).await?,
            _ => store::update(conn, &p).await?,
        }
        Ok(p)
    }
    fn writable(&self) -> &'static [&'static str] {
        match self.change {
            ClientChange::Patch(_) => &["name", "status", "credit", "email", "tags", "currency"],
            ClientChange::CustomFields(_) => &["custom_fields"],
            _ => &[],
        }
    }
    fn validate(&self, current: Option<&Client>, c: &Client) -> Result<(), AppError> {
        // Archiving has its own request: no create or update may archive.
        let was_archived = current.is_some_and(|c| c.status == ClientStatus::Archived);
        if c.status == ClientStatus::Archived && !was_archived {
            check_settable_status(Some(c.status))?;
        }
        Ok(c.validate()?)
    }
    fn object_id(&self, c: &Client) -> i64 {
        c.id
    }
    fn ordering_key(&self, _: Option<&Client>, c: &Client) -> String {
        client_key(c.id)
    }
}
