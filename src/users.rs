//! `portcullis users …`: the directory from the command line, against the
//! configured store. Each command returns the text (or JSON) to print.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::audit::{Audit, Event, Kind};
use crate::identity::store::{StoreError, UserStore};
use crate::identity::{Connection, SessionRecord, User};

/// What `portcullis users` can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Every user with connections and groups.
    List,
    /// One user, with sessions.
    Show(String),
    /// Disable a user (revokes their sessions).
    Disable(String),
    /// Enable a user.
    Enable(String),
    /// Remove a user's connection to a source.
    Unlink(String, String),
    /// Give a user a new username.
    Rename(String, String),
}

/// Why a `users` command failed: the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// No user matches: check the name with `portcullis users list`.
    #[error("no user `{0}`: give a username, user id or email (see `portcullis users list`)")]
    UnknownUser(String),
    /// The user has no connection to that source.
    #[error("user `{0}` has no connection to source `{1}`")]
    NotConnected(String, String),
    /// Another user has the username: choose another.
    #[error(
        "the username `{0}` is taken by another user (usernames are unique regardless of case)"
    )]
    UsernameTaken(String),
    /// The new username cannot be a username: say what is allowed.
    #[error("`{0}` cannot be a username: use 1 to 128 visible ASCII characters, without spaces or commas")]
    BadUsername(String),
    /// The store failed: check `store.url` and the database.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Finds a user by username, then id, then email.
async fn find(store: &Arc<dyn UserStore>, who: &str) -> Result<User, UsersError> {
    if let Some(u) = store.user_by_username(who).await? {
        return Ok(u);
    }
    if let Some(u) = store.user(who).await? {
        return Ok(u);
    }
    if who.contains('@') {
        if let Some(u) = store.user_by_email(who).await? {
            return Ok(u);
        }
    }
    Err(UsersError::UnknownUser(who.to_string()))
}

pub use crate::principal::valid_username;

fn user_json(u: &User, connections: &[Connection]) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "email_verified": u.email_verified,
        "home_source": u.home_source,
        "name": u.name,
        "disabled": u.disabled,
        "created_at": u.created_at,
        "groups": u.groups,
        "connections": connections.iter().map(|c| json!({
            "source": c.source, "identifier": c.identifier, "created_at": c.created_at,
        })).collect::<Vec<_>>(),
    })
}

fn session_json(s: &SessionRecord, now: i64) -> Value {
    json!({
        // Only a prefix: enough to tell sessions apart, never the whole id.
        "id": s.id.chars().take(8).collect::<String>(),
        "source": s.source,
        "created_at": s.created_at,
        "expires_at": s.expires_at,
        "revoked": s.revoked,
        "live": !s.revoked && s.expires_at > now,
    })
}

fn user_line(u: &User, connections: &[Connection]) -> String {
    let conns: Vec<String> = connections
        .iter()
        .map(|c| format!("{}:{}", c.source, c.identifier))
        .collect();
    format!(
        "{}{}  email={}  connections=[{}]  groups=[{}]",
        u.username,
        if u.disabled { " (disabled)" } else { "" },
        u.email.as_deref().unwrap_or("-"),
        conns.join(", "),
        u.groups.join(", ")
    )
}

/// Runs `cmd`; returns what to print.
pub async fn run(
    store: &Arc<dyn UserStore>,
    audit: &Audit,
    cmd: Command,
    as_json: bool,
    now: i64,
) -> Result<String, UsersError> {
    match cmd {
        Command::List => list(store, as_json).await,
        Command::Show(who) => show(store, &who, as_json, now).await,
        Command::Rename(who, new) => rename(store, audit, &who, &new, as_json).await,
        Command::Disable(who) => set(store, audit, &who, true, as_json).await,
        Command::Enable(who) => set(store, audit, &who, false, as_json).await,
        Command::Unlink(who, source) => unlink(store, audit, &who, source, as_json).await,
    }
}

