//! WhatsApp Cloud API webhook fidelity against the real broker, FHIR server
//! and store: one batch webhook with interactive replies (button, list,
//! flow), an unknown type, a malformed entry between two good ones, a
//! username sender, an echo of what the hospital sent, a voice note and a
//! sticker in a linked conversation, statuses and a template status change.
//! Each entry ends in its expected state and reason; `chartbridge status`
//! shows the skipped entries by kind.

mod common;

use std::time::Duration;

use chartbridge::event::MessageKey;
use chartbridge::resolve::conversation_token;
use chartbridge::store::sealed;
use chartbridge::store::{Link, MessageState};
use common::standins::{MediaApi, Medium};
use common::{Harness, wait_until};
use serde_json::{Value, json};
use sha2::Digest;

const PHONE_NUMBER_ID: &str = "209871234500011";
const DISPLAY_NUMBER: &str = "4940555000";
const USER: &str = "4915723456789";
const USERNAME_ID: &str = "DE.1048576204857";
const VOICE_MEDIA: &str = "880012233445566";
const STICKER_MEDIA: &str = "880012233445577";

fn id(h: &Harness, name: &str) -> String {
    format!("wamid.fid-{name}-{}", h.run)
}

fn key(h: &Harness, name: &str) -> MessageKey {
    MessageKey {
        source: "whatsapp".into(),
        message_id: id(h, name),
    }
}

fn entry(h: &Harness, name: &str, ts: u32, kind: &str, content: Value) -> Value {
    let mut m = json!({"from": USER, "id": id(h, name), "timestamp": ts.to_string(), "type": kind});
    m[kind] = content;
    m
}

fn webhook(h: &Harness) -> Vec<u8> {
    let question = id(h, "question");
    let mut button = entry(
        h,
        "button",
        1_795_940_000,
        "interactive",
        json!({"type": "button_reply", "button_reply": {"id": "swelling-less", "title": "Schwellung geringer"}}),
    );
    button["context"] = json!({"from": DISPLAY_NUMBER, "id": question});
    let mut list = entry(
        h,
        "list",
        1_795_940_010,
        "interactive",
        json!({"type": "list_reply", "list_reply": {"id": "pain-3", "title": "Schmerz 3 von 10",
               "description": "Beim Gehen etwas stärker"}}),
    );
    list["context"] = json!({"from": DISPLAY_NUMBER, "id": question});
    let flow = entry(
        h,
        "flow",
        1_795_940_020,
        "interactive",
        json!({"type": "nfm_reply", "nfm_reply": {"name": "flow", "body": "Sent",
               "response_json": "{\"flow_token\":\"ft-77\",\"temperatur\":\"37,9\",\"verband\":\"trocken\"}"}}),
    );
    let unknown = entry(
        h,
        "unknown",
        1_795_940_030,
        "hologram",
        json!({"frames": 3}),
    );
    let before = entry(
        h,
        "before",
        1_795_940_040,
        "text",
        json!({"body": "Ich schicke gleich ein Foto."}),
    );
    let mut broken = entry(h, "broken", 0, "text", json!({"body": "kaputt"}));
    broken["timestamp"] = json!("gleich");
    let after = entry(
        h,
        "after",
        1_795_940_060,
        "text",
        json!({"body": "Foto kommt doch morgen."}),
    );
    let voice = entry(
        h,
        "voice",
        1_795_940_070,
        "audio",
        json!({"id": VOICE_MEDIA, "mime_type": "audio/ogg; codecs=opus", "voice": true}),
    );
    let sticker = entry(
        h,
        "sticker",
        1_795_940_080,
        "sticker",
        json!({"id": STICKER_MEDIA, "mime_type": "image/webp", "animated": false}),
    );
    let reaction = entry(
        h,
        "reaction",
        1_795_940_090,
        "reaction",
        json!({"message_id": id(h, "before"), "emoji": "\u{1f44d}"}),
    );
    let username = json!({"from_user_id": USERNAME_ID, "id": id(h, "username"),
        "timestamp": "1795940100", "type": "text", "text": {"body": "Hier ist Kim, Zimmer 12."}});
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "300400500600700", "changes": [
            {"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
                "contacts": [
                    {"profile": {"name": "Jonas Beispiel"}, "wa_id": USER},
                    {"profile": {"name": "Kim", "username": "@kim.k"}, "user_id": USERNAME_ID}
                ],
                "messages": [button, list, flow, unknown, before, broken, after, voice, sticker,
                             reaction, username],
                "statuses": [{"id": question, "status": "read", "timestamp": "1795940001",
                              "recipient_id": USER}]
            }},
            {"field": "smb_message_echoes", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
                "message_echoes": [{"from": DISPLAY_NUMBER, "to": USER, "id": id(h, "echo"),
                    "timestamp": "1795940110", "type": "text",
                    "text": {"body": "Danke, bitte morgen um 9 Uhr zur Wundkontrolle."}}]
            }},
            {"field": "message_template_status_update", "value": {"event": "APPROVED",
                "message_template_id": 7_700_100_200_300u64, "message_template_name": "verbandwechsel",
                "message_template_language": "de", "reason": "NONE"}}
        ]}]
    })
    .to_string()
    .into_bytes()
}

