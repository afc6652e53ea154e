//! Audit events: who signed in, enrolled, linked, was refused, signed out or
//! was revoked, what an operator changed (`users …`, a config reload). One
//! line each under the log target `portcullis::audit`, and one count in
//! `portcullis_auth_events_total{event,reason}`.
//!
//! A line carries facts an operator can act on (time, request id, app,
//! source, user, client IP, a stable reason code) and never a token, code,
//! state, cookie or secret: the event is built only from the fields below,
//! none of which can hold one.

use std::net::IpAddr;
use std::time::SystemTime;

use prometheus::{IntCounterVec, Opts};

use crate::config::LogFormat;

/// The log target of every audit line (route it with `RUST_LOG`).
pub const TARGET: &str = "portcullis::audit";

/// The counter's `reason` label of an event that refused nothing.
pub const NO_REASON: &str = "none";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A connected user signed in (policy `authenticate`).
    SignIn,
    /// A new user was created by a sign-in (policy `enroll`).
    Enroll,
    /// An identity was connected to an existing user by a sign-in (policy `link`).
    Link,
    /// A sign-in, link, handoff, sign-out or back-channel logout was refused.
    Refusal,
    /// A person signed out: their session is revoked.
    SignOut,
    /// The gateway ended a session on its own (its access token could not be renewed).
    Revocation,
    /// A provider's back-channel logout revoked sessions.
    BackchannelLogout,
    /// `portcullis users disable`.
    UserDisable,
    /// `portcullis users enable`.
    UserEnable,
    /// `portcullis users unlink`.
    UserUnlink,
    /// `portcullis users rename`.
    UserRename,
    /// A SIGHUP reload, applied or refused.
    ConfigReload,
}

impl Kind {
    /// Every kind, in the README's order.
    pub const ALL: [Kind; 12] = [
        Kind::SignIn,
        Kind::Enroll,
        Kind::Link,
        Kind::Refusal,
        Kind::SignOut,
        Kind::Revocation,
        Kind::BackchannelLogout,
        Kind::UserDisable,
        Kind::UserEnable,
        Kind::UserUnlink,
        Kind::UserRename,
        Kind::ConfigReload,
    ];

    /// The stable name in the line's `event` field and the counter's `event` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SignIn => "sign_in",
            Kind::Enroll => "enroll",
            Kind::Link => "link",
            Kind::Refusal => "refusal",
            Kind::SignOut => "sign_out",
            Kind::Revocation => "revocation",
            Kind::BackchannelLogout => "backchannel_logout",
            Kind::UserDisable => "user.disable",
            Kind::UserEnable => "user.enable",
            Kind::UserUnlink => "user.unlink",
            Kind::UserRename => "user.rename",
            Kind::ConfigReload => "config.reload",
        }
    }
}

/// Why something was refused: a stable code for alerts and dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No login state in this browser for the response: not started here,
    /// already used (replayed), or the `state` is not one we issued.
    StateInvalid,
    /// The login state is older than 10 minutes.
    StateExpired,
    /// The response belongs to another flow or provider (`iss`, source, request token).
    ResponseMismatch,
    /// The response is malformed: no code, a repeated parameter, code and error together.
    ResponseMalformed,
    /// The provider answered with an error instead of a code (e.g. the person cancelled).
    ProviderDenied,
    /// The token endpoint refused the code (replayed, injected, expired).
    CodeRefused,
    /// The ID token, the signed profile or the profile's `sub` did not validate.
    IdTokenInvalid,
    /// A source policy refused.
    PolicyDenied,
    /// An app's access rules refused a signed-in person or a machine (403).
    AccessDenied,
    /// The source does not enroll new users.
    EnrollClosed,
    /// The user is disabled.
    UserDisabled,
    /// The identity belongs to another user, or `email_deny`/`username_deny` found one.
    IdentityTaken,
    /// Several users share the value the matching mode looks up.
    MatchAmbiguous,
    /// A handoff code that is unknown, used, expired, another browser's, or whose session ended.
    HandoffInvalid,
    /// A callback or handoff arrived on the wrong host.
    WrongHost,
    /// A link begun on an app host reached a sign-in host signed in as another session.
    LinkSessionMismatch,
    /// The source is not ready (discovery pending).
    SourceNotReady,
    /// The provider failed: unreachable, an error or garbage instead of an answer.
    ProviderError,
    /// The provider did not answer in time.
    ProviderTimeout,
    /// The user store is unavailable.
    StoreUnavailable,
    /// The gateway itself failed (no random values, a cookie it could not seal).
    Internal,
    /// A sign-out POST from another origin.
    CrossOrigin,
    /// A back-channel `logout_token` that is missing or does not verify.
    LogoutTokenInvalid,
    /// A back-channel `logout_token` whose `jti` was already used.
    LogoutTokenReplayed,
    /// A reloaded config that does not validate (the running one keeps serving).
    ConfigInvalid,
}

