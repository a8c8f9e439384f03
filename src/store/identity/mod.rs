//! The identity map the HL7 v2 ADT feed maintains: patients by keyed tokens
//! of their identifiers (PID-3 with assigning authority) and phone numbers
//! (PID-13), their encounters (PV1-19) with state, and merges (A40). Each
//! ADT message is applied in one transaction, or not at all.

use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};

use super::sealed;
use super::{Store, StoreError};
use crate::hl7::{Adt, AdtError, AdtEvent, Cx, ErrorCode, PatientGroup, Presence, occurrence};
use crate::seal::{Place, Sealer};

mod apply;
use apply::*;

/// Why an ADT message was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The message contradicts the map; answered AE, nothing applied.
    #[error(transparent)]
    Refused(AdtError),
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Db(e))
    }
}

/// What applying an ADT message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Applied to this (surviving) patient of the identity map.
    Patient(String),
    /// The same message (sender and control id) was applied before.
    AlreadyApplied,
    /// An A40 whose prior patient (MRG-1) the map does not know: the
    /// survivor's identifiers and phones were applied, nothing was merged.
    SurvivorOnly(String),
    /// An A40 with several patient groups (ADT_A39), all applied in one
    /// transaction: what was done for each group, in message order.
    Merges(Vec<MergeApplied>),
}

/// What one patient group of an A40 did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeApplied {
    /// The surviving patient (PID-3) of the group.
    pub survivor: String,
    /// The prior patient (MRG-1) was unknown: survivor applied, nothing
    /// merged.
    pub prior_unknown: bool,
}

/// KIS references of the two patients of a merge, when the KIS knows them:
/// conversation links and resolved quarantine items pointing to the prior
/// patient are re-pointed to the survivor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRefs {
    pub prior: String,
    pub survivor: String,
}

/// A patient of the identity map, unsealed for a KIS search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPatient {
    pub patient_id: String,
    pub identifiers: Vec<Cx>,
    /// The most recently updated encounter that is in progress or arrived.
    pub current_encounter: Option<Cx>,
}

#[derive(Serialize, Deserialize)]
struct SealedCx {
    authority: String,
    value: String,
}

fn seal_cx(sealer: &Sealer, place: &Place, ids: &[Cx]) -> Vec<u8> {
    let list: Vec<SealedCx> = ids
        .iter()
        .map(|c| SealedCx {
            authority: c.authority.clone(),
            value: c.value.clone(),
        })
        .collect();
    sealer.seal_at(
        place,
        &serde_json::to_vec(&list).expect("identifiers serialise"),
    )
}

fn open_cx(sealer: &Sealer, place: &Place, sealed: &[u8]) -> Result<Vec<Cx>, StoreError> {
    let bytes = sealer
        .open(place, sealed)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let list: Vec<SealedCx> = serde_json::from_slice(&bytes)
        .map_err(|_| StoreError::Corrupt("sealed identity data is not a list".into()))?;
    Ok(list
        .into_iter()
        .map(|c| Cx {
            value: c.value,
            authority: c.authority,
        })
        .collect())
}

/// Token of a patient identifier (PID-3, MRG-1).
pub fn identifier_token(sealer: &Sealer, cx: &Cx) -> String {
    sealer.token(&["adt-patient", &cx.authority, &cx.value])
}

/// Token of a visit number (PV1-19).
pub fn encounter_token(sealer: &Sealer, cx: &Cx) -> String {
    sealer.token(&["adt-visit", &cx.authority, &cx.value])
}

/// Token of a phone number in international digits.
pub fn phone_token(sealer: &Sealer, digits: &str) -> String {
    sealer.token(&["phone", digits])
}
impl Store {
    /// Applies one parsed ADT message in one transaction. `merge` carries
    /// the KIS references of an A40's two patients when known (of its
    /// first patient group; see [`Store::apply_adt_merges`]).
    pub async fn apply_adt(
        &self,
        adt: &Adt,
        sealer: &Sealer,
        merge: Option<&MergeRefs>,
        now_ms: i64,
    ) -> Result<Applied, ApplyError> {
        self.apply_adt_merges(adt, sealer, &[merge.cloned()], now_ms)
            .await
    }

