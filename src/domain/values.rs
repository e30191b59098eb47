//! Validated values of a send request: [`PhoneNumber`], [`PdfDocument`] and [`FileName`].
//!
//! Each type is parsed once at the HTTP edge; past that point the queue and the upstream
//! session only see values that are known to be well formed.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::media::MediaError;

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
     ('+', spaces, dashes, dots and parentheses are ignored; a WhatsApp JID such as \
     51987654321@s.whatsapp.net is taken too)"
)]
pub struct InvalidPhone;

/// The user JID servers of a phone number: WhatsApp's, and the one whatsapp-web.js users write.
const PHONE_JID_SERVERS: [&str; 2] = ["@s.whatsapp.net", "@c.us"];

impl PhoneNumber {
    /// Accepts the ways people write numbers: `51987654321`, `+51 987 654 321`,
    /// `+51 (987) 654-321`, `51.987.654.321`, and a user JID, `51987654321@s.whatsapp.net` or
    /// `51987654321@c.us`. One leading `+`, spaces, dashes, dots and parentheses are dropped,
    /// then 7–15 ASCII digits must remain. A `+` anywhere else is rejected, and so is a JID of
    /// a device (`…:3@s.whatsapp.net`) or of another server (a group, a LID).
    pub fn parse(raw: &str) -> Result<PhoneNumber, InvalidPhone> {
        let trimmed = raw.trim();
        let user = PHONE_JID_SERVERS
            .iter()
            .find_map(|server| {
                let split = trimmed.len().checked_sub(server.len())?;
                let (user, tail) = (trimmed.get(..split)?, trimmed.get(split..)?);
                tail.eq_ignore_ascii_case(server).then_some(user)
            })
            .unwrap_or(trimmed);
        let rest = user.strip_prefix('+').unwrap_or(user);
        let digits: String = rest.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
        let valid =
            (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && has_country_code(&digits);
        if valid { Ok(PhoneNumber(digits)) } else { Err(InvalidPhone) }
    }

    /// The bare digits, e.g. `51987654321`.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

/// Country codes of two digits (ITU-T E.164 assignments); zones 1 and 7 take one digit.
const COUNTRY_CODES_2: &[&str] = &[
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47", "48", "49", "51",
    "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65", "66", "81", "82", "84", "86", "90",
    "91", "92", "93", "94", "95", "98",
];

/// Country codes of three digits, as ranges (first, last) of assigned codes.
const COUNTRY_CODES_3: &[(u16, u16)] = &[
    (211, 213),
    (216, 216),
    (218, 218),
    (220, 258),
    (260, 269),
    (290, 291),
    (297, 299),
    (350, 359),
    (370, 383),
    (385, 387),
    (389, 389),
    (420, 421),
    (423, 423),
    (500, 509),
    (590, 599),
    (670, 670),
    (672, 683),
    (685, 692),
    (800, 800),
    (808, 808),
    (850, 850),
    (852, 853),
    (855, 856),
    (870, 870),
    (878, 878),
    (880, 883),
    (886, 886),
    (888, 888),
    (960, 968),
    (970, 977),
    (979, 979),
    (992, 996),
    (998, 998),
];

/// Whether `digits` start with a country code: `0000000` or `295…` name no country, so no
/// WhatsApp account can have them.
fn has_country_code(digits: &str) -> bool {
    if digits.starts_with(['1', '7']) {
        return true;
    }
    if digits.get(..2).is_some_and(|two| COUNTRY_CODES_2.contains(&two)) {
        return true;
    }
    digits
        .get(..3)
        .and_then(|three| three.parse::<u16>().ok())
        .is_some_and(|code| COUNTRY_CODES_3.iter().any(|(first, last)| (*first..=*last).contains(&code)))
}

/// `raw` without bidirectional-control, zero-width and control characters, trimmed: what a
/// person-facing label (a session's description) may hold, as file names already are.
pub fn visible_text(raw: &str) -> String {
    let visible: String = raw.chars().filter(|c| !is_invisible_format(*c) && !c.is_control()).collect();
    visible.trim().to_owned()
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
    /// Not base64 (see [`decode_inline`](super::media::decode_inline)).
    #[error("the PDF is not valid base64")]
    InvalidBase64,
    /// Decodes, but has no `%PDF-` in its first [`PDF_HEADER_WINDOW`] bytes, or its data URL
    /// says it is another type.
    #[error("the document is not a PDF")]
    NotAPdf,
    /// Would decode to more than `limit` bytes.
    #[error("the PDF exceeds {limit} bytes")]
    TooLarge {
        /// The limit in decoded bytes.
        limit: usize,
    },
}

const PDF_MAGIC: &[u8] = b"%PDF-";

/// How far into a file PDF readers look for the `%PDF-` header: some generators write a byte
/// order mark, whitespace or a few other bytes first, and readers open those files all the same.
pub const PDF_HEADER_WINDOW: usize = 1024;

/// Whether `bytes` are a PDF as readers see it: `%PDF-` lies within the first
/// [`PDF_HEADER_WINDOW`] bytes. The bytes are never changed: what comes before the header is
/// sent as it came.
pub fn has_pdf_header(bytes: &[u8]) -> bool {
    let window = bytes.get(..PDF_HEADER_WINDOW).unwrap_or(bytes);
    window.windows(PDF_MAGIC.len()).any(|w| w == PDF_MAGIC)
}

/// Data URL types that may carry a PDF: the PDF types, and the generic ones a browser or an HTTP
/// library gives a file it did not type.
const PDF_COMPATIBLE_TYPES: &[&str] = &[
    "application/pdf",
    "application/x-pdf",
    "application/acrobat",
    "applications/vnd.pdf",
    "text/pdf",
    "text/x-pdf",
    "application/octet-stream",
    "binary/octet-stream",
    "application/binary",
    "application/download",
    "application/force-download",
    "application/x-download",
];

impl PdfDocument {
    /// Decodes a base64 PDF of at most [`MAX_PDF_BYTES`]; see [`PdfDocument::from_base64_with_limit`].
    pub fn from_base64(encoded: &str) -> Result<PdfDocument, PdfError> {
        Self::from_base64_with_limit(encoded, MAX_PDF_BYTES)
    }

    /// Decodes base64 as [`decode_inline`](super::media::decode_inline) does (either alphabet,
    /// padding optional, whitespace ignored, any base64 data URL); the bytes must be a PDF
    /// ([`has_pdf_header`]), and a data URL's type must not say it is something else (`image/png`).
    pub fn from_base64_with_limit(encoded: &str, limit: usize) -> Result<PdfDocument, PdfError> {
        let media = super::media::decode_inline(encoded, limit).map_err(|e| match e {
            MediaError::Empty => PdfError::Empty,
            MediaError::InvalidBase64 => PdfError::InvalidBase64,
            MediaError::TooLarge { limit } => PdfError::TooLarge { limit },
        })?;
        if media.declared_type.as_deref().is_some_and(|t| !PDF_COMPATIBLE_TYPES.contains(&t)) {
            return Err(PdfError::NotAPdf);
        }
        Self::from_bytes(media.bytes)
    }

    /// Wraps bytes that are already known to be a PDF (for tests and internal callers).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Result<PdfDocument, PdfError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(PdfError::Empty);
        }
        if !has_pdf_header(&bytes) {
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

impl fmt::Debug for PdfDocument {
    /// Prints the size only: a dump of a 16 MiB document helps nobody in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PdfDocument").field("len", &self.bytes.len()).finish()
    }
}

// ---------------------------------------------------------------------------------------------

/// The name the recipient sees for a document.
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

/// Characters that change how a name is shown without being seen: the bidirectional overrides,
/// embeddings and isolates (`Factura\u{202e}gnp.pdf` shows as "Facturafdp.png"), and the
/// zero-width ones. They are removed from file names.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{061c}' | '\u{feff}')
}

impl FileName {
    /// Drops bidirectional-control and zero-width characters, trims, and rejects empty names,
    /// `/`, `\`, control characters and names over 255 characters.
    pub fn parse(raw: &str) -> Result<FileName, InvalidFileName> {
        let visible: String = raw.chars().filter(|c| !is_invisible_format(*c)).collect();
        let name = visible.trim();
        if name.is_empty() {
            return Err(InvalidFileName::Empty);
        }
        if name.contains(['/', '\\']) {
            return Err(InvalidFileName::PathSeparator);
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidFileName::ControlChar);
        }
        if name.chars().count() > MAX_FILE_NAME_CHARS {
            return Err(InvalidFileName::TooLong);
        }
        Ok(FileName(name.to_owned()))
    }