impl Reason {
    /// Every reason, in the README's order.
    pub const ALL: [Reason; 25] = [
        Reason::StateInvalid,
        Reason::StateExpired,
        Reason::ResponseMismatch,
        Reason::ResponseMalformed,
        Reason::ProviderDenied,
        Reason::CodeRefused,
        Reason::IdTokenInvalid,
        Reason::PolicyDenied,
        Reason::AccessDenied,
        Reason::EnrollClosed,
        Reason::UserDisabled,
        Reason::IdentityTaken,
        Reason::MatchAmbiguous,
        Reason::HandoffInvalid,
        Reason::WrongHost,
        Reason::LinkSessionMismatch,
        Reason::SourceNotReady,
        Reason::ProviderError,
        Reason::ProviderTimeout,
        Reason::StoreUnavailable,
        Reason::Internal,
        Reason::CrossOrigin,
        Reason::LogoutTokenInvalid,
        Reason::LogoutTokenReplayed,
        Reason::ConfigInvalid,
    ];

    /// The stable code in the line's `reason` field and the counter's `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::StateInvalid => "state_invalid",
            Reason::StateExpired => "state_expired",
            Reason::ResponseMismatch => "response_mismatch",
            Reason::ResponseMalformed => "response_malformed",
            Reason::ProviderDenied => "provider_denied",
            Reason::CodeRefused => "code_refused",
            Reason::IdTokenInvalid => "id_token_invalid",
            Reason::PolicyDenied => "policy_denied",
            Reason::AccessDenied => "access_denied",
            Reason::EnrollClosed => "enroll_closed",
            Reason::UserDisabled => "user_disabled",
            Reason::IdentityTaken => "identity_taken",
            Reason::MatchAmbiguous => "match_ambiguous",
            Reason::HandoffInvalid => "handoff_invalid",
            Reason::WrongHost => "wrong_host",
            Reason::LinkSessionMismatch => "link_session_mismatch",
            Reason::SourceNotReady => "source_not_ready",
            Reason::ProviderError => "provider_error",
            Reason::ProviderTimeout => "provider_timeout",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::Internal => "internal_error",
            Reason::CrossOrigin => "cross_origin",
            Reason::LogoutTokenInvalid => "logout_token_invalid",
            Reason::LogoutTokenReplayed => "logout_token_replayed",
            Reason::ConfigInvalid => "config_invalid",
        }
    }
}

