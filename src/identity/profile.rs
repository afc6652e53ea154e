//! What a sign-in may change about a user (DESIGN "Sign-in outcomes"): only
//! the home source refreshes email and name, and an email is replaced only
//! by one its source vouches for. Pure.

use super::Identity;

/// The fields of a user that sign-ins refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Email.
    pub email: Option<String>,
    /// Whether a source vouches for `email`.
    pub email_verified: bool,
    /// Display name.
    pub name: Option<String>,
    /// The home source; `None` until one is known.
    pub home_source: Option<String>,
}

/// The profile after a sign-in (or link) through `identity.source`. A user
/// without a home (one from before homes were kept, with no connection left)
/// takes this source as home.
pub fn refreshed(current: &Profile, identity: &Identity) -> Profile {
    let home = current
        .home_source
        .as_deref()
        .is_none_or(|h| h == identity.source);
    if !home {
        // A linked source never overwrites what the home source said.
        return current.clone();
    }
    let (email, email_verified) = match (&identity.email, &current.email) {
        // A source that stops sending a field does not erase it.
        (None, _) => (current.email.clone(), current.email_verified),
        (Some(new), _) if identity.email_verified => (Some(new.clone()), true),
        (Some(new), None) => (Some(new.clone()), false),
        // The same address, no longer vouched for: keep it, say so.
        (Some(new), Some(old)) if new.eq_ignore_ascii_case(old) => (Some(old.clone()), false),
        // An address nobody vouches for never replaces the one on record.
        (Some(_), Some(_)) => (current.email.clone(), current.email_verified),
    };
    Profile {
        email,
        email_verified,
        name: identity.name.clone().or_else(|| current.name.clone()),
        home_source: Some(identity.source.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(email: Option<&str>, verified: bool, home: Option<&str>) -> Profile {
        Profile {
            email: email.map(Into::into),
            email_verified: verified,
            name: Some("Lou".into()),
            home_source: home.map(Into::into),
        }
    }

    fn via(source: &str, email: Option<&str>, verified: bool, name: Option<&str>) -> Identity {
        Identity {
            source: source.into(),
            identifier: "1".into(),
            username: Some("someone-else".into()),
            email: email.map(Into::into),
            email_verified: verified,
            name: name.map(Into::into),
            groups: vec![],
        }
    }

    #[test]
    fn every_row_of_the_profile_refresh() {
        let home = profile(Some("lou@corp.example"), true, Some("corp"));
        let rows: Vec<(&str, Profile, Identity, Profile)> = vec![
            (
                "a linked source changes nothing",
                home.clone(),
                via("tw", Some("lou@tw.example"), true, Some("Other")),
                home.clone(),
            ),
            (
                "home with a vouched new email replaces it",
                home.clone(),
                via("corp", Some("l@corp.example"), true, Some("Lou L")),
                Profile {
                    email: Some("l@corp.example".into()),
                    name: Some("Lou L".into()),
                    ..home.clone()
                },
            ),
            (
                "home with an unvouched new email keeps the old",
                home.clone(),
                via("corp", Some("evil@x.example"), false, None),
                home.clone(),
            ),
            (
                "home with the same email unvouched marks it unvouched",
                home.clone(),
                via("corp", Some("LOU@corp.example"), false, None),
                Profile {
                    email_verified: false,
                    ..home.clone()
                },
            ),
            (
                "home without an email keeps it",
                home.clone(),
                via("corp", None, false, None),
                home.clone(),
            ),
            (
                "an unvouched email fills an empty one",
                profile(None, false, Some("corp")),
                via("corp", Some("lou@corp.example"), false, None),
                Profile {
                    email: Some("lou@corp.example".into()),
                    ..profile(None, false, Some("corp"))
                },
            ),
            (
                "a user without a home adopts the source",
                profile(Some("a@b"), false, None),
                via("gh", Some("a@b"), true, Some("Lou G")),
                Profile {
                    email: Some("a@b".into()),
                    email_verified: true,
                    name: Some("Lou G".into()),
                    home_source: Some("gh".into()),
                },
            ),
        ];
        for (name, current, identity, want) in rows {
            assert_eq!(refreshed(&current, &identity), want, "{name}");
        }
    }
}
