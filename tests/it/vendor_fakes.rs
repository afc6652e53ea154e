//! The vendor fakes (`portcullis_testkit::vendors`) driven the way the
//! presets say a sign-in goes, with portcullis's claim mapping and vendor
//! helpers: each preset yields the expected identity against its vendor's
//! documented behaviour; and the fakes' own documented refusals.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{ACCEPT, LOCATION};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis::config::presets;
use portcullis::config::{SourceKind, TokenAuthMethod};
use portcullis::source::vendors;
use portcullis_testkit::vendors::*;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use url::Url;

/// The preset portcullis ships for the vendor (the fake itself knows none).
fn preset_of(vendor: Vendor) -> &'static presets::Preset {
    let kind = SourceKind::ALL
        .iter()
        .find(|(name, _)| *name == vendor.slug())
        .map(|(_, kind)| *kind)
        .unwrap();
    presets::preset(kind).unwrap()
}

fn client_id(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Apple => APPLE_SERVICES_ID,
        _ => CLIENT_ID,
    }
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
use portcullis::source::claims::{self, Mapped};
use reqwest::redirect::Policy;

const REDIRECT: &str = "http://127.0.0.1:9/_auth/callback/vendor";
const VERIFIER: &str = "0123456789abcdefghijklmnopqrstuvwxyz-._~ABCDEFG";

