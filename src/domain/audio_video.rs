//! Just enough of two containers to check a file and read its length: OGG/Opus, the format
//! WhatsApp records voice notes in, and MP4, the one it plays videos in.
//!
//! An OGG stream is a run of pages (`OggS`, version 0, a segment table, the body); the first
//! page of an Opus stream carries `OpusHead`, whose pre-skip is subtracted from the last page's
//! granule position, counted at 48 kHz (RFC 7845 §4). An MP4 is a run of boxes; `moov/mvhd`
//! holds the duration in its timescale's units (ISO/IEC 14496-12 §8.2.2).

/// The clock of every Opus granule position, whatever the input's rate.
const OPUS_RATE: u64 = 48_000;

/// What an OGG/Opus file says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OggOpus {
    /// Whole seconds, rounded up; `None` when no page has a granule position.
    pub(crate) seconds: Option<u32>,
}

/// The OGG/Opus file `bytes` is, or `None` when they are something else.
pub(crate) fn ogg_opus(bytes: &[u8]) -> Option<OggOpus> {
    let first = page(bytes, 0)?;
    // The first page begins the stream (BOS) and its first packet is the Opus header.
    if first.header_type & 0x02 == 0 || !first.body.starts_with(b"OpusHead") || first.body.len() < 19 {
        return None;
    }
    let pre_skip = u64::from(u16::from_le_bytes([first.body[10], first.body[11]]));
    let mut granule = None;
    let mut at = 0;
    while let Some(p) = page(bytes, at) {
        // -1: no packet ends on this page.
        if p.granule != u64::MAX {
            granule = Some(p.granule);
        }
        at = p.next;
    }
    let seconds = granule.map(|g| {
        let samples = g.saturating_sub(pre_skip);
        u32::try_from(samples.div_ceil(OPUS_RATE)).unwrap_or(u32::MAX)
    });
    Some(OggOpus { seconds })
}

struct Page<'a> {
    header_type: u8,
    granule: u64,
    body: &'a [u8],
    /// Where the next page starts.
    next: usize,
}

/// The OGG page at `at`, if a whole one is there.
fn page(bytes: &[u8], at: usize) -> Option<Page<'_>> {
    let header = bytes.get(at..at.checked_add(27)?)?;
    if &header[..4] != b"OggS" || header[4] != 0 {
        return None;
    }
    let segments = usize::from(header[26]);
    let table = bytes.get(at + 27..at + 27 + segments)?;
    let body_start = at + 27 + segments;
    let body_len: usize = table.iter().map(|&n| usize::from(n)).sum();
    let body = bytes.get(body_start..body_start + body_len)?;
    let granule = u64::from_le_bytes(header[6..14].try_into().ok()?);
    Some(Page { header_type: header[5], granule, body, next: body_start + body_len })
}

/// The length of an MP4 in whole seconds (rounded up), from `moov/mvhd`; `None` if it has none.
pub(crate) fn mp4_seconds(bytes: &[u8]) -> Option<u32> {
    let moov = child(bytes, b"moov")?;
    let mvhd = child(moov, b"mvhd")?;
    let (timescale, duration) = match mvhd.first()? {
        0 => (be_u32(mvhd.get(12..16)?), u64::from(be_u32(mvhd.get(16..20)?))),
        1 => (be_u32(mvhd.get(20..24)?), u64::from_be_bytes(mvhd.get(24..32)?.try_into().ok()?)),
        _ => return None,
    };
    if timescale == 0 || duration == u64::MAX || duration == u64::from(u32::MAX) {
        return None;
    }
    u32::try_from(duration.div_ceil(u64::from(timescale))).ok()
}

/// The body of the first box named `name` among the boxes that make up `bytes`.
fn child<'a>(bytes: &'a [u8], name: &[u8; 4]) -> Option<&'a [u8]> {
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let size = be_u32(bytes.get(at..at + 4)?);
        let kind = bytes.get(at + 4..at + 8)?;
        let (header, size) = match size {
            0 => (8, bytes.len() - at),
            1 => (16, usize::try_from(u64::from_be_bytes(bytes.get(at + 8..at + 16)?.try_into().ok()?)).ok()?),
            n => (8, usize::try_from(n).ok()?),
        };
        if size < header {
            return None;
        }
        let end = at.checked_add(size)?;
        if kind == name {
            return bytes.get(at + header..end.min(bytes.len()));
        }
        at = end;
    }
    None
}