/// `users list`: every user with their connections and groups.
async fn list(store: &Arc<dyn UserStore>, as_json: bool) -> Result<String, UsersError> {
    let users = store.list_users().await?;
    if as_json {
        let all: Vec<Value> = users.iter().map(|(u, c)| user_json(u, c)).collect();
        return Ok(Value::Array(all).to_string());
    }
    if users.is_empty() {
        return Ok("no users yet".into());
    }
    Ok(users
        .iter()
        .map(|(u, c)| user_line(u, c))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `users show`: one user, their connections and sessions.
async fn show(
    store: &Arc<dyn UserStore>,
    who: &str,
    as_json: bool,
    now: i64,
) -> Result<String, UsersError> {
    let user = find(store, who).await?;
    let connections = store
        .list_users()
        .await?
        .into_iter()
        .find(|(u, _)| u.id == user.id)
        .map(|(_, c)| c)
        .unwrap_or_default();
    let sessions = store.user_sessions(&user.id).await?;
    if as_json {
        let mut v = user_json(&user, &connections);
        if let Some(obj) = v.as_object_mut() {
            let list = sessions.iter().map(|s| session_json(s, now)).collect();
            obj.insert("sessions".into(), Value::Array(list));
        }
        return Ok(v.to_string());
    }
    let mut out = format!(
        "{}\n  id: {}\n  name: {}\n  email verified: {}\n  home source: {}\n",
        user_line(&user, &connections),
        user.id,
        user.name.as_deref().unwrap_or("-"),
        if user.email_verified { "yes" } else { "no" },
        user.home_source.as_deref().unwrap_or("-"),
    );
    out.push_str(&format!("  connections: {}\n", connections.len()));
    for c in &connections {
        let home = if user.home_source.as_deref() == Some(c.source.as_str()) {
            "  (home)"
        } else {
            ""
        };
        out.push_str(&format!(
            "    {}:{}  linked_at={}{home}\n",
            c.source, c.identifier, c.created_at
        ));
    }
    out.push_str(&format!("  sessions: {}\n", sessions.len()));
    for s in &sessions {
        let state = if s.revoked {
            "revoked"
        } else if s.expires_at <= now {
            "expired"
        } else {
            "live"
        };
        out.push_str(&format!(
            "    {}…  {}  {}  expires_at={}\n",
            s.id.chars().take(8).collect::<String>(),
            s.source,
            state,
            s.expires_at
        ));
    }
    Ok(out.trim_end().to_string())
}

/// `users unlink`: removes a user's connection to a source.
async fn unlink(
    store: &Arc<dyn UserStore>,
    audit: &Audit,
    who: &str,
    source: String,
    as_json: bool,
) -> Result<String, UsersError> {
    let user = find(store, who).await?;
    if !store.unlink(&user.id, &source).await? {
        return Err(UsersError::NotConnected(user.username, source));
    }
    audit.emit(&Event {
        user_id: Some(&user.id),
        username: Some(&user.username),
        source: Some(&source),
        ..Event::new(Kind::UserUnlink)
    });
    Ok(if as_json {
        json!({"user": user.username, "unlinked": source}).to_string()
    } else {
        format!(
            "{}: connection to {source} removed (its groups and sessions too)",
            user.username
        )
    })
}

async fn rename(
    store: &Arc<dyn UserStore>,
    audit: &Audit,
    who: &str,
    new: &str,
    as_json: bool,
) -> Result<String, UsersError> {
    if !valid_username(new) {
        return Err(UsersError::BadUsername(new.to_string()));
    }
    let user = find(store, who).await?;
    match store.rename_user(&user.id, new).await {
        Ok(true) => {}
        Ok(false) => return Err(UsersError::UnknownUser(who.to_string())),
        Err(StoreError::UsernameTaken) => return Err(UsersError::UsernameTaken(new.to_string())),
        Err(e) => return Err(e.into()),
    }
    audit.emit(&Event {
        user_id: Some(&user.id),
        username: Some(&user.username),
        new_username: Some(new),
        ..Event::new(Kind::UserRename)
    });
    Ok(if as_json {
        json!({"user_id": user.id, "renamed_from": user.username, "username": new}).to_string()
    } else {
        format!(
            "{} is now {new} (upstreams see the new X-Forwarded-User within identity_cache_ttl)",
            user.username
        )
    })
}

async fn set(
    store: &Arc<dyn UserStore>,
    audit: &Audit,
    who: &str,
    disabled: bool,
    as_json: bool,
) -> Result<String, UsersError> {
    let user = find(store, who).await?;
    if !store.set_disabled(&user.id, disabled).await? {
        return Err(UsersError::UnknownUser(who.to_string()));
    }
    audit.emit(&Event {
        user_id: Some(&user.id),
        username: Some(&user.username),
        ..Event::new(if disabled {
            Kind::UserDisable
        } else {
            Kind::UserEnable
        })
    });
    Ok(if as_json {
        json!({"user": user.username, "disabled": disabled}).to_string()
    } else if disabled {
        format!("{} is disabled; their sessions are revoked (replicas refuse them within identity_cache_ttl)", user.username)
    } else {
        format!("{} is enabled", user.username)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_visible_ascii_without_spaces_or_commas() {
        for ok in ["lou", "lou.smith", "LOU-2", "a@b"] {
            assert!(valid_username(ok), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in ["", "lou smith", "a,b", "zoë", "a\nb", long.as_str()] {
            assert!(!valid_username(bad), "{bad:?}");
        }
    }
}