async fn fakes() -> VendorFakes {
    start(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .user_agent("portcullis-test")
        .build()
        .unwrap()
}

fn claim_table(preset: &presets::Preset) -> BTreeMap<String, String> {
    let mut claims: BTreeMap<String, String> = [
        ("identifier", "sub"),
        ("username", "preferred_username"),
        ("email", "email"),
        ("email_verified", "email_verified"),
        ("name", "name"),
        ("groups", "groups"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    preset.apply_claims(&mut claims);
    claims
}

/// Discovery when the vendor has it, else the fake's URLs.
async fn endpoints(f: &VendorFakes, vendor: Vendor) -> (String, String, Option<String>) {
    let urls = f.urls(vendor);
    if let Some(wk) = &urls.oidc_well_known_url {
        let doc: Value = http().get(wk).send().await.unwrap().json().await.unwrap();
        assert_eq!(doc["issuer"], urls.issuer.clone().unwrap());
        let profile = if vendor == Vendor::EntraId {
            urls.profile_url.clone()
        } else {
            doc["userinfo_endpoint"].as_str().unwrap().to_string()
        };
        return (
            doc["authorization_endpoint"].as_str().unwrap().into(),
            doc["token_endpoint"].as_str().unwrap().into(),
            Some(profile),
        );
    }
    let profile = (vendor != Vendor::Apple).then(|| urls.profile_url.clone());
    (urls.authorization_url, urls.access_token_url, profile)
}

/// A sign-in the way the presets say it goes, through the fake; the
/// mapped identity.
async fn sign_in(f: &VendorFakes, vendor: Vendor, extra_scopes: &[&str]) -> Mapped {
    let preset = preset_of(vendor);
    let (authorize_url, token_url, profile_url) = endpoints(f, vendor).await;
    let mut scopes = preset.default_scopes();
    scopes.extend(extra_scopes.iter().map(|s| s.to_string()));
    let mut url = Url::parse(&authorize_url).unwrap();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id(vendor))
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", "st-1");
        if preset.protocol == presets::Protocol::OpenIdConnect {
            q.append_pair("nonce", "n-1");
        }
        if preset.pkce == portcullis::config::Pkce::S256 {
            q.append_pair("code_challenge", &s256(VERIFIER))
                .append_pair("code_challenge_method", "S256");
        }
        for (k, v) in preset.authorize_params {
            q.append_pair(k, v);
        }
    }
    let resp = http().get(url).send().await.unwrap();
    let (code, state, user_field) = if preset.quirks.form_post {
        assert_eq!(resp.status(), 200);
        let (action, fields) = parse_form_post(&resp.text().await.unwrap()).unwrap();
        assert_eq!(action, REDIRECT);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        (get("code").unwrap(), get("state").unwrap(), get("user"))
    } else {
        assert_eq!(resp.status(), 302, "{vendor:?}");
        let location = Url::parse(resp.headers()[LOCATION].to_str().unwrap()).unwrap();
        let q: BTreeMap<String, String> = location.query_pairs().into_owned().collect();
        (q["code"].clone(), q["state"].clone(), None)
    };
    assert_eq!(state, "st-1");

    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code),
        ("redirect_uri", REDIRECT.to_string()),
    ];
    if preset.pkce == portcullis::config::Pkce::S256 {
        form.push(("code_verifier", VERIFIER.to_string()));
    }
    let secret = if preset.quirks.apple_client_secret {
        vendors::apple::client_secret(
            APPLE_TEAM_ID,
            APPLE_KEY_ID,
            APPLE_SERVICES_ID,
            &f.apple_p8_pem().unwrap(),
            unix_now(),
            300,
        )
        .unwrap()
    } else {
        CLIENT_SECRET.to_string()
    };
    let mut req = http().post(&token_url);
    match preset.token_auth_method {
        TokenAuthMethod::ClientSecretBasic => {
            req = req.basic_auth(client_id(vendor), Some(&secret))
        }
        TokenAuthMethod::ClientSecretPost => {
            form.push(("client_id", client_id(vendor).to_string()));
            form.push(("client_secret", secret));
        }
    }
    if preset.quirks.token_accept_json {
        req = req.header(ACCEPT, "application/json");
    }
    let resp = req.form(&form).send().await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "{vendor:?}: {}",
        resp.text().await.unwrap()
    );
    let tokens: Value = resp.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();

    let id_claims = if preset.protocol == presets::Protocol::OpenIdConnect {
        let jwks: Value = http()
            .get(f.urls(vendor).oidc_jwks_url.unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = &jwks["keys"][0];
        let key = DecodingKey::from_rsa_components(
            key["n"].as_str().unwrap(),
            key["e"].as_str().unwrap(),
        )
        .unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[client_id(vendor)]);
        v.set_issuer(&[f.urls(vendor).issuer.unwrap()]);
        let claims = jsonwebtoken::decode::<Value>(tokens["id_token"].as_str().unwrap(), &key, &v)
            .unwrap()
            .claims;
        assert_eq!(claims["nonce"], "n-1");
        Some(claims)
    } else {
        assert!(tokens.get("id_token").is_none());
        None
    };

    let mut profile = match &profile_url {
        None => json!({}),
        Some(p) => {
            let mut url = Url::parse(p).unwrap();
            let mut req = if preset.quirks.token_in_query {
                url = vendors::mailcow::profile_url_with_token(&url, &access);
                http().get(url)
            } else {
                http().get(url).bearer_auth(&access)
            };
            for (k, v) in preset.profile_headers {
                req = req.header(*k, *v);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{vendor:?}");
            resp.json().await.unwrap()
        }
    };
    if preset.quirks.github_emails && profile["email"].is_null() {
        let url =
            vendors::github::emails_url(&Url::parse(profile_url.as_deref().unwrap()).unwrap());
        let emails: Value = http()
            .get(url)
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let email = vendors::github::primary_verified_email(&emails);
        profile["email_verified"] = json!(email.is_some());
        profile["email"] = json!(email);
    }
    if vendor == Vendor::Github && scopes.iter().any(|s| s == "read:org") {
        // Read the way GitHub's docs describe paging: follow `Link: rel="next"`.
        let mut groups = Vec::new();
        for (path, teams) in [("orgs", false), ("teams", true)] {
            let mut next = Some(format!(
                "{}/user/{path}?per_page=2",
                f.base_url(Vendor::Github)
            ));
            while let Some(url) = next.take() {
                let resp = http()
                    .get(&url)
                    .bearer_auth(&access)
                    .header("user-agent", "sim")
                    .send()
                    .await
                    .unwrap();
                next = resp
                    .headers()
                    .get("link")
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| {
                        l.split(", ")
                            .find(|p| p.ends_with("rel=\"next\""))
                            .and_then(|p| p.split(['<', '>']).nth(1))
                            .map(str::to_string)
                    });
                let page: Value = resp.json().await.unwrap();
                for item in page.as_array().unwrap() {
                    groups.push(if teams {
                        format!(
                            "{}/{}",
                            item["organization"]["login"].as_str().unwrap(),
                            item["slug"].as_str().unwrap()
                        )
                    } else {
                        item["login"].as_str().unwrap().to_string()
                    });
                }
            }
        }
        groups.sort();
        profile["groups"] = json!(groups);
    }
    if preset.quirks.email_fallback_other_mails {
        profile["mail"] = json!(vendors::entraid::fallback_email(&profile));
    }
    if preset.wants_groups(&scopes) {
        let mut next = Some(
            vendors::entraid::member_of_url(&Url::parse(profile_url.as_deref().unwrap()).unwrap())
                .to_string(),
        );
        let mut groups = Vec::new();
        while let Some(url) = next.take() {
            let page: Value = http()
                .get(&url)
                .bearer_auth(&access)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            groups.extend(vendors::entraid::group_names(&page));
            next = vendors::entraid::next_link(&page).map(str::to_string);
        }
        profile["groups"] = json!(groups);
    }
    if let Some(user) = user_field.as_deref().and_then(vendors::apple::user_name) {
        profile["name"] = json!(user);
    }
    let mut mapped = claims::map(&claim_table(preset), &profile, id_claims.as_ref()).unwrap();
    if preset.email_trust == presets::EmailTrust::Always && mapped.email.is_some() {
        mapped.email_verified = true;
    }
    mapped
}

