//! The user directory: local users, their source connections and groups,
//! and the session records that make sessions revocable.

pub mod claims;
pub mod flow;
pub mod profile;
pub mod signin;
pub mod store;
mod types;

pub use types::{Connection, HandoffRecord, Identity, NewSession, SessionRecord, User};
