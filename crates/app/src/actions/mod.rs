//! Every action of the billing core, declared once for the pipeline.

pub mod accounts;
pub mod clients;
pub mod dids;
pub mod packages;
pub mod subscriptions;
pub mod transactions;

use billhook_domain::entities::{Client, ClientStatus};
use billhook_store::{clients as client_store, Conn};

use crate::AppError;

/// Loads (and on PostgreSQL locks) the client an action concerns, which orders every
/// change of that client; 404 when it does not exist.
pub(crate) async fn lock_client(conn: &mut Conn, clients_id: i64) -> Result<Client, AppError> {
    client_store::get(conn, clients_id, true)
        .await?
        .ok_or_else(|| AppError::not_found("client", clients_id))
}

/// Locks the client given in the request body of an action that adds something of
/// its (an account, a subscription, a DID, a transaction), as [`lock_client`] does,
/// and refuses an archived one. A missing client is a validation error of `field`, not
/// a missing URL.
pub(crate) async fn lock_open_client(
    conn: &mut Conn,
    clients_id: i64,
    field: &str,
) -> Result<(), AppError> {
    let status = client_store::lock_status(conn, clients_id)
        .await?
        .ok_or_else(|| AppError::field(field, format!("client {clients_id} does not exist")))?;
    if status == ClientStatus::Archived {
        return Err(AppError::Conflict(format!(
            "client {clients_id} is archived and accepts no new accounts, subscriptions or transactions"
        )));
    }
    Ok(())
}

/// In a create's `check`: the client the object is written for, when it is not the one
/// the request named (a before handler changed it), checked and locked as `load` does
/// the request's. Nothing to do, and no query, otherwise.
pub(crate) async fn lock_other_client(
    conn: &mut Conn,
    requested: Option<i64>,
    written: i64,
) -> Result<(), AppError> {
    if requested == Some(written) {
        return Ok(());
    }
    lock_open_client(conn, written, "clients_id").await
}

#[cfg(test)]
mod tests {
    use billhook_domain::catalogue;
    use billhook_domain::entities::TransactionKind;

    use super::*;
    use crate::pipeline::{Action, Kind};

    fn creates<A: Action>(a: A) -> (&'static str, bool) {
        (a.event(), a.kind() == Kind::Create)
    }

    /// The catalogue's list of creating events (what a before handler's test call sends
    /// without an id) is the actions' own.
    #[test]
    fn the_catalogue_knows_the_events_that_create() {
        let creating = [
            creates(clients::CreateClient(Default::default())),
            creates(accounts::CreateAccount(Default::default())),
            creates(subscriptions::AssignSubscription {
                input: Default::default(),
                activate_now: false,
                began: None,
            }),
            creates(dids::DidActionRequest {
                id: 0,
                change: dids::DidChange::Create,
                input: Default::default(),
            }),
            creates(transactions::CreateTransaction {
                kind: TransactionKind::Charge,
                input: Default::default(),
            }),
            creates(transactions::CreateTransaction {
                kind: TransactionKind::Payment,
                input: Default::default(),
            }),
        ];
        for (event, create) in creating {
            assert!(create, "{event} is a create");
            assert!(
                catalogue::find(event).expect("in the catalogue").creates(),
                "{event}"
            );
        }
        let listed = catalogue::EVENT_TYPES
            .iter()
            .filter(|e| e.creates())
            .count();
        assert_eq!(listed, creating.len(), "no other event creates");
    }
}
