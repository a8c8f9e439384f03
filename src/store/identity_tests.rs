//! The ADT identity map and quarantine review, on SQLite and PostgreSQL.

use super::tests::fresh;
use super::*;
use crate::event::MessageKey;
use crate::hl7::{self, Adt, Cx};
use crate::seal::Sealer;

fn fixture(name: &str) -> Adt {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/hl7")
            .join(name),
    )
    .unwrap();
    hl7::parse_adt(&text, "49").unwrap()
}

fn cx(value: &str) -> Cx {
    Cx {
        value: value.into(),
        authority: "KIS".into(),
    }
}

fn sealer() -> Sealer {
    Sealer::from_key([3; 32])
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn i6_adt_feed_maintains_identity_map(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let a01 = fixture("adt-a01.hl7");
    let Applied::Patient(erika) = store.apply_adt(&a01, &s, None, 1).await.unwrap() else {
        panic!("A01 applies")
    };
    // A redelivery applies nothing.
    assert_eq!(
        store.apply_adt(&a01, &s, None, 2).await.unwrap(),
        Applied::AlreadyApplied
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM adt_patients").await, 1);
    let phone = phone_token(&s, "4915112345678");
    assert_eq!(
        store
            .patients_by_phone(std::slice::from_ref(&phone))
            .await
            .unwrap(),
        vec![erika.clone()]
    );
    let p = store.identity_patient(&s, &erika).await.unwrap().unwrap();
    assert_eq!(p.identifiers.len(), 2);
    assert_eq!(p.current_encounter, Some(cx("F-2001")));
    assert_eq!(
        store.encounter_state(&s, &cx("F-2001")).await.unwrap(),
        Some(("in-progress".into(), erika.clone()))
    );

    // A08 replaces the phone numbers and keeps the encounter's state.
    store
        .apply_adt(&fixture("adt-a08.hl7"), &s, None, 3)
        .await
        .unwrap();
    assert!(store.patients_by_phone(&[phone]).await.unwrap().is_empty());
    assert_eq!(
        store
            .patients_by_phone(&[phone_token(&s, "491709876543")])
            .await
            .unwrap(),
        vec![erika.clone()]
    );
    assert_eq!(
        store
            .encounter_state(&s, &cx("F-2001"))
            .await
            .unwrap()
            .unwrap()
            .0,
        "in-progress"
    );

    // A03 discharges: no current encounter any more.
    store
        .apply_adt(&fixture("adt-a03.hl7"), &s, None, 4)
        .await
        .unwrap();
    assert_eq!(
        store
            .encounter_state(&s, &cx("F-2001"))
            .await
            .unwrap()
            .unwrap()
            .0,
        "finished"
    );
    let p = store.identity_patient(&s, &erika).await.unwrap().unwrap();
    assert_eq!(p.current_encounter, None);

    // A04 registers another patient, A11 cancels the visit.
    let Applied::Patient(max) = store
        .apply_adt(&fixture("adt-a04.hl7"), &s, None, 5)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_ne!(max, erika);
    assert_eq!(
        store
            .encounter_state(&s, &cx("F-2002"))
            .await
            .unwrap()
            .unwrap()
            .0,
        "arrived"
    );
    store
        .apply_adt(&fixture("adt-a11.hl7"), &s, None, 6)
        .await
        .unwrap();
    assert_eq!(
        store
            .encounter_state(&s, &cx("F-2002"))
            .await
            .unwrap()
            .unwrap()
            .0,
        "cancelled"
    );
    // No names, birth dates or identifiers in clear anywhere.
    for table in [
        "adt_patients",
        "adt_identifiers",
        "adt_phones",
        "adt_encounters",
    ] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert!(!rows.is_empty(), "{table}");
    }
    let dump = count(
        &store,
        "SELECT COUNT(*) FROM adt_identifiers WHERE token LIKE '%P-10%' OR patient_id LIKE '%P-10%'",
    )
    .await;
    assert_eq!(dump, 0);
}

async fn i6_a40_merge_repoints_identity_links_and_quarantine(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let Applied::Patient(erika) = store
        .apply_adt(&fixture("adt-a01.hl7"), &s, None, 1)
        .await
        .unwrap()
    else {
        panic!()
    };
    let Applied::Patient(max) = store
        .apply_adt(&fixture("adt-a04.hl7"), &s, None, 2)
        .await
        .unwrap()
    else {
        panic!()
    };
    store
        .set_link(
            "conv-token",
            &Link {
                patient: "Patient/max".into(),
                encounter: None,
            },
            3,
        )
        .await
        .unwrap();
    let waiting = MessageKey {
        source: "whatsapp".into(),
        message_id: "wamid.q1".into(),
    };
    assert!(
        store
            .record_quarantine_candidate(
                &waiting,
                "patient_candidate",
                &crate::store::tests::sealed(b"sealed"),
                Some(&max),
                3
            )
            .await
            .unwrap()
    );
    let refs = MergeRefs {
        prior: "Patient/max".into(),
        survivor: "Patient/erika".into(),
    };
    assert_eq!(
        store
            .apply_adt(&fixture("adt-a40.hl7"), &s, Some(&refs), 4)
            .await
            .unwrap(),
        Applied::Patient(erika.clone())
    );
    // The prior patient's identifier, phone and encounter now lead to the survivor.
    assert_eq!(
        store
            .patient_by_identifier(&s, &cx("P-1002"))
            .await
            .unwrap(),
        Some(erika.clone())
    );
    assert_eq!(
        store
            .patients_by_phone(&[phone_token(&s, "49301234567")])
            .await
            .unwrap(),
        vec![erika.clone()]
    );
    assert_eq!(
        store
            .encounter_state(&s, &cx("F-2002"))
            .await
            .unwrap()
            .unwrap()
            .1,
        erika
    );
    let p = store.identity_patient(&s, &max).await.unwrap().unwrap();
    assert_eq!(p.patient_id, erika);
    assert_eq!(p.identifiers.len(), 3);
    assert_eq!(
        store.link("conv-token").await.unwrap().unwrap().patient,
        "Patient/erika"
    );
    assert_eq!(
        store
            .quarantine_entry(&waiting)
            .await
            .unwrap()
            .unwrap()
            .candidate,
        Some(erika)
    );
}

async fn i6_refused_adt_applies_nothing(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    // An A40 whose prior identifiers belong to two different patients is
    // refused (an unknown prior patient is not: see
    // i6_a40_with_unknown_prior_applies_the_survivor).
    let mut a40 = fixture("adt-a40.hl7");
    a40.identifiers = vec![cx("P-NEW")];
    a40.prior = vec![cx("P-X1"), cx("P-X2")];
    for (n, id) in ["P-X1", "P-X2"].iter().enumerate() {
        let mut a = fixture("adt-a04.hl7");
        a.control_id = format!("MSG-X{n}");
        a.identifiers = vec![cx(id)];
        a.visit = None;
        store.apply_adt(&a, &s, None, 0).await.unwrap();
    }
    let before_ids = count(&store, "SELECT COUNT(*) FROM adt_identifiers").await;
    let before_msgs = count(&store, "SELECT COUNT(*) FROM adt_messages").await;
    let err = store.apply_adt(&a40, &s, None, 1).await.unwrap_err();
    let ApplyError::Refused(e) = err else {
        panic!("refused")
    };
    assert_eq!((e.ack.as_str(), e.code.code()), ("AE", "205"));
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM adt_identifiers").await,
        before_ids
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM adt_messages").await,
        before_msgs
    );
    for sql in [
        "DELETE FROM adt_patients",
        "DELETE FROM adt_identifiers",
        "DELETE FROM adt_phones",
        "DELETE FROM adt_encounters",
        "DELETE FROM adt_messages",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(store.pool())
            .await
            .unwrap();
    }
    // Nothing half-applied: the survivor of the failed merge was not created.
    assert_eq!(count(&store, "SELECT COUNT(*) FROM adt_patients").await, 0);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM adt_identifiers").await,
        0
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM adt_messages").await, 0);
    // Identifiers of two different patients in one PID-3: refused whole.
    store
        .apply_adt(&fixture("adt-a01.hl7"), &s, None, 2)
        .await
        .unwrap();
    store
        .apply_adt(&fixture("adt-a04.hl7"), &s, None, 3)
        .await
        .unwrap();
    let mut both = fixture("adt-a08.hl7");
    both.control_id = "MSG-BOTH".into();
    both.identifiers.push(cx("P-1002"));
    both.phones = vec!["4900000000".into()];
    let before = count(&store, "SELECT COUNT(*) FROM adt_phones").await;
    let ApplyError::Refused(e) = store.apply_adt(&both, &s, None, 4).await.unwrap_err() else {
        panic!()
    };
    assert_eq!(e.code.code(), "205");
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM adt_phones").await,
        before
    );
}

