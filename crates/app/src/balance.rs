//! Balance changes and the balance events they derive.

use billhook_domain::{Money, Timestamp};
use billhook_store::{clients, Conn};
use serde_json::{Map, Value};

use crate::pipeline::{client_key, to_json, Effects, NewEvent};
use crate::AppError;

/// Adds `delta` to a client's balance (the client row is locked by the action) and, when
/// the balance crosses zero, pushes `clients.balance_zero` or `clients.balance_notzero`.
pub(crate) async fn apply_delta(
    conn: &mut Conn,
    clients_id: i64,
    delta: Money,
    now: Timestamp,
    effects: &mut Effects,
) -> Result<(), AppError> {
    if delta == Money::ZERO {
        return Ok(());
    }
    let Some(new) = clients::add_balance(conn, clients_id, delta, now).await? else {
        return Err(AppError::field(
            "amount",
            "would overflow the client's balance",
        ));
    };
    let old = Money::from_micros(new.micros() - delta.micros());
    let crossing = match (old.is_positive(), new.is_positive()) {
        (true, false) => "clients.balance_zero",
        (false, true) => "clients.balance_notzero",
        _ => return Ok(()),
    };
    let after = clients::get(conn, clients_id, false)
        .await?
        .ok_or_else(|| AppError::Internal(format!("client {clients_id} went missing")))?;
    let mut previous = Map::new();
    previous.insert("balance".into(), Value::String(old.to_string()));
    effects.push(NewEvent {
        events_id: crossing,
        object_id: Some(clients_id),
        ordering_key: client_key(clients_id),
        data: to_json(&after)?,
        previous,
    });
    Ok(())
}
