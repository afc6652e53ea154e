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

mod architecture;
mod assertion;
mod audit;
mod bearer;
mod binary;
mod config;
mod defaults;
mod discovery;
mod docs;
mod engine;
mod faults;
mod identity;
mod multihost;
mod oauth1;
mod oauth1_provider;
mod oauth1_verify;
mod outbound_tls;
mod own_postgres;
mod pool;
mod proxy;
mod reload;
mod replicas;
mod sessions;
mod signin;
mod tokens;
mod vendor_fakes;
mod vendors;
