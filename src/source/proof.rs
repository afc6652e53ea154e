//! What a sign-in proves, decided without I/O: from the source's config, its
//! vendor quirks, the validated ID token's claims and the profile the
//! provider gave, the identity or the reason to refuse. `Sources::finish`
//! gathers the inputs (code exchange, ID token, profile calls) and calls
//! [`prove`] last.

use serde_json::Value;

use super::{claims, SourceError};
use crate::config::presets::{self, Quirks};
use crate::config::Source;
use crate::identity::Identity;

/// What the provider said about the person beyond the ID token.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The profile's fields; an empty object when none was fetched.
    pub fields: Value,
    /// Whether they came from the source's profile endpoint (userinfo),
    /// which must then name the ID token's subject.
    pub fetched: bool,
}

/// What the sign-in proves about the person.
#[derive(Debug, Clone, PartialEq)]
pub struct Proof {
    /// The identity at the source.
    pub identity: Identity,
    /// The provider's session id (`sid`), for back-channel logout.
    pub oidc_sid: Option<String>,
    /// The ID token's claims overlaid with the profile's, for policy expressions.
    pub claims: Value,
}

/// Decides what the ID token's claims (OIDC sources) and the profile prove:
/// the profile must be about the ID token's subject (OIDC Core §5.3.2,
/// unless the vendor's profile has no `sub`), the claims map to an
/// identity, and the preset decides whether an email is trusted.
pub fn prove(
    source: &Source,
    quirks: Quirks,
    id_claims: Option<&Value>,
    profile: &Profile,
) -> Result<Proof, SourceError> {
    same_subject(quirks, id_claims, profile)?;
    let mapped = claims::map(&source.claims, &profile.fields, id_claims)?;
    let email_verified = match source.preset.map(|p| p.email_trust) {
        Some(presets::EmailTrust::Always) => true,
        Some(presets::EmailTrust::Unknown) => false,
        _ => mapped.email_verified,
    };
    let mut all_claims = id_claims
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    if let (Some(all), Value::Object(p)) = (all_claims.as_object_mut(), &profile.fields) {
        all.extend(p.clone());
    }
    let oidc_sid = id_claims
        .and_then(|c| c.get("sid"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Proof {
        identity: Identity {
            source: source.slug.clone(),
            identifier: mapped.identifier,
            username: mapped.username,
            email: mapped.email,
            email_verified: email_verified || source.trust_email,
            name: mapped.name,
            groups: mapped.groups,
        },
        oidc_sid,
        claims: all_claims,
    })
}

/// OIDC Core §5.3.2: userinfo must be about the ID token's subject; a
/// fetched profile without `sub` is refused as well.
fn same_subject(
    quirks: Quirks,
    id_claims: Option<&Value>,
    profile: &Profile,
) -> Result<(), SourceError> {
    let Some(claims) = id_claims.filter(|_| !quirks.profile_without_sub) else {
        return Ok(());
    };
    let sub = profile.fields.get("sub");
    if sub.is_some() && sub != claims.get("sub") {
        return Err(SourceError::SubjectMismatch);
    }
    if profile.fetched && sub.is_none() {
        return Err(SourceError::SubjectMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::presets::preset;
    use crate::config::SourceKind;

    /// A generic OIDC source as a config file states it.
    fn oidc_source() -> Source {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            r#"[server]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
[session]
secrets = ["feeQnjJyhqAI92I28IgVDanqRnYHerVyw+5HfOJDMK8="]
[store]
url = "sqlite::memory:"
[[source]]
slug = "corp"
type = "openidconnect"
consumer_key = "gw"
consumer_secret = "a client secret"
authorization_url = "https://idp.example/auth"
access_token_url = "https://idp.example/token"
profile_url = "https://idp.example/userinfo"
issuer = "https://idp.example"
oidc_jwks = "{\"keys\":[]}"
[[app]]
name = "wiki"
upstream = "http://127.0.0.1:9"
[[app.policy]]
on = ["access"]
effect = "allow"
"#,
        )
        .unwrap();
        let config = crate::config::load_with_env(&file, Vec::<(String, String)>::new()).unwrap();
        config.sources.into_iter().next().unwrap()
    }

    /// How a row's sign-in ends: the identifier and whether the email is
    /// trusted, or the refusal as the person is told it.
    fn outcome(result: Result<Proof, SourceError>) -> Result<(String, bool), String> {
        result
            .map(|p| (p.identity.identifier, p.identity.email_verified))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_quirk_and_claim_combination_proves_or_refuses_as_the_table_says() {
        const MISMATCH: &str = "the provider's profile is for another subject than its ID token";
        const NO_ID: &str = "the profile has no usable identifier at `sub`";
        let sub_a = json!({"sub": "a", "email": "a@x.example", "email_verified": true});
        let fetched = |fields: Value| Profile {
            fields,
            fetched: true,
        };
        let not_fetched = Profile {
            fields: json!({}),
            fetched: false,
        };
        let apple_name = Profile {
            fields: json!({"name": "Ann"}),
            fetched: false,
        };
        let none = Quirks::NONE;
        let without_sub = Quirks {
            profile_without_sub: true,
            ..Quirks::NONE
        };
        let trusted = preset(SourceKind::Mailcow);
        let distrusted = preset(SourceKind::EntraId);
        type Row<'a> = (
            &'a str,
            Option<&'static presets::Preset>,
            Quirks,
            Option<Value>,
            Profile,
            Result<(&'a str, bool), &'a str>,
        );
        let table: Vec<Row> = vec![
            (
                "userinfo about the ID token's subject proves it",
                None,
                none,
                Some(sub_a.clone()),
                fetched(json!({"sub": "a", "name": "Ann"})),
                Ok(("a", true)),
            ),
            (
                "userinfo about another subject is refused",
                None,
                none,
                Some(sub_a.clone()),
                fetched(json!({"sub": "b"})),
                Err(MISMATCH),
            ),
            (
                "userinfo without a subject is refused",
                None,
                none,
                Some(sub_a.clone()),
                fetched(json!({"name": "Ann"})),
                Err(MISMATCH),
            ),
            (
                "a vendor profile without sub is not compared",
                None,
                without_sub,
                Some(sub_a.clone()),
                fetched(json!({"name": "Ann"})),
                Ok(("a", true)),
            ),
            (
                "no profile endpoint: the ID token alone proves it",
                None,
                none,
                Some(sub_a.clone()),
                not_fetched.clone(),
                Ok(("a", true)),
            ),
            (
                "no profile endpoint, but a name from the callback about no subject",
                None,
                none,
                Some(sub_a.clone()),
                apple_name,
                Ok(("a", true)),
            ),
            (
                "OAuth 2.0: the profile alone proves it",
                None,
                none,
                None,
                fetched(json!({"sub": "p", "email": "p@x.example"})),
                Ok(("p", false)),
            ),
            (
                "OAuth 2.0: a profile without an identifier is refused",
                None,
                none,
                None,
                fetched(json!({"name": "Ann"})),
                Err(NO_ID),
            ),
            (
                "an ID token without sub and no profile is refused",
                None,
                none,
                Some(json!({"email": "a@x.example"})),
                not_fetched.clone(),
                Err(NO_ID),
            ),
            (
                "a preset that always verifies emails trusts an unverified one",
                trusted,
                none,
                None,
                fetched(json!({"sub": "p", "email": "p@x.example"})),
                Ok(("p", true)),
            ),
            (
                "a preset whose emails are unknown never trusts one",
                distrusted,
                without_sub,
                Some(sub_a.clone()),
                fetched(json!({"email_verified": true})),
                Ok(("a", false)),
            ),
        ];
        let base = oidc_source();
        for (case, preset, quirks, id_claims, profile, expected) in table {
            let mut source = base.clone();
            source.preset = preset;
            let got = outcome(prove(&source, quirks, id_claims.as_ref(), &profile));
            let expected = expected
                .map(|(id, verified)| (id.to_string(), verified))
                .map_err(str::to_string);
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn the_claims_overlay_the_profile_on_the_id_token_and_keep_its_sid() {
        let proof = prove(
            &oidc_source(),
            Quirks::NONE,
            Some(&json!({"sub": "a", "sid": "s1", "name": "From token"})),
            &Profile {
                fields: json!({"sub": "a", "name": "From profile"}),
                fetched: true,
            },
        )
        .unwrap();
        assert_eq!(proof.oidc_sid.as_deref(), Some("s1"));
        assert_eq!(
            proof.claims,
            json!({"sub": "a", "sid": "s1", "name": "From profile"})
        );
        assert_eq!(proof.identity.source, "corp");
        assert_eq!(proof.identity.name.as_deref(), Some("From profile"));
    }
}