fn assert_expected(vendor: Vendor, m: &Mapped) {
    let e = expected(vendor);
    assert_eq!(m.identifier, e.identifier, "{vendor:?} identifier");
    assert_eq!(m.username.as_deref(), e.username, "{vendor:?} username");
    assert_eq!(m.email.as_deref(), e.email, "{vendor:?} email");
    assert_eq!(
        m.email_verified, e.email_verified,
        "{vendor:?} email_verified"
    );
    assert_eq!(m.name.as_deref(), e.name, "{vendor:?} name");
    assert_eq!(m.groups, e.groups, "{vendor:?} groups");
}

#[tokio::test]
async fn every_vendor_signs_in_through_its_preset_with_the_expected_identity() {
    let f = fakes().await;
    for vendor in Vendor::ALL {
        let extra: &[&str] = if vendor == Vendor::EntraId {
            &["GroupMember.Read.All"]
        } else {
            &[]
        };
        let mapped = sign_in(&f, vendor, extra).await;
        assert_expected(vendor, &mapped);
        assert_eq!(f.calls(vendor, Endpoint::Token), 1, "{vendor:?}");
        assert_eq!(f.calls(vendor, Endpoint::Authorize), 1, "{vendor:?}");
    }
    assert_eq!(f.calls(Vendor::Github, Endpoint::Emails), 1);
    // Two organisations and three teams, two per page: 1 + 2 pages.
    assert_eq!(f.calls(Vendor::Github, Endpoint::Orgs), 1);
    assert_eq!(f.calls(Vendor::Github, Endpoint::Teams), 2);
    assert_eq!(f.calls(Vendor::EntraId, Endpoint::MemberOf), 2, "two pages");
    assert_eq!(f.calls(Vendor::Apple, Endpoint::Jwks), 1);
}

#[tokio::test]
async fn entra_groups_need_a_group_scope() {
    let f = fakes().await;
    let m = sign_in(&f, Vendor::EntraId, &[]).await;
    assert!(m.groups.is_empty());
    assert_eq!(f.calls(Vendor::EntraId, Endpoint::MemberOf), 0);
}