    /// Applies one parsed ADT message in one transaction: every patient
    /// group of an A40 (ADT_A39), in order, or nothing when one group is
    /// refused (the refusal names that group's segment, `MRG(2)-1`).
    /// `merges[i]` carries the KIS references of group `i + 1`'s two
    /// patients when known.
    pub async fn apply_adt_merges(
        &self,
        adt: &Adt,
        sealer: &Sealer,
        merges: &[Option<MergeRefs>],
        now_ms: i64,
    ) -> Result<Applied, ApplyError> {
        let mut tx = self.pool.begin().await?;
        let token = message_token(sealer, adt);
        let content = content_token(sealer, adt);
        let seen = sqlx::query("SELECT content_token FROM adt_messages WHERE message_token = $1")
            .bind(&token)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = seen {
            tx.rollback().await?;
            let stored: Option<String> = row.try_get(0)?;
            return match stored {
                Some(stored) if stored != content => Err(ApplyError::Refused(AdtError::error(
                    ErrorCode::DuplicateKeyIdentifier,
                    "MSH-10",
                    "control id already used by a different message; not applied (send it with a new control id)",
                ))),
                _ => Ok(Applied::AlreadyApplied),
            };
        }
        let groups = adt.groups();
        let (patient, survivor_only) = match adt.event {
            AdtEvent::A40 => {
                let mut done = Vec::with_capacity(groups.len());
                for (i, group) in groups.iter().enumerate() {
                    let refs = merges.get(i).and_then(Option::as_ref);
                    let (survivor, prior_unknown) =
                        merge_patients(&mut tx, sealer, group, i + 1, refs, now_ms).await?;
                    done.push(MergeApplied {
                        survivor,
                        prior_unknown,
                    });
                }
                if done.len() > 1 {
                    record_message(&mut tx, adt, &token, &content, now_ms).await?;
                    tx.commit().await?;
                    return Ok(Applied::Merges(done));
                }
                let one = done.pop().expect("one patient group");
                (one.survivor, one.prior_unknown)
            }
            _ => {
                let group = &groups[0];
                let patient =
                    upsert_patient(&mut tx, sealer, &group.identifiers, "PID-3", now_ms).await?;
                apply_phones(&mut tx, sealer, &patient, group).await?;
                if let Some(visit) = adt
                    .visit
                    .as_ref()
                    .filter(|_| adt.event.touches_encounters())
                {
                    let (state, keep_state) = adt.visit_state();
                    // The current visit is the open one most recently
                    // admitted or changed in state: a visit first named by an
                    // update (A08, A02, …; a billing update of an old case,
                    // or a feed joined mid-stay) ranks below every admitted
                    // one, and is current only while no other visit is open.
                    // A change of patient class (A06/A07) keeps a known
                    // visit's state but ranks its visit as of now: it may
                    // have opened a new account ([`Adt::ranks_visit`]).
                    let ranks = adt.ranks_visit();
                    let ranked_at = if ranks { now_ms } else { 0 };
                    let visit_token = encounter_token(sealer, visit);
                    sqlx::query(
                        "INSERT INTO adt_encounters (token, patient_id, sealed_identifier, state, updated_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (token) DO UPDATE SET
                           patient_id = excluded.patient_id,
                           state = CASE WHEN $6 THEN adt_encounters.state ELSE excluded.state END,
                           updated_at = CASE WHEN $7 THEN excluded.updated_at ELSE adt_encounters.updated_at END",
                    )
                    .bind(&visit_token)
                    .bind(&patient)
                    .bind(seal_cx(
                        sealer,
                        &sealed::adt_encounter(&visit_token),
                        std::slice::from_ref(visit),
                    ))
                    .bind(state)
                    .bind(ranked_at)
                    .bind(keep_state)
                    .bind(ranks)
                    .execute(&mut *tx)
                    .await?;
                    // MRG-5 of an A06/A07: the account that change closed.
                    if let Some(prior) = adt.prior_visit.as_ref() {
                        let prior_token = encounter_token(sealer, prior);
                        if prior_token != visit_token {
                            sqlx::query(
                                "UPDATE adt_encounters SET state = 'finished', updated_at = $3
                                 WHERE token = $1 AND patient_id = $2",
                            )
                            .bind(&prior_token)
                            .bind(&patient)
                            .bind(now_ms)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                (patient, false)
            }
        };
        record_message(&mut tx, adt, &token, &content, now_ms).await?;
        tx.commit().await?;
        Ok(if survivor_only {
            Applied::SurvivorOnly(patient)
        } else {
            Applied::Patient(patient)
        })
    }

    /// Patients (identity map ids, merges followed) with this phone token.
    pub async fn patients_by_phone(&self, tokens: &[String]) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for t in tokens {
            let rows = sqlx::query(
                "SELECT COALESCE(p.merged_into, p.patient_id) FROM adt_phones f
                 JOIN adt_patients p ON p.patient_id = f.patient_id
                 WHERE f.token = $1 ORDER BY 1",
            )
            .bind(t)
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                let p: String = r.try_get(0)?;
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        Ok(out)
    }

    /// The identity map's patient owning an identifier, merges followed.
    pub async fn patient_by_identifier(
        &self,
        sealer: &Sealer,
        cx: &Cx,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(p.merged_into, p.patient_id) FROM adt_identifiers i
             JOIN adt_patients p ON p.patient_id = i.patient_id WHERE i.token = $1",
        )
        .bind(identifier_token(sealer, cx))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get(0).map_err(Into::into)).transpose()
    }

    /// A patient's identifiers and current encounter, unsealed, following a
    /// merge to the survivor.
    pub async fn identity_patient(
        &self,
        sealer: &Sealer,
        patient_id: &str,
    ) -> Result<Option<IdentityPatient>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT COALESCE(merged_into, patient_id) FROM adt_patients WHERE patient_id = $1",
        )
        .bind(patient_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let root: String = row.try_get(0)?;
        let row = sqlx::query("SELECT sealed_identifiers FROM adt_patients WHERE patient_id = $1")
            .bind(&root)
            .fetch_one(&self.pool)
            .await?;
        let identifiers = open_cx(
            sealer,
            &sealed::adt_patient(&root),
            &row.try_get::<Vec<u8>, _>(0)?,
        )?;
        // Two open visits that no admission ranks (both first named by
        // updates, `updated_at` 0) cannot be told apart: no current visit.
        let open = sqlx::query(
            "SELECT sealed_identifier, token, updated_at FROM adt_encounters
             WHERE patient_id = $1 AND state IN ('in-progress', 'arrived')
             ORDER BY updated_at DESC, token LIMIT 2",
        )
        .bind(&root)
        .fetch_all(&self.pool)
        .await?;
        let ranked = |r: &sqlx::any::AnyRow| r.try_get::<i64, _>(2).map(|at| at > 0);
        let encounter = match open.as_slice() {
            [first, second] if !ranked(first)? && !ranked(second)? => None,
            [first, ..] => Some(first),
            [] => None,
        };
        let current_encounter = match encounter {
            Some(r) => open_cx(
                sealer,
                &sealed::adt_encounter(&r.try_get::<String, _>(1)?),
                &r.try_get::<Vec<u8>, _>(0)?,
            )?
            .into_iter()
            .next(),
            None => None,
        };
        Ok(Some(IdentityPatient {
            patient_id: root,
            identifiers,
            current_encounter,
        }))
    }

    /// The state of an encounter (FHIR Encounter.status), if known.
    pub async fn encounter_state(
        &self,
        sealer: &Sealer,
        visit: &Cx,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT e.state, COALESCE(p.merged_into, p.patient_id) FROM adt_encounters e
             JOIN adt_patients p ON p.patient_id = e.patient_id WHERE e.token = $1",
        )
        .bind(encounter_token(sealer, visit))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }
}
