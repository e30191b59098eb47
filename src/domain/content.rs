//! What an outgoing message carries: [`OutgoingContent`], a text, an image, a document, an audio
//! (a voice note when `ptt`) or a video, checked once at the edge. Media types are sniffed from
//! the bytes: a declared type that contradicts them is refused, so a recipient never gets
//! "factura.pdf" that is really an executable.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;

use super::{FileName, MAX_PDF_BYTES};

/// Longest text, in characters.
pub const MAX_TEXT_CHARS: usize = 65_536;
/// Longest caption of an image or a document, in characters (WhatsApp cuts longer ones).
pub const MAX_CAPTION_CHARS: usize = 1024;
/// Longest [`OutgoingContent::preview`] of a text, in characters (`…` included).
pub const PREVIEW_CHARS: usize = 100;
/// Largest image or document, in bytes: the same as a PDF of `POST /api/send-pdf`.
pub const MAX_MEDIA_BYTES: usize = MAX_PDF_BYTES;

/// The image types WhatsApp shows as photos.
const IMAGE_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// Declared types that say nothing about the content: the sniffed type is used instead.
const GENERIC_TYPES: [&str; 4] =
    ["application/octet-stream", "binary/octet-stream", "application/binary", "application/unknown"];

/// The kind of a message: `text`, `image`, `document`, `audio` or `video`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContentKind {
    Text,
    Image,
    Document,
    Audio,
    Video,
}

impl ContentKind {
    /// Every kind, in the order the API documents them.
    pub const ALL: [ContentKind; 5] =
        [ContentKind::Text, ContentKind::Image, ContentKind::Document, ContentKind::Audio, ContentKind::Video];

