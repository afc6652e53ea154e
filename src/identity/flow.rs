//! The sign-in decision of docs/design.md "Sign-in outcomes" (authentik's flow
//! manager) as one pure function: what the source proved and what the
//! directory holds go in; authenticate, link, enroll or refuse comes out.

use crate::config::UserMatchingMode;

use super::{Identity, User};

/// A user found by the matching mode (email or username).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match<'a> {
    /// The mode does not look anyone up (`identifier`).
    NotLooked,
    /// Looked up; nobody has that value.
    Nobody,
    /// Exactly this user has it.
    Found(&'a User),
    /// Several users have it: never guess.
    Ambiguous,
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// What the source proved.
    pub identity: &'a Identity,
    /// The user already connected to this identity, if any.
    pub connected: Option<&'a User>,
    /// The user a `/_auth/link` flow links to: the user of the session that
    /// started it, still this browser's. `None` for an ordinary login, even
    /// when the browser carries a session: that session never decides (SES-08).
    pub link_to: Option<&'a User>,
    /// The user the matching mode found.
    pub matched: Match<'a>,
    /// The source's matching mode.
    pub mode: UserMatchingMode,
    /// Whether new users may enroll through the source.
    pub enroll: bool,
    /// Whether the source's emails count as verified.
    pub trust_email: bool,
}

