//! Which Patient (and Encounter) a message belongs to, in this order: the
//! case reference in the event (literal, or an identifier searched in the
//! KIS), then the identity map — the local link table of the conversation,
//! then the phone numbers the ADT feed recorded — and for identity-map
//! patients a KIS search of their identifiers (`Patient?identifier=…`,
//! `Encounter?identifier=…`). A phone-only match is a candidate: accepted
//! or quarantined for confirmation, as configured. Searches that found a
//! resource are reused from the KIS client's `push::SearchCache` for
//! `kis.search_cache_ttl`, unless an ADT message naming the identifier
//! came in between.

use crate::config::{AdtConfig, PhoneMatch};
use crate::event::{FhirRef, Message};
use crate::hl7::normalise_phone;
use crate::push::{Kis, PushError, type_and_id};
use crate::seal::Sealer;
use crate::store::{Link, Store, StoreError, phone_token};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("KIS search: {0}")]
    Kis(#[from] PushError),
}

impl ResolveError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::Kis(e) => e.is_transient(),
        }
    }
}

/// Where a message's patient link comes from, before any KIS search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    Event,
    Link(Link),
    /// Identity-map patients whose phone number the conversation carries.
    Phone(Vec<String>),
    /// Nothing names a patient because the conversation is retired after
    /// an identity change ([`Store::retire_conversation`]): unresolved,
    /// and held even where unresolved content would be deleted.
    Retired,
    None,
}

impl Hint {
    pub fn linked(&self) -> bool {
        !self.unresolved()
    }

    /// Whether nothing names a patient ([`Hint::None`], [`Hint::Retired`]).
    pub fn unresolved(&self) -> bool {
        matches!(self, Self::None | Self::Retired)
    }
}

/// The outcome of resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Found {
        patient: String,
        encounter: Option<String>,
    },
    /// The patient is known, the event's encounter is not in the KIS.
    PatientOnly { patient: String },
    /// A phone-only match to one identity-map patient, to be confirmed.
    Candidate { patient_id: String },
    /// Several patients share the phone number.
    Ambiguous,
    /// No patient could be found: relevant content is quarantined.
    Unknown,
}

/// What resolution needs besides the message.
pub struct Context<'a> {
    pub store: &'a Store,
    pub sealer: &'a Sealer,
    pub kis: &'a Kis,
    pub adt: &'a AdtConfig,
    pub phone_match: PhoneMatch,
    /// The KIS answers FHIR reads (`kis.read_back`, FHIR or transcript
    /// output): a literal Encounter an event names is read and must belong
    /// to the patient. Off for a KIS without reads (an HL7 v2-only KIS):
    /// the reference is taken as the gateway gave it.
    pub reads: bool,
}

/// Phone numbers a message's conversation carries, as international
/// digits: a WhatsApp conversation `phone_number_id:wa_id` gives its
/// `wa_id`; parties whose id is a phone number give theirs. Normalised by
/// the same function as PID-13 ([`normalise_phone`]); WhatsApp ids are
/// international numbers without `+` (Cloud API `contacts[].wa_id`), so
/// they are read with one, never as national numbers.
pub fn phone_numbers(message: &Message, default_country: &str) -> Vec<String> {
    let international = message.key.source == "whatsapp";
    // Anyone in a group chat may write; a member's number is not the
    // patient of the conversation (only a link names it).
    if international && crate::event::is_group_conversation(&message.conversation) {
        return Vec::new();
    }
    let mut candidates = vec![
        message
            .conversation
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_owned(),
    ];
    // The hospital's own parties (a WhatsApp echo's business number) name
    // no patient.
    let patient_side = |p: &&crate::event::Party| p.role != crate::event::Role::Clinician;
    candidates.extend(
        std::iter::once(&message.sender)
            .chain(&message.recipients)
            .filter(patient_side)
            .map(|p| p.id.clone()),
    );
    let mut out = Vec::new();
    for c in candidates {
        let looks_like_phone = !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_digit() || " +-()/".contains(ch));
        if !looks_like_phone {
            continue;
        }
        let c = if international && c.chars().all(|ch| ch.is_ascii_digit()) {
            format!("+{c}")
        } else {
            c
        };
        if let Some(p) = normalise_phone(&c, default_country)
            && !out.contains(&p)
        {
            out.push(p);
        }
    }
    out
}

/// The conversation's token in the link table.
pub fn conversation_token(sealer: &Sealer, source: &str, conversation: &str) -> String {
    sealer.token(&[source, conversation])
}