/// One audit event: what happened and the facts around it. Absent facts are
/// left out of the line.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// What happened.
    pub kind: Kind,
    /// Why it was refused (refusals and refused reloads only).
    pub reason: Option<Reason>,
    /// The request's id, as its page, JSON error and access line show it.
    pub request_id: Option<&'a str>,
    /// The app the request was for.
    pub app: Option<&'a str>,
    /// The source's slug.
    pub source: Option<&'a str>,
    /// The local user's id.
    pub user_id: Option<&'a str>,
    /// The local user's username (before a rename).
    pub username: Option<&'a str>,
    /// The client, after `trusted_proxies`: the access line's `client_ip`.
    pub client_ip: Option<IpAddr>,
    /// The HTTP status the client got (refusals).
    pub status: Option<u16>,
    /// The username after a rename.
    pub new_username: Option<&'a str>,
    /// How many sessions were revoked.
    pub sessions: Option<u64>,
    /// Why the gateway revoked a session on its own.
    pub cause: Option<&'a str>,
    /// The config generation now serving (reloads).
    pub generation: Option<u64>,
    /// `ok` or `error` (reloads, as in `portcullis_config_reloads_total{result}`).
    pub result: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// An event of `kind` with no facts yet; fill them with struct update syntax.
    pub fn new(kind: Kind) -> Self {
        Event {
            kind,
            reason: None,
            request_id: None,
            app: None,
            source: None,
            user_id: None,
            username: None,
            client_ip: None,
            status: None,
            new_username: None,
            sessions: None,
            cause: None,
            generation: None,
            result: None,
        }
    }

    /// The counter's `reason` label: the code, or [`NO_REASON`].
    pub fn reason_label(&self) -> &'static str {
        self.reason.map_or(NO_REASON, Reason::as_str)
    }

    /// The event as one JSON object (the payload of a text line), stamped `now`.
    pub fn payload(&self, now: SystemTime) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            m.insert(k.to_string(), v);
        };
        put(
            "time",
            humantime::format_rfc3339_millis(now).to_string().into(),
        );
        put("event", self.kind.as_str().into());
        put("reason", self.reason_label().into());
        let texts = [
            ("request_id", self.request_id),
            ("app", self.app),
            ("source", self.source),
            ("user_id", self.user_id),
            ("username", self.username),
            ("new_username", self.new_username),
            ("cause", self.cause),
            ("result", self.result),
        ];
        for (k, v) in texts {
            if let Some(v) = v {
                put(k, v.into());
            }
        }
        if let Some(ip) = self.client_ip {
            put("client_ip", ip.to_string().into());
        }
        if let Some(s) = self.status {
            put("status", s.into());
        }
        if let Some(n) = self.sessions {
            put("sessions", n.into());
        }
        if let Some(g) = self.generation {
            put("generation", g.into());
        }
        serde_json::Value::Object(m)
    }
}

/// The audit line of an event's `payload`: one JSON object, the event's
/// facts at its top (DESIGN: "one JSON line each"), with `level` and
/// `target`; in the JSON log also the `timestamp` and the `fields` object
/// every other line of that log has, holding the same facts.
fn line_of(payload: serde_json::Value, format: LogFormat, now: SystemTime) -> String {
    let serde_json::Value::Object(mut line) = payload else {
        return payload.to_string();
    };
    if format == LogFormat::Json {
        let timestamp = humantime::format_rfc3339_micros(now).to_string();
        line.insert("fields".into(), serde_json::Value::Object(line.clone()));
        line.insert("timestamp".into(), timestamp.into());
    }
    line.insert("level".into(), "INFO".into());
    line.insert("target".into(), "portcullis::audit".into());
    serde_json::Value::Object(line).to_string()
}

/// Writes audit lines and counts them. Cheap to clone (the counter is shared).
#[derive(Debug, Clone)]
pub struct Audit {
    /// `Some(Text)`: the line is the event's JSON alone; otherwise the
    /// event's facts are the line's fields (the JSON log, or a library
    /// user's own subscriber).
    format: Option<LogFormat>,
    /// The log thread's buffer, where a text log's audit lines go whole (no
    /// timestamp or level in front: each is one JSON object).
    writer: Option<crate::logging::LogWriter>,
    events: IntCounterVec,
    /// The wall clock that stamps each line.
    clock: crate::clock::Clock,
}

impl Audit {
    /// An audit writer for a log of `format` (`None`: a subscriber the
    /// embedding program installed), with every series at 0.
    pub fn new(
        format: Option<LogFormat>,
        clock: crate::clock::Clock,
    ) -> Result<Self, prometheus::Error> {
        let events = IntCounterVec::new(
            Opts::new(
                "auth_events_total",
                "Audit events, by event and refusal reason (\"none\" for events that refused nothing)",
            ),
            &["event", "reason"],
        )?;
        // At 0 from the start, so that rate() and alerts see the first one.
        for kind in Kind::ALL {
            if kind != Kind::Refusal {
                events.get_metric_with_label_values(&[kind.as_str(), NO_REASON])?;
            }
        }
        for reason in Reason::ALL {
            let kind = if reason == Reason::ConfigInvalid {
                Kind::ConfigReload
            } else {
                Kind::Refusal
            };
            events.get_metric_with_label_values(&[kind.as_str(), reason.as_str()])?;
        }
        Ok(Audit {
            format,
            writer: None,
            events,
            clock,
        })
    }

