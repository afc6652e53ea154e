//! portcullis: an authentication gateway. A reverse proxy that signs people in
//! through OAuth/OpenID Connect sources and verifies machine JWTs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod routing;
