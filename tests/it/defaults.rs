//! Safe defaults (DESIGN "Safe defaults and deployment"): access must be
//! stated, the most specific allow rules decide for a path, a defaulted
//! plain-http `public_url` is refused off loopback, and session secrets come
//! from one place and are never one the project has published.

use std::process::Command;

use base64::Engine as _;
use portcullis::config::{load_with_env, Config, ConfigError, EXAMPLE_SECRETS};

use crate::support::{base_config, config_file, SECRET};

/// A sign-in source (URLs set by hand: loading makes no network call).
const SOURCE: &str = "
[[source]]
slug = \"corp\"
type = \"oauth2\"
consumer_key = \"k\"
consumer_secret = \"s\"
authorization_url = \"https://idp.example/a\"
access_token_url = \"https://idp.example/t\"
profile_url = \"https://idp.example/p\"
";

/// A machine-token source.
const CI: &str = "
[[source]]
slug = \"ci\"
type = \"openidconnect\"
issuer = \"https://ci.example\"
oidc_jwks_url = \"https://ci.example/jwks\"
";

const ALLOW_ALL: &str = "[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n";

/// A second test-only secret (never in the docs).
const OTHER: &str = "/xwspt2JjZe0JvfDbWUYyLCXMgUr2e+qVTBcd7vY1P0=";

fn load(body: &str, env: &[(&str, &str)]) -> Result<Config, String> {
    let file = config_file(body);
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    load_with_env(&file.path, env).map_err(|e| match e {
        e @ ConfigError::Invalid { .. } => e
            .to_string()
            .replace(&file.path.display().to_string(), "FILE"),
        e => panic!("unexpected error kind: {e}"),
    })
}

fn problems(body: &str, env: &[(&str, &str)]) -> String {
    match load(body, env) {
        Ok(_) => panic!("config was accepted:\n{body}\nenv: {env:?}"),
        Err(msg) => msg,
    }
}

fn app(extra: &str) -> String {
    format!("\n[[app]]\nname = \"wiki\"\nupstream = \"http://127.0.0.1:3000\"\n{extra}")
}

fn decoded(secret: &str) -> Vec<u8> {
    portcullis::config::decode_secret(secret).unwrap()
}

fn secrets_of(c: &Config) -> Vec<Vec<u8>> {
    c.session
        .secrets
        .iter()
        .map(|s| s.expose().clone())
        .collect()
}

/// `base_config()` without its `[session]` secret.
fn without_secret() -> String {
    base_config().replace(&format!("secrets = [\"{SECRET}\"]\n"), "")
}

#[test]
fn an_app_without_an_access_rule_is_refused_with_the_rule_to_add() {
    for (sources, what) in [
        (SOURCE, "signs people in through corp"),
        (CI, "accepts tokens from ci"),
    ] {
        let jwt = if sources == CI {
            "jwt_sources = [\"ci\"]\njwt_audiences = [\"wiki\"]\n"
        } else {
            ""
        };
        let body = format!("{}{sources}{}", base_config(), app(jwt));
        let msg = problems(&body, &[]);
        for want in [
            "app[wiki].policy: missing: no access rule says who may use this app",
            what,
            "[[app.policy]]\n      on = [\"access\"]\n      effect = \"allow\"",
            "PORTCULLIS_APP__0__POLICY='[{on = [\"access\"], effect = \"allow\"}]'",
            "(set it in FILE or PORTCULLIS_APP__0__POLICY)",
        ] {
            assert!(msg.contains(want), "{want}\n---\n{msg}");
        }
        // The rule it prints, in the file or from the variable it names, is accepted.
        assert!(load(&format!("{body}{ALLOW_ALL}"), &[]).is_ok());
        let c = load(
            &body,
            &[(
                "PORTCULLIS_APP__0__POLICY",
                "[{on = [\"access\"], effect = \"allow\"}]",
            )],
        )
        .unwrap();
        assert_eq!(c.apps[0].policies.len(), 1);
    }

    // `check` through the real binary: exit code 2 and the same message.
    let file = config_file(&format!("{}{SOURCE}{}", base_config(), app("")));
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&file.path)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app[wiki].policy: missing"), "{err}");
}

