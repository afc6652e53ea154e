//! Mailcow: the vendor behaviour beyond URLs and mapping, pure
//! helpers the sign-in adapter calls; the preset itself (URLs, scopes,
//! quirk flags and why) is `config::presets::mailcow`.

use url::Url;

/// The profile URL with the access token as its `access_token` query
/// parameter (any earlier `access_token` replaced).
pub fn profile_url_with_token(profile_url: &Url, access_token: &str) -> Url {
    let mut url = profile_url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != "access_token")
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("access_token", access_token);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_into_the_query_once() {
        let base = Url::parse("https://mail.example/oauth/profile?access_token=old&x=1").unwrap();
        let url = profile_url_with_token(&base, "a b&c");
        assert_eq!(
            url.as_str(),
            "https://mail.example/oauth/profile?x=1&access_token=a+b%26c"
        );
    }
}