/// Links the conversation of `user` with the business number to `patient`.
async fn link(h: &Harness, user: &str, patient: &str) {
    h.store
        .set_link(
            &conversation_token(&h.sealer, "whatsapp", &format!("{PHONE_NUMBER_ID}:{user}")),
            &Link {
                patient: patient.to_owned(),
                encounter: None,
            },
            0,
        )
        .await
        .unwrap();
}

async fn communication(h: &Harness, name: &str) -> Value {
    let got = h.wait_state(&key(h, name), MessageState::Archived).await;
    let resource = got.resource.unwrap();
    assert!(resource.starts_with("Communication/"), "{name}: {resource}");
    h.kis.read(&resource).await.unwrap()
}

fn text(c: &Value) -> &str {
    c["payload"][0]["contentString"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_batch_webhook_every_entry_ends_in_its_state() {
    let media = MediaApi::start().await;
    media.put(
        VOICE_MEDIA,
        Medium {
            bytes: b"OggS\0voice-note-bytes".to_vec(),
            mime_type: "audio/ogg".into(),
        },
    );
    media.put(
        STICKER_MEDIA,
        Medium {
            bytes: b"RIFF\0\0\0\0WEBPsticker".to_vec(),
            mime_type: "image/webp".into(),
        },
    );
    let h = Harness::new(None, Some(&media.url)).await;
    let (patient, _) = h.seed_patient("P-1001").await;
    for user in [USER, USERNAME_ID] {
        link(&h, user, &patient).await;
    }
    let worker = h.start_worker();
    h.publish(&webhook(&h)).await;

    // Interactive replies: readable text, in response to the question asked.
    let identifier_system = h.config.kis.identifier_system.clone();
    let question = format!("whatsapp:{}", id(&h, "question"));
    let button = communication(&h, "button").await;
    assert_eq!(text(&button), "Schwellung geringer");
    assert_eq!(
        button["inResponseTo"][0]["identifier"],
        json!({"system": identifier_system, "value": question})
    );
    assert_eq!(button["subject"]["reference"], patient.as_str());
    let list = communication(&h, "list").await;
    assert_eq!(text(&list), "Schmerz 3 von 10\nBeim Gehen etwas stärker");
    assert_eq!(list["inResponseTo"][0]["identifier"]["value"], question);
    let flow = communication(&h, "flow").await;
    assert_eq!(text(&flow), "temperatur: 37,9\nverband: trocken");

    // An unknown type is held sealed, never dropped.
    let unknown = h
        .wait_state(&key(&h, "unknown"), MessageState::Quarantined)
        .await;
    assert_eq!(unknown.reason, "unsupported_message_type");
    let sealed = h
        .store
        .quarantine_detail(&key(&h, "unknown"))
        .await
        .unwrap();
    assert!(sealed.is_some(), "the entry is kept sealed for review");

    // A malformed entry between two good ones: held alone.
    assert_eq!(
        text(&communication(&h, "before").await),
        "Ich schicke gleich ein Foto."
    );
    assert_eq!(
        text(&communication(&h, "after").await),
        "Foto kommt doch morgen."
    );
    let broken = h
        .wait_state(&key(&h, "broken"), MessageState::Quarantined)
        .await;
    assert_eq!(broken.reason, "invalid_entry");
    let (_, sealed_entry, sealed_detail) = h
        .store
        .quarantine_detail(&key(&h, "broken"))
        .await
        .unwrap()
        .unwrap();
    let broken = h.store.message_ref(&key(&h, "broken")).unwrap();
    let detail = h
        .sealer
        .open(&sealed::quarantine_detail(&broken), &sealed_detail.unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(detail).unwrap(),
        "entry[0].changes[0].value.messages[5].timestamp: not a unix time"
    );
    let raw: Value = serde_json::from_slice(
        &h.sealer
            .open(&sealed::quarantine_event(&broken), &sealed_entry)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        raw["text"]["body"], "kaputt",
        "the entry as received is kept"
    );

    // A username sender: the conversation is keyed by the business-scoped
    // user ID, which the link table names.
    let username = communication(&h, "username").await;
    assert_eq!(text(&username), "Hier ist Kim, Zimmer 12.");
    assert_eq!(username["sender"]["identifier"]["value"], USERNAME_ID);
    assert_eq!(username["sender"]["display"], "Kim");

    // What the hospital sent: archived in the patient's conversation, the
    // business number as sender, the patient as recipient.
    let echo = communication(&h, "echo").await;
    assert_eq!(
        text(&echo),
        "Danke, bitte morgen um 9 Uhr zur Wundkontrolle."
    );
    assert_eq!(echo["sender"]["identifier"]["value"], PHONE_NUMBER_ID);
    assert_eq!(echo["recipient"][0]["identifier"]["value"], USER);
    assert_eq!(echo["subject"]["reference"], patient.as_str());

    // A voice note in a linked conversation: audio documentation (KDL).
    let voice = h
        .wait_state(&key(&h, "voice"), MessageState::Archived)
        .await;
    assert_eq!(voice.reason, "linked-audio");
    let doc = h.kis.read(voice.resource.as_ref().unwrap()).await.unwrap();
    assert_eq!(doc["resourceType"], "DocumentReference");
    assert_eq!(doc["type"]["coding"][0]["code"], "ED010199");

    // A sticker is no clinical photo: not relevant by its own rule.
    let sticker = h
        .wait_state(&key(&h, "sticker"), MessageState::NotRelevant)
        .await;
    assert_eq!(sticker.reason, "stickers");
    assert!(
        h.kis_ids("DocumentReference", &key(&h, "sticker"))
            .await
            .is_empty()
    );

    // The reaction has no state of its own: it is counted.
    assert!(h.state(&key(&h, "reaction")).await.is_none());
    wait_until(Duration::from_secs(30), "skipped counts", || async {
        h.store.skipped_counts().await.unwrap().len() == 3
    })
    .await;
    worker.stop().await;
    assert_eq!(
        h.store.skipped_counts().await.unwrap(),
        vec![
            ("whatsapp".into(), "non_message_change".into(), 1),
            ("whatsapp".into(), "reaction".into(), 1),
            ("whatsapp".into(), "status".into(), 1),
        ]
    );

    // `chartbridge status`, another process, shows them by kind.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("--config")
        .arg(h.config_file())
        .arg("status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status}");
    assert!(status.contains("skipped entries"), "{status}");
    for (kind, n) in [("non_message_change", 1), ("reaction", 1), ("status", 1)] {
        let line = format!("  {:<13} {kind:<28} {n}", "whatsapp");
        assert!(status.contains(&line), "no line {line:?} in\n{status}");
    }
    assert!(
        status.contains("quarantined") && status.contains("unsupported_message_type"),
        "{status}"
    );
    // Nothing of the content reaches the status output.
    assert!(
        !status.contains(USER) && !status.contains("Kim"),
        "{status}"
    );
}

/// A malformed entry is held under its wamid; when a well-formed copy of the
/// same wamid arrives later (or the other way round), neither is lost: the
/// later one is kept sealed as a conflict, visible for review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_good_copy_of_a_held_entry_is_kept_as_a_conflict() {
    let h = Harness::new(None, None).await;
    let worker = h.start_worker();
    let hook = |m: Value| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-C", "changes": [{
            "field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
            "messages": [m]}}]}]})
        .to_string()
        .into_bytes()
    };
    for (first, second) in [("held-first", true), ("good-first", false)] {
        let broken = json!({"from": USER, "id": id(&h, first), "timestamp": "tomorrow",
                            "type": "text", "text": {"body": "Fieber seit gestern"}});
        let good = entry(
            &h,
            first,
            1_795_940_500,
            "text",
            json!({"body": "Fieber seit gestern"}),
        );
        let (a, b) = if second {
            (broken, good)
        } else {
            (good, broken)
        };
        h.publish(&hook(a)).await;
        let k = key(&h, first);
        wait_until(Duration::from_secs(30), "first copy terminal", || async {
            h.state(&k).await.is_some()
        })
        .await;
        let state = h.state(&k).await.unwrap();
        h.publish(&hook(b)).await;
        wait_until(Duration::from_secs(30), "second copy kept", || async {
            h.store.conflicts(&k).await.unwrap().len() == 1
        })
        .await;
        let after = h.state(&k).await.unwrap();
        assert_eq!(
            after.state, state.state,
            "{first}: the first copy's state stays"
        );
        if second {
            assert_eq!(after.state, MessageState::Quarantined);
            assert_eq!(after.reason, "invalid_entry");
        }
    }
    worker.stop().await;
}