#[test]
fn apps_that_make_no_access_decision_need_no_rule_and_any_access_rule_states_it() {
    let ok = |body: String| {
        if let Err(e) = load(&body, &[]) {
            panic!("refused:\n{body}\n---\n{e}");
        }
    };
    // No source at all: nobody can authenticate to it.
    ok(format!("{}{}", base_config(), app("")));
    // Sign-in sources exist but this app offers none and takes no tokens.
    ok(format!(
        "{}{SOURCE}{}",
        base_config(),
        app("sources = []\n")
    ));
    // Every path public: no access decision is ever made.
    ok(format!(
        "{}{SOURCE}{}",
        base_config(),
        app("public_paths = [\"/\"]\n")
    ));
    // A deny rule, or a path-scoped allow, is a statement about access too.
    ok(format!(
        "{}{SOURCE}{}",
        base_config(),
        app("[[app.policy]]\non = [\"access\"]\neffect = \"deny\"\nusers = [\"mallory\"]\n")
    ));
    ok(format!(
        "{}{SOURCE}{}",
        base_config(),
        app("[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\ngroups = [\"admins\"]\npath_prefix = \"/admin\"\n")
    ));
    // A public path that is not `/` leaves the rest to decide: still required.
    let msg = problems(
        &format!(
            "{}{SOURCE}{}",
            base_config(),
            app("public_paths = [\"/static/\"]\n")
        ),
        &[],
    );
    assert!(msg.contains("app[wiki].policy: missing"), "{msg}");
}

/// A sign-in has no request path: a source rule with one would never
/// apply (an allow restricting nobody, a deny refusing nobody).
#[test]
fn a_source_rule_with_a_path_prefix_is_a_config_error() {
    for effect in ["allow", "deny"] {
        let msg = problems(
            &format!(
                "{}{SOURCE}[[source.policy]]\non = [\"enroll\"]\neffect = \"{effect}\"\nemail_domains = [\"corp.example\"]\npath_prefix = \"/\"\n{}",
                base_config(),
                app(ALLOW_ALL)
            ),
            &[],
        );
        assert!(
            msg.contains("source[corp].policy[0].path_prefix: only access rules ([[app.policy]]) have a path_prefix"),
            "{effect}: {msg}"
        );
    }
}

#[test]
fn a_rule_path_prefix_must_be_written_as_requests_are_matched() {
    for (prefix, want) in [
        ("/%61dmin", "write `/admin`"),
        ("//admin", "write `/admin`"),
        ("/admin;x", "write `/admin`"),
        ("/a%2Fb", "write `/a/b`"),
        ("admin", "not a usable path prefix"),
        ("/x/../admin", "not a usable path prefix"),
    ] {
        let msg = problems(
            &format!(
                "{}{SOURCE}{}",
                base_config(),
                app(&format!(
                    "{ALLOW_ALL}[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\npath_prefix = \"{prefix}\"\n"
                ))
            ),
            &[],
        );
        assert!(
            msg.contains("app[wiki].policy[1].path_prefix") && msg.contains(want),
            "{prefix}: {msg}"
        );
    }
    for prefix in ["/admin", "/admin/", "/", "/caf%C3%A9"] {
        let body = format!(
            "{}{SOURCE}{}",
            base_config(),
            app(&format!(
                "[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\npath_prefix = \"{prefix}\"\n"
            ))
        );
        assert!(load(&body, &[]).is_ok(), "{prefix}");
    }
}

#[test]
fn a_defaulted_plain_http_public_url_off_loopback_is_refused() {
    let server = |listen: &str, rest: &str| {
        format!(
            "[server]\nlisten = \"{listen}\"\n{rest}\n[session]\nsecrets = [\"{SECRET}\"]\n[store]\nurl = \"sqlite::memory:\"\n{}",
            app("")
        )
    };
    for listen in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080"] {
        let msg = problems(&server(listen, ""), &[]);
        assert!(
            msg.contains("server.public_url: not set, so it defaults to `http://")
                && msg.contains("plain http on a non-loopback address")
                && msg.contains("PORTCULLIS_SERVER__PUBLIC_URL"),
            "{listen}: {msg}"
        );
    }
    // The way out it names: an https public_url (TLS in front) ...
    assert!(load(
        &server("0.0.0.0:8080", "public_url = \"https://auth.example\""),
        &[]
    )
    .is_ok());
    let c = load(
        &server("0.0.0.0:8080", ""),
        &[("PORTCULLIS_SERVER__PUBLIC_URL", "https://auth.example")],
    )
    .unwrap();
    assert_eq!(c.server.public_url.as_str(), "https://auth.example/");
    // ... or loopback, where the default stays plain http.
    for listen in ["127.0.0.1:8080", "[::1]:8080"] {
        let c = load(&server(listen, ""), &[]).unwrap();
        assert_eq!(c.server.public_url.scheme(), "http", "{listen}");
    }
}

