//! Media given inline in a JSON body: base64, alone or in a data URL. One parser for every route,
//! as lenient as Node's `Buffer.from(text, 'base64')` where that is safe:
//!
//! * the standard and the URL-safe alphabets (even mixed), padding or none, and whitespace or
//!   line breaks anywhere (base64 wrapped at 76 columns);
//! * non-canonical trailing bits in the last character;
//! * any base64 data URL: `data:application/pdf;base64,…`, `data:;base64,…`,
//!   `data:application/octet-stream;name=factura.pdf;base64,…` (what a browser's FileReader
//!   produces for an untyped file).
//!
//! What it still refuses: other characters, a length that cannot be base64 (one character past
//! a group of four), data URLs that are not base64, and more decoded bytes than the limit, which
//! is checked from the encoded length before anything is decoded.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;

/// Standard alphabet, no padding (it is removed first), trailing bits ignored.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Decoded inline media.
#[derive(Clone, PartialEq, Eq)]
pub struct InlineMedia {
    /// The bytes.
    pub bytes: Bytes,
    /// The data URL's media type, lowercased without parameters (`application/pdf`); `None`
    /// for bare base64 or a data URL without one (`data:;base64,`).
    pub declared_type: Option<String>,
    /// The data URL's `name=` parameter, if any (as FileReader writes it; not decoded further).
    pub declared_name: Option<String>,
}

impl std::fmt::Debug for InlineMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineMedia")
            .field("len", &self.bytes.len())
            .field("declared_type", &self.declared_type)
            .field("declared_name", &self.declared_name)
            .finish()
    }
}

/// Why inline media cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Nothing left after the data URL header, whitespace and padding.
    #[error("the media is empty")]
    Empty,
    /// Not base64, or a data URL that is not `;base64,`.
    #[error("the media is not valid base64")]
    InvalidBase64,
    /// Would decode to more than `limit` bytes.
    #[error("the media exceeds {limit} bytes")]
    TooLarge {
        /// The limit in decoded bytes.
        limit: usize,
    },
}

/// Decodes `encoded` (see the module docs) to at most `limit` bytes.
pub fn decode_inline(encoded: &str, limit: usize) -> Result<InlineMedia, MediaError> {
    let trimmed = encoded.trim_ascii();
    let (payload, declared_type, declared_name) = match split_data_url(trimmed) {
        Some(url) => url?,
        None => (trimmed, None, None),
    };
    // The common case, standard base64 in one line: decoded in place, no copy.
    let unpadded = payload.trim_end_matches(|c: char| c == '=' || c.is_ascii_whitespace());
    if unpadded.is_empty() {
        return Err(MediaError::Empty);
    }
    if unpadded.len() / 4 * 3 <= limit
        && let Ok(bytes) = LENIENT.decode(unpadded)
    {
        if bytes.len() > limit {
            return Err(MediaError::TooLarge { limit });
        }
        return Ok(InlineMedia { bytes: Bytes::from(bytes), declared_type, declared_name });
    }
    // Otherwise: the characters that carry data, without whitespace and padding, in the standard
    // alphabet; the size is checked from their count before anything is decoded.
    let significant = payload.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'=').count();
    if significant * 3 / 4 > limit {
        return Err(MediaError::TooLarge { limit });
    }
    let mut compact = Vec::with_capacity(significant);
    let mut padding_seen = false;
    for b in payload.bytes() {
        match b {
            b if b.is_ascii_whitespace() => {}
            b'=' => padding_seen = true,
            // Data after padding is not base64 (Node would silently drop it; we refuse).
            _ if padding_seen => return Err(MediaError::InvalidBase64),
            b'-' => compact.push(b'+'),
            b'_' => compact.push(b'/'),
            other => compact.push(other),
        }
    }
    let bytes = LENIENT.decode(&compact).map_err(|_| MediaError::InvalidBase64)?;
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    Ok(InlineMedia { bytes: Bytes::from(bytes), declared_type, declared_name })
}

type DataUrl<'a> = (&'a str, Option<String>, Option<String>);

