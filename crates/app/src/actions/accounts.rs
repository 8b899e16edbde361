//! Account actions: create, update, delete.

use billhook_domain::entities::{Account, AuthType};
use billhook_domain::Timestamp;
use billhook_store::{accounts as store, Conn};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{lock_client, lock_open_client, lock_other_client};
use crate::input::{nullable, only_fields, only_settable, required};
use crate::pipeline::{client_key, to_json, Action, Effects, Kind, Proposal};
use crate::AppError;

/// Body of `POST /accounts` and `PATCH /accounts/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct AccountInput {
    pub clients_id: Option<i64>,
    pub name: Option<String>,
    pub auth_type: Option<AuthType>,
    pub ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub login: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub password: Option<Option<String>>,
    pub enabled: Option<bool>,
    /// The rest of the body: a PATCH refuses it unless sent back as read (see
    /// `only_settable`), a POST unless it is one of the account's fields (`only_fields`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub rest: Map<String, Value>,
}

impl crate::input::Patch for AccountInput {
    const NULLABLE: &'static [&'static str] = &["login", "password"];
    fn rest(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.rest
    }
}

/// `clients.accounts.create`.
pub struct CreateAccount(pub AccountInput);

impl Action for CreateAccount {
    type Object = Account;
    fn event(&self) -> &'static str {
        "clients.accounts.create"
    }
    fn kind(&self) -> Kind {
        Kind::Create
    }
    async fn load(&self, conn: &mut Conn) -> Result<Option<Account>, AppError> {
        if let Some(id) = self.0.clients_id {
            lock_open_client(conn, id, "clients_id").await?;
        }
        Ok(None)
    }
    fn propose(&self, _: Option<&Account>, now: Timestamp) -> Result<Proposal<Account>, AppError> {
        let i = &self.0;
        let made = only_fields(&i.rest, || {
            Ok(Account {
                id: 0,
                clients_id: required(i.clients_id, "clients_id")?,
                name: required(i.name.clone(), "name")?,
                auth_type: i.auth_type.unwrap_or(AuthType::Ip),
                ips: i.ips.clone().unwrap_or_default(),
                login: i.login.clone().flatten(),
                password: i.password.clone().flatten(),
                enabled: i.enabled.unwrap_or(true),
                created_at: now,
                updated_at: now,
            })
        })?;
        Ok(Proposal::Change(made))
    }
    async fn check(
        &self,
        conn: &mut Conn,
        _: Option<&Account>,
        p: &Account,
    ) -> Result<(), AppError> {
        lock_other_client(conn, self.0.clients_id, p.clients_id).await?;
        Ok(p.validate()?)
    }
    async fn write(
        &self,
        conn: &mut Conn,
        _: Option<&Account>,
        mut p: Account,
        _: Timestamp,
        _: &mut Effects,
    ) -> Result<Account, AppError> {
        p.id = store::insert(conn, &p).await?;
        Ok(p)
    }
    fn writable(&self) -> &'static [&'static str] {
        Account::WRITABLE
    }
    fn validate(&self, _current: Option<&Account>, a: &Account) -> Result<(), AppError> {
        Ok(a.validate()?)
    }
    fn object_id(&self, a: &Account) -> i64 {
        a.id
    }
    fn ordering_key(&self, _: Option<&Account>, a: &Account) -> String {
        client_key(a.clients_id)
    }
}

/// `clients.accounts.update` (with input) or `clients.accounts.delete` (without).
pub struct ChangeAccount {
    pub id: i64,
    pub patch: Option<AccountInput>,
}

impl Action for ChangeAccount {
    type Object = Account;
    fn event(&self) -> &'static str {
        if self.patch.is_some() {
            "clients.accounts.update"
        } else {
            "clients.accounts.delete"
        }
    }
    fn kind(&self) -> Kind {
        if self.patch.is_some() {
            Kind::Update
        } else {
            Kind::Delete
        }
    }
    async fn load(&self, conn: &mut Conn) -> Result<Option<Account>, AppError> {
        // clients_id never changes, so reading it before taking the lock is safe.
        let a = store::get(conn, self.id)
            .await?
            .ok_or_else(|| AppError::not_found("account", self.id))?;
        lock_client(conn, a.clients_id).await?;
        Ok(store::get(conn, self.id).await?)
    }
    fn propose(
        &self,
        current: Option<&Account>,
        now: Timestamp,
    ) -> Result<Proposal<Account>, AppError> {
        let current = current.ok_or_else(|| AppError::not_found("account", self.id))?;
        let mut next = current.clone();
        let Some(i) = &self.patch else {
            return Ok(Proposal::Change(next));
        };
        if i.clients_id.is_some_and(|c| c != current.clients_id) {
            return Err(AppError::field("clients_id", "cannot change"));
        }
        only_settable(&i.rest, &to_json(current)?, |_| None)?;
        if let Some(v) = &i.name {
            next.name = v.clone();
        }
        if let Some(v) = i.auth_type {
            next.auth_type = v;
        }
        if let Some(v) = &i.ips {
            next.ips = v.clone();
        }
        if let Some(v) = &i.login {
            next.login = v.clone();
        }
        if let Some(v) = &i.password {
            next.password = v.clone();
        }
        if let Some(v) = i.enabled {
            next.enabled = v;
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
        _: Option<&Account>,
        p: &Account,
    ) -> Result<(), AppError> {
        if self.patch.is_none() {
            let dids = store::dids_count(conn, self.id).await?;
            if dids > 0 {
                return Err(AppError::Conflict(format!(
                    "account {} still has {dids} DIDs routed to it",
                    self.id
                )));
            }
            return Ok(());
        }
        Ok(p.validate()?)
    }
    async fn write(
        &self,
        conn: &mut Conn,
        _: Option<&Account>,
        p: Account,
        _: Timestamp,
        _: &mut Effects,
    ) -> Result<Account, AppError> {
        if self.patch.is_some() {
            store::update(conn, &p).await?;
        } else {
            store::delete(conn, p.id).await?;
        }
        Ok(p)
    }
    fn writable(&self) -> &'static [&'static str] {
        match self.patch {
            Some(_) => &Account::WRITABLE[1..],
            None => &[],
        }
    }
    fn validate(&self, _current: Option<&Account>, a: &Account) -> Result<(), AppError> {
        Ok(a.validate()?)
    }
    fn object_id(&self, a: &Account) -> i64 {
        a.id
    }
    fn ordering_key(&self, _: Option<&Account>, a: &Account) -> String {
        client_key(a.clients_id)
    }
}
