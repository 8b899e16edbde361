//! Packages raise no events, so they are written directly, in a transaction each.

use billhook_domain::entities::{Package, PackageStatus};
use billhook_domain::{IsoDuration, Money, Timestamp};
use billhook_store::{packages as store, Db};
use serde::Deserialize;

use crate::input::{only_fields, only_settable, required};
use crate::pipeline::to_json;
use crate::AppError;

/// Body of `POST /packages` and `PATCH /packages/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct PackageInput {
    pub name: Option<String>,
    pub period: Option<IsoDuration>,
    pub fee: Option<Money>,
    pub currency: Option<String>,
    pub status: Option<PackageStatus>,
    /// The rest of the body: a PATCH refuses it unless sent back as read (see
    /// `only_settable`), a POST unless it is one of the package's fields (`only_fields`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl crate::input::Patch for PackageInput {
    const NULLABLE: &'static [&'static str] = &[];
    fn rest(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.rest
    }
}

/// Creates a package.
pub async fn create(db: &Db, i: PackageInput) -> Result<Package, AppError> {
    let now = Timestamp::now();
    let mut p = only_fields(&i.rest, || {
        Ok(Package {
            id: 0,
            name: required(i.name, "name")?,
            period: required(i.period, "period")?,
            fee: i.fee.unwrap_or(Money::ZERO),
            currency: i.currency.unwrap_or_else(|| "USD".into()),
            status: i.status.unwrap_or(PackageStatus::Active),
            created_at: now,
            updated_at: now,
        })
    })?;
    p.validate()?;
    let mut tx = db.begin().await?;
    p.id = store::insert(&mut tx, &p).await?;
    tx.commit().await?;
    Ok(p)
}

/// Changes a package; running subscriptions pick up the new fee and period at their
/// next renewal.
pub async fn update(db: &Db, id: i64, i: PackageInput) -> Result<Package, AppError> {
    let mut tx = db.begin().await?;
    let mut p = store::get_locked(&mut tx, id, false)
        .await?
        .ok_or_else(|| AppError::not_found("package", id))?;
    let was = p.clone();
    only_settable(&i.rest, &to_json(&p)?, |_| None)?;
    if let Some(v) = i.name {
        p.name = v;
    }
    if let Some(v) = i.period {
        p.period = v;
    }
    if let Some(v) = i.fee {
        p.fee = v;
    }
    if let Some(v) = i.currency {
        // Its fee is charged as it is to clients billed in its currency.
        let open = store::open_subscriptions_count(&mut tx, id).await?;
        if v != p.currency && open > 0 {
            return Err(AppError::Conflict(format!(
                "package {id} has {open} subscriptions not closed, charged in {}; its currency cannot change",
                p.currency
            )));
        }
        p.currency = v;
    }
    if let Some(v) = i.status {
        p.status = v;
    }
    // Nothing changed (a package read and sent back): its updated_at stays, as other
    // objects' do.
    if p == was {
        return Ok(was);
    }
    p.updated_at = Timestamp::now();
    p.validate()?;
    store::update(&mut tx, &p).await?;
    tx.commit().await?;
    Ok(p)
}

/// Deletes a package no subscription refers to (archive it otherwise).
pub async fn delete(db: &Db, id: i64) -> Result<Package, AppError> {
    let mut tx = db.begin().await?;
    let p = store::get(&mut tx, id)
        .await?
        .ok_or_else(|| AppError::not_found("package", id))?;
    let n = store::subscriptions_count(&mut tx, id).await?;
    if n > 0 {
        return Err(AppError::Conflict(format!(
            "package {id} has {n} subscriptions; archive it instead"
        )));
    }
    store::delete(&mut tx, id).await?;
    tx.commit().await?;
    Ok(p)
}
