//! PDF metadata removal with `lopdf`: the document information dictionary
//! (trailer `/Info`: author, creator, producer, dates, title), XMP
//! streams (`/Metadata` of the catalog, pages, images, …) and application
//! private data (`/PieceInfo`). The document is saved anew from its
//! current revision, so earlier revisions of an incrementally updated
//! file, which may hold older metadata, are not carried over.

use bytes::Bytes;
use lopdf::{Document, Object};

use super::strip::{StripError, Stripped};

const PRIVATE_KEYS: [&[u8]; 2] = [b"Metadata", b"PieceInfo"];

pub(super) fn strip(bytes: Bytes) -> Result<Stripped, StripError> {
    let unparseable = || StripError::Unparseable("PDF");
    let mut doc = Document::load_mem(&bytes).map_err(|_| unparseable())?;
    if doc.is_encrypted() {
        return Err(StripError::Unparseable("encrypted PDF"));
    }
    let mut removed = usize::from(doc.trailer.remove(b"Info").is_some());
    for object in doc.objects.values_mut() {
        let dict = match object {
            Object::Dictionary(d) => d,
            Object::Stream(s) => &mut s.dict,
            _ => continue,
        };
        for key in PRIVATE_KEYS {
            removed += usize::from(dict.remove(key).is_some());
        }
    }
    if removed == 0 {
        return Ok(Stripped {
            bytes,
            removed,
            orientation: None,
        });
    }
    drop(bytes);
    doc.prune_objects();
    let mut out = Vec::new();
    doc.save_to(&mut out).map_err(|_| unparseable())?;
    Ok(Stripped {
        bytes: Bytes::from(out),
        removed,
        orientation: None,
    })
}
