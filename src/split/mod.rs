//! Split messages ("message x of y", DSK II.2): a communication the
//! messenger split into several messages is archived as a group.
//!
//! Parts are held in the store (sealed) until every index `1..=count` is
//! there or `schedule.split_wait` passed since the first part; then the group
//! is released: each part becomes its own Communication or DocumentReference
//! carrying the `message-part` extension (group, index, count), so the parts
//! are linked by their shared group id. The group is decided once: if any
//! part is relevant, every part is archived. A group released with parts
//! missing marks every archived part as incomplete (see [`mark_incomplete`])
//! and is counted in `status`. A part that arrives after its group was
//! released is archived on its own, with its part extension.
//!
//! This module's functions are pure; `crate::pipeline` holds parts and
//! releases groups.

use serde_json::{Value, json};

use crate::classify::{Decision, Outcome};
use crate::event::Message;
use crate::map::PART_EXTENSION;
use crate::seal::Sealer;

/// What one split sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepSummary {
    /// Groups released.
    pub released: usize,
    /// Groups whose release hit a transient failure (retried next sweep).
    pub deferred: usize,
    /// Parts processed on their own (held while their group was released).
    pub orphans: usize,
}

/// How long a claimed group is reserved for one releaser. A worker that
/// dies mid-release holds it no longer than this; a release that overruns
/// it may be repeated by another worker, which idempotent archiving makes
/// harmless.
pub const LEASE_MS: i64 = 30_000;

/// Whether a message is one part of several and so waits for its group.
pub fn is_split(m: &Message) -> bool {
    m.part.as_ref().is_some_and(|p| p.count > 1)
}

/// The store's key of a message's group: a keyed token of source,
/// conversation and the messenger's group id, so groups of different
/// conversations never mix and the table holds no identifiers.
pub fn group_token(sealer: &Sealer, m: &Message) -> Option<String> {
    let part = m.part.as_ref()?;
    Some(sealer.token(&[
        "split-group",
        &m.key.source,
        &m.conversation,
        &part.group_id,
    ]))
}

/// What every part of a released group shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupContext {
    /// The decision of the first relevant part, if any part is relevant.
    pub relevant: Option<Decision>,
    /// Indexes of parts that never arrived; empty for a complete group.
    pub missing: Vec<u32>,
    /// The group's part count.
    pub count: u32,
    /// This part arrived after its group was released incomplete (a part
    /// that was missing then): not deleted on its own rule, since the
    /// group's other parts may have been relevant.
    pub late: bool,
}

impl GroupContext {
    /// A part's decision within its group: its own rule's, unless that says
    /// not relevant while another part is relevant; then the group's.
    pub fn decision(&self, own: Decision) -> Decision {
        match (&own.outcome, &self.relevant) {
            (Outcome::NotRelevant { .. }, Some(group)) => group.clone(),
            _ => own,
        }
    }
}

/// "incomplete: part 2 of 3 missing", "incomplete: parts 2, 4 of 5 missing".
pub fn marker_text(missing: &[u32], count: u32) -> String {
    let list: Vec<String> = missing.iter().map(u32::to_string).collect();
    let noun = if missing.len() == 1 { "part" } else { "parts" };
    format!("incomplete: {noun} {} of {count} missing", list.join(", "))
}

/// Marks the primary resource of a mapped transaction as part of an
/// incomplete group: the `message-part` extension gains `complete = false`
/// and one `missing` entry per absent index; a Communication gets a note
/// and a DocumentReference's description a suffix with [`marker_text`].
/// Nothing changes when `missing` is empty.
pub fn mark_incomplete(bundle: &mut Value, primary_entry: usize, missing: &[u32], count: u32) {
    if missing.is_empty() {
        return;
    }
    let text = marker_text(missing, count);
    let resource = &mut bundle["entry"][primary_entry]["resource"];
    if let Some(extensions) = resource["extension"].as_array_mut() {
        for ext in extensions.iter_mut().filter(|e| e["url"] == PART_EXTENSION) {
            if let Some(parts) = ext["extension"].as_array_mut() {
                parts.push(json!({"url": "complete", "valueBoolean": false}));
                parts.extend(
                    missing
                        .iter()
                        .map(|i| json!({"url": "missing", "valueUnsignedInt": i})),
                );
            }
        }
    }
    match resource["resourceType"].as_str() {
        Some("Communication") => {
            let note = json!({"text": text});
            match resource["note"].as_array_mut() {
                Some(notes) => notes.push(note),
                None => resource["note"] = json!([note]),
            }
        }
        Some("DocumentReference") => {
            let described = match resource["description"].as_str() {
                Some(d) => format!("{d} [{text}]"),
                None => format!("[{text}]"),
            };
            resource["description"] = Value::String(described);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