#[test]
fn session_secrets_come_from_one_place_and_the_environment_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file_with = |lines: &[&str]| {
        let path = dir.path().join(format!("secrets-{}", lines.len()));
        std::fs::write(&path, format!("# rotation\n{}\n", lines.join("\n"))).unwrap();
        path.display().to_string()
    };
    let two = file_with(&[OTHER, SECRET]);
    let session = |lines: &str| {
        format!(
            "{}{}",
            without_secret().replace("[session]\n", &format!("[session]\n{lines}\n")),
            app("")
        )
    };
    let secrets = format!("secrets = [\"{SECRET}\"]");
    let secret = format!("secret = \"{SECRET}\"");
    let secrets_file = format!("secrets_file = \"{two}\"");

    // Each key alone.
    for (lines, want) in [
        (secrets.clone(), vec![decoded(SECRET)]),
        (secret.clone(), vec![decoded(SECRET)]),
        (secrets_file.clone(), vec![decoded(OTHER), decoded(SECRET)]),
    ] {
        let c = load(&session(&lines), &[]).unwrap();
        assert_eq!(secrets_of(&c), want, "{lines}");
    }
    // Two keys in the file: an error naming both, whichever two.
    for (a, b, later) in [
        (
            &secrets,
            &secret,
            "session.secret: set beside session.secrets",
        ),
        (
            &secrets,
            &secrets_file,
            "session.secrets_file: set beside session.secrets",
        ),
        (
            &secret,
            &secrets_file,
            "session.secrets_file: set beside session.secret",
        ),
    ] {
        let msg = problems(&session(&format!("{a}\n{b}")), &[]);
        assert!(msg.contains(later), "{a} + {b}: {msg}");
        assert!(msg.contains("in one place only"), "{msg}");
    }
    // Two environment variables: the same error.
    let msg = problems(
        &session(""),
        &[
            ("PORTCULLIS_SESSION__SECRET", OTHER),
            ("PORTCULLIS_SESSION__SECRETS", &format!("[\"{SECRET}\"]")),
        ],
    );
    assert!(
        msg.contains("session.secret") && msg.contains("set beside session.secrets"),
        "{msg}"
    );
    // A secret from the environment replaces every secret key of the file:
    // the file's secret no longer opens cookies.
    for file_lines in [
        secrets.clone(),
        secret.clone(),
        secrets_file.clone(),
        format!("{secrets}\n{secrets_file}"),
    ] {
        let c = load(
            &session(&file_lines),
            &[("PORTCULLIS_SESSION__SECRET", OTHER)],
        )
        .unwrap();
        assert_eq!(secrets_of(&c), vec![decoded(OTHER)], "{file_lines}");
    }
    let c = load(
        &session(&secret),
        &[("PORTCULLIS_SESSION__SECRETS_FILE", &two)],
    )
    .unwrap();
    assert_eq!(secrets_of(&c), vec![decoded(OTHER), decoded(SECRET)]);
    let c = load(
        &session(&secrets_file),
        &[(
            "PORTCULLIS_SESSION__SECRETS",
            &format!("[\"{SECRET}\", \"{OTHER}\"]"),
        )],
    )
    .unwrap();
    assert_eq!(secrets_of(&c), vec![decoded(SECRET), decoded(OTHER)]);
    // None at all: how to give one.
    let msg = problems(&session(""), &[]);
    assert!(
        msg.contains("session.secrets: missing")
            && msg.contains("portcullis keygen")
            && msg.contains("PORTCULLIS_SESSION__SECRET"),
        "{msg}"
    );
}

#[test]
fn a_secret_from_the_projects_examples_is_refused_however_it_is_given() {
    let example = EXAMPLE_SECRETS[0];
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(decoded(example));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets");
    std::fs::write(&file, format!("{OTHER}\n{example}\n")).unwrap();
    let body = |lines: &str| {
        format!(
            "{}{}",
            without_secret().replace("[session]\n", &format!("[session]\n{lines}\n")),
            app("")
        )
    };
    for (lines, env) in [
        (format!("secrets = [\"{example}\"]"), vec![]),
        (format!("secrets = [\"{OTHER}\", \"{url_safe}\"]"), vec![]),
        (format!("secrets_file = \"{}\"", file.display()), vec![]),
        (String::new(), vec![("PORTCULLIS_SESSION__SECRET", example)]),
    ] {
        let msg = problems(&body(&lines), &env);
        assert!(
            msg.contains("printed in portcullis's own examples or docs")
                && msg.contains("portcullis keygen"),
            "{lines} {env:?}: {msg}"
        );
    }
    // The old example in the file, replaced by the operator's own from the environment: fine.
    let c = load(
        &body(&format!("secrets = [\"{example}\"]")),
        &[("PORTCULLIS_SESSION__SECRET", OTHER)],
    )
    .unwrap();
    assert_eq!(secrets_of(&c), vec![decoded(OTHER)]);

    // `check` and `serve` of the real binary refuse it with exit code 2.
    let cfg = config_file(&body(&format!("secrets = [\"{example}\"]")));
    for cmd in ["check", "serve"] {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([cmd, "--config"])
            .arg(&cfg.path)
            .env_remove("PORTCULLIS_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("session.secrets[0]: this secret is printed"),
            "{cmd}: {err}"
        );
    }
}

