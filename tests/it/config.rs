//! Config loading: every error names its key, file and env variable, all
//! problems come together, env overrides nest, and `check` passes on config/.

use std::process::Command;

use portcullis::config::{load_with_env, ConfigError};

use crate::support::{base_config, config_file, SECRET};

/// An app that states who may use it (everyone who signs in).
const APP: &str = r#"
[[app]]
name = "wiki"
upstream = "http://127.0.0.1:3000"
[[app.policy]]
on = ["access"]
effect = "allow"
"#;

fn problems(body: &str) -> String {
    problems_with_env(body, Vec::new())
}

fn problems_with_env(body: &str, env: Vec<(&str, &str)>) -> String {
    let file = config_file(body);
    let env = env.into_iter().map(|(k, v)| (k.to_string(), v.to_string()));
    match load_with_env(&file.path, env) {
        Ok(_) => panic!("config was accepted:\n{body}"),
        Err(e @ ConfigError::Invalid { .. }) => e
            .to_string()
            .replace(&file.path.display().to_string(), "FILE"),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

#[test]
fn unknown_key_is_named_with_file_and_env() {
    let body = base_config().replace("url = ", "urll = \"x\"\nurl = ");
    let msg = problems(&format!("{body}{APP}"));
    assert!(msg.contains("store.urll: unknown key"), "{msg}");
    assert!(
        msg.contains("set it in FILE or PORTCULLIS_STORE__URLL"),
        "{msg}"
    );
}

#[test]
fn unknown_key_inside_a_source_names_the_source() {
    let msg = problems(&format!(
        "{}\n[[source]]\nslug = \"corp\"\ntype = \"oauth2\"\nclient_id = \"x\"\n{APP}",
        base_config()
    ));
    assert!(msg.contains("source[corp].client_id: unknown key"), "{msg}");
    assert!(msg.contains("PORTCULLIS_SOURCE__0__CLIENT_ID"), "{msg}");
}

/// A key that cannot be read does not hide the rest of its table, and is
/// not taken for missing: every other problem of the table is reported,
/// and nothing false (a session secret that is there, a source that is
/// defined) is.
#[test]
fn an_unreadable_key_hides_no_other_problem_of_its_table_and_adds_none() {
    let body = base_config().replace(
        "[session]\n",
        "[session]\nbogus = 1\nlifetime = \"12x\"\nidle_timeout = 12\n",
    );
    let msg = problems(&format!(
        "{body}\n[[source]]\nslug = \"corp\"\ntype = \"oauth2\"\nconsumer_key = \"k\"\n\
         client_id = \"x\"\nsecrets = 1\n{}",
        APP.replace("upstream =", "sources = [\"corp\"]\nupstream =")
    ));
    assert!(!msg.contains("app[wiki]"), "{msg}");
    for expected in [
        "session.bogus: unknown key",
        "session.lifetime:",
        "session.idle_timeout: expected",
        "source[corp].client_id: unknown key",
        "source[corp].secrets: unknown key",
    ] {
        assert!(msg.contains(expected), "{expected} not in:\n{msg}");
    }
    assert!(!msg.contains("session.secrets"), "{msg}");
    assert!(!msg.contains("not a defined source"), "{msg}");
    assert_eq!(
        msg.matches("session.idle_timeout").count(),
        1,
        "one problem per key:\n{msg}"
    );
    // A required key of the wrong type is that, not also missing.
    let msg = problems(&format!(
        "{}{APP}",
        base_config().replace(&format!("secrets = [\"{SECRET}\"]"), "secrets = 12")
    ));
    assert!(msg.contains("session.secrets: expected"), "{msg}");
    assert_eq!(msg.matches("session.secrets").count(), 1, "{msg}");
}

/// A misspelt table in a variable, or one `_` where `__` was meant, is an
/// error naming the variable, not a setting silently left out.
#[test]
fn a_variable_naming_no_table_or_joined_by_one_underscore_is_an_error() {
    let msg = problems_with_env(
        &format!("{}{APP}", base_config()),
        vec![
            ("PORTCULLIS_SESION__COOKIE_DOMAIN", "corp.example"),
            ("PORTCULLIS_SESSION_SECRET", "x"),
            ("PORTCULLIS_CONFIG", "elsewhere.toml"),
            ("PORTCULLIS_TEST_POSTGRES_URL", "postgres://x"),
        ],
    );
    assert!(msg.contains("sesion.cookie_domain: unknown table"), "{msg}");
    assert!(msg.contains("PORTCULLIS_SESION__COOKIE_DOMAIN"), "{msg}");
    assert!(msg.contains("PORTCULLIS_SESSION__SECRET"), "{msg}");
    assert!(!msg.contains("CONFIG"), "{msg}");
    assert!(!msg.contains("POSTGRES"), "{msg}");
}

/// A bad list element is reported at its index, once, and a table missing
/// a key it needs (`[server.tls]` without `key_file`) hides no other
/// problem of its parent table.
#[test]
fn a_bad_list_element_and_a_nested_table_missing_a_key_hide_nothing_else() {
    let msg = problems(&format!(
        "{}{APP}",
        base_config().replacen(
            "[session]",
            "trusted_proxies = [1, \"bogus\"]\nrequest_header_timeout = \"x\"\n\
             tls = { cert_file = \"c.pem\" }\n[session]",
            1
        )
    ));
    assert!(msg.contains("server.trusted_proxies[0]: expected"), "{msg}");
    assert_eq!(msg.matches("server.trusted_proxies").count(), 1, "{msg}");
    assert!(msg.contains("server.tls.key_file: missing"), "{msg}");
    assert!(msg.contains("server.request_header_timeout:"), "{msg}");
}

/// The listener's certificate and key are read at load, as the listener
/// will read them: `check` names the key, file and variable of a file that
/// is missing, holds no key, or holds a key that is not the certificate's.
#[test]
fn tls_files_that_cannot_serve_are_config_errors_naming_their_key() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures");
    let with_tls = |cert: &str, key: &str| {
        let tls = format!(
            "tls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n[session]",
            fixtures.join(cert).display(),
            fixtures.join(key).display()
        );
        format!("{}{APP}", base_config().replacen("[session]", &tls, 1))
    };
    let msg = problems(&with_tls("missing-cert.pem", "localhost-key.pem"));
    assert!(msg.contains("server.tls.cert_file: cannot read"), "{msg}");
    assert!(msg.contains("PORTCULLIS_SERVER__TLS__CERT_FILE"), "{msg}");
    assert!(!msg.contains("key_file"), "{msg}");
    let msg = problems(&with_tls("localhost-cert.pem", "test-ca.pem"));
    assert!(msg.contains("server.tls.key_file:"), "{msg}");
    assert!(msg.contains("holds no PEM private key"), "{msg}");
    let msg = problems(&with_tls("localhost-cert.pem", "selfsigned-key.pem"));
    assert!(
        msg.contains("server.tls.key_file:") && msg.contains("cannot serve TLS together"),
        "{msg}"
    );
    // The pair that belongs together loads.
    let file = crate::support::config_file(&with_tls("localhost-cert.pem", "localhost-key.pem"));
    portcullis::config::load_with_env(&file.path, Vec::new()).unwrap();
}

#[test]
fn bad_duration_bad_url_and_short_secret_are_reported_together() {
    let body = r#"
[server]
listen = "127.0.0.1:0"
public_url = "not a url"
[session]
secrets = ["c2hvcnQ="]
lifetime = "forever"
[[app]]
name = "wiki"
upstream = "ftp://127.0.0.1:3000"
"#;
    let msg = problems(body);
    assert!(msg.contains("4 problems"), "{msg}");
    assert!(
        msg.contains("server.public_url: `not a url` is not a URL"),
        "{msg}"
    );
    assert!(
        msg.contains("session.lifetime: `forever` is not a duration"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "session.secrets[0]: a session secret must be at least 32 bytes; this one is 5"
        ),
        "{msg}"
    );
    assert!(msg.contains("portcullis keygen"), "{msg}");
    assert!(
        msg.contains(
            "app[wiki].upstream: `ftp://127.0.0.1:3000` must be an http:// or https:// URL"
        ),
        "{msg}"
    );
    assert!(msg.contains("PORTCULLIS_SESSION__LIFETIME"), "{msg}");
}

#[test]
fn missing_secret_is_an_error() {
    let msg = problems(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{APP}"));
    assert!(msg.contains("session.secrets: missing"), "{msg}");
}

#[test]
fn duplicate_slugs_and_app_names_are_errors() {
    let source = r#"
[[source]]
slug = "corp"
type = "oauth2"
consumer_key = "k"
consumer_secret = "s"
authorization_url = "https://idp.example/a"
access_token_url = "https://idp.example/t"
profile_url = "https://idp.example/p"
"#;
    let msg = problems(&format!("{}{source}{source}{APP}{APP}", base_config()));
    assert!(
        msg.contains("source[corp].slug: `corp` is used by another source"),
        "{msg}"
    );
    assert!(
        msg.contains("app[wiki].name: `wiki` is used by another app"),
        "{msg}"
    );
}

#[test]
fn app_naming_an_undefined_source_is_an_error() {
    let body = format!(
        "{}\n[[app]]\nname = \"wiki\"\nupstream = \"http://127.0.0.1:3000\"\nsources = [\"nope\"]\njwt_sources = [\"ghost\"]\n",
        base_config()
    );
    let msg = problems(&body);
    assert!(
        msg.contains("app[wiki].sources[0]: `nope` is not a defined source"),
        "{msg}"
    );
    assert!(
        msg.contains("app[wiki].jwt_sources[0]: `ghost` is not a defined source"),
        "{msg}"
    );
}

#[test]
fn a_problem_from_the_environment_names_the_variable() {
    let msg = problems_with_env(
        &format!("{}{APP}", base_config()),
        vec![("PORTCULLIS_SESSION__LIFETIME", "soon")],
    );
    assert!(
        msg.contains("session.lifetime: `soon` is not a duration"),
        "{msg}"
    );
    assert!(
        msg.contains("the value came from PORTCULLIS_SESSION__LIFETIME"),
        "{msg}"
    );
}

/// A bad element of a list of values given from the environment is blamed
/// on the variable that set the list: it is the one to fix (there is no
/// variable per element of such a list).
#[test]
fn a_bad_list_element_from_the_environment_names_the_list_s_variable() {
    let msg = problems_with_env(
        &format!("{}{APP}", base_config()),
        vec![("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"bogus\"]")],
    );
    assert!(msg.contains("server.trusted_proxies[0]"), "{msg}");
    assert!(
        msg.contains("the value came from PORTCULLIS_SERVER__TRUSTED_PROXIES;"),
        "{msg}"
    );
    assert!(!msg.contains("TRUSTED_PROXIES__0"), "{msg}");
    // From the file, the same element names the list's variable too.
    let msg = problems(&format!(
        "{}{APP}",
        base_config().replacen("[session]", "trusted_proxies = [\"bogus\"]\n[session]", 1)
    ));
    assert!(
        msg.contains("or PORTCULLIS_SERVER__TRUSTED_PROXIES)"),
        "{msg}"
    );
}

/// A variable that sets a whole table (or a list of tables) is the one to
/// fix when a key inside it is wrong: the error names it, not a variable
/// nobody set.
#[test]
fn a_bad_key_inside_a_table_from_the_environment_names_the_table_s_variable() {
    let msg = problems_with_env(
        &format!("{}{APP}", base_config()),
        vec![(
            "PORTCULLIS_SERVER__TLS",
            "{cert_file=\"/nonexistent/c.pem\", key_file=\"/nonexistent/k.pem\"}",
        )],
    );
    assert!(msg.contains("server.tls.cert_file"), "{msg}");
    assert!(
        msg.contains("the value came from PORTCULLIS_SERVER__TLS;"),
        "{msg}"
    );
    let msg = problems_with_env(
        &format!("{}{APP}", base_config()),
        vec![(
            "PORTCULLIS_APP__0__POLICY",
            "[{on=[\"access\"], effect=\"alow\"}]",
        )],
    );
    assert!(msg.contains("policy[0].effect"), "{msg}");
    assert!(
        msg.contains("the value came from PORTCULLIS_APP__0__POLICY;"),
        "{msg}"
    );
}

/// PRX-05: a trusted-proxy range holding every address would let any
/// client name its own IP and forward auth's target.
#[test]
fn a_trusted_proxy_range_of_every_address_is_refused() {
    let msg = problems(&format!(
        "{}{APP}",
        base_config().replacen(
            "[session]",
            "trusted_proxies = [\"10.0.0.0/8\", \"0.0.0.0/0\", \"::/0\", \"::ffff:0.0.0.0/96\"]\n[session]",
            1
        )
    ));
    for i in [1, 2, 3] {
        assert!(
            msg.contains(&format!("server.trusted_proxies[{i}]: `"))
                && msg.contains("trusts every client"),
            "{i}: {msg}"
        );
    }
    assert!(!msg.contains("trusted_proxies[0]"), "{msg}");
}

#[test]
fn env_overrides_nested_keys_and_array_entries() {
    let body = format!(
        "{}\n[[source]]\nslug = \"corp\"\ntype = \"oauth2\"\nconsumer_key = \"k\"\nconsumer_secret = \"file-secret\"\nauthorization_url = \"https://idp.example/a\"\naccess_token_url = \"https://idp.example/t\"\nprofile_url = \"https://idp.example/p\"\n{APP}",
        base_config()
    );
    let file = config_file(&body);
    let env = vec![
        (
            "PORTCULLIS_SERVER__LISTEN".to_string(),
            "127.0.0.1:4321".to_string(),
        ),
        (
            "PORTCULLIS_SESSION__IDENTITY_CACHE_TTL".to_string(),
            "5s".to_string(),
        ),
        (
            "PORTCULLIS_SOURCE__0__CONSUMER_SECRET".to_string(),
            "env-secret".to_string(),
        ),
        (
            "PORTCULLIS_APP__WIKI__UPSTREAM".to_string(),
            "http://127.0.0.1:3999".to_string(),
        ),
        ("PORTCULLIS_CONFIG".to_string(), "/ignored".to_string()),
    ];
    let c = load_with_env(&file.path, env).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:4321");
    assert_eq!(
        c.session.identity_cache_ttl,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(
        c.sources[0].consumer_secret.as_ref().unwrap().expose(),
        "env-secret"
    );
    assert_eq!(c.apps[0].upstream.port, 3999);
}

/// A client id of digits only (Discord's) given from the environment for a
/// source whose file leaves `consumer_key` out stays text, as it would in
/// the file.
#[test]
fn a_number_like_client_id_from_the_environment_is_text() {
    let body = format!(
        "{}\n[[source]]\nslug = \"corp\"\ntype = \"oauth2\"\nauthorization_url = \"https://idp.example/a\"\naccess_token_url = \"https://idp.example/t\"\nprofile_url = \"https://idp.example/p\"\n{APP}",
        base_config()
    );
    let file = config_file(&body);
    let env = vec![
        (
            "PORTCULLIS_SOURCE__CORP__CONSUMER_KEY".to_string(),
            "1234567890".to_string(),
        ),
        (
            "PORTCULLIS_SOURCE__CORP__CONSUMER_SECRET".to_string(),
            "4242".to_string(),
        ),
    ];
    let c = load_with_env(&file.path, env).unwrap();
    assert_eq!(c.sources[0].consumer_key.as_deref(), Some("1234567890"));
    assert_eq!(
        c.sources[0].consumer_secret.as_ref().unwrap().expose(),
        "4242"
    );
}

#[test]
fn single_secret_from_env_is_accepted() {
    let body = format!("[server]\nlisten = \"127.0.0.1:0\"\n{APP}");
    let file = config_file(&body);
    let env = vec![("PORTCULLIS_SESSION__SECRET".to_string(), SECRET.to_string())];
    let c = load_with_env(&file.path, env).unwrap();
    assert_eq!(c.session.secrets.len(), 1);
}

#[test]
fn invalid_config_exits_with_code_2_and_check_prints_redacted() {
    let bad = config_file("[server]\nlisten = \"nope\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&bad.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.listen: `nope` is not an address"),
        "{err}"
    );

    // A store password in the query is a password too (sqlx reads it there).
    let store = "url = \"postgres://portcullis@127.0.0.1:9/p?password=hunter2&sslmode=prefer\"";
    let good = config_file(&format!(
        "{}{APP}",
        base_config().replace("url = \"sqlite::memory:\"", store)
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&good.path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("<redacted>"), "{text}");
    assert!(!text.contains(SECRET), "the secret was printed:\n{text}");
    assert!(
        !text.contains("hunter2"),
        "the store password was printed:\n{text}"
    );
    assert!(text.contains("password=redacted"), "{text}");
    // The resolved config: defaults printed too, the connection limits among them.
    let server = text.split("[session]").next().unwrap_or_default();
    for line in [
        "request_header_timeout = \"10s\"",
        "idle_timeout = \"1m\"",
        "max_connections = 10000",
    ] {
        assert!(server.contains(line), "{line} not in:\n{server}");
    }
}

#[test]
fn check_prints_the_urls_to_register_at_each_sign_in_provider() {
    let body = format!(
        r#"{}
[[source]]
slug = "corp"
type = "oauth2"
consumer_key = "portcullis"
consumer_secret = "s3cret-for-the-test"
authorization_url = "http://127.0.0.1:9/authorize"
access_token_url = "http://127.0.0.1:9/token"
profile_url = "http://127.0.0.1:9/userinfo"

[[source]]
slug = "ci"
type = "openidconnect"
issuer = "http://127.0.0.1:9"
oidc_jwks_url = "http://127.0.0.1:9/jwks"
{APP}"#,
        base_config()
    );
    let file = config_file(&body);
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&file.path)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "# source corp: register at the provider: redirect URI http://127.0.0.1:8080/_auth/callback/corp",
        "# source corp: register at the provider: post-logout redirect URI http://127.0.0.1:8080/",
        "# source corp: register at the provider: back-channel logout URI http://127.0.0.1:8080/_auth/backchannel_logout/corp",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // A machine-only source has no client to register.
    assert!(!text.contains("source ci: register"), "{text}");
}

#[test]
fn check_passes_on_every_shipped_config() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // No shipped config carries a session secret: it comes from the environment.
            let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .args(["check", "--config"])
                .arg(&path)
                .env_remove("PORTCULLIS_CONFIG")
                .env("PORTCULLIS_SESSION__SECRET", SECRET)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no config files in {}", dir.display());
}

#[test]
fn keygen_prints_a_secret_the_config_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("keygen")
        .output()
        .unwrap();
    assert!(out.status.success());
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(
        portcullis::config::decode_secret(&secret).unwrap().len(),
        32
    );
}

