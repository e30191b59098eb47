//! `ApiError`: every way an HTTP request can fail, with its status, stable code and JSON body.
//!
//! Bodies are always `{"success":false,"error":{"code":"...","message":"..."},"requestId":"..."}`.
//! Codes are part of the API contract (clients branch on them): never rename one. A 5xx is logged
//! here, once, with its source; its body says only "internal error".
//!
//! `message` is English (`Display`) or Spanish ([`es`]): the response carries both, and
//! [`language::middleware`](super::language::middleware) answers the one the request prefers.

mod es;

use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::request_id;
use crate::domain::InvalidSessionId;
use crate::domain::{ContentError, InvalidFileName, InvalidPhone, PdfError};
use crate::session::PairingError;

/// The boxed source of an [`ApiError::Internal`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An HTTP API failure. Build it with the variant or a `From` conversion, answer with
/// [`ApiError::into_response`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer …` header (or another scheme).
    #[error("missing bearer token")]
    MissingToken,
    /// A token was given but is not the configured one.
    #[error("invalid token")]
    InvalidToken,
    /// A JWT (three base64url parts) whose header or claims cannot be read.
    #[error("the token looks like a JWT but cannot be read")]
    TokenMalformed,
    /// A JWT signed with an algorithm we take no key for (`none`, or HS256 when only RSA/EC
    /// keys are configured).
    #[error("the token's signing algorithm is not accepted here")]
    TokenAlgorithm,
    /// A JWT whose signature no key of ours verifies.
    #[error("the token's signature does not verify")]
    TokenSignature,
    /// A JWT past its `exp`.
    #[error("the token has expired; sign in again")]
    TokenExpired,
    /// A JWT before its `nbf`.
    #[error("the token is not valid yet (nbf)")]
    TokenNotYetValid,
    /// A JWT whose `iss` is not `JWT_ISSUER`.
    #[error("the token's issuer is not accepted here (JWT_ISSUER)")]
    TokenIssuer,
    /// A JWT whose `aud` is not `JWT_AUDIENCE`.
    #[error("the token is meant for another audience (JWT_AUDIENCE)")]
    TokenAudience,
    /// A JWT without a usable claim we need: the session claim (`JWT_SESSION_CLAIM`) or `exp`.
    #[error("the token's '{claim}' claim is missing or not usable")]
    TokenClaimMissing {
        /// The claim, e.g. `sub`.
        claim: String,
    },
    /// The keys of `JWT_JWKS_URL` have never been fetched, and cannot be now.
    #[error("the keys that verify tokens cannot be fetched right now; retry later")]
    TokenKeysUnavailable,
    /// The shared database cannot be reached now (`DATABASE_URL`: Postgres restarting, the
    /// network cut, every connection busy): nothing was stored; retry after `Retry-After`.
    #[error("the database cannot be reached right now; nothing was stored, retry later")]
    StorageUnavailable,
    /// The body is not a JSON object.
    #[error("request body is not a valid JSON object")]
    BadJson,
    /// A required field is absent, `null` or empty.
    #[error("missing required field '{0}'")]
    MissingField(&'static str),
    /// A field has the wrong JSON type (e.g. a number where a string is expected).
    #[error("field '{field}' must be {expected}")]
    WrongFieldType {
        /// The JSON field name, e.g. `pdfBase64`.
        field: &'static str,
        /// What was expected, e.g. `a string`.
        expected: &'static str,
    },
    /// `sessionId` breaks the session id rule.
    #[error(transparent)]
    InvalidSessionId(#[from] InvalidSessionId),
    /// `to` is not a phone number.
    #[error(transparent)]
    InvalidPhone(#[from] InvalidPhone),
    /// `pdfBase64` is not standard base64.
    #[error("field 'pdfBase64' is not valid base64")]
    InvalidBase64,
    /// `pdfBase64` decodes to something that is not a PDF.
    #[error("field 'pdfBase64' is not a PDF document")]
    NotAPdf,
    /// `fileName` is not acceptable.
    #[error("invalid fileName: {0}")]
    InvalidFileName(#[from] InvalidFileName),
    /// A message's content is refused (empty text, a type its bytes contradict, …).
    #[error(transparent)]
    InvalidContent(#[from] ContentError),
    /// A webhook URL that is not http(s).
    #[error("url must be an http or https URL")]
    InvalidUrl,
    /// A webhook secret of the wrong form.
    #[error("secret must be 'whsec_' followed by the base64 of 24 to 64 bytes")]
    InvalidSecret,
    /// A webhook URL this token may not post to: its host resolves to a private, loopback or
    /// link-local address (or does not resolve). Which address is not said.
    #[error(
        "url must resolve to public addresses only: this token may not post to private, loopback or link-local \
         addresses"
    )]
    WebhookUrlNotAllowed,
    /// No webhook endpoint with that id.
    #[error("webhook not found")]
    WebhookNotFound,
    /// More numbers than one contacts check takes.
    #[error("at most 50 phones per check")]
    TooManyPhones,
    /// The session must be connected for this.
    #[error("the session is not connected to WhatsApp")]
    SessionNotConnected,
    /// WhatsApp did not answer a query.
    #[error("WhatsApp did not answer: {0}")]
    UpstreamFailed(String),
    /// A query parameter is malformed.
    #[error("invalid query: {0}")]
    InvalidQuery(&'static str),
    /// `types=` of `/ws/events` names an event we do not publish.
    #[error(
        "unknown event type; known: session.status, session.qr, session.connected, session.logged_out, \
         message.received, message.status"
    )]
    InvalidEventType,
    /// `type` is not `text`, `image`, `document`, `audio` or `video`.
    #[error("field 'type' must be \"text\", \"image\", \"document\", \"audio\" or \"video\"")]
    InvalidMessageType,
    /// `media` (or the multipart `file`) is not usable: not base64, or missing.
    #[error("invalid media: {0}")]
    InvalidMedia(&'static str),
    /// No session with that id is configured.
    #[error("session not found")]
    SessionNotFound,
    /// No route for this path.
    #[error("not found")]
    NotFound,
    /// The path exists but not for this method; `allow` lists the methods that do, e.g. `"POST"`.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// Value of the `Allow` header.
        allow: &'static str,
    },
    /// The body (or the decoded PDF) is larger than `limit` bytes.
    #[error("payload too large: the limit is {limit} bytes")]
    PayloadTooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// A `Content-Type` other than `application/json` was sent.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// The send queue is full; the client should retry after `retry_after_secs`.
    #[error("queue is full, retry later")]
    QueueFull {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// The `Idempotency-Key` header is empty, longer than 255 characters or not visible ASCII.
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    /// The `Idempotency-Key` was used before with a different body.
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    /// No message with that id.
    #[error("message not found")]
    MessageNotFound,
    /// No messages were received in that chat.
    #[error("chat not found")]
    ChatNotFound,
    /// A received message whose file is not kept (why).
    #[error("the file of this message is not kept: {0}")]
    MediaNotStored(String),
    /// The disk is full: nothing was accepted; retry once space is freed.
    #[error("insufficient storage: the message could not be stored, retry later")]
    InsufficientStorage,
    /// The token is valid but lacks the scope, or the session, this request needs.
    #[error("this token may not {0}")]
    Forbidden(&'static str),
    /// The token sent more requests than its rate allows.
    #[error("too many requests for this token (RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST); retry later")]
    RateLimited {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// Too many requests with a missing or unknown token came from this address.
    #[error("too many failed authentications from this address (AUTH_FAILURES_PER_MINUTE); retry later")]
    TooManyAuthFailures {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// The token holds as many open WebSockets as it may.
    #[error("this token holds {limit} open WebSockets already (WS_MAX_PER_TOKEN); close one first")]
    TooManyWebSockets {
        /// `WS_MAX_PER_TOKEN`.
        limit: usize,
    },
    /// The client did not send the whole body in time.
    #[error("the request body was not received in time")]
    BodyTimeout,
    /// The request took longer than the route allows.
    #[error("the request took too long; retry it (with the same Idempotency-Key for sends)")]
    Timeout,
    /// `POST /api/sessions` with an id that exists.
    #[error("a session with this id already exists")]
    SessionExists,
    /// A QR was asked for a session that is linked and connected.
    #[error("the session is already linked and connected; log it out to link another phone")]
    AlreadyConnected,
    /// A QR was asked for while the session links by a pairing code.
    #[error("a pairing code is outstanding for this session: type it on the phone, or restart the session for a QR")]
    PairingCodeOutstanding,
    /// No QR code came in time; `reason` says what the session is doing.
    #[error("no QR code yet: {reason}")]
    QrNotReady {
        /// The session's status and reason, for people.
        reason: String,
    },
    /// No pairing code could be had.
    #[error(transparent)]
    Pairing(#[from] crate::session::PairingError),
    /// A sibling service's setting that this gateway fixes by its own configuration (a
    /// compatibility route asked to change it); `0` says what it does instead.
    #[error("this gateway's configuration fixes this setting: {0}")]
    SettingFixed(&'static str),
    /// The session's supervisor did not answer a command in time.
    #[error("the session did not answer in time; retry")]
    SessionUnresponsive,
    /// The gateway is starting or stopping.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// A bug or an unexpected failure; the source is logged, never returned.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    /// Wraps any error as an [`ApiError::Internal`].
    pub fn internal(source: impl Into<BoxError>) -> ApiError {
        ApiError::Internal(source.into())
    }

    /// The journal's failure: 503 `STORAGE_UNAVAILABLE` when its database cannot be reached
    /// now, else 500.
    pub fn journal(error: crate::journal::JournalError) -> ApiError {
        if error.is_unavailable() {
            tracing::warn!(error = %error, "journal unavailable");
            ApiError::StorageUnavailable
        } else {
            ApiError::internal(error)
        }
    }

    /// A store's failure: 503 `STORAGE_UNAVAILABLE` when the database cannot be reached now,
    /// else 500.
    pub fn storage(error: crate::storage::StorageError) -> ApiError {
        if error.is_unavailable() {
            tracing::warn!(error = %error, "storage unavailable");
            ApiError::StorageUnavailable
        } else {
            ApiError::internal(error)
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken => StatusCode::UNAUTHORIZED,
            ApiError::InvalidToken => StatusCode::FORBIDDEN,
            ApiError::TokenMalformed
            | ApiError::TokenAlgorithm
            | ApiError::TokenSignature
            | ApiError::TokenExpired
            | ApiError::TokenNotYetValid
            | ApiError::TokenIssuer
            | ApiError::TokenAudience
            | ApiError::TokenClaimMissing { .. } => StatusCode::UNAUTHORIZED,
            ApiError::TokenKeysUnavailable | ApiError::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadJson
            | ApiError::MissingField(_)
            | ApiError::WrongFieldType { .. }
            | ApiError::InvalidSessionId(_)
            | ApiError::InvalidPhone(_)
            | ApiError::InvalidBase64
            | ApiError::NotAPdf
            | ApiError::InvalidFileName(_)
            | ApiError::InvalidMessageType
            | ApiError::InvalidEventType
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidUrl
            | ApiError::InvalidSecret
            | ApiError::WebhookUrlNotAllowed
            | ApiError::TooManyPhones
            | ApiError::InvalidMedia(_)
            | ApiError::InvalidIdempotencyKey => StatusCode::BAD_REQUEST,
            ApiError::InvalidContent(ContentError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidContent(_) => StatusCode::BAD_REQUEST,
            ApiError::SessionNotFound
            | ApiError::NotFound
            | ApiError::MessageNotFound
            | ApiError::ChatNotFound
            | ApiError::WebhookNotFound
            | ApiError::MediaNotStored(_) => StatusCode::NOT_FOUND,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PairingCodeOutstanding => StatusCode::CONFLICT,
            ApiError::RateLimited { .. }
            | ApiError::TooManyAuthFailures { .. }
            | ApiError::TooManyWebSockets { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Timeout
            | ApiError::ShuttingDown
            | ApiError::SessionUnresponsive
            | ApiError::QrNotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::SessionExists
            | ApiError::AlreadyConnected
            | ApiError::SessionNotConnected
            | ApiError::SettingFixed(_) => StatusCode::CONFLICT,
            ApiError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::Pairing(e) => match e {
                PairingError::AlreadyLinked | PairingError::Outstanding { .. } => StatusCode::CONFLICT,
                PairingError::InvalidPhone(_) => StatusCode::BAD_REQUEST,
                PairingError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                PairingError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
                PairingError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken => "MISSING_TOKEN",
            ApiError::InvalidToken => "INVALID_TOKEN",
            ApiError::TokenMalformed => "TOKEN_MALFORMED",
            ApiError::TokenAlgorithm => "TOKEN_ALGORITHM",
            ApiError::TokenSignature => "TOKEN_SIGNATURE",
            ApiError::TokenExpired => "TOKEN_EXPIRED",
            ApiError::TokenNotYetValid => "TOKEN_NOT_YET_VALID",
            ApiError::TokenIssuer => "TOKEN_ISSUER",
            ApiError::TokenAudience => "TOKEN_AUDIENCE",
            ApiError::TokenClaimMissing { .. } => "TOKEN_CLAIM_MISSING",
            ApiError::TokenKeysUnavailable => "TOKEN_KEYS_UNAVAILABLE",
            ApiError::StorageUnavailable => "STORAGE_UNAVAILABLE",
            ApiError::BadJson => "BAD_JSON",
            ApiError::MissingField(_) => "MISSING_FIELD",
            ApiError::WrongFieldType { .. } => "INVALID_FIELD_TYPE",
            ApiError::InvalidSessionId(_) => "INVALID_SESSION_ID",
            ApiError::InvalidPhone(_) => "INVALID_PHONE",
            ApiError::InvalidBase64 => "INVALID_BASE64",
            ApiError::NotAPdf => "NOT_A_PDF",
            ApiError::InvalidFileName(_) => "INVALID_FILE_NAME",
            ApiError::InvalidMessageType => "INVALID_MESSAGE_TYPE",
            ApiError::InvalidEventType => "INVALID_EVENT_TYPE",
            ApiError::InvalidQuery(_) => "INVALID_QUERY",
            ApiError::TooManyPhones => "TOO_MANY_PHONES",
            ApiError::InvalidUrl => "INVALID_URL",
            ApiError::InvalidSecret => "INVALID_SECRET",
            ApiError::WebhookUrlNotAllowed => "WEBHOOK_URL_NOT_ALLOWED",
            ApiError::WebhookNotFound => "WEBHOOK_NOT_FOUND",
            ApiError::SessionNotConnected => "SESSION_NOT_CONNECTED",
            ApiError::UpstreamFailed(_) => "UPSTREAM_FAILED",
            ApiError::InvalidMedia(_) => "INVALID_MEDIA",
            ApiError::InvalidContent(e) => match e {
                ContentError::EmptyText => "EMPTY_TEXT",
                ContentError::TextTooLong => "TEXT_TOO_LONG",
                ContentError::CaptionTooLong => "CAPTION_TOO_LONG",
                ContentError::NulCharacter => "NUL_CHARACTER",
                ContentError::EmptyMedia => "INVALID_MEDIA",
                ContentError::TooLarge => "PAYLOAD_TOO_LARGE",
                ContentError::InvalidMimeType(_) => "INVALID_MIMETYPE",
                ContentError::NotAnImage { .. } => "NOT_AN_IMAGE",
                ContentError::NotOggOpus { .. } => "NOT_OGG_OPUS",
                ContentError::NotAVideo { .. } => "NOT_A_VIDEO",
                ContentError::TypeMismatch { .. } => "MEDIA_TYPE_MISMATCH",
            },
            ApiError::SessionNotFound => "SESSION_NOT_FOUND",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::QueueFull { .. } => "QUEUE_FULL",
            ApiError::InvalidIdempotencyKey => "INVALID_IDEMPOTENCY_KEY",
            ApiError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ApiError::MessageNotFound => "MESSAGE_NOT_FOUND",
            ApiError::MediaNotStored(_) => "MEDIA_NOT_STORED",
            ApiError::ChatNotFound => "CHAT_NOT_FOUND",
            ApiError::InsufficientStorage => "INSUFFICIENT_STORAGE",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::TooManyAuthFailures { .. } => "TOO_MANY_AUTH_FAILURES",
            ApiError::PairingCodeOutstanding => "PAIRING_CODE_OUTSTANDING",
            ApiError::TooManyWebSockets { .. } => "TOO_MANY_WEBSOCKETS",
            ApiError::BodyTimeout => "BODY_TIMEOUT",
            ApiError::Timeout => "TIMEOUT",
            ApiError::ShuttingDown => "SHUTTING_DOWN",
            ApiError::SessionExists => "SESSION_EXISTS",
            ApiError::AlreadyConnected => "ALREADY_CONNECTED",
            ApiError::QrNotReady { .. } => "QR_NOT_READY",
            ApiError::SessionUnresponsive => "SESSION_UNRESPONSIVE",
            ApiError::SettingFixed(_) => "SETTING_FIXED",
            ApiError::Pairing(e) => match e {
                PairingError::AlreadyLinked => "ALREADY_CONNECTED",
                PairingError::Outstanding { .. } => "PAIRING_CODE_OUTSTANDING",
                PairingError::InvalidPhone(_) => "INVALID_PHONE",
                PairingError::RateLimited { .. } => "PAIRING_RATE_LIMITED",
                PairingError::Rejected(_) => "PAIRING_REJECTED",
                PairingError::Unavailable(_) => "PAIRING_UNAVAILABLE",
            },
            ApiError::Internal(_) => "INTERNAL",
        }
    }
}

impl IntoResponse for ApiError {
    /// The JSON error response. An `Internal` error is logged here with its source.
    fn into_response(self) -> Response {
        if let ApiError::Internal(source) = &self {
            tracing::error!(error = %source, error.debug = ?source, "internal error");
        }
        // `Display` of Internal is "internal error": the source never reaches the body.
        let mut response = localized_error_response(self.status(), self.code(), &self.to_string(), &self.spanish());
        let headers = response.headers_mut();
        match &self {
            ApiError::MissingToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::InvalidToken
            | ApiError::TokenMalformed
            | ApiError::TokenAlgorithm
            | ApiError::TokenSignature
            | ApiError::TokenExpired
            | ApiError::TokenNotYetValid
            | ApiError::TokenIssuer
            | ApiError::TokenAudience
            | ApiError::TokenClaimMissing { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            }
            ApiError::TokenKeysUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(5u64));
            }
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::QueueFull { retry_after_secs }
            | ApiError::RateLimited { retry_after_secs }
            | ApiError::TooManyAuthFailures { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::QrNotReady { .. } | ApiError::SessionUnresponsive | ApiError::StorageUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(2u64));
            }
            ApiError::Pairing(PairingError::RateLimited { retry_after }) => {
                let secs = retry_after.map_or(60, |d| d.as_secs().max(1));
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        response
    }
}

impl From<crate::session::SessionError> for ApiError {
    fn from(err: crate::session::SessionError) -> Self {
        use crate::session::SessionError;
        match err {
            SessionError::NotFound => ApiError::SessionNotFound,
            SessionError::Exists => ApiError::SessionExists,
            SessionError::ShuttingDown => ApiError::ShuttingDown,
            SessionError::Unresponsive => ApiError::SessionUnresponsive,
            other => ApiError::internal(other),
        }
    }
}

impl From<PdfError> for ApiError {
    fn from(err: PdfError) -> Self {
        match err {
            // An empty string is "missing", as in the Node service (`if (!pdfBase64)`).
            PdfError::Empty => ApiError::MissingField("pdfBase64"),
            PdfError::InvalidBase64 => ApiError::InvalidBase64,
            PdfError::NotAPdf => ApiError::NotAPdf,
            PdfError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
        }
    }
}

/// Every error answer: `{"success":false,"error":{"code","message"},"requestId"}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorDetail,
    /// The request's `X-Request-Id`, also echoed as a header and in every log line of the request.
    pub request_id: String,
}

/// The answers of every route behind a bearer token, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only describes responses.
pub(crate) enum AuthErrors {
    #[response(
        status = 401,
        description = "No bearer token (MISSING_TOKEN), or a user's JWT refused (TOKEN_MALFORMED, TOKEN_ALGORITHM, TOKEN_SIGNATURE, TOKEN_EXPIRED, TOKEN_NOT_YET_VALID, TOKEN_ISSUER, TOKEN_AUDIENCE, TOKEN_CLAIM_MISSING)"
    )]
    Missing(ErrorBody),
    #[response(status = 403, description = "Unknown token (INVALID_TOKEN) or not allowed (FORBIDDEN)")]
    Forbidden(ErrorBody),
}

/// The answers of a route with a `{sessionId}` in its path, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only describes responses.
pub(crate) enum SessionPathErrors {
    #[response(status = 400, description = "Invalid id (INVALID_SESSION_ID)")]
    InvalidId(ErrorBody),
    #[response(status = 404, description = "No such session (SESSION_NOT_FOUND)")]
    NotFound(ErrorBody),
}

/// The token's rate limit, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only describes responses.
pub(crate) enum RateLimited {
    #[response(status = 429, description = "Rate limited (RATE_LIMITED), or too many failed authentications from this address (TOO_MANY_AUTH_FAILURES); see Retry-After",
        headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Limited(ErrorBody),
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code to branch on: MISSING_TOKEN, INVALID_TOKEN, TOKEN_MALFORMED, TOKEN_ALGORITHM,
    /// TOKEN_SIGNATURE, TOKEN_EXPIRED, TOKEN_NOT_YET_VALID, TOKEN_ISSUER, TOKEN_AUDIENCE,
    /// TOKEN_CLAIM_MISSING, TOKEN_KEYS_UNAVAILABLE, FORBIDDEN, RATE_LIMITED,
    /// TOO_MANY_AUTH_FAILURES, TOO_MANY_WEBSOCKETS, TOO_MANY_CONNECTIONS, BAD_JSON,
    /// MISSING_FIELD, INVALID_FIELD_TYPE, INVALID_SESSION_ID, INVALID_PHONE, INVALID_BASE64,
    /// NOT_A_PDF, NOT_AN_IMAGE, NOT_OGG_OPUS, NOT_A_VIDEO, INVALID_FILE_NAME, INVALID_IDEMPOTENCY_KEY, SESSION_NOT_FOUND, MESSAGE_NOT_FOUND,
    /// NOT_FOUND, METHOD_NOT_ALLOWED, BODY_TIMEOUT, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE,
    /// IDEMPOTENCY_KEY_REUSED, QUEUE_FULL, UPGRADE_REQUIRED, UNSUPPORTED_WEBSOCKET_VERSION,
    /// BAD_WEBSOCKET_KEY, SESSION_EXISTS, ALREADY_CONNECTED, QR_NOT_READY, SESSION_UNRESPONSIVE,
    /// PAIRING_CODE_OUTSTANDING, PAIRING_RATE_LIMITED, PAIRING_REJECTED, PAIRING_UNAVAILABLE,
    /// TIMEOUT, SHUTTING_DOWN, INSUFFICIENT_STORAGE, WEBHOOK_URL_NOT_ALLOWED, SETTING_FIXED, INTERNAL.
    pub code: String,
    /// A sentence for people, in English, or in Spanish when `Accept-Language` prefers `es`;
    /// it may change.
    pub message: String,
}

/// Builds the error body with `status`; shared with the WebSocket handshake rejections so every
/// error body has one shape. The request id comes from the request's scope.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    super::json_response(status, &error_body(code, message))
}

/// [`error_response`] in English, carrying the same body in Spanish (`spanish` as its
/// `message`) for [`language::middleware`](super::language::middleware).
pub(crate) fn localized_error_response(status: StatusCode, code: &str, english: &str, spanish: &str) -> Response {
    let mut response = error_response(status, code, english);
    // Our bodies are plain structs of strings: this does not fail, and if it did the English
    // one stands.
    if let Ok(body) = serde_json::to_vec(&error_body(code, spanish)) {
        response.extensions_mut().insert(Spanish(body.into()));
    }
    response
}

/// The Spanish body of an error response, carried as a response extension until
/// [`language::middleware`](super::language::middleware) answers one of the two.
#[derive(Debug, Clone)]
pub(crate) struct Spanish(pub(crate) Bytes);

fn error_body(code: &str, message: &str) -> ErrorBody {
    ErrorBody {
        success: false,
        error: ErrorDetail { code: code.to_owned(), message: message.to_owned() },
        request_id: request_id::current().unwrap_or_default(),
    }
}

/// The Spanish `message` of axum's own 405 (no [`ApiError`] is built for it).
pub(crate) use es::METHOD_NOT_ALLOWED as METHOD_NOT_ALLOWED_ES;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body_json(response: Response) -> serde_json::Value {
        let bytes = body_bytes(response);
        serde_json::from_slice(&bytes).unwrap()
    }

    fn body_bytes(response: Response) -> bytes::Bytes {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async { response.into_body().collect().await.unwrap().to_bytes() })
    }

    #[test]
    fn body_has_exact_shape() {
        let response = ApiError::MissingField("to").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let raw = body_bytes(response);
        assert_eq!(
            std::str::from_utf8(&raw).unwrap(),
            r#"{"success":false,"error":{"code":"MISSING_FIELD","message":"missing required field 'to'"},"requestId":""}"#
        );
    }

    #[test]
    fn missing_token_has_www_authenticate() {
        let response = ApiError::MissingToken.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body_json(response)["error"]["code"], "MISSING_TOKEN");
    }

    #[test]
    fn invalid_token_is_403() {
        let response = ApiError::InvalidToken.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(body_json(response)["error"]["code"], "INVALID_TOKEN");
    }

    #[test]
    fn refused_jwts_are_401_with_the_bearer_challenge() {
        for error in
            [ApiError::TokenExpired, ApiError::TokenSignature, ApiError::TokenClaimMissing { claim: "sub".into() }]
        {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer error=\"invalid_token\"");
        }
        let response = ApiError::TokenKeysUnavailable.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn method_not_allowed_has_allow() {
        let response = ApiError::MethodNotAllowed { allow: "POST" }.into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "POST");
    }

    #[test]
    fn queue_full_has_retry_after() {
        let response = ApiError::QueueFull { retry_after_secs: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(body_json(response)["error"]["code"], "QUEUE_FULL");
    }

    #[test]
    fn internal_hides_its_source() {
        let err = ApiError::internal(std::io::Error::other("db password is hunter2"));
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let json = body_json(response);
        assert_eq!(json["error"]["code"], "INTERNAL");
        assert_eq!(json["error"]["message"], "internal error");
        assert_eq!(json["success"], false);
    }

    #[test]
    fn statuses_and_codes() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::BadJson, 400, "BAD_JSON"),
            (ApiError::WrongFieldType { field: "to", expected: "a string" }, 400, "INVALID_FIELD_TYPE"),
            (InvalidSessionId.into(), 400, "INVALID_SESSION_ID"),
            (InvalidPhone.into(), 400, "INVALID_PHONE"),
            (ApiError::InvalidBase64, 400, "INVALID_BASE64"),
            (ApiError::NotAPdf, 400, "NOT_A_PDF"),
            (InvalidFileName::Empty.into(), 400, "INVALID_FILE_NAME"),
            (ApiError::SessionNotFound, 404, "SESSION_NOT_FOUND"),
            (ApiError::NotFound, 404, "NOT_FOUND"),
            (ApiError::PayloadTooLarge { limit: 10 }, 413, "PAYLOAD_TOO_LARGE"),
            (ApiError::UnsupportedMediaType, 415, "UNSUPPORTED_MEDIA_TYPE"),
            (ApiError::Forbidden("send on this session"), 403, "FORBIDDEN"),
            (ApiError::RateLimited { retry_after_secs: 1 }, 429, "RATE_LIMITED"),
            (ApiError::TooManyAuthFailures { retry_after_secs: 1 }, 429, "TOO_MANY_AUTH_FAILURES"),
            (ApiError::TooManyWebSockets { limit: 2 }, 429, "TOO_MANY_WEBSOCKETS"),
            (ApiError::PairingCodeOutstanding, 409, "PAIRING_CODE_OUTSTANDING"),
            (ApiError::BodyTimeout, 408, "BODY_TIMEOUT"),
            (ApiError::Timeout, 503, "TIMEOUT"),
            (ApiError::WebhookUrlNotAllowed, 400, "WEBHOOK_URL_NOT_ALLOWED"),
            (ApiError::TokenMalformed, 401, "TOKEN_MALFORMED"),
            (ApiError::TokenAlgorithm, 401, "TOKEN_ALGORITHM"),
            (ApiError::TokenSignature, 401, "TOKEN_SIGNATURE"),
            (ApiError::TokenExpired, 401, "TOKEN_EXPIRED"),
            (ApiError::TokenNotYetValid, 401, "TOKEN_NOT_YET_VALID"),
            (ApiError::TokenIssuer, 401, "TOKEN_ISSUER"),
            (ApiError::TokenAudience, 401, "TOKEN_AUDIENCE"),
            (ApiError::TokenClaimMissing { claim: "sub".into() }, 401, "TOKEN_CLAIM_MISSING"),
            (ApiError::TokenKeysUnavailable, 503, "TOKEN_KEYS_UNAVAILABLE"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code);
        }
    }

    /// One error of every variant, and of every kind of the errors they wrap.
    fn one_of_each() -> Vec<ApiError> {
        use crate::session::PairingError as P;
        vec![
            ApiError::MissingToken,
            ApiError::InvalidToken,
            ApiError::TokenMalformed,
            ApiError::TokenAlgorithm,
            ApiError::TokenSignature,
            ApiError::TokenExpired,
            ApiError::TokenNotYetValid,
            ApiError::TokenIssuer,
            ApiError::TokenAudience,
            ApiError::TokenClaimMissing { claim: "sub".into() },
            ApiError::TokenKeysUnavailable,
            ApiError::StorageUnavailable,
            ApiError::BadJson,
            ApiError::MissingField("to"),
            ApiError::WrongFieldType { field: "to", expected: "a string" },
            InvalidSessionId.into(),
            InvalidPhone.into(),
            ApiError::InvalidBase64,
            ApiError::NotAPdf,
            InvalidFileName::Empty.into(),
            InvalidFileName::PathSeparator.into(),
            InvalidFileName::ControlChar.into(),
            InvalidFileName::TooLong.into(),
            ContentError::EmptyText.into(),
            ContentError::TextTooLong.into(),
            ContentError::CaptionTooLong.into(),
            ContentError::NulCharacter.into(),
            ContentError::EmptyMedia.into(),
            ContentError::TooLarge.into(),
            ContentError::InvalidMimeType("x".into()).into(),
            ContentError::NotAnImage { found: "application/pdf".into() }.into(),
            ContentError::NotOggOpus { found: "audio/mpeg".into() }.into(),
            ContentError::NotAVideo { found: "video/quicktime".into() }.into(),
            ContentError::TypeMismatch { declared: "image/png".into(), found: "application/pdf".into() }.into(),
            ApiError::InvalidUrl,
            ApiError::InvalidSecret,
            ApiError::WebhookNotFound,
            ApiError::TooManyPhones,
            ApiError::SessionNotConnected,
            ApiError::UpstreamFailed("timeout".into()),
            ApiError::InvalidQuery("limit must be 1 to 200"),
            ApiError::InvalidEventType,
            ApiError::InvalidMessageType,
            ApiError::InvalidMedia("malformed multipart body"),
            ApiError::SessionNotFound,
            ApiError::NotFound,
            ApiError::MethodNotAllowed { allow: "POST" },
            ApiError::PayloadTooLarge { limit: 10 },
            ApiError::UnsupportedMediaType,
            ApiError::QueueFull { retry_after_secs: 1 },
            ApiError::InvalidIdempotencyKey,
            ApiError::IdempotencyKeyReused,
            ApiError::MessageNotFound,
            ApiError::ChatNotFound,
            ApiError::MediaNotStored("the file is gone".into()),
            ApiError::InsufficientStorage,
            ApiError::Forbidden("act on this session"),
            ApiError::RateLimited { retry_after_secs: 1 },
            ApiError::TooManyAuthFailures { retry_after_secs: 1 },
            ApiError::TooManyWebSockets { limit: 2 },
            ApiError::PairingCodeOutstanding,
            ApiError::WebhookUrlNotAllowed,
            ApiError::BodyTimeout,
            ApiError::Timeout,
            ApiError::SessionExists,
            ApiError::AlreadyConnected,
            ApiError::QrNotReady { reason: "connecting".into() },
            P::AlreadyLinked.into(),
            P::InvalidPhone("too short".into()).into(),
            P::RateLimited { retry_after: None }.into(),
            P::Outstanding { remaining_secs: 30 }.into(),
            P::Rejected("bad request".into()).into(),
            P::Unavailable("offline".into()).into(),
            ApiError::SessionUnresponsive,
            ApiError::SettingFixed("received files are always downloaded, up to INBOUND_MEDIA_MAX_BYTES"),
            ApiError::ShuttingDown,
            ApiError::internal(std::io::Error::other("disk")),
        ]
    }

    /// How many variants [`ApiError`] has.
    const VARIANTS: usize = 59;

    /// The variant of `e`, numbered. Exhaustive on purpose: a new variant does not compile until
    /// it gets the next number here (raise `VARIANTS`) and a sample in [`one_of_each`].
    fn variant(e: &ApiError) -> usize {
        match e {
            ApiError::MissingToken => 0,
            ApiError::InvalidToken => 1,
            ApiError::BadJson => 2,
            ApiError::MissingField(_) => 3,
            ApiError::WrongFieldType { .. } => 4,
            ApiError::InvalidSessionId(_) => 5,
            ApiError::InvalidPhone(_) => 6,
            ApiError::InvalidBase64 => 7,
            ApiError::NotAPdf => 8,
            ApiError::InvalidFileName(_) => 9,
            ApiError::InvalidContent(_) => 10,
            ApiError::InvalidUrl => 11,
            ApiError::InvalidSecret => 12,
            ApiError::WebhookNotFound => 13,
            ApiError::TooManyPhones => 14,
            ApiError::SessionNotConnected => 15,
            ApiError::UpstreamFailed(_) => 16,
            ApiError::InvalidQuery(_) => 17,
            ApiError::InvalidEventType => 18,
            ApiError::InvalidMessageType => 19,
            ApiError::InvalidMedia(_) => 20,
            ApiError::SessionNotFound => 21,
            ApiError::NotFound => 22,
            ApiError::MethodNotAllowed { .. } => 23,
            ApiError::PayloadTooLarge { .. } => 24,
            ApiError::UnsupportedMediaType => 25,
            ApiError::QueueFull { .. } => 26,
            ApiError::InvalidIdempotencyKey => 27,
            ApiError::IdempotencyKeyReused => 28,
            ApiError::MessageNotFound => 29,
            ApiError::ChatNotFound => 30,
            ApiError::MediaNotStored(_) => 31,
            ApiError::InsufficientStorage => 32,
            ApiError::Forbidden(_) => 33,
            ApiError::RateLimited { .. } => 34,
            ApiError::BodyTimeout => 35,
            ApiError::Timeout => 36,
            ApiError::SessionExists => 37,
            ApiError::AlreadyConnected => 38,
            ApiError::QrNotReady { .. } => 39,
            ApiError::Pairing(_) => 40,
            ApiError::SessionUnresponsive => 41,
            ApiError::ShuttingDown => 42,
            ApiError::Internal(_) => 43,
            ApiError::TooManyAuthFailures { .. } => 44,
            ApiError::TooManyWebSockets { .. } => 45,
            ApiError::PairingCodeOutstanding => 46,
            ApiError::WebhookUrlNotAllowed => 47,
            ApiError::SettingFixed(_) => 48,
            ApiError::TokenMalformed => 49,
            ApiError::TokenAlgorithm => 50,
            ApiError::TokenSignature => 51,
            ApiError::TokenExpired => 52,
            ApiError::TokenNotYetValid => 53,
            ApiError::TokenIssuer => 54,
            ApiError::TokenAudience => 55,
            ApiError::TokenClaimMissing { .. } => 56,
            ApiError::TokenKeysUnavailable => 57,
            ApiError::StorageUnavailable => 58,
        }
    }

    #[test]
    fn every_error_has_an_english_and_a_spanish_message() {
        let all = one_of_each();
        let variants: std::collections::BTreeSet<usize> = all.iter().map(variant).collect();
        assert_eq!(variants, (0..VARIANTS).collect(), "one_of_each has a sample of every variant");
        let mut codes = std::collections::BTreeSet::new();
        for error in &all {
            let (english, spanish) = (error.to_string(), error.spanish());
            assert!(!english.trim().is_empty() && !spanish.trim().is_empty(), "{}", error.code());
            assert_ne!(english, spanish, "{}: the Spanish is not the English", error.code());
            codes.insert(error.code());
        }
        // Every code the document lists for ApiError (the WebSocket handshake's own are not
        // ApiErrors).
        for code in [
            "MISSING_TOKEN",
            "INVALID_TOKEN",
            "TOKEN_MALFORMED",
            "TOKEN_ALGORITHM",
            "TOKEN_SIGNATURE",
            "TOKEN_EXPIRED",
            "TOKEN_NOT_YET_VALID",
            "TOKEN_ISSUER",
            "TOKEN_AUDIENCE",
            "TOKEN_CLAIM_MISSING",
            "TOKEN_KEYS_UNAVAILABLE",
            "FORBIDDEN",
            "RATE_LIMITED",
            "NOT_A_PDF",
            "PAIRING_UNAVAILABLE",
            "INTERNAL",
        ] {
            assert!(codes.contains(code), "{code}");
        }
    }

    #[test]
    fn fragments_from_callers_are_translated() {
        for english in [
            "a string",
            "an array of session ids",
            "act on this session",
            "act without naming a session (this token is not bound to one)",
            "send messages (needs messages:send)",
            "manage webhooks (needs webhooks:write)",
            "limit must be 1 to 200",
            "malformed multipart body",
            "the file is gone",
            "received files are always downloaded, up to INBOUND_MEDIA_MAX_BYTES",
        ] {
            assert_ne!(es::phrase(english), english);
        }
        // One we do not know stays as it is, inside a Spanish sentence.
        assert_eq!(ApiError::InvalidQuery("zzz").spanish(), "consulta no válida: zzz");
    }

    #[test]
    fn the_response_carries_its_spanish_body_and_the_same_code() {
        let mut response = ApiError::SessionNotFound.into_response();
        let Spanish(spanish) = response.extensions_mut().remove::<Spanish>().expect("the Spanish body");
        let spanish: serde_json::Value = serde_json::from_slice(&spanish).unwrap();
        let english = body_json(response);
        assert_eq!(english["error"]["message"], "session not found");
        assert_eq!(spanish["error"]["message"], "no existe esa sesión");
        assert_eq!(spanish["error"]["code"], english["error"]["code"]);
        assert_eq!(spanish["success"], false);
    }

    #[test]
    fn pdf_errors_map_to_api_errors() {
        assert!(matches!(ApiError::from(PdfError::Empty), ApiError::MissingField("pdfBase64")));
        assert!(matches!(ApiError::from(PdfError::InvalidBase64), ApiError::InvalidBase64));
        assert!(matches!(ApiError::from(PdfError::NotAPdf), ApiError::NotAPdf));
        assert!(matches!(ApiError::from(PdfError::TooLarge { limit: 5 }), ApiError::PayloadTooLarge { limit: 5 }));
    }
}
