//! Rate tables raise no events, so they are written directly, in a transaction each.

use billhook_domain::entities::{Rate, RateTable};
use billhook_domain::Timestamp;
use billhook_store::rate_tables as store;
pub use billhook_store::rate_tables::RateQuery;
use billhook_store::{imports, Db, Page};
use serde::Deserialize;

use crate::input::{nullable, only_fields, only_settable, required};
use crate::pipeline::to_json;
use crate::queries::List;
use crate::AppError;

/// Body of `POST /rate_tables` and `PATCH /rate_tables/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct RateTableInput {
    pub name: Option<String>,
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub email_sender: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub email_subject: Option<Option<String>>,
    /// The rest of the body: a PATCH refuses it unless sent back as read (see
    /// `only_settable`), a POST unless it is one of the table's fields (`only_fields`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl crate::input::Patch for RateTableInput {
    const NULLABLE: &'static [&'static str] = &["email_sender", "email_subject"];
    fn rest(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.rest
    }
}

/// An empty pattern means "none": a form field left blank.
fn pattern(v: Option<String>) -> Option<String> {
    v.filter(|p| !p.trim().is_empty())
}

/// Creates a rate table.
pub async fn create(db: &Db, i: RateTableInput) -> Result<RateTable, AppError> {
    let now = Timestamp::now();
    let mut t = only_fields(&i.rest, || {
        Ok(RateTable {
            id: 0,
            name: required(i.name, "name")?,
            currency: i.currency.unwrap_or_else(|| "USD".into()),
            email_sender: pattern(i.email_sender.flatten()),
            email_subject: pattern(i.email_subject.flatten()),
            created_at: now,
            updated_at: now,
        })
    })?;
    t.validate()?;
    let mut tx = db.begin().await?;
    t.id = store::insert(&mut tx, &t).await?;
    tx.commit().await?;
    Ok(t)
}

/// Changes a rate table's name, currency or email patterns.
pub async fn update(db: &Db, id: i64, i: RateTableInput) -> Result<RateTable, AppError> {
    let mut tx = db.begin().await?;
    let mut t = store::get(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("rate table", id))?;
    let before = t.clone();
    only_settable(&i.rest, &to_json(&t)?, |_| None)?;
    if let Some(v) = i.name {
        t.name = v;
    }
    if let Some(v) = i.currency {
        t.currency = v;
    }
    if let Some(v) = i.email_sender {
        t.email_sender = pattern(v);
    }
    if let Some(v) = i.email_subject {
        t.email_subject = pattern(v);
    }
    t.validate()?;
    if t != before {
        t.updated_at = Timestamp::now();
        store::update(&mut tx, &t).await?;
    }
    tx.commit().await?;
    Ok(t)
}

/// Deletes a rate table and its rates; refused while an import into it is pending.
pub async fn delete(db: &Db, id: i64) -> Result<RateTable, AppError> {
    let mut tx = db.begin().await?;
    let t = store::get(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("rate table", id))?;
    if imports::active_for_table(&mut tx, id).await? {
        return Err(AppError::Conflict(format!(
            "rate table {id} has an import queued or running; delete it when the import ends"
        )));
    }
    store::delete(&mut tx, id).await?;
    tx.commit().await?;
    Ok(t)
}

/// Loads a rate table.
pub async fn get(db: &Db, id: i64) -> Result<RateTable, AppError> {
    let mut conn = db.read.acquire().await?;
    store::get(&mut conn, id)
        .await?
        .ok_or_else(|| AppError::not_found("rate table", id))
}

/// Lists rate tables.
pub async fn list(db: &Db, name: Option<&str>, page: Page) -> Result<List<RateTable>, AppError> {
    let mut conn = db.read.acquire().await?;
    Ok(store::list(&mut conn, name, page).await?.into())
}

/// Lists a table's rates; `prefix` and `number` must be digits.
pub async fn rates(db: &Db, id: i64, q: RateQuery, page: Page) -> Result<List<Rate>, AppError> {
    for (field, v) in [("prefix", &q.prefix), ("number", &q.number)] {
        if let Some(v) = v {
            if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AppError::field(field, "must be digits only"));
            }
        }
    }
    let mut conn = db.read.acquire().await?;
    if store::get(&mut conn, id).await?.is_none() {
        return Err(AppError::not_found("rate table", id));
    }
    Ok(store::rates(&mut conn, id, &q, page).await?.into())
}
