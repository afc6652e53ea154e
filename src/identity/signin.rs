//! Applies the sign-in decision (`flow`) to the store: gathers the facts,
//! decides, and performs the one transaction the outcome calls for.

use std::sync::Arc;

use super::flow::{self, Facts, Match, Outcome, Refusal};
use super::store::{StoreError, UserStore};
use super::{Identity, NewSession, User};
use crate::config::PolicyAction;
use crate::config::{Source, UserMatchingMode};
use crate::policy::{Rules, Subject};

/// Why a sign-in did not produce a user.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The decision refused: show the reason (403), nothing was written.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// A source policy refused: show its message (403), nothing was written.
    #[error("{0}")]
    Policy(String),
    /// The store failed: try again (503).
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What a sign-in did to the directory (the audit event it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Signed in as the user already connected to the identity.
    Authenticated,
    /// Connected the identity to an existing user.
    Linked,
    /// Created a user with this identity.
    Enrolled,
}

/// The signed-in user, what the sign-in did and, for an enrollment that did
/// not use an email match, the note explaining why.
pub type Settled = (User, Settlement, Option<&'static str>);

/// Decides the outcome of a sign-in through `source`, checks the source's
/// policy for it (`claims` feed expressions), and writes it. `link_to` is
/// the user of a `/_auth/link` flow's own session, `None` for an ordinary login.
#[allow(clippy::too_many_arguments)]
pub async fn settle(
    store: &Arc<dyn UserStore>,
    source: &Source,
    rules: &Rules,
    identity: &Identity,
    claims: &serde_json::Value,
    link_to: Option<&User>,
    session: &NewSession,
    now: i64,
) -> Result<Settled, SignInError> {
    let connected = store
        .user_by_connection(&identity.source, &identity.identifier)
        .await?;
    let found;
    let matched = match flow::lookup_key(source.user_matching_mode, identity) {
        None => Match::NotLooked,
        Some((_, None)) => Match::Nobody,
        Some((what, Some(value))) => {
            let lookup = match (what, source.user_matching_mode) {
                // DESIGN: `email_deny` refuses "if one exists", `email_link`
                // links "to the user with that email": any user holding it,
                // vouched for or not (the incoming source must vouch for
                // it: `flow::decide` does not use a match of an unvouched one).
                ("email", UserMatchingMode::EmailDeny) => store.user_by_email(value).await,
                ("email", _) => match store.user_by_email(value).await {
                    // Several hold it: the one whose source vouched for it,
                    // so that a squatter who claimed the address unverified
                    // cannot lock its owner out of a new source.
                    Err(StoreError::Ambiguous) => store
                        .user_by_vouched_email(value)
                        .await
                        .and_then(|u| u.map(Some).ok_or(StoreError::Ambiguous)),
                    other => other,
                },
                _ => store.user_by_username(value).await,
            };
            match lookup {
                Ok(Some(u)) => {
                    found = u;
                    Match::Found(&found)
                }
                Ok(None) => Match::Nobody,
                Err(StoreError::Ambiguous) => Match::Ambiguous,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let facts = Facts {
        identity,
        connected: connected.as_ref(),
        link_to,
        matched,
        mode: source.user_matching_mode,
        enroll: source.enroll,
        trust_email: source.trust_email,
    };
    let outcome = flow::decide(&facts);
    // The local user the outcome signs in as, where one exists already.
    let local = match &outcome {
        Outcome::Authenticate(id) | Outcome::Link(id) => {
            [connected.as_ref(), link_to, matched_user(&facts)]
                .into_iter()
                .flatten()
                .find(|u| &u.id == id)
        }
        Outcome::Enroll(_) | Outcome::Refuse(_) => None,
    };
    source_policy_allows(rules, &outcome, identity, local, claims)?;
    write(store, outcome, identity, session, now).await
}

/// The user a matching mode found, if any.
fn matched_user<'a>(facts: &Facts<'a>) -> Option<&'a User> {
    match facts.matched {
        Match::Found(u) => Some(u),
        _ => None,
    }
}

/// The source's policy for what the outcome would do (`authenticate`,
/// `link`, `enroll`), asked about the user as the source describes them now,
/// under their local username where they have one (`local`): `users`
/// names local users, as access rules do (a rename, or a collision suffix
/// at enrollment, makes the two differ; the provider's name may be one its
/// holder chose).
fn source_policy_allows(
    rules: &Rules,
    outcome: &Outcome,
    identity: &Identity,
    local: Option<&User>,
    claims: &serde_json::Value,
) -> Result<(), SignInError> {
    let action = match outcome {
        Outcome::Authenticate(_) => PolicyAction::Authenticate,
        Outcome::Link(_) => PolicyAction::Link,
        Outcome::Enroll(_) => PolicyAction::Enroll,
        Outcome::Refuse(_) => return Ok(()),
    };
    // Without a local user: the name enrolling would start from.
    let username = local.map_or_else(
        || identity.username.as_deref().unwrap_or(&identity.identifier),
        |u| u.username.as_str(),
    );
    let subject = Subject {
        username,
        email: identity.email.as_deref(),
        email_verified: identity.email_verified,
        name: identity.name.as_deref(),
        groups: &identity.groups,
        claims,
        source: &identity.source,
    };
    rules
        .check(action, &subject, None)
        .map_err(SignInError::Policy)
}

/// Performs the one transaction the outcome calls for.
async fn write(
    store: &Arc<dyn UserStore>,
    outcome: Outcome,
    identity: &Identity,
    session: &NewSession,
    now: i64,
) -> Result<Settled, SignInError> {
    match outcome {
        Outcome::Authenticate(id) => Ok((
            store.sign_in(&id, identity, session, now).await?,
            Settlement::Authenticated,
            None,
        )),
        Outcome::Link(id) => match store.link(&id, identity, session, now).await {
            // The identity was connected to someone between the look-up and the write.
            Err(StoreError::AlreadyConnected) => {
                Err(Refusal::LinkedElsewhere(identity.source.clone()).into())
            }
            other => Ok((other?, Settlement::Linked, None)),
        },
        Outcome::Enroll(note) => match store.enroll(identity, session, now).await {
            // Another replica enrolled the same identity a moment ago: sign in as that user.
            Err(StoreError::AlreadyConnected) => match store
                .user_by_connection(&identity.source, &identity.identifier)
                .await?
            {
                Some(user) => Ok((
                    store.sign_in(&user.id, identity, session, now).await?,
                    Settlement::Authenticated,
                    None,
                )),
                None => Err(StoreError::AlreadyConnected.into()),
            },
            other => Ok((other?, Settlement::Enrolled, note)),
        },
        Outcome::Refuse(r) => Err(r.into()),
    }
}