/// Cheap first step: does the event, the link table or the identity map's
/// phone numbers name a patient? A conversation retired after an identity
/// change ([`Store::retire_conversation`]) is named by no phone number.
pub async fn hint(
    message: &Message,
    store: &Store,
    sealer: &Sealer,
    default_country: &str,
) -> Result<Hint, StoreError> {
    if message.case.is_some() {
        return Ok(Hint::Event);
    }
    let token = conversation_token(sealer, &message.key.source, &message.conversation);
    if let Some(link) = store.link(&token).await? {
        return Ok(Hint::Link(link));
    }
    // The messenger said the user changed identity: whoever writes now may
    // be someone else, so the numbers name no patient until a person links
    // the conversation again.
    if store.conversation_retired(&token).await? {
        return Ok(Hint::Retired);
    }
    let tokens: Vec<String> = phone_numbers(message, default_country)
        .iter()
        .map(|p| phone_token(sealer, p))
        .collect();
    if tokens.is_empty() {
        return Ok(Hint::None);
    }
    let patients = store.patients_by_phone(&tokens).await?;
    Ok(if patients.is_empty() {
        Hint::None
    } else {
        Hint::Phone(patients)
    })
}

/// KIS references of an identity-map patient: its identifiers searched as
/// `Patient?identifier=…`, its current encounter as `Encounter?identifier=…`.
/// `None` when the map or the KIS does not know the patient.
pub async fn identity_refs(
    ctx: &Context<'_>,
    patient_id: &str,
) -> Result<Option<(String, Option<String>)>, ResolveError> {
    let Some(p) = ctx.store.identity_patient(ctx.sealer, patient_id).await? else {
        return Ok(None);
    };
    let mut patient = None;
    for cx in &p.identifiers {
        if let Some(system) = ctx.adt.patient_system_of(&cx.authority)
            && let Some(found) = ctx
                .kis
                .search_identifier("Patient", system, &cx.value)
                .await?
        {
            patient = Some(found);
            break;
        }
    }
    let Some(patient) = patient else {
        return Ok(None);
    };
    let encounter = match &p.current_encounter {
        Some(cx) => match ctx.adt.case_system_of(&cx.authority) {
            Some(system) => {
                ctx.kis
                    .search_encounter_of(&patient, system, &cx.value)
                    .await?
            }
            None => None,
        },
        None => None,
    };
    Ok(Some((patient, encounter)))
}

/// Turns a hint into literal references, searching the KIS for identifiers.
pub async fn resolve(
    message: &Message,
    hint: Hint,
    ctx: &Context<'_>,
) -> Result<Resolution, ResolveError> {
    let _stage = crate::telemetry::measure::Stage::start("resolve");
    let kis = ctx.kis;
    match hint {
        Hint::None | Hint::Retired => Ok(Resolution::Unknown),
        Hint::Phone(patients) => match patients.as_slice() {
            [one] if ctx.phone_match == PhoneMatch::Quarantine => Ok(Resolution::Candidate {
                patient_id: one.clone(),
            }),
            [one] => Ok(match identity_refs(ctx, one).await? {
                Some((patient, encounter)) => Resolution::Found { patient, encounter },
                None => Resolution::Unknown,
            }),
            _ => Ok(Resolution::Ambiguous),
        },
        Hint::Link(link) => Ok(Resolution::Found {
            patient: link.patient,
            encounter: link.encounter,
        }),
        Hint::Event => {
            let case = message.case.as_ref().expect("an event hint has a case");
            let Some(patient) = literal(&case.patient, "Patient", kis).await? else {
                return Ok(Resolution::Unknown);
            };
            let encounter = match &case.encounter {
                Some(e) => match encounter_of(&patient, e, kis, ctx.reads).await? {
                    Some(found) => Some(found),
                    None => return Ok(Resolution::PatientOnly { patient }),
                },
                None => None,
            };
            Ok(Resolution::Found { patient, encounter })
        }
    }
}

/// The Encounter `r` names, when it belongs to `patient`: a literal
/// reference read ([`Kis::encounter_of_literal`]), an identifier searched
/// ([`Kis::search_encounter_of`]); either way its subject must be the
/// patient (a patient found by identifier and a literal Encounter of
/// someone else never go together).
async fn encounter_of(
    patient: &str,
    r: &FhirRef,
    kis: &Kis,
    reads: bool,
) -> Result<Option<String>, PushError> {
    match r {
        FhirRef::Literal { reference } if reads => {
            kis.encounter_of_literal(patient, reference).await
        }
        FhirRef::Literal { .. } => literal(r, "Encounter", kis).await,
        FhirRef::Identifier { identifier } => {
            kis.search_encounter_of(patient, &identifier.system, &identifier.value)
                .await
        }
    }
}

/// The resource `r` names: a literal reference of `resource_type` as given
/// (`None` for one of another type: an `Encounter/…` in the patient's
/// place names no patient), an identifier searched.
async fn literal(r: &FhirRef, resource_type: &str, kis: &Kis) -> Result<Option<String>, PushError> {
    match r {
        FhirRef::Literal { reference } => Ok(type_and_id(reference, kis.base_url())
            .filter(|named| named.starts_with(&format!("{resource_type}/")))
            .map(|_| reference.clone())),
        FhirRef::Identifier { identifier } => {
            kis.search_identifier(resource_type, &identifier.system, &identifier.value)
                .await
        }
    }
}