    /// The one place each kind is spelled (API, journal).
    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Text => "text",
            ContentKind::Image => "image",
            ContentKind::Document => "document",
            ContentKind::Audio => "audio",
            ContentKind::Video => "video",
        }
    }

    /// The kind spelled `text`, if any.
    pub fn parse(text: &str) -> Option<ContentKind> {
        ContentKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for ContentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A media type, `type/subtype`, lowercase, without parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MimeType(String);

impl MimeType {
    /// `Image/PNG; charset=x` → `image/png`; `None` unless it is `token/token`.
    pub fn parse(raw: &str) -> Option<MimeType> {
        let essence = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let (kind, sub) = essence.split_once('/')?;
        let token =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
        (token(kind) && token(sub)).then(|| MimeType(canonical(&essence).to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_generic(&self) -> bool {
        GENERIC_TYPES.contains(&self.0.as_str())
    }
}

/// The usual spelling of a type's aliases.
fn canonical(essence: &str) -> &str {
    match essence {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "application/x-pdf" | "application/acrobat" | "text/pdf" | "text/x-pdf" => "application/pdf",
        other => other,
    }
}

impl fmt::Display for MimeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why content was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("the text is empty")]
    EmptyText,
    #[error("the text is longer than {MAX_TEXT_CHARS} characters")]
    TextTooLong,
    #[error("the caption is longer than {MAX_CAPTION_CHARS} characters")]
    CaptionTooLong,
    /// A NUL character (U+0000): no WhatsApp client shows it, and Postgres cannot store it.
    #[error("the text or caption contains a NUL character (U+0000)")]
    NulCharacter,
    #[error("the media is empty")]
    EmptyMedia,
    #[error("the media exceeds {MAX_MEDIA_BYTES} bytes")]
    TooLarge,
    #[error("'{0}' is not a media type")]
    InvalidMimeType(String),
    /// The bytes are not a JPEG, PNG or WebP image.
    #[error("an image must be JPEG, PNG or WebP; these bytes are {found} (send it as a document)")]
    NotAnImage { found: String },
    /// Audio that is not OGG/Opus, the format WhatsApp records (and plays) voice notes in.
    #[error("audio must be OGG/Opus (what WhatsApp records voice notes in); these bytes are {found}")]
    NotOggOpus { found: String },
    /// The bytes are not an MP4 video.
    #[error("a video must be MP4; these bytes are {found} (send it as a document)")]
    NotAVideo { found: String },
    /// The declared type contradicts what the bytes are.
    #[error("the media was declared {declared} but its bytes are {found}")]
    TypeMismatch { declared: String, found: String },
}

/// What a message carries, validated.
#[derive(Clone, PartialEq, Eq)]
pub enum OutgoingContent {
    Text {
        body: String,
    },
    Image {
        bytes: Bytes,
        mimetype: MimeType,
        caption: Option<String>,
    },
    Document {
        bytes: Bytes,
        mimetype: MimeType,
        file_name: FileName,
        caption: Option<String>,
    },
    /// OGG/Opus; a voice note when `ptt`. `seconds` is read from the file.
    Audio {
        bytes: Bytes,
        mimetype: MimeType,
        ptt: bool,
        seconds: Option<u32>,
    },
    /// MP4. `seconds` is read from the file.
    Video {
        bytes: Bytes,
        mimetype: MimeType,
        caption: Option<String>,
        seconds: Option<u32>,
    },
}

impl fmt::Debug for OutgoingContent {
    /// Sizes, not contents: texts and files do not belong in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingContent")
            .field("kind", &self.kind())
            .field("len", &self.payload().len())
            .field("mimetype", &self.mimetype().map(MimeType::as_str))
            .finish_non_exhaustive()
    }
}

impl OutgoingContent {
    /// A text of 1 to [`MAX_TEXT_CHARS`] characters, not only whitespace.
    pub fn text(body: &str) -> Result<OutgoingContent, ContentError> {
        if body.trim().is_empty() {
            return Err(ContentError::EmptyText);
        }
        if body.chars().count() > MAX_TEXT_CHARS {
            return Err(ContentError::TextTooLong);
        }
        if body.contains('\0') {
            return Err(ContentError::NulCharacter);
        }
        Ok(OutgoingContent::Text { body: body.to_owned() })
    }

    /// A JPEG, PNG or WebP image, as its bytes say; a declared type must agree.
    pub fn image(bytes: Bytes, declared: Option<&str>, caption: Option<&str>) -> Result<OutgoingContent, ContentError> {
        check_size(&bytes)?;
        let sniffed = sniff(&bytes);
        let found = sniffed.as_ref().map_or("of no known type".to_owned(), |t| t.to_string());
        let Some(mimetype) = sniffed.filter(|t| IMAGE_TYPES.contains(&t.as_str())) else {
            return Err(ContentError::NotAnImage { found });
        };
        if let Some(declared) = declared_type(declared)?
            && !declared.is_generic()
            && declared != mimetype
        {
            return Err(ContentError::TypeMismatch { declared: declared.to_string(), found: mimetype.to_string() });
        }
        Ok(OutgoingContent::Image { bytes, mimetype, caption: caption_of(caption)? })
    }

    /// An OGG/Opus audio, as its bytes say (a declared type must agree), with its length read
    /// from the file; a voice note when `ptt`. Other audio formats are refused: WhatsApp shows a
    /// voice note only for OGG/Opus, and one format keeps what the recipient gets predictable.
    pub fn audio(bytes: Bytes, declared: Option<&str>, ptt: bool) -> Result<OutgoingContent, ContentError> {
        check_size(&bytes)?;
        let Some(ogg) = super::audio_video::ogg_opus(&bytes) else {
            return Err(ContentError::NotOggOpus { found: described(&bytes) });
        };
        let mimetype = MimeType(OGG.to_owned());
        if let Some(declared) = declared_type(declared)?
            && !declared.is_generic()
            && !matches!(declared.as_str(), OGG | "audio/opus" | "application/ogg")
        {
            return Err(ContentError::TypeMismatch { declared: declared.to_string(), found: mimetype.to_string() });
        }
        Ok(OutgoingContent::Audio { bytes, mimetype, ptt, seconds: ogg.seconds })
    }

    /// An MP4 video, as its bytes say (a declared type must agree), with its length read from
    /// the file.
    pub fn video(bytes: Bytes, declared: Option<&str>, caption: Option<&str>) -> Result<OutgoingContent, ContentError> {
        check_size(&bytes)?;
        let sniffed = sniff(&bytes);
        let Some(mimetype) = sniffed.filter(|t| t.as_str() == MP4) else {
            return Err(ContentError::NotAVideo { found: described(&bytes) });
        };
        if let Some(declared) = declared_type(declared)?
            && !declared.is_generic()
            && declared != mimetype
        {
            return Err(ContentError::TypeMismatch { declared: declared.to_string(), found: mimetype.to_string() });
        }
        let seconds = super::audio_video::mp4_seconds(&bytes);
        Ok(OutgoingContent::Video { bytes, mimetype, caption: caption_of(caption)?, seconds })
    }

    /// Any file. Its type is the one its bytes show (a PDF header anywhere in the first KiB
    /// counts, see [`has_pdf_header`](super::has_pdf_header)), or the declared one when the bytes
    /// show none we know (`text/csv`), or `application/octet-stream`; a declared type that
    /// contradicts the bytes is refused. Without a name it is `Comprobante.pdf` for a PDF,
    /// `archivo.<ext>` otherwise.
    pub fn document(
        bytes: Bytes,
        declared: Option<&str>,
        file_name: Option<FileName>,
        caption: Option<&str>,
    ) -> Result<OutgoingContent, ContentError> {
        check_size(&bytes)?;
        let sniffed = sniff(&bytes);
        let declared = declared_type(declared)?.filter(|d| !d.is_generic());
        let mimetype = match (declared, sniffed) {
            (Some(declared), Some(sniffed)) if !compatible(&declared, &sniffed) => {
                return Err(ContentError::TypeMismatch { declared: declared.to_string(), found: sniffed.to_string() });
            }
            // The declared one may be the more precise (an .xlsx is also a zip).
            (Some(declared), _) => declared,
            (None, Some(sniffed)) => sniffed,
            // A PDF whose header is not at byte 0 (a byte order mark, whitespace first): readers
            // open it, and so does the recipient's WhatsApp when it is typed as one.
            (None, None) if super::has_pdf_header(&bytes) => MimeType("application/pdf".to_owned()),
            (None, None) => MimeType("application/octet-stream".to_owned()),
        };
        let file_name = file_name.unwrap_or_else(|| default_name(&mimetype, &bytes));
        Ok(OutgoingContent::Document { bytes, mimetype, file_name, caption: caption_of(caption)? })
    }

    /// The PDF of `POST /api/send-pdf`, already checked to be one.
    pub fn pdf(pdf: super::PdfDocument, file_name: FileName) -> OutgoingContent {
        OutgoingContent::Document {
            bytes: pdf.bytes().clone(),
            mimetype: MimeType("application/pdf".to_owned()),
            file_name,
            caption: None,
        }
    }

    /// Rebuilds content the journal stored (it was checked when accepted; lengths are read from
    /// the file again).
    pub fn from_stored(
        kind: ContentKind,
        payload: Bytes,
        mimetype: Option<MimeType>,
        file_name: Option<FileName>,
        caption: Option<String>,
        ptt: bool,
    ) -> Result<OutgoingContent, ContentError> {
        let octet = || MimeType("application/octet-stream".to_owned());
        Ok(match kind {
            ContentKind::Text => OutgoingContent::Text {
                body: String::from_utf8(payload.to_vec()).map_err(|_| ContentError::EmptyText)?,
            },
            ContentKind::Image => {
                OutgoingContent::Image { bytes: payload, mimetype: mimetype.unwrap_or_else(octet), caption }
            }
            ContentKind::Document => {
                let mimetype = mimetype.unwrap_or_else(octet);
                let file_name = file_name.unwrap_or_else(|| default_name(&mimetype, &payload));
                OutgoingContent::Document { bytes: payload, mimetype, file_name, caption }
            }
            ContentKind::Audio => {
                let seconds = super::audio_video::ogg_opus(&payload).and_then(|ogg| ogg.seconds);
                let mimetype = mimetype.unwrap_or_else(|| MimeType(OGG.to_owned()));
                OutgoingContent::Audio { bytes: payload, mimetype, ptt, seconds }
            }
            ContentKind::Video => {
                let seconds = super::audio_video::mp4_seconds(&payload);
                let mimetype = mimetype.unwrap_or_else(|| MimeType(MP4.to_owned()));
                OutgoingContent::Video { bytes: payload, mimetype, caption, seconds }
            }
        })
    }

    pub fn kind(&self) -> ContentKind {
        match self {
            OutgoingContent::Text { .. } => ContentKind::Text,
            OutgoingContent::Image { .. } => ContentKind::Image,
            OutgoingContent::Document { .. } => ContentKind::Document,
            OutgoingContent::Audio { .. } => ContentKind::Audio,
            OutgoingContent::Video { .. } => ContentKind::Video,
        }
    }

    /// For audio, whether it is a voice note; `None` for other kinds.
    pub fn ptt(&self) -> Option<bool> {
        match self {
            OutgoingContent::Audio { ptt, .. } => Some(*ptt),
            _ => None,
        }
    }

    /// The length of an audio or a video in seconds, when its file says.
    pub fn seconds(&self) -> Option<u32> {
        match self {
            OutgoingContent::Audio { seconds, .. } | OutgoingContent::Video { seconds, .. } => *seconds,
            _ => None,
        }
    }

    /// The bytes the journal keeps: the text as UTF-8, or the file.
    pub fn payload(&self) -> Bytes {
        match self {
            OutgoingContent::Text { body } => Bytes::copy_from_slice(body.as_bytes()),
            OutgoingContent::Image { bytes, .. }
            | OutgoingContent::Document { bytes, .. }
            | OutgoingContent::Audio { bytes, .. }
            | OutgoingContent::Video { bytes, .. } => bytes.clone(),
        }
    }

    pub fn mimetype(&self) -> Option<&MimeType> {
        match self {
            OutgoingContent::Text { .. } => None,
            OutgoingContent::Image { mimetype, .. }
            | OutgoingContent::Document { mimetype, .. }
            | OutgoingContent::Audio { mimetype, .. }
            | OutgoingContent::Video { mimetype, .. } => Some(mimetype),
        }
    }

    pub fn file_name(&self) -> Option<&FileName> {
        match self {
            OutgoingContent::Document { file_name, .. } => Some(file_name),
            _ => None,
        }
    }

    /// The start of a text, on one line, for lists: at most [`PREVIEW_CHARS`] characters, ending
    /// in `…` when cut. `None` for images and documents (their file name and caption say it).
    pub fn preview(&self) -> Option<String> {
        let OutgoingContent::Text { body } = self else { return None };
        let line = body.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.chars().count() <= PREVIEW_CHARS {
            return Some(line);
        }
        let mut cut: String = line.chars().take(PREVIEW_CHARS - 1).collect();
        cut.truncate(cut.trim_end().len());
        cut.push('…');
        Some(cut)
    }

    pub fn caption(&self) -> Option<&str> {
        match self {
            OutgoingContent::Text { .. } | OutgoingContent::Audio { .. } => None,
            OutgoingContent::Image { caption, .. }
            | OutgoingContent::Document { caption, .. }
            | OutgoingContent::Video { caption, .. } => caption.as_deref(),
        }
    }
}

fn check_size(bytes: &[u8]) -> Result<(), ContentError> {
    match bytes.len() {
        0 => Err(ContentError::EmptyMedia),
        n if n > MAX_MEDIA_BYTES => Err(ContentError::TooLarge),
        _ => Ok(()),
    }
}

fn declared_type(declared: Option<&str>) -> Result<Option<MimeType>, ContentError> {
    match declared.map(str::trim).filter(|d| !d.is_empty()) {
        None => Ok(None),
        Some(raw) => MimeType::parse(raw).map(Some).ok_or_else(|| ContentError::InvalidMimeType(raw.to_owned())),
    }
}

fn caption_of(caption: Option<&str>) -> Result<Option<String>, ContentError> {
    match caption.map(str::trim).filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) if c.chars().count() > MAX_CAPTION_CHARS => Err(ContentError::CaptionTooLong),
        Some(c) if c.contains('\0') => Err(ContentError::NulCharacter),
        Some(c) => Ok(Some(c.to_owned())),
    }
}

