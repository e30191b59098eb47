//! The language of error messages: English, or Spanish when the request's `Accept-Language`
//! prefers it (q-values honoured). Only `message` changes; `code` is the same in both.
//!
//! An error response carries its Spanish body beside the English one (see
//! [`error::Spanish`](super::error::Spanish)); [`middleware`] picks one per request, so handlers
//! and extractors never look at the header.

use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::error::Spanish;

/// A language error messages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Language {
    /// The default.
    #[default]
    En,
    Es,
}

impl Language {
    /// The language `Accept-Language` prefers among ours: the highest q-value wins, the first
    /// listed on a tie; `es-PE` counts as `es`, `*` as whichever is not named, `q=0` as "not
    /// this one". English without the header, or when it names neither.
    pub(crate) fn preferred(headers: &HeaderMap) -> Language {
        let mut best: Option<(f32, Language)> = None;
        let mut named = [false; 2];
        let mut wildcard: Option<f32> = None;
        for value in headers.get_all(header::ACCEPT_LANGUAGE) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let Some((tag, q)) = parse_item(item) else { continue };
                let language = match tag.split('-').next().unwrap_or_default() {
                    t if t.eq_ignore_ascii_case("en") => Language::En,
                    t if t.eq_ignore_ascii_case("es") => Language::Es,
                    "*" => {
                        wildcard = Some(wildcard.map_or(q, |w: f32| w.max(q)));
                        continue;
                    }
                    _ => continue,
                };
                named[language as usize] = true;
                if q > 0.0 && best.is_none_or(|(top, _)| q > top) {
                    best = Some((q, language));
                }
            }
        }
        // `*` speaks for a language the header does not name.
        if let Some(q) = wildcard.filter(|q| *q > 0.0) {
            for language in [Language::En, Language::Es] {
                if !named[language as usize] && best.is_none_or(|(top, _)| q > top) {
                    best = Some((q, language));
                }
            }
        }
        best.map_or(Language::En, |(_, language)| language)
    }

    /// The `Content-Language` value.
    fn tag(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Es => "es",
        }
    }
}

/// `es-PE;q=0.8` → (`es-PE`, 0.8). `None` for an empty item or a malformed q-value (RFC 9110
/// §12.4.2: 0 to 1, at most three decimals).
fn parse_item(item: &str) -> Option<(&str, f32)> {
    let mut parts = item.split(';');
    let tag = parts.next()?.trim();
    if tag.is_empty() {
        return None;
    }
    let mut q = 1.0;
    for param in parts {
        let (name, value) = param.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("q") {
            let value = value.trim();
            let well_formed = value.len() <= 5
                && (value.starts_with("0") || value.starts_with("1"))
                && value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            q = value.parse::<f32>().ok().filter(|q| well_formed && (0.0..=1.0).contains(q))?;
        }
    }
    Some((tag, q))
}

/// Answers every error in the language the request prefers: a response that carries a
/// [`Spanish`] body gets it when the request prefers Spanish. Error responses say which
/// language they are in (`Content-Language`) and that it depends on the header (`Vary`).
pub(crate) async fn middleware(req: Request, next: Next) -> Response {
    let language = Language::preferred(req.headers());
    let mut response = next.run(req).await;
    let Some(Spanish(body)) = response.extensions_mut().remove::<Spanish>() else {
        return response;
    };
    if language == Language::Es {
        *response.body_mut() = body.into();
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LANGUAGE, HeaderValue::from_static(language.tag()));
    headers.append(header::VARY, HeaderValue::from_static("accept-language"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preferred(value: Option<&str>) -> Language {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(value).unwrap());
        }
        Language::preferred(&headers)
    }

    #[test]
    fn english_unless_spanish_is_preferred() {
        use Language::{En, Es};
        let cases = [
            (None, En),
            (Some(""), En),
            (Some("es"), Es),
            (Some("ES"), Es),
            (Some("es-PE,es;q=0.9"), Es),
            (Some("es-419"), Es),
            (Some("en-US,en;q=0.9"), En),
            (Some("en"), En),
            (Some("fr"), En),
            (Some("fr, es;q=0.5"), Es),
            (Some("es;q=0.8, en"), En),
            (Some("en;q=0.8, es;q=0.9"), Es),
            (Some("es, en"), Es),
            (Some("en, es"), En),
            (Some("es;q=0"), En),
            (Some("es;q=0, en;q=0"), En),
            (Some("*"), En),
            (Some("en;q=0, *"), Es),
            (Some("es;q=0.5, *;q=0.9"), En),
            (Some("de-DE, *;q=0.1, es;q=0.2"), Es),
            (Some("es;q=2"), En),
            (Some("es;q=abc, en;q=0.1"), En),
            (Some("es;q=0.900"), Es),
            (Some("es;q=0.9000"), En),
            (Some(" es-MX ; q=0.7 , en ; q=0.3 "), Es),
            (Some("esperanto"), En),
        ];
        for (header, expected) in cases {
            assert_eq!(preferred(header), expected, "{header:?}");
        }
    }

    #[test]
    fn several_headers_are_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en;q=0.5"));
        headers.append(header::ACCEPT_LANGUAGE, HeaderValue::from_static("es;q=0.6"));
        assert_eq!(Language::preferred(&headers), Language::Es);
    }
}
