//! Matrix end-to-end encryption against a real Synapse
//! (`deploy/dev/synapse.sh`) and the real FHIR server. The sender is a
//! second `matrix-sdk` client with its own device: it creates an encrypted
//! room (Megolm) and sends a text, an image and a file; the bot's source
//! (`chartbridge::source::e2ee`) decrypts them and the worker archives them
//! with the hashes of the plaintext; the source restarts with the same
//! device, also as its own process after SIGKILL, losing and duplicating
//! nothing; a fresh bot device restores the room keys from the server-side
//! key backup and archives older history; an event whose keys did not come
//! ends `undecryptable` after the wait and is archived once its keys reach
//! the backup.
//!
//! Built only with the `e2ee` feature (deploy/dev/test.sh). Needs
//! `CHARTBRIDGE_TEST_SYNAPSE_URL` (and the shared secret in
//! `CHARTBRIDGE_TEST_SYNAPSE_SECRET`).
#![cfg(feature = "e2ee")]

mod common;

use std::time::Duration;

use chartbridge::config::TrustPolicy;
use chartbridge::event::MessageKey;
use chartbridge::resolve::conversation_token;
use chartbridge::source::e2ee::E2eeSource;
use chartbridge::store::sealed;
use chartbridge::store::{DeletionState, Link, MessageState, millis};
use common::Harness;
use matrix_sdk::attachment::AttachmentConfig;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::encryption::EncryptionSettings;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedEventId, RoomId};
use matrix_sdk::{Client, Room};
use serde_json::{Value, json};
use sha2::Digest;

const PASSWORD: &str = "correct-horse-battery";

struct Synapse {
    url: String,
    secret: String,
    http: reqwest::Client,
}

struct User {
    name: String,
    id: String,
    token: String,
}

