//! Matrix end to end against a real Synapse (`deploy/dev/synapse.sh`):
//! a room with a text and an image → the sync source publishes them → the
//! worker archives both in the real FHIR server → the Matrix deletion adapter
//! redacts both events and deletes the medium → the download answers 404.
//!
//! Needs `CHARTBRIDGE_TEST_SYNAPSE_URL` (deploy/dev/test.sh sets it, and the
//! shared secret in `CHARTBRIDGE_TEST_SYNAPSE_SECRET`).

mod common;

use std::time::Duration;

use chartbridge::event::MessageKey;
use chartbridge::resolve::conversation_token;
use chartbridge::source::matrix::MatrixSource;
use chartbridge::store::sealed;
use chartbridge::store::{DeletionState, Link, MessageState, millis};
use common::Harness;
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::watch;

struct Synapse {
    url: String,
    secret: String,
    http: reqwest::Client,
}

struct User {
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
             tests did not run. Start Synapse with deploy/dev/synapse.sh start or run \
             deploy/dev/test.sh !!!\n"
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
        let password = "correct-horse-battery";
        let mac = hmac_sha1(
            self.secret.as_bytes(),
            format!(
                "{nonce}\0{name}\0{password}\0{}",
                if admin { "admin" } else { "notadmin" }
            )
            .as_bytes(),
        );
        let r = self
            .http
            .post(&url)
            .json(
                &json!({"nonce": nonce, "username": name, "password": password,
                          "admin": admin, "mac": mac}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "register: {}", r.status());
        let v: Value = r.json().await.unwrap();
        User {
            id: v["user_id"].as_str().unwrap().to_owned(),
            token: v["access_token"].as_str().unwrap().to_owned(),
        }
    }

