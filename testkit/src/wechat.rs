//! A fake of WeChat's website QR-code login for tests, written from WeChat's
//! documentation and deliberately not from the `wechat` preset (it reads no
//! preset table: a preset that got WeChat wrong fails against it).
//! Guide: https://developers.weixin.qq.com/doc/oplatform/en/Website_App/WeChat_Login/Wechat_Login.html
//!
//! Documented behaviour it reproduces:
//! * `GET /connect/qrconnect?appid=APPID&redirect_uri=…&response_type=code&scope=snsapi_login&state=…`
//!   — the client is `appid` (no `client_id`), the parameters in that
//!   order, scope `snsapi_login`; anything else is WeChat's "this link
//!   cannot be accessed" page. Approves the demo person at once.
//! * `GET /sns/oauth2/access_token?appid=&secret=&code=&grant_type=authorization_code`
//!   — a GET, no redirect_uri; `{"access_token","expires_in":7200,
//!   "refresh_token","openid","scope","unionid"}`; every failure an HTTP 200
//!   `{"errcode":…,"errmsg":…}` (40029 invalid code, 40125 invalid appsecret).
//! * `GET /sns/userinfo?access_token=&openid=` — `openid`, `nickname`,
//!   `sex`, `province`, `city`, `country`, `headimgurl`, `privilege`,
//!   `unionid` (the last only for apps bound to an Open Platform account);
//!   no email.
//!
//! WeChat serves its JSON as `text/plain`, and so does the fake.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::LOCATION;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use rand::RngCore;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

use crate::server::{respond, spawn_server};

/// The website app's AppID the fake knows.
pub const APPID: &str = "wxd477edab60670232";
/// The AppSecret the fake checks.
pub const SECRET: &str = "3e2fa5ce1990693588816ff28e259ae0";
/// The demo person's openid (per app).
pub const OPENID: &str = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M";
/// The demo person's unionid (per Open Platform account).
pub const UNIONID: &str = "o6_bmasdasdsad6_2sgVt7hMZOPfL";
/// The demo person's nickname.
pub const NICKNAME: &str = "Band";

type Resp = Response<Full<Bytes>>;

/// The query parameters of a QR-code page link, in WeChat's order.
const AUTHORIZE_ORDER: [&str; 5] = ["appid", "redirect_uri", "response_type", "scope", "state"];

