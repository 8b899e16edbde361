//! The messages the email rates manager handled: a message is handled once.

use crate::sql::{query, Conn};
use billhook_domain::Timestamp;

use crate::StoreError;

/// A handled message.
#[derive(Debug, Clone)]
pub struct HandledMessage<'a> {
    pub source_key: &'a str,
    pub message_id: Option<&'a str>,
    pub sender: &'a str,
    pub subject: &'a str,
    pub outcome: &'a str,
    pub dt: Timestamp,
}

/// Records a message; false when its key was already recorded (handled before), so the
/// caller rolls back instead of handling it twice.
pub async fn record(conn: &mut Conn, m: &HandledMessage<'_>) -> Result<bool, StoreError> {
    let done = query(
        "INSERT INTO email_messages (source_key, message_id, sender, subject, outcome, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (source_key) DO NOTHING",
    )
    .bind(m.source_key)
    .bind(m.message_id)
    .bind(m.sender)
    .bind(m.subject)
    .bind(m.outcome)
    .bind(m.dt.micros())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