/// The container of voice notes.
const OGG: &str = "audio/ogg";
/// The container of videos.
const MP4: &str = "video/mp4";

/// What the bytes are, for an error message.
fn described(bytes: &[u8]) -> String {
    sniff(bytes).map_or("of no known type".to_owned(), |t| t.to_string())
}

/// The type the bytes show, if they show one we know.
fn sniff(bytes: &[u8]) -> Option<MimeType> {
    infer::get(bytes).and_then(|t| MimeType::parse(t.mime_type()))
}

/// Whether a declared type can describe bytes sniffed as `sniffed`: the same type, or a format
/// built on it (an Office file or an APK is a zip; an MP4 audio file is an MP4).
fn compatible(declared: &MimeType, sniffed: &MimeType) -> bool {
    if declared == sniffed {
        return true;
    }
    let (d, s) = (declared.as_str(), sniffed.as_str());
    match s {
        "application/zip" => {
            d.starts_with("application/vnd.openxmlformats-officedocument.")
                || d.starts_with("application/vnd.oasis.opendocument.")
                || matches!(
                    d,
                    "application/epub+zip" | "application/vnd.android.package-archive" | "application/java-archive"
                )
        }
        "application/x-ole-storage" => d == "application/msword" || d.starts_with("application/vnd.ms-"),
        // audio/mp4 sniffs as video/mp4: the same container.
        _ => s.ends_with("/mp4") && d.ends_with("/mp4"),
    }
}

