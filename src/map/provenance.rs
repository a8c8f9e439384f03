//! Provenance: what the bridge created, when, from which messenger entity,
//! with the content's SHA-256.

use fhir_sdk::r4b::codes::ProvenanceEntityRole;
use fhir_sdk::r4b::resources::{Provenance, ProvenanceAgent, ProvenanceEntity};
use serde_json::Value;

use super::fhir::{
    build_err, coding, concept_of, display_only, identifier, instant, literal, logical,
    string_extension, to_json,
};
use super::{MapError, MapInput, MapSettings, SHA256_EXTENSION, identifier_value};

const PARTICIPANT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";

pub(super) fn build(
    input: &MapInput<'_>,
    settings: &MapSettings,
    targets: &[&str],
) -> Result<Value, MapError> {
    let m = input.message;
    let agent = ProvenanceAgent::builder()
        .r#type(concept_of(coding(
            PARTICIPANT_TYPE,
            "assembler",
            "Assembler",
        )?)?)
        .who(display_only(&settings.agent_name)?)
        .build()
        .map_err(build_err("Provenance.agent"))?;
    let entity = ProvenanceEntity::builder()
        .role(ProvenanceEntityRole::Source)
        .what(logical(
            identifier(&settings.identifier_system, &identifier_value(&m.key))?,
            Some(&format!("{} message", m.key.source)),
        )?)
        .build()
        .map_err(build_err("Provenance.entity"))?;
    let mut entities = vec![Some(entity)];
    if let Some(original) = &m.replaces {
        // An edit: the corrected message is the entity this one revises
        // (R4 ProvenanceEntityRole `revision`). `what.reference` is set by
        // `link_revision` once the original's KIS resource is known.
        let revised = ProvenanceEntity::builder()
            .role(ProvenanceEntityRole::Revision)
            .what(logical(
                identifier(
                    &settings.identifier_system,
                    &format!("{}:{original}", m.key.source),
                )?,
                Some(&format!("corrected {} message", m.key.source)),
            )?)
            .build()
            .map_err(build_err("Provenance.entity"))?;
        entities.push(Some(revised));
    }
    if let Some(forwarded) = m.forwarded {
        // Forwarded content: the sender quotes what someone else wrote
        // (R4 ProvenanceEntityRole `quotation`).
        let quoted = ProvenanceEntity::builder()
            .role(ProvenanceEntityRole::Quotation)
            .what(display_only(forwarded.note())?)
            .build()
            .map_err(build_err("Provenance.entity"))?;
        entities.push(Some(quoted));
    }
    let targets = targets
        .iter()
        .map(|t| literal(t).map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    let p = Provenance::builder()
        .extension(vec![string_extension(
            SHA256_EXTENSION,
            &input.hashes.sha256_hex(),
        )?])
        .target(targets)
        .recorded(instant(input.archived_at)?)
        .agent(vec![Some(agent)])
        .entity(entities)
        .build()
        .map_err(build_err("Provenance"))?;
    Ok(to_json(&p))
}

/// Adds the literal reference `original` (`Type/id` of the corrected
/// message's KIS resource) to the `revision` entity of the Provenance in
/// `bundle`, next to its identifier. No-op without such an entity.
pub fn link_revision(bundle: &mut Value, original: &str) {
    let Some(entries) = bundle["entry"].as_array_mut() else {
        return;
    };
    for entry in entries {
        let resource = &mut entry["resource"];
        if resource["resourceType"] != "Provenance" {
            continue;
        }
        if let Some(entities) = resource["entity"].as_array_mut() {
            for e in entities.iter_mut().filter(|e| e["role"] == "revision") {
                e["what"]["reference"] = Value::String(original.to_owned());
            }
        }
    }
}

/// URL of the extension on a Provenance `derivation` entity naming how the
/// archived bytes were derived from the received ones (`valueCode`:
/// `metadata-removed`, `not-stripped`, `redacted`).
pub const TRANSFORMATION_EXTENSION: &str =
    "https://chartbridge.dev/fhir/StructureDefinition/transformation";

