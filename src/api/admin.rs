//! The built-in admin page: `/admin` serves one HTML page, its script, its style sheet and its
//! icon, all compiled into the binary from `web/admin/` (no CDN, no build step). The page itself holds no
//! secret and needs no token; everything it shows comes from the token-checked API, which it
//! calls with the token a person types in.
//!
//! Links are relative (`admin/app.js`, `api/…`, `ws/…`), so the page also works behind a
//! reverse proxy that serves the gateway under a path prefix.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::state::AppState;

const INDEX_HTML: &str = include_str!("../../web/admin/index.html");
const APP_JS: &str = include_str!("../../web/admin/app.js");
const APP_CSS: &str = include_str!("../../web/admin/app.css");
const FAVICON_SVG: &str = include_str!("../../web/admin/favicon.svg");

/// Scripts and styles only from the gateway, images also as `data:` (QR codes), connections only
/// back to the gateway (HTTP and WebSocket); the page may not be framed (clickjacking).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(page))
        .routes(routes!(page_slash))
        .routes(routes!(script))
        .routes(routes!(style))
        .routes(routes!(icon))
}

/// A page, script or style sheet, as text.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String)]
#[allow(dead_code)] // Only describes the text answers.
struct Text(String);

/// The start page: redirects to the admin page.
#[utoipa::path(get, path = "/", tag = "admin",
    responses((status = 302, description = "To the admin page",
        headers(("Location" = String, description = "`admin`")))))]
async fn root() -> Response {
    redirect("admin")
}

/// `/admin/` is `/admin`.
#[utoipa::path(get, path = "/admin/", tag = "admin",
    responses((status = 302, description = "To the admin page",
        headers(("Location" = String, description = "`../admin`")))))]
async fn page_slash() -> Response {
    redirect("../admin")
}

/// The admin page: link numbers, watch sessions, messages and webhooks (log in with an API
/// token; it stays in the tab's `sessionStorage`).
#[utoipa::path(get, path = "/admin", tag = "admin",
    responses((status = 200, description = "The page", content_type = "text/html", body = Text)))]
async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The admin page's script.
#[utoipa::path(get, path = "/admin/app.js", tag = "admin",
    responses((status = 200, description = "The script", content_type = "text/javascript", body = Text)))]
async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The admin page's style sheet.
#[utoipa::path(get, path = "/admin/app.css", tag = "admin",
    responses((status = 200, description = "The style sheet", content_type = "text/css", body = Text)))]
async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// The admin page's icon (the page links it, so browsers do not ask for `/favicon.ico`).
#[utoipa::path(get, path = "/admin/favicon.svg", tag = "admin",
    responses((status = 200, description = "The icon", content_type = "image/svg+xml", body = Text)))]
async fn icon() -> Response {
    asset("image/svg+xml", FAVICON_SVG)
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, HeaderValue::from_static(to))]).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidated on every load: a new binary serves a new page at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_its_assets_relatively() {
        // Relative links keep the page working under a reverse proxy's path prefix.
        assert!(INDEX_HTML.contains(r#"src="admin/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="admin/app.css""#));
        assert!(INDEX_HTML.contains(r#"<link rel="icon" href="admin/favicon.svg""#));
        for absolute in ["'/api", "'/ws", "'/admin", "\"/api", "\"/ws", "`/api", "`/ws"] {
            assert!(!APP_JS.contains(absolute), "an absolute link in app.js: {absolute}");
        }
    }

    #[test]
    fn the_policy_allows_no_inline_script() {
        assert!(!INDEX_HTML.contains("<script>"), "inline scripts are blocked by the CSP");
        assert!(!INDEX_HTML.contains(" style=\""), "inline styles are blocked by the CSP");
        assert!(!INDEX_HTML.contains(" onclick="), "inline handlers are blocked by the CSP");
    }
}