async fn i10_quarantine_resolve_and_release_once(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let k = MessageKey {
        source: "whatsapp".into(),
        message_id: "wamid.r1".into(),
    };
    assert!(
        store
            .record_quarantine_candidate(
                &k,
                "patient_candidate",
                &crate::store::tests::sealed(b"sealed"),
                Some("p1"),
                10
            )
            .await
            .unwrap()
    );
    let list = store.quarantine_list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reason, "patient_candidate");
    assert!(list[0].has_candidate && !list[0].resolved);
    assert!(
        store
            .resolve_quarantine(&k, "Patient/1", Some("Encounter/2"), "operator", 20)
            .await
            .unwrap()
    );
    let e = store.quarantine_entry(&k).await.unwrap().unwrap();
    assert_eq!(e.resolved_by.as_deref(), Some("operator"));
    assert_eq!(e.resolved_at, Some(20));
    let rec = ArchiveRecord {
        key: k.clone(),
        rule: "linked-text".into(),
        content_sha256: "00".repeat(32),
        resource: "Communication/9".into(),
        resources: vec!["Communication/9".into()],
        leaf_data: b"leaf".to_vec(),
        deletion: NewDeletion {
            deletion_id: "del-r1".into(),
            key: k.clone(),
            reason: "archived",
            sealed_command: crate::seal::Sealer::from_key([1; 32]).seal(b"command"),
            not_before_ms: 0,
            state: DeletionState::Pending,
        },
    };
    assert_eq!(
        store.record_archive_released(&rec, 30).await.unwrap(),
        Some(0)
    );
    assert_eq!(store.record_archive_released(&rec, 31).await.unwrap(), None);
    assert_eq!(store.record_archive(&rec, 32).await.unwrap(), None);
    assert_eq!(store.log_size().await.unwrap(), 1);
    let m = store.message(&k).await.unwrap().unwrap();
    assert_eq!(m.state, MessageState::Archived);
    assert_eq!(
        store.deletion_state(&k).await.unwrap(),
        Some(DeletionState::Pending)
    );
    assert!(store.quarantine_list().await.unwrap().is_empty());
    let e = store.quarantine_entry(&k).await.unwrap().unwrap();
    assert_eq!(e.released_at, Some(30));
    assert!(e.sealed_event.is_empty());
    assert!(
        !store
            .resolve_quarantine(&k, "Patient/1", None, "operator", 40)
            .await
            .unwrap()
    );
}