fn hmac_sha1(key: &[u8], msg: &[u8]) -> String {
    use sha1::Sha1;
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let inner = Sha1::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha1::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

fn synapse() -> Option<Synapse> {
    let Ok(url) = std::env::var("CHARTBRIDGE_TEST_SYNAPSE_URL") else {
        eprintln!(
            "\n\n!!! SKIPPED: CHARTBRIDGE_TEST_SYNAPSE_URL is not set; the Matrix end-to-end \
             encryption tests did not run. Start Synapse with deploy/dev/synapse.sh start or \
             run deploy/dev/test.sh !!!\n"
        );
        return None;
    };
    let secret = std::env::var("CHARTBRIDGE_TEST_SYNAPSE_SECRET").unwrap_or_else(|_| {
        let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
        let out = std::process::Command::new(common::repo().join("deploy/dev/synapse.sh"))
            .arg("secret")
            .env("SYNAPSE_PORT", port)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    });
    Some(Synapse {
        url: url.trim_end_matches('/').to_owned(),
        secret,
        http: reqwest::Client::new(),
    })
}

impl Synapse {
    /// Registers with the shared secret; the token is a new device.
    async fn register(&self, name: &str, admin: bool) -> User {
        let url = format!("{}/_synapse/admin/v1/register", self.url);
        let nonce: Value = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let nonce = nonce["nonce"].as_str().unwrap();
        let mac = hmac_sha1(
            self.secret.as_bytes(),
            format!(
                "{nonce}\0{name}\0{PASSWORD}\0{}",
                if admin { "admin" } else { "notadmin" }
            )
            .as_bytes(),
        );
        let r = self
            .http
            .post(&url)
            .json(
                &json!({"nonce": nonce, "username": name, "password": PASSWORD,
                          "admin": admin, "mac": mac}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "register: {}", r.status());
        let v: Value = r.json().await.unwrap();
        User {
            name: name.to_owned(),
            id: v["user_id"].as_str().unwrap().to_owned(),
            token: v["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// A password login: a new device (and token) of the same account.
    async fn login(&self, user: &User) -> User {
        let r = self
            .http
            .post(format!("{}/_matrix/client/v3/login", self.url))
            .json(&json!({"type": "m.login.password",
                          "identifier": {"type": "m.id.user", "user": user.name},
                          "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "login: {}", r.status());
        let v: Value = r.json().await.unwrap();
        User {
            name: user.name.clone(),
            id: user.id.clone(),
            token: v["access_token"].as_str().unwrap().to_owned(),
        }
    }

    async fn call(&self, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn download_status(&self, user: &User, mxc: &str) -> u16 {
        let path = mxc.strip_prefix("mxc://").unwrap();
        self.http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{path}",
                self.url
            ))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The sender as an E2EE device: a `matrix-sdk` client (in-memory
    /// stores) logged in with a password, with a cross-signing identity.
    async fn sender(&self, user: &User) -> Client {
        let client = Client::builder()
            .homeserver_url(&self.url)
            .with_encryption_settings(EncryptionSettings {
                auto_enable_cross_signing: true,
                ..Default::default()
            })
            .build()
            .await
            .unwrap();
        client
            .matrix_auth()
            .login_username(&user.name, PASSWORD)
            .send()
            .await
            .unwrap();
        client
            .encryption()
            .wait_for_e2ee_initialization_tasks()
            .await;
        client
            .encryption()
            .bootstrap_cross_signing_if_needed(None)
            .await
            .unwrap();
        assert!(
            client
                .encryption()
                .cross_signing_status()
                .await
                .unwrap()
                .is_complete()
        );
        client
            .sync_once(SyncSettings::default().timeout(Duration::ZERO))
            .await
            .unwrap();
        client
    }

    /// An encrypted (Megolm) private room of `owner` that `bot` joined with
    /// the power to redact; `owner`'s client knows the bot's membership.
    async fn encrypted_room(&self, owner: &User, sender: &Client, bot: &User) -> Room {
        let mut users = serde_json::Map::new();
        users.insert(bot.id.clone(), json!(50));
        let v = self
            .call(
                &owner.token,
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                json!({"preset": "private_chat", "invite": [bot.id],
                       "power_level_content_override": {"users": users},
                       "initial_state": [{"type": "m.room.encryption", "state_key": "",
                                          "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
            )
            .await;
        let room_id = v["room_id"].as_str().unwrap().to_owned();
        self.call(
            &bot.token,
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", common::urlencode(&room_id)),
            json!({}),
        )
        .await;
        sender
            .sync_once(SyncSettings::default().timeout(Duration::ZERO))
            .await
            .unwrap();
        let room = sender
            .get_room(&RoomId::parse(&room_id).unwrap())
            .expect("the sender knows its room");
        assert!(room.latest_encryption_state().await.unwrap().is_encrypted());
        room
    }
}

async fn send_text(sender: &Client, room: &Room, body: &str) -> String {
    sender
        .sync_once(SyncSettings::default().timeout(Duration::ZERO))
        .await
        .unwrap();
    room.send(RoomMessageEventContent::text_plain(body))
        .await
        .unwrap()
        .response
        .event_id
        .to_string()
}

/// Sends any `m.room.message` content (encrypted by the sender's client).
async fn send_raw(sender: &Client, room: &Room, content: Value) -> String {
    sender
        .sync_once(SyncSettings::default().timeout(Duration::ZERO))
        .await
        .unwrap();
    room.send_raw("m.room.message", content)
        .await
        .unwrap()
        .response
        .event_id
        .to_string()
}

/// Sends an encrypted attachment; answers its event id and the `mxc://`
/// URI of its ciphertext (read back from the sender's decrypted copy).
async fn send_file(room: &Room, name: &str, mime: &str, bytes: Vec<u8>) -> (String, String) {
    let mime: mime::Mime = mime.parse().unwrap();
    let event_id: OwnedEventId = room
        .send_attachment(name, &mime, bytes, AttachmentConfig::new())
        .await
        .unwrap()
        .event_id;
    let event = room.load_or_fetch_event(&event_id, None).await.unwrap();
    let v: Value = serde_json::from_str(event.raw().json().get()).unwrap();
    let mxc = v["content"]["file"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("an encrypted attachment: {v}"))
        .to_owned();
    assert!(v["content"].get("url").is_none(), "{v}");
    (event_id.to_string(), mxc)
}

fn matrix_key(event_id: &str) -> MessageKey {
    MessageKey {
        source: "matrix".into(),
        message_id: event_id.into(),
    }
}

/// A tiny valid PNG (1×1, one grey pixel) with `salt` in a text chunk.
fn png(salt: &str) -> Vec<u8> {
    png_with(Some(salt))
}

/// [`png`] as archived: its text chunk is metadata, removed before archive
/// (docs/media-minimisation.md).
fn png_archived() -> Vec<u8> {
    png_with(None)
}

fn png_with(salt: Option<&str>) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    };
    chunk(&mut out, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
    if let Some(salt) = salt {
        let mut text = b"Comment\0".to_vec();
        text.extend_from_slice(salt.as_bytes());
        chunk(&mut out, b"tEXt", &text);
    }
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x01, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A one-page PDF with `salt` in its text and no metadata: archived as sent.
fn pdf(salt: &str) -> Vec<u8> {
    common::photos::plain_pdf(salt)
}

fn e2ee_config(h: &Harness, bot: &User, dir: &str, extra: &str) -> String {
    format!(
        "[matrix]\nhomeserver_url = \"{}\"\naccess_token = \"{}\"\nsync_timeout = \"1s\"\n\
         [matrix.e2ee]\nstore_dir = \"{}\"\n{extra}\n",
        std::env::var("CHARTBRIDGE_TEST_SYNAPSE_URL")
            .unwrap()
            .trim_end_matches('/'),
        bot.token,
        h.dir.path().join(dir).display(),
    )
}

async fn connect(h: &Harness) -> E2eeSource {
    E2eeSource::connect(
        &h.config.matrix,
        h.store.clone(),
        h.broker.clone(),
        h.sealer.clone(),
    )
    .await
    .unwrap()
}

/// Steps `source` until `key` has the state `want` (or a minute passed).
async fn step_until(h: &Harness, source: &E2eeSource, key: &MessageKey, want: MessageState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        source.step(Duration::from_millis(200)).await.unwrap();
        if let Some(m) = h.store.message(key).await.unwrap()
            && m.state == want
        {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let detail = h
                .store
                .quarantine_detail(key)
                .await
                .unwrap()
                .and_then(|(_, _, d)| {
                    let named = h.store.message_ref(key).unwrap();
                    let place = sealed::quarantine_detail(&named);
                    d.map(|d| String::from_utf8(h.sealer.open(&place, &d).unwrap()).unwrap())
                });
            panic!(
                "{key} never became {want:?}: {:?} ({detail:?}), held: {:?}",
                h.store.message(key).await.unwrap(),
                h.store.undecrypted_counts().await.unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn link_room(h: &Harness, room: &Room, mrn: &str) {
    let (patient, encounter) = h.seed_patient(mrn).await;
    h.store
        .set_link(
            &conversation_token(&h.sealer, "matrix", room.room_id().as_str()),
            &Link {
                patient,
                encounter: Some(encounter),
            },
            millis(chrono::Utc::now()),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn e2ee_text_image_file_archived_as_plaintext_restart_keeps_the_device_and_trust_policy_holds()
 {
    let Some(synapse) = synapse() else { return };
    let mut h = Harness::new(None, None).await;
    let bot = synapse.register(&format!("ebot{}", h.run), true).await;
    let alice = synapse.register(&format!("ealice{}", h.run), false).await;
    h.add_config(&e2ee_config(
        &h,
        &bot,
        "matrix-sdk",
        "trust = \"tofu\"\n\
         [deletion]\nbackoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\n\
         [deletion.matrix]\nadapter = \"matrix\"",
    ));
    // The bot's device exists (keys uploaded) before the room is used.
    let source = connect(&h).await;
    source.step(Duration::ZERO).await.unwrap();
    let device = source.client().device_id().unwrap().to_owned();
    let identity = source.client().encryption().ed25519_key().await.unwrap();

    let sender = synapse.sender(&alice).await;
    let room = synapse.encrypted_room(&alice, &sender, &bot).await;
    link_room(&h, &room, "P-E2EE-1").await;

    let text_id = send_text(&sender, &room, "Verband gewechselt, Wunde reizlos").await;
    let image = png(&h.run);
    let (image_id, image_mxc) = send_file(&room, "wound.png", "image/png", image.clone()).await;
    let file = pdf(&h.run);
    let (file_id, file_mxc) = send_file(&room, "lab.pdf", "application/pdf", file.clone()).await;
    // What the homeserver holds is ciphertext: not the bytes that were sent.
    assert_eq!(synapse.download_status(&alice, &image_mxc).await, 200);

    let worker = h.start_worker();
    step_until(&h, &source, &matrix_key(&file_id), MessageState::Archived).await;
    let text = h
        .wait_state(&matrix_key(&text_id), MessageState::Archived)
        .await;
    let img = h
        .wait_state(&matrix_key(&image_id), MessageState::Archived)
        .await;
    let doc = h
        .wait_state(&matrix_key(&file_id), MessageState::Archived)
        .await;
    // Hashes of the plaintext the sender sent.
    assert_eq!(
        text.content_sha256.as_deref(),
        Some(hex::encode(sha2::Sha256::digest("Verband gewechselt, Wunde reizlos")).as_str())
    );
    assert_eq!(
        img.content_sha256.as_deref(),
        Some(hex::encode(sha2::Sha256::digest(png_archived())).as_str())
    );
    assert_eq!(
        doc.content_sha256.as_deref(),
        Some(hex::encode(sha2::Sha256::digest(&file)).as_str())
    );
    assert_eq!(
        h.kis_ids("Communication", &matrix_key(&text_id))
            .await
            .len(),
        1
    );
    for id in [&image_id, &file_id] {
        assert_eq!(
            h.kis_ids("DocumentReference", &matrix_key(id)).await.len(),
            1
        );
    }
    // Deletion after archiving: redacted, and the ciphertext media deleted.
    for id in [&text_id, &image_id, &file_id] {
        let key = matrix_key(id);
        common::wait_until(Duration::from_secs(60), "deletion confirmed", || async {
            h.store.deletion_state(&key).await.unwrap() == Some(DeletionState::Confirmed)
        })
        .await;
    }
    assert_eq!(synapse.download_status(&alice, &image_mxc).await, 404);
    assert_eq!(synapse.download_status(&alice, &file_mxc).await, 404);

    // An edit and a reply inside the encryption decode as in plain rooms:
    // the edit from m.new_content (never the "* " fallback), the reply
    // without its quoted fallback.
    let edit_id = send_raw(
        &sender,
        &room,
        json!({"msgtype": "m.text", "body": "* Verband gewechselt, Wunde gerötet",
               "m.new_content": {"msgtype": "m.text", "body": "Verband gewechselt, Wunde gerötet"},
               "m.relates_to": {"rel_type": "m.replace", "event_id": text_id}}),
    )
    .await;
    let reply_id = send_raw(
        &sender,
        &room,
        json!({"msgtype": "m.text",
               "body": format!("> <{}> Verband gewechselt, Wunde reizlos\n\nFoto bitte morgen", alice.id),
               "m.relates_to": {"m.in_reply_to": {"event_id": text_id}}}),
    )
    .await;
    step_until(&h, &source, &matrix_key(&reply_id), MessageState::Archived).await;
    for (id, body) in [
        (&edit_id, "Verband gewechselt, Wunde gerötet"),
        (&reply_id, "Foto bitte morgen"),
    ] {
        let m = h.wait_state(&matrix_key(id), MessageState::Archived).await;
        assert_eq!(
            m.content_sha256.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(body)).as_str()),
            "{body}"
        );
    }

    // Restart: the same device, the same identity key, still decrypting.
    drop(source);
    let source = connect(&h).await;
    assert_eq!(source.client().device_id().unwrap(), device);
    assert_eq!(
        source.client().encryption().ed25519_key().await.unwrap(),
        identity
    );
    let after_id = send_text(&sender, &room, "RR 120/80 nach Restart").await;
    step_until(&h, &source, &matrix_key(&after_id), MessageState::Archived).await;

    // The same deployment with "verified only": the sender's device is not
    // verified, so its message is held (quarantined), not archived, not
    // dropped, and the messenger copy is kept.
    drop(source);
    h.config.matrix.e2ee.as_mut().unwrap().trust = TrustPolicy::Verified;
    let source = connect(&h).await;
    let held_id = send_text(&sender, &room, "Puls 88").await;
    step_until(
        &h,
        &source,
        &matrix_key(&held_id),
        MessageState::Quarantined,
    )
    .await;
    let (reason, _, detail) = h
        .store
        .quarantine_detail(&matrix_key(&held_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reason, "untrusted_device");
    let held_key = matrix_key(&held_id);
    let named = h.store.message_ref(&held_key).unwrap();
    let place = sealed::quarantine_detail(&named);
    let detail = String::from_utf8(h.sealer.open(&place, &detail.unwrap()).unwrap()).unwrap();
    assert!(detail.contains("unverified_identity"), "{detail}");
    assert_eq!(
        h.store.deletion_state(&matrix_key(&held_id)).await.unwrap(),
        None
    );
    // The operator verifies the sender's identity (master key compared out
    // of band); a wrong key is refused, then the sender's messages pass.
    let master = sender
        .encryption()
        .get_user_identity(sender.user_id().unwrap())
        .await
        .unwrap()
        .unwrap()
        .master_key()
        .get_first_key()
        .unwrap()
        .to_base64();
    assert!(source.verify_user(&alice.id, "AAAA").await.is_err());
    source.verify_user(&alice.id, &master).await.unwrap();
    let verified_id = send_text(&sender, &room, "Puls 84, verifiziert").await;
    step_until(
        &h,
        &source,
        &matrix_key(&verified_id),
        MessageState::Archived,
    )
    .await;

    // In a room without encryption the E2EE source publishes what the
    // plain source does: a poll (a type this version does not archive) is
    // held for review, not filtered out by the sync filter.
    let plain = synapse
        .call(
            &alice.token,
            reqwest::Method::POST,
            "/_matrix/client/v3/createRoom",
            json!({"preset": "private_chat", "invite": [bot.id]}),
        )
        .await;
    let plain = plain["room_id"].as_str().unwrap().to_owned();
    synapse
        .call(
            &bot.token,
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", common::urlencode(&plain)),
            json!({}),
        )
        .await;
    let poll = synapse
        .call(
            &alice.token,
            reqwest::Method::PUT,
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.poll.start/poll-{}",
                common::urlencode(&plain),
                h.run
            ),
            json!({"m.text": [{"body": "Schmerz heute? 1-10"}],
                   "m.poll": {"kind": "m.disclosed", "max_selections": 1,
                              "question": {"m.text": [{"body": "Schmerz heute?"}]},
                              "answers": [{"m.id": "low", "m.text": [{"body": "1-3"}]}]}}),
        )
        .await;
    let poll = poll["event_id"].as_str().unwrap().to_owned();
    step_until(&h, &source, &matrix_key(&poll), MessageState::Quarantined).await;
    worker.stop().await;
}

#[tokio::test]
async fn e2ee_fresh_device_restores_history_from_backup_and_undecryptable_is_a_state() {
    let Some(synapse) = synapse() else { return };
    let mut old = Harness::new(None, None).await;
    let bot = synapse.register(&format!("bbot{}", old.run), false).await;
    let alice = synapse.register(&format!("balice{}", old.run), false).await;
    let recovery = old.dir.path().join("recovery.key");
    old.add_config(&e2ee_config(
        &old,
        &bot,
        "sdk-a",
        &format!(
            "trust = \"any\"\nrecovery_key_file = \"{}\"",
            recovery.display()
        ),
    ));
    // Device A creates the key backup and writes the recovery key.
    let a = connect(&old).await;
    assert!(recovery.exists(), "the recovery key was written");
    a.step(Duration::ZERO).await.unwrap();
    let sender = synapse.sender(&alice).await;
    let room = synapse.encrypted_room(&alice, &sender, &bot).await;
    let history_id = send_text(&sender, &room, "Anamnese: keine Allergien").await;
    a.step(Duration::ZERO).await.unwrap();
    a.client()
        .encryption()
        .backups()
        .wait_for_steady_state()
        .await
        .unwrap();
    // A new Megolm session (the backup already has the first one, from its
    // first index) while only device A exists: no other device gets its key.
    room.discard_room_key().await.unwrap();
    let withheld_id = send_text(&sender, &room, "Labor: CRP 12 mg/l").await;

    // A fresh bot device (a replaced server): new login, empty stores, the
    // recovery key; a new chartbridge store, so it reads the room from its
    // start.
    let mut h = Harness::new(None, None).await;
    let bot_b = synapse.login(&bot).await;
    h.add_config(&e2ee_config(
        &h,
        &bot_b,
        "sdk-b",
        &format!(
            "trust = \"any\"\nundecryptable_after = \"2s\"\nrecovery_key_file = \"{}\"",
            recovery.display()
        ),
    ));
    link_room(&h, &room, "P-E2EE-2").await;
    let b = connect(&h).await;
    assert_ne!(
        b.client().device_id().unwrap(),
        a.client().device_id().unwrap()
    );
    let worker = h.start_worker();
    // Older history, decrypted with the room key from the backup.
    step_until(&h, &b, &matrix_key(&history_id), MessageState::Archived).await;
    let m = h
        .store
        .message(&matrix_key(&history_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        m.content_sha256.as_deref(),
        Some(hex::encode(sha2::Sha256::digest("Anamnese: keine Allergien")).as_str())
    );
    // The withheld one: held in the source, then quarantined undecryptable.
    step_until(&h, &b, &matrix_key(&withheld_id), MessageState::Quarantined).await;
    let (reason, _, _) = h
        .store
        .quarantine_detail(&matrix_key(&withheld_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reason, "undecryptable");
    assert_eq!(
        h.store.undecrypted_counts().await.unwrap(),
        vec![("undecryptable".to_owned(), 1)]
    );
    assert_eq!(
        h.store
            .deletion_state(&matrix_key(&withheld_id))
            .await
            .unwrap(),
        None,
        "never deleted at the messenger"
    );
    // The keys arrive: device A runs again, receives the withheld room key
    // and backs it up; device B finds it there and the message is archived.
    a.step(Duration::ZERO).await.unwrap();
    a.client()
        .encryption()
        .backups()
        .wait_for_steady_state()
        .await
        .unwrap();
    step_until(&h, &b, &matrix_key(&withheld_id), MessageState::Archived).await;
    let m = h
        .store
        .message(&matrix_key(&withheld_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        m.content_sha256.as_deref(),
        Some(hex::encode(sha2::Sha256::digest("Labor: CRP 12 mg/l")).as_str())
    );
    assert!(h.store.undecrypted_counts().await.unwrap().is_empty());
    worker.stop().await;
}

/// `chartbridge matrix-source` as its own process, as operators run it.
struct SourceProcess(std::process::Child);

impl SourceProcess {
    fn start(h: &Harness, name: &str) -> Self {
        let log = std::fs::File::create(h.dir.path().join(format!("{name}.stderr.log"))).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chartbridge"));
        cmd.arg("--config")
            .arg(h.config_file())
            .arg("matrix-source")
            .current_dir(h.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        for (var, _) in std::env::vars() {
            if var.starts_with(chartbridge::config::ENV_PREFIX) {
                cmd.env_remove(var);
            }
        }
        Self(cmd.spawn().expect("start chartbridge matrix-source"))
    }

    /// SIGKILL (what `Child::kill` sends on Unix): no shutdown path runs.
    fn sigkill(mut self) {
        self.0.kill().unwrap();
        assert!(!self.0.wait().unwrap().success());
    }
}

impl Drop for SourceProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bot's devices with their Ed25519 identity keys, as the homeserver
/// publishes them (`POST /keys/query`).
async fn published_devices(synapse: &Synapse, asker: &User, bot: &User) -> Vec<(String, String)> {
    let v = synapse
        .call(
            &asker.token,
            reqwest::Method::POST,
            "/_matrix/client/v3/keys/query",
            json!({"device_keys": {bot.id.clone(): []}}),
        )
        .await;
    let mut out: Vec<(String, String)> = v["device_keys"][&bot.id]
        .as_object()
        .map(|devices| {
            devices
                .iter()
                .map(|(id, d)| {
                    (
                        id.clone(),
                        d["keys"][format!("ed25519:{id}")]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn e2ee_source_process_survives_sigkill_with_its_device_and_loses_nothing() {
    let Some(synapse) = synapse() else { return };
    let mut h = Harness::new(None, None).await;
    let bot = synapse.register(&format!("kbot{}", h.run), false).await;
    let alice = synapse.register(&format!("kalice{}", h.run), false).await;
    h.add_config(&e2ee_config(&h, &bot, "sdk-kill", "trust = \"any\""));
    let worker = h.start_worker();

    // The source process uploads its device keys; only then is the room made.
    let first = SourceProcess::start(&h, "source-1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let devices = loop {
        let devices = published_devices(&synapse, &alice, &bot).await;
        if devices.len() == 1 && !devices[0].1.is_empty() {
            break devices;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the source never published its device keys: {devices:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let sender = synapse.sender(&alice).await;
    let room = synapse.encrypted_room(&alice, &sender, &bot).await;
    link_room(&h, &room, "P-E2EE-K").await;
    let before = send_text(&sender, &room, "Temperatur 37,9").await;
    h.wait_state(&matrix_key(&before), MessageState::Archived)
        .await;

    // Killed right after an event was sent (it may be mid-sync, published
    // but not yet saved in the cursor), then another arrives while it is down.
    let during = send_text(&sender, &room, "Temperatur 38,4").await;
    first.sigkill();
    let after = send_text(&sender, &room, "Temperatur 38,9, Arzt informiert").await;

    let _second = SourceProcess::start(&h, "source-2");
    for (id, body) in [
        (&during, "Temperatur 38,4"),
        (&after, "Temperatur 38,9, Arzt informiert"),
    ] {
        let m = h.wait_state(&matrix_key(id), MessageState::Archived).await;
        assert_eq!(
            m.content_sha256.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(body)).as_str()),
            "{body}"
        );
    }
    // Exactly once in the KIS, whatever was published twice.
    for id in [&before, &during, &after] {
        assert_eq!(
            h.kis_ids("Communication", &matrix_key(id)).await.len(),
            1,
            "{id}"
        );
    }
    // The same single device with the same identity key: the crypto store
    // survived the kill, no new device was logged in.
    assert_eq!(published_devices(&synapse, &alice, &bot).await, devices);
    worker.stop().await;
}