#[test]
fn ses02_plain_http_public_url_off_loopback_is_refused() {
    let body = base_config().replace("http://127.0.0.1:8080", "http://wiki.example");
    let msg = problems(&format!("{body}{APP}"));
    assert!(
        msg.contains(
            "server.public_url: `http://wiki.example` is plain http on a non-loopback host"
        ),
        "{msg}"
    );
    // Nor is a name that merely looks like loopback.
    for bad in [
        "http://localhost.example",
        "http://evillocalhost",
        "http://localhost.evil.example",
    ] {
        let body = base_config().replace("http://127.0.0.1:8080", bad);
        let msg = problems(&format!("{body}{APP}"));
        assert!(
            msg.contains("is plain http on a non-loopback host"),
            "{bad}: {msg}"
        );
    }
    // https anywhere, and http on loopback (also a name under `localhost`,
    // RFC 6761 §6.3, as tests of several hosts use), are fine.
    for ok in [
        "https://wiki.example",
        "http://localhost:8080",
        "http://[::1]:8080",
        "http://auth.localhost:8080",
        "http://Wiki.LocalHost.:8080",
    ] {
        let file = config_file(&format!(
            "{}{APP}",
            base_config().replace("http://127.0.0.1:8080", ok)
        ));
        assert!(load_with_env(&file.path, Vec::new()).is_ok(), "{ok}");
    }
}

