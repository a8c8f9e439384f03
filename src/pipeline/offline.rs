//! `chartbridge map`: the pure half of the pipeline — classification and
//! the mapping the [`Archiver`] sends, with its marks — without any IO.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::archiver::Marks;
use super::{Archiver, Ready};
use crate::classify::{Outcome, Rules};
use crate::event::{self, FhirRef};
use crate::map::MapSettings;
use crate::media::minimise::{Minimised, Review, minimise};
use crate::media::spool::Content;
use crate::prove::ContentHashes;
use crate::split::GroupContext;

/// `chartbridge map`: the Bundle each message of `payload` would become,
/// without any IO. The patient is the event's literal case reference or
/// `patient`; media must be inline.
pub fn offline_map(
    payload: &[u8],
    rules: &Rules,
    settings: &MapSettings,
    patient: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Value>, String> {
    let decoded = event::decode(payload, usize::MAX).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let unstripped =
        crate::media::MediaTypes::new(crate::media::MediaConfig::default().unstripped_types);
    for m in &decoded.messages {
        let case_patient = m.case.as_ref().and_then(|c| match &c.patient {
            FhirRef::Literal { reference } => Some(reference.clone()),
            FhirRef::Identifier { .. } => None,
        });
        let encounter = m.case.as_ref().and_then(|c| match &c.encounter {
            Some(FhirRef::Literal { reference }) => Some(reference.clone()),
            _ => None,
        });
        let patient = case_patient.or(patient.map(str::to_owned));
        let decision = GroupContext::default().decision(rules.classify(m, patient.is_some()));
        let document_type = match decision.outcome {
            Outcome::NotRelevant { retention } => {
                out.push(json!({
                    "message": m.key.to_string(),
                    "decision": "not-relevant",
                    "rule": decision.rule,
                    "retention": humantime::format_duration(retention).to_string(),
                }));
                continue;
            }
            Outcome::Relevant { document_type } => document_type,
        };
        let patient = patient.ok_or_else(|| {
            format!(
                "{}: relevant, but no literal patient (give --patient)",
                m.key
            )
        })?;
        let content = m
            .inline_content()
            .ok_or_else(|| format!("{}: offline mapping needs inline media", m.key))?;
        // Minimised as the worker does under the default
        // `media.unstripped_types`; review is not asked offline.
        let prepared = match minimise(
            m,
            Content::Memory(Cow::Borrowed(content)),
            ContentHashes::of(content),
            Review::NotAsked,
            |t| unstripped.contains(t),
        ) {
            Minimised::Archive(prepared) => prepared,
            refused => {
                let reason = match refused {
                    Minimised::Refuse(reason) => reason,
                    _ => crate::reason::Reason::ReviewRedaction,
                };
                out.push(json!({
                    "message": m.key.to_string(),
                    "decision": "quarantine",
                    "reason": reason.as_str(),
                }));
                continue;
            }
        };
        let ready = Ready {
            rule: decision.rule,
            document_type,
            patient,
            encounter,
            content: prepared.content,
            hashes: prepared.hashes,
            derivation: prepared.derivation,
            revises: None,
        };
        let marks = Marks {
            revises: None,
            group: &GroupContext::default(),
            derivation: Some(&ready.derivation),
        };
        let tx = Archiver::transaction(settings, &ready.input(m, now), marks)
            .map_err(|e| e.to_string())?;
        out.push(tx.bundle);
    }
    Ok(out)
}