fn wire(name: &str) -> Adt {
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/hl7/wire")
            .join(format!("{name}.hl7")),
    )
    .unwrap();
    hl7::parse_adt(&hl7::er7::decode(&bytes).unwrap(), "49").unwrap()
}

async fn phone_owners(store: &Store, s: &Sealer, digits: &str) -> Vec<String> {
    store
        .patients_by_phone(&[phone_token(s, digits)])
        .await
        .unwrap()
}

/// PID-13 `""` (the HL7 null value) deletes the stored phones; PID-13 left
/// empty keeps them; a present PID-13 replaces them.
async fn i6_null_phone_field_clears_stored_phones(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let Applied::Patient(anna) = store
        .apply_adt(&wire("msh2-truncation"), &s, None, 1)
        .await
        .unwrap()
    else {
        panic!("applies")
    };
    assert_eq!(
        phone_owners(&store, &s, "4917655501101").await,
        vec![anna.clone()]
    );
    // PID-13 left empty: kept.
    let mut keep = wire("a08-phone-null");
    keep.control_id = "WIRE-05-KEEP".into();
    keep.phone_field = hl7::Presence::Absent;
    store.apply_adt(&keep, &s, None, 2).await.unwrap();
    assert_eq!(
        phone_owners(&store, &s, "4917655501101").await,
        vec![anna.clone()]
    );
    // PID-13 `""`: deleted, the patient and its identifiers stay.
    let null = wire("a08-phone-null");
    assert_eq!(null.phone_field, hl7::Presence::Null);
    assert_eq!(
        store.apply_adt(&null, &s, None, 3).await.unwrap(),
        Applied::Patient(anna.clone())
    );
    assert!(phone_owners(&store, &s, "4917655501101").await.is_empty());
    assert_eq!(
        count(
            &store,
            &format!("SELECT COUNT(*) FROM adt_phones WHERE patient_id = '{anna}'")
        )
        .await,
        0
    );
    assert_eq!(
        store
            .patient_by_identifier(
                &s,
                &Cx {
                    value: "Q-7101".into(),
                    authority: "HIS".into()
                }
            )
            .await
            .unwrap(),
        Some(anna.clone())
    );
    // Every repetition of PID-13 is kept when present.
    let Applied::Patient(clara) = store
        .apply_adt(&wire("repeated-pid3-pid13"), &s, None, 4)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        phone_owners(&store, &s, "4917655501106").await,
        vec![clara.clone()]
    );
    assert_eq!(phone_owners(&store, &s, "492285550106").await, vec![clara]);
}

