//! Validated values of a send request: [`PhoneNumber`], [`PdfDocument`] and [`FileName`].
//!
//! Each type is parsed once at the HTTP edge; past that point the queue and the upstream
//! session only see values that are known to be well formed.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest PDF we accept, decoded (WhatsApp's document limit is far higher; our body limit isn't).
pub const MAX_PDF_BYTES: usize = 16 * 1024 * 1024;

/// Name given to a document when the request does not say (as in the Node service).
pub const DEFAULT_FILE_NAME: &str = "Comprobante.pdf";

/// Longest accepted file name, in characters, as given (before `.pdf` is added).
pub const MAX_FILE_NAME_CHARS: usize = 255;

// ---------------------------------------------------------------------------------------------

/// A phone number in international format without `+`: 7 to 15 ASCII digits (E.164 allows 15).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

/// Why a string is not a [`PhoneNumber`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid phone number: expected 7 to 15 digits with country code, e.g. 51987654321 \
     ('+', spaces and dashes are ignored)"
)]
pub struct InvalidPhone;

impl PhoneNumber {
    /// Accepts `51987654321`, `+51 987 654 321` or `+51-987-654-321`: one leading `+`, spaces and
    /// dashes are dropped, then 7–15 ASCII digits must remain. A `+` anywhere else is rejected.
    pub fn parse(raw: &str) -> Result<PhoneNumber, InvalidPhone> {
        let trimmed = raw.trim();
        let rest = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let digits: String = rest.chars().filter(|c| *c != ' ' && *c != '-').collect();
        let valid = (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        if valid { Ok(PhoneNumber(digits)) } else { Err(InvalidPhone) }
    }

    /// The bare digits, e.g. `51987654321`.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        PhoneNumber::parse(&raw).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------

/// The bytes of a PDF file (cheap to clone: [`Bytes`]).
#[derive(Clone, PartialEq, Eq)]
pub struct PdfDocument {
    bytes: Bytes,
}

/// Why a base64 payload is not an acceptable [`PdfDocument`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PdfError {
    /// Nothing left after removing the `data:` prefix and whitespace.
    #[error("the PDF is empty")]
    Empty,
    /// Not valid standard (padded) base64.
    #[error("the PDF is not valid base64")]
    InvalidBase64,
    /// Decodes, but does not start with `%PDF-`.
    #[error("the document is not a PDF")]
    NotAPdf,
    /// Would decode to more than `limit` bytes.
    #[error("the PDF exceeds {limit} bytes")]
    TooLarge {
        /// The limit in decoded bytes.
        limit: usize,
    },
}

/// Standard padded base64 that ignores the unused bits of the last character, as most
/// encoders and decoders do: a client's non-canonical encoder must not make a PDF "invalid".
const LENIENT: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true));

const DATA_URL_PREFIX: &str = "data:application/pdf;base64,";
const PDF_MAGIC: &[u8] = b"%PDF-";

impl PdfDocument {
    /// Decodes a base64 PDF of at most [`MAX_PDF_BYTES`]; see [`PdfDocument::from_base64_with_limit`].
    pub fn from_base64(encoded: &str) -> Result<PdfDocument, PdfError> {
        Self::from_base64_with_limit(encoded, MAX_PDF_BYTES)
    }

    /// Decodes standard, padded base64, after dropping an optional (case-insensitive)
    /// `data:application/pdf;base64,` prefix and any ASCII whitespace (many clients wrap lines at
    /// 76 columns). The size is checked from the encoded length before anything is allocated.
    pub fn from_base64_with_limit(encoded: &str, limit: usize) -> Result<PdfDocument, PdfError> {
        let trimmed = encoded.trim_ascii();
        let payload = match trimmed.split_at_checked(DATA_URL_PREFIX.len()) {
            Some((head, tail)) if head.eq_ignore_ascii_case(DATA_URL_PREFIX) => tail,
            _ => trimmed,
        };

        let significant = payload.bytes().filter(|b| !b.is_ascii_whitespace()).count();
        if significant == 0 {
            return Err(PdfError::Empty);
        }
        if estimated_decoded_len(payload, significant) > limit {
            return Err(PdfError::TooLarge { limit });
        }

        let compact: Cow<'_, str> = if significant == payload.len() {
            Cow::Borrowed(payload)
        } else {
            Cow::Owned(payload.chars().filter(|c| !c.is_ascii_whitespace()).collect())
        };
        let bytes = LENIENT.decode(compact.as_bytes()).map_err(|_| PdfError::InvalidBase64)?;
        if bytes.is_empty() {
            return Err(PdfError::Empty);
        }
        if !bytes.starts_with(PDF_MAGIC) {
            return Err(PdfError::NotAPdf);
        }
        Ok(PdfDocument { bytes: Bytes::from(bytes) })
    }

    /// Wraps bytes that are already known to be a PDF (for tests and internal callers).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Result<PdfDocument, PdfError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(PdfError::Empty);
        }
        if !bytes.starts_with(PDF_MAGIC) {
            return Err(PdfError::NotAPdf);
        }
        Ok(PdfDocument { bytes })
    }

    /// The raw PDF bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false for a parsed document; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Exact decoded size of well-formed padded base64 with `significant` non-whitespace characters;
