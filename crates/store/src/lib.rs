//! Storage of billhook on SQLite or PostgreSQL through one interface: repositories over
//! sqlx's `Any` driver with SQL that both databases accept, and one migration set each.
//!
//! Columns are portable on purpose: money in integer micro-units, times in integer
//! microseconds (UTC), lists and maps as JSON text, booleans as 0/1.

pub mod accounts;
mod checkpoint;
pub mod clients;
mod clock;
mod db;
pub mod deliveries;
pub mod dids;
pub mod email_messages;
pub mod events;
pub mod executions;
mod group_commit;
pub mod handlers;
pub mod handoff;
pub mod head_checks;
pub mod imports;
pub mod keys;
pub mod outbox;
pub mod packages;
mod query;
pub mod rate_tables;
pub mod retention;
pub mod sql;
mod sqlite_config;
mod statements;
pub mod subscriptions;
pub mod transactions;
mod wal_writes;
mod writer_thread;

pub use db::{Db, Dialect, StoreError, UNDOABLE_ATTEMPTS};
pub use group_commit::WriterStats;
pub use query::{Filter, Listing, Page};
pub use sql::{Conn, Tx};
pub use sqlx::Error as SqlxError;
