//! Media with known metadata, made at test time with maintained crates:
//! pixels with `image`, Exif (camera, time, description, GPS, orientation)
//! with `kamadak-exif`, segments and chunks inserted with `img-parts`, a
//! PDF with document information and XMP with `lopdf`.

#![allow(dead_code)]

use bytes::Bytes;
use exif::{Field, In, Rational, Tag, Value};
use image::{Rgb, RgbImage};
use img_parts::ImageEXIF;
use img_parts::jpeg::{Jpeg, JpegSegment};
use img_parts::png::{Png, PngChunk};
use img_parts::riff::{RiffChunk, RiffContent};
use img_parts::webp::WebP;

pub const RED: Rgb<u8> = Rgb([220, 30, 30]);
pub const BLUE: Rgb<u8> = Rgb([30, 30, 220]);
pub const XMP: &[u8] = b"<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF><rdf:Description \
exif:GPSLatitude=\"52,31.2N\" dc:creator=\"Dr. Beispiel\"/></rdf:RDF></x:xmpmeta>";

/// An upright 64×48 picture: red top-left quadrant, blue bottom-right,
/// a grey gradient elsewhere.
pub fn upright() -> RgbImage {
    RgbImage::from_fn(64, 48, |x, y| match (x < 32, y < 24) {
        (true, true) => RED,
        (false, false) => BLUE,
        _ => Rgb([(x * 3) as u8 + 60, (y * 4) as u8 + 60, 128]),
    })
}

/// Exif with camera, capture time, a description, a GPS position and
/// `orientation`, TIFF-structured (no `Exif\0\0` prefix).
pub fn exif(orientation: u16) -> Vec<u8> {
    let ascii = |tag, s: &str| Field {
        tag,
        ifd_num: In::PRIMARY,
        value: Value::Ascii(vec![s.as_bytes().to_vec()]),
    };
    let rational = |tag, v: [u32; 3]| Field {
        tag,
        ifd_num: In::PRIMARY,
        value: Value::Rational(v.iter().map(|&n| Rational { num: n, denom: 1 }).collect()),
    };
    let fields = [
        ascii(Tag::Make, "PhoneMaker"),
        ascii(Tag::Model, "Pocket X1"),
        ascii(Tag::DateTimeOriginal, "2026:11:28 09:20:00"),
        ascii(Tag::ImageDescription, "Wunde Zimmer 12"),
        ascii(Tag::GPSLatitudeRef, "N"),
        rational(Tag::GPSLatitude, [52, 31, 12]),
        ascii(Tag::GPSLongitudeRef, "E"),
        rational(Tag::GPSLongitude, [13, 24, 36]),
        Field {
            tag: Tag::Orientation,
            ifd_num: In::PRIMARY,
            value: Value::Short(vec![orientation]),
        },
    ];
    let mut writer = exif::experimental::Writer::new();
    for f in &fields {
        writer.push_field(f);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    writer.write(&mut out, false).unwrap();
    out.into_inner()
}

/// The tags of a TIFF-structured Exif block.
pub fn exif_tags(tiff: &[u8]) -> Vec<Tag> {
    exif::Reader::new()
        .read_raw(tiff.to_vec())
        .unwrap()
        .fields()
        .map(|f| f.tag)
        .collect()
}

/// A JPEG of [`upright`] stored rotated (Exif orientation 6: rotate 90°
/// clockwise to display), with Exif and GPS, XMP, IPTC (APP13), a comment
/// and a vendor trailer after EOI.
pub fn jpeg() -> Vec<u8> {
    let stored = image::imageops::rotate270(&upright());
    let mut encoded = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 95)
        .encode_image(&stored)
        .unwrap();
    let mut jpeg = Jpeg::from_bytes(Bytes::from(encoded)).unwrap();
    jpeg.set_exif(Some(Bytes::from(exif(6))));
    let mut xmp = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
    xmp.extend_from_slice(XMP);
    let iptc = b"Photoshop 3.0\08BIM\x04\x04\0\0\0\0\0\x10\x1c\x02\x50\0\x0cDr. Beispiel".to_vec();
    let at = 1;
    let segments = jpeg.segments_mut();
    segments.insert(at, JpegSegment::new_with_contents(0xE1, Bytes::from(xmp)));
    segments.insert(at, JpegSegment::new_with_contents(0xED, Bytes::from(iptc)));
    segments.insert(
        at,
        JpegSegment::new_with_contents(0xFE, Bytes::from_static(b"shot at home, 52.52N")),
    );
    let mut out = jpeg.encoder().bytes().to_vec();
    out.extend_from_slice(b"SEFT vendor trailer GPS 52.5200 13.4100");
    out
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> PngChunk {
    PngChunk::new(*kind, Bytes::copy_from_slice(data))
}

/// A PNG of [`upright`] with `tEXt`, `zTXt`-free `iTXt` XMP, `eXIf` with
/// GPS (orientation 1) and `tIME`.
pub fn png() -> Vec<u8> {
    let mut encoded = Vec::new();
    image::DynamicImage::ImageRgb8(upright())
        .write_to(
            &mut std::io::Cursor::new(&mut encoded),
            image::ImageFormat::Png,
        )
        .unwrap();
    let mut png = Png::from_bytes(Bytes::from(encoded)).unwrap();
    let mut itxt = b"XML:com.adobe.xmp\0\0\0\0\0".to_vec();
    itxt.extend_from_slice(XMP);
    let chunks = png.chunks_mut();
    chunks.insert(1, png_chunk(b"tEXt", b"Author\0Dr. Beispiel"));
    chunks.insert(1, png_chunk(b"iTXt", &itxt));
    chunks.insert(1, png_chunk(b"tIME", &[0x07, 0xEA, 11, 28, 9, 20, 0]));
    png.set_exif(Some(Bytes::from(exif(1))));
    png.encoder().bytes().to_vec()
}

/// A lossless WebP of [`upright`] with `EXIF` (GPS, orientation 1) and
/// `XMP ` chunks.
pub fn webp() -> Vec<u8> {
    let mut encoded = Vec::new();
    image::DynamicImage::ImageRgb8(upright())
        .write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut encoded))
        .unwrap();
    let mut webp = WebP::from_bytes(Bytes::from(encoded)).unwrap();
    webp.chunks_mut().push(RiffChunk::new(
        *b"XMP ",
        RiffContent::Data(Bytes::from_static(XMP)),
    ));
    webp.set_exif(Some(Bytes::from(exif(1))));
    webp.encoder().bytes().to_vec()
}