#[tokio::test]
async fn apple_sends_the_user_field_once_and_checks_its_client_secret() {
    let f = fakes().await;
    assert_eq!(
        sign_in(&f, Vendor::Apple, &[]).await.name.as_deref(),
        Some("Ada Lovelace")
    );
    // The second sign-in carries no `user` and so no name.
    assert_eq!(sign_in(&f, Vendor::Apple, &[]).await.name, None);
    f.reset_apple_first_sign_in();
    assert!(sign_in(&f, Vendor::Apple, &[]).await.name.is_some());

    // A secret signed by another key, or with the wrong kid, is refused.
    let other_team = fakes().await;
    let other = vendors::apple::client_secret(
        APPLE_TEAM_ID,
        APPLE_KEY_ID,
        APPLE_SERVICES_ID,
        &other_team.apple_p8_pem().unwrap(),
        unix_now(),
        300,
    )
    .unwrap();
    let wrong_kid = vendors::apple::client_secret(
        APPLE_TEAM_ID,
        "OTHERKEY",
        APPLE_SERVICES_ID,
        &f.apple_p8_pem().unwrap(),
        unix_now(),
        300,
    )
    .unwrap();
    for secret in [other, wrong_kid, CLIENT_SECRET.to_string()] {
        let resp = http()
            .post(f.urls(Vendor::Apple).access_token_url)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("redirect_uri", REDIRECT),
                ("client_id", APPLE_SERVICES_ID),
                ("client_secret", &secret),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
}

#[tokio::test]
async fn apple_without_form_post_is_refused_and_id_token_is_posted_when_asked() {
    let f = fakes().await;
    let base = f.urls(Vendor::Apple).authorization_url;
    let q = |mode: Option<&str>, rt: &str| {
        let mut u = Url::parse(&base).unwrap();
        u.query_pairs_mut()
            .append_pair("response_type", rt)
            .append_pair("client_id", APPLE_SERVICES_ID)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", "name email")
            .append_pair("state", "s");
        if let Some(m) = mode {
            u.query_pairs_mut().append_pair("response_mode", m);
        }
        u
    };
    assert_eq!(
        http().get(q(None, "code")).send().await.unwrap().status(),
        400
    );
    let page = http()
        .get(q(Some("form_post"), "code id_token"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, fields) = parse_form_post(&page).unwrap();
    assert!(fields
        .iter()
        .any(|(k, v)| k == "id_token" && v.split('.').count() == 3));
}

#[tokio::test]
async fn token_endpoints_insist_on_the_vendors_client_authentication() {
    let f = fakes().await;
    // Reddit wants Basic; a body secret is refused.
    let r = http()
        .post(f.urls(Vendor::Reddit).access_token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // GitHub wants the body; Basic is refused.
    let r = http()
        .post(f.urls(Vendor::Github).access_token_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn vendor_quirks_are_enforced() {
    let f = fakes().await;
    let authorize = |v: Vendor, extra: &[(&str, &str)]| {
        let mut u = Url::parse(&f.urls(v).authorization_url).unwrap();
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", CLIENT_ID)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("state", "s")
            .extend_pairs(extra);
        u
    };
    let error_of = |r: &reqwest::Response| {
        Url::parse(r.headers()[LOCATION].to_str().unwrap())
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "error")
            .map(|(_, v)| v.into_owned())
    };
    // X requires PKCE, Reddit requires `duration`.
    let r = http()
        .get(authorize(
            Vendor::Twitter,
            &[("scope", "users.read tweet.read")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(&r).as_deref(), Some("invalid_request"));
    let r = http()
        .get(authorize(Vendor::Reddit, &[("scope", "identity")]))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(&r).as_deref(), Some("invalid_request"));

    // GitHub's token answer is form-encoded without Accept: JSON.
    let r = http()
        .get(authorize(Vendor::Github, &[("scope", "read:user")]))
        .send()
        .await
        .unwrap();
    let code = Url::parse(r.headers()[LOCATION].to_str().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let r = http()
        .post(f.urls(Vendor::Github).access_token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/x-www-form-urlencoded"));
    let body: BTreeMap<String, String> =
        url::form_urlencoded::parse(r.text().await.unwrap().as_bytes())
            .into_owned()
            .collect();
    let token = body["access_token"].clone();
    // Without user:email, /user/emails is a 404; without a User-Agent, 403.
    let r = http()
        .get(format!("{}/user/emails", f.base_url(Vendor::Github)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let bare = reqwest::Client::new();
    let r = bare
        .get(f.urls(Vendor::Github).profile_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn mailcow_reads_the_token_from_the_query_only() {
    let f = fakes().await;
    let m = sign_in(&f, Vendor::Mailcow, &[]).await;
    assert_eq!(m.identifier, "ada@mail.example");
    let mut u = Url::parse(&f.urls(Vendor::Mailcow).authorization_url).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "profile");
    let r = http().get(u).send().await.unwrap();
    let code = Url::parse(r.headers()[LOCATION].to_str().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: Value = http()
        .post(f.urls(Vendor::Mailcow).access_token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http()
        .get(f.urls(Vendor::Mailcow).profile_url)
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn twitch_releases_email_only_through_the_claims_parameter() {
    let f = fakes().await;
    let preset = preset_of(Vendor::Twitch);
    let mut u = Url::parse(&f.urls(Vendor::Twitch).authorization_url).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", &preset.scopes.join(" "));
    let r = http().get(u).send().await.unwrap();
    let code = Url::parse(r.headers()[LOCATION].to_str().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: Value = http()
        .post(f.urls(Vendor::Twitch).access_token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        tokens["scope"].is_array(),
        "Twitch answers scope as an array"
    );
    let payload = tokens["id_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(claims.get("email").is_none());
    assert!(claims.get("preferred_username").is_none());
}

#[tokio::test]
async fn codes_are_one_time_and_pkce_is_checked() {
    let f = fakes().await;
    let mut u = Url::parse(&f.urls(Vendor::Discord).authorization_url).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "identify")
        .append_pair("code_challenge", &s256(VERIFIER))
        .append_pair("code_challenge_method", "S256");
    let r = http().get(u).send().await.unwrap();
    let code = Url::parse(r.headers()[LOCATION].to_str().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let exchange = |verifier: &'static str| {
        http()
            .post(f.urls(Vendor::Discord).access_token_url)
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
            ])
            .send()
    };
    assert_eq!(
        exchange("wrong-verifier-wrong-verifier-wrong-verifier-x")
            .await
            .unwrap()
            .status(),
        400
    );
    // The failed attempt consumed the code.
    assert_eq!(exchange(VERIFIER).await.unwrap().status(), 400);
}

#[tokio::test]
async fn form_post_pages_parse_back_with_escaping() {
    let html = r#"<form method="post" action="http://a.example/cb?x=1&amp;y=2"><input type="hidden" name="user" value="{&quot;a&quot;:1}"></form>"#;
    let (action, fields) = parse_form_post(html).unwrap();
    assert_eq!(action, "http://a.example/cb?x=1&y=2");
    assert_eq!(fields, vec![("user".to_string(), r#"{"a":1}"#.to_string())]);
}