/// Every token in `text` that a session would accept as a secret and that
/// is not all one case (a lower-case identifier, a hex digest or an env
/// variable's name) — what `portcullis keygen` prints, and a placeholder
/// such as `REPLACE-with-the-output-of-portcullis-keygen` that happens to
/// decode to 32 bytes and more. Padding (`=`) ends a token, so
/// `SECRET=<value>` is read as two.
fn secret_like_tokens(text: &str) -> Vec<Vec<u8>> {
    let alphabet = |c: char| c.is_ascii_alphanumeric() || "+/-_".contains(c);
    text.split(|c: char| !alphabet(c))
        .filter(|t| t.len() >= 43)
        .filter(|t| {
            t.chars().any(|c| c.is_ascii_uppercase()) && t.chars().any(|c| c.is_ascii_lowercase())
        })
        .filter_map(portcullis::config::decode_secret)
        .filter(|b| b.len() >= portcullis::config::MIN_SECRET_BYTES)
        .collect()
}

#[test]
fn the_docs_hold_no_session_secret_that_is_not_refused() {
    // The scanner finds what a doc would show, and passes words and digests by.
    let sample = format!(
        "secrets = [\"{OTHER}\"]\nPORTCULLIS_SESSION__SECRET={SECRET} \
         authorization_response_iss_parameter_supported \
         5a15f179cd60c4584b8a8c596927aadc462e27f2ca70c04e0071964a73ba7a75 \
         \"Paste-the-output-of-portcullis-keygen-inline\""
    );
    assert_eq!(
        secret_like_tokens(&sample),
        vec![
            decoded(OTHER),
            decoded(SECRET),
            decoded("Paste-the-output-of-portcullis-keygen-inline")
        ]
    );

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("Dockerfile")];
    // Not the rest of fuzz/corpus: its sealed cookies look like secrets.
    let mut dirs = vec![
        root.join("config"),
        root.join("docs"),
        root.join("examples"),
        root.join("fuzz/corpus/config_load"),
    ];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let mut scanned = 0;
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        scanned += 1;
        for secret in secret_like_tokens(&text) {
            assert!(
                portcullis::config::is_example_secret(&secret),
                "{} shows `{}`, which a session would accept: add it to \
                 EXAMPLE_SECRETS (src/config/example_secrets.rs) so serve and check refuse it",
                path.display(),
                base64::engine::general_purpose::STANDARD.encode(&secret)
            );
        }
    }
    assert!(scanned >= 3, "README, Dockerfile and config/ were not read");
    // And the tests' own secret is not a published one.
    assert!(!portcullis::config::is_example_secret(&decoded(SECRET)));
}

/// DESIGN "Access rules and paths": "allow everyone" plus "allow group
/// admins on /admin" restricts /admin to admins and leaves the rest open to
/// everyone signed in.
#[tokio::test(flavor = "multi_thread")]
async fn allow_everyone_plus_admins_on_admin_keeps_a_non_admin_out_of_admin_only() {
    let mut s = crate::signin::Setup::start_with_apps(
        "",
        // Allow everyone signed in, and admins only on /admin.
        "[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\ngroups = [\"admins\"]\npath_prefix = \"/admin\"\n",
        // bob is in `staff` only; alice is in `admins` and `staff`.
        |f| f.auto_approve_as = Some("bob".into()),
    )
    .await;
    assert_eq!(s.sign_in().await.status(), 302);
    let status = async |s: &crate::signin::Setup, path: &str| {
        s.client
            .get(s.gw.url(path))
            .header("cookie", s.jar.header())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    for (path, want) in [
        ("/admin", 403),
        ("/admin/users", 403),
        ("//admin", 403),
        ("/wiki", 200),
        ("/", 200),
        ("/administrator", 200),
    ] {
        assert_eq!(status(&s, path).await, want, "bob on {path}");
    }
    assert!(
        !s.upstream
            .requests()
            .iter()
            .any(|r| r.uri == "/admin" || r.uri.starts_with("/admin/") || r.uri.starts_with("//")),
        "a refused request reached the upstream"
    );

    // An admin gets into /admin.
    s.provider
        .set_faults(|f| f.auto_approve_as = Some("alice".into()));
    assert_eq!(s.sign_in().await.status(), 302);
    for path in ["/admin", "/admin/users", "/wiki"] {
        assert_eq!(status(&s, path).await, 200, "alice on {path}");
    }
}
