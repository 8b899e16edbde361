//! Pure types and rules of billhook: money, time, durations, entities, state machines,
//! the event catalogue and the payload. No I/O, no async.

pub mod catalogue;
pub mod duration;
pub mod entities;
pub mod errors;
pub mod money;
pub mod payload;
mod schema;
pub mod timestamp;

pub use duration::IsoDuration;
pub use errors::FieldErrors;
pub use money::Money;
pub use timestamp::Timestamp;
