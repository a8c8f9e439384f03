//! Read-back check (DSK I.10): after the KIS confirmed a transaction, read
//! the stored primary resource (and its Binary) back and compare content and
//! hashes with what is about to be recorded as archived. Only a match lets
//! the archive, its log leaf and its deletion command be written. The
//! stored resource is taken from the transaction-response when the KIS
//! returned it there (`Prefer: return=representation`); it is the server's
//! own statement of what it stored, as a read's answer is. Otherwise, or
//! with `kis.read_back_from_response = false`, it is read (`GET`).
//!
//! A KIS that does not allow reads can turn this off (`kis.read_back =
//! false`); then a 2xx transaction answer alone confirms the archive, a
//! weaker guarantee (docs/kis-output.md).

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Confirmed, Kis, PushError, type_and_id};
use crate::map::{Primary, Transaction, sha256_extension};
use crate::prove::ContentHashes;

/// What the read-back expects the KIS to hold.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The archived bytes (text as UTF-8, or the medium).
    pub content: &'a [u8],
    pub hashes: &'a ContentHashes,
    /// Literal `Patient/{id}` the resource must be linked to.
    pub patient: &'a str,
    /// `system`, `value` of the message identifier.
    pub identifier: (&'a str, &'a str),
    /// The Binary uploaded before the transaction (a medium above
    /// `kis.binary_upload_threshold`; `content` is then empty).
    pub uploaded: Option<Uploaded<'a>>,
}

/// A Binary uploaded on its own ([`Kis::put_binary`]).
#[derive(Debug, Clone, Copy)]
pub struct Uploaded<'a> {
    /// `Binary/{id}` as the KIS confirmed it.
    pub reference: &'a str,
    pub content_type: &'a str,
    /// Bytes uploaded.
    pub len: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// The read failed in a way worth retrying (the whole step is repeated;
    /// the transaction is idempotent).
    #[error("read-back unavailable: {0}")]
    Transient(PushError),
    /// The KIS refused the read (e.g. 403, 404): the archive is unconfirmed.
    #[error("read-back refused with HTTP {0}")]
    Refused(u16),
    /// What the KIS holds differs from what was sent; names the element.
    #[error("read-back mismatch at {0}")]
    Mismatch(&'static str),
}

impl ReadBackError {
    /// The element or step that failed, for a sealed quarantine detail.
    pub fn place(&self) -> String {
        match self {
            Self::Transient(_) => "read".into(),
            Self::Refused(s) => format!("read refused: HTTP {s}"),
            Self::Mismatch(p) => format!("mismatch: {p}"),
        }
    }
}

fn read_err(e: PushError) -> ReadBackError {
    match e {
        PushError::Rejected { status, .. } => ReadBackError::Refused(status),
        PushError::Incomplete(_) => ReadBackError::Mismatch("response body"),
        t @ PushError::Transient { .. } => ReadBackError::Transient(t),
    }
}

fn ensure(ok: bool, place: &'static str) -> Result<(), ReadBackError> {
    if ok {
        Ok(())
    } else {
        Err(ReadBackError::Mismatch(place))
    }
}

fn has_identifier(resource: &Value, (system, value): (&str, &str)) -> bool {
    resource["identifier"].as_array().is_some_and(|ids| {
        ids.iter()
            .any(|i| i["system"] == system && i["value"] == value)
    })
}

/// The stored resource at `reference`: as the transaction-response
/// returned it, or else read (`GET`).
async fn stored(kis: &Kis, confirmed: &Confirmed, reference: &str) -> Result<Value, ReadBackError> {
    if let Some(resource) = confirmed.returned(reference) {
        crate::telemetry::measure::read_back_source("response");
        return Ok(resource.clone());
    }
    crate::telemetry::measure::read_back_source("read");
    kis.read(reference).await.map_err(read_err)
}