fn be_u32(bytes: &[u8]) -> u32 {
    bytes.try_into().map(u32::from_be_bytes).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod samples {
    //! Tiny, valid files built byte by byte, for tests.

    /// An OGG page: `granule`, `header_type`, one packet `body` (< 255 bytes).
    fn ogg_page(header_type: u8, granule: u64, sequence: u32, body: &[u8]) -> Vec<u8> {
        let mut page = b"OggS\0".to_vec();
        page.push(header_type);
        page.extend(granule.to_le_bytes());
        page.extend(0x1234_5678u32.to_le_bytes()); // serial
        page.extend(sequence.to_le_bytes());
        page.extend(0u32.to_le_bytes()); // checksum (not checked by WhatsApp's sniffing nor ours)
        page.push(1);
        page.push(u8::try_from(body.len()).unwrap_or(u8::MAX));
        page.extend(body);
        page
    }

    /// An OGG/Opus voice note of `seconds` (its pages, not real audio): OpusHead with a pre-skip
    /// of 312, OpusTags, then one page of audio ending at `seconds`.
    pub(crate) fn ogg_opus(seconds: u64) -> Vec<u8> {
        let mut head = b"OpusHead".to_vec();
        head.extend([1, 1]); // version, mono
        head.extend(312u16.to_le_bytes());
        head.extend(48_000u32.to_le_bytes());
        head.extend([0, 0, 0]); // gain, mapping family
        let mut tags = b"OpusTags".to_vec();
        tags.extend(8u32.to_le_bytes());
        tags.extend(b"gateway!");
        tags.extend(0u32.to_le_bytes());
        let mut file = ogg_page(0x02, 0, 0, &head);
        file.extend(ogg_page(0x00, 0, 1, &tags));
        file.extend(ogg_page(0x04, seconds * 48_000 + 312, 2, &[0xfc, 0xff, 0xfe]));
        file
    }

    /// An MP4 of `seconds`: `ftyp` (isom), `moov` with a version 0 `mvhd` (timescale 1000), and
    /// an `mdat`.
    pub(crate) fn mp4(seconds: u32) -> Vec<u8> {
        let boxed = |kind: &[u8; 4], body: &[u8]| {
            let mut b = u32::try_from(body.len() + 8).unwrap_or(u32::MAX).to_be_bytes().to_vec();
            b.extend(kind);
            b.extend(body);
            b
        };
        let mut ftyp = b"isom".to_vec();
        ftyp.extend(512u32.to_be_bytes());
        ftyp.extend(b"isomiso2avc1mp41");
        let mut mvhd = vec![0u8; 4]; // version 0, flags
        mvhd.extend(0u32.to_be_bytes()); // created
        mvhd.extend(0u32.to_be_bytes()); // modified
        mvhd.extend(1000u32.to_be_bytes()); // timescale
        mvhd.extend((seconds * 1000).to_be_bytes()); // duration
        mvhd.extend([0u8; 80]);
        let mut file = boxed(b"ftyp", &ftyp);
        file.extend(boxed(b"moov", &boxed(b"mvhd", &mvhd)));
        file.extend(boxed(b"mdat", b"\0\0\0\x01video"));
        file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ogg_opus_file_and_its_length() {
        assert_eq!(ogg_opus(&samples::ogg_opus(7)), Some(OggOpus { seconds: Some(7) }));
        assert_eq!(ogg_opus(&samples::ogg_opus(0)), Some(OggOpus { seconds: Some(0) }));
        let mut partial = samples::ogg_opus(3);
        // 1.5 s more on the last page: rounded up.
        let last = partial.len() - 3 - 1 - 27;
        partial[last + 6..last + 14].copy_from_slice(&(3 * 48_000 + 24_000 + 312u64).to_le_bytes());
        assert_eq!(ogg_opus(&partial).and_then(|o| o.seconds), Some(4));
    }

    #[test]
    fn other_bytes_are_not_ogg_opus() {
        let ogg = samples::ogg_opus(2);
        assert_eq!(ogg_opus(&ogg[..20]), None, "cut inside the first page");
        assert_eq!(ogg_opus(b"ID3\x03\0\0\0\0\0\0 an mp3"), None);
        assert_eq!(ogg_opus(&samples::mp4(1)), None);
        let mut vorbis = ogg.clone();
        vorbis[28..36].copy_from_slice(b"\x01vorbis\0");
        assert_eq!(ogg_opus(&vorbis), None, "OGG, but Vorbis");
        // A damaged tail: the length is the last whole page's.
        let mut tail = ogg.clone();
        tail.extend(b"OggS\0garbage");
        assert_eq!(ogg_opus(&tail), Some(OggOpus { seconds: Some(2) }));
    }

    #[test]
    fn the_length_of_an_mp4() {
        assert_eq!(mp4_seconds(&samples::mp4(3)), Some(3));
        assert_eq!(mp4_seconds(&samples::ogg_opus(1)), None);
        let mut no_moov = samples::mp4(3);
        let at = no_moov.windows(4).position(|w| w == b"moov").unwrap();
        no_moov[at..at + 4].copy_from_slice(b"free");
        assert_eq!(mp4_seconds(&no_moov), None);
        assert_eq!(mp4_seconds(&[0, 0, 0, 4, b'f', b't', b'y', b'p']), None, "a box smaller than its header");
    }
}
