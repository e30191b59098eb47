//! The Spanish `message` of every [`ApiError`]: one arm per variant (the `match` is exhaustive,
//! so a new variant does not compile until it has its words here). The English one is its
//! `Display`.
//!
//! Fragments that callers pass as `&'static str` (the action a token may not do, what a field
//! must be, why a query is wrong) are looked up in [`phrase`]; one not listed there stays in
//! English inside the Spanish sentence. Texts from elsewhere (WhatsApp's answers, a session's
//! reason) are quoted as they are.

use super::ApiError;
use crate::domain::{ContentError, InvalidFileName, MAX_CAPTION_CHARS, MAX_MEDIA_BYTES, MAX_TEXT_CHARS};
use crate::session::PairingError;

impl ApiError {
    /// This error's `message` in Spanish.
    pub(crate) fn spanish(&self) -> String {
        match self {
            ApiError::MissingToken => "falta el token (Authorization: Bearer …)".into(),
            ApiError::InvalidToken => "token no válido".into(),
            ApiError::TokenMalformed => "el token parece un JWT pero no se puede leer".into(),
            ApiError::TokenAlgorithm => "aquí no se acepta el algoritmo con que se firmó el token".into(),
            ApiError::TokenSignature => "la firma del token no es válida".into(),
            ApiError::TokenExpired => "el token ha caducado; vuelva a iniciar sesión".into(),
            ApiError::TokenNotYetValid => "el token aún no es válido (nbf)".into(),
            ApiError::TokenIssuer => "aquí no se acepta el emisor del token (JWT_ISSUER)".into(),
            ApiError::TokenAudience => "el token es para otra audiencia (JWT_AUDIENCE)".into(),
            ApiError::TokenClaimMissing { claim } => {
                format!("falta el claim '{claim}' del token, o no se puede usar")
            }
            ApiError::TokenKeysUnavailable => {
                "ahora no se pueden obtener las claves que verifican los tokens; reintente más tarde".into()
            }
            ApiError::StorageUnavailable => {
                "ahora no se puede llegar a la base de datos; no se guardó nada, reintente más tarde".into()
            }
            ApiError::BadJson => "el cuerpo de la petición no es un objeto JSON válido".into(),
            ApiError::MissingField(field) => format!("falta el campo obligatorio '{field}'"),
            ApiError::WrongFieldType { field, expected } => {
                format!("el campo '{field}' debe ser {}", phrase(expected))
            }
            ApiError::InvalidSessionId(_) => "id de sesión no válido: de 1 a 64 caracteres entre A-Z, a-z, 0-9, '_' \
                                              y '-', empezando por una letra o un dígito"
                .into(),
            ApiError::InvalidPhone(_) => "número de teléfono no válido: de 7 a 15 dígitos con el código de país, \
                                          p. ej. 51987654321 (se ignoran '+', espacios, guiones, puntos y paréntesis; \
                                          también vale un JID de WhatsApp como 51987654321@s.whatsapp.net)"
                .into(),
            ApiError::InvalidBase64 => "el campo 'pdfBase64' no es base64 válido".into(),
            ApiError::NotAPdf => "el campo 'pdfBase64' no es un documento PDF".into(),
            ApiError::InvalidFileName(e) => format!(
                "fileName no válido: {}",
                match e {
                    InvalidFileName::Empty => "el nombre del archivo está vacío",
                    InvalidFileName::PathSeparator => "el nombre del archivo no puede contener '/' ni '\\'",
                    InvalidFileName::ControlChar => "el nombre del archivo no puede contener caracteres de control",
                    InvalidFileName::TooLong => "el nombre del archivo tiene más de 255 caracteres",
                }
            ),
            ApiError::InvalidContent(e) => match e {
                ContentError::EmptyText => "el texto está vacío".into(),
                ContentError::TextTooLong => format!("el texto tiene más de {MAX_TEXT_CHARS} caracteres"),
                ContentError::CaptionTooLong => format!("la leyenda tiene más de {MAX_CAPTION_CHARS} caracteres"),
                ContentError::NulCharacter => "el texto o la leyenda contiene un carácter NUL (U+0000)".into(),
                ContentError::EmptyMedia => "el archivo está vacío".into(),
                ContentError::TooLarge => format!("el archivo supera los {MAX_MEDIA_BYTES} bytes"),
                ContentError::InvalidMimeType(raw) => format!("'{raw}' no es un tipo de medio"),
                ContentError::NotAnImage { found } => {
                    format!("una imagen debe ser JPEG, PNG o WebP; estos bytes son {found} (envíelo como documento)")
                }
                ContentError::NotOggOpus { found } => {
                    format!("el audio debe ser OGG/Opus (en lo que WhatsApp graba las notas de voz); estos bytes son {found}")
                }
                ContentError::NotAVideo { found } => {
                    format!("un video debe ser MP4; estos bytes son {found} (envíelo como documento)")
                }
                ContentError::TypeMismatch { declared, found } => {
                    format!("el archivo se declaró {declared}, pero sus bytes son {found}")
                }
            },
            ApiError::InvalidUrl => "url debe ser una URL http o https".into(),
            ApiError::InvalidSecret => "secret debe ser 'whsec_' seguido del base64 de 24 a 64 bytes".into(),
            ApiError::WebhookNotFound => "no existe ese webhook".into(),
            ApiError::TooManyPhones => "como máximo 50 teléfonos por consulta".into(),
            ApiError::SessionNotConnected => "la sesión no está conectada a WhatsApp".into(),
            ApiError::UpstreamFailed(why) => format!("WhatsApp no respondió: {why}"),
            ApiError::InvalidQuery(why) => format!("consulta no válida: {}", phrase(why)),
            ApiError::InvalidEventType => "tipo de evento desconocido; se conocen: session.status, session.qr, \
                                           session.connected, session.logged_out, message.received, message.status"
                .into(),
            ApiError::InvalidMessageType => {
                "el campo 'type' debe ser \"text\", \"image\", \"document\", \"audio\" o \"video\"".into()
            }
            ApiError::InvalidMedia(why) => format!("archivo no válido: {}", phrase(why)),
            ApiError::SessionNotFound => "no existe esa sesión".into(),
            ApiError::NotFound => "no encontrado".into(),
            ApiError::MethodNotAllowed { .. } => METHOD_NOT_ALLOWED.into(),
            ApiError::PayloadTooLarge { limit } => format!("cuerpo demasiado grande: el límite es de {limit} bytes"),
            ApiError::UnsupportedMediaType => "el tipo de contenido debe ser application/json".into(),
            ApiError::QueueFull { .. } => "la cola está llena; reintente más tarde".into(),
            ApiError::InvalidIdempotencyKey => "Idempotency-Key debe tener de 1 a 255 caracteres ASCII visibles".into(),
            ApiError::IdempotencyKeyReused => "esta Idempotency-Key ya se usó con otro cuerpo de petición".into(),
            ApiError::MessageNotFound => "no existe ese mensaje".into(),
            ApiError::ChatNotFound => "no existe ese chat".into(),
            ApiError::MediaNotStored(why) => format!("el archivo de este mensaje no se guarda: {}", phrase(why)),
            ApiError::InsufficientStorage => {
                "no queda espacio en disco: el mensaje no se pudo guardar; reintente más tarde".into()
            }
            ApiError::Forbidden(action) => format!("este token no puede {}", phrase(action)),
            ApiError::RateLimited { .. } => {
                "demasiadas peticiones con este token (RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST); reintente más tarde".into()
            }
            ApiError::TooManyAuthFailures { .. } => {
                "demasiadas autenticaciones fallidas desde esta dirección (AUTH_FAILURES_PER_MINUTE); reintente más tarde"
                    .into()
            }
            ApiError::TooManyWebSockets { limit } => {
                format!("este token ya tiene {limit} WebSockets abiertos (WS_MAX_PER_TOKEN); cierre uno antes")
            }
            ApiError::PairingCodeOutstanding => "hay un código de vinculación pendiente para esta sesión: escríbalo en el \
                teléfono, o reinicie la sesión para obtener un QR"
                .into(),
            ApiError::WebhookUrlNotAllowed => "url debe resolver solo a direcciones públicas: este token no puede enviar \
                a direcciones privadas, de loopback ni link-local"
                .into(),
            ApiError::BodyTimeout => "el cuerpo de la petición no llegó a tiempo".into(),
            ApiError::Timeout => {
                "la petición tardó demasiado; reintente (con la misma Idempotency-Key en los envíos)".into()
            }
            ApiError::SessionExists => "ya existe una sesión con ese id".into(),
            ApiError::AlreadyConnected => {
                "la sesión ya está vinculada y conectada; cierre su sesión para vincular otro teléfono".into()
            }
            ApiError::QrNotReady { reason } => format!("todavía no hay código QR: {reason}"),
            ApiError::Pairing(e) => match e {
                PairingError::AlreadyLinked => {
                    "la sesión ya está vinculada; cierre su sesión para vincular otro teléfono".into()
                }
                PairingError::InvalidPhone(why) => format!("número no válido para un código de vinculación: {why}"),
                PairingError::RateLimited { .. } => {
                    "WhatsApp limita los códigos de vinculación para este número; reintente más tarde".into()
                }
                PairingError::Outstanding { remaining_secs } => format!(
                    "ya hay un código de vinculación vigente para esta sesión (quedan {remaining_secs} s); escriba ese"
                ),
                PairingError::Rejected(why) => format!("WhatsApp rechazó la petición del código de vinculación: {why}"),
                PairingError::Unavailable(why) => {
                    format!("no se puede pedir un código de vinculación a WhatsApp: {why}")
                }
            },
            ApiError::SessionUnresponsive => "la sesión no respondió a tiempo; reintente".into(),
            ApiError::SettingFixed(what) => {
                format!("la configuración de este gateway fija este ajuste: {}", phrase(what))
            }
            ApiError::ShuttingDown => "el gateway se está apagando".into(),
            ApiError::Internal(_) => "error interno".into(),
        }
    }
}