/// Reads back what `confirmed` located for `tx` and compares it with
/// `expected`. `Ok(())` only if content, SHA-256 (recomputed and declared),
/// SHA-1 (DocumentReference), identifier and subject all match. An
/// uploaded Binary is read as a stream ([`Kis::read_binary`]) and compared
/// by length, SHA-256 and SHA-1, in bounded memory.
pub async fn check(
    kis: &Kis,
    tx: &Transaction,
    confirmed: &Confirmed,
    expected: &Expected<'_>,
) -> Result<(), ReadBackError> {
    let _stage = crate::telemetry::measure::Stage::start("readback");
    let primary_ref = confirmed
        .locations
        .get(tx.primary_entry)
        .ok_or(ReadBackError::Mismatch("transaction locations"))?;
    let primary = stored(kis, confirmed, primary_ref).await?;
    ensure(
        primary["resourceType"] == tx.primary.resource_type(),
        "resourceType",
    )?;
    ensure(has_identifier(&primary, expected.identifier), "identifier")?;
    // The subject as a reference to the patient, relative or absolute,
    // versioned or not (a server may store either form).
    ensure(super::subject_is(&primary, expected.patient), "subject")?;
    // What travels beside the content and is deleted with the messenger
    // copy: a medium's caption (`description`) and file name
    // (`attachment.title`), a forward's note and a split group's
    // "incomplete" marker (`note`). Stored as sent, byte for byte.
    let sent = &tx.bundle["entry"][tx.primary_entry]["resource"];
    let notes = |r: &Value| -> Vec<Option<String>> {
        r["note"]
            .as_array()
            .map(|n| {
                n.iter()
                    .map(|a| a["text"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    ensure(primary["description"] == sent["description"], "description")?;
    ensure(
        primary["content"][0]["attachment"]["title"] == sent["content"][0]["attachment"]["title"],
        "attachment.title",
    )?;
    ensure(notes(&primary) == notes(sent), "note")?;
    let want_sha256 = expected.hashes.sha256_hex();
    match tx.primary {
        Primary::Communication => {
            let payload = &primary["payload"][0];
            // A string, or a text with control characters as a text/plain
            // attachment (`map::communication::is_fhir_string`).
            let text = crate::map::payload_text(payload)
                .ok_or(ReadBackError::Mismatch("payload.contentString"))?;
            ensure(
                hex::encode(Sha256::digest(&text)) == want_sha256,
                "payload.contentString sha256",
            )?;
            ensure(text == expected.content, "payload.contentString")?;
            ensure(
                sha256_extension(&payload["extension"]) == Some(want_sha256.as_str()),
                "payload content-sha256 extension",
            )?;
        }
        Primary::DocumentReference => {
            let attachment = &primary["content"][0]["attachment"];
            ensure(
                sha256_extension(&attachment["extension"]) == Some(want_sha256.as_str()),
                "attachment content-sha256 extension",
            )?;
            ensure(
                attachment["hash"].as_str()
                    == Some(crate::map::document::sha1_base64(&expected.hashes.sha1).as_str()),
                "attachment.hash",
            )?;
            let len = expected
                .uploaded
                .map_or(expected.content.len() as u64, |u| u.len);
            ensure(attachment["size"].as_u64() == Some(len), "attachment.size")?;
            let binary_ref = attachment["url"]
                .as_str()
                .and_then(|u| type_and_id(u, kis.base_url()))
                .filter(|r| r.starts_with("Binary/"))
                .ok_or(ReadBackError::Mismatch("attachment.url"))?;
            if let Some(uploaded) = expected.uploaded {
                ensure(binary_ref == uploaded.reference, "attachment.url")?;
                let held = kis
                    .read_binary(&binary_ref, uploaded.content_type)
                    .await
                    .map_err(read_err)?;
                ensure(held.len == uploaded.len, "Binary.data length")?;
                ensure(
                    held.hashes.sha256 == expected.hashes.sha256,
                    "Binary.data sha256",
                )?;
                ensure(held.hashes.sha1 == expected.hashes.sha1, "Binary.data sha1")?;
                return Ok(());
            }
            let confirmed_binary = confirmed.locations.contains(&binary_ref);
            ensure(confirmed_binary, "attachment.url")?;
            let binary = stored(kis, confirmed, &binary_ref).await?;
            let data = binary["data"]
                .as_str()
                .and_then(crate::map::decode_base64_binary)
                .ok_or(ReadBackError::Mismatch("Binary.data"))?;
            ensure(
                hex::encode(Sha256::digest(&data)) == want_sha256,
                "Binary.data sha256",
            )?;
            ensure(data == expected.content, "Binary.data")?;
        }
    }
    Ok(())
}
