//! Black-box tests of the billing core through the real server.

mod accounts;
mod clients;
mod concurrency;
mod dids;
mod events;
#[allow(dead_code)]
mod harness;
mod malformed;
mod openapi;
mod smoke;
mod subscriptions;
mod transactions;
