//! One integration binary: the gateway in-process on ephemeral ports, with
//! in-process upstreams. Modules by subject.

mod support;

mod config;
mod proxy;
