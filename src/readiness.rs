//! Whether each source can serve sign-ins: written by `source` as its
//! discovery and keys load, read by the admin listener's `/readyz`. A leaf,
//! so the layer that writes it need not import the one that serves it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether each source can serve sign-ins (its discovery and keys are loaded).
#[derive(Debug, Default)]
pub struct Readiness {
    sources: Vec<(String, AtomicBool)>,
}

impl Readiness {
    /// Tracks these sources, each starting as `ready`.
    pub fn new<'a>(slugs: impl IntoIterator<Item = &'a str>, ready: bool) -> Self {
        Readiness {
            sources: slugs
                .into_iter()
                .map(|s| (s.to_string(), AtomicBool::new(ready)))
                .collect(),
        }
    }

    /// Marks a source ready or not.
    pub fn set(&self, slug: &str, ready: bool) {
        if let Some((_, flag)) = self.sources.iter().find(|(s, _)| s == slug) {
            flag.store(ready, Ordering::Release);
        }
    }

    /// The slugs of the sources that are not ready.
    pub fn not_ready(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|(_, f)| !f.load(Ordering::Acquire))
            .map(|(s, _)| s.as_str())
            .collect()
    }
}
