//! The `rd` validator on hostile values (open redirects, docs/security.md OA2-13):
//! whatever it keeps, a browser resolving it against any of our pages lands
//! on one of our origins, never elsewhere; and it never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::redirect::{safe_rd, safe_rd_for, target, Origins, Target};
use url::Url;

fn origins() -> &'static Origins {
    static ORIGINS: OnceLock<Origins> = OnceLock::new();
    ORIGINS.get_or_init(|| {
        let public = Url::parse("https://sso.example:8443/").expect("a valid URL");
        Origins::new(
            &public,
            ["wiki.example".to_string(), "App.Example".to_string()],
        )
    })
}

/// Where a browser on `page` goes for `Location: rd`.
fn lands_on_ours(page: &str, rd: &str) {
    let base = Url::parse(page).expect("a valid URL");
    let Ok(next) = base.join(rd) else {
        panic!("a kept rd does not resolve: {rd:?}");
    };
    let host = next.host_str().unwrap_or_default().to_ascii_lowercase();
    let ours = ["sso.example", "wiki.example", "app.example"].contains(&host.as_str());
    assert!(
        ours && next.scheme() == "https"
            && next.port_or_known_default() == Some(8443)
            && next.username().is_empty()
            && next.password().is_none(),
        "rd {rd:?} from {page} leads to {next}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let kept = safe_rd_for(Some(raw), origins());
    for page in [
        "https://sso.example:8443/_auth/sign_in",
        "https://wiki.example:8443/a/b?c",
    ] {
        lands_on_ours(page, &kept);
    }
    match target(&kept) {
        Target::Path(p) => assert!(p.starts_with('/') && !p.starts_with("//")),
        Target::Absolute { host, .. } => {
            assert!(origins().is_sign_in_host(&host) || origins().is_app_host(&host));
        }
    }
    let relative = safe_rd(Some(raw));
    assert!(relative.starts_with('/'), "safe_rd kept {relative:?}");
    lands_on_ours("https://wiki.example:8443/x", &relative);
});