/// A control id (MSH-10) seen before: the same content is a redelivery
/// (AA, nothing applied); different content is refused AE 205, nothing
/// applied.
async fn i6_reused_control_id_with_other_content_is_refused(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let first = wire("trunk-zero-a01");
    store.apply_adt(&first, &s, None, 1).await.unwrap();
    assert_eq!(
        store.apply_adt(&first, &s, None, 2).await.unwrap(),
        Applied::AlreadyApplied
    );
    let mut other = wire("stray-lf-in-field");
    other.control_id = first.control_id.clone();
    let phones = count(&store, "SELECT COUNT(*) FROM adt_phones").await;
    let ApplyError::Refused(e) = store.apply_adt(&other, &s, None, 3).await.unwrap_err() else {
        panic!("refused")
    };
    assert_eq!(
        (e.ack.as_str(), e.code.code(), e.location.as_str()),
        ("AE", "205", "MSH-10")
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM adt_patients").await, 1);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM adt_phones").await,
        phones
    );
    assert!(phone_owners(&store, &s, "4917655501104").await.is_empty());
    // The stored digest is a keyed token, not the plain SHA-256.
    let stored: String = sqlx::query_scalar("SELECT content_token FROM adt_messages")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_ne!(stored, first.content_sha256);
    // A row from before the digest column: taken as the same content.
    sqlx::query("UPDATE adt_messages SET content_token = NULL")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        store.apply_adt(&other, &s, None, 4).await.unwrap(),
        Applied::AlreadyApplied
    );
}

/// An A40 naming a prior patient the map does not know applies the
/// survivor's identifiers and phones and merges nothing.
async fn i6_a40_with_unknown_prior_applies_the_survivor(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let a40 = wire("a40-unknown-prior");
    let Applied::SurvivorOnly(jana) = store.apply_adt(&a40, &s, None, 1).await.unwrap() else {
        panic!("survivor only")
    };
    assert_eq!(
        phone_owners(&store, &s, "4917655501120").await,
        vec![jana.clone()]
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM adt_patients").await, 1);
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM adt_patients WHERE merged_into IS NOT NULL"
        )
        .await,
        0
    );
    assert_eq!(
        store.apply_adt(&a40, &s, None, 2).await.unwrap(),
        Applied::AlreadyApplied
    );
}

/// An ADT message written inline (segments joined by CR).
fn adt_text(segments: &[&str]) -> Adt {
    hl7::parse_adt(&(segments.join("\r") + "\r"), "49").unwrap()
}

/// An A01 of patient `id` (authority HIS) with one mobile number and a
/// visit.
fn admit(control: &str, ids: &str, phone: &str, visit: &str) -> Adt {
    adt_text(&[
        &format!("MSH|^~\\&|HIS|ST-MARIEN|CB|ST-MARIEN|20270315||ADT^A01^ADT_A01|{control}|P|2.5"),
        "EVN|A01",
        &format!("PID|1||{ids}||||||||||{phone}^PRN^CP"),
        &format!("PV1|1|I|||||||||||||||||{visit}^^^HIS^VN"),
    ])
}

