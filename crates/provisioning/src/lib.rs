//! The Provisioning API's machinery: signing, the retry policy, the HTTP and script
//! callers, and the delivery engine that takes after-stage deliveries from the outbox.

pub mod before;
pub mod caller;
pub mod engine;
pub mod handler_cache;
pub mod metrics;
mod outcomes;
pub mod retry;
pub mod signing;

pub use caller::{CallOutcome, Caller, TrustedRoots};
pub use engine::{DeliveryEngine, EngineConfig};
pub use handler_cache::HandlerCache;