/// Why a sign-in is refused; shown on the 403 page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The connected user is disabled.
    #[error("This account is disabled.")]
    Disabled,
    /// The identity belongs to another user than the signed-in one.
    #[error("This {0} account is already linked to another user; it cannot be moved.")]
    LinkedElsewhere(String),
    /// `email_deny` / `username_deny` found an existing user.
    #[error("A user with this {0} already exists; sign in with your existing account instead.")]
    Taken(&'static str),
    /// Several users share the value the mode matches on.
    #[error("Several users have this {0}; ask an administrator to link your account.")]
    Ambiguous(&'static str),
    /// Enrollment is closed for the source.
    #[error("Enrollment is closed: new accounts cannot be created through this provider.")]
    EnrollClosed,
}

/// The outcome of a sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sign in as this existing, connected user (policy `authenticate`).
    Authenticate(String),
    /// Connect the identity to this existing user and sign in as them (policy `link`).
    Link(String),
    /// Create a user with this identity (policy `enroll`); the note explains
    /// why an email match was not used, when that happened.
    Enroll(Option<&'static str>),
    /// Refuse; nothing is written.
    Refuse(Refusal),
}

/// What the matching mode looks up, if anything: `("email", value)` or `("username", value)`.
pub fn lookup_key(
    mode: UserMatchingMode,
    identity: &Identity,
) -> Option<(&'static str, Option<&str>)> {
    match mode {
        UserMatchingMode::Identifier => None,
        UserMatchingMode::EmailLink | UserMatchingMode::EmailDeny => {
            Some(("email", identity.email.as_deref()))
        }
        UserMatchingMode::UsernameLink | UserMatchingMode::UsernameDeny => {
            Some(("username", identity.username.as_deref()))
        }
    }
}

/// Decides the outcome (docs/design.md steps 1–4, in order).
pub fn decide(f: &Facts<'_>) -> Outcome {
    // 1. A connection exists: authenticate that user.
    if let Some(user) = f.connected {
        if let Some(me) = f.link_to {
            if me.id != user.id {
                return Outcome::Refuse(Refusal::LinkedElsewhere(f.identity.source.clone()));
            }
        }
        if user.disabled {
            return Outcome::Refuse(Refusal::Disabled);
        }
        return Outcome::Authenticate(user.id.clone());
    }
    // 2. A link flow, bound to the session that started it: link the new identity to its user.
    if let Some(me) = f.link_to {
        if me.disabled {
            return Outcome::Refuse(Refusal::Disabled);
        }
        return Outcome::Link(me.id.clone());
    }
    // 3. The matching mode.
    let mut note = None;
    // Without the value the mode matches on, nobody has it: DESIGN's "else
    // enroll".
    let key = lookup_key(f.mode, f.identity).filter(|(_, v)| v.is_some_and(|v| !v.is_empty()));
    if let Some((what, _)) = key {
        let deny = matches!(
            f.mode,
            UserMatchingMode::EmailDeny | UserMatchingMode::UsernameDeny
        );
        // `email_link` links "only where the source says `email_verified`":
        // an unvouched email proves nothing about who owns the account, so
        // it finds nobody, however many users hold it.
        let unvouched =
            f.mode == UserMatchingMode::EmailLink && !(f.identity.email_verified || f.trust_email);
        match (&f.matched, deny) {
            (Match::Found(_) | Match::Ambiguous, false) if unvouched => {
                note = Some("Your email address is not verified by the provider, so it was not used to find your existing account.");
            }
            (Match::Ambiguous, _) => return Outcome::Refuse(Refusal::Ambiguous(what)),
            (Match::Found(_), true) => return Outcome::Refuse(Refusal::Taken(what)),
            (Match::Found(user), false) if user.disabled => {
                return Outcome::Refuse(Refusal::Disabled)
            }
            (Match::Found(user), false) => return Outcome::Link(user.id.clone()),
            (Match::Nobody | Match::NotLooked, _) => {}
        }
    }
    // 4. Enroll.
    if !f.enroll {
        return Outcome::Refuse(Refusal::EnrollClosed);
    }
    Outcome::Enroll(note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use UserMatchingMode::*;

    fn user(id: &str, disabled: bool) -> User {
        User {
            id: id.into(),
            username: id.into(),
            email: Some(format!("{id}@example.com")),
            email_verified: true,
            name: None,
            home_source: Some("corp".into()),
            groups: vec![],
            disabled,
            created_at: 0,
        }
    }

    fn identity(email: Option<&str>, verified: bool, username: Option<&str>) -> Identity {
        Identity {
            source: "corp".into(),
            identifier: "42".into(),
            username: username.map(str::to_string),
            email: email.map(str::to_string),
            email_verified: verified,
            name: None,
            groups: vec![],
        }
    }

    #[test]
    fn every_row_of_the_sign_in_outcomes() {
        let alice = user("alice", false);
        let bob = user("bob", false);
        let carol_disabled = user("carol", true);
        let id_full = identity(Some("alice@example.com"), true, Some("alice"));
        let id_unverified = identity(Some("alice@example.com"), false, Some("alice"));
        let id_bare = identity(None, false, None);
        let base = |identity| Facts {
            identity,
            connected: None,
            link_to: None,
            matched: Match::NotLooked,
            mode: Identifier,
            enroll: true,
            trust_email: false,
        };
        let rows: Vec<(&str, Facts<'_>, Outcome)> = vec![
            ("connection exists", Facts { connected: Some(&alice), ..base(&id_full) }, Outcome::Authenticate("alice".into())),
            ("connection of a disabled user", Facts { connected: Some(&carol_disabled), ..base(&id_full) }, Outcome::Refuse(Refusal::Disabled)),
            ("link flow for an identity already the linking user's", Facts { connected: Some(&alice), link_to: Some(&alice), ..base(&id_full) }, Outcome::Authenticate("alice".into())),
            ("link flow for an identity of another user", Facts { connected: Some(&bob), link_to: Some(&alice), ..base(&id_full) }, Outcome::Refuse(Refusal::LinkedElsewhere("corp".into()))),
            ("link flow links to its session's user", Facts { link_to: Some(&alice), ..base(&id_full) }, Outcome::Link("alice".into())),
            ("identifier enrolls", base(&id_full), Outcome::Enroll(None)),
            ("email_link links a verified match", Facts { mode: EmailLink, matched: Match::Found(&alice), ..base(&id_full) }, Outcome::Link("alice".into())),
            ("email_link with trust_email links", Facts { mode: EmailLink, matched: Match::Found(&alice), trust_email: true, ..base(&id_unverified) }, Outcome::Link("alice".into())),
            ("email_link does not link an unverified email", Facts { mode: EmailLink, matched: Match::Found(&alice), ..base(&id_unverified) }, Outcome::Enroll(Some("Your email address is not verified by the provider, so it was not used to find your existing account."))),
            ("email_link without a match enrolls", Facts { mode: EmailLink, matched: Match::Nobody, ..base(&id_full) }, Outcome::Enroll(None)),
            ("email_deny refuses a match", Facts { mode: EmailDeny, matched: Match::Found(&alice), ..base(&id_full) }, Outcome::Refuse(Refusal::Taken("email"))),
            ("email_deny without a match enrolls", Facts { mode: EmailDeny, matched: Match::Nobody, ..base(&id_full) }, Outcome::Enroll(None)),
            ("username_link links", Facts { mode: UsernameLink, matched: Match::Found(&alice), ..base(&id_full) }, Outcome::Link("alice".into())),
            ("username_deny refuses", Facts { mode: UsernameDeny, matched: Match::Found(&alice), ..base(&id_full) }, Outcome::Refuse(Refusal::Taken("username"))),
            ("email_link without an email enrolls", Facts { mode: EmailLink, matched: Match::Nobody, ..base(&id_bare) }, Outcome::Enroll(None)),
            ("username_deny without a username enrolls", Facts { mode: UsernameDeny, matched: Match::Nobody, ..base(&id_bare) }, Outcome::Enroll(None)),
            ("ambiguous email", Facts { mode: EmailLink, matched: Match::Ambiguous, ..base(&id_full) }, Outcome::Refuse(Refusal::Ambiguous("email"))),
            ("email_link does not look an unverified email up among several holders", Facts { mode: EmailLink, matched: Match::Ambiguous, ..base(&id_unverified) }, Outcome::Enroll(Some("Your email address is not verified by the provider, so it was not used to find your existing account."))),
            ("email_link with an unverified email enrolls even where the match is disabled", Facts { mode: EmailLink, matched: Match::Found(&carol_disabled), ..base(&id_unverified) }, Outcome::Enroll(Some("Your email address is not verified by the provider, so it was not used to find your existing account."))),
            ("link to a disabled match", Facts { mode: UsernameLink, matched: Match::Found(&carol_disabled), ..base(&id_full) }, Outcome::Refuse(Refusal::Disabled)),
            ("enroll = false", Facts { enroll: false, ..base(&id_full) }, Outcome::Refuse(Refusal::EnrollClosed)),
            ("link flow of a disabled user", Facts { link_to: Some(&carol_disabled), ..base(&id_full) }, Outcome::Refuse(Refusal::Disabled)),
            ("link flow links even where enrollment is closed", Facts { enroll: false, link_to: Some(&alice), ..base(&id_full) }, Outcome::Link("alice".into())),
            ("enroll = false still authenticates", Facts { enroll: false, connected: Some(&alice), ..base(&id_full) }, Outcome::Authenticate("alice".into())),
        ];
        for (name, facts, want) in rows {
            assert_eq!(decide(&facts), want, "{name}");
        }
    }
}
