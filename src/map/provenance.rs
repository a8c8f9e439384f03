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
        .entity(vec![Some(entity)])
        .build()
        .map_err(build_err("Provenance"))?;
    Ok(to_json(&p))
}
