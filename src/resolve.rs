//! Which Patient (and Encounter) a message belongs to, in this order: the
//! case reference in the event (literal, or an identifier searched in the
//! KIS), then the local link table of the conversation.

use crate::event::{FhirRef, Message};
use crate::push::{Kis, PushError};
use crate::seal::Sealer;
use crate::store::{Link, Store, StoreError};

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
    None,
}

impl Hint {
    pub fn linked(&self) -> bool {
        !matches!(self, Self::None)
    }
}

/// The outcome of resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Found {
        patient: String,
        encounter: Option<String>,
    },
    /// No patient could be found: relevant content is quarantined.
    Unknown,
}

/// The conversation's token in the link table.
pub fn conversation_token(sealer: &Sealer, source: &str, conversation: &str) -> String {
    sealer.token(&[source, conversation])
}

/// Cheap first step: does the event or the link table name a patient?
pub async fn hint(message: &Message, store: &Store, sealer: &Sealer) -> Result<Hint, StoreError> {
    if message.case.is_some() {
        return Ok(Hint::Event);
    }
    let token = conversation_token(sealer, &message.key.source, &message.conversation);
    Ok(store.link(&token).await?.map_or(Hint::None, Hint::Link))
}

/// Turns a hint into literal references, searching the KIS for identifiers.
pub async fn resolve(message: &Message, hint: Hint, kis: &Kis) -> Result<Resolution, ResolveError> {
    match hint {
        Hint::None => Ok(Resolution::Unknown),
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
                Some(e) => literal(e, "Encounter", kis).await?,
                None => None,
            };
            Ok(Resolution::Found { patient, encounter })
        }
    }
}

async fn literal(r: &FhirRef, resource_type: &str, kis: &Kis) -> Result<Option<String>, PushError> {
    match r {
        FhirRef::Literal { reference } => Ok(Some(reference.clone())),
        FhirRef::Identifier { identifier } => {
            kis.search_identifier(resource_type, &identifier.system, &identifier.value)
                .await
        }
    }
}
