//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes: every
//! route is registered through `utoipa_axum::routes!`, so a route cannot exist without its entry.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::state::AppState;

/// A phone number: 7 to 15 digits, an optional leading `+`, spaces, dashes, dots and
/// parentheses anywhere; or a user JID, the digits then `@s.whatsapp.net` or `@c.us`.
pub(crate) const PHONE_PATTERN: &str =
    r"^(?:\+?(?:[ .()-]*[0-9]){7,15}[ .()-]*|[0-9]{7,15}@(?:s\.whatsapp\.net|c\.us))$";

/// `{sessionId}` in a path.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only documents the parameter; handlers parse the path themselves.
pub(crate) struct SessionPath {
    /// The session id.
    #[param(rename = "sessionId", pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", example = "tienda_lima")]
    session_id: String,
}

/// A phone number, as a string (`+`, spaces and dashes allowed) or a JSON integer.
pub(crate) struct PhoneField;

impl utoipa::PartialSchema for PhoneField {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(PHONE_PATTERN))
                    .examples([serde_json::json!("51987654321")]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1_000_000))
                    .maximum(Some(999_999_999_999_999_i64)),
            )
            .description(Some(
                "Digits with the country code, e.g. 51987654321; '+', spaces, dashes, dots and parentheses are \
                 ignored; a user JID (51987654321@s.whatsapp.net) is taken too",
            ))
            .into()
    }
}

impl utoipa::ToSchema for PhoneField {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "whatsapp-gateway",
        description = "Link WhatsApp numbers by QR code and send messages through them. Every error body is \
                       {\"success\":false,\"error\":{\"code\",\"message\"},\"requestId\"}.",
        license(name = "Proprietary"),
    ),
    modifiers(&Security),
    tags(
        (name = "messages", description = "Send messages and follow their delivery"),
        (name = "webhooks", description = "Events posted to your endpoints, signed (Standard Webhooks)"),
        (name = "sessions", description = "Link numbers"),
        (name = "health", description = "Probes, without a token"),
        (name = "admin", description = "The built-in admin page, without a token (it asks for one)"),
        (name = "operations", description = "Metrics and this document"),
    )
)]
pub(crate) struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "API_STATIC_TOKEN (admin) or a scoped token from API_TOKENS_FILE. Scopes: sessions:read, \
                         sessions:write, messages:send, messages:read, webhooks:write, metrics:read, admin.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "query_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The token as a query parameter: for browsers' WebSockets, and for the compatibility routes \
                 that a sibling service's page fetches (tag compat)",
            ))),
        );
    }
}

/// [`ApiDoc`] with the `compat` tag, which names the `COMPAT_API` dialects on.
pub(crate) fn with_compat_tag(compat: crate::config::CompatDialects) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let names: Vec<&str> = compat.iter().map(|d| d.as_str()).collect();
    let description = format!(
        "Compatibility dialects of the sibling Node.js services, for their existing backends and pages: \
         not this gateway's own API. Served only with COMPAT_API naming the dialect (on here: {}); their errors are \
         {{\"success\":false,\"error\",\"message\",\"code\",\"requestId\"}}, and their callbacks are webhook \
         formats (BACKEND_URL).",
        names.join(", ")
    );
    let tag = utoipa::openapi::tag::TagBuilder::new().name("compat").description(Some(description)).build();
    doc.tags.get_or_insert_with(Vec::new).push(tag);
    doc
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Response {
    let json = state.openapi.get().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response()
}
