//! Black-box tests of the billing core through the real server.

#[allow(dead_code)]
mod harness;
mod smoke;