/// A one-page PDF showing `text`, without document information or XMP:
/// nothing to strip, so it is archived byte for byte.
pub fn plain_pdf(text: &str) -> Vec<u8> {
    let mut doc = one_page(text);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn one_page(text: &str) -> lopdf::Document {
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.7");
    let pages_id = doc.new_object_id();
    let content = doc.add_object(Stream::new(
        dictionary! {},
        format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET").into_bytes(),
    ));
    let font = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
    });
    let page = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content,
        "Resources" => dictionary! { "Font" => dictionary! { "F1" => font } },
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1,
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    doc
}

/// A one-page PDF with document information (author, title, producer,
/// creation date) and an XMP stream on the catalog.
pub fn pdf() -> Vec<u8> {
    use lopdf::{Object, Stream, dictionary};
    let mut doc = one_page("Befund");
    let xmp = doc.add_object(Stream::new(
        dictionary! { "Type" => "Metadata", "Subtype" => "XML" },
        XMP.to_vec(),
    ));
    doc.catalog_mut().unwrap().set("Metadata", xmp);
    let info = doc.add_object(dictionary! {
        "Author" => Object::string_literal("Dr. Beispiel"),
        "Title" => Object::string_literal("Befund Erika Mustermann"),
        "Producer" => Object::string_literal("ScanApp 3.1"),
        "CreationDate" => Object::string_literal("D:20261128092000+01'00'"),
    });
    doc.trailer.set("Info", info);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// Decodes an image and applies its Exif orientation, as a viewer would.
pub fn displayed(bytes: &[u8]) -> RgbImage {
    use image::ImageDecoder;
    let mut decoder = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .unwrap();
    let orientation = decoder.orientation().unwrap();
    let mut image = image::DynamicImage::from_decoder(decoder).unwrap();
    image.apply_orientation(orientation);
    image.to_rgb8()
}
