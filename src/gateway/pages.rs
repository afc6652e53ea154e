//! HTML pages the gateway answers with: pure functions from facts to markup;
//! every reflected value is escaped by `html-escape`.

use html_escape::encode_text;

use super::marks;
use crate::config::SourceKind;

/// The gateway's own mark at the top of every page: a portcullis gate.
const GATE: &str = r##"<svg class="gate" viewBox="0 0 32 32" width="36" height="36" aria-hidden="true" focusable="false"><rect x="2" y="2" width="28" height="28" rx="8" fill="#2952cc"/><path d="M9 25V13a7 7 0 0 1 14 0v12M13 9.5V25m6-15.5V25M9 16h14M9 21h14" fill="none" stroke="#fff" stroke-width="2" stroke-linecap="round"/></svg>"##;

/// A complete, self-contained page (no script, no external assets). Every
/// page — sign-in, notices, sign-out, errors and refusals — is laid out and
/// styled here, so a new page inherits the look by calling this.
pub fn page(title: &str, heading: &str, body_html: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>
:root {{ color-scheme: light dark; --accent: #2952cc; --line: color-mix(in srgb, CanvasText 16%, transparent); }}
*, *::before, *::after {{ box-sizing: border-box; }}
body {{ margin: 0; padding: 1rem 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       background: color-mix(in srgb, CanvasText 4%, Canvas); color: CanvasText;
       display: grid; place-items: center; min-height: 100vh; }}
main {{ width: min(26rem, 100% - 2rem); padding: 2rem 1.5rem 1.5rem; background: Canvas; overflow-wrap: anywhere;
       border: 1px solid var(--line); border-radius: 14px; box-shadow: 0 2px 12px color-mix(in srgb, CanvasText 8%, transparent); }}
.gate {{ display: block; margin: 0 0 1rem; }}
h1 {{ font-size: 1.4rem; line-height: 1.25; margin: 0 0 .75rem; }}
p {{ margin: 0 0 1rem; }}
.hint {{ opacity: .75; font-size: .9rem; }}
.notice {{ padding: .6rem .8rem; border-left: 4px solid #f5b700; border-radius: 6px; background: color-mix(in srgb, #f5b700 12%, Canvas); }}
.status {{ display: inline-block; margin: 0 0 .5rem; padding: .1rem .55rem; border-radius: 999px; font-size: .8rem; font-weight: 700;
          letter-spacing: .03em; color: #fff; background: #b3261e; }}
.buttons {{ display: grid; gap: .6rem; margin: 1.25rem 0 .5rem; }}
a.button, form button {{ display: flex; align-items: center; justify-content: center; gap: .75rem; width: 100%; min-height: 2.9rem;
           padding: .6rem 1rem; margin: .5rem 0; border: 1px solid transparent; border-radius: 10px; background: var(--accent); color: #fff;
           font: inherit; font-weight: 600; text-decoration: none; cursor: pointer; }}
.buttons a.button {{ margin: 0; }}
a.button.source {{ justify-content: flex-start; background: Canvas; color: CanvasText; border-color: var(--line); }}
a.button.source:hover {{ background: color-mix(in srgb, CanvasText 6%, Canvas); }}
a.button:focus-visible, form button:focus-visible {{ outline: 3px solid #f5b700; outline-offset: 2px; }}
.mark {{ flex: none; width: 28px; height: 28px; padding: 3px; border-radius: 7px; background: #fff; }}
code {{ font-size: .85rem; }}
footer {{ margin-top: 1.25rem; font-size: .8rem; opacity: .6; text-align: center; }}
</style>
</head>
<body>
<main>
{GATE}
<h1>{heading}</h1>
{body_html}
<footer>Protected by portcullis</footer>
</main>
</body>
</html>
"#,
        title = encode_text(title),
        heading = encode_text(heading),
    )
}

/// A page that says what went wrong, what the person can do, and the
/// request id an operator finds the detail under in the log.
pub fn error_page(
    status: u16,
    heading: &str,
    reason: &str,
    hint: &str,
    request_id: &str,
) -> String {
    let body = format!(
        "<p class=\"status\">Error {status}</p>\n<p>{}</p>\n<p class=\"hint\">{}</p>\n<p class=\"hint\">Request id: <code>{}</code></p>",
        encode_text(reason),
        encode_text(hint),
        encode_text(request_id)
    );
    page(&format!("{status} {heading}"), heading, &body)
}

/// One source on the sign-in page.
#[derive(Debug, Clone)]
pub struct Offer {
    /// Its slug (the login URL).
    pub slug: String,
    /// Its button label.
    pub name: String,
    /// Its type, which picks the button's mark.
    pub kind: SourceKind,
}

/// The sign-in page: one button per source offered by the app, each with
/// the vendor's mark and name; the app's name in the title and the text.
pub fn sign_in(app: &str, sources: &[Offer], rd: &str) -> String {
    sign_in_after(app, sources, rd, None)
}

/// The sign-in page, first saying why the person has to sign in again
/// (`notice`: a session that ended early), when there is a reason.
pub fn sign_in_after(app: &str, sources: &[Offer], rd: &str, notice: Option<&str>) -> String {
    page(
        &format!("Sign in · {app}"),
        "Sign in",
        &sign_in_body(app, sources, rd, notice),
    )
}

/// The sign-in page for a browser signed in as `user`, whom the app refuses
/// where `rd` leads (`reason`, the rule's message): why, then the buttons to
/// sign in with another account (its session replaces this one), and a link
/// to sign out.
pub fn sign_in_refused(app: &str, sources: &[Offer], rd: &str, user: &str, reason: &str) -> String {
    let notice = format!(
        "You are signed in as {user}, and {app} does not admit that account here: {reason}"
    );
    let rd_q: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let mut body = sign_in_body(app, sources, rd, Some(&notice));
    body.push_str(&format!(
        "<p>Or <a href=\"{}\">sign out</a>.</p>\n",
        html_escape::encode_double_quoted_attribute(&format!("/_auth/sign_out?rd={rd_q}"))
    ));
    page(&format!("Sign in · {app}"), "Sign in", &body)
}

/// The sign-in page's body: the notice, if any, then one button per source.
fn sign_in_body(app: &str, sources: &[Offer], rd: &str, notice: Option<&str>) -> String {
    let rd_q: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let mut body = String::new();
    if let Some(notice) = notice {
        body.push_str(&format!(
            "<p class=\"notice\" role=\"status\">{}</p>\n",
            encode_text(notice)
        ));
    }
    body.push_str(&format!(
        "<p>Sign in to continue to <strong>{}</strong>.</p>\n",
        encode_text(app)
    ));
    if sources.is_empty() {
        body.push_str("<p>No sign-in method is configured for this application. Ask the operator to add a source.</p>\n");
    } else {
        body.push_str("<div class=\"buttons\">\n");
        for offer in sources {
            let href = format!("/_auth/login/{}?rd={rd_q}", offer.slug);
            body.push_str(&format!(
                // A link (it works without script, and a client that reads
                // the page finds the URL) in the role DESIGN gives it: a button.
                "<a class=\"button source\" role=\"button\" href=\"{}\">{}<span>Sign in with {}</span></a>\n",
                html_escape::encode_double_quoted_attribute(&href),
                marks::mark(offer.kind),
                encode_text(&offer.name)
            ));
        }
        body.push_str("</div>\n");
    }
    body
}

/// The sign-out page: one button that POSTs back to the same URL (with the
/// same `rd`), so that a link or an image from another site signs nobody out (SES-16).
pub fn sign_out(rd: &str) -> String {
    let rd_q: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let action = format!("/_auth/sign_out?rd={rd_q}");
    let body = format!(
        "<p>Sign out of every application behind this gateway?</p>\n\
         <form method=\"post\" action=\"{}\">\n\
         <button type=\"submit\">Sign out</button>\n\
         </form>\n",
        html_escape::encode_double_quoted_attribute(&action)
    );
    page("Sign out", "Sign out", &body)
}

/// A page that says the person is signed out.
pub fn signed_out(rd: &str) -> String {
    let body = format!(
        "<p>You are signed out.</p>\n<a class=\"button\" href=\"{}\">Continue</a>\n",
        html_escape::encode_double_quoted_attribute(rd)
    );
    page("Signed out", "Signed out", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prx26_reflected_text_is_escaped() {
        let html = error_page(
            404,
            "Not <found>",
            "<script>alert(1)</script>",
            "\"&'",
            "<id>",
        );
        assert!(html.contains("Request id: <code>&lt;id&gt;</code>"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("Not &lt;found&gt;"));
    }

    #[test]
    fn the_sign_in_page_says_first_why_the_session_ended_escaped() {
        let offers = [Offer {
            slug: "corp".into(),
            name: "Corp".into(),
            kind: SourceKind::OpenIdConnect,
        }];
        let html = sign_in_after("Wiki", &offers, "/", Some("Ended <because> & so"));
        let notice = html
            .find("<p class=\"notice\" role=\"status\">Ended &lt;because&gt; &amp; so</p>")
            .expect(&html);
        assert!(notice < html.find("Sign in to continue").unwrap_or(0));
        assert!(!sign_in("Wiki", &offers, "/").contains("class=\"notice\""));
    }

    #[test]
    fn a_refused_person_s_sign_in_page_says_why_escaped_and_keeps_the_buttons() {
        let offers = [Offer {
            slug: "corp".into(),
            name: "Corp".into(),
            kind: SourceKind::OpenIdConnect,
        }];
        let html = sign_in_refused("Wiki", &offers, "/a?b=1", "<u>", "R&D only");
        assert!(
            html.contains("You are signed in as &lt;u&gt;, and Wiki does not admit that account here: R&amp;D only"),
            "{html}"
        );
        assert!(
            html.contains("href=\"/_auth/login/corp?rd=%2Fa%3Fb%3D1\""),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"/_auth/sign_out?rd=%2Fa%3Fb%3D1\">sign out</a>"),
            "{html}"
        );
        assert!(!html.contains("<u>"), "{html}");
    }

    #[test]
    fn the_sign_in_page_names_the_app_and_shows_each_vendor_with_its_mark() {
        let offer = |slug: &str, name: &str, kind| Offer {
            slug: slug.into(),
            name: name.into(),
            kind,
        };
        let html = sign_in(
            "Wiki <&>",
            &[
                offer("slack", "Slack", SourceKind::Slack),
                offer("wx", "WeChat \"<b>\"", SourceKind::Wechat),
            ],
            "/x?a=1",
        );
        assert!(
            html.contains("<title>Sign in · Wiki &lt;&amp;&gt;</title>"),
            "{html}"
        );
        assert!(html.contains("<span>Sign in with Slack</span>"), "{html}");
        assert!(
            html.contains("<span>Sign in with WeChat \"&lt;b&gt;\"</span>"),
            "{html}"
        );
        assert!(html.contains(&marks::mark(SourceKind::Slack)));
        assert!(html.contains(&marks::mark(SourceKind::Wechat)));
        assert!(
            html.contains("href=\"/_auth/login/wx?rd=%2Fx%3Fa%3D1\""),
            "{html}"
        );
        // DESIGN: one button per source (the role assistive technology and
        // browser tests see), each a link to its login URL.
        assert_eq!(html.matches("role=\"button\"").count(), 2, "{html}");
        assert!(!html.contains("<script"), "no JavaScript");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing external"
        );
    }

    #[test]
    fn error_pages_share_the_layout_and_show_their_status() {
        let html = error_page(502, "Sign-in failed", "r", "h", "id");
        let signin = sign_in("a", &[], "/");
        let style = |h: &str| h.split_once("</style>").map(|(s, _)| s.to_string());
        let css_of =
            |h: &str| style(h).and_then(|s| s.split_once("<style>").map(|(_, c)| c.to_string()));
        assert_eq!(css_of(&html), css_of(&signin));
        assert!(html.contains("<p class=\"status\">Error 502</p>"), "{html}");
        assert!(html.contains("<title>502 Sign-in failed</title>"), "{html}");
    }

    #[test]
    fn ses16_the_sign_out_page_is_one_post_form_back_to_the_same_url() {
        let html = sign_out("/wiki?page=\"><script>alert(1)</script>&x=1");
        assert!(!html.contains("<script>"), "{html}");
        assert_eq!(html.matches("<form").count(), 1, "{html}");
        assert_eq!(html.matches("<button").count(), 1, "{html}");
        assert!(html.contains("<form method=\"post\" action=\"/_auth/sign_out?rd=%2Fwiki%3Fpage%3D%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E%26x%3D1\">"), "{html}");
        assert!(html.contains(">Sign out</button>"), "{html}");
    }
}