    /// As [`FileName::parse`], then appends `.pdf` unless the name already ends in `.pdf` (any
    /// case): the rule of `POST /api/send-pdf`.
    pub fn parse_pdf(raw: &str) -> Result<FileName, InvalidFileName> {
        let FileName(name) = FileName::parse(raw)?;
        let has_pdf_ext = name
            .len()
            .checked_sub(4)
            .and_then(|start| name.get(start..))
            .is_some_and(|ext| ext.eq_ignore_ascii_case(".pdf"));
        Ok(FileName(if has_pdf_ext { name } else { format!("{name}.pdf") }))
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
    use base64::Engine as _;

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
    fn phone_takes_the_usual_formatting_and_user_jids() {
        for raw in [
            "+51 (987) 654-321",
            "(51)987654321",
            "51.987.654.321",
            "51987654321@s.whatsapp.net",
            "51987654321@C.US",
            " 51987654321@s.whatsapp.net ",
        ] {
            assert_eq!(PhoneNumber::parse(raw).map(|p| p.digits().to_owned()), Ok("51987654321".into()), "{raw:?}");
        }
    }

    #[test]
    fn phone_needs_a_country_code() {
        for raw in ["0000000", "0051987654321", "2959999999", "28012345678", "42212345678", "99912345678", "8091234567"]
        {
            assert_eq!(PhoneNumber::parse(raw), Err(InvalidPhone), "{raw:?}");
        }
        for raw in [
            "15551234567",   // NANP
            "79161234567",   // Russia
            "447911123456",  // UK
            "5511987654321", // Brazil
            "59171234567",   // Bolivia (3 digits)
            "22507123456",   // Côte d'Ivoire
            "8613800138000", // China
            "97150123456",   // UAE
            "998901234567",  // Uzbekistan
        ] {
            assert!(PhoneNumber::parse(raw).is_ok(), "{raw:?}");
        }
    }

    #[test]
    fn visible_text_drops_invisible_and_control_characters() {
        assert_eq!(visible_text(" Tienda\u{202e}lima\u{200b} \u{7}"), "Tiendalima");
        assert_eq!(visible_text("Caja 2 — Lima"), "Caja 2 — Lima");
    }

    #[test]
    fn phone_rejects_other_characters() {
        for raw in [
            "",
            "+",
            "5198765432a",
            "51+987654321",
            "++51987654321",
            "５１９８７６５４３２１",
            "51987654321:3@s.whatsapp.net",
            "120363000000000000@g.us",
            "200000000000001@lid",
            "@s.whatsapp.net",
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
        for bad in ["%%%%", "JVBERi0xL", "JVBER i0x!", "data:application/pdf,JVBERi0xLjQ="] {
            assert_eq!(PdfDocument::from_base64(bad), Err(PdfError::InvalidBase64), "{bad:?}");
        }
    }

    #[test]
    fn pdf_takes_what_node_takes() {
        let encoded = b64(PDF);
        let urlsafe = b64(b"%PDF-\xfb\xff\xfe").replace('+', "-").replace('/', "_");
        assert_eq!(PdfDocument::from_base64(&urlsafe).unwrap().bytes().as_ref(), b"%PDF-\xfb\xff\xfe");
        for prefix in
            ["data:application/octet-stream;base64,", "data:;base64,", "data:application/x-pdf;name=f.pdf;base64,"]
        {
            let doc = PdfDocument::from_base64(&format!("{prefix}{}", encoded.trim_end_matches('='))).unwrap();
            assert_eq!(doc.bytes().as_ref(), PDF, "{prefix}");
        }
    }

    #[test]
    fn pdf_whose_data_url_names_another_type_is_not_a_pdf() {
        for prefix in ["data:text/plain;base64,", "data:image/png;base64,"] {
            assert_eq!(PdfDocument::from_base64(&format!("{prefix}{}", b64(PDF))), Err(PdfError::NotAPdf), "{prefix}");
        }
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
    fn a_pdf_header_anywhere_in_the_first_kib_is_a_pdf_and_kept_as_it_came() {
        let with = |prefix: &[u8]| [prefix, PDF].concat();
        for prefix in [&b"\xef\xbb\xbf"[..], b"\r\n  \t", b"\0\0\0\0", &[b'x'; PDF_HEADER_WINDOW - 5]] {
            let bytes = with(prefix);
            let doc =
                PdfDocument::from_base64(&b64(&bytes)).unwrap_or_else(|e| panic!("{} bytes first: {e}", prefix.len()));
            assert_eq!(doc.bytes().as_ref(), bytes.as_slice(), "unchanged");
        }
        // The header must lie within the window, all five bytes of it.
        for late in [PDF_HEADER_WINDOW - 4, PDF_HEADER_WINDOW, 4096] {
            assert_eq!(PdfDocument::from_base64(&b64(&with(&vec![b' '; late]))), Err(PdfError::NotAPdf), "{late}");
        }
        assert!(has_pdf_header(b"%PDF-"));
        assert!(!has_pdf_header(b"%PDF"));
        assert!(!has_pdf_header(b""));
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
        assert_eq!(FileName::parse_pdf("Factura 001").unwrap().as_str(), "Factura 001.pdf");
        assert_eq!(FileName::parse_pdf("boleta.PDF").unwrap().as_str(), "boleta.PDF");
        assert_eq!(FileName::parse_pdf("  recibo.pdf  ").unwrap().as_str(), "recibo.pdf");
        assert_eq!(FileName::parse_pdf("informe.docx").unwrap().as_str(), "informe.docx.pdf");
        assert_eq!(FileName::parse_pdf("año.pdf").unwrap().as_str(), "año.pdf");
        assert_eq!(FileName::parse("informe.docx").unwrap().as_str(), "informe.docx", "documents keep their names");
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
        assert_eq!(FileName::parse_pdf(&"a".repeat(255)).unwrap().as_str().len(), 259);
        assert_eq!(FileName::parse(&"a".repeat(256)), Err(InvalidFileName::TooLong));
        assert!(FileName::parse(&"ñ".repeat(255)).is_ok());
        assert_eq!(FileName::parse(&"ñ".repeat(256)), Err(InvalidFileName::TooLong));
    }

    #[test]
    fn file_names_lose_their_invisible_characters() {
        assert_eq!(FileName::parse("Factura\u{202e}gnp.pdf").unwrap().as_str(), "Facturagnp.pdf");
        assert_eq!(FileName::parse("\u{feff}Fac\u{200b}tura\u{2066}.pdf\u{2069}").unwrap().as_str(), "Factura.pdf");
        assert_eq!(FileName::parse("\u{202e}\u{200d}"), Err(InvalidFileName::Empty));
    }
}