/// Adds to the Provenance in `bundle` the received content as an entity of
/// role `derivation` (W3C PROV `wasDerivedFrom`): its SHA-256 in the
/// content-sha256 extension and the transformation in the transformation
/// extension. The Provenance's own content-sha256 extension keeps the
/// archived bytes' hash. Text (transformation `none`) gets no entity.
pub fn derived_from(
    bundle: &mut Value,
    m: &crate::event::Message,
    derivation: &crate::media::minimise::Derivation,
) {
    use crate::media::minimise::Transformation;
    let crate::event::Body::Media(media) = &m.body else {
        return;
    };
    if derivation.transformation == Transformation::None {
        return;
    }
    let entity = serde_json::json!({
        "extension": [
            {"url": SHA256_EXTENSION, "valueString": derivation.received.sha256_hex()},
            {"url": TRANSFORMATION_EXTENSION, "valueCode": derivation.transformation.as_str()}
        ],
        "role": "derivation",
        "what": {"display": format!(
            "{} content as received from {}, {}",
            media.mime_type,
            m.key.source,
            derivation.transformation.describe()
        )}
    });
    let Some(entries) = bundle["entry"].as_array_mut() else {
        return;
    };
    for entry in entries {
        let resource = &mut entry["resource"];
        if resource["resourceType"] == "Provenance"
            && let Some(entities) = resource["entity"].as_array_mut()
        {
            entities.push(entity.clone());
        }
    }
}

/// `meta.tag` code system of chartbridge's marks on archived records.
pub const SOURCE_EVENT_SYSTEM: &str = "https://chartbridge.dev/fhir/CodeSystem/source-event";
/// `meta.tag` code: the sender retracted the message at the messenger.
pub const RETRACTED_AT_SOURCE: &str = "retracted-at-source";
/// `meta.tag` code: the message was removed at the messenger by someone the
/// record does not name as its sender (a room moderator: Matrix lets any
/// member with the `redact` power level redact others' events).
pub const REMOVED_AT_SOURCE: &str = "removed-at-source";
const DATA_OPERATION: &str = "http://terminology.hl7.org/CodeSystem/v3-DataOperation";

/// Who removed a message at the messenger, as far as the archived record
/// tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remover {
    /// The participant the record names as the message's sender.
    Sender,
    /// Someone else (a moderator), or a sender the record does not name.
    Other,
}

impl Remover {
    fn code(self) -> &'static str {
        match self {
            Self::Sender => RETRACTED_AT_SOURCE,
            Self::Other => REMOVED_AT_SOURCE,
        }
    }

    fn display(self) -> &'static str {
        match self {
            Self::Sender => "Retracted by its sender at the messenger",
            Self::Other => "Removed at the messenger by someone not recorded as its sender",
        }
    }

    /// The Provenance agent type of the remover (R4
    /// `provenance-participant-type`): `author` of a retraction of their
    /// own message, `performer` of another's removal.
    fn agent(self) -> (&'static str, &'static str) {
        match self {
            Self::Sender => ("author", "Author"),
            Self::Other => ("performer", "Performer"),
        }
    }
}

/// The `meta.tag` that marks an archived record whose messenger original
/// was removed: `retracted-at-source` by its sender, `removed-at-source`
/// by anyone else.
pub fn retracted_tag(by: Remover) -> Value {
    serde_json::json!({
        "system": SOURCE_EVENT_SYSTEM,
        "code": by.code(),
        "display": by.display()
    })
}

/// Whether `tag` is one of the two removal marks.
pub fn is_removal_tag(tag: &Value) -> bool {
    tag["system"] == SOURCE_EVENT_SYSTEM
        && (tag["code"] == RETRACTED_AT_SOURCE || tag["code"] == REMOVED_AT_SOURCE)
}

/// The Provenance of a removal at the messenger (R4 Provenance): target
/// the archived record `resource` (`Type/id`), activity v3-DataOperation
/// `DELETE` at `at` by the removing participant (agent type `author` when
/// it is the sender, [`Remover::Other`]: `performer`), the messenger
/// message as entity with role `removal`; the bridge as assembler. The
/// record itself is kept, unchanged but for its tag.
pub fn retraction(
    target: &crate::event::MessageKey,
    retracted_by: &str,
    by: Remover,
    resource: &str,
    at: chrono::DateTime<chrono::Utc>,
    recorded: chrono::DateTime<chrono::Utc>,
    settings: &MapSettings,
) -> Value {
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let participant = |code: &str, display: &str| serde_json::json!({"coding": [{"system": PARTICIPANT_TYPE, "code": code, "display": display}]});
    serde_json::json!({
        "resourceType": "Provenance",
        "target": [{"reference": resource}],
        "occurredDateTime": time(at),
        "recorded": time(recorded),
        "activity": {
            "coding": [{"system": DATA_OPERATION, "code": "DELETE", "display": "delete"}],
            "text": by.display()
        },
        "agent": [
            {"type": participant(by.agent().0, by.agent().1),
             "who": {"identifier": {
                 "system": super::participant_system(&target.source),
                 "value": retracted_by}}},
            {"type": participant("assembler", "Assembler"),
             "who": {"display": settings.agent_name}}
        ],
        "entity": [{
            "role": "removal",
            "what": {
                "identifier": {"system": settings.identifier_system, "value": identifier_value(target)},
                "display": format!("{} message", target.source)
            }
        }]
    })
}
