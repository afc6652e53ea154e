//! Background upkeep of every source (sign-in and machine-token alike): its
//! discovery document and its key set are refetched when `Cache-Control:
//! max-age` (clamped like the JWKS's) or the source's ttl says; a failure
//! keeps the last good copy, is logged and counted, and is retried with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};
use url::Url;

use super::{Runtime, Sources};
use crate::config::Source;
use crate::discovery::{self, DiscoveryError};

/// First retry after a failed refresh; doubles up to [`MAX_BACKOFF`] (at most the ttl).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between retries of a failing refresh.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Discovery bookkeeping kept beside the sources.
pub(super) struct Upkeep {
    /// When to refresh each source's discovery document first, from the
    /// `Cache-Control` of the document fetched at load.
    first: HashMap<String, Duration>,
    /// `discovery_refreshes_total{source, result}`: ok, failed (unreachable
    /// or not a document), refused (the document broke a rule).
    refreshes: Option<IntCounterVec>,
}

impl Upkeep {
    pub(super) fn new() -> Self {
        Upkeep {
            first: HashMap::new(),
            refreshes: IntCounterVec::new(
                Opts::new(
                    "discovery_refreshes_total",
                    "Discovery document refreshes by source and result (ok, failed, refused)",
                ),
                &["source", "result"],
            )
            // Constant, valid options: this cannot fail; without it refreshes are only logged.
            .ok(),
        }
    }

    /// Notes the `Cache-Control` of the document `source` loaded with.
    pub(super) fn first_refresh(&mut self, source: &Source, cache_control: Option<&str>) {
        let next = source.jwks_freshness().interval(cache_control);
        self.first.insert(source.slug.clone(), next);
    }

    fn count(&self, source: &str, result: &str) {
        if let Some(Ok(c)) = self
            .refreshes
            .as_ref()
            .map(|f| f.get_metric_with_label_values(&[source, result]))
        {
            c.inc();
        }
    }
}

/// The next wait after a failure, and the backoff after that.
fn backoff_step(backoff: Duration, ttl: Duration) -> (Duration, Duration) {
    (backoff.min(ttl), (backoff * 2).min(MAX_BACKOFF))
}