/// `data:[<type>][;param=value]*;base64,<payload>` → (payload, type, name). `None` when `text`
/// is not a data URL at all; an error when it is one but not base64.
fn split_data_url(text: &str) -> Option<Result<DataUrl<'_>, MediaError>> {
    let head = text.get(..5)?;
    if !head.eq_ignore_ascii_case("data:") {
        return None;
    }
    let rest = &text[5..];
    let Some((header, payload)) = rest.split_once(',') else {
        return Some(Err(MediaError::InvalidBase64));
    };
    let mut parts = header.split(';').map(str::trim);
    let media_type = parts.next().unwrap_or_default().to_ascii_lowercase();
    let mut base64 = false;
    let mut name = None;
    for part in parts {
        if part.eq_ignore_ascii_case("base64") {
            base64 = true;
        } else if let Some((key, value)) = part.split_once('=')
            && key.trim().eq_ignore_ascii_case("name")
        {
            let value = value.trim().trim_matches('"');
            name = (!value.is_empty()).then(|| value.to_owned());
        }
    }
    if !base64 {
        return Some(Err(MediaError::InvalidBase64));
    }
    let declared = (!media_type.is_empty()).then_some(media_type);
    Some(Ok((payload, declared, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &[u8] = b"%PDF-1.4\n\xfb\xff\xfe binary \x00\x01 end";

    fn std64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn decode(text: &str) -> Result<InlineMedia, MediaError> {
        decode_inline(text, 1 << 20)
    }

    #[test]
    fn what_node_takes_decodes_to_the_same_bytes() {
        let padded = std64(DATA);
        let urlsafe = padded.replace('+', "-").replace('/', "_");
        let unpadded = padded.trim_end_matches('=').to_owned();
        let wrapped: String =
            padded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\r\n");
        assert!(padded.ends_with('=') && urlsafe != padded, "the sample exercises padding and both alphabets");
        for text in [&padded, &urlsafe, &unpadded, &wrapped, &format!("  {wrapped}\n")] {
            let media = decode(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(media.bytes.as_ref(), DATA, "{text:?}");
            assert_eq!((media.declared_type, media.declared_name), (None, None));
        }
    }

    #[test]
    fn any_base64_data_url_is_taken_with_its_type_and_name() {
        let payload = std64(DATA);
        let cases = [
            ("data:application/pdf;base64,", Some("application/pdf"), None),
            ("DATA:Application/PDF;BASE64,", Some("application/pdf"), None),
            ("data:application/octet-stream;base64,", Some("application/octet-stream"), None),
            ("data:;base64,", None, None),
            (
                "data:application/x-pdf;name=factura%20001.pdf;base64,",
                Some("application/x-pdf"),
                Some("factura%20001.pdf"),
            ),
        ];
        for (prefix, declared_type, declared_name) in cases {
            let media = decode(&format!("{prefix}{payload}")).unwrap_or_else(|e| panic!("{prefix}: {e}"));
            assert_eq!(media.bytes.as_ref(), DATA, "{prefix}");
            assert_eq!(media.declared_type.as_deref(), declared_type, "{prefix}");
            assert_eq!(media.declared_name.as_deref(), declared_name, "{prefix}");
        }
    }

    #[test]
    fn what_is_not_base64_is_refused() {
        for bad in [
            "%%%%",
            "JVBER i0x!",
            "JVBERi0xL",                         // one character past a group of four
            "JVBERi0x=QUJD",                     // data after padding
            "data:application/pdf,JVBERi0xLjQ=", // a data URL, but not base64
            "data:application/pdf;base64",       // no comma
        ] {
            assert_eq!(decode(bad), Err(MediaError::InvalidBase64), "{bad:?}");
        }
        for empty in ["", "  \n ", "data:;base64,", "===", "data:application/pdf;base64,\r\n"] {
            assert_eq!(decode(empty), Err(MediaError::Empty), "{empty:?}");
        }
    }

    #[test]
    fn the_limit_is_checked_exactly_before_decoding() {
        let exact = vec![7u8; 100];
        assert!(decode_inline(&std64(&exact), 100).is_ok());
        assert!(decode_inline(std64(&exact).trim_end_matches('='), 100).is_ok());
        assert_eq!(decode_inline(&std64(&[7u8; 101]), 100), Err(MediaError::TooLarge { limit: 100 }));
        // Refused by size alone: nothing was decoded.
        assert_eq!(decode_inline(&"!".repeat(1000), 100), Err(MediaError::TooLarge { limit: 100 }));
    }

    #[test]
    fn trailing_bits_are_ignored() {
        // "JVBERi0xLh==" has non-zero unused bits in its last character; it is still "%PDF-1.".
        assert_eq!(decode("JVBERi0xLh==").unwrap().bytes.as_ref(), b"%PDF-1.");
    }
}
