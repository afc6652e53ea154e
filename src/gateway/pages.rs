//! HTML pages the gateway answers with: pure functions from facts to markup;
//! every reflected value is escaped by `html-escape`.

use html_escape::encode_text;

/// A complete, self-contained page (no script, no external assets).
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
:root {{ color-scheme: light dark; }}
body {{ margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       background: Canvas; color: CanvasText; display: grid; place-items: center; min-height: 100vh; }}
main {{ box-sizing: border-box; width: min(26rem, 100% - 2rem); padding: 2rem 1.5rem; border: 1px solid color-mix(in srgb, CanvasText 15%, transparent);
       border-radius: 12px; box-shadow: 0 1px 4px color-mix(in srgb, CanvasText 10%, transparent); }}
h1 {{ font-size: 1.35rem; margin: 0 0 1rem; }}
p {{ margin: 0 0 1rem; }}
.hint {{ opacity: .75; font-size: .9rem; }}
a.button {{ display: block; text-align: center; padding: .75rem 1rem; margin: .5rem 0; border-radius: 8px;
           background: #2952cc; color: #fff; text-decoration: none; font-weight: 600; }}
a.button:focus-visible {{ outline: 3px solid #f5b700; outline-offset: 2px; }}
form button {{ display: block; width: 100%; padding: .75rem 1rem; margin: .5rem 0; border: 0; border-radius: 8px;
               background: #2952cc; color: #fff; font: inherit; font-weight: 600; cursor: pointer; }}
form button:focus-visible {{ outline: 3px solid #f5b700; outline-offset: 2px; }}
</style>
</head>
<body>
<main>
<h1>{heading}</h1>
{body_html}
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
        "<p>{}</p>\n<p class=\"hint\">{}</p>\n<p class=\"hint\">Request id: <code>{}</code></p>",
        encode_text(reason),
        encode_text(hint),
        encode_text(request_id)
    );
    page(&format!("{status} {heading}"), heading, &body)
}

/// The sign-in page: one button per source offered by the app.
pub fn sign_in(app: &str, sources: &[(String, String)], rd: &str) -> String {
    let rd_q: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let mut body = format!(
        "<p>Sign in to continue to <strong>{}</strong>.</p>\n",
        encode_text(app)
    );
    if sources.is_empty() {
        body.push_str("<p>No sign-in method is configured for this application. Ask the operator to add a source.</p>\n");
    }
    for (slug, name) in sources {
        let href = format!("/_auth/login/{slug}?rd={rd_q}");
        body.push_str(&format!(
            "<a class=\"button\" href=\"{}\">Sign in with {}</a>\n",
            html_escape::encode_double_quoted_attribute(&href),
            encode_text(name)
        ));
    }
    page(&format!("Sign in · {app}"), "Sign in", &body)
}

/// A page with a message and a button to continue to `rd`.
pub fn notice(heading: &str, message: &str, rd: &str) -> String {
    let body = format!(
        "<p>{}</p>\n<a class=\"button\" href=\"{}\">Continue</a>\n",
        encode_text(message),
        html_escape::encode_double_quoted_attribute(rd)
    );
    page(heading, heading, &body)
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
    fn ses16_the_sign_out_page_is_one_post_form_back_to_the_same_url() {
        let html = sign_out("/wiki?page=\"><script>alert(1)</script>&x=1");
        assert!(!html.contains("<script>"), "{html}");
        assert_eq!(html.matches("<form").count(), 1, "{html}");
        assert_eq!(html.matches("<button").count(), 1, "{html}");
        assert!(html.contains("<form method=\"post\" action=\"/_auth/sign_out?rd=%2Fwiki%3Fpage%3D%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E%26x%3D1\">"), "{html}");
        assert!(html.contains(">Sign out</button>"), "{html}");
    }
}
