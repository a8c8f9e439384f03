//! The sealed columns of the store and the [`Place`] each blob is bound to
//! (associated data: table, column, row). `keys rotate-at-rest` walks
//! [`COLUMNS`]; a new sealed column must be added there. Rows of messages
//! are bound to their [`MessageRef`] (source and message token), the name
//! the row itself keeps.

use super::MessageRef;
use crate::seal::Place;

pub fn quarantine_event(r: &MessageRef) -> Place<'_> {
    Place::message("quarantine", "sealed_event", &r.source, &r.token)
}

pub fn quarantine_detail(r: &MessageRef) -> Place<'_> {
    Place::message("quarantine", "sealed_detail", &r.source, &r.token)
}

pub fn held_part(r: &MessageRef) -> Place<'_> {
    Place::message("held_parts", "sealed_event", &r.source, &r.token)
}

pub fn transcript_entry(r: &MessageRef) -> Place<'_> {
    Place::message("transcript_messages", "sealed_entry", &r.source, &r.token)
}

pub fn conflict<'a>(r: &'a MessageRef, digest: &'a str) -> Place<'a> {
    Place::conflict("conflicts", "sealed_event", &r.source, &r.token, digest)
}

pub fn deletion_command(deletion_id: &str) -> Place<'_> {
    Place::opaque("deletions", "sealed_command", deletion_id)
}

/// An undecrypted Matrix event, by its message token.
pub fn undecrypted_event(event_token: &str) -> Place<'_> {
    Place::id("matrix_undecrypted", "sealed_event", event_token)
}

/// A retraction waiting for its held target ([`super::Store::record_pending_redaction`]).
pub fn pending_redaction(r: &MessageRef) -> Place<'_> {
    Place::message(
        "pending_redactions",
        "sealed_redaction",
        &r.source,
        &r.token,
    )
}

pub fn adt_patient(patient_id: &str) -> Place<'_> {
    Place::id("adt_patients", "sealed_identifiers", patient_id)
}

pub fn adt_encounter(token: &str) -> Place<'_> {
    Place::id("adt_encounters", "sealed_identifier", token)
}

/// A sealed column: its table, the columns that key a row as text (SQL
/// expressions, in the order its [`Place`] takes them) and how the place
/// is built from them.
pub struct Column {
    pub table: &'static str,
    pub column: &'static str,
    pub keys: &'static [&'static str],
    pub place: for<'a> fn(&'a [String]) -> Place<'a>,
}

/// Every sealed column of the store.
pub const COLUMNS: &[Column] = &[
    Column {
        table: "quarantine",
        column: "sealed_event",
        keys: &["source", "message_token"],
        place: |k| Place::message("quarantine", "sealed_event", &k[0], &k[1]),
    },
    Column {
        table: "quarantine",
        column: "sealed_detail",
        keys: &["source", "message_token"],
        place: |k| Place::message("quarantine", "sealed_detail", &k[0], &k[1]),
    },
    Column {
        table: "held_parts",
        column: "sealed_event",
        keys: &["source", "message_token"],
        place: |k| Place::message("held_parts", "sealed_event", &k[0], &k[1]),
    },
    Column {
        table: "transcript_messages",
        column: "sealed_entry",
        keys: &["source", "message_token"],
        place: |k| Place::message("transcript_messages", "sealed_entry", &k[0], &k[1]),
    },
    Column {
        table: "conflicts",
        column: "sealed_event",
        keys: &["source", "message_token", "digest"],
        place: |k| Place::conflict("conflicts", "sealed_event", &k[0], &k[1], &k[2]),
    },
    Column {
        table: "deletions",
        column: "sealed_command",
        keys: &["deletion_id"],
        place: |k| deletion_command(&k[0]),
    },
    Column {
        table: "matrix_undecrypted",
        column: "sealed_event",
        keys: &["event_token"],
        place: |k| undecrypted_event(&k[0]),
    },
    Column {
        table: "pending_redactions",
        column: "sealed_redaction",
        keys: &["source", "redaction_token"],
        place: |k| Place::message("pending_redactions", "sealed_redaction", &k[0], &k[1]),
    },
    Column {
        table: "adt_patients",
        column: "sealed_identifiers",
        keys: &["patient_id"],
        place: |k| adt_patient(&k[0]),
    },
    Column {
        table: "adt_encounters",
        column: "sealed_identifier",
        keys: &["token"],
        place: |k| adt_encounter(&k[0]),
    },
    Column {
        table: "audit_trail",
        column: "sealed_reason",
        keys: &["CAST(seq AS TEXT)"],
        place: |k| super::audit::reason_place(&k[0]),
    },
];