/// an upper bound otherwise (malformed input is rejected by the decoder anyway).
fn estimated_decoded_len(payload: &str, significant: usize) -> usize {
    let padding = payload.bytes().rev().filter(|b| !b.is_ascii_whitespace()).take(2).take_while(|b| *b == b'=').count();
    (significant.div_ceil(4) * 3).saturating_sub(padding)
}

impl fmt::Debug for PdfDocument {
    /// Prints the size only: a dump of a 16 MiB document helps nobody in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PdfDocument").field("len", &self.bytes.len()).finish()
    }
}

// ---------------------------------------------------------------------------------------------

/// The name the recipient sees for the document; always ends in `.pdf`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileName(String);

/// Why a string is not a [`FileName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFileName {
    /// Empty or only whitespace.
    #[error("the file name is empty")]
    Empty,
    /// Contains `/` or `\`.
    #[error("the file name must not contain '/' or '\\'")]
    PathSeparator,
    /// Contains a control character (e.g. a newline).
    #[error("the file name must not contain control characters")]
    ControlChar,
    /// Longer than [`MAX_FILE_NAME_CHARS`].
    #[error("the file name is longer than 255 characters")]
    TooLong,
}

impl FileName {
    /// Trims, rejects empty names, `/`, `\`, control characters and names over 255 characters,
    /// and appends `.pdf` unless the name already ends in `.pdf` (any case).
    pub fn parse(raw: &str) -> Result<FileName, InvalidFileName> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(InvalidFileName::Empty);
        }
        if name.contains(['/', '\\']) {
            return Err(InvalidFileName::PathSeparator);
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidFileName::ControlChar);
        }
        let has_pdf_ext = name
            .len()
            .checked_sub(4)
            .and_then(|start| name.get(start..))
            .is_some_and(|ext| ext.eq_ignore_ascii_case(".pdf"));
        if name.chars().count() > MAX_FILE_NAME_CHARS {
            return Err(InvalidFileName::TooLong);
        }
        let name = if has_pdf_ext { name.to_owned() } else { format!("{name}.pdf") };
        Ok(FileName(name))
    }

    /// The file name, e.g. `Comprobante.pdf`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for FileName {
    /// `Comprobante.pdf`, the Node service's default.
    fn default() -> Self {
        FileName(DEFAULT_FILE_NAME.to_owned())
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PDF: &[u8] = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n%%EOF\n";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    // --- PhoneNumber ---

    #[test]
    fn phone_strips_plus_spaces_and_dashes() {
        for raw in ["51987654321", "+51987654321", "+51 987 654 321", "51-987-654-321", " +51 987-654-321 "] {
            assert_eq!(PhoneNumber::parse(raw).unwrap().digits(), "51987654321", "{raw:?}");
        }
    }

    #[test]
    fn phone_length_bounds() {
        assert!(PhoneNumber::parse("123456").is_err()); // 6
        assert!(PhoneNumber::parse("1234567").is_ok()); // 7
        assert!(PhoneNumber::parse("123456789012345").is_ok()); // 15
        assert!(PhoneNumber::parse("1234567890123456").is_err()); // 16
    }

    #[test]
    fn phone_rejects_other_characters() {
        for raw in [
            "",
            "+",
            "5198765432a",
            "(51)987654321",
            "51.987.654.321",
            "51+987654321",
            "++51987654321",
            "５１９８７６５４３２１",
        ] {
            assert_eq!(PhoneNumber::parse(raw), Err(InvalidPhone), "{raw:?}");
        }
    }

    #[test]
    fn phone_serde() {
        let p: PhoneNumber = serde_json::from_str("\"+51 987654321\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"51987654321\"");
        assert!(serde_json::from_str::<PhoneNumber>("\"12\"").is_err());
    }

    // --- PdfDocument ---

    #[test]
    fn pdf_plain_base64() {
        let doc = PdfDocument::from_base64(&b64(PDF)).unwrap();
        assert_eq!(doc.bytes().as_ref(), PDF);
        assert_eq!(doc.len(), PDF.len());
    }

    #[test]
    fn pdf_data_url_prefix_and_wrapped_lines() {
        let encoded = b64(PDF);
        let wrapped: String =
            encoded.as_bytes().chunks(8).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\r\n");
        for input in [
            format!("data:application/pdf;base64,{encoded}"),
            format!("DATA:Application/PDF;BASE64,{encoded}"),
            format!("  data:application/pdf;base64,{wrapped}\n"),
            format!("{wrapped}\n"),
        ] {
            let doc = PdfDocument::from_base64(&input).unwrap();
            assert_eq!(doc.bytes().as_ref(), PDF);
        }
    }

    #[test]
    fn pdf_rejects_bad_base64() {
        for bad in ["%%%%", "JVBERi0", "JVBERi0x=", "JVBER i0x!", "data:text/plain;base64,JVBERi0xLjQ="] {
            assert_eq!(PdfDocument::from_base64(bad), Err(PdfError::InvalidBase64), "{bad:?}");
        }
        // URL-safe alphabet is not the standard engine.
        let urlsafe = b64(b"%PDF-\xfb\xff\xfe").replace('+', "-").replace('/', "_");
        assert_eq!(PdfDocument::from_base64(&urlsafe), Err(PdfError::InvalidBase64));
    }

    #[test]
    fn pdf_rejects_non_pdf_and_empty() {
        assert_eq!(PdfDocument::from_base64(&b64(b"hello world")), Err(PdfError::NotAPdf));
        assert_eq!(PdfDocument::from_base64(&b64(b"%PDF")), Err(PdfError::NotAPdf));
        assert_eq!(PdfDocument::from_base64(""), Err(PdfError::Empty));
        assert_eq!(PdfDocument::from_base64("  \n "), Err(PdfError::Empty));
        assert_eq!(PdfDocument::from_base64("data:application/pdf;base64,"), Err(PdfError::Empty));
    }

    #[test]
    fn pdf_size_limit_is_checked_exactly_before_decoding() {
        let mut exact = PDF.to_vec();
        exact.resize(100, b' ');
        assert!(PdfDocument::from_base64_with_limit(&b64(&exact), 100).is_ok());
        exact.push(b' ');
        assert_eq!(PdfDocument::from_base64_with_limit(&b64(&exact), 100), Err(PdfError::TooLarge { limit: 100 }));
        // Rejected by size even though it is not base64 at all: no decoding happened.
        assert_eq!(PdfDocument::from_base64_with_limit(&"!".repeat(1000), 100), Err(PdfError::TooLarge { limit: 100 }));
    }

    #[test]
    fn pdf_from_bytes_and_debug_hides_content() {
        let doc = PdfDocument::from_bytes(Bytes::from_static(PDF)).unwrap();
        assert_eq!(format!("{doc:?}"), format!("PdfDocument {{ len: {} }}", PDF.len()));
        assert_eq!(PdfDocument::from_bytes(Vec::new()), Err(PdfError::Empty));
        assert_eq!(PdfDocument::from_bytes(b"GIF89a".to_vec()), Err(PdfError::NotAPdf));
    }

    // --- FileName ---

    #[test]
    fn file_name_default_and_extension() {
        assert_eq!(FileName::default().as_str(), "Comprobante.pdf");
        assert_eq!(FileName::parse("Factura 001").unwrap().as_str(), "Factura 001.pdf");
        assert_eq!(FileName::parse("boleta.PDF").unwrap().as_str(), "boleta.PDF");
        assert_eq!(FileName::parse("  recibo.pdf  ").unwrap().as_str(), "recibo.pdf");
        assert_eq!(FileName::parse("informe.docx").unwrap().as_str(), "informe.docx.pdf");
        assert_eq!(FileName::parse("año.pdf").unwrap().as_str(), "año.pdf");
    }

    #[test]
    fn file_name_rejections() {
        assert_eq!(FileName::parse(""), Err(InvalidFileName::Empty));
        assert_eq!(FileName::parse("   "), Err(InvalidFileName::Empty));
        assert_eq!(FileName::parse("../x.pdf"), Err(InvalidFileName::PathSeparator));
        assert_eq!(FileName::parse("a\\b.pdf"), Err(InvalidFileName::PathSeparator));
        assert_eq!(FileName::parse("a\nb.pdf"), Err(InvalidFileName::ControlChar));
        assert_eq!(FileName::parse("a\u{7f}.pdf"), Err(InvalidFileName::ControlChar));
    }

    #[test]
    fn file_name_length_counts_characters_as_given() {
        // The OpenAPI document says maxLength 255 (characters, as JSON Schema counts them).
        assert!(FileName::parse(&format!("{}.pdf", "a".repeat(251))).is_ok());
        assert_eq!(FileName::parse(&format!("{}.pdf", "a".repeat(252))), Err(InvalidFileName::TooLong));
        assert_eq!(FileName::parse(&"a".repeat(255)).unwrap().as_str().len(), 259);
        assert_eq!(FileName::parse(&"a".repeat(256)), Err(InvalidFileName::TooLong));
        assert!(FileName::parse(&"ñ".repeat(255)).is_ok());
        assert_eq!(FileName::parse(&"ñ".repeat(256)), Err(InvalidFileName::TooLong));
    }

    #[test]
    fn trailing_bits_of_base64_are_ignored() {
        // "JVBERi0xLh==" has non-zero unused bits in its last character; it is still "%PDF-1.".
        assert_eq!(PdfDocument::from_base64("JVBERi0xLh==").unwrap().bytes().as_ref(), b"%PDF-1.");
    }
}