    /// Writes a text log's audit lines straight into `writer` (the log
    /// thread's buffer the `tracing` lines go to), each a JSON object alone.
    pub fn writing_to(mut self, writer: crate::logging::LogWriter) -> Self {
        self.writer = Some(writer);
        self
    }

    /// The counter, to register with the gateway's metrics.
    pub fn collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(self.events.clone())
    }

    /// Counts `event` and writes its line (unless `RUST_LOG` turned the target off).
    pub fn emit(&self, event: &Event<'_>) {
        if let Ok(c) = self
            .events
            .get_metric_with_label_values(&[event.kind.as_str(), event.reason_label()])
        {
            c.inc();
        }
        let now = self.clock.now();
        if let (Some(format), Some(writer)) = (self.format, &self.writer) {
            // `RUST_LOG` still decides (`portcullis::audit=off`).
            if !tracing::enabled!(target: "portcullis::audit", tracing::Level::INFO) {
                return;
            }
            let mut line = line_of(event.payload(now), format, now).into_bytes();
            line.push(b'\n');
            writer.write_line(&line);
            return;
        }
        if self.format == Some(LogFormat::Text) {
            let payload = event.payload(now);
            tracing::info!(target: "portcullis::audit", "{payload}");
            return;
        }
        let time = humantime::format_rfc3339_millis(now);
        tracing::info!(
            target: "portcullis::audit",
            time = %time,
            event = event.kind.as_str(),
            reason = event.reason_label(),
            request_id = event.request_id,
            app = event.app,
            source = event.source,
            user_id = event.user_id,
            username = event.username,
            new_username = event.new_username,
            client_ip = event.client_ip.map(tracing::field::display),
            status = event.status,
            sessions = event.sessions,
            cause = event.cause,
            generation = event.generation,
            result = event.result,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_and_reason_has_its_own_code() {
        let kinds: std::collections::HashSet<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds.len(), Kind::ALL.len());
        let reasons: std::collections::HashSet<_> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons.len(), Reason::ALL.len());
        assert!(!reasons.contains(NO_REASON));
    }

    #[test]
    fn a_payload_holds_the_facts_given_and_leaves_out_the_absent_ones() {
        let event = Event {
            reason: Some(Reason::StateInvalid),
            request_id: Some("AbC-_123xyz0"),
            source: Some("corp"),
            client_ip: Some("2001:db8::7".parse().unwrap()),
            status: Some(400),
            ..Event::new(Kind::Refusal)
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let p = event.payload(at);
        assert_eq!(p["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(p["event"], "refusal");
        assert_eq!(p["reason"], "state_invalid");
        assert_eq!(p["request_id"], "AbC-_123xyz0");
        assert_eq!(p["source"], "corp");
        assert_eq!(p["client_ip"], "2001:db8::7");
        assert_eq!(p["status"], 400);
        for absent in ["app", "user_id", "username", "sessions", "generation"] {
            assert!(p.get(absent).is_none(), "{absent} in {p}");
        }
    }

    #[test]
    fn an_event_that_refused_nothing_is_counted_with_reason_none() {
        let audit = Audit::new(None, crate::clock::Clock::system()).unwrap();
        audit.emit(&Event::new(Kind::SignOut));
        let refused = Event {
            reason: Some(Reason::PolicyDenied),
            ..Event::new(Kind::Refusal)
        };
        audit.emit(&refused);
        audit.emit(&refused);
        let count = |e: &str, r: &str| audit.events.with_label_values(&[e, r]).get();
        assert_eq!(count("sign_out", "none"), 1);
        assert_eq!(count("refusal", "policy_denied"), 2);
        assert_eq!(count("sign_in", "none"), 0);
    }
}