/// `Comprobante.pdf` for a PDF (as the Node service named them), `archivo.<ext>` otherwise.
fn default_name(mimetype: &MimeType, bytes: &[u8]) -> FileName {
    let name = if mimetype.as_str() == "application/pdf" {
        super::DEFAULT_FILE_NAME.to_owned()
    } else {
        match infer::get(bytes).map(|t| t.extension()) {
            Some(ext) => format!("archivo.{ext}"),
            None => "archivo".to_owned(),
        }
    };
    FileName::parse(&name).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0\xff\xd9";
    const PDF: &[u8] = b"%PDF-1.4\n%%EOF\n";

    fn bytes(b: &[u8]) -> Bytes {
        Bytes::copy_from_slice(b)
    }

    #[test]
    fn text_bounds() {
        assert_eq!(OutgoingContent::text("hola").unwrap().payload().as_ref(), b"hola");
        assert_eq!(OutgoingContent::text(" \n "), Err(ContentError::EmptyText));
        assert!(OutgoingContent::text(&"ñ".repeat(MAX_TEXT_CHARS)).is_ok());
        assert_eq!(OutgoingContent::text(&"a".repeat(MAX_TEXT_CHARS + 1)), Err(ContentError::TextTooLong));
        assert_eq!(OutgoingContent::text("ho\0la"), Err(ContentError::NulCharacter));
        assert_eq!(OutgoingContent::image(bytes(PNG), None, Some("fo\0to")), Err(ContentError::NulCharacter));
    }

    #[test]
    fn images_are_what_their_bytes_say() {
        let png = OutgoingContent::image(bytes(PNG), None, Some(" foto ")).unwrap();
        assert_eq!((png.mimetype().map(MimeType::as_str), png.caption()), (Some("image/png"), Some("foto")));
        assert!(OutgoingContent::image(bytes(JPEG), Some("image/jpg"), None).is_ok(), "an alias of the same type");
        assert!(OutgoingContent::image(bytes(JPEG), Some("application/octet-stream"), None).is_ok(), "generic");
        assert_eq!(
            OutgoingContent::image(bytes(PNG), Some("image/jpeg"), None),
            Err(ContentError::TypeMismatch { declared: "image/jpeg".into(), found: "image/png".into() })
        );
        assert!(matches!(OutgoingContent::image(bytes(PDF), None, None), Err(ContentError::NotAnImage { .. })));
        assert!(matches!(OutgoingContent::image(bytes(b"hello"), None, None), Err(ContentError::NotAnImage { .. })));
        assert_eq!(OutgoingContent::image(Bytes::new(), None, None), Err(ContentError::EmptyMedia));
        assert_eq!(
            OutgoingContent::image(bytes(PNG), Some("not a type"), None),
            Err(ContentError::InvalidMimeType("not a type".into()))
        );
        let long = "x".repeat(MAX_CAPTION_CHARS + 1);
        assert_eq!(OutgoingContent::image(bytes(PNG), None, Some(&long)), Err(ContentError::CaptionTooLong));
    }

    #[test]
    fn a_preview_is_the_start_of_a_text_on_one_line() {
        let preview = |text: &str| OutgoingContent::text(text).unwrap().preview().unwrap();
        assert_eq!(preview("  Hola,\n\n  ¿llegó?\t"), "Hola, ¿llegó?");
        let exact = "ñ".repeat(PREVIEW_CHARS);
        assert_eq!(preview(&exact), exact, "not cut when it fits");
        let cut = preview(&format!("{} más", "a".repeat(PREVIEW_CHARS - 2)));
        assert_eq!(cut.chars().count(), PREVIEW_CHARS - 1, "no space before the ellipsis: {cut:?}");
        assert!(cut.ends_with("a…"), "{cut:?}");
        assert_eq!(preview(&"x".repeat(500)).chars().count(), PREVIEW_CHARS);
        assert_eq!(OutgoingContent::document(bytes(PDF), None, None, None).unwrap().preview(), None);
    }

    #[test]
    fn documents_take_any_file_but_not_a_lie_about_it() {
        let pdf = OutgoingContent::document(bytes(PDF), None, None, None).unwrap();
        assert_eq!(pdf.mimetype().map(MimeType::as_str), Some("application/pdf"));
        assert_eq!(pdf.file_name().map(FileName::as_str), Some("Comprobante.pdf"));
        let csv = OutgoingContent::document(bytes(b"a,b\n1,2\n"), Some("text/csv"), None, None).unwrap();
        assert_eq!(csv.mimetype().map(MimeType::as_str), Some("text/csv"), "unknown bytes: the declared type");
        for late_header in [&b"\xef\xbb\xbf%PDF-1.7\n"[..], b"\r\n%PDF-1.4\n", b"application/octet-stream"] {
            let bom = OutgoingContent::document(bytes(late_header), Some("application/octet-stream"), None, None);
            let found = bom.unwrap().mimetype().map(MimeType::to_string);
            let pdf = late_header.windows(5).any(|w| w == b"%PDF-");
            assert_eq!(found.as_deref(), Some(if pdf { "application/pdf" } else { "application/octet-stream" }));
        }
        let unknown = OutgoingContent::document(bytes(b"\x00\x01"), None, None, None).unwrap();
        assert_eq!(unknown.mimetype().map(MimeType::as_str), Some("application/octet-stream"));
        assert_eq!(unknown.file_name().map(FileName::as_str), Some("archivo"));
        let png = OutgoingContent::document(bytes(PNG), None, None, None).unwrap();
        assert_eq!(png.file_name().map(FileName::as_str), Some("archivo.png"));
        assert_eq!(
            OutgoingContent::document(bytes(PNG), Some("application/pdf"), None, None),
            Err(ContentError::TypeMismatch { declared: "application/pdf".into(), found: "image/png".into() })
        );
        let zip = b"PK\x03\x04\x14\0\0\0\x08\0";
        let xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
        let named = FileName::parse("ventas.xlsx").ok();
        let sheet = OutgoingContent::document(bytes(zip), Some(xlsx), named, None).unwrap();
        assert_eq!(sheet.mimetype().map(MimeType::as_str), Some(xlsx), "an Office file is a zip");
    }

    #[test]
    fn audio_is_ogg_opus_with_its_length_and_ptt() {
        use super::super::audio_video::samples;
        let voice = OutgoingContent::audio(bytes(&samples::ogg_opus(5)), None, true).unwrap();
        assert_eq!((voice.kind(), voice.ptt(), voice.seconds()), (ContentKind::Audio, Some(true), Some(5)));
        assert_eq!(voice.mimetype().map(MimeType::as_str), Some("audio/ogg"));
        assert_eq!(voice.caption(), None);
        assert!(OutgoingContent::audio(bytes(&samples::ogg_opus(5)), Some("audio/ogg; codecs=opus"), false).is_ok());
        assert!(matches!(
            OutgoingContent::audio(bytes(b"ID3\x04\0\0\0\0\0\0 an mp3"), None, true),
            Err(ContentError::NotOggOpus { found }) if found == "audio/mpeg"
        ));
        assert!(matches!(OutgoingContent::audio(bytes(PNG), None, false), Err(ContentError::NotOggOpus { .. })));
        assert!(matches!(
            OutgoingContent::audio(bytes(&samples::ogg_opus(1)), Some("audio/mpeg"), false),
            Err(ContentError::TypeMismatch { .. })
        ));
        let stored = OutgoingContent::from_stored(ContentKind::Audio, voice.payload(), None, None, None, true).unwrap();
        assert_eq!(stored, voice, "rebuilt from the journal, length and all");
    }

    #[test]
    fn video_is_mp4_with_its_length_and_caption() {
        use super::super::audio_video::samples;
        let video = OutgoingContent::video(bytes(&samples::mp4(3)), Some("video/mp4"), Some("el local")).unwrap();
        assert_eq!((video.kind(), video.seconds(), video.caption()), (ContentKind::Video, Some(3), Some("el local")));
        assert_eq!((video.mimetype().map(MimeType::as_str), video.ptt()), (Some("video/mp4"), None));
        assert!(matches!(OutgoingContent::video(bytes(PDF), None, None), Err(ContentError::NotAVideo { .. })));
        assert!(matches!(
            OutgoingContent::video(bytes(&samples::ogg_opus(1)), None, None),
            Err(ContentError::NotAVideo { found }) if found == "audio/opus" || found == "audio/ogg"
        ));
        assert!(matches!(
            OutgoingContent::video(bytes(&samples::mp4(3)), Some("video/quicktime"), None),
            Err(ContentError::TypeMismatch { .. })
        ));
        let stored = OutgoingContent::from_stored(
            ContentKind::Video,
            video.payload(),
            video.mimetype().cloned(),
            None,
            Some("el local".into()),
            false,
        )
        .unwrap();
        assert_eq!(stored, video);
    }

    #[test]
    fn kinds_are_spelled_once() {
        for kind in ContentKind::ALL {
            assert_eq!(ContentKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
