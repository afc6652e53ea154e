//! Several hosts (DESIGN "URLs"): `127.0.0.1` is the sign-in host
//! (`public_url`), `localhost` an app host, both on the gateway's one
//! loopback port. A browser that signs in on the app host is handed back
//! there with its own cookie of the same session; handoff codes are one-time,
//! short-lived and bound to their host; an absolute `rd` leads only to our
//! hosts; `session.cookie_domain` shares one cookie instead.

use std::net::SocketAddr;

use portcullis::demo::{Endpoint, Provider};

use crate::support::{free_port, Gateway, Upstream, SECRET};

/// A cookie as a browser keeps it: for one host, or (with `Domain`) for a
/// domain and every host under it.
#[derive(Debug, Clone)]
struct Stored {
    name: String,
    value: String,
    host: String,
    domain: bool,
}

/// A browser that resolves every host name to the gateway's loopback port
/// (the provider keeps its own address) and keeps cookies per host.
struct Browser {
    client: reqwest::Client,
    cookies: Vec<Stored>,
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .host_str()
        .unwrap()
        .to_ascii_lowercase()
}

/// The `Set-Cookie` lines of a response.
fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location in a {} answer", r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

impl Browser {
    fn new(gateway: SocketAddr, names: &[&str]) -> Browser {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10));
        for name in names {
            builder = builder.resolve(name, gateway);
        }
        Browser {
            client: builder.build().unwrap(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self, host: &str) -> String {
        self.cookies
            .iter()
            .filter(|c| {
                c.host == host || (c.domain && portcullis::config::host_under(host, &c.host))
            })
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The value of cookie `name` this browser sends to `host`.
    fn cookie(&self, host: &str, name: &str) -> Option<String> {
        self.cookie_header(host)
            .split("; ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")).map(str::to_string))
    }

    fn absorb(&mut self, host: &str, r: &reqwest::Response) {
        for line in set_cookies(r) {
            let mut parts = line.split(';');
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let mut domain = None;
            let mut gone = false;
            for attr in parts {
                let attr = attr.trim().to_ascii_lowercase();
                if let Some(d) = attr.strip_prefix("domain=") {
                    domain = Some(d.trim_start_matches('.').to_string());
                }
                gone |= attr == "max-age=0";
            }
            let (host, shared) = match domain {
                Some(d) => (d, true),
                None => (host.to_string(), false),
            };
            self.cookies
                .retain(|c| !(c.name == name && c.host == host && c.domain == shared));
            if !gone {
                self.cookies.push(Stored {
                    name: name.into(),
                    value: value.into(),
                    host,
                    domain: shared,
                });
            }
        }
    }

    /// `GET url` as a page load, keeping the cookies it sets.
    async fn get(&mut self, url: &str) -> reqwest::Response {
        let host = host_of(url);
        let r = self
            .client
            .get(url)
            .header("accept", "text/html")
            .header("cookie", self.cookie_header(&host))
            .send()
            .await
            .unwrap();
        self.absorb(&host, &r);
        r
    }

    /// Follows redirects from `url` (at most 8) and returns every URL
    /// visited after the first, and the last response.
    async fn follow(&mut self, url: &str) -> (Vec<String>, reqwest::Response) {
        let mut visited = Vec::new();
        let mut r = self.get(url).await;
        let mut current = url::Url::parse(url).unwrap();
        for _ in 0..8 {
            if !r.status().is_redirection() {
                break;
            }
            let next = current.join(&location(&r)).unwrap();
            visited.push(next.to_string());
            r = self.get(next.as_str()).await;
            current = next;
        }
        (visited, r)
    }
}

/// The provider, the gateway (sign-in host 127.0.0.1, app host `app_host`)
/// and the upstreams.
struct Hosts {
    provider: Provider,
    gw: Gateway,
    port: u16,
    wiki: Upstream,
    db: String,
    _dir: tempfile::TempDir,
}

