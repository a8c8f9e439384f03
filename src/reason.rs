//! Why a message is quarantined: one enum for every reason code, decided at
//! decoding (`event`), at admission (`intake`), by the pipeline (resolve,
//! media, map, KIS) or by split release. The codes are stable: operators,
//! `status`, `quarantine list`, docs and the store use these spellings.

use std::fmt;

/// A quarantine reason. [`Reason::as_str`] is its stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // Held at decoding (`crate::event`).
    /// A message type this version does not know how to archive (a new
    /// WhatsApp `type`, `unsupported`/`unknown`, an unknown Matrix msgtype).
    UnsupportedMessageType,
    /// End-to-end encrypted content that this worker cannot decrypt.
    EncryptedContent,
    /// One entry of a batch is malformed (the detail names the field); its
    /// neighbours are decoded as usual.
    InvalidEntry,
    /// The messenger reported an error on the entry instead of (or beside)
    /// its content (a WhatsApp `errors` array); the detail names the code.
    MessageError,
    /// The downloaded medium's length differs from the size the messenger
    /// declared (Matrix `info.size`): truncated or substituted bytes.
    MediaSizeMismatch,
    /// The downloaded bytes are recognisably of another kind than the
    /// declared media type (Matrix `info.mimetype`).
    MediaTypeMismatch,
    /// An end-to-end-encrypted Matrix event whose room keys did not arrive
    /// within `matrix.e2ee.undecryptable_after`; released when a decrypted
    /// copy arrives later (`Decoded::supersedes_hold`).
    Undecryptable,
    /// A decrypted Matrix event from a sender device that the configured
    /// trust policy (`matrix.e2ee.trust`) does not accept.
    UntrustedDevice,

    // Admission (`crate::intake`).
    /// `sent_at` lies further ahead of the worker's clock than `pipeline.max_clock_skew`.
    TimestampInFuture,
    /// The media type is not in `media.allowed_types`.
    UnsupportedMediaType,
    /// Another content already arrived under this message id.
    DuplicateIdConflict,

    // Resolution (`crate::resolve`).
    /// No patient found for the event's case reference or the link.
    UnknownPatient,
    /// The KIS search for the patient failed or answered more than one.
    PatientSearchFailed,
    /// A phone-number-only match, waiting for an operator's confirmation.
    PatientCandidate,
    /// Several patients share the conversation's phone number.
    PatientAmbiguous,
    /// The patient is known, the event's encounter is not in the KIS.
    UnknownEncounter,
    /// The conversation resolves to no patient (no case reference, no
    /// link, no identity-map phone number) and no named rule decided the
    /// message: held until a reviewer links or dismisses the conversation
    /// (`resolve.unresolved = "hold"`).
    UnresolvedConversation,

    // Edits (`crate::pipeline`).
    /// An edit (Matrix `m.replace`) of an archived message by another
    /// sender, or filed to another patient, than the message it corrects
    /// (Matrix "Validity of replacement events"): held, not filed as a
    /// correction.
    InvalidReplacement,

    // Media (`crate::media`).
    /// The content's SHA-256 differs from the one the messenger declared,
    /// or an encrypted attachment does not decrypt.
    MediaHashMismatch,
    /// The medium exceeds `media.max_bytes`.
    MediaTooLarge,
    /// No media API is configured for a medium by reference.
    MediaApiNotConfigured,
    /// The media API refused the medium, or the messenger has not sent its
    /// id yet (a WhatsApp history medium, superseded by the later copy that
    /// names it).
    MediaUnavailable,
    /// The media API failed transiently (retried, never recorded).
    MediaTransient,
    /// The media API's answer is not understood.
    MediaApiInvalid,

    // Minimisation (`crate::media::minimise`, docs/media-minimisation.md).
    /// The content's metadata cannot be removed (it does not parse as the
    /// format it sniffs as, a PDF is encrypted, or its type is neither
    /// strippable nor in `media.unstripped_types`).
    MetadataUnstrippable,
    /// A rule asks for review before archive: held sealed until a reviewer
    /// gives the rectangles to black out (`quarantine redact`).
    ReviewRedaction,
    /// The reviewer's rectangles could not be applied (outside the image,
    /// not an image, or the content changed since the review).
    RedactionFailed,

    // Archive (`crate::pipeline::Archiver`).
    /// The message cannot be mapped to FHIR.
    MappingFailed,
    /// The KIS refused the transaction (4xx other than 408/429).
    KisRejected,
    /// The KIS answered without a location for every entry.
    KisIncompleteAnswer,
    /// The resource read back from the KIS differs from what was sent, or
    /// could not be read (DSK I.10): archived there, but not deleted here.
    KisReadBackMismatch,

    // Split release (`crate::split`).
    /// A second part with an index already released in its group.
    SplitDuplicatePart,
    /// A part of a group released with parts missing, none of those present
    /// relevant: the missing part may be relevant, which would make every
    /// part relevant (the group rule), so the part is held, not deleted on
    /// its own rule's say.
    SplitIncomplete,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 33] = [
        Self::UnsupportedMessageType,
        Self::EncryptedContent,
        Self::InvalidEntry,
        Self::MessageError,
        Self::MediaSizeMismatch,
        Self::MediaTypeMismatch,
        Self::Undecryptable,
        Self::UntrustedDevice,
        Self::TimestampInFuture,
        Self::UnsupportedMediaType,
        Self::DuplicateIdConflict,
        Self::UnknownPatient,
        Self::PatientSearchFailed,
        Self::PatientCandidate,
        Self::PatientAmbiguous,
        Self::UnknownEncounter,
        Self::UnresolvedConversation,
        Self::InvalidReplacement,
        Self::MediaHashMismatch,
        Self::MediaTooLarge,
        Self::MediaApiNotConfigured,
        Self::MediaUnavailable,
        Self::MediaTransient,
        Self::MediaApiInvalid,
        Self::MetadataUnstrippable,
        Self::ReviewRedaction,
        Self::RedactionFailed,
        Self::MappingFailed,
        Self::KisRejected,
        Self::KisIncompleteAnswer,
        Self::KisReadBackMismatch,
        Self::SplitDuplicatePart,
        Self::SplitIncomplete,
    ];

    /// Reasons a conversation-level decision (link or dismissal) applies
    /// to: the message is held only because its patient is not known.
    pub const IDENTITY: [Reason; 4] = [
        Self::UnresolvedConversation,
        Self::PatientCandidate,
        Self::PatientAmbiguous,
        Self::UnknownPatient,
    ];

    /// The stable code, e.g. `unknown_patient`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedMessageType => "unsupported_message_type",
            Self::EncryptedContent => "encrypted_content",
            Self::InvalidEntry => "invalid_entry",
            Self::MessageError => "message_error",
            Self::MediaSizeMismatch => "media_size_mismatch",
            Self::MediaTypeMismatch => "media_type_mismatch",
            Self::Undecryptable => "undecryptable",
            Self::UntrustedDevice => "untrusted_device",
            Self::TimestampInFuture => "timestamp_in_future",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::DuplicateIdConflict => "duplicate_id_conflict",
            Self::UnknownPatient => "unknown_patient",
            Self::PatientSearchFailed => "patient_search_failed",
            Self::PatientCandidate => "patient_candidate",
            Self::PatientAmbiguous => "patient_ambiguous",
            Self::UnknownEncounter => "unknown_encounter",
            Self::UnresolvedConversation => "unresolved_conversation",
            Self::InvalidReplacement => "invalid_replacement",
            Self::MediaHashMismatch => "media_hash_mismatch",
            Self::MediaTooLarge => "media_too_large",
            Self::MediaApiNotConfigured => "media_api_not_configured",
            Self::MediaUnavailable => "media_unavailable",
            Self::MediaTransient => "media_transient",
            Self::MediaApiInvalid => "media_api_invalid",
            Self::MetadataUnstrippable => "metadata_unstrippable",
            Self::ReviewRedaction => "review_redaction",
            Self::RedactionFailed => "redaction_failed",
            Self::MappingFailed => "mapping_failed",
            Self::KisRejected => "kis_rejected",
            Self::KisIncompleteAnswer => "kis_incomplete_answer",
            Self::KisReadBackMismatch => "kis_read_back_mismatch",
            Self::SplitDuplicatePart => "split_duplicate_part",
            Self::SplitIncomplete => "split_incomplete",
        }
    }

    /// The reason with code `code`, `None` for an unknown one.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == code)
    }

    /// Whether a conversation-level decision applies ([`Reason::IDENTITY`]).
    pub fn is_identity(self) -> bool {
        Self::IDENTITY.contains(&self)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_parse_back() {
        let mut codes: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len(), "codes distinct");
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.as_str()), Some(r));
        }
        assert_eq!(Reason::from_code("kis_incomplete"), None);
    }
}
