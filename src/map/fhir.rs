//! Small constructors over fhir-sdk's builders, so mapping code reads like
//! the resource it builds.

use chrono::{DateTime, Utc};
use fhir_sdk::r4b::types::{
    CodeableConcept, Coding, Extension, ExtensionValue, Identifier, Reference,
};

use super::MapError;
use crate::push::config::CodingConfig;

pub(super) fn build_err(resource: &'static str) -> impl Fn(fhir_sdk::BuilderError) -> MapError {
    move |e| MapError::Build {
        resource,
        message: e.to_string(),
    }
}

pub(super) fn coding(system: &str, code: &str, display: &str) -> Result<Coding, MapError> {
    Coding::builder()
        .system(system.to_owned())
        .code(code.to_owned())
        .display(display.to_owned())
        .build()
        .map_err(build_err("Coding"))
}

pub(super) fn concept(c: &CodingConfig) -> Result<CodeableConcept, MapError> {
    concept_of(coding(&c.system, &c.code, &c.display)?)
}

pub(super) fn concept_of(coding: Coding) -> Result<CodeableConcept, MapError> {
    CodeableConcept::builder()
        .coding(vec![Some(coding)])
        .build()
        .map_err(build_err("CodeableConcept"))
}

pub(super) fn identifier(system: &str, value: &str) -> Result<Identifier, MapError> {
    Identifier::builder()
        .system(system.to_owned())
        .value(value.to_owned())
        .build()
        .map_err(build_err("Identifier"))
}

pub(super) fn literal(reference: &str) -> Result<Reference, MapError> {
    Reference::builder()
        .reference(reference.to_owned())
        .build()
        .map_err(build_err("Reference"))
}

/// A short text (a caption, a file name, a display name) as a FHIR
/// `string` element (R4 datatypes, "string"): `None` when it is empty or
/// only whitespace (JSON primitives must not be empty, and a server may
/// trim); control characters other than TAB, CR and LF become U+FFFD, so
/// the KIS takes the resource. Message text never goes through this: it
/// travels unchanged ([`super::communication::is_fhir_string`]).
pub fn fhir_string(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return None;
    }
    Some(
        text.chars()
            .map(|c| {
                if not_in_string(c) {
                    char::REPLACEMENT_CHARACTER
                } else {
                    c
                }
            })
            .collect(),
    )
}

/// Whether `c` may not stand in a FHIR `string` (R4 datatypes, "string":
/// characters below U+0020 other than TAB, CR and LF; DEL and C1, which
/// servers refuse as well).
pub(super) fn not_in_string(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\r' | '\n')
}

/// Decodes a FHIR `base64Binary` value (R4 datatypes: base64 whose
/// regex admits whitespace between quads, as servers that wrap lines
/// send it). `None` when it is not base64.
pub fn decode_base64_binary(value: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let packed: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(packed)
        .ok()
}

pub(super) fn logical(
    identifier: Identifier,
    display: Option<&str>,
) -> Result<Reference, MapError> {
    let mut b = Reference::builder().identifier(identifier);
    if let Some(d) = display.and_then(fhir_string) {
        b = b.display(d);
    }
    b.build().map_err(build_err("Reference"))
}

pub(super) fn display_only(display: &str) -> Result<Reference, MapError> {
    Reference::builder()
        .display(display.to_owned())
        .build()
        .map_err(build_err("Reference"))
}

pub(super) fn string_extension(url: &str, value: &str) -> Result<Extension, MapError> {
    Extension::builder()
        .url(url.to_owned())
        .value(ExtensionValue::String(value.to_owned()))
        .build()
        .map_err(build_err("Extension"))
}

pub(super) fn int_extension(url: &str, value: u32) -> Result<Extension, MapError> {
    Extension::builder()
        .url(url.to_owned())
        .value(ExtensionValue::UnsignedInt(value))
        .build()
        .map_err(build_err("Extension"))
}

pub(super) fn complex_extension(url: &str, parts: Vec<Extension>) -> Result<Extension, MapError> {
    Extension::builder()
        .url(url.to_owned())
        .extension(parts)
        .build()
        .map_err(build_err("Extension"))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A FHIR instant; years outside 0001–9999 have none (a refusal, not a panic).
pub(super) fn instant(t: DateTime<Utc>) -> Result<fhir_sdk::Instant, MapError> {
    rfc3339(t).parse().map_err(|_| MapError::Build {
        resource: "instant",
        message: "timestamp outside the years FHIR can express".into(),
    })
}

pub(super) fn date_time(t: DateTime<Utc>) -> Result<fhir_sdk::DateTime, MapError> {
    instant(t).map(fhir_sdk::DateTime::DateTime)
}

pub(super) fn to_json<T: serde::Serialize>(resource: &T) -> serde_json::Value {
    serde_json::to_value(resource).expect("FHIR model types serialise to JSON")
}
