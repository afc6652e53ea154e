//! One integration binary: the gateway in-process on ephemeral ports, with
//! in-process upstreams. Modules by subject.
// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

mod bearer;
mod binary;
mod config;
mod discovery;
mod engine;
mod multihost;
mod oauth1;
mod proxy;
mod replicas;
mod sessions;
mod signin;
mod vendors;