impl Sources {
    /// The counters of background refreshes (JWKS fetches, discovery
    /// refreshes), for the metrics registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        let mut out = Vec::new();
        if let Some(c) = self.jwks.collector() {
            out.push(c);
        }
        if let Some(c) = self.upkeep.refreshes.clone() {
            out.push(Box::new(c) as Box<dyn prometheus::core::Collector>);
        }
        out
    }

    /// On a reload that left source `slug` as it was: when its discovery
    /// document could not be fetched now, it keeps the endpoints `previous`
    /// resolved (the last good document, DESIGN "Operations") and stays
    /// ready; the document is retried soon. Returns whether it kept them.
    pub fn carry_over_endpoints(&mut self, previous: &Sources, slug: &str) -> bool {
        let (Some(rt), Some(old)) = (self.by_slug.get(slug), previous.get(slug)) else {
            return false;
        };
        let Some(endpoints) = old.endpoints().filter(|_| rt.endpoints().is_none()) else {
            return false;
        };
        let Ok(mut current) = rt.endpoints.write() else {
            return false;
        };
        *current = Some(endpoints);
        self.readiness.set(slug, true);
        self.upkeep.first.insert(slug.to_string(), FIRST_BACKOFF);
        true
    }

    /// Sources whose endpoints come from a discovery document: the ones
    /// [`Self::keep_discovery_fresh`] looks after.
    pub fn discovered(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .by_slug
            .values()
            .filter(|rt| rt.config.oidc_well_known_url.is_some())
            .map(|rt| rt.config.slug.clone())
            .collect();
        out.sort();
        out
    }

    /// Fetches now, concurrently, the keys of every source that has a JWKS
    /// URL (configured or discovered; inline-only sets have nothing to
    /// fetch); returns, per source, when to refresh next. Failures are logged
    /// and counted, and retried soon. A set a reload carried over (the source
    /// did not change) is not fetched: it keeps its own refresh time.
    pub async fn fetch_all_keys(&self) -> Vec<(String, Duration)> {
        let mut slugs: Vec<&String> = self
            .by_slug
            .iter()
            .filter(|(_, rt)| {
                rt.config.oidc_jwks_url.is_some() || rt.config.oidc_well_known_url.is_some()
            })
            .map(|(slug, _)| slug)
            .collect();
        slugs.sort();
        let fetches = slugs.into_iter().map(|slug| async move {
            // Keys a reload carried over are refreshed on their own schedule.
            if let Some(due) = self.jwks.refresh_due_in(slug) {
                return (slug.clone(), due);
            }
            let next = match self.jwks_url(slug) {
                Some(url) => match self.jwks.refresh(slug, &url).await {
                    Ok(r) => r.next,
                    Err(_) => FIRST_BACKOFF,
                },
                // Discovery pending, or the document lists no jwks_uri (yet).
                None => FIRST_BACKOFF,
            };
            (slug.clone(), next)
        });
        futures_util::future::join_all(fetches).await
    }

    fn jwks_url(&self, slug: &str) -> Option<Url> {
        self.get(slug)
            .and_then(|rt| rt.endpoints())
            .and_then(|e| e.jwks.clone())
    }

    /// Keeps one source's keys fresh forever: refreshes when `max-age`
    /// (clamped) or the ttl says, from the JWKS URL its endpoints name at
    /// that moment (a discovery refresh may have changed it); retries
    /// failures with backoff (1 s doubling to 60 s, at most the ttl) while
    /// the last good set is served until its max stale age (JWKS-04).
    pub async fn keep_keys_fresh(self: Arc<Self>, slug: String, first: Duration) {
        let ttl = self.jwks.freshness(&slug).ttl;
        let mut next = first;
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::time::sleep(next).await;
            let refreshed = match self.jwks_url(&slug) {
                Some(url) => self.jwks.refresh(&slug, &url).await.ok(),
                None => None,
            };
            match refreshed {
                Some(r) => {
                    next = r.next;
                    backoff = FIRST_BACKOFF;
                }
                None => (next, backoff) = backoff_step(backoff, ttl),
            }
        }
    }

    /// Keeps one source's discovery document fresh forever (OIDC-26): a
    /// source not ready since load is retried with backoff until its
    /// document arrives; a ready one is refetched when `max-age` (clamped)
    /// or the ttl says. A failed or refused refresh keeps the last good
    /// endpoints and is retried with backoff.
    pub async fn keep_discovery_fresh(self: Arc<Self>, slug: String) {
        let Some(rt) = self.get(&slug) else { return };
        let ttl = self.jwks.freshness(&slug).ttl;
        let mut next = match rt.endpoints() {
            Some(_) => self.upkeep.first.get(&slug).copied().unwrap_or(ttl),
            None => FIRST_BACKOFF,
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            tokio::time::sleep(next).await;
            match self.refresh_discovery(&rt).await {
                Ok(interval) => {
                    next = interval;
                    backoff = FIRST_BACKOFF;
                }
                Err(_) => (next, backoff) = backoff_step(backoff, ttl),
            }
        }
    }

    /// Refetches `rt`'s discovery document and, when it passes every check
    /// load applies (issuer, URL rules), swaps in the endpoints it resolves
    /// to — hand-set URLs still win. A changed `jwks_uri` is fetched at once
    /// (JWKS-18). Returns when to refresh next.
    async fn refresh_discovery(&self, rt: &Runtime) -> Result<Duration, DiscoveryError> {
        let slug = rt.config.slug.as_str();
        let Some(well_known) = &rt.config.oidc_well_known_url else {
            return Ok(self.jwks.freshness(slug).ttl);
        };
        let fetched = async {
            let (doc, cache_control) =
                discovery::fetch_fresh(&self.http.source(slug), well_known).await?;
            let endpoints = discovery::resolve(&rt.config, Some(&doc))?;
            Ok::<_, DiscoveryError>((endpoints, cache_control))
        }
        .await;
        let (endpoints, cache_control) = match fetched {
            Ok(ok) => ok,
            Err(error) => {
                if error.is_refusal() {
                    self.upkeep.count(slug, "refused");
                    tracing::error!(source = slug, error = %error, "discovery refresh refused; keeping the last good endpoints");
                } else {
                    self.upkeep.count(slug, "failed");
                    tracing::warn!(source = slug, error = %error, "discovery refresh failed; keeping the last good endpoints");
                }
                return Err(error);
            }
        };
        self.upkeep.count(slug, "ok");
        let previous = rt.endpoints();
        let new_jwks = endpoints.jwks.clone();
        let jwks_changed = previous.as_ref().is_some_and(|p| p.jwks != new_jwks);
        // A source that just became ready, or whose jwks_uri moved, gets its keys now.
        let fetch_keys = jwks_changed || previous.is_none();
        if previous.is_none() {
            tracing::info!(source = slug, "discovery succeeded; source ready");
        }
        if jwks_changed {
            tracing::info!(
                source = slug,
                jwks_uri = new_jwks.as_ref().map(Url::as_str),
                "discovery names a new jwks_uri"
            );
        }
        rt.set_endpoints(endpoints);
        self.readiness.set(slug, true);
        if let (true, Some(url)) = (fetch_keys, new_jwks) {
            // The old keys stay until the new URI delivers a good set.
            let _ = self.jwks.refresh(slug, &url).await;
        }
        Ok(self.jwks.freshness(slug).interval(cache_control.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_never_past_the_ttl() {
        let ttl = Duration::from_secs(600);
        let mut backoff = FIRST_BACKOFF;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let (next, b) = backoff_step(backoff, ttl);
            waits.push(next.as_secs());
            backoff = b;
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            backoff_step(Duration::from_secs(8), Duration::from_secs(2)).0,
            Duration::from_secs(2)
        );
    }
}
