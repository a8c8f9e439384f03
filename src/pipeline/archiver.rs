//! The archive path's only conversation with the KIS: map → FHIR
//! transaction (or MDM^T02 over MLLP) → read-back. Its errors become a
//! retry ([`Transient`]) or a [`Reason`] here and nowhere else.

use crate::map::{self, MapInput, MapSettings, Transaction};
use crate::media::minimise::Derivation;
use crate::push::mllp::{self, MllpConfig};
use crate::push::{
    Batcher, Confirmed, Kis, KisConfig, OutputMode, PushError, SetupError, readback,
};
use crate::reason::Reason;
use crate::split::{self, GroupContext};

use super::{Quarantine, Transient};

/// What the KIS made of an archive.
#[derive(Debug)]
pub enum Delivered {
    /// Every entry answered 2xx (and read back as sent): `resource` is the
    /// primary resource's `Type/id`, `resources` every entry's location.
    Confirmed {
        resource: String,
        resources: Vec<String>,
    },
    /// The KIS refused it, answered incompletely, or read back something
    /// else; or it cannot be mapped.
    Refused(Quarantine),
}

/// Marks on the mapped transaction: the archived resource a revision
/// replaces, the split group's incompleteness, and how the archived bytes
/// derive from the received ones (a Provenance `derivation` entity).
#[derive(Debug, Clone, Copy)]
pub struct Marks<'a> {
    pub revises: Option<&'a str>,
    pub group: &'a GroupContext,
    pub derivation: Option<&'a Derivation>,
}

/// Sends archives to the KIS.
#[derive(Debug, Clone)]
pub struct Archiver {
    kis: Kis,
    /// `kis.batch_max`: several messages per transaction.
    batcher: Batcher,
    settings: MapSettings,
    /// `kis.read_back`: compare the stored resource before archiving.
    read_back: bool,
    /// `kis.read_back_from_response`.
    read_back_from_response: bool,
    /// `kis.output` and its MLLP peer.
    output: OutputMode,
    mllp: MllpConfig,
    /// `kis.binary_upload_threshold`.
    binary_upload_threshold: u64,
}

impl Archiver {
    pub fn new(config: &KisConfig) -> Result<Self, SetupError> {
        let kis = Kis::new(config)?;
        Ok(Self {
            batcher: Batcher::new(kis.clone(), config.batch_max, config.batch_linger),
            kis,
            settings: MapSettings::from(config),
            read_back: config.read_back,
            read_back_from_response: config.read_back_from_response,
            output: config.output,
            mllp: config.mllp.clone(),
            binary_upload_threshold: config.binary_upload_threshold,
        })
    }

    /// `kis.binary_upload_threshold`: archived bytes longer than this are
    /// uploaded as a Binary of their own before the transaction.
    pub fn binary_upload_threshold(&self) -> u64 {
        self.binary_upload_threshold
    }

    pub fn kis(&self) -> &Kis {
        &self.kis
    }

    pub fn settings(&self) -> &MapSettings {
        &self.settings
    }

    pub fn output(&self) -> OutputMode {
        self.output
    }

    /// `kis.read_back`: whether the KIS answers reads.
    pub fn reads(&self) -> bool {
        self.read_back
    }

    /// The transaction `input` maps to, with `marks` applied. Pure.
    pub fn transaction(
        settings: &MapSettings,
        input: &MapInput<'_>,
        marks: Marks<'_>,
    ) -> Result<Transaction, map::MapError> {
        let mut tx = map::transaction(input, settings)?;
        if let Some(original) = marks.revises {
            map::provenance::link_revision(&mut tx.bundle, original);
        }
        if let Some(derivation) = marks.derivation {
            map::provenance::derived_from(&mut tx.bundle, input.message, derivation);
        }
        let group = marks.group;
        split::mark_incomplete(
            &mut tx.bundle,
            tx.primary_entry,
            &group.missing,
            group.count,
        );
        Ok(tx)
    }