/// A forwarded text and a chain message are archived, but the record says
/// they were forwarded: a note on the Communication and a Provenance entity
/// of role `quotation`, both read back from the FHIR server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_forwarded_messages_are_archived_marked_as_forwarded() {
    let h = Harness::new(None, None).await;
    let (patient, _) = h.seed_patient("P-1001").await;
    link(&h, USER, &patient).await;
    let worker = h.start_worker();
    let mut once = entry(
        &h,
        "fwd-once",
        1_795_941_000,
        "text",
        json!({"body": "Laborwerte meiner Mutter: Kreatinin 1,9"}),
    );
    once["context"] = json!({"forwarded": true});
    let mut chain = entry(
        &h,
        "fwd-chain",
        1_795_941_010,
        "text",
        json!({"body": "Ingwertee heilt alles, bitte weiterleiten"}),
    );
    chain["context"] = json!({"forwarded": true, "frequently_forwarded": true});
    let own = entry(
        &h,
        "fwd-own",
        1_795_941_020,
        "text",
        json!({"body": "Mir geht es besser"}),
    );
    let hook = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-F", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
        "messages": [once, chain, own]}}]}]});
    h.publish(hook.to_string().as_bytes()).await;
    for (name, note) in [
        ("fwd-once", Some("Forwarded message")),
        ("fwd-chain", Some("Frequently forwarded message")),
        ("fwd-own", None),
    ] {
        let c = communication(&h, name).await;
        let got = c["note"][0]["text"].as_str();
        match note {
            Some(prefix) => assert!(got.is_some_and(|t| t.starts_with(prefix)), "{name}: {c}"),
            None => assert!(got.is_none(), "{name}: {c}"),
        }
        let prov_id = chartbridge::map::stable_id(&key(&h, name), "Provenance");
        let prov = h.kis.read(&format!("Provenance/{prov_id}")).await.unwrap();
        let roles: Vec<String> = prov["entity"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["role"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            roles.iter().any(|r| r == "quotation"),
            note.is_some(),
            "{name}: {roles:?}"
        );
    }
    worker.stop().await;
}

