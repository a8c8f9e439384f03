//! Lossless removal of metadata before archive (DSK I.11; GDPR Art. 5(1)(c)
//! and 25): what a phone writes beside the picture — camera, capture time,
//! descriptions, the GPS position — never reaches the KIS.
//!
//! Per format, everything that is not needed to display the content is
//! dropped by an allow-list; the image data itself is copied untouched:
//!
//! - JPEG (`img-parts`): kept are the frame, scan, table and restart
//!   segments, APP0 `JFIF`, APP2 `ICC_PROFILE` and APP14 `Adobe` (colour);
//!   dropped are APP1 (Exif, XMP), APP13 (Photoshop IRB, IPTC), the other
//!   APPn, COM, and anything after the EOI marker (MPF secondary images,
//!   vendor trailers), which `img-parts` would keep verbatim.
//! - PNG (`img-parts`): kept are the critical chunks, the colour, rendering
//!   and animation chunks (`tRNS cHRM gAMA iCCP sBIT sRGB cICP mDCV cLLI
//!   bKGD hIST pHYs sPLT acTL fcTL fdAT`); dropped are `eXIf`, `tEXt`,
//!   `zTXt`, `iTXt`, `tIME` and every other chunk.
//! - WebP (`img-parts`): kept are `VP8 `, `VP8L`, `VP8X`, `ALPH`, `ANIM`,
//!   `ANMF`, `ICCP`; dropped are `EXIF`, `XMP ` and every other chunk (the
//!   `VP8X` flags are updated).
//! - PDF (`lopdf`): the trailer's document information dictionary
//!   (`/Info`), every `/Metadata` (XMP) stream reference and `/PieceInfo`
//!   are removed, unreferenced objects pruned, the document saved anew
//!   (earlier revisions of an incrementally updated file are not kept).
//!   Encrypted PDFs cannot be stripped.
//!
//! Orientation is kept as a tag, the pixels are not rotated (that would
//! re-encode the image): when the Exif `Orientation` (read with
//! `kamadak-exif`) is other than 1, a new Exif block holding that one tag
//! (written with `kamadak-exif`) replaces the old one, so viewers still
//! display the photo upright.
//!
//! Memory: the bytes are parsed in place (`bytes::Bytes` slices of the one
//! received buffer); the result is one new buffer of at most the input's
//! size. When nothing is removed the input is returned as it is.

use bytes::Bytes;
use img_parts::ImageEXIF;
use img_parts::jpeg::Jpeg;
use img_parts::png::Png;
use img_parts::webp::WebP;

/// A format whose metadata [`strip`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    WebP,
    Pdf,
}

impl Format {
    /// The format the bytes are by their magic numbers (`infer`), if one
    /// [`strip`] handles.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        match infer::get(bytes)?.mime_type() {
            "image/jpeg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            "image/webp" => Some(Self::WebP),
            "application/pdf" => Some(Self::Pdf),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Jpeg => "JPEG",
            Self::Png => "PNG",
            Self::WebP => "WebP",
            Self::Pdf => "PDF",
        }
    }

    /// Whether the format is an image [`crate::media::redact`] can render.
    pub fn is_image(self) -> bool {
        !matches!(self, Self::Pdf)
    }
}

/// Why metadata could not be removed; the content is then quarantined
/// `metadata_unstrippable`, never archived as if stripped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripError {
    /// The bytes do not parse as the format they sniff as (truncated,
    /// corrupt, or an encrypted PDF).
    #[error("the {0} structure cannot be parsed, so its metadata cannot be removed")]
    Unparseable(&'static str),
}

/// The content with its metadata removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    /// The bytes to archive.
    pub bytes: Bytes,
    /// Metadata pieces removed: segments, chunks, dictionaries, trailers.
    pub removed: usize,
    /// The Exif orientation kept (2–8), if the original had one other than 1.
    pub orientation: Option<u16>,
}

/// Removes the metadata of `bytes` in `format` (see the module
/// documentation for what is kept).
pub fn strip(format: Format, bytes: Bytes) -> Result<Stripped, StripError> {
    match format {
        Format::Jpeg => jpeg(bytes),
        Format::Png => png(bytes),
        Format::WebP => webp(bytes),
        Format::Pdf => super::pdf::strip(bytes),
    }
}

fn unchanged(bytes: Bytes) -> Stripped {
    Stripped {
        bytes,
        removed: 0,
        orientation: None,
    }
}

const APP0: u8 = 0xE0;
const APP2: u8 = 0xE2;
const APP14: u8 = 0xEE;
const COM: u8 = 0xFE;

fn keep_jpeg_segment(marker: u8, contents: &[u8]) -> bool {
    match marker {
        APP0 => contents.starts_with(b"JFIF\0"),
        APP2 => contents.starts_with(b"ICC_PROFILE\0"),
        APP14 => contents.starts_with(b"Adobe"),
        0xE1..=0xEF | COM => false,
        _ => true,
    }
}

/// The length of a JPEG up to and including its EOI marker: marker
/// segments are skipped by their length, entropy-coded data (after SOS)
/// byte by byte, where `FF00` and `FFD0`–`FFD7` are data. `None` when
/// there is no EOI.
pub(super) fn jpeg_end(b: &[u8]) -> Option<usize> {
    let mut i = 2;
    let mut in_scan = false;
    while i + 1 < b.len() {
        if b[i] != 0xFF {
            if !in_scan {
                return None;
            }
            i += b[i..].iter().position(|&x| x == 0xFF)?;
            continue;
        }
        match b[i + 1] {
            0xFF => i += 1,
            0x00 | 0xD0..=0xD7 if in_scan => i += 2,
            0xD9 => return Some(i + 2),
            0x01 | 0xD0..=0xD7 => i += 2,
            marker => {
                let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
                if len < 2 {
                    return None;
                }
                i += 2 + len;
                in_scan = marker == 0xDA;
            }
        }
    }
    None
}