    /// Maps `input`, uploads its spooled Binary ([`MapInput::binary`],
    /// `PUT Binary/{stable id}`, hashed while it streams), sends the
    /// transaction (FHIR, or MDM^T02 under `kis.output = "hl7v2_mdm"`)
    /// and, with `kis.read_back`, reads the FHIR resources (and the
    /// uploaded Binary, by hash) back and compares them with what was sent.
    pub async fn archive(
        &self,
        input: &MapInput<'_>,
        marks: Marks<'_>,
    ) -> Result<Delivered, Transient> {
        let refused = |q| Ok(Delivered::Refused(q));
        let Ok(tx) = Self::transaction(&self.settings, input, marks) else {
            return refused(Quarantine::new(Reason::MappingFailed));
        };
        let key = &input.message.key;
        let mdm = self.output == OutputMode::Hl7v2Mdm;
        let uploaded = match (input.binary, &input.message.body) {
            (Some(spool), crate::event::Body::Media(media)) if !mdm => {
                let id = map::stable_id(key, "Binary").to_string();
                let sent = self
                    .kis
                    .put_binary(&id, &media.mime_type, input.patient, spool)
                    .await;
                match sent {
                    Ok((_, streamed))
                        if streamed.len != spool.len() || streamed.hashes != *input.hashes =>
                    {
                        tracing::warn!("spooled medium changed before its upload");
                        let detail = "upload: the spooled bytes differ from their hashes";
                        return refused(Quarantine::with_detail(
                            Reason::KisReadBackMismatch,
                            detail,
                        ));
                    }
                    Ok((location, _)) => Some((location, media.mime_type.as_str(), spool.len())),
                    Err(e) => return self.push_failed(e),
                }
            }
            _ => None,
        };
        let sent = if mdm {
            mllp::send_mdm(&self.mllp, &tx, input.document_type, key, input.archived_at).await
        } else {
            self.batcher.transaction(&tx.bundle).await
        };
        let confirmed = match sent {
            Ok(c) if !self.read_back_from_response => Confirmed::at(c.locations),
            Ok(c) => c,
            Err(e) => return self.push_failed(e),
        };
        if self.read_back && !mdm {
            let identifier = map::identifier_value(key);
            let expected = readback::Expected {
                content: input.content,
                hashes: input.hashes,
                patient: input.patient,
                identifier: (&self.settings.identifier_system, &identifier),
                uploaded: uploaded.as_ref().map(|(location, content_type, len)| {
                    readback::Uploaded {
                        reference: location,
                        content_type,
                        len: *len,
                    }
                }),
            };
            match readback::check(&self.kis, &tx, &confirmed, &expected).await {
                Ok(()) => {}
                Err(readback::ReadBackError::Transient(_)) => {
                    return Err(Transient::at("read_back"));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "read-back check failed");
                    let detail = e.place();
                    return refused(Quarantine::with_detail(Reason::KisReadBackMismatch, detail));
                }
            }
        }
        let resource = confirmed.locations[if mdm { 0 } else { tx.primary_entry }].clone();
        let mut resources = confirmed.locations;
        if let Some((location, ..)) = uploaded {
            resources.push(location);
        }
        Ok(Delivered::Confirmed {
            resource,
            resources,
        })
    }

    /// A failed upload or transaction: retried, or quarantined.
    fn push_failed(&self, e: PushError) -> Result<Delivered, Transient> {
        match e {
            PushError::Transient { retry_after, .. } => Err(Transient {
                hint: retry_after,
                ..Transient::at("push")
            }),
            PushError::Rejected { status, outcome } => {
                tracing::warn!(status, "KIS rejected a request");
                Ok(Delivered::Refused(Quarantine {
                    detail: outcome.map(|o| o.to_string().into_bytes()),
                    ..Quarantine::new(Reason::KisRejected)
                }))
            }
            PushError::Incomplete(detail) => Ok(Delivered::Refused(Quarantine::with_detail(
                Reason::KisIncompleteAnswer,
                detail,
            ))),
        }
    }
}
