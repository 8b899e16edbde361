//! Black-box tests of after-handler delivery (SPEC §4): the handler routes, what a
//! receiver gets, pattern matching, scripts, retries, order, and monitoring — against
//! the real server and real receivers on 127.0.0.1.

#[path = "../../../mailbox/tests/common/ca.rs"]
mod ca;
#[allow(dead_code)]
#[path = "../api/flask_example.rs"]
mod flask_example;
#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;

mod clocks;
mod flask;
mod https;
mod malformed;
mod matching;
mod monitoring;
mod ordering;
mod proxy;
#[allow(dead_code)]
mod receiver;
mod retention;
mod retries;
mod routes;
mod scripts;
mod signing;
#[allow(dead_code)]
mod util;