/// The Spanish of a 405 without an [`ApiError`] (axum's own fallback).
pub(crate) const METHOD_NOT_ALLOWED: &str = "método no permitido";

/// The Spanish of a fragment a caller passed in English; the fragment itself when unknown.
pub(super) fn phrase(english: &str) -> &str {
    match english {
        // What a field must be (`WrongFieldType`).
        "a string" => "un texto",
        "a boolean" => "un booleano (true o false)",
        "true or false" => "true o false",
        "a phone number" => "un número de teléfono",
        "a JSON object" | "an object" => "un objeto JSON",
        "an array of event names" => "una lista de nombres de eventos",
        "an array of phone numbers" => "una lista de números de teléfono",
        "an array of session ids" => "una lista de ids de sesión",
        "at most 16 KiB of JSON" => "como máximo 16 KiB de JSON",
        "at most 256 characters" => "como máximo 256 caracteres",
        "\"standard\", \"seed000\" or \"seed002\"" => "\"standard\", \"seed000\" o \"seed002\"",
        // What a token may not do (`Forbidden`).
        "read sessions (needs sessions:read)" => "leer sesiones (necesita sessions:read)",
        "manage or link sessions (needs sessions:write)" => "gestionar ni vincular sesiones (necesita sessions:write)",
        "send messages (needs messages:send)" => "enviar mensajes (necesita messages:send)",
        "read messages (needs messages:read)" => "leer mensajes (necesita messages:read)",
        "manage webhooks (needs webhooks:write)" => "gestionar webhooks (necesita webhooks:write)",
        "read metrics (needs metrics:read)" => "leer métricas (necesita metrics:read)",
        "do this (needs admin)" => "hacer esto (necesita admin)",
        "act on this session" => "actuar sobre esta sesión",
        "send on this session" => "enviar por esta sesión",
        "register a webhook for this session" => "registrar un webhook para esta sesión",
        "act without naming a session (this token is not bound to one)" => {
            "actuar sin nombrar una sesión (este token no está ligado a una)"
        }
        // What the gateway does instead of a setting a sibling service had (`SettingFixed`).
        "received files are always downloaded, up to INBOUND_MEDIA_MAX_BYTES" => {
            "los archivos recibidos se descargan siempre, hasta INBOUND_MEDIA_MAX_BYTES"
        }
        // Why a query is wrong (`InvalidQuery`).
        "limit and before are numbers" => "limit y before son números",
        "direction must be \"in\" or \"out\"" => "direction debe ser \"in\" u \"out\"",
        "before is a cursor from `next`" => "before es un cursor sacado de `next`",
        "limit must be 1 to 200" => "limit debe ir de 1 a 200",
        "limit must be 1 to 500" => "limit debe ir de 1 a 500",
        "limit is a number" => "limit es un número",
        "status is pending, delivered or failed" => "status es pending, delivered o failed",
        "the delivery id is a number" => "el id de la entrega es un número",
        // Why media is refused (`InvalidMedia`).
        "no multipart boundary" => "falta el boundary del multipart",
        "give media.base64 or media.dataUrl, not both" => "dé media.base64 o media.dataUrl, no ambos",
        "media is not valid base64" => "media no es base64 válido",
        "malformed multipart body" => "cuerpo multipart mal formado",
        // Why a received file is not kept (`MediaNotStored`).
        "the message has no file" => "el mensaje no tiene archivo",
        "the file is gone" => "el archivo ya no está",
        "the session disconnected before the file was downloaded" => {
            "la sesión se desconectó antes de descargar el archivo"
        }
        "cannot store the file" => "no se pudo guardar el archivo",
        // The routes and events of seeds 003 and 004 (`api::compat`).
        "use this route (it needs a token bound to one session)" => {
            "usar esta ruta (necesita un token ligado a una sola sesión)"
        }
        "conversationId is required" => "falta conversationId",
        "at most 4096 characters" => "como máximo 4096 caracteres",
        "empty (attachments are not supported)" => "vacío (no se admiten adjuntos)",
        other => other,
    }
}