#[test]
fn jwks14_provider_urls_must_be_https_off_loopback() {
    let msg = problems(&format!(
        "{}\n[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\nissuer = \"https://ci.example\"\noidc_jwks_url = \"http://ci.example/jwks\"\n{APP}",
        base_config()
    ));
    assert!(
        msg.contains("source[ci].oidc_jwks_url: `http://ci.example/jwks` must be https://"),
        "{msg}"
    );
    // A name under `localhost` is loopback for a browser (a plain http
    // `public_url` may use one), not for the gateway's own calls, which may
    // resolve it through DNS.
    let msg = problems(&format!(
        "{}\n[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\nissuer = \"https://ci.example\"\noidc_jwks_url = \"http://idp.localhost/jwks\"\n{APP}",
        base_config()
    ));
    assert!(
        msg.contains("source[ci].oidc_jwks_url: `http://idp.localhost/jwks` must be https://"),
        "{msg}"
    );
}

#[test]
fn a_cel_syntax_error_is_a_config_error_naming_the_key() {
    let body = format!(
        "{}\n[[app]]\nname = \"wiki\"\nupstream = \"http://127.0.0.1:3000\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\nexpression = \"user.groups.exists(g,\"\n",
        base_config()
    );
    let msg = problems(&body);
    assert!(
        msg.contains("app[wiki].policy[0].expression: the CEL expression does not parse"),
        "{msg}"
    );
}