impl Hosts {
    /// `public_host` serves as the sign-in host, the wiki app is on
    /// `app_host`, and `session_extra` ends `[session]`.
    async fn start(public_host: &str, app_host: &str, session_extra: &str) -> Hosts {
        Hosts::start_with(public_host, app_host, session_extra, "").await
    }

    /// As [`Hosts::start`], with `more_apps` (TOML) after the others.
    async fn start_with(
        public_host: &str,
        app_host: &str,
        session_extra: &str,
        more_apps: &str,
    ) -> Hosts {
        let port = free_port();
        let public = format!("http://{public_host}:{port}");
        let cfg =
            portcullis::demo::ProviderConfig::example(&format!("{public}/_auth/callback/demo"))
                .unwrap();
        let (id, secret) = (
            cfg.clients[0].client_id.clone(),
            cfg.clients[0].client_secret.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let provider = portcullis::demo::provider::start(listener, cfg).await;
        provider.set_faults(|f| f.auto_approve_as = Some("alice".into()));
        let wiki = Upstream::start("wiki").await;
        let main = Upstream::start("main").await;
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/portcullis.db", dir.path().display());
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"
public_url = "{public}"
threads = 1
shutdown_timeout = "2s"

[session]
secrets = ["{SECRET}"]
{session_extra}

[store]
url = "{db}"

[[source]]
slug = "demo"
name = "Demo IdP"
type = "openidconnect"
consumer_key = "{id}"
consumer_secret = "{secret}"
oidc_well_known_url = "{well_known}"

[[app]]
name = "main"
upstream = "{main}"

[[app.policy]]
on = ["access"]
effect = "allow"

[[app]]
name = "wiki"
host = "{app_host}"
upstream = "{wiki}"

[[app.policy]]
on = ["access"]
effect = "allow"
{more_apps}
"#,
            well_known = provider.well_known_url(),
            main = main.url(),
            wiki = wiki.url(),
        );
        let gw = Gateway::start_full(&config);
        gw.ready().await;
        Hosts {
            provider,
            gw,
            port,
            wiki,
            db,
            _dir: dir,
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    fn browser(&self) -> Browser {
        Browser::new(
            self.gw.addr,
            &["localhost", "wiki.localhost", "other.localhost"],
        )
    }

    /// Starts a login on `host` for `/private` and follows it up to the
    /// handoff URL the sign-in host answers with (not visiting it).
    async fn handoff_url(&self, b: &mut Browser, host: &str) -> String {
        let start = b
            .get(&self.url(host, "/_auth/login/demo?rd=%2Fprivate%3Fx%3D1"))
            .await;
        assert_eq!(start.status(), 302);
        let mut next = location(&start);
        for _ in 0..4 {
            if next.contains("/_auth/handoff?") {
                return next;
            }
            let r = b.get(&next).await;
            assert_eq!(r.status(), 302, "{next}");
            next = location(&r);
        }
        panic!("no handoff URL; ended at {next}");
    }

    async fn store(&self) -> std::sync::Arc<dyn portcullis::identity::store::UserStore> {
        portcullis::identity::store::open(&self.db).await.unwrap()
    }
}

/// The app host's cookie holding the nonce handoff codes are bound to.
fn nonce_cookie() -> String {
    portcullis::session::cookie::flow_cookie_name("portcullis_login", "handoff")
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_on_an_app_host_lands_there_with_its_own_cookie_of_one_session() {
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    let mut b = h.browser();
    let app = |p: &str| h.url("localhost", p);

    // The app host sends the browser to its own sign-in page ...
    let r = b.get(&app("/private?x=1")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/_auth/sign_in?rd=/private%3Fx%3D1");
    // ... whose login moves to the sign-in host, with an absolute rd back here.
    let r = b.get(&app("/_auth/login/demo?rd=%2Fprivate%3Fx%3D1")).await;
    assert_eq!(r.status(), 302);
    let to_sign_in = location(&r);
    let expected_rd: String =
        url::form_urlencoded::byte_serialize(app("/private?x=1").as_bytes()).collect();
    assert!(
        to_sign_in.starts_with(&h.url(
            "127.0.0.1",
            &format!("/_auth/login/demo?rd={expected_rd}&handoff=")
        )),
        "{to_sign_in}"
    );
    // The app host keeps only the nonce its handoff will be bound to.
    let set = set_cookies(&r);
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(
        set[0].starts_with(&format!("{}=", nonce_cookie())),
        "{set:?}"
    );

    let (visited, landed) = b.follow(&to_sign_in).await;
    assert_eq!(landed.status(), 200, "{visited:?}");
    // provider, callback on the sign-in host, handoff on the app host, the page.
    assert_eq!(visited.len(), 4, "{visited:?}");
    assert!(visited[1].starts_with(&h.url("127.0.0.1", "/_auth/callback/demo?")));
    assert!(
        visited[2].starts_with(&app("/_auth/handoff?code=")),
        "{visited:?}"
    );
    assert_eq!(visited[3], app("/private?x=1"));
    assert_eq!(landed.text().await.unwrap(), "hello from wiki");
    let seen = h.wiki.requests().pop().unwrap();
    assert_eq!(seen.header("x-forwarded-user"), Some("alice"));

    // Each host holds its own host-only cookie, of one session record.
    let on_app = b.cookie("localhost", "portcullis").unwrap();
    let on_sign_in = b.cookie("127.0.0.1", "portcullis").unwrap();
    assert_ne!(on_app, on_sign_in);
    assert!(b.cookies.iter().all(|c| !c.domain));
    let store = h.store().await;
    let (user, _) = store.list_users().await.unwrap().remove(0);
    assert_eq!(store.user_sessions(&user.id).await.unwrap().len(), 1);
    let r = b.get(&h.url("127.0.0.1", "/private")).await;
    assert_eq!(r.status(), 200);

    // SES-18: the app host's cookie is not a session on the sign-in host.
    let r = b
        .client
        .get(h.url("127.0.0.1", "/private"))
        .header("cookie", format!("portcullis={on_app}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_session_on_the_sign_in_host_is_handed_to_an_app_host_without_the_provider() {
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    let mut b = h.browser();
    // Signed in on the sign-in host only.
    let (_, r) = b
        .follow(&h.url("127.0.0.1", "/_auth/login/demo?rd=/private"))
        .await;
    assert_eq!(r.status(), 200);
    assert!(b.cookie("localhost", "portcullis").is_none());
    let authorizations = h.provider.calls(Endpoint::Authorize);

    // A login on the app host: straight to a handoff, no provider round trip.
    let r = b
        .get(&h.url("localhost", "/_auth/login/demo?rd=/wiki-page"))
        .await;
    let r = b.get(&location(&r)).await;
    assert_eq!(r.status(), 302);
    let handoff = location(&r);
    assert!(
        handoff.starts_with(&h.url("localhost", "/_auth/handoff?code=")),
        "{handoff}"
    );
    // The handoff's destination is its record's, never a query parameter's.
    let r = b.get(&format!("{handoff}&rd=http://evil.example/")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), h.url("localhost", "/wiki-page"));
    assert_eq!(h.provider.calls(Endpoint::Authorize), authorizations);
    let r = b.get(&h.url("localhost", "/wiki-page")).await;
    assert_eq!(r.status(), 200);
    let store = h.store().await;
    let (user, _) = store.list_users().await.unwrap().remove(0);
    assert_eq!(store.user_sessions(&user.id).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_expired_or_foreign_host_handoff_code_is_refused() {
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    let refused = |r: &reqwest::Response, what: &str| {
        assert_eq!(r.status(), 400, "{what}");
        assert!(
            !set_cookies(r).iter().any(|c| c.starts_with("portcullis=")),
            "{what}: {:?}",
            set_cookies(r)
        );
    };

    // Replayed: the first trade works, the second is refused.
    let mut b = h.browser();
    let handoff = h.handoff_url(&mut b, "localhost").await;
    let r = b.get(&handoff).await;
    assert_eq!(r.status(), 302);
    let r = b.get(&handoff).await;
    refused(&r, "replayed");
    let page = r.text().await.unwrap();
    assert!(page.contains("already used"), "{page}");

    // Foreign host: a code for localhost opened on the sign-in host names the
    // host it was made for, and is spent.
    let mut b = h.browser();
    let handoff = h.handoff_url(&mut b, "localhost").await;
    let code = handoff.split_once("code=").unwrap().1.to_string();
    let r = b
        .get(&h.url("127.0.0.1", &format!("/_auth/handoff?code={code}")))
        .await;
    refused(&r, "foreign host");
    let page = r.text().await.unwrap();
    assert!(page.contains("made for localhost"), "{page}");
    assert!(page.contains("Host header"), "{page}");
    let r = b.get(&handoff).await;
    refused(&r, "after a foreign-host attempt");

    // Expired: a code whose 60 s are over (written with a past expiry).
    let store = h.store().await;
    let (user, _) = store.list_users().await.unwrap().remove(0);
    let sid = store.user_sessions(&user.id).await.unwrap()[0].id.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let old = portcullis::session::handoff::HandoffRecord {
        session_id: sid.clone(),
        host: "localhost".into(),
        rd: h.url("localhost", "/"),
        binding: portcullis::session::handoff::binding_of("the-nonce"),
        expires_at: now - 1,
    };
    let key = portcullis::session::handoff::code_key("an-old-code");
    store.create_handoff(&key, &old, now - 61).await.unwrap();
    let mut b = h.browser();
    b.cookies.push(Stored {
        name: nonce_cookie(),
        value: "the-nonce".into(),
        host: "localhost".into(),
        domain: false,
    });
    let r = b
        .get(&h.url("localhost", "/_auth/handoff?code=an-old-code"))
        .await;
    refused(&r, "expired");
    // The same record one minute younger is traded: only the age refused it.
    let fresh = portcullis::session::handoff::HandoffRecord {
        expires_at: now + 60,
        ..old
    };
    let key = portcullis::session::handoff::code_key("a-fresh-code");
    store.create_handoff(&key, &fresh, now).await.unwrap();
    let r = b
        .get(&h.url("localhost", "/_auth/handoff?code=a-fresh-code"))
        .await;
    assert_eq!(r.status(), 302);

    // Unknown or missing codes.
    for q in ["?code=nope", "", "?code="] {
        let r = b
            .get(&h.url("localhost", &format!("/_auth/handoff{q}")))
            .await;
        refused(&r, q);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handoff_link_opened_in_another_browser_is_refused_and_spent() {
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    // The attacker signs in and keeps the handoff URL instead of opening it.
    let mut attacker = h.browser();
    let handoff = h.handoff_url(&mut attacker, "localhost").await;
    // The victim opens it: no session of the attacker's is planted (login CSRF).
    let mut victim = h.browser();
    let r = victim.get(&handoff).await;
    assert_eq!(r.status(), 400);
    assert!(set_cookies(&r).is_empty(), "{:?}", set_cookies(&r));
    let page = r.text().await.unwrap();
    assert!(page.contains("another browser"), "{page}");
    assert!(victim.cookie("localhost", "portcullis").is_none());
    // A victim holding a nonce of its own fares no better.
    let mut victim = h.browser();
    let r = victim
        .get(&h.url("localhost", "/_auth/login/demo?rd=/"))
        .await;
    assert_eq!(r.status(), 302);
    let handoff = h.handoff_url(&mut attacker, "localhost").await;
    assert_eq!(victim.get(&handoff).await.status(), 400);
    // The code is spent: the attacker cannot use it afterwards either.
    assert_eq!(attacker.get(&handoff).await.status(), 400);
    let handoff = h.handoff_url(&mut attacker, "localhost").await;
    assert_eq!(attacker.get(&handoff).await.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_on_the_sign_in_host_for_an_app_host_binds_its_handoff_there_first() {
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    let mut b = h.browser();
    let rd: String =
        url::form_urlencoded::byte_serialize(h.url("localhost", "/x").as_bytes()).collect();
    let (visited, r) = b
        .follow(&h.url("127.0.0.1", &format!("/_auth/login/demo?rd={rd}")))
        .await;
    assert_eq!(r.status(), 200, "{visited:?}");
    assert_eq!(visited.last().unwrap(), &h.url("localhost", "/x"));
    // After the callback: the app host's own login (which sets the nonce),
    // the sign-in host again (live session, no provider), then the handoff.
    let after: Vec<&String> = visited.iter().skip(2).collect();
    assert!(
        after[0].starts_with(&h.url("localhost", "/_auth/login/demo?rd=%2Fx")),
        "{visited:?}"
    );
    assert!(after[1].contains("&handoff="), "{visited:?}");
    assert!(
        after[2].starts_with(&h.url("localhost", "/_auth/handoff?code=")),
        "{visited:?}"
    );
    assert_eq!(h.provider.calls(Endpoint::Authorize), 1);
}

/// A login started on one app host for a page on another app host lands on
/// that page, signed in there: the handoff is bound on the host it goes to,
/// never to a cookie of the host the login began on.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_on_one_app_host_for_a_page_on_another_lands_there_signed_in() {
    let docs = Upstream::start("docs").await;
    let more = format!(
        "[[app]]\nname = \"docs\"\nhost = \"wiki.localhost\"\nupstream = \"{}\"\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        docs.url()
    );
    let h = Hosts::start_with("127.0.0.1", "localhost", "", &more).await;
    let mut b = h.browser();
    let rd: String =
        url::form_urlencoded::byte_serialize(h.url("wiki.localhost", "/page?x=1").as_bytes())
            .collect();
    let (visited, r) = b
        .follow(&h.url("localhost", &format!("/_auth/login/demo?rd={rd}")))
        .await;
    assert_eq!(r.status(), 200, "{visited:?}");
    assert_eq!(
        visited.last().unwrap(),
        &h.url("wiki.localhost", "/page?x=1"),
        "{visited:?}"
    );
    assert_eq!(r.text().await.unwrap(), "hello from docs");
    assert!(b.cookie("wiki.localhost", "portcullis").is_some());
    assert_eq!(h.provider.calls(Endpoint::Authorize), 1);
}

/// A link begun on an app host is for the session signed in there: when the
/// sign-in host holds another person's session (signed in there in another
/// tab), the link is refused, not bound to that other session.
#[tokio::test(flavor = "multi_thread")]
async fn a_link_begun_on_an_app_host_is_refused_for_another_session_on_the_sign_in_host() {
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    let mut b = h.browser();
    let url = h.handoff_url(&mut b, "localhost").await;
    assert_eq!(b.get(&url).await.status(), 302);
    // Signed in as alice on both hosts: the link goes on to the provider.
    let r = b.get(&h.url("localhost", "/_auth/link/demo")).await;
    assert_eq!(r.status(), 302);
    let to_sign_in = location(&r);
    assert!(to_sign_in.contains("&session="), "{to_sign_in}");
    let r = b.get(&to_sign_in).await;
    assert_eq!(r.status(), 302);
    assert!(
        location(&r).starts_with(&h.provider.issuer()),
        "{}",
        location(&r)
    );
    // Bob signs in on the sign-in host in another tab: its cookie is his now.
    h.provider
        .set_faults(|f| f.auto_approve_as = Some("bob".into()));
    let (_, r) = b
        .follow(&h.url("127.0.0.1", "/_auth/login/demo?rd=/private"))
        .await;
    assert_eq!(r.status(), 200);
    let authorizations = h.provider.calls(Endpoint::Authorize);
    // Alice's link from the app host is not bound to Bob's session.
    let r = b.get(&h.url("localhost", "/_auth/link/demo")).await;
    let r = b.get(&location(&r)).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("another session"));
    assert_eq!(h.provider.calls(Endpoint::Authorize), authorizations);
    // On a host no app names (served by the host-less app) no session is
    // ever set: a link there goes on to the sign-in host, unbound.
    let r = b.get(&h.url("other.localhost", "/_auth/link/demo")).await;
    assert_eq!(r.status(), 302);
    let to_sign_in = location(&r);
    assert!(
        to_sign_in.starts_with(&h.url("127.0.0.1", "/_auth/link/demo?"))
            && !to_sign_in.contains("session="),
        "{to_sign_in}"
    );
    // Without a session on the app host, a link there is sent to sign in.
    let mut fresh = h.browser();
    let r = fresh
        .get(&h.url("localhost", "/_auth/link/demo?rd=/x"))
        .await;
    assert_eq!(r.status(), 302);
    assert!(
        location(&r).starts_with("/_auth/sign_in?rd="),
        "{}",
        location(&r)
    );
}

/// The store refuses the handoff code after the sign-in was committed (a
/// trigger in the real SQLite file fails that one insert): the callback is
/// the 503 page with no session cookie, and the session it made is revoked
/// again, so nothing signed in remains of the refused sign-in.
#[tokio::test(flavor = "multi_thread")]
async fn a_handoff_the_store_cannot_keep_is_a_503_page_and_revokes_its_session() {
    use sqlx::Connection as _;
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    let mut db = sqlx::SqliteConnection::connect(&h.db).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_handoff BEFORE INSERT ON handoff_codes \
         BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let mut b = h.browser();
    let r = b
        .get(&h.url("localhost", "/_auth/login/demo?rd=%2Fprivate"))
        .await;
    let r = b.get(&location(&r)).await;
    let to_provider = location(&r);
    let r = b.get(&to_provider).await;
    let callback = location(&r);
    assert!(callback.starts_with(&h.url("127.0.0.1", "/_auth/callback/demo?")));
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 503);
    assert!(b.cookie("127.0.0.1", "portcullis").is_none());
    assert!(r.text().await.unwrap().contains("Request id"));
    let store = h.store().await;
    let (user, _) = store.list_users().await.unwrap().remove(0);
    let sessions = store.user_sessions(&user.id).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].revoked, "the refused sign-in's session is live");
}

/// OIDC-34 on an app host: a third party's login there naming another
/// issuer is a 400 before the browser is sent anywhere; with the source's
/// own issuer, its `target_link_uri` goes on as the `rd` back to this host.
#[tokio::test(flavor = "multi_thread")]
async fn a_third_party_login_on_an_app_host_is_judged_there() {
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    let mut b = h.browser();
    let r = b
        .get(&h.url(
            "localhost",
            "/_auth/login/demo?iss=https%3A%2F%2Fevil.example&target_link_uri=%2Fx",
        ))
        .await;
    assert_eq!(r.status(), 400);
    let issuer: String =
        url::form_urlencoded::byte_serialize(h.provider.issuer().as_bytes()).collect();
    let r = b
        .get(&h.url(
            "localhost",
            &format!("/_auth/login/demo?iss={issuer}&target_link_uri=%2Fx"),
        ))
        .await;
    assert_eq!(r.status(), 302);
    let back: String =
        url::form_urlencoded::byte_serialize(h.url("localhost", "/x").as_bytes()).collect();
    assert!(
        location(&r).contains(&format!("rd={back}&")),
        "{}",
        location(&r)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rd_to_a_host_that_is_no_app_host_lands_on_slash() {
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    for rd in [
        "http://evil.example/x".to_string(),
        // Our scheme and port, a host that resolves here, but no app names it.
        format!("http://other.localhost:{}/x", h.port),
        // An app host on another port is another origin.
        format!("http://localhost:{}/x", h.port + 1),
        "https://localhost/x".to_string(),
        format!("http://evil.example@localhost:{}/x", h.port),
    ] {
        let mut b = h.browser();
        let q: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let (visited, r) = b
            .follow(&h.url("127.0.0.1", &format!("/_auth/login/demo?rd={q}")))
            .await;
        assert_eq!(r.status(), 200, "{rd}: {visited:?}");
        assert_eq!(visited.last().unwrap(), &h.url("127.0.0.1", "/"), "{rd}");
        assert!(
            !visited.iter().any(|v| v.contains("/_auth/handoff")),
            "{rd}: {visited:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_out_on_the_app_host_ends_the_session_on_the_sign_in_host() {
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    let mut b = h.browser();
    let handoff = h.handoff_url(&mut b, "localhost").await;
    assert_eq!(b.get(&handoff).await.status(), 302);
    assert_eq!(b.get(&h.url("127.0.0.1", "/private")).await.status(), 200);
    assert_eq!(b.get(&h.url("localhost", "/private")).await.status(), 200);

    let back = h.url("127.0.0.1", "/bye");
    let q: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
    // The sign-out page's form may lead to the sign-in host (this `rd`, and
    // where a provider's logout sends the browser back) and every app host:
    // browsers apply `form-action` to the redirects after the POST.
    let page = b
        .client
        .get(h.url("localhost", &format!("/_auth/sign_out?rd={q}")))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!(
            "form-action 'self' http://127.0.0.1:{p} http://localhost:{p}",
            p = h.port
        )),
        "{csp}"
    );
    let r = b
        .client
        .post(h.url("localhost", &format!("/_auth/sign_out?rd={q}")))
        .header("cookie", b.cookie_header("localhost"))
        .header("origin", format!("http://localhost:{}", h.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    b.absorb("localhost", &r);
    // Signed out everywhere: the sign-in host's cookie is of the same record.
    let r = b.get(&h.url("127.0.0.1", "/private")).await;
    assert_eq!(r.status(), 302);
    assert!(location(&r).starts_with("/_auth/sign_in"));
    let r = b.get(&h.url("localhost", "/private")).await;
    assert_eq!(r.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_on_an_app_host_gets_a_page_naming_the_registered_callback() {
    let h = Hosts::start("127.0.0.1", "localhost", "").await;
    let mut b = h.browser();
    let r = b
        .get(&h.url("localhost", "/_auth/callback/demo?state=abc&code=xyz"))
        .await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    let callback = h.url("127.0.0.1", "/_auth/callback/demo");
    assert!(page.contains(&callback), "{page}");
    assert!(page.contains("server.public_url"), "{page}");
    assert_eq!(h.provider.calls(Endpoint::Token), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_cookie_domain_every_host_under_it_shares_one_cookie_without_handoff() {
    let h = Hosts::start(
        "localhost",
        "wiki.localhost",
        "cookie_domain = \"localhost\"",
    )
    .await;
    let mut b = h.browser();
    let r = b
        .get(&h.url("wiki.localhost", "/_auth/login/demo?rd=/private"))
        .await;
    let (visited, landed) = b.follow(&location(&r)).await;
    assert_eq!(landed.status(), 200, "{visited:?}");
    assert!(
        !visited.iter().any(|v| v.contains("/_auth/handoff")),
        "{visited:?}"
    );
    assert_eq!(
        visited.last().unwrap(),
        &h.url("wiki.localhost", "/private")
    );
    assert_eq!(landed.text().await.unwrap(), "hello from wiki");
    // One cookie, set on the sign-in host with Domain, sent to both hosts.
    let sessions: Vec<&Stored> = b
        .cookies
        .iter()
        .filter(|c| c.name == "portcullis")
        .collect();
    assert_eq!(sessions.len(), 1, "{:?}", b.cookies);
    assert!(sessions[0].domain && sessions[0].host == "localhost");
    assert_eq!(b.get(&h.url("localhost", "/private")).await.status(), 200);
    // A host outside the domain never sees it.
    assert!(b.cookie("127.0.0.1", "portcullis").is_none());
}

#[test]
fn a_cookie_domain_that_does_not_cover_the_sign_in_host_is_a_config_error() {
    let body = format!(
        "{}\n[[app]]\nname = \"a\"\nupstream = \"http://127.0.0.1:1\"\n",
        crate::support::base_config().replace(
            "[session]\n",
            "[session]\ncookie_domain = \"corp.example\"\n"
        )
    );
    let file = crate::support::config_file(&body);
    let err = portcullis::config::load_with_env(&file.path, Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("session.cookie_domain"), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
    assert!(err.contains("PORTCULLIS_SESSION__COOKIE_DOMAIN"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handoff_code_is_traded_once_across_two_replicas_on_postgresql() {
    use sqlx::Connection as _;
    let Ok(base) = std::env::var("PORTCULLIS_TEST_POSTGRES_URL") else {
        eprintln!(
            "notice: PORTCULLIS_TEST_POSTGRES_URL is unset; the replica handoff test is skipped"
        );
        return;
    };
    let schema = format!("pc_it_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let db = format!("{base}{sep}options[search_path]={schema}");

    // Both replicas share the sign-in host (A's address) and the app host `localhost`.
    let ports = [free_port(), free_port()];
    let public = format!("http://127.0.0.1:{}", ports[0]);
    let cfg = portcullis::demo::ProviderConfig::example(&format!("{public}/_auth/callback/demo"))
        .unwrap();
    let (id, secret) = (
        cfg.clients[0].client_id.clone(),
        cfg.clients[0].client_secret.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = portcullis::demo::provider::start(listener, cfg).await;
    provider.set_faults(|f| f.auto_approve_as = Some("alice".into()));
    let upstream = Upstream::start("wiki").await;
    let config = |port: u16| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{public}\"\nthreads = 1\nshutdown_timeout = \"2s\"\n\
             [session]\nsecrets = [\"{SECRET}\"]\n[store]\nurl = \"{db}\"\n\
             [[source]]\nslug = \"demo\"\ntype = \"openidconnect\"\nconsumer_key = \"{id}\"\nconsumer_secret = \"{secret}\"\noidc_well_known_url = \"{}\"\n\
             [[app]]\nname = \"main\"\nupstream = \"{up}\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n\
             [[app]]\nname = \"wiki\"\nhost = \"localhost\"\nupstream = \"{up}\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
            provider.well_known_url(),
            up = upstream.url(),
        )
    };
    let a = crate::replicas::Replica::start(&config(ports[0]), ports[0]).await;
    let b = crate::replicas::Replica::start(&config(ports[1]), ports[1]).await;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut browser = Browser::new(loopback, &["localhost"]);
    let on = |port: u16, path: &str| format!("http://localhost:{port}{path}");

    let r = browser
        .get(&on(ports[0], "/_auth/login/demo?rd=/private"))
        .await;
    let mut next = location(&r);
    while !next.contains("/_auth/handoff?") {
        let r = browser.get(&next).await;
        assert_eq!(r.status(), 302, "{next}");
        next = location(&r);
    }
    let code = next.split_once("code=").unwrap().1.to_string();
    let nonce = browser.cookie_header("localhost");
    let handoff = |port: u16| {
        let c = browser.client.clone();
        let url = on(port, &format!("/_auth/handoff?code={code}"));
        let nonce = nonce.clone();
        async move {
            let r = c
                .get(url)
                .header("accept", "text/html")
                .header("cookie", nonce)
                .send()
                .await
                .unwrap();
            let cookies = set_cookies(&r);
            (r.status().as_u16(), cookies)
        }
    };
    let (ra, rb) = tokio::join!(handoff(ports[0]), handoff(ports[1]));
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(statuses, [302, 400], "{ra:?} {rb:?}");
    // The winner's cookie is a session on either replica.
    let cookie = [ra, rb]
        .into_iter()
        .find(|(s, _)| *s == 302)
        .unwrap()
        .1
        .into_iter()
        .find(|c| c.starts_with("portcullis="))
        .unwrap();
    let pair = cookie.split(';').next().unwrap().to_string();
    for port in ports {
        let r = browser
            .client
            .get(on(port, "/private"))
            .header("cookie", &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "replica on {port}");
    }
    drop((a, b));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
}
