//! WeChat: the vendor behaviour beyond URLs and mapping, pure
//! helpers the sign-in adapter calls; the preset itself (URLs, scopes,
//! quirk flags and why) is `config::presets::wechat`.

use serde_json::Value;
use std::collections::BTreeMap;
use url::Url;

/// The QR-code page URL: `appid`, `redirect_uri`, `response_type`, `scope`,
/// `state` in WeChat's order, then any `authorize_params` (e.g. `lang`),
/// and the `#wechat_redirect` fragment. No `client_id`.
pub fn authorize_url(
    base: &Url,
    appid: &str,
    redirect_uri: &str,
    scope: &str,
    state: &str,
    extra: &BTreeMap<String, String>,
) -> Url {
    let mut url = base.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("appid", appid);
        q.append_pair("redirect_uri", redirect_uri);
        q.append_pair("response_type", "code");
        q.append_pair("scope", scope);
        q.append_pair("state", state);
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    url.set_fragment(Some("wechat_redirect"));
    url
}

/// The token request: the token URL with `appid`, `secret`, `code` and
/// `grant_type=authorization_code` in its query.
pub fn token_url(base: &Url, appid: &str, secret: &str, code: &str) -> Url {
    let mut url = base.clone();
    url.query_pairs_mut()
        .append_pair("appid", appid)
        .append_pair("secret", secret)
        .append_pair("code", code)
        .append_pair("grant_type", "authorization_code");
    url
}

/// The profile request: the profile URL with `access_token` and `openid`.
pub fn profile_url(base: &Url, access_token: &str, openid: &str) -> Url {
    let mut url = base.clone();
    url.query_pairs_mut()
        .append_pair("access_token", access_token)
        .append_pair("openid", openid);
    url
}

/// The error of a WeChat API answer: `Some("errcode N")` when it carries a
/// non-zero `errcode` (the `errmsg` is provider text and stays out of it).
pub fn api_error(body: &Value) -> Option<String> {
    match body.get("errcode") {
        None | Some(Value::Null) => None,
        Some(code) if code.as_i64() == Some(0) => None,
        Some(code) => Some(format!("errcode {code}")),
    }
}

/// Why a WeChat profile does not belong to the token's person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// The token answer has no `openid`: nothing to ask the profile for.
    #[error("the token answer has no openid")]
    NoOpenid,
    /// The profile's `openid` is another person's than the token's.
    #[error("the profile is for another openid than the token")]
    Mismatch,
}

/// The token answer's `openid`.
pub fn openid(token: &Value) -> Result<&str, IdentifyError> {
    token
        .get("openid")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(IdentifyError::NoOpenid)
}

/// Checks that `profile` is about the token's person and writes its
/// identifier into `profile.id`: `unionid` (from the profile, else from the
/// token answer, which also carries it for Open Platform apps), else
/// `openid`.
pub fn identify(token: &Value, profile: &mut Value) -> Result<(), IdentifyError> {
    let token_openid = openid(token)?.to_string();
    let Some(obj) = profile.as_object_mut() else {
        return Err(IdentifyError::Mismatch);
    };
    if obj.get("openid").and_then(Value::as_str) != Some(token_openid.as_str()) {
        return Err(IdentifyError::Mismatch);
    }
    let nonempty = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let unionid = nonempty(obj.get("unionid")).or_else(|| nonempty(token.get("unionid")));
    if let Some(u) = &unionid {
        obj.insert("unionid".into(), Value::String(u.clone()));
    }
    obj.insert("id".into(), Value::String(unionid.unwrap_or(token_openid)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_qr_page_url_names_appid_in_wechats_order_and_ends_in_wechat_redirect() {
        let base = Url::parse("https://open.weixin.qq.com/connect/qrconnect").unwrap();
        let url = authorize_url(
            &base,
            "wx123",
            "https://gw.example/_auth/callback/wechat",
            "snsapi_login",
            "st",
            &BTreeMap::from([("lang".to_string(), "en".to_string())]),
        );
        assert_eq!(
            url.as_str(),
            "https://open.weixin.qq.com/connect/qrconnect?appid=wx123&redirect_uri=https%3A%2F%2Fgw.example%2F_auth%2Fcallback%2Fwechat&response_type=code&scope=snsapi_login&state=st&lang=en#wechat_redirect"
        );
    }

    #[test]
    fn errcode_zero_or_absent_is_no_error() {
        assert_eq!(
            api_error(&json!({"errcode": 40029, "errmsg": "invalid code"})).as_deref(),
            Some("errcode 40029")
        );
        assert_eq!(api_error(&json!({"errcode": 0, "errmsg": "ok"})), None);
        assert_eq!(
            api_error(&json!({"access_token": "t", "openid": "o"})),
            None
        );
    }

    #[test]
    fn unionid_wins_over_openid_and_a_foreign_profile_is_refused() {
        let token = json!({"access_token": "t", "openid": "o1", "unionid": "u1"});
        let mut profile = json!({"openid": "o1", "nickname": "n"});
        identify(&token, &mut profile).unwrap();
        assert_eq!(profile["id"], "u1");
        assert_eq!(profile["unionid"], "u1");

        let token = json!({"access_token": "t", "openid": "o1"});
        let mut profile = json!({"openid": "o1", "nickname": "n"});
        identify(&token, &mut profile).unwrap();
        assert_eq!(profile["id"], "o1");

        let mut other = json!({"openid": "o2", "unionid": "u2"});
        assert_eq!(identify(&token, &mut other), Err(IdentifyError::Mismatch));
        assert_eq!(
            identify(&json!({}), &mut json!({"openid": "o1"})),
            Err(IdentifyError::NoOpenid)
        );
    }
}