/// The `history` webhook (a WhatsApp Business app number moving to the
/// Cloud API shares its past chats) is archived like `messages`: the
/// user's messages and the business's, each in the thread's conversation.
/// A group chat's message is filed under the group, which no link names,
/// so it is held; the sender's one-to-one link does not pull it in. In a
/// linked conversation, a document of a type no rule names is held, not
/// deleted on [default]'s say. A notice that the user changed number
/// retires the conversation's link: the next message is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_history_groups_and_unnamed_types_are_never_lost() {
    let h = Harness::new(None, None).await;
    let (patient, _) = h.seed_patient("P-1003").await;
    link(&h, USER, &patient).await;
    let worker = h.start_worker();
    let mine = entry(
        &h,
        "hist-user",
        1_795_942_000,
        "text",
        json!({"body": "Die Narbe juckt seit Montag."}),
    );
    let mut ours = entry(
        &h,
        "hist-business",
        1_795_942_060,
        "text",
        json!({"body": "Bitte Foto schicken."}),
    );
    ours["from"] = json!(DISPLAY_NUMBER);
    let history = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-H", "changes": [{
        "field": "history", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
        "history": [{"metadata": {"phase": 0, "chunk_order": 1, "progress": 100},
                     "threads": [{"id": USER, "messages": [mine, ours]}]}]}}]}]});
    h.publish(history.to_string().as_bytes()).await;
    let user = communication(&h, "hist-user").await;
    assert_eq!(text(&user), "Die Narbe juckt seit Montag.");
    assert_eq!(user["subject"]["reference"], patient.as_str());
    let business = communication(&h, "hist-business").await;
    assert_eq!(text(&business), "Bitte Foto schicken.");
    assert_eq!(business["sender"]["identifier"]["value"], PHONE_NUMBER_ID);
    assert_eq!(business["recipient"][0]["identifier"]["value"], USER);

    let mut group = entry(
        &h,
        "group",
        1_795_942_100,
        "text",
        json!({"body": "Papa hat wieder Fieber."}),
    );
    group["group_id"] = json!("Y2FwaV9ncm91cDoxNzA1NTU1MDEzOTox");
    let csv = entry(
        &h,
        "csv",
        1_795_942_110,
        "document",
        json!({"id": "880012233445599", "mime_type": "text/csv", "filename": "werte.csv"}),
    );
    let hook = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-G", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
        "messages": [group, csv]}}]}]});
    h.publish(hook.to_string().as_bytes()).await;
    let held = h
        .wait_state(&key(&h, "group"), MessageState::Quarantined)
        .await;
    assert_eq!(held.reason, "unresolved_conversation");
    let held = h
        .wait_state(&key(&h, "csv"), MessageState::Quarantined)
        .await;
    assert_eq!(held.reason, "unsupported_media_type");

    // The user changed number: whoever writes from it next may be someone
    // else, so the link is retired and the next message is held.
    let mut changed = entry(
        &h,
        "changed",
        1_795_942_200,
        "system",
        json!({"body": "User changed number", "type": "user_changed_number",
               "new_wa_id": "4915799999999"}),
    );
    changed["from"] = json!(USER);
    let after = entry(
        &h,
        "after-change",
        1_795_942_300,
        "text",
        json!({"body": "Hallo, neue Nummer?"}),
    );
    let token = conversation_token(&h.sealer, "whatsapp", &format!("{PHONE_NUMBER_ID}:{USER}"));
    for m in [changed, after] {
        let hook = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-C", "changes": [{
            "field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
            "messages": [m]}}]}]});
        h.publish(hook.to_string().as_bytes()).await;
        wait_until(Duration::from_secs(60), "link retired", || async {
            h.store.link(&token).await.unwrap().is_none()
        })
        .await;
    }
    let held = h
        .wait_state(&key(&h, "after-change"), MessageState::Quarantined)
        .await;
    assert_eq!(held.reason, "unresolved_conversation");
    let trail = h.store.audit_trail().await.unwrap();
    assert!(
        trail.iter().any(|r| r.action == "conversation.unlink"),
        "the retired link is in the audit trail"
    );
    worker.stop().await;
    for name in ["group", "csv"] {
        assert_eq!(h.store.deletion_state(&key(&h, name)).await.unwrap(), None);
    }
}