/// `authorize_params` cannot send again what the gateway writes itself
/// (a second `response_type` or `code_challenge_method` a provider may read
/// either way), `max_age` is seconds and `response_mode` one the callback reads.
#[test]
fn authorize_params_refuse_the_gateway_s_own_parameters() {
    let msg = problems(&format!(
        "{}[[source]]\nslug = \"corp\"\ntype = \"oauth2\"\nconsumer_key = \"c\"\nconsumer_secret = \"s\"\n\
         authorization_url = \"https://idp.example/a\"\naccess_token_url = \"https://idp.example/t\"\nprofile_url = \"https://idp.example/p\"\n\
         authorize_params = {{ response_type = \"code id_token\", code_challenge_method = \"plain\", max_age = \"1h\", response_mode = \"fragment\", request_uri = \"urn:x\", prompt = \"login\" }}\n{APP}",
        base_config()
    ));
    for want in [
        "source[corp].authorize_params.response_type: `response_type` cannot be set here: the gateway writes it itself",
        "source[corp].authorize_params.code_challenge_method: `code_challenge_method` cannot be set here: the gateway writes it itself: set pkce",
        "source[corp].authorize_params.max_age: `1h` is not a number of seconds",
        "source[corp].authorize_params.response_mode: `fragment`",
        "source[corp].authorize_params.request_uri: `request_uri` cannot be set here: a request object would override",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert!(!msg.contains("authorize_params.prompt"), "{msg}");
}

#[test]
fn vendor_presets_name_the_keys_they_need_and_refuse_weakening_forced_pkce() {
    let msg = problems(&format!(
        "{}[[source]]\nslug = \"kc\"\ntype = \"keycloak\"\nconsumer_key = \"c\"\nconsumer_secret = \"s\"\n\
         [[source]]\nslug = \"ms\"\ntype = \"entraid\"\nconsumer_key = \"c\"\nconsumer_secret = \"s\"\n\
         [[source]]\nslug = \"x\"\ntype = \"twitter\"\nconsumer_key = \"c\"\nconsumer_secret = \"s\"\npkce = \"none\"\n\
         [[source]]\nslug = \"apple\"\ntype = \"apple\"\nconsumer_key = \"com.example.web\"\n\
         [[source]]\nslug = \"ok\"\ntype = \"okta\"\nconsumer_key = \"c\"\nconsumer_secret = \"s\"\nbase_url = \"https://a.example/x?y=1\"\n{APP}",
        base_config()
    ));
    assert!(msg.contains("source[kc].base_url: missing"), "{msg}");
    assert!(msg.contains("source[ms].tenant: missing"), "{msg}");
    assert!(msg.contains("source[x].pkce"), "{msg}");
    assert!(msg.contains("source[apple].team_id: missing"), "{msg}");
    assert!(msg.contains("source[apple].key_id: missing"), "{msg}");
    assert!(
        msg.contains("source[apple].private_key_file: missing"),
        "{msg}"
    );
    assert!(msg.contains("source[ok].base_url"), "{msg}");
    assert_eq!(msg.matches("source[kc].base_url").count(), 1, "{msg}");
}

/// A URL set by hand wins over a preset's template (DESIGN), so a preset
/// whose template needs `base_url` or `tenant` does not ask for it when
/// every URL that names it is given: a Keycloak realm by its well-known
/// URL, an Entra ID directory by its own, Mailcow by its three URLs.
#[test]
fn a_preset_needs_no_base_url_or_tenant_for_urls_set_by_hand_and_uses_them() {
    let body = format!(
        "{}[[source]]\nslug = \"kc\"\ntype = \"keycloak\"\nconsumer_key = \"c\"\nconsumer_secret = \"s\"\n\
         oidc_well_known_url = \"http://127.0.0.1:9000/realms/r/.well-known/openid-configuration\"\n\
         [[source]]\nslug = \"ok\"\ntype = \"okta\"\nconsumer_key = \"c\"\nconsumer_secret = \"s\"\n\
         oidc_well_known_url = \"https://corp.okta.example/oauth2/default/.well-known/openid-configuration\"\n\
         [[source]]\nslug = \"ms\"\ntype = \"entraid\"\nconsumer_key = \"c\"\nconsumer_secret = \"s\"\n\
         oidc_well_known_url = \"https://login.microsoftonline.com/contoso.example/v2.0/.well-known/openid-configuration\"\n\
         [[source]]\nslug = \"mc\"\ntype = \"mailcow\"\nconsumer_key = \"c\"\nconsumer_secret = \"s\"\n\
         authorization_url = \"https://mail.example/oauth/authorize\"\naccess_token_url = \"https://mail.example/oauth/token\"\n\
         profile_url = \"https://mail.example/oauth/profile\"\n{APP}",
        base_config()
    );
    let file = config_file(&body);
    let c =
        load_with_env(&file.path, Vec::<(String, String)>::new()).unwrap_or_else(|e| panic!("{e}"));
    let url = |slug: &str| {
        let s = c.sources.iter().find(|s| s.slug == slug).unwrap();
        s.oidc_well_known_url
            .as_ref()
            .or(s.authorization_url.as_ref())
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    assert_eq!(
        url("kc"),
        "http://127.0.0.1:9000/realms/r/.well-known/openid-configuration"
    );
    assert!(url("ok").starts_with("https://corp.okta.example/oauth2/default/"));
    assert!(url("ms").contains("/contoso.example/"));
    assert_eq!(url("mc"), "https://mail.example/oauth/authorize");
    // Mailcow with only two of its three URLs still needs `base_url` for the third.
    let msg = problems(&body.replace("profile_url = \"https://mail.example/oauth/profile\"\n", ""));
    assert!(msg.contains("source[mc].base_url: missing"), "{msg}");
}

#[test]
fn jwt23_jwt24_an_app_with_jwt_sources_and_no_audience_is_refused_and_told_what_to_add() {
    let body = format!(
        "{}\n[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\nissuer = \"https://ci.example\"\noidc_jwks_url = \"https://ci.example/jwks\"\n\
         [[app]]\nname = \"api\"\nupstream = \"http://127.0.0.1:3000\"\njwt_sources = [\"ci\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        base_config()
    );
    let msg = problems(&body);
    assert!(
        msg.contains(
            "app[api].jwt_audiences: required with jwt_sources: list the audience(s) your tokens carry, e.g. jwt_audiences = [\"api\"] (set it in FILE or PORTCULLIS_APP__0__JWT_AUDIENCES)"
        ),
        "{msg}"
    );
    // An empty list, or an empty audience, is no better.
    let msg = problems(&body.replace(
        "jwt_sources = [\"ci\"]\n",
        "jwt_sources = [\"ci\"]\njwt_audiences = []\n",
    ));
    assert!(msg.contains("app[api].jwt_audiences: required"), "{msg}");
    let msg = problems(&body.replace(
        "jwt_sources = [\"ci\"]\n",
        "jwt_sources = [\"ci\"]\njwt_audiences = [\"api\", \" \"]\n",
    ));
    assert!(msg.contains("app[api].jwt_audiences[1]: empty"), "{msg}");

    // `check` through the real binary: exit code 2 and the same message.
    let file = config_file(&body);
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&file.path)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("app[api].jwt_audiences: required with jwt_sources")
            && err.contains("e.g. jwt_audiences = [\"api\"]")
            && err.contains("PORTCULLIS_APP__0__JWT_AUDIENCES"),
        "{err}"
    );
    // With the audience it passes.
    let fixed = config_file(&body.replace(
        "jwt_sources = [\"ci\"]\n",
        "jwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n",
    ));
    assert!(load_with_env(&fixed.path, Vec::new()).is_ok());
}