fn his(value: &str) -> Cx {
    Cx {
        value: value.into(),
        authority: "HIS".into(),
    }
}

/// An A40 with two patient groups merges both prior patients, each into
/// its own survivor, in one transaction.
async fn a40_applies_every_patient_group(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    for (c, id, phone) in [
        ("S-1", "Q-7130^^^HIS^PI", "+49 176 5550 1230"),
        ("S-2", "Q-7132^^^HIS^PI", "+49 176 5550 1232"),
    ] {
        store
            .apply_adt(&admit(c, id, phone, &format!("V{c}")), &s, None, 1)
            .await
            .unwrap();
    }
    let a40 = wire("a40-two-groups");
    let Applied::Merges(done) = store.apply_adt(&a40, &s, None, 2).await.unwrap() else {
        panic!("every group applied")
    };
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|g| !g.prior_unknown));
    assert_ne!(done[0].survivor, done[1].survivor);
    for (prior, survivor, group) in [("Q-7130", "Q-7131", 0), ("Q-7132", "Q-7133", 1)] {
        assert_eq!(
            store.patient_by_identifier(&s, &his(prior)).await.unwrap(),
            Some(done[group].survivor.clone()),
            "{prior}"
        );
        assert_eq!(
            store
                .patient_by_identifier(&s, &his(survivor))
                .await
                .unwrap(),
            Some(done[group].survivor.clone())
        );
    }
    // Each survivor's PID-13 (a snapshot) is its phone list now.
    assert_eq!(
        phone_owners(&store, &s, "4917655501133").await,
        vec![done[1].survivor.clone()]
    );
    assert_eq!(
        phone_owners(&store, &s, "4917655501131").await,
        vec![done[0].survivor.clone()]
    );
    assert!(phone_owners(&store, &s, "4917655501232").await.is_empty());
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM adt_patients WHERE merged_into IS NOT NULL"
        )
        .await,
        2
    );
    assert_eq!(
        store.apply_adt(&a40, &s, None, 3).await.unwrap(),
        Applied::AlreadyApplied
    );
}

