//! Prometheus metrics with bounded labels: one series per (app, outcome),
//! handles resolved at start so the request path does no label lookup.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// Label used when no app matched.
pub const NO_APP: &str = "-";

/// Metrics of one gateway.
pub struct Metrics {
    registry: Registry,
    requests_vec: IntCounterVec,
    durations_vec: HistogramVec,
    /// [app][outcome] -> counter; the last app row is [`NO_APP`].
    requests: Vec<Vec<IntCounter>>,
    durations: Vec<Vec<Histogram>>,
}

impl Metrics {
    /// Registers the series for these app names.
    pub fn new(app_names: &[String]) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("portcullis".into()), None)?;
        let requests_vec = IntCounterVec::new(
            Opts::new("requests_total", "Requests handled, by app and outcome"),
            &["app", "outcome"],
        )?;
        let durations_vec = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request to last response byte, by app and outcome",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["app", "outcome"],
        )?;
        registry.register(Box::new(requests_vec.clone()))?;
        registry.register(Box::new(durations_vec.clone()))?;
        Self::rows(registry, requests_vec, durations_vec, app_names)
    }

    /// The same registry and series with rows for these apps (a reloaded
    /// config's): counts of apps in both configs carry on.
    pub fn for_apps(&self, app_names: &[String]) -> Result<Self, prometheus::Error> {
        Self::rows(
            self.registry.clone(),
            self.requests_vec.clone(),
            self.durations_vec.clone(),
            app_names,
        )
    }

    fn rows(
        registry: Registry,
        requests_vec: IntCounterVec,
        durations_vec: HistogramVec,
        app_names: &[String],
    ) -> Result<Self, prometheus::Error> {
        let mut requests = Vec::new();
        let mut durations = Vec::new();
        for app in app_names
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(NO_APP))
        {
            let mut r = Vec::new();
            let mut d = Vec::new();
            for o in Outcome::ALL {
                r.push(requests_vec.get_metric_with_label_values(&[app, o.label()])?);
                d.push(durations_vec.get_metric_with_label_values(&[app, o.label()])?);
            }
            requests.push(r);
            durations.push(d);
        }
        Ok(Metrics {
            registry,
            requests_vec,
            durations_vec,
            requests,
            durations,
        })
    }

    /// Adds another part's series (e.g. JWKS fetches) to this registry.
    pub fn register(
        &self,
        c: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(c)
    }

    /// Removes a part's series (a replaced source's) from this registry.
    pub fn unregister(&self, c: Box<dyn prometheus::core::Collector>) {
        // Not registered (never was, or a name clash at start): nothing to remove.
        let _ = self.registry.unregister(c);
    }

    /// Counts one finished request.
    pub fn observe(&self, app: Option<usize>, outcome: Outcome, seconds: f64) {
        let row = app.unwrap_or(self.requests.len().saturating_sub(1));
        let row = row.min(self.requests.len().saturating_sub(1));
        if let Some(c) = self.requests.get(row).and_then(|r| r.get(outcome.index())) {
            c.inc();
        }
        if let Some(h) = self.durations.get(row).and_then(|r| r.get(outcome.index())) {
            h.observe(seconds);
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// How a request ended, as a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Proxied on a public path.
    Public,
    /// Proxied for an authenticated principal.
    Authenticated,
    /// A browser was sent to sign in.
    Redirected,
    /// Refused with 401.
    Unauthorized,
    /// Refused by an access rule or a same-origin check: 403 (401 from
    /// `/_auth/check`, which answers 200 or 401 only).
    Forbidden,
    /// No app for this host and path, or an unknown `/_auth` URL.
    NotFound,
    /// Refused for bad framing, a bad path or oversized headers.
    BadRequest,
    /// Answered by the gateway itself (`/_auth/*`).
    AuthEndpoint,
    /// The upstream failed.
    UpstreamError,
    /// The request did not finish (client gone, internal error).
    Error,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 10] = [
        Outcome::Public,
        Outcome::Authenticated,
        Outcome::Redirected,
        Outcome::Unauthorized,
        Outcome::Forbidden,
        Outcome::NotFound,
        Outcome::BadRequest,
        Outcome::AuthEndpoint,
        Outcome::UpstreamError,
        Outcome::Error,
    ];

    /// The metric and log label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Public => "public",
            Outcome::Authenticated => "authenticated",
            Outcome::Redirected => "redirected",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Forbidden => "forbidden",
            Outcome::NotFound => "not_found",
            Outcome::BadRequest => "bad_request",
            Outcome::AuthEndpoint => "auth_endpoint",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Error => "error",
        }
    }

    /// Position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}