#[derive(Default)]
struct State {
    codes: Vec<String>,
    tokens: Vec<String>,
    /// Answer the token request with this errcode/errmsg.
    token_errcode: Option<(i64, &'static str)>,
    /// Answer the profile request with this errcode/errmsg.
    userinfo_errcode: Option<(i64, &'static str)>,
    /// Whether the app is bound to an Open Platform account (unionid sent).
    no_unionid: bool,
}

/// A running WeChat fake.
pub struct WechatFake {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: watch::Sender<bool>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WechatFake {
    /// Starts the fake on `listener`.
    pub fn start(listener: TcpListener) -> std::io::Result<WechatFake> {
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let handler_state = state.clone();
        let stop = spawn_server(listener, move |req| {
            let state = handler_state.clone();
            async move { handle(&state, &req) }
        });
        Ok(WechatFake { addr, state, stop })
    }

    /// The URL of one of WeChat's paths on the fake (`/sns/userinfo`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Makes the token request fail with this `errcode` / `errmsg` in an
    /// HTTP 200 (`None`: answer normally).
    pub fn set_token_errcode(&self, err: Option<(i64, &'static str)>) {
        lock(&self.state).token_errcode = err;
    }

    /// Makes the profile request fail with this `errcode` / `errmsg` in an
    /// HTTP 200 (`None`: answer normally).
    pub fn set_userinfo_errcode(&self, err: Option<(i64, &'static str)>) {
        lock(&self.state).userinfo_errcode = err;
    }

    /// Whether the app is bound to an Open Platform account: only then do
    /// the answers carry `unionid`.
    pub fn set_unionid(&self, bound: bool) {
        lock(&self.state).no_unionid = !bound;
    }
}

impl Drop for WechatFake {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn handle(state: &Mutex<State>, req: &Request<Incoming>) -> Resp {
    let query = req.uri().query().unwrap_or("");
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if req.method() != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "");
    }
    match req.uri().path() {
        "/connect/qrconnect" => qrconnect(state, &pairs),
        "/sns/oauth2/access_token" => access_token(state, &pairs),
        "/sns/userinfo" => userinfo(state, &pairs),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn qrconnect(state: &Mutex<State>, pairs: &[(String, String)]) -> Resp {
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let in_order = names.get(..AUTHORIZE_ORDER.len()) == Some(&AUTHORIZE_ORDER[..]);
    let redirect = get(pairs, "redirect_uri").and_then(|r| Url::parse(r).ok());
    let (true, Some(mut target), Some(APPID), Some("code"), Some("snsapi_login")) = (
        in_order && get(pairs, "client_id").is_none(),
        redirect,
        get(pairs, "appid"),
        get(pairs, "response_type"),
        get(pairs, "scope"),
    ) else {
        return respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<p>This link cannot be accessed. Check the parameters.</p>",
        );
    };
    let code = random_token(16);
    lock(state).codes.push(code.clone());
    target.query_pairs_mut().append_pair("code", &code);
    if let Some(s) = get(pairs, "state") {
        target.query_pairs_mut().append_pair("state", s);
    }
    let mut resp = respond(StatusCode::FOUND, "text/plain", "");
    if let Ok(v) = HeaderValue::from_str(target.as_str()) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

fn errcode(code: i64, msg: &str) -> Resp {
    answer(&json!({"errcode": code, "errmsg": msg}))
}

fn access_token(state: &Mutex<State>, pairs: &[(String, String)]) -> Resp {
    let mut st = lock(state);
    if let Some((code, msg)) = st.token_errcode {
        return errcode(code, msg);
    }
    if get(pairs, "appid") != Some(APPID) {
        return errcode(40013, "invalid appid");
    }
    if get(pairs, "secret") != Some(SECRET) {
        return errcode(40125, "invalid appsecret");
    }
    if get(pairs, "grant_type") != Some("authorization_code") {
        return errcode(40002, "invalid grant_type");
    }
    let Some(i) = get(pairs, "code").and_then(|c| st.codes.iter().position(|k| k == c)) else {
        return errcode(40029, "invalid code");
    };
    st.codes.swap_remove(i);
    let token = random_token(24);
    st.tokens.push(token.clone());
    let mut body = json!({
        "access_token": token,
        "expires_in": 7200,
        "refresh_token": random_token(24),
        "openid": OPENID,
        "scope": "snsapi_login",
    });
    if let (false, Some(obj)) = (st.no_unionid, body.as_object_mut()) {
        obj.insert("unionid".into(), json!(UNIONID));
    }
    answer(&body)
}

fn userinfo(state: &Mutex<State>, pairs: &[(String, String)]) -> Resp {
    let st = lock(state);
    if let Some((code, msg)) = st.userinfo_errcode {
        return errcode(code, msg);
    }
    if !get(pairs, "access_token").is_some_and(|t| st.tokens.iter().any(|k| k == t)) {
        return errcode(
            40001,
            "invalid credential, access_token is invalid or not latest",
        );
    }
    if get(pairs, "openid") != Some(OPENID) {
        return errcode(40003, "invalid openid");
    }
    let mut body = json!({
        "openid": OPENID,
        "nickname": NICKNAME,
        "sex": 1,
        "province": "PROVINCE",
        "city": "CITY",
        "country": "COUNTRY",
        "headimgurl": "https://thirdwx.qlogo.cn/mmopen/g3MonUZtNHkdmzicIlibx6iaFqAc56vxLSUfpb6n5WKSYVY0ChQKkiaJSgQ1dZuTOgvLLrhJbERQQ4eMsv84eavHiaiceqxibJxCfHe/0",
        "privilege": ["PRIVILEGE1", "PRIVILEGE2"],
    });
    if let (false, Some(obj)) = (st.no_unionid, body.as_object_mut()) {
        obj.insert("unionid".into(), json!(UNIONID));
    }
    answer(&body)
}

fn answer(v: &Value) -> Resp {
    // WeChat's API answers JSON labelled text/plain, errors included, with 200.
    respond(StatusCode::OK, "text/plain", v.to_string())
}

fn random_token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
