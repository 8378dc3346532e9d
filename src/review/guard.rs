//! What every console response carries and every state-changing request must show, on top
//! of the per-user form token (`auth::CsrfKey`): a browser is told to run nothing but the
//! console's own files, never to frame it, cache it or pass its addresses on; and a POST
//! a browser says came from another site is refused before any handler sees it.
//!
//! The cross-site check is the one Go's `http.CrossOriginProtection` and the Fetch
//! Metadata guidance use: `Sec-Fetch-Site` (sent by every current browser) must be
//! `same-origin` or `none`; without it, an `Origin` must name the host the request was
//! sent to; a request with neither is not from a browser and the form token alone decides.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Only the console's own stylesheet and script; no inline code, no frames, forms post
/// only back to the console.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Refuses a cross-site state change, and adds the security headers to every response.
pub async fn guard(request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    let mut response = if !safe && cross_site(request.headers()) {
        (
            StatusCode::FORBIDDEN,
            "cross-site request refused: act from the console's own pages\n",
        )
            .into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Held messages' ids and searched addresses are in the URLs.
    set(headers, header::REFERRER_POLICY, "no-referrer");
    // Held mail is sensitive: no copy in the browser's cache or a shared proxy's.
    set(headers, header::CACHE_CONTROL, "no-store");
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    response
}

/// Whether the browser says this request came from another site (also asked of a GET
/// that hands out held content: another site must not make a reviewer's browser take a
/// copy, and an audit record, in their name).
pub fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site") {
        return !(site == "same-origin" || site == "none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    // The host the browser addressed: the proxy's X-Forwarded-Host, else Host.
    let Some(host) = text("x-forwarded-host").or_else(|| text("host")) else {
        return true;
    };
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    origin_host.is_none_or(|o| !o.eq_ignore_ascii_case(host.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn fetch_metadata_decides_when_the_browser_sends_it() {
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "none")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        // A matching Origin does not undo what the browser said.
        assert!(cross_site(&headers(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://console.example"),
            ("host", "console.example"),
        ])));
    }

    #[test]
    fn without_fetch_metadata_the_origin_must_name_the_host() {
        assert!(!cross_site(&headers(&[
            ("origin", "https://console.example"),
            ("host", "console.example"),
        ])));
        assert!(!cross_site(&headers(&[
            ("origin", "https://console.example:8443"),
            ("host", "127.0.0.1:9000"),
            ("x-forwarded-host", "console.example:8443"),
        ])));
        assert!(cross_site(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "console.example"),
        ])));
        assert!(cross_site(&headers(&[
            ("origin", "null"),
            ("host", "console.example"),
        ])));
        assert!(cross_site(&headers(&[(
            "origin",
            "https://console.example"
        )])));
        // Neither: not a browser; the form token decides.
        assert!(!cross_site(&headers(&[("host", "console.example")])));
    }
}