#[test]
fn connection_limits_and_the_upstream_ca_file_are_validated_naming_key_and_file() {
    let body = base_config().replace(
        "[session]",
        "request_header_timeout = \"0s\"\nidle_timeout = \"soon\"\nmax_connections = 0\n[session]",
    );
    let msg = problems(&format!(
        "{body}\n[[app]]\nname = \"wiki\"\nupstream = \"https://wiki.internal\"\nupstream_ca_file = \"missing-ca.pem\"\n"
    ));
    for want in [
        "server.request_header_timeout: `0s` is zero",
        "server.idle_timeout: `soon` is not a duration",
        "server.max_connections: must be at least 1",
        "app[wiki].upstream_ca_file: cannot read",
        "missing-ca.pem",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    let msg = problems_with_env(
        &format!("{}{APP}", base_config()),
        vec![("PORTCULLIS_SERVER__IDLE_TIMEOUT", "soon")],
    );
    assert!(
        msg.contains("the value came from PORTCULLIS_SERVER__IDLE_TIMEOUT"),
        "{msg}"
    );

    // A file that is not a PEM certificate, and a CA for a plain http upstream.
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let msg = problems(&format!(
        "{}\n[[app]]\nname = \"wiki\"\nupstream = \"http://127.0.0.1:3000\"\nupstream_ca_file = \"{}\"\n",
        base_config(),
        not_pem.display()
    ));
    assert!(msg.contains("only for an https:// upstream"), "{msg}");
    assert!(msg.contains("holds no PEM certificate"), "{msg}");

    let c = load_with_env(
        &config_file(&format!("{}{APP}", base_config())).path,
        Vec::new(),
    )
    .unwrap();
    assert_eq!(c.server.request_header_timeout.as_secs(), 10);
    assert_eq!(c.server.idle_timeout.as_secs(), 60);
    assert_eq!(c.server.send_timeout.as_secs(), 60);
    assert_eq!(c.server.max_connections, 10_000);
    assert_eq!(c.server.max_connections_per_ip, 0);
}

/// Peers are matched as IPv4 when they are IPv4 (also on a dual-stack
/// listener), so a range written in the IPv4-mapped IPv6 spelling means the
/// IPv4 range it names; IPv6 ranges stay IPv6.
#[test]
fn a_trusted_proxy_range_in_ipv4_mapped_spelling_trusts_those_ipv4_peers() {
    let c = load_with_env(
        &config_file(&format!(
            "{}{APP}",
            base_config().replace(
                "[session]",
                "trusted_proxies = [\"::ffff:10.0.0.0/104\", \"::ffff:192.0.2.7\", \"2001:db8::/32\"]\n[session]"
            )
        ))
        .path,
        Vec::new(),
    )
    .unwrap();
    let trusted = |ip: &str| c.server.is_trusted_proxy(ip.parse().unwrap());
    assert!(trusted("10.1.2.3"));
    assert!(trusted("::ffff:10.1.2.3"));
    assert!(trusted("192.0.2.7"));
    assert!(!trusted("192.0.2.8"));
    assert!(!trusted("11.0.0.1"));
    assert!(trusted("2001:db8::1"));
    assert!(!trusted("2001:db9::1"));
}

#[test]
fn claim_headers_refuse_reserved_malformed_and_repeated_names() {
    let body = format!(
        "{}\n[[app]]\nname = \"wiki\"\nupstream = \"http://127.0.0.1:3000\"\n\
         claim_headers = {{ \"Host\" = \"a\", \"Cookie\" = \"a\", \"authorization\" = \"a\", \"Transfer-Encoding\" = \"a\", \
         \"X-Forwarded-User\" = \"a\", \"X-Auth-Request-Team\" = \"a\", \"X-Portcullis-Assertion\" = \"a\", \
         \"X_Team\" = \"a\", \"Bad Name\" = \"a\", \"X-Empty\" = \"\", \"X-Team\" = \"org.team\", \"x-team\" = \"org.team\", \
         \"X-Ns\" = '\"kubernetes.io.namespace', \"X-Dots\" = \"a..b\", \"Origin\" = \"a\", \"Sec-WebSocket-Protocol\" = \"a\", \"Access-Control-Request-Method\" = \"a\" }}\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        base_config()
    );
    let msg = problems(&body);
    for name in [
        "Host",
        "Cookie",
        "authorization",
        "Transfer-Encoding",
        "X-Forwarded-User",
        "X-Auth-Request-Team",
        "X-Portcullis-Assertion",
        "Origin",
        "Sec-WebSocket-Protocol",
        "Access-Control-Request-Method",
    ] {
        assert!(
            msg.contains(&format!(
                "app[wiki].claim_headers.{name}: `{name}` is reserved"
            )),
            "{name}: {msg}"
        );
    }
    assert!(
        msg.contains("claim_headers.X_Team: `X_Team` is not a header name"),
        "{msg}"
    );
    assert!(msg.contains("`Bad Name` is not a header name"), "{msg}");
    assert!(
        msg.contains("claim_headers.X-Empty: empty claim path"),
        "{msg}"
    );
    assert!(msg.contains("`x-team` is given twice"), "{msg}");
    // A claim path is read as a source's `claims` are: one that does not
    // parse would never find its claim.
    assert!(
        msg.contains(
            "app[wiki].claim_headers.X-Ns: `\"kubernetes.io.namespace`: a quoted segment has no closing quote"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("claim_headers.X-Dots: `a..b`: empty segment"),
        "{msg}"
    );
    assert!(
        msg.contains("PORTCULLIS_APP__0__CLAIM_HEADERS__HOST"),
        "{msg}"
    );
    // A valid table loads.
    let ok = format!(
        "{}\n[[app]]\nname = \"wiki\"\nupstream = \"http://127.0.0.1:3000\"\nclaim_headers = {{ \"X-Team\" = \"org.team\", \"X-Ns\" = '\"kubernetes.io\".namespace' }}\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        base_config()
    );
    let file = config_file(&ok);
    let c = load_with_env(&file.path, Vec::new()).unwrap();
    assert_eq!(
        c.apps[0].claim_headers.get("x-team").map(String::as_str),
        Some("org.team")
    );
}

#[test]
fn a_source_ca_file_and_quoted_claim_paths_are_validated_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("corp-ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let source = |ca: &str, claim: &str| {
        format!(
            "{}\n[[source]]\nslug = \"corp\"\ntype = \"oauth2\"\nconsumer_key = \"id\"\nconsumer_secret = \"s\"\n\
             authorization_url = \"https://idp.example/a\"\naccess_token_url = \"https://idp.example/t\"\n\
             profile_url = \"https://idp.example/p\"\nca_file = \"{ca}\"\nclaims = {{ groups = '{claim}' }}\n{APP}",
            base_config()
        )
    };
    let msg = problems(&source("missing-ca.pem", "\"kubernetes.io.groups"));
    for want in [
        "source[corp].ca_file: cannot read",
        "missing-ca.pem",
        "PORTCULLIS_SOURCE__0__CA_FILE",
        "source[corp].claims.groups: `\"kubernetes.io.groups`: a quoted segment has no closing quote",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    let msg = problems(&source(&not_pem.display().to_string(), "a..b"));
    assert!(msg.contains("holds no PEM certificate"), "{msg}");
    assert!(
        msg.contains("claims.groups: `a..b`: empty segment"),
        "{msg}"
    );

    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/test-ca.pem");
    let ok = config_file(&source(
        &ca.display().to_string(),
        "\"kubernetes.io\".groups",
    ));
    let c = load_with_env(&ok.path, Vec::new()).unwrap();
    assert_eq!(c.sources[0].ca_file.as_deref(), Some(ca.as_path()));
    assert_eq!(c.sources[0].claims["groups"], "\"kubernetes.io\".groups");
}

#[test]
fn an_unknown_log_format_is_refused_naming_key_file_and_environment_variable() {
    let body = base_config().replace("[session]", "log_format = \"yaml\"\n[session]");
    let msg = problems(&format!("{body}{APP}"));
    assert!(
        msg.contains("server.log_format: `yaml` is not allowed; use one of: text, json"),
        "{msg}"
    );
    assert!(
        msg.contains("(set it in FILE or PORTCULLIS_SERVER__LOG_FORMAT)"),
        "{msg}"
    );
    let msg = problems_with_env(
        &format!("{}{APP}", base_config()),
        vec![("PORTCULLIS_SERVER__LOG_FORMAT", "xml")],
    );
    assert!(
        msg.contains("server.log_format: `xml` is not allowed")
            && msg.contains("the value came from PORTCULLIS_SERVER__LOG_FORMAT"),
        "{msg}"
    );
    let app = format!("{APP}[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n");
    let ok = config_file(&format!(
        "{}{app}",
        base_config().replace("[session]", "log_format = \"json\"\n[session]")
    ));
    let config = load_with_env(&ok.path, Vec::new()).unwrap();
    assert_eq!(
        config.server.log_format,
        Some(portcullis::config::LogFormat::Json)
    );
}

/// Zero is a value where it means something (`shutdown_timeout`: exit at
/// once) and refused where it would mean a gateway that cannot work
/// (`lifetime`; `identity_cache_ttl`, whose cached record a request reads
/// its access token from).
#[test]
fn zero_durations_are_taken_where_they_mean_something_and_refused_elsewhere() {
    let body = format!("{}{APP}", base_config()).replacen(
        "shutdown_timeout = \"2s\"",
        "shutdown_timeout = \"0s\"",
        1,
    );
    let file = config_file(&body);
    let c =
        load_with_env(&file.path, Vec::<(String, String)>::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.shutdown_timeout, std::time::Duration::ZERO);
    let msg = problems(&body.replace(
        "[session]\n",
        "[session]\nlifetime = \"0s\"\nidentity_cache_ttl = \"0s\"\n",
    ));
    assert!(msg.contains("session.lifetime: `0s` is zero"), "{msg}");
    assert!(
        msg.contains("session.identity_cache_ttl: `0s` is zero"),
        "{msg}"
    );
}