    async fn call(
        &self,
        user: &User,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&user.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A private room of `owner` that `bot` joined with the power to redact.
    async fn room(&self, owner: &User, bot: &User) -> String {
        let mut users = serde_json::Map::new();
        users.insert(bot.id.clone(), json!(50));
        let (s, v) = self
            .call(
                owner,
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(json!({"preset": "private_chat", "invite": [bot.id],
                    "power_level_content_override": {"users": users}})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let room = v["room_id"].as_str().unwrap().to_owned();
        let (s, v) = self
            .call(
                bot,
                reqwest::Method::POST,
                &format!("/_matrix/client/v3/join/{}", enc(&room)),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        room
    }

    async fn send(&self, user: &User, room: &str, content: Value) -> String {
        let txn = uuid::Uuid::new_v4().simple().to_string();
        let (s, v) = self
            .call(
                user,
                reqwest::Method::PUT,
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    enc(room)
                ),
                Some(content),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["event_id"].as_str().unwrap().to_owned()
    }

    /// `owner` invites `member` to `room`, and `member` joins.
    async fn invite_and_join(&self, owner: &User, member: &User, room: &str) {
        let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(room));
        let join = format!("/_matrix/client/v3/join/{}", enc(room));
        for (who, path, body) in [
            (owner, &invite, json!({"user_id": member.id})),
            (member, &join, json!({})),
        ] {
            let (s, v) = self
                .call(who, reqwest::Method::POST, path, Some(body))
                .await;
            assert_eq!(s, 200, "{v}");
        }
    }

    /// Sends an event of any type (`m.room.encrypted`, ...).
    async fn send_event(&self, user: &User, room: &str, kind: &str, content: Value) -> String {
        let txn = uuid::Uuid::new_v4().simple().to_string();
        let (s, v) = self
            .call(
                user,
                reqwest::Method::PUT,
                &format!("/_matrix/client/v3/rooms/{}/send/{kind}/{txn}", enc(room)),
                Some(content),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["event_id"].as_str().unwrap().to_owned()
    }

    /// `user` redacts `event`; answers the redaction's event id.
    async fn redact(&self, user: &User, room: &str, event: &str) -> String {
        let txn = uuid::Uuid::new_v4().simple().to_string();
        let (s, v) = self
            .call(
                user,
                reqwest::Method::PUT,
                &format!(
                    "/_matrix/client/v3/rooms/{}/redact/{}/{txn}",
                    enc(room),
                    enc(event)
                ),
                Some(json!({"reason": "sent to the wrong room"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["event_id"].as_str().unwrap().to_owned()
    }

    async fn upload(&self, user: &User, bytes: Vec<u8>, mime: &str) -> String {
        let r = self
            .http
            .post(format!(
                "{}/_matrix/media/v3/upload?filename=w.png",
                self.url
            ))
            .bearer_auth(&user.token)
            .header("content-type", mime)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "upload: {}", r.status());
        let v: Value = r.json().await.unwrap();
        v["content_uri"].as_str().unwrap().to_owned()
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
}

fn enc(s: &str) -> String {
    common::urlencode(s)
}

/// A tiny valid PNG (1×1, one grey pixel) with `salt` in a text chunk so
/// each run uploads new bytes.
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

/// A harness whose worker runs the Matrix deletion adapter as a bot (a
/// server admin, named `bot` + the run), with a user `user` + the run, and
/// `sync_timeout`.
async fn deleting_harness(
    synapse: &Synapse,
    bot: &str,
    user: &str,
    sync_timeout: &str,
) -> (Harness, User, User) {
    let mut h = Harness::new(None, None).await;
    let bot = synapse.register(&format!("{bot}{}", h.run), true).await;
    let user = synapse.register(&format!("{user}{}", h.run), false).await;
    h.add_config(&format!(
        "[matrix]\nhomeserver_url = \"{}\"\naccess_token = \"{}\"\nsync_timeout = \"{sync_timeout}\"\n\
         [deletion]\nbackoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\n\
         [deletion.matrix]\nadapter = \"matrix\"\n",
        synapse.url, bot.token
    ));
    (h, bot, user)
}

/// The Matrix source of `h` syncing in a task of its own until the
/// returned sender says stop; the task's handle to await after that.
async fn syncing_source(h: &Harness) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let source = MatrixSource::connect(&h.config.matrix, h.store.clone(), h.broker.clone())
        .await
        .unwrap();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(async move {
        let _ = source.run(shutdown.into()).await;
    });
    (stop, task)
}

/// Links the room `room` to `patient` and `encounter`.
async fn link_room(h: &Harness, room: &str, patient: &str, encounter: &str) {
    h.store
        .set_link(
            &conversation_token(&h.sealer, "matrix", room),
            &Link {
                patient: patient.to_owned(),
                encounter: Some(encounter.to_owned()),
            },
            millis(chrono::Utc::now()),
        )
        .await
        .unwrap();
}

fn matrix_key(event_id: &str) -> MessageKey {
    MessageKey {
        source: "matrix".into(),
        message_id: event_id.into(),
    }
}

#[tokio::test]
async fn i7_iv8_matrix_room_archived_then_redacted_and_media_deleted() {
    let Some(synapse) = synapse() else { return };
    let (h, bot, alice) = deleting_harness(&synapse, "bot", "alice", "2s").await;
    let room = synapse.room(&alice, &bot).await;
    let (patient, encounter) = h.seed_patient("P-1001").await;
    link_room(&h, &room, &patient, &encounter).await;

    let text_id = synapse
        .send(
            &alice,
            &room,
            json!({"msgtype": "m.text", "body": "Wundkontrolle: reizlos"}),
        )
        .await;
    let image = png(&h.run);
    let mxc = synapse.upload(&alice, image.clone(), "image/png").await;
    // The client's own thumbnail of the image, uploaded beside it.
    let thumbnail = synapse
        .upload(&alice, png(&format!("thumb{}", h.run)), "image/png")
        .await;
    let image_id = synapse
        .send(
            &alice,
            &room,
            json!({"msgtype": "m.image", "body": "wound.png", "url": mxc,
                   "info": {"mimetype": "image/png", "size": image.len(),
                            "thumbnail_url": thumbnail,
                            "thumbnail_info": {"mimetype": "image/png"}}}),
        )
        .await;
    assert_eq!(synapse.download_status(&alice, &mxc).await, 200);
    assert_eq!(synapse.download_status(&alice, &thumbnail).await, 200);

    let worker = h.start_worker();
    let source = MatrixSource::connect(&h.config.matrix, h.store.clone(), h.broker.clone())
        .await
        .unwrap();
    assert_eq!(source.user_id(), bot.id);
    let (stop_source, source_shutdown) = watch::channel(false);
    let source = std::sync::Arc::new(source);
    let loop_source = source.clone();
    let source_task = tokio::spawn(async move { loop_source.run(source_shutdown.into()).await });

    let text = h
        .wait_state(&matrix_key(&text_id), MessageState::Archived)
        .await;
    let img = h
        .wait_state(&matrix_key(&image_id), MessageState::Archived)
        .await;
    // The KIS holds both; the image's hash is that of the downloaded bytes
    // without their metadata (the text chunk).
    assert_eq!(
        h.kis_ids("Communication", &matrix_key(&text_id))
            .await
            .len(),
        1
    );
    assert_eq!(
        h.kis_ids("DocumentReference", &matrix_key(&image_id))
            .await
            .len(),
        1
    );
    assert_eq!(
        img.content_sha256.as_deref(),
        Some(hex::encode(sha2::Sha256::digest(png_archived())).as_str())
    );
    assert!(text.content_sha256.is_some());

    for id in [&text_id, &image_id] {
        let key = matrix_key(id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let state = h.store.deletion_state(&key).await.unwrap();
            if state == Some(DeletionState::Confirmed) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let id = chartbridge::map::stable_id(&key, "deletion").to_string();
                let receipts = h.store.deletion_receipts(&id).await.unwrap();
                panic!("deletion not confirmed: {state:?}, receipts {receipts:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Redacted: the content is gone for the room's members too.
    for id in [&text_id, &image_id] {
        let (s, v) = synapse
            .call(
                &alice,
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id)),
                None,
            )
            .await;
        assert_eq!(s, 200);
        assert!(v["unsigned"]["redacted_because"].is_object(), "{v}");
        assert_eq!(v["content"], json!({}), "redacted content");
    }
    assert_eq!(synapse.download_status(&alice, &mxc).await, 404);
    assert_eq!(synapse.download_status(&bot, &mxc).await, 404);
    assert_eq!(
        synapse.download_status(&alice, &thumbnail).await,
        404,
        "the thumbnail goes with the medium"
    );

    // Receipts were recorded.
    let deletion_id = chartbridge::map::stable_id(&matrix_key(&image_id), "deletion").to_string();
    let receipts = h.store.deletion_receipts(&deletion_id).await.unwrap();
    assert_eq!(receipts.last().unwrap().1, "deleted", "{receipts:?}");

    // Its own redactions are not read back as events: one more sync
    // publishes nothing, and no message reached a new state.
    stop_source.send(true).unwrap();
    source_task.await.unwrap().unwrap();
    let step = source.step(Duration::ZERO).await.unwrap();
    assert_eq!(step.published, 0, "{step:?}");
    worker.stop().await;
    let counts = h.store.state_counts().await.unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<i64>(), 2, "{counts:?}");
}

/// A medium two events share (a forward re-sends the same `mxc://` URI):
/// the linked room's copy is archived and redacted, but the medium stays
/// while the unlinked room's copy is held; once a person links that room,
/// the held copy is archived with the medium's bytes and its own deletion
/// takes the medium.
#[tokio::test]
async fn iv8_a_medium_a_held_event_shares_is_kept_until_that_event_has_a_deletion() {
    let Some(synapse) = synapse() else { return };
    let (h, bot, alice) = deleting_harness(&synapse, "bot", "alice", "2s").await;
    let linked = synapse.room(&alice, &bot).await;
    let unlinked = synapse.room(&alice, &bot).await;
    let (patient, encounter) = h.seed_patient("P-1001").await;
    link_room(&h, &linked, &patient, &encounter).await;
    let image = png(&format!("shared{}", h.run));
    let mxc = synapse.upload(&alice, image.clone(), "image/png").await;
    let content = json!({"msgtype": "m.image", "body": "wound.png", "url": mxc,
                         "info": {"mimetype": "image/png", "size": image.len()}});
    let held_id = synapse.send(&alice, &unlinked, content.clone()).await;

    let worker = h.start_worker();
    let source = MatrixSource::connect(&h.config.matrix, h.store.clone(), h.broker.clone())
        .await
        .unwrap();
    let (stop_source, source_shutdown) = watch::channel(false);
    let source_task = tokio::spawn(async move { source.run(source_shutdown.into()).await });

    let held = h
        .wait_state(&matrix_key(&held_id), MessageState::Quarantined)
        .await;
    assert_eq!(held.reason, "unresolved_conversation");
    // The same medium forwarded into the linked room, once the first copy
    // is held (a copy chartbridge has not seen yet cannot keep it).
    let archived_id = synapse.send(&alice, &linked, content).await;
    h.wait_state(&matrix_key(&archived_id), MessageState::Archived)
        .await;
    wait_confirmed(&h, &matrix_key(&archived_id)).await;
    assert_eq!(
        synapse.download_status(&alice, &mxc).await,
        200,
        "the medium of a held event is kept"
    );

    // A copy held at decoding (a defect: `info.size` not a number) keeps
    // its medium as well.
    let other = png(&format!("defective{}", h.run));
    let mxc2 = synapse.upload(&alice, other.clone(), "image/png").await;
    let defective_id = synapse
        .send(
            &alice,
            &linked,
            json!({"msgtype": "m.image", "body": "w2.png", "url": mxc2,
                   "info": {"mimetype": "image/png", "size": "12 KB"}}),
        )
        .await;
    let defective = h
        .wait_state(&matrix_key(&defective_id), MessageState::Quarantined)
        .await;
    assert_eq!(defective.reason, "invalid_entry");
    let good_id = synapse
        .send(
            &alice,
            &linked,
            json!({"msgtype": "m.image", "body": "w2.png", "url": mxc2,
                   "info": {"mimetype": "image/png", "size": other.len()}}),
        )
        .await;
    h.wait_state(&matrix_key(&good_id), MessageState::Archived)
        .await;
    wait_confirmed(&h, &matrix_key(&good_id)).await;
    assert_eq!(
        synapse.download_status(&alice, &mxc2).await,
        200,
        "the medium of an event held at decoding is kept"
    );

    // A person links the room: the held copy is archived, then its
    // deletion takes the medium.
    let listing = h.cli(&["conversation", "list"]);
    assert!(listing.status.success(), "{listing:?}");
    let listing = String::from_utf8(listing.stdout).unwrap();
    let rows: Vec<&str> = listing.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{listing}");
    let id = rows[0].split_whitespace().next().unwrap();
    let out = h.cli(&[
        "conversation",
        "link",
        id,
        "--patient",
        &patient,
        "--encounter",
        &encounter,
    ]);
    assert!(out.status.success(), "{out:?}");
    let released = h
        .wait_state(&matrix_key(&held_id), MessageState::Archived)
        .await;
    assert_eq!(
        released.content_sha256,
        h.state(&matrix_key(&archived_id))
            .await
            .unwrap()
            .content_sha256
    );
    wait_confirmed(&h, &matrix_key(&held_id)).await;
    assert_eq!(synapse.download_status(&alice, &mxc).await, 404);

    stop_source.send(true).unwrap();
    source_task.await.unwrap().unwrap();
    worker.stop().await;
}

/// Drains the events queue and returns the event ids, in order.
async fn published_ids(h: &Harness) -> Vec<String> {
    h.drain_queue(&h.config.broker.events_queue)
        .await
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.delivery.data).unwrap();
            v["event_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// A room the bot joins after its first sync: the history written before
/// the join (visible to members, `shared`) is read back to the room's
/// start, not only back to the saved cursor. A room the bot is removed
/// from: what was written before the removal is still read.
#[tokio::test]
async fn i7_matrix_sync_reads_the_history_of_a_room_joined_later() {
    let Some(synapse) = synapse() else { return };
    let mut h = Harness::new(None, None).await;
    let bot = synapse.register(&format!("lbot{}", h.run), false).await;
    let alice = synapse.register(&format!("lalice{}", h.run), false).await;
    h.add_config(&format!(
        "[matrix]\nhomeserver_url = \"{}\"\naccess_token = \"{}\"\n",
        synapse.url, bot.token
    ));
    let mut source = MatrixSource::connect(&h.config.matrix, h.store.clone(), h.broker.clone())
        .await
        .unwrap();
    source.timeline_limit = 2;
    // The cursor exists before the room does.
    source.step(Duration::ZERO).await.unwrap();
    assert!(published_ids(&h).await.is_empty());
    let (status, v) = synapse
        .call(
            &alice,
            reqwest::Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(json!({"preset": "private_chat", "invite": [bot.id]})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let room = v["room_id"].as_str().unwrap().to_owned();
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(
            synapse
                .send(
                    &alice,
                    &room,
                    json!({"msgtype": "m.text", "body": format!("before join {i}")}),
                )
                .await,
        );
    }
    // A sync while only invited: nothing of the room is readable yet.
    source.step(Duration::ZERO).await.unwrap();
    let (status, v) = synapse
        .call(
            &bot,
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let step = source.step(Duration::ZERO).await.unwrap();
    assert!(step.backfilled >= 4, "{step:?}");
    assert_eq!(published_ids(&h).await, sent);
    // Written, then the bot is removed before its next sync: the left
    // room's timeline up to the kick is still read.
    let last = synapse
        .send(
            &alice,
            &room,
            json!({"msgtype": "m.text", "body": "before the kick"}),
        )
        .await;
    let (status, v) = synapse
        .call(
            &alice,
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            Some(json!({"user_id": bot.id})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    source.step(Duration::ZERO).await.unwrap();
    assert_eq!(published_ids(&h).await, [last]);
}

#[tokio::test]
async fn i7_matrix_sync_backfills_limited_timelines_and_saves_the_cursor_after_confirms() {
    let Some(synapse) = synapse() else { return };
    let mut h = Harness::new(None, None).await;
    let bot = synapse.register(&format!("bot{}", h.run), false).await;
    let alice = synapse.register(&format!("alice{}", h.run), false).await;
    h.add_config(&format!(
        "[matrix]\nhomeserver_url = \"{}\"\naccess_token = \"{}\"\n",
        synapse.url, bot.token
    ));
    let room = synapse.room(&alice, &bot).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            synapse
                .send(
                    &alice,
                    &room,
                    json!({"msgtype": "m.text", "body": format!("m{i}")}),
                )
                .await,
        );
    }
    let mut source = MatrixSource::connect(&h.config.matrix, h.store.clone(), h.broker.clone())
        .await
        .unwrap();
    source.timeline_limit = 2;
    // First sync: the limited timeline is back-filled to the room's start.
    let step = source.step(Duration::ZERO).await.unwrap();
    assert!(step.backfilled >= 3, "{step:?}");
    assert_eq!(published_ids(&h).await, sent);
    let cursor = h.store.source_cursor("matrix", &bot.id).await.unwrap();
    assert!(cursor.is_some());

    // Four more while the source is away: limited again, back-filled only to
    // the saved cursor, so exactly the four new ones, in order.
    let mut more = Vec::new();
    for i in 5..9 {
        more.push(
            synapse
                .send(
                    &alice,
                    &room,
                    json!({"msgtype": "m.text", "body": format!("m{i}")}),
                )
                .await,
        );
    }
    // The broker refuses the publishes (the events queue is gone): the step
    // fails and the cursor stays where it was.
    let ch = h.broker.consumer_channel(1).await.unwrap();
    ch.queue_delete(
        h.config.broker.events_queue.as_str().into(),
        QueueDeleteOptions::default(),
    )
    .await
    .unwrap();
    assert!(source.step(Duration::ZERO).await.is_err());
    assert_eq!(
        h.store.source_cursor("matrix", &bot.id).await.unwrap(),
        cursor
    );
    // The queue is back (every broker connection declares the topology): the
    // same events are published again, then the cursor moves.
    let broker = chartbridge::consume::Broker::connect(&h.config.broker)
        .await
        .unwrap();
    let mut source = MatrixSource::connect(&h.config.matrix, h.store.clone(), broker.clone())
        .await
        .unwrap();
    source.timeline_limit = 2;
    let step = source.step(Duration::ZERO).await.unwrap();
    assert_eq!(step.published, 4, "{step:?}");
    assert_eq!(published_ids(&h).await, more);
    assert_ne!(
        h.store.source_cursor("matrix", &bot.id).await.unwrap(),
        cursor
    );
    // Nothing new: nothing published.
    assert_eq!(source.step(Duration::ZERO).await.unwrap().published, 0);
    assert!(
        ch.basic_get(
            h.config.broker.events_queue.as_str().into(),
            BasicGetOptions::default()
        )
        .await
        .unwrap()
        .is_none()
    );
    broker.close().await;
}

/// CS API `GET /rooms/{roomId}/messages`: an empty `chunk` with an `end`
/// is not the start of the history. Synapse answers such a page when every
/// event of its window is hidden from the caller; here the bot ignores a
/// member (`m.ignored_user_list`) who wrote six messages between the older
/// ones and the timeline. The back-fill pages on past the empty pages and
/// publishes the older messages.
#[tokio::test]
async fn i7_matrix_backfill_pages_on_past_an_empty_page() {
    let Some(synapse) = synapse() else { return };
    let mut h = Harness::new(None, None).await;
    let bot = synapse.register(&format!("ebot{}", h.run), false).await;
    let alice = synapse.register(&format!("ealice{}", h.run), false).await;
    let mallory = synapse.register(&format!("emallory{}", h.run), false).await;
    h.add_config(&format!(
        "[matrix]\nhomeserver_url = \"{}\"\naccess_token = \"{}\"\n",
        synapse.url, bot.token
    ));
    let room = synapse.room(&alice, &bot).await;
    synapse.invite_and_join(&alice, &mallory, &room).await;
    let path = |tail: &str| format!("/_matrix/client/v3/{tail}");
    let mut ignored = serde_json::Map::new();
    ignored.insert(mallory.id.clone(), json!({}));
    let (s, v) = synapse
        .call(
            &bot,
            reqwest::Method::PUT,
            &path(&format!(
                "user/{}/account_data/m.ignored_user_list",
                enc(&bot.id)
            )),
            Some(json!({ "ignored_users": ignored })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let text = |body: String| json!({"msgtype": "m.text", "body": body});
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(
            synapse
                .send(&alice, &room, text(format!("older {i}")))
                .await,
        );
    }
    for i in 0..6 {
        synapse
            .send(&mallory, &room, text(format!("hidden {i}")))
            .await;
    }
    for i in 0..2 {
        sent.push(
            synapse
                .send(&alice, &room, text(format!("recent {i}")))
                .await,
        );
    }
    // The case is real: the bot's pages of three events meet an empty page
    // that still has an `end`.
    let mut from: Option<String> = None;
    let mut empty_with_end = false;
    for _ in 0..10 {
        let mut url = format!("rooms/{}/messages?dir=b&limit=3", enc(&room));
        if let Some(f) = &from {
            url.push_str(&format!("&from={}", enc(f)));
        }
        let (s, v) = synapse
            .call(&bot, reqwest::Method::GET, &path(&url), None)
            .await;
        assert_eq!(s, 200, "{v}");
        let end = v["end"].as_str().map(str::to_owned);
        if v["chunk"].as_array().is_some_and(Vec::is_empty) && end.is_some() {
            empty_with_end = true;
            break;
        }
        match end {
            Some(end) => from = Some(end),
            None => break,
        }
    }
    assert!(empty_with_end, "Synapse answered no empty page with an end");

    let mut source = MatrixSource::connect(&h.config.matrix, h.store.clone(), h.broker.clone())
        .await
        .unwrap();
    source.timeline_limit = 2;
    source.page_limit = 3;
    let step = source.step(Duration::ZERO).await.unwrap();
    assert!(step.backfilled >= 3, "{step:?}");
    assert_eq!(published_ids(&h).await, sent);
}

/// A deletion command published while no other copy of its medium was
/// known, executed after a copy that uses the same medium was held: the
/// adapter asks `media_uses` again before it deletes the medium, so the
/// event is redacted and the medium kept for the held copy.
#[tokio::test]
async fn iv8_the_adapter_keeps_a_medium_a_copy_held_since_the_command_uses() {
    use chartbridge::delete::adapter::{Executed, Executor};
    use chartbridge::delete::matrix::MatrixDeleter;
    let Some(synapse) = synapse() else { return };
    let mut h = Harness::new(None, None).await;
    let bot = synapse.register(&format!("kbot{}", h.run), true).await;
    let alice = synapse.register(&format!("kalice{}", h.run), false).await;
    // No adapter in the worker: the commands wait in their queue.
    h.add_config(&format!(
        "[matrix]\nhomeserver_url = \"{}\"\naccess_token = \"{}\"\nsync_timeout = \"1s\"\n",
        synapse.url, bot.token
    ));
    let linked = synapse.room(&alice, &bot).await;
    let unlinked = synapse.room(&alice, &bot).await;
    let (patient, encounter) = h.seed_patient("P-1001").await;
    link_room(&h, &linked, &patient, &encounter).await;
    let image = png(&format!("late{}", h.run));
    let mxc = synapse.upload(&alice, image.clone(), "image/png").await;
    let content = json!({"msgtype": "m.image", "body": "wound.png", "url": mxc,
                         "info": {"mimetype": "image/png", "size": image.len()}});
    let worker = h.start_worker();
    let (stop_source, source_task) = syncing_source(&h).await;

    let archived_id = synapse.send(&alice, &linked, content.clone()).await;
    h.wait_state(&matrix_key(&archived_id), MessageState::Archived)
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let command = loop {
        if let Some(c) = h.deletion_commands().await.pop() {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no deletion command"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(command.media_reference.as_deref(), Some(mxc.as_str()));
    // The same medium, forwarded into a room linked to no patient: held.
    let held_id = synapse.send(&alice, &unlinked, content).await;
    let held = h
        .wait_state(&matrix_key(&held_id), MessageState::Quarantined)
        .await;
    assert_eq!(held.reason, "unresolved_conversation");

    let adapter = MatrixDeleter::new(&h.config.matrix)
        .unwrap()
        .unwrap()
        .with_media_uses(h.store.clone());
    assert_eq!(adapter.execute(&command).await.unwrap(), Executed::Deleted);
    assert_eq!(
        synapse.download_status(&alice, &mxc).await,
        200,
        "the medium of the copy held since the command was published is kept"
    );

    let _ = stop_source.send(true);
    let _ = source_task.await;
    worker.stop().await;
}

#[tokio::test]
async fn iv8_matrix_purge_history_removes_only_older_events_without_content() {
    use chartbridge::delete::adapter::{Executed, Executor};
    use chartbridge::delete::matrix::MatrixDeleter;
    use chartbridge::delete::{COMMAND_SCHEMA, DeletionCommand, DeletionReason};
    let Some(synapse) = synapse() else { return };
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let bot = synapse.register(&format!("bot{run}"), true).await;
    let alice = synapse.register(&format!("alice{run}"), false).await;
    let room = synapse.room(&alice, &bot).await;
    let older = synapse
        .send(&alice, &room, json!({"msgtype": "m.text", "body": "older"}))
        .await;
    let deleted = synapse
        .send(
            &alice,
            &room,
            json!({"msgtype": "m.text", "body": "archived"}),
        )
        .await;
    let config = chartbridge::config::MatrixConfig {
        homeserver_url: Some(synapse.url.clone()),
        access_token: Some(chartbridge::config::Secret::new(bot.token.clone())),
        purge_history: true,
        ..Default::default()
    };
    let deleter = MatrixDeleter::new(&config).unwrap().unwrap();
    let command = DeletionCommand {
        schema: COMMAND_SCHEMA.into(),
        deletion_id: format!("d-{run}"),
        source: "matrix".into(),
        message_id: deleted.clone(),
        conversation: room.clone(),
        media_reference: None,
        reason: DeletionReason::Archived,
        archive: None,
    };
    let event = |id: &str| {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id));
        let (synapse, alice) = (&synapse, &alice);
        async move { synapse.call(alice, reqwest::Method::GET, &path, None).await }
    };
    assert_eq!(event(&older).await.0, 200);
    assert_eq!(deleter.execute(&command).await.unwrap(), Executed::Deleted);
    let (_, v) = event(&deleted).await;
    assert!(v.get("content").is_none_or(|c| c == &json!({})), "{v}");
    // The older event still carries content nothing archived: the purge
    // would delete it, so it is skipped and the event stays whole.
    let (status, v) = event(&older).await;
    assert_eq!(
        (status, &v["content"]["body"]),
        (200, &json!("older")),
        "{v}"
    );
    // Once the older event is deleted by its own command (archived too),
    // the purge runs: executed again (a redelivered command), it removes
    // the older event from the database.
    let older_command = DeletionCommand {
        deletion_id: format!("d-older-{run}"),
        message_id: older.clone(),
        ..command.clone()
    };
    assert_eq!(
        deleter.execute(&older_command).await.unwrap(),
        Executed::Deleted
    );
    assert!(deleter.execute(&command).await.is_ok());
    assert_eq!(event(&older).await.0, 404, "purged");
}

/// The primary resource of an archived message, read from the KIS.
async fn kis_resource(h: &Harness, resource: &str) -> Value {
    h.kis.read(resource).await.unwrap()
}

async fn wait_confirmed(h: &Harness, key: &MessageKey) {
    common::wait_until(Duration::from_secs(60), "deletion confirmed", || async {
        h.store.deletion_state(key).await.unwrap() == Some(DeletionState::Confirmed)
    })
    .await;
}

/// An edit is valid only from the original's sender (Matrix client-server
/// API, "Validity of replacement events"), and it may only revise a record
/// of the patient it is filed to: an edit by another room member, and one
/// filed to another patient (the room was linked to another patient since
/// the original was archived) are held `invalid_replacement`, never filed
/// as corrections; the sender's own edit is. (Synapse refuses a relation
/// to an event of another room at send time.)
#[tokio::test]
async fn edits_by_another_sender_or_for_another_patient_are_held() {
    let Some(synapse) = synapse() else { return };
    let (h, bot, nurse) = deleting_harness(&synapse, "rbot", "nurse", "1s").await;
    let doctor = synapse.register(&format!("doctor{}", h.run), false).await;
    let room = synapse.room(&nurse, &bot).await;
    synapse.invite_and_join(&nurse, &doctor, &room).await;
    let (patient, encounter) = h.seed_patient("P-1001").await;
    let (other_patient, other_encounter) = h.seed_patient(&format!("P-1{}", &h.run[..6])).await;
    assert_ne!(patient, other_patient);
    link_room(&h, &room, &patient, &encounter).await;
    let worker = h.start_worker();
    let (stop_source, source_task) = syncing_source(&h).await;

    let original = synapse
        .send(
            &nurse,
            &room,
            json!({"msgtype": "m.text", "body": "Drain: 20 ml"}),
        )
        .await;
    h.wait_state(&matrix_key(&original), MessageState::Archived)
        .await;
    let edit = |body: &str| {
        json!({"msgtype": "m.text", "body": format!("* {body}"),
               "m.new_content": {"msgtype": "m.text", "body": body},
               "m.relates_to": {"rel_type": "m.replace", "event_id": original}})
    };
    // Another member's edit: held.
    let foreign = synapse.send(&doctor, &room, edit("Drain: 2000 ml")).await;
    // The sender's own edit: a correction of the original's record.
    let own = synapse.send(&nurse, &room, edit("Drain: 200 ml")).await;
    let archived = h
        .wait_state(&matrix_key(&own), MessageState::Archived)
        .await;
    assert!(archived.resource.is_some());
    let prov_id = chartbridge::map::stable_id(&matrix_key(&own), "Provenance");
    let prov = kis_resource(&h, &format!("Provenance/{prov_id}")).await;
    assert!(
        prov["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["role"] == "revision" && e["what"]["reference"].is_string()),
        "{prov}"
    );
    // Judged against the first patient: held for its sender alone.
    let state = h
        .wait_state(&matrix_key(&foreign), MessageState::Quarantined)
        .await;
    assert_eq!(state.reason, "invalid_replacement");
    // An edit of the edit (the spec's original must not itself be a
    // replacement; clients edit the original): held. Published as the
    // source would publish it.
    let of_edit = format!("$of-edit-{}", h.run);
    h.publish(
        &serde_json::to_vec(&json!({
            "type": "m.room.message", "room_id": room, "event_id": of_edit,
            "sender": nurse.id,
            "origin_server_ts": chartbridge::store::millis(chrono::Utc::now()),
            "content": {"msgtype": "m.text", "body": "* Drain: 210 ml",
                        "m.new_content": {"msgtype": "m.text", "body": "Drain: 210 ml"},
                        "m.relates_to": {"rel_type": "m.replace", "event_id": own}}}))
        .unwrap(),
    )
    .await;
    let state = h
        .wait_state(&matrix_key(&of_edit), MessageState::Quarantined)
        .await;
    assert_eq!(state.reason, "invalid_replacement");
    // The room now names another patient: an edit of the first patient's
    // record filed there is held.
    link_room(&h, &room, &other_patient, &other_encounter).await;
    let elsewhere = synapse.send(&nurse, &room, edit("Drain: 250 ml")).await;
    for held in [&foreign, &elsewhere] {
        let state = h
            .wait_state(&matrix_key(held), MessageState::Quarantined)
            .await;
        assert_eq!(state.reason, "invalid_replacement");
        assert!(state.resource.is_none());
        // Held content is never deleted at the messenger.
        assert_eq!(
            h.store.deletion_state(&matrix_key(held)).await.unwrap(),
            None
        );
    }

    let _ = stop_source.send(true);
    let _ = source_task.await;
    worker.stop().await;
}

/// A redaction by a room moderator (CS API, "Redactions": any member with
/// the `redact` power level may redact another's event) is not recorded as
/// the sender's retraction: the record is tagged `removed-at-source` and
/// the Provenance names the moderator as `performer`, not `author`.
#[tokio::test]
async fn a_moderators_redaction_is_not_recorded_as_the_senders_retraction() {
    let Some(synapse) = synapse() else { return };
    let (h, bot, nurse) = deleting_harness(&synapse, "mbot", "nurse", "1s").await;
    let doctor = synapse.register(&format!("mdoctor{}", h.run), false).await;
    // The nurse owns the room (power level 100): a moderator of it.
    let room = synapse.room(&nurse, &bot).await;
    synapse.invite_and_join(&nurse, &doctor, &room).await;
    let (patient, encounter) = h.seed_patient("P-1001").await;
    link_room(&h, &room, &patient, &encounter).await;
    let worker = h.start_worker();
    let (stop_source, source_task) = syncing_source(&h).await;

    let removed = synapse
        .send(
            &doctor,
            &room,
            json!({"msgtype": "m.text", "body": "Befund folgt"}),
        )
        .await;
    let archived = h
        .wait_state(&matrix_key(&removed), MessageState::Archived)
        .await;
    let resource = archived.resource.unwrap();
    let redaction = matrix_key(&synapse.redact(&nurse, &room, &removed).await);
    let mark = h.wait_redaction_mark(&redaction).await;
    assert_eq!(mark.state, "marked");
    let record = kis_resource(&h, &resource).await;
    let codes: Vec<&str> = record["meta"]["tag"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["system"] == chartbridge::map::provenance::SOURCE_EVENT_SYSTEM)
        .filter_map(|t| t["code"].as_str())
        .collect();
    assert_eq!(codes, ["removed-at-source"], "{record}");
    assert_eq!(record["payload"][0]["contentString"], "Befund folgt");
    let prov = kis_resource(&h, mark.provenance.as_deref().unwrap()).await;
    let agent = &prov["agent"][0];
    assert_eq!(agent["type"]["coding"][0]["code"], "performer", "{prov}");
    assert_eq!(agent["who"]["identifier"]["value"], nurse.id.as_str());
    assert_ne!(
        prov["activity"]["text"],
        "Retracted by its sender at the messenger"
    );

    let _ = stop_source.send(true);
    let _ = source_task.await;
    worker.stop().await;
}

/// Matrix client-server v1.10+ fidelity end to end (Synapse → sync source →
/// worker → FHIR server): an edit after its original, a captioned image, a
/// reply with a legacy fallback, a foreign redaction of an archived message,
/// an encrypted attachment and an `m.room.encrypted` event, a float
/// timestamp; and the deletion adapter's own redactions mark nothing.
#[tokio::test]
async fn matrix_fidelity_edits_captions_replies_redactions_encryption() {
    let Some(synapse) = synapse() else { return };
    let (h, bot, nurse) = deleting_harness(&synapse, "fbot", "nurse", "1s").await;
    let room = synapse.room(&nurse, &bot).await;
    let (patient, encounter) = h.seed_patient("P-1001").await;
    link_room(&h, &room, &patient, &encounter).await;
    let worker = h.start_worker();
    let source = MatrixSource::connect(&h.config.matrix, h.store.clone(), h.broker.clone())
        .await
        .unwrap();
    let (stop_source, source_shutdown) = watch::channel(false);
    let source = std::sync::Arc::new(source);
    let loop_source = source.clone();
    let source_task = tokio::spawn(async move { loop_source.run(source_shutdown.into()).await });
    let system = h.config.kis.identifier_system.clone();

    // 1. An edit after its original: two Communications, the edit's text is
    //    m.new_content and its Provenance names the original as revised.
    let original = synapse
        .send(
            &nurse,
            &room,
            json!({"msgtype": "m.text", "body": "Drain: 20 ml serös"}),
        )
        .await;
    let orig = h
        .wait_state(&matrix_key(&original), MessageState::Archived)
        .await;
    let orig_resource = orig.resource.clone().unwrap();
    let edit = synapse
        .send(
            &nurse,
            &room,
            json!({"msgtype": "m.text", "body": "* Drain: 200 ml serös",
                   "m.new_content": {"msgtype": "m.text", "body": "Drain: 200 ml serös"},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": original}}),
        )
        .await;
    let edited = h
        .wait_state(&matrix_key(&edit), MessageState::Archived)
        .await;
    let comm = kis_resource(&h, edited.resource.as_deref().unwrap()).await;
    assert_eq!(comm["payload"][0]["contentString"], "Drain: 200 ml serös");
    let still = kis_resource(&h, &orig_resource).await;
    assert_eq!(still["payload"][0]["contentString"], "Drain: 20 ml serös");
    assert_eq!(still["status"], "completed", "the original stays");
    let prov_id = chartbridge::map::stable_id(&matrix_key(&edit), "Provenance");
    let prov = kis_resource(&h, &format!("Provenance/{prov_id}")).await;
    let revision = prov["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["role"] == "revision")
        .unwrap_or_else(|| panic!("no revision entity: {prov}"));
    assert_eq!(revision["what"]["reference"], orig_resource.as_str());
    assert_eq!(revision["what"]["identifier"]["system"], system.as_str());
    assert_eq!(
        revision["what"]["identifier"]["value"],
        format!("matrix:{original}")
    );

    // 2. An image with a caption (v1.10: filename present, body is the caption).
    let image = png(&format!("caption-{}", h.run));
    let mxc = synapse.upload(&nurse, image.clone(), "image/png").await;
    let captioned = synapse
        .send(
            &nurse,
            &room,
            json!({"msgtype": "m.image", "body": "Wunde lateral, Rand gerötet",
                   "filename": "wunde.png", "url": mxc,
                   "info": {"mimetype": "image/png", "size": image.len()}}),
        )
        .await;
    let doc = h
        .wait_state(&matrix_key(&captioned), MessageState::Archived)
        .await;
    let doc = kis_resource(&h, doc.resource.as_deref().unwrap()).await;
    assert_eq!(doc["description"], "Wunde lateral, Rand gerötet");
    assert_eq!(doc["content"][0]["attachment"]["title"], "wunde.png");

    // 3. A reply with a legacy fallback: stripped text, inResponseTo kept.
    let reply = synapse
        .send(
            &nurse,
            &room,
            json!({"msgtype": "m.text",
                   "body": format!("> <{}> Drain: 20 ml serös\n\nBitte morgen ziehen", nurse.id),
                   "format": "org.matrix.custom.html",
                   "formatted_body": "<mx-reply><blockquote>Drain</blockquote></mx-reply>Bitte morgen ziehen",
                   "m.relates_to": {"m.in_reply_to": {"event_id": original}}}),
        )
        .await;
    let answered = h
        .wait_state(&matrix_key(&reply), MessageState::Archived)
        .await;
    let answered = kis_resource(&h, answered.resource.as_deref().unwrap()).await;
    assert_eq!(
        answered["payload"][0]["contentString"],
        "Bitte morgen ziehen"
    );
    assert_eq!(
        answered["inResponseTo"][0]["identifier"]["value"],
        format!("matrix:{original}")
    );

    // 4. An encrypted attachment of a version the spec does not allow (only
    //    v2 is) and an m.room.encrypted event: quarantined encrypted_content
    //    with the defect named, never deleted. (Readable v2 attachments are
    //    decrypted: tests/matrix_e2ee.rs.)
    let attachment = synapse
        .send(
            &nurse,
            &room,
            json!({"msgtype": "m.file", "body": "befund.pdf",
                   "file": {"url": "mxc://localhost/encrypted1", "v": "v1", "iv": "w+sE15fzSc0AAAAAAAAAAA",
                            "hashes": {"sha256": "fdSLu/YkRx3Wyh3KQabP3rd6+SFiKg5lsJZQHtkSAYA"},
                            "key": {"kty": "oct", "alg": "A256CTR", "ext": true,
                                    "k": "aWF6-32KGYaC3A_FEUCk1Bt0JA37zP0oMOYqHsdqMzg",
                                    "key_ops": ["encrypt", "decrypt"]}}}),
        )
        .await;
    let megolm = synapse
        .send_event(
            &nurse,
            &room,
            "m.room.encrypted",
            json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnAc",
                   "device_id": "NURSEDEV", "sender_key": "c2VuZGVya2V5", "session_id": "c2Vzc2lvbg"}),
        )
        .await;
    for (id, detail) in [
        (
            &attachment,
            "content.file.v: encrypted attachment not readable",
        ),
        (&megolm, "m.room.encrypted: megolm event, no room keys"),
    ] {
        let key = matrix_key(id);
        let held = h.wait_state(&key, MessageState::Quarantined).await;
        assert_eq!(held.reason, "encrypted_content");
        let (_, _, sealed) = h.store.quarantine_detail(&key).await.unwrap().unwrap();
        let opened = h
            .sealer
            .open(
                &sealed::quarantine_detail(&h.store.message_ref(&key).unwrap()),
                &sealed.unwrap(),
            )
            .unwrap();
        assert_eq!(String::from_utf8(opened).unwrap(), detail);
        assert_eq!(
            h.store.deletion_state(&key).await.unwrap(),
            None,
            "never deleted"
        );
    }

    // 5. A float timestamp (canonical JSON allows none, senders still do):
    //    archived when integral.
    let now = millis(chrono::Utc::now());
    let float_id = format!("$float-{}", h.run);
    let payload = json!({"type": "m.room.message", "room_id": room, "event_id": float_id,
        "sender": nurse.id, "origin_server_ts": 0, "x.extra": {"ignored": true},
        "content": {"msgtype": "m.text", "body": "RR 120/80"}})
    .to_string()
    .replace(
        "\"origin_server_ts\":0",
        &format!("\"origin_server_ts\":{now}.0"),
    );
    h.publish(payload.as_bytes()).await;
    let float = h
        .wait_state(&matrix_key(&float_id), MessageState::Archived)
        .await;
    assert!(float.resource.is_some());

    // 6. The deletion adapter's own redactions mark nothing: the original
    //    was deleted (redacted by the bot) and its record carries no mark.
    wait_confirmed(&h, &matrix_key(&original)).await;

    // 7. A foreign redaction of an archived message: the KIS record is
    //    tagged and a Provenance records the retraction; nothing is deleted.
    let retracted = synapse
        .send(
            &nurse,
            &room,
            json!({"msgtype": "m.text", "body": "Falscher Patient"}),
        )
        .await;
    let archived = h
        .wait_state(&matrix_key(&retracted), MessageState::Archived)
        .await;
    let resource = archived.resource.unwrap();
    let redaction = synapse.redact(&nurse, &room, &retracted).await;
    let redaction_key = matrix_key(&redaction);
    let mark = h.wait_redaction_mark(&redaction_key).await;
    assert_eq!(
        (mark.state.as_str(), mark.resource.as_str()),
        ("marked", resource.as_str())
    );
    let record = kis_resource(&h, &resource).await;
    let tags = record["meta"]["tag"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        tags.iter().any(
            |t| t["system"] == chartbridge::map::provenance::SOURCE_EVENT_SYSTEM
                && t["code"] == "retracted-at-source"
        ),
        "{record}"
    );
    assert_eq!(
        record["payload"][0]["contentString"], "Falscher Patient",
        "kept"
    );
    assert_eq!(record["status"], "completed");
    let prov = kis_resource(&h, mark.provenance.as_deref().unwrap()).await;
    assert_eq!(prov["target"][0]["reference"], resource.as_str());
    assert_eq!(prov["activity"]["coding"][0]["code"], "DELETE");
    assert_eq!(prov["entity"][0]["role"], "removal");
    assert_eq!(
        prov["entity"][0]["what"]["identifier"]["value"],
        format!("matrix:{retracted}")
    );

    // Back to step 6: the bot's redaction of the original left no mark.
    let orig_record = kis_resource(&h, &orig_resource).await;
    let tags = orig_record["meta"]["tag"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !tags.iter().any(|t| t["code"] == "retracted-at-source"),
        "{orig_record}"
    );
    let own = chartbridge::map::stable_id(&matrix_key(&original), "retraction");
    assert!(h.kis.read(&format!("Provenance/{own}")).await.is_err());

    // 8. Downloaded bytes that disagree with `info`: a wrong size, and a PDF
    //    declared as a JPEG image, are held, not archived, not deleted.
    let short = png(&format!("size-{}", h.run));
    let mxc = synapse.upload(&nurse, short.clone(), "image/png").await;
    let wrong_size = synapse
        .send(
            &nurse,
            &room,
            json!({"msgtype": "m.image", "body": "w.png", "url": mxc,
                   "info": {"mimetype": "image/png", "size": short.len() + 100}}),
        )
        .await;
    let pdf = format!("%PDF-1.4\n% {}\n1 0 obj\n<<>>\nendobj\n", h.run).into_bytes();
    let mxc = synapse.upload(&nurse, pdf.clone(), "image/jpeg").await;
    let wrong_type = synapse
        .send(
            &nurse,
            &room,
            json!({"msgtype": "m.image", "body": "foto.jpg", "url": mxc,
                   "info": {"mimetype": "image/jpeg", "size": pdf.len()}}),
        )
        .await;
    for (id, reason) in [
        (&wrong_size, "media_size_mismatch"),
        (&wrong_type, "media_type_mismatch"),
    ] {
        let key = matrix_key(id);
        let held = h.wait_state(&key, MessageState::Quarantined).await;
        assert_eq!(held.reason, reason);
        assert_eq!(h.store.deletion_state(&key).await.unwrap(), None);
    }

    // 9. Event types beside m.room.message reach the worker and each gets a
    //    recorded state: a sticker is not relevant by the `stickers` rule, a
    //    poll and its answer are held, a file without `info.mimetype` takes
    //    its type from the file name and is archived.
    let sticker_png = png(&format!("sticker-{}", h.run));
    let mxc = synapse
        .upload(&nurse, sticker_png.clone(), "image/png")
        .await;
    let sticker = synapse
        .send_event(
            &nurse,
            &room,
            "m.sticker",
            json!({"body": "Daumen hoch", "url": mxc,
                   "info": {"mimetype": "image/png", "size": sticker_png.len()}}),
        )
        .await;
    let poll = synapse
        .send_event(
            &nurse,
            &room,
            "org.matrix.msc3381.poll.start",
            json!({"org.matrix.msc3381.poll.start": {"kind": "org.matrix.msc3381.poll.disclosed",
                   "max_selections": 1,
                   "question": {"org.matrix.msc1767.text": "Schmerzen heute?"},
                   "answers": [{"id": "a", "org.matrix.msc1767.text": "ja"},
                               {"id": "b", "org.matrix.msc1767.text": "nein"}]},
                   "org.matrix.msc1767.text": "Schmerzen heute?\n1. ja\n2. nein"}),
        )
        .await;
    let answer = synapse
        .send_event(
            &nurse,
            &room,
            "org.matrix.msc3381.poll.response",
            json!({"org.matrix.msc3381.poll.response": {"answers": ["a"]},
                   "m.relates_to": {"rel_type": "m.reference", "event_id": poll}}),
        )
        .await;
    let letter = common::photos::plain_pdf(&h.run);
    let mxc = synapse
        .upload(&nurse, letter.clone(), "application/pdf")
        .await;
    let untyped = synapse
        .send(
            &nurse,
            &room,
            json!({"msgtype": "m.file", "body": "Arztbrief.pdf", "url": mxc}),
        )
        .await;
    let s = h
        .wait_state(&matrix_key(&sticker), MessageState::NotRelevant)
        .await;
    assert_eq!(s.reason, "stickers");
    for id in [&poll, &answer] {
        let held = h
            .wait_state(&matrix_key(id), MessageState::Quarantined)
            .await;
        assert_eq!(held.reason, "unsupported_message_type");
        assert_eq!(h.store.deletion_state(&matrix_key(id)).await.unwrap(), None);
    }
    let file = h
        .wait_state(&matrix_key(&untyped), MessageState::Archived)
        .await;
    let doc = kis_resource(&h, file.resource.as_deref().unwrap()).await;
    assert_eq!(
        doc["content"][0]["attachment"]["contentType"],
        "application/pdf"
    );

    stop_source.send(true).unwrap();
    source_task.await.unwrap().unwrap();
    worker.stop().await;
}
