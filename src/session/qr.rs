//! A session's QR code as an image: a PNG, or a `data:image/png;base64,…` URL of one, for the
//! API's responses and the `session.qr` event alike.

use base64::Engine as _;

/// Why a QR could not be drawn.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QrImageError {
    #[error("QR encoding: {0}")]
    Encode(#[from] qrcode::types::QrError),
    #[error("PNG encoding: {0}")]
    Png(#[from] png::EncodingError),
}

/// Pixels per QR module, and modules of white border (the standard quiet zone).
const MODULE_PX: usize = 8;
const QUIET_ZONE: usize = 4;

/// `data:image/png;base64,…` of a PNG.
pub(crate) fn png_data_url(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png))
}

/// The QR code of `text` as a PNG data URL.
pub(crate) fn qr_data_url(text: &str) -> Result<String, QrImageError> {
    qr_png(text).map(|png| png_data_url(&png))
}

/// The QR code of `text` as a greyscale PNG.
pub(crate) fn qr_png(text: &str) -> Result<Vec<u8>, QrImageError> {
    let code = qrcode::QrCode::new(text.as_bytes())?;
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET_ZONE) * MODULE_PX;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (mx, my) = (i % width + QUIET_ZONE, i / width + QUIET_ZONE);
            for y in my * MODULE_PX..(my + 1) * MODULE_PX {
                let row = y * side;
                pixels[row + mx * MODULE_PX..row + (mx + 1) * MODULE_PX].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    {
        let side = u32::try_from(side).unwrap_or(u32::MAX);
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_decodes_back_to_the_text() {
        let text = "2@3xZfAKEref0123456789abcdefghijklmnopqrstuvwxyz,AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/=,XYZ";
        let png = qr_png(text).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let (w, h) = (info.width as usize, info.height as usize);
        let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, text);
    }
}