/// History media come in two steps (the history reference: media asset
/// ids follow in a later history webhook): the first copy, without an id,
/// is held `media_unavailable`; the later copy with the id replaces it and
/// is archived with the medium's bytes, once, deletion after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_history_media_are_archived_when_their_id_arrives() {
    let bytes = std::fs::read(common::repo().join("fixtures/media/wound.png")).unwrap();
    let media = MediaApi::start().await;
    let media_id = "880012233445588";
    media.put(
        media_id,
        Medium {
            bytes: bytes.clone(),
            mime_type: "image/png".into(),
        },
    );
    let h = Harness::new(None, Some(&media.url)).await;
    let (patient, _) = h.seed_patient("P-1004").await;
    link(&h, USER, &patient).await;
    let worker = h.start_worker();
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let history_with = |image: Value, more: &[Value]| {
        let mut messages = vec![entry(&h, "hist-photo", 1_795_942_500, "image", image)];
        messages.extend_from_slice(more);
        json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-H", "changes": [{
            "field": "history", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
            "history": [{"metadata": {"phase": 0, "chunk_order": 1, "progress": 100},
                         "threads": [{"id": USER, "messages": messages}]}]}}]}]})
        .to_string()
    };
    let history = |image: Value| history_with(image, &[]);
    h.publish(history(json!({"mime_type": "image/png", "sha256": sha})).as_bytes())
        .await;
    let held = h
        .wait_state(&key(&h, "hist-photo"), MessageState::Quarantined)
        .await;
    assert_eq!(held.reason, "media_unavailable");
    assert_eq!(
        h.store
            .deletion_state(&key(&h, "hist-photo"))
            .await
            .unwrap(),
        None
    );

    h.publish(history(json!({"id": media_id, "mime_type": "image/png", "sha256": sha})).as_bytes())
        .await;
    wait_until(Duration::from_secs(60), "archived", || async {
        h.state(&key(&h, "hist-photo"))
            .await
            .is_some_and(|m| m.state == MessageState::Archived)
    })
    .await;
    let archived = h.state(&key(&h, "hist-photo")).await.unwrap();
    assert!(archived.resource.unwrap().starts_with("DocumentReference/"));
    assert_eq!(
        h.kis_ids("DocumentReference", &key(&h, "hist-photo"))
            .await
            .len(),
        1
    );
    wait_until(Duration::from_secs(60), "deletion requested", || async {
        h.store
            .deletion_state(&key(&h, "hist-photo"))
            .await
            .unwrap()
            == Some(chartbridge::store::DeletionState::Requested)
    })
    .await;
    // The copy without the id, delivered again after: the archive stands,
    // no conflict for a person.
    // (A text in the same payload: once it is archived, the copy beside it
    // was handled.)
    let marker = entry(
        &h,
        "after-redelivery",
        1_795_942_600,
        "text",
        json!({"body": "Foto nochmal"}),
    );
    h.publish(history_with(json!({"mime_type": "image/png", "sha256": sha}), &[marker]).as_bytes())
        .await;
    communication(&h, "after-redelivery").await;
    assert_eq!(
        h.state(&key(&h, "hist-photo")).await.unwrap().state,
        MessageState::Archived
    );
    assert!(
        h.store
            .conflicts(&key(&h, "hist-photo"))
            .await
            .unwrap()
            .is_empty(),
        "no conflict recorded"
    );
    worker.stop().await;
}

