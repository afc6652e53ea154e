//! Vendor behaviour beyond URLs and claim mapping: small pure helpers per
//! vendor that the sign-in adapter calls when a preset's quirk flag says so
//! (`config::presets::Quirks`). No I/O here.

pub mod apple;
pub mod entraid;
pub mod github;
pub mod mailcow;
pub mod slack;
pub mod wechat;
