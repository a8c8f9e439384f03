//! Redaction on review (DSK I.11): a reviewer names rectangles of an image
//! to black out; the derivative is rendered with the `image` crate and is
//! what the KIS receives. Rectangles are in the coordinates of the image as
//! displayed (its Exif orientation applied); the derivative's pixels are
//! upright and it carries no metadata at all. JPEG stays JPEG (quality 90;
//! rectangles are widened to the 16-pixel blocks they touch, so no block
//! mixes black and picture and the blacked-out area decodes black), PNG
//! stays PNG, WebP becomes lossless WebP.

use std::str::FromStr;

use image::{DynamicImage, ImageFormat, Rgba};

use super::strip::{Format, orientation_of};

/// A rectangle in pixels: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl FromStr for Rect {
    type Err = String;

    /// Parses `x,y,w,h` (non-negative integers, width and height above 0).
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<u32> = s
            .split(',')
            .map(|p| p.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{s:?} is not x,y,w,h in pixels"))?;
        match parts[..] {
            [x, y, w, h] if w > 0 && h > 0 => Ok(Self { x, y, w, h }),
            _ => Err(format!("{s:?} is not x,y,w,h with w and h above 0")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// Only JPEG, PNG and WebP images can be redacted.
    #[error("only JPEG, PNG and WebP images can be redacted")]
    NotAnImage,
    /// The image does not decode.
    #[error("the image does not decode: {0}")]
    Decode(String),
    /// A rectangle reaches outside the image.
    #[error("rectangle {0:?} reaches outside the {1}x{2} image")]
    OutOfBounds(Rect, u32, u32),
    #[error("the derivative cannot be encoded: {0}")]
    Encode(String),
}

/// The displayed size (width, height) of an image: its orientation applied.
pub fn displayed_size(bytes: &[u8]) -> Result<(u32, u32), RedactError> {
    let (_, image) = decode(bytes)?;
    Ok((image.width(), image.height()))
}

fn decode(bytes: &[u8]) -> Result<(Format, DynamicImage), RedactError> {
    let format = Format::sniff(bytes)
        .filter(|f| f.is_image())
        .ok_or(RedactError::NotAnImage)?;
    let image_format = match format {
        Format::Jpeg => ImageFormat::Jpeg,
        Format::Png => ImageFormat::Png,
        _ => ImageFormat::WebP,
    };
    let mut image = image::load_from_memory_with_format(bytes, image_format)
        .map_err(|e| RedactError::Decode(e.to_string()))?;
    let orientation = exif_of(format, bytes)
        .as_deref()
        .and_then(orientation_of)
        .and_then(|o| image::metadata::Orientation::from_exif(o as u8));
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    Ok((format, image))
}

fn exif_of(format: Format, bytes: &[u8]) -> Option<bytes::Bytes> {
    use img_parts::ImageEXIF;
    let b = bytes::Bytes::copy_from_slice(bytes);
    match format {
        Format::Jpeg => img_parts::jpeg::Jpeg::from_bytes(b).ok()?.exif(),
        Format::Png => img_parts::png::Png::from_bytes(b).ok()?.exif(),
        Format::WebP => img_parts::webp::WebP::from_bytes(b).ok()?.exif(),
        Format::Pdf => None,
    }
}

/// Renders `bytes` upright with every rectangle black (RGB 0,0,0, opaque)
/// and encodes it in the same format, without metadata.
pub fn redact(bytes: &[u8], rects: &[Rect]) -> Result<Vec<u8>, RedactError> {
    let (format, image) = decode(bytes)?;
    let (w, h) = (image.width(), image.height());
    let block = if format == Format::Jpeg { 16 } else { 1 };
    let mut canvas = image.into_rgba8();
    for &r in rects {
        let inside = r.x.checked_add(r.w).is_some_and(|e| e <= w)
            && r.y.checked_add(r.h).is_some_and(|e| e <= h);
        if !inside {
            return Err(RedactError::OutOfBounds(r, w, h));
        }
        let (x0, y0) = (r.x / block * block, r.y / block * block);
        let x1 = (r.x + r.w).div_ceil(block).saturating_mul(block).min(w);
        let y1 = (r.y + r.h).div_ceil(block).saturating_mul(block).min(h);
        for y in y0..y1 {
            for x in x0..x1 {
                canvas.put_pixel(x, y, Rgba([0, 0, 0, 255]));
            }
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    let encoded = match format {
        Format::Jpeg => {
            let rgb = DynamicImage::ImageRgba8(canvas).into_rgb8();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&rgb)
        }
        Format::Png => DynamicImage::ImageRgba8(canvas).write_to(&mut out, ImageFormat::Png),
        _ => canvas.write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut out)),
    };
    encoded.map_err(|e| RedactError::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_parses_x_y_w_h() {
        assert_eq!(
            "8, 16,24,32".parse::<Rect>(),
            Ok(Rect {
                x: 8,
                y: 16,
                w: 24,
                h: 32
            })
        );
        for bad in ["1,2,3", "1,2,0,4", "a,b,c,d", "-1,0,2,2", "1,2,3,4,5"] {
            assert!(bad.parse::<Rect>().is_err(), "{bad}");
        }
    }
}
