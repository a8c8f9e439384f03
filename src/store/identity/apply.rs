//! Applying an ADT message inside its transaction: phones, owners of
//! identifiers, patients upserted, the message recorded, merges.

use super::*;

pub(super) fn content_token(sealer: &Sealer, adt: &Adt) -> String {
    sealer.token(&["adt-content", &adt.content_sha256])
}

/// PID-13 onto the patient: replaced when sent, deleted when sent as `""`,
/// kept when left out; when a telephone repetition was unreadable
/// ([`Presence::Partial`]) the readable numbers are added and none is
/// deleted.
pub(super) async fn apply_phones(
    tx: &mut Transaction<'static, Any>,
    sealer: &Sealer,
    patient: &str,
    group: &PatientGroup,
) -> Result<(), StoreError> {
    match group.phone_field {
        Presence::Absent => return Ok(()),
        Presence::Partial => {}
        Presence::Null | Presence::Present => {
            sqlx::query("DELETE FROM adt_phones WHERE patient_id = $1")
                .bind(patient)
                .execute(&mut **tx)
                .await?;
        }
    }
    for phone in &group.phones {
        sqlx::query(
            "INSERT INTO adt_phones (token, patient_id) VALUES ($1, $2)
             ON CONFLICT (token, patient_id) DO NOTHING",
        )
        .bind(phone_token(sealer, phone))
        .bind(patient)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub(super) fn message_token(sealer: &Sealer, adt: &Adt) -> String {
    sealer.token(&[
        "adt-message",
        &adt.sending_application,
        &adt.sending_facility,
        &adt.control_id,
    ])
}

/// Distinct patients owning any of the identifiers.
pub(super) async fn owners(
    tx: &mut Transaction<'static, Any>,
    sealer: &Sealer,
    ids: &[Cx],
) -> Result<Vec<String>, StoreError> {
    let mut out: Vec<String> = Vec::new();
    for cx in ids {
        let row = sqlx::query("SELECT patient_id FROM adt_identifiers WHERE token = $1")
            .bind(identifier_token(sealer, cx))
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(r) = row {
            let p: String = r.try_get(0)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

pub(super) async fn sealed_identifiers_of(
    tx: &mut Transaction<'static, Any>,
    patient: &str,
) -> Result<Vec<u8>, StoreError> {
    let row = sqlx::query("SELECT sealed_identifiers FROM adt_patients WHERE patient_id = $1")
        .bind(patient)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get(0)?)
}

/// Creates the patient or adds the identifiers to it; returns its id.
/// `place` names the field in a refusal (`PID-3`, `PID(2)-3`).
pub(super) async fn upsert_patient(
    tx: &mut Transaction<'static, Any>,
    sealer: &Sealer,
    ids: &[Cx],
    place: &str,
    now_ms: i64,
) -> Result<String, ApplyError> {
    let found = owners(tx, sealer, ids).await?;
    if found.len() > 1 {
        return Err(ApplyError::Refused(AdtError::error(
            ErrorCode::DuplicateKeyIdentifier,
            place,
            "the identifiers belong to different patients (merge them with A40 first)",
        )));
    }
    let patient = match found.into_iter().next() {
        Some(p) => {
            let mut known = open_cx(
                sealer,
                &sealed::adt_patient(&p),
                &sealed_identifiers_of(tx, &p).await?,
            )?;
            for cx in ids {
                if !known.contains(cx) {
                    known.push(cx.clone());
                }
            }
            sqlx::query(
                "UPDATE adt_patients SET sealed_identifiers = $1, updated_at = $2 WHERE patient_id = $3",
            )
            .bind(seal_cx(sealer, &sealed::adt_patient(&p), &known))
            .bind(now_ms)
            .bind(&p)
            .execute(&mut **tx)
            .await?;
            p
        }
        None => {
            let p = uuid::Uuid::new_v4().simple().to_string();
            sqlx::query(
                "INSERT INTO adt_patients (patient_id, sealed_identifiers, merged_into, created_at, updated_at)
                 VALUES ($1, $2, NULL, $3, $3)",
            )
            .bind(&p)
            .bind(seal_cx(sealer, &sealed::adt_patient(&p), ids))
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
            p
        }
    };
    for cx in ids {
        sqlx::query(
            "INSERT INTO adt_identifiers (token, patient_id) VALUES ($1, $2)
             ON CONFLICT (token) DO NOTHING",
        )
        .bind(identifier_token(sealer, cx))
        .bind(&patient)
        .execute(&mut **tx)
        .await?;
    }
    Ok(patient)
}

/// The message as applied (its control id and content digest tokens).
pub(super) async fn record_message(
    tx: &mut Transaction<'static, Any>,
    adt: &Adt,
    token: &str,
    content: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO adt_messages (message_token, event, created_at, content_token)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(token)
    .bind(adt.event.as_str())
    .bind(now_ms)
    .bind(content)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies patient group `n` of an A40: the survivor (PID-3, with its
/// PID-13 phones) is created or updated; the prior patient (MRG-1), when
/// the map knows it, is merged into it. `true` when the prior patient was
/// unknown (survivor only). Refusals name the group's segments (`PID(n)`,
/// `MRG(n)`).
pub(super) async fn merge_patients(
    tx: &mut Transaction<'static, Any>,
    sealer: &Sealer,
    group: &PatientGroup,
    n: usize,
    refs: Option<&MergeRefs>,
    now_ms: i64,
) -> Result<(String, bool), ApplyError> {
    let pid3 = format!("{}-3", occurrence("PID", n));
    let prior = owners(tx, sealer, &group.prior).await?;
    let prior = match prior.as_slice() {
        [] => {
            // Nothing to merge; the survivor is still the patient the KIS
            // names now, with its identifiers and phones.
            let survivor = upsert_patient(tx, sealer, &group.identifiers, &pid3, now_ms).await?;
            apply_phones(tx, sealer, &survivor, group).await?;
            return Ok((survivor, true));
        }
        [p] => p.clone(),
        _ => {
            return Err(ApplyError::Refused(AdtError::error(
                ErrorCode::DuplicateKeyIdentifier,
                &format!("{}-1", occurrence("MRG", n)),
                "the prior identifiers belong to different patients",
            )));
        }
    };
    let survivor = upsert_patient(tx, sealer, &group.survivor_identifiers(), &pid3, now_ms).await?;
    if survivor == prior {
        apply_phones(tx, sealer, &survivor, group).await?;
        return Ok((survivor, false));
    }
    let mut known = open_cx(
        sealer,
        &sealed::adt_patient(&survivor),
        &sealed_identifiers_of(tx, &survivor).await?,
    )?;
    let prior_ids = open_cx(
        sealer,
        &sealed::adt_patient(&prior),
        &sealed_identifiers_of(tx, &prior).await?,
    )?;
    for cx in prior_ids {
        if !known.contains(&cx) {
            known.push(cx);
        }
    }
    let statements: [(&str, bool); 7] = [
        (
            "UPDATE adt_identifiers SET patient_id = $1 WHERE patient_id = $2",
            false,
        ),
        (
            "INSERT INTO adt_phones (token, patient_id)
             SELECT token, $1 FROM adt_phones WHERE patient_id = $2
             ON CONFLICT (token, patient_id) DO NOTHING",
            false,
        ),
        (
            "DELETE FROM adt_phones WHERE patient_id = $2 AND $1 <> $2",
            false,
        ),
        (
            "UPDATE adt_encounters SET patient_id = $1 WHERE patient_id = $2",
            false,
        ),
        (
            "UPDATE adt_patients SET merged_into = $1, updated_at = $3
             WHERE patient_id = $2 OR merged_into = $2",
            true,
        ),
        (
            "UPDATE quarantine SET candidate = $1 WHERE candidate = $2",
            false,
        ),
        (
            "UPDATE adt_patients SET updated_at = $3 WHERE patient_id = $1",
            true,
        ),
    ];
    for (sql, with_time) in statements {
        let mut q = sqlx::query(sql).bind(&survivor).bind(&prior);
        if with_time {
            q = q.bind(now_ms);
        }
        q.execute(&mut **tx).await?;
    }
    sqlx::query("UPDATE adt_patients SET sealed_identifiers = $1 WHERE patient_id = $2")
        .bind(seal_cx(sealer, &sealed::adt_patient(&survivor), &known))
        .bind(&survivor)
        .execute(&mut **tx)
        .await?;
    if let Some(refs) = refs {
        sqlx::query("UPDATE links SET patient = $1 WHERE patient = $2")
            .bind(&refs.survivor)
            .bind(&refs.prior)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "UPDATE quarantine SET resolved_patient = $1
             WHERE resolved_patient = $2 AND released_at IS NULL",
        )
        .bind(&refs.survivor)
        .bind(&refs.prior)
        .execute(&mut **tx)
        .await?;
    }
    // The survivor's PID-13 as sent (the prior patient's phones were moved
    // above and stay unless PID-13 replaces or clears them).
    apply_phones(tx, sealer, &survivor, group).await?;
    Ok((survivor, false))
}
