//! portcullis: an authentication gateway. A reverse proxy that signs people in
//! through OAuth/OpenID Connect sources and verifies machine JWTs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod assertion;
pub mod audit;
pub mod bearer;
pub mod clock;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod gateway;
pub mod housekeeping;
pub mod identity;
pub mod jwk;
pub mod jwks;
pub mod jws;
pub mod logging;
pub mod memo;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod principal;
pub mod random;
pub mod readiness;
pub mod redirect;
pub mod routing;
pub mod same_origin;
pub mod session;
pub mod shared_principals;
pub mod source;
pub mod tls;
pub mod users;
pub mod verdict_cache;