fn jpeg(bytes: Bytes) -> Result<Stripped, StripError> {
    let end = jpeg_end(&bytes).ok_or(StripError::Unparseable("JPEG"))?;
    let trailer = usize::from(end < bytes.len());
    let mut jpeg =
        Jpeg::from_bytes(bytes.slice(..end)).map_err(|_| StripError::Unparseable("JPEG"))?;
    let orientation = jpeg.exif().as_deref().and_then(orientation_of);
    let before = jpeg.segments().len();
    jpeg.segments_mut()
        .retain(|s| keep_jpeg_segment(s.marker(), s.contents()));
    let removed = before - jpeg.segments().len() + trailer;
    if removed == 0 {
        return Ok(unchanged(bytes));
    }
    drop(bytes);
    let orientation = orientation.filter(|&o| o != 1);
    if let Some(o) = orientation {
        jpeg.set_exif(Some(orientation_exif(o)));
    }
    Ok(Stripped {
        bytes: jpeg.encoder().bytes(),
        removed,
        orientation,
    })
}

const PNG_KEEP: [&[u8; 4]; 20] = [
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB",
    b"cICP", b"mDCV", b"cLLI", b"bKGD", b"hIST", b"pHYs", b"sPLT", b"acTL", b"fcTL", b"fdAT",
];

fn png(bytes: Bytes) -> Result<Stripped, StripError> {
    let mut png = Png::from_bytes(bytes.clone()).map_err(|_| StripError::Unparseable("PNG"))?;
    let orientation = png.exif().as_deref().and_then(orientation_of);
    let (before, trailer) = (png.chunks().len(), usize::from(png.len() < bytes.len()));
    png.chunks_mut()
        .retain(|c| PNG_KEEP.iter().any(|k| **k == c.kind()));
    let removed = before - png.chunks().len() + trailer;
    if removed == 0 {
        return Ok(unchanged(bytes));
    }
    drop(bytes);
    let orientation = orientation.filter(|&o| o != 1);
    if let Some(o) = orientation {
        png.set_exif(Some(orientation_exif(o)));
    }
    Ok(Stripped {
        bytes: png.encoder().bytes(),
        removed,
        orientation,
    })
}

const WEBP_KEEP: [&[u8; 4]; 7] = [
    b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP",
];

fn webp(bytes: Bytes) -> Result<Stripped, StripError> {
    let mut webp = WebP::from_bytes(bytes.clone()).map_err(|_| StripError::Unparseable("WebP"))?;
    let orientation = webp.exif().as_deref().and_then(orientation_of);
    let before = webp.chunks().len();
    let trailer = usize::from((webp.len() as usize) < bytes.len());
    webp.chunks_mut()
        .retain(|c| WEBP_KEEP.iter().any(|k| **k == c.id()));
    let removed = before - webp.chunks().len() + trailer;
    if removed == 0 {
        return Ok(unchanged(bytes));
    }
    drop(bytes);
    let orientation = orientation.filter(|&o| o != 1);
    // Also brings the VP8X flags in line with the chunks left.
    webp.set_exif(orientation.map(orientation_exif));
    Ok(Stripped {
        bytes: webp.encoder().bytes(),
        removed,
        orientation,
    })
}

/// The Exif `Orientation` (1–8) of the primary image in a TIFF-structured
/// Exif block.
pub fn orientation_of(tiff: &[u8]) -> Option<u16> {
    let exif = exif::Reader::new().read_raw(tiff.to_vec()).ok()?;
    let value = exif
        .get_field(exif::Tag::Orientation, exif::In::PRIMARY)?
        .value
        .get_uint(0)?;
    u16::try_from(value).ok().filter(|v| (1..=8).contains(v))
}

/// A TIFF-structured Exif block with the one tag `Orientation = o`.
fn orientation_exif(o: u16) -> Bytes {
    let field = exif::Field {
        tag: exif::Tag::Orientation,
        ifd_num: exif::In::PRIMARY,
        value: exif::Value::Short(vec![o]),
    };
    let mut writer = exif::experimental::Writer::new();
    writer.push_field(&field);
    let mut out = std::io::Cursor::new(Vec::new());
    writer
        .write(&mut out, false)
        .expect("one Orientation field always writes");
    Bytes::from(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_end_skips_segments_and_scan_data() {
        // SOI, APP0 (len 4), SOS (len 3) with scan data holding FF00 and
        // RST0, EOI, then a trailer with a fake EOI inside a segment.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0xFF, 0xD9, 0xFF, 0xDA, 0, 3, 1, 0x12, 0xFF, 0, 0x34,
            0xFF, 0xD0, 0x56, 0xFF, 0xD9, b'G', b'P', b'S',
        ];
        assert_eq!(jpeg_end(&jpeg), Some(22));
        assert_eq!(jpeg_end(&jpeg[..20]), None);
        assert_eq!(jpeg_end(&[0xFF, 0xD8, 0x00, 0x00]), None);
    }

    #[test]
    fn unparseable_content_is_refused_not_passed() {
        let fake = Bytes::from_static(b"\xFF\xD8\xFF\xE0 not really a JPEG");
        assert_eq!(
            strip(Format::Jpeg, fake),
            Err(StripError::Unparseable("JPEG"))
        );
        let fake = Bytes::from_static(b"%PDF-1.4\n% no objects, no xref\n");
        assert_eq!(
            strip(Format::Pdf, fake),
            Err(StripError::Unparseable("PDF"))
        );
    }
}
