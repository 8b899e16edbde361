//! Black-box tests of the before stage (SPEC §4 "Before stage"): real HTTP receivers and
//! scripts as before handlers, the response rules, the chain, failures and the
//! cool-down, the execution log — against the real server, on either database.

#[allow(dead_code)]
#[path = "../api/flask_example.rs"]
mod flask_example;
#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;

mod chain;
mod concurrency;
mod failures;
mod monitoring;
mod objects;
#[allow(dead_code)]
mod receiver;
mod rules;
mod scripts;
#[allow(dead_code)]
mod util;
