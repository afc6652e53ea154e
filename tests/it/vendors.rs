//! Vendor presets end to end: for every `type = "<vendor>"`, a sign-in
//! through the gateway against that vendor's fake (its documented response
//! shapes) yields the expected identifier, username, email, name and groups.
//! Only the URLs are overridden (to point at the fake): scopes, client
//! authentication, PKCE, mapping and quirks come from the preset.

use portcullis::demo::vendors::{
    expected, parse_form_post, start, Vendor, VendorFakes, APPLE_KEY_ID, APPLE_SERVICES_ID,
    APPLE_TEAM_ID, CLIENT_ID, CLIENT_SECRET,
};

use crate::signin::{session_cookies_set, Jar};
use crate::support::{client, free_port, Gateway, Upstream, SECRET};

fn source_table(v: Vendor, fakes: &VendorFakes, dir: &std::path::Path) -> String {
    let urls = fakes.urls(v);
    let mut t = format!("slug = \"{}\"\ntype = \"{}\"\n", v.slug(), v.slug());
    let line = |t: &mut String, k: &str, val: &str| t.push_str(&format!("{k} = \"{val}\"\n"));
    match v {
        Vendor::Apple => {
            line(&mut t, "consumer_key", APPLE_SERVICES_ID);
            line(&mut t, "team_id", APPLE_TEAM_ID);
            line(&mut t, "key_id", APPLE_KEY_ID);
            let key = dir.join("apple.p8");
            std::fs::write(&key, fakes.apple_p8_pem().unwrap()).unwrap();
            line(&mut t, "private_key_file", &key.display().to_string());
        }
        _ => {
            line(&mut t, "consumer_key", CLIENT_ID);
            line(&mut t, "consumer_secret", CLIENT_SECRET);
        }
    }
    match v {
        Vendor::Okta | Vendor::Keycloak | Vendor::Gitlab | Vendor::Mailcow => {
            line(&mut t, "base_url", &urls.base_url);
        }
        Vendor::EntraId | Vendor::Google | Vendor::Twitch => {
            line(
                &mut t,
                "oidc_well_known_url",
                urls.oidc_well_known_url.as_deref().unwrap(),
            );
            if v == Vendor::EntraId {
                line(&mut t, "tenant", "demo-tenant");
                line(&mut t, "profile_url", &urls.profile_url);
                t.push_str(
                    "scopes = [\"openid\", \"profile\", \"email\", \"User.Read\", \"GroupMember.Read.All\"]\n",
                );
            }
        }
        _ => {
            line(&mut t, "authorization_url", &urls.authorization_url);
            line(&mut t, "access_token_url", &urls.access_token_url);
            line(&mut t, "profile_url", &urls.profile_url);
            if let Some(jwks) = &urls.oidc_jwks_url {
                line(&mut t, "oidc_jwks_url", jwks);
            }
        }
    }
    if let Some(iss) = &urls.issuer {
        line(&mut t, "issuer", iss);
    }
    t
}

async fn sign_in_through(v: Vendor, fakes: &VendorFakes) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}/portcullis.db", dir.path().display());
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start_full(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{public}\"\nthreads = 1\n\
         [session]\nsecrets = [\"{SECRET}\"]\n[store]\nurl = \"{db}\"\n\
         [[source]]\n{}\n[[app]]\nname = \"app\"\nupstream = \"{}\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        source_table(v, fakes, dir.path()),
        upstream.url()
    ));
    gw.ready().await;
    let mut jar = Jar::default();
    let get = async |jar: &mut Jar, url: &str| {
        let r = client()
            .get(url)
            .header("accept", "text/html")
            .header("cookie", jar.header())
            .send()
            .await
            .unwrap();
        jar.absorb(&r);
        r
    };
    let start = get(
        &mut jar,
        &gw.url(&format!("/_auth/login/{}?rd=/home", v.slug())),
    )
    .await;
    assert_eq!(
        start.status(),
        302,
        "{v:?} login: {}",
        start.text().await.unwrap_or_default()
    );
    let authorize = start.headers()["location"].to_str().unwrap().to_string();
    let back = get(&mut jar, &authorize).await;
    let done = if v == Vendor::Apple {
        // form_post: the provider's page POSTs the answer back, cross-site.
        assert_eq!(back.status(), 200, "{v:?} authorize");
        let login_cookie = jar.header();
        let (action, fields) = parse_form_post(&back.text().await.unwrap()).unwrap();
        let r = client()
            .post(action)
            .header("accept", "text/html")
            .header("cookie", login_cookie)
            .form(&fields)
            .send()
            .await
            .unwrap();
        jar.absorb(&r);
        r
    } else {
        assert_eq!(back.status(), 302, "{v:?} authorize");
        let callback = back.headers()["location"].to_str().unwrap().to_string();
        get(&mut jar, &callback).await
    };
    let status = done.status();
    let cookies = session_cookies_set(&done);
    // A form_post callback is answered 303 (See Other), a GET one 302.
    assert!(
        status == 302 || status == 303,
        "{v:?} callback {status}: {}",
        done.text().await.unwrap_or_default()
    );
    assert_eq!(cookies.len(), 1, "{v:?}: no session");

    let want = expected(v);
    let store = portcullis::identity::store::open(&db).await.unwrap();
    let users = store.list_users().await.unwrap();
    assert_eq!(users.len(), 1, "{v:?}");
    let (user, connections) = &users[0];
    assert_eq!(
        connections[0].identifier, want.identifier,
        "{v:?} identifier"
    );
    assert_eq!(connections[0].source, v.slug());
    match want.username {
        Some(u) => assert_eq!(user.username, u, "{v:?} username"),
        None => assert!(!user.username.is_empty(), "{v:?} username"),
    }
    assert_eq!(user.email.as_deref(), want.email, "{v:?} email");
    assert_eq!(user.name.as_deref(), want.name, "{v:?} name");
    let mut groups: Vec<&str> = want.groups.to_vec();
    groups.sort_unstable();
    assert_eq!(user.groups, groups, "{v:?} groups");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_vendor_preset_signs_in_with_the_expected_identity() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fakes = start(listener).await;
    for v in Vendor::ALL {
        sign_in_through(v, &fakes).await;
    }
}
