//! Fakes of the outside world portcullis's tests talk to, each an in-process
//! HTTP server on a listener the test binds:
//!
//! * [`vendors`]: the OAuth 2.0 / OpenID Connect vendors behind the presets
//!   (GitHub, Google, Entra ID, Apple, …), one path prefix each;
//! * [`slack`], [`wechat`]: Sign in with Slack and WeChat website login;
//! * [`cases`]: a deterministic case generator for tests that draw many inputs;
//! * [`oauth1_provider`]: an OAuth 1.0a provider with fault knobs, which
//!   checks signatures with this crate's own RFC 5849 verifier ([`oauth1`]).
//!
//! Each fake is written from the vendor's public documentation (or the RFC),
//! cited next to the behaviour, and this crate does not depend on
//! `portcullis`: a fake that read the product's presets would agree with the
//! product's mistakes.

pub mod cases;
pub mod oauth1;
pub mod oauth1_provider;
pub mod server;
pub mod slack;
pub mod vendors;
pub mod wechat;
