//! Small inline SVG marks for the sign-in buttons, one per source type: simple
//! shapes in each vendor's colours, drawn for portcullis (no vendor logo file
//! is copied, nothing is fetched). Static markup: no reflected value goes in.

use crate::config::SourceKind;

/// Opens every mark: 24×24, decorative (the button's text names the vendor).
const OPEN: &str = r#"<svg class="mark" viewBox="0 0 24 24" width="22" height="22" aria-hidden="true" focusable="false">"#;

/// The mark of a source type, as inline SVG.
pub fn mark(kind: SourceKind) -> String {
    format!("{OPEN}{}</svg>", shapes(kind))
}

fn shapes(kind: SourceKind) -> &'static str {
    match kind {
        // A dark disc with a cat-eared head.
        SourceKind::Github => {
            r##"<circle cx="12" cy="12" r="11" fill="#1f2328"/><path d="M7 17v-6.5L6.5 6l3 2h5l3-2-.5 4.5V17z" fill="#fff"/><circle cx="10" cy="12" r="1" fill="#1f2328"/><circle cx="14" cy="12" r="1" fill="#1f2328"/>"##
        }
        // A ring in four colours, open on the right with a bar: a "G".
        SourceKind::Google => {
            r##"<g fill="none" stroke-width="4"><path d="M19 7a8 8 0 0 0-12.6-.9" stroke="#ea4335"/><path d="M6.4 6.1A8 8 0 0 0 6.4 17.9" stroke="#fbbc05"/><path d="M6.4 17.9A8 8 0 0 0 20 12" stroke="#34a853"/><path d="M20 12h-8" stroke="#4285f4"/></g>"##
        }
        // A fox-like polygon in orange tones.
        SourceKind::Gitlab => {
            r##"<path d="M12 21 3 13.5 5 4l3 7h8l3-7 2 9.5z" fill="#fc6d26"/><path d="M12 21 8 11h8z" fill="#e24329"/>"##
        }
        // A blurple rounded face with two eyes.
        SourceKind::Discord => {
            r##"<rect x="2" y="4" width="20" height="16" rx="7" fill="#5865f2"/><circle cx="9" cy="12.5" r="1.8" fill="#fff"/><circle cx="15" cy="12.5" r="1.8" fill="#fff"/>"##
        }
        // Four squares in the Microsoft colours.
        SourceKind::EntraId => {
            r##"<rect x="2" y="2" width="9.5" height="9.5" fill="#f25022"/><rect x="12.5" y="2" width="9.5" height="9.5" fill="#7fba00"/><rect x="2" y="12.5" width="9.5" height="9.5" fill="#00a4ef"/><rect x="12.5" y="12.5" width="9.5" height="9.5" fill="#ffb900"/>"##
        }
        // A thick navy ring.
        SourceKind::Okta => {
            r##"<circle cx="12" cy="12" r="7.5" fill="none" stroke="#00297a" stroke-width="5"/>"##
        }
        // A black X.
        SourceKind::Twitter => {
            r##"<rect x="1" y="1" width="22" height="22" rx="5" fill="#000"/><path d="m6 6 12 12M18 6 6 18" stroke="#fff" stroke-width="2.5" stroke-linecap="round"/>"##
        }
        // A blue disc with a white "f".
        SourceKind::Facebook => {
            r##"<circle cx="12" cy="12" r="11" fill="#1877f2"/><path d="M13.5 22v-7h2.5l.4-3h-2.9v-1.8c0-.9.3-1.5 1.5-1.5h1.5V6.1a19 19 0 0 0-2.2-.1c-2.2 0-3.7 1.3-3.7 3.8V12H8v3h2.6v7z" fill="#fff"/>"##
        }
        // An apple: two lobes, a bite, a leaf.
        SourceKind::Apple => {
            r##"<path d="M12 8c-1-1-5-2-6.5 1.5S6 19 8.5 20.5c1.3.8 2.2 0 3.5 0s2.2.8 3.5 0c1.4-.9 2.6-3.2 3-4.6-1.6-.7-2.5-2-2.5-3.6 0-1.3.7-2.5 1.7-3.2C16.5 7.5 13.5 7 12 8z" fill="#111"/><path d="M12.2 6.8c0-2 1.3-3.4 3.1-3.8.1 2-1.3 3.6-3.1 3.8z" fill="#111"/>"##
        }
        // A grey hexagon with a blue keyhole.
        SourceKind::Keycloak => {
            r##"<path d="M7 3h10l5 9-5 9H7l-5-9z" fill="#4d4d4d"/><circle cx="12" cy="10.5" r="2.5" fill="#33c6f4"/><path d="M11 12h2l.8 5h-3.6z" fill="#33c6f4"/>"##
        }
        // A purple speech box with two bars.
        SourceKind::Twitch => {
            r##"<path d="M4 2 2.5 6v14h5v2.5h3L13 20h4l5-5V2z" fill="#9146ff"/><path d="M11 7h2v6h-2zm5 0h2v6h-2z" fill="#fff"/>"##
        }
        // An orange disc with a white face and antenna.
        SourceKind::Reddit => {
            r##"<circle cx="12" cy="12" r="11" fill="#ff4500"/><ellipse cx="12" cy="14" rx="6" ry="4" fill="#fff"/><circle cx="9.7" cy="13.5" r="1" fill="#ff4500"/><circle cx="14.3" cy="13.5" r="1" fill="#ff4500"/><path d="M12 10V6l3 1" stroke="#fff" stroke-width="1.2" fill="none"/><circle cx="15.5" cy="7" r="1.2" fill="#fff"/>"##
        }
        // A coral disc beside a dark bar.
        SourceKind::Patreon => {
            r##"<circle cx="14.5" cy="9.5" r="7" fill="#ff424d"/><rect x="2.5" y="2.5" width="3.5" height="19" fill="#052d49"/>"##
        }
        // A yellow envelope.
        SourceKind::Mailcow => {
            r##"<rect x="2" y="5" width="20" height="14" rx="2" fill="#f0b400"/><path d="m3 6.5 9 6.5 9-6.5" fill="none" stroke="#fff" stroke-width="1.8"/>"##
        }
        // Four rounded bars crossing as a hash, in Slack's four colours.
        SourceKind::Slack => {
            r##"<rect x="6.5" y="2" width="3.5" height="20" rx="1.75" fill="#36c5f0"/><rect x="2" y="14" width="20" height="3.5" rx="1.75" fill="#2eb67d"/><rect x="14" y="2" width="3.5" height="20" rx="1.75" fill="#ecb22e"/><rect x="2" y="6.5" width="20" height="3.5" rx="1.75" fill="#e01e5a" opacity=".9"/>"##
        }
        // Two green speech bubbles with eyes.
        SourceKind::Wechat => {
            r##"<ellipse cx="9.5" cy="9.5" rx="7.5" ry="6.3" fill="#07c160"/><circle cx="7" cy="8.3" r="1" fill="#fff"/><circle cx="12" cy="8.3" r="1" fill="#fff"/><ellipse cx="15.5" cy="15" rx="6.5" ry="5.3" fill="#07c160" stroke="#fff" stroke-width="1.2"/><circle cx="13.5" cy="14.2" r=".85" fill="#fff"/><circle cx="17.5" cy="14.2" r=".85" fill="#fff"/>"##
        }
        // Any other provider: a key.
        // GitHub Actions is machine-only: it never gets a button, but the match stays total.
        SourceKind::OAuth2
        | SourceKind::OAuth1
        | SourceKind::OpenIdConnect
        | SourceKind::GithubActions => {
            r##"<circle cx="8" cy="12" r="5" fill="none" stroke="#2952cc" stroke-width="2.5"/><path d="M13 12h9m-3 0v4m-3-4v3" stroke="#2952cc" stroke-width="2.5" fill="none"/>"##
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_type_has_its_own_decorative_mark_without_text_or_links() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, kind) in SourceKind::ALL {
            let svg = mark(*kind);
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{name}");
            assert!(svg.contains("aria-hidden=\"true\""), "{name}");
            for banned in ["<text", "<title", "href", "url(", "<script", "<image"] {
                assert!(!svg.contains(banned), "{name}: {banned}");
            }
            seen.insert(svg);
        }
        // The three generic protocols and the machine-only github-actions share
        // the key; every vendor people sign in with differs.
        assert_eq!(seen.len(), SourceKind::ALL.len() - 3);
    }
}