/// Texts with control characters a FHIR `string` must not carry (a
/// vertical tab from a copied line break, NUL, ESC) are archived as sent,
/// as a text/plain attachment of the Communication, read back byte for
/// byte from the real FHIR server; ordinary text stays `contentString`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_texts_with_control_characters_are_archived_as_sent() {
    use base64::Engine;
    let h = Harness::new(None, None).await;
    let (patient, _) = h.seed_patient("P-1001").await;
    link(&h, USER, &patient).await;
    let worker = h.start_worker();
    let sent = "Dosis:\u{0b}5 mg\u{0}\u{1b}[0m abends";
    let odd = entry(&h, "ctl", 1_795_942_000, "text", json!({"body": sent}));
    let plain = entry(
        &h,
        "plain",
        1_795_942_010,
        "text",
        json!({"body": "Danke\tsehr\r\n"}),
    );
    let hook = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-C", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID},
        "messages": [odd, plain]}}]}]});
    h.publish(hook.to_string().as_bytes()).await;
    let c = communication(&h, "ctl").await;
    let attachment = &c["payload"][0]["contentAttachment"];
    assert_eq!(
        attachment["contentType"], "text/plain; charset=utf-8",
        "{c}"
    );
    let data = base64::engine::general_purpose::STANDARD
        .decode(attachment["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, sent.as_bytes());
    assert!(c["payload"][0]["contentString"].is_null());
    let c = communication(&h, "plain").await;
    assert_eq!(text(&c), "Danke\tsehr\r\n");
    worker.stop().await;
}