/// When one group of an A40 is refused, no group is applied: the
/// refusal names that group's segment.
async fn a40_with_a_refused_group_applies_nothing(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    for (c, id) in [
        ("S-1", "Q-7130^^^HIS^PI"),
        ("S-2", "Q-7133^^^HIS^PI"),
        ("S-3", "Q-7135^^^HIS^PI"),
    ] {
        store
            .apply_adt(
                &admit(c, id, "+49 176 5550 1299", &format!("V{c}")),
                &s,
                None,
                1,
            )
            .await
            .unwrap();
    }
    let mut a40 = wire("a40-two-groups");
    // Group 2's survivor names two different patients.
    a40.more_merges[0].identifiers = vec![his("Q-7133"), his("Q-7135")];
    let messages = count(&store, "SELECT COUNT(*) FROM adt_messages").await;
    let ApplyError::Refused(e) = store.apply_adt(&a40, &s, None, 2).await.unwrap_err() else {
        panic!("refused")
    };
    assert_eq!(
        (e.ack.as_str(), e.code.code(), e.location.as_str()),
        ("AE", "205", "PID(2)-3")
    );
    // Group 1 was not merged either, and the message is not recorded.
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM adt_patients WHERE merged_into IS NOT NULL"
        )
        .await,
        0
    );
    assert_eq!(
        store
            .patient_by_identifier(&s, &his("Q-7131"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM adt_messages").await,
        messages
    );
    // Group 2's prior identifiers of two patients: named at MRG(2)-1.
    let mut a40 = wire("a40-two-groups");
    a40.control_id = "WIRE-19-B".into();
    a40.more_merges[0].prior = vec![his("Q-7133"), his("Q-7135")];
    let ApplyError::Refused(e) = store.apply_adt(&a40, &s, None, 3).await.unwrap_err() else {
        panic!("refused")
    };
    assert_eq!((e.code.code(), e.location.as_str()), ("205", "MRG(2)-1"));
    assert_eq!(
        store
            .patient_by_identifier(&s, &his("Q-7131"))
            .await
            .unwrap(),
        None
    );
}

/// A PID-13 with unreadable telephone repetitions never deletes the stored
/// phones; its readable numbers are added.
async fn unreadable_telephones_keep_the_stored_phones(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let Applied::Patient(ida) = store
        .apply_adt(
            &admit("S-1", "Q-7140^^^HIS^PI", "+49 176 5550 1140", "V-7140"),
            &s,
            None,
            1,
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    let a08 = wire("a08-phone-unreadable");
    assert_eq!(
        store.apply_adt(&a08, &s, None, 2).await.unwrap(),
        Applied::Patient(ida.clone())
    );
    assert_eq!(
        phone_owners(&store, &s, "4917655501140").await,
        vec![ida.clone()]
    );
    assert_eq!(
        phone_owners(&store, &s, "4917655501141").await,
        vec![ida.clone()]
    );
    // A readable snapshot afterwards replaces them as before.
    let mut clean = a08.clone();
    clean.control_id = "WIRE-20-B".into();
    clean.phone_field = hl7::Presence::Present;
    clean.notices.clear();
    store.apply_adt(&clean, &s, None, 3).await.unwrap();
    assert!(phone_owners(&store, &s, "4917655501140").await.is_empty());
    assert_eq!(phone_owners(&store, &s, "4917655501141").await, vec![ida]);
}

/// A31 replaces the phones of a known patient and leaves its encounters
/// alone; A28 adds a person without an encounter.
async fn a28_and_a31_update_the_person_only(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let Applied::Patient(paul) = store
        .apply_adt(
            &admit("S-1", "Q-7142^^^HIS^PI", "+49 176 5550 1143", "V-7142"),
            &s,
            None,
            1,
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    let mut a31 = wire("a31-person-update");
    // Even a visit number on an A31 creates or changes no encounter.
    a31.visit = Some(his("V-7199"));
    assert_eq!(
        store.apply_adt(&a31, &s, None, 2).await.unwrap(),
        Applied::Patient(paul.clone())
    );
    assert!(phone_owners(&store, &s, "4917655501143").await.is_empty());
    assert_eq!(
        phone_owners(&store, &s, "4917655501142").await,
        vec![paul.clone()]
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM adt_encounters").await,
        1
    );
    assert_eq!(
        store.encounter_state(&s, &his("V-7142")).await.unwrap(),
        Some(("in-progress".into(), paul))
    );
    let Applied::Patient(rosa) = store
        .apply_adt(&wire("a28-person-add"), &s, None, 3)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        phone_owners(&store, &s, "4917655501144").await,
        vec![rosa.clone()]
    );
    assert_eq!(
        store
            .patient_by_identifier(
                &s,
                &Cx {
                    value: "55-144".into(),
                    authority: "LAB".into()
                }
            )
            .await
            .unwrap(),
        Some(rosa)
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM adt_encounters").await,
        1
    );
}

/// An update (A08) that names a visit discharged long ago (PV1-45
/// valued) records it `finished`; an update of an older open visit does
/// not make it the current one. The admitted visit stays current.
async fn updates_of_other_visits_keep_the_current_visit(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let update = |control: &str, visit: &str, discharge: &str| {
        adt_text(&[
            &format!(
                "MSH|^~\\&|HIS|ST-MARIEN|CB|ST-MARIEN|20270316||ADT^A08^ADT_A01|{control}|P|2.5"
            ),
            "EVN|A08",
            "PID|1||Q-8800^^^HIS^PI",
            &format!(
                "PV1|1|I|||||||||||||||||{visit}^^^HIS^VN{}{discharge}",
                "|".repeat(26)
            ),
        ])
    };
    // An older open visit, first named by an update, then the admission.
    let Applied::Patient(p) = store
        .apply_adt(&update("U-0", "V-OLD", ""), &s, None, 1)
        .await
        .unwrap()
    else {
        panic!("A08 applies")
    };
    let current = |p: String| {
        let (store, s) = (&store, &s);
        async move {
            store
                .identity_patient(s, &p)
                .await
                .unwrap()
                .unwrap()
                .current_encounter
        }
    };
    // The only open visit (a feed joined mid-stay): current.
    assert_eq!(current(p.clone()).await, Some(his("V-OLD")));
    store
        .apply_adt(&admit("A-1", "Q-8800^^^HIS^PI", "", "V-NOW"), &s, None, 2)
        .await
        .unwrap();
    assert_eq!(current(p.clone()).await, Some(his("V-NOW")));
    // Billing updates after the admission: one for the older open visit,
    // one for a visit of 2019 discharged then.
    let old = update("U-1", "V-OLD", "");
    assert!(!old.discharged);
    store.apply_adt(&old, &s, None, 3).await.unwrap();
    // An update naming a visit not seen before, without a discharge date.
    store
        .apply_adt(&update("U-4", "V-UNSEEN", ""), &s, None, 5)
        .await
        .unwrap();
    assert_eq!(current(p.clone()).await, Some(his("V-NOW")));
    let closed = update("U-2", "V-2019", "20190320120000");
    assert!(closed.discharged);
    store.apply_adt(&closed, &s, None, 4).await.unwrap();
    assert_eq!(current(p.clone()).await, Some(his("V-NOW")));
    assert_eq!(
        store.encounter_state(&s, &his("V-2019")).await.unwrap(),
        Some(("finished".into(), p.clone()))
    );
    // Two open visits, both first named by updates: neither is known to
    // be the current one.
    let other = |control: &str, visit: &str| {
        adt_text(&[
            &format!(
                "MSH|^~\\&|HIS|ST-MARIEN|CB|ST-MARIEN|20270316||ADT^A08^ADT_A01|{control}|P|2.5"
            ),
            "EVN|A08",
            "PID|1||Q-8801^^^HIS^PI",
            &format!("PV1|1|I|||||||||||||||||{visit}^^^HIS^VN"),
        ])
    };
    let Applied::Patient(q) = store
        .apply_adt(&other("W-1", "V-A"), &s, None, 6)
        .await
        .unwrap()
    else {
        panic!("A08 applies")
    };
    assert_eq!(current(q.clone()).await, Some(his("V-A")));
    store
        .apply_adt(&other("W-2", "V-B"), &s, None, 7)
        .await
        .unwrap();
    assert_eq!(current(q).await, None);
    // `""` in PV1-45 is no discharge date.
    assert!(!update("U-3", "V-OLD", "\"\"").discharged);
}

/// An A40 whose survivor's PID-3 already lists the merged (prior)
/// identifier, as some master patient indexes send it: merged, not
/// refused; a later update listing both identifiers applies.
async fn a40_with_the_prior_identifier_in_pid3_merges(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let mut patients = Vec::new();
    for (c, id) in [("M-1", "Q-9001^^^HIS^PI"), ("M-2", "Q-9002^^^HIS^PI")] {
        let Applied::Patient(p) = store
            .apply_adt(&admit(c, id, "", &format!("V{c}")), &s, None, 1)
            .await
            .unwrap()
        else {
            panic!("A01 applies")
        };
        patients.push(p);
    }
    let header = |control: &str, event: &str, structure: &str| {
        format!(
            "MSH|^~\\&|HIS|ST-MARIEN|CB|ST-MARIEN|20270317||ADT^{event}^{structure}|{control}|P|2.5"
        )
    };
    let a40 = adt_text(&[
        &header("M-3", "A40", "ADT_A39"),
        "EVN|A40",
        "PID|1||Q-9002^^^HIS^PI~Q-9001^^^HIS^PI",
        "MRG|Q-9002^^^HIS^PI",
    ]);
    assert_eq!(
        store.apply_adt(&a40, &s, None, 2).await.unwrap(),
        Applied::Patient(patients[0].clone())
    );
    for id in ["Q-9001", "Q-9002"] {
        assert_eq!(
            store.patient_by_identifier(&s, &his(id)).await.unwrap(),
            Some(patients[0].clone()),
            "{id}"
        );
    }
    let a08 = adt_text(&[
        &header("M-4", "A08", "ADT_A01"),
        "EVN|A08",
        "PID|1||Q-9002^^^HIS^PI~Q-9001^^^HIS^PI",
        "PV1|1|I",
    ]);
    assert_eq!(
        store.apply_adt(&a08, &s, None, 3).await.unwrap(),
        Applied::Patient(patients[0].clone())
    );
}

/// A change of patient class that opens a new account (A06: emergency
/// visit E-100 becomes inpatient stay S-200, MRG-5 the closed visit)
/// makes the new visit current and closes the old one; without MRG-5 the
/// new visit is current all the same (ranked as of the change).
async fn a_change_of_patient_class_moves_the_current_visit(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let change = |control: &str, event: &str, mrg: &str, visit: &str| {
        let mut segments = vec![
            format!(
                "MSH|^~\\&|HIS|ST-MARIEN|CB|ST-MARIEN|20270316||ADT^{event}^ADT_A06|{control}|P|2.5"
            ),
            format!("EVN|{event}"),
            "PID|1||Q-9900^^^HIS^PI".to_owned(),
        ];
        if !mrg.is_empty() {
            segments.push(format!("MRG|Q-9900^^^HIS^PI||||{mrg}^^^HIS^VN"));
        }
        segments.push(format!("PV1|1|I|||||||||||||||||{visit}^^^HIS^VN"));
        let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
        adt_text(&refs)
    };
    let Applied::Patient(p) = store
        .apply_adt(&admit("A-1", "Q-9900^^^HIS^PI", "", "E-100"), &s, None, 1)
        .await
        .unwrap()
    else {
        panic!("A01 applies")
    };
    let current = || async {
        store
            .identity_patient(&s, &p)
            .await
            .unwrap()
            .unwrap()
            .current_encounter
    };
    assert_eq!(current().await, Some(his("E-100")));
    store
        .apply_adt(&change("C-1", "A06", "E-100", "S-200"), &s, None, 2)
        .await
        .unwrap();
    assert_eq!(current().await, Some(his("S-200")));
    assert_eq!(
        store.encounter_state(&s, &his("E-100")).await.unwrap(),
        Some(("finished".into(), p.clone()))
    );
    // A07 back to outpatient under a third number, no MRG: current too.
    store
        .apply_adt(&change("C-2", "A07", "", "O-300"), &s, None, 3)
        .await
        .unwrap();
    assert_eq!(current().await, Some(his("O-300")));
}

/// An account number (CX-5 `AN`) in PID-3 equal to another patient's
/// number under the same authority names neither: the new patient stays
/// a patient of its own and the other's phones are unchanged.
async fn an_account_number_never_names_another_patient(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let s = sealer();
    let Applied::Patient(a) = store
        .apply_adt(
            &admit("A-1", "4711^^^HIS^PI", "+49 170 2222222", "V-A"),
            &s,
            None,
            1,
        )
        .await
        .unwrap()
    else {
        panic!("A01 applies")
    };
    let Applied::Patient(b) = store
        .apply_adt(
            &admit(
                "A-2",
                "5200^^^HIS^PI~4711^^^HIS^AN",
                "+49 170 1111111",
                "V-B",
            ),
            &s,
            None,
            2,
        )
        .await
        .unwrap()
    else {
        panic!("A01 applies")
    };
    assert_ne!(a, b);
    assert_eq!(
        phone_owners(&store, &s, "491702222222").await,
        std::slice::from_ref(&a)
    );
    assert_eq!(
        phone_owners(&store, &s, "491701111111").await,
        std::slice::from_ref(&b)
    );
    assert_eq!(
        store.patient_by_identifier(&s, &his("4711")).await.unwrap(),
        Some(a)
    );
}

super::tests::both_backends!(
    a_change_of_patient_class_moves_the_current_visit,
    an_account_number_never_names_another_patient,
    a40_with_the_prior_identifier_in_pid3_merges,
    updates_of_other_visits_keep_the_current_visit,
    a40_applies_every_patient_group,
    a40_with_a_refused_group_applies_nothing,
    unreadable_telephones_keep_the_stored_phones,
    a28_and_a31_update_the_person_only,
    i6_null_phone_field_clears_stored_phones,
    i6_reused_control_id_with_other_content_is_refused,
    i6_a40_with_unknown_prior_applies_the_survivor,
    i6_adt_feed_maintains_identity_map,
    i6_a40_merge_repoints_identity_links_and_quarantine,
    i6_refused_adt_applies_nothing,
    i10_quarantine_resolve_and_release_once,
);
