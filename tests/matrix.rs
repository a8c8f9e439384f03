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
use chartbridge::store::{DeletionState, Link, MessageState, millis};
use common::{Harness, wait_until};
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
    let mut text = b"Comment\0".to_vec();
    text.extend_from_slice(salt.as_bytes());
    chunk(&mut out, b"tEXt", &text);
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

fn matrix_key(event_id: &str) -> MessageKey {
    MessageKey {
        source: "matrix".into(),
        message_id: event_id.into(),
    }
}

#[tokio::test]
async fn i7_iv8_matrix_room_archived_then_redacted_and_media_deleted() {
    let Some(synapse) = synapse() else { return };
    let mut h = Harness::new(None, None).await;
    let bot = synapse.register(&format!("bot{}", h.run), true).await;
    let alice = synapse.register(&format!("alice{}", h.run), false).await;
    h.add_config(&format!(
        "[matrix]\nhomeserver_url = \"{}\"\naccess_token = \"{}\"\nsync_timeout = \"2s\"\n\
         [deletion]\nbackoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\n\
         [deletion.matrix]\nadapter = \"matrix\"\n",
        synapse.url, bot.token
    ));
    let room = synapse.room(&alice, &bot).await;
    let (patient, encounter) = h.seed_patient("P-1001").await;
    h.store
        .set_link(
            &conversation_token(&h.sealer, "matrix", &room),
            &Link {
                patient,
                encounter: Some(encounter),
            },
            millis(chrono::Utc::now()),
        )
        .await
        .unwrap();

    let text_id = synapse
        .send(
            &alice,
            &room,
            json!({"msgtype": "m.text", "body": "Wundkontrolle: reizlos"}),
        )
        .await;
    let image = png(&h.run);
    let mxc = synapse.upload(&alice, image.clone(), "image/png").await;
    let image_id = synapse
        .send(
            &alice,
            &room,
            json!({"msgtype": "m.image", "body": "wound.png", "url": mxc,
                   "info": {"mimetype": "image/png", "size": image.len()}}),
        )
        .await;
    assert_eq!(synapse.download_status(&alice, &mxc).await, 200);

    let worker = h.start_worker();
    let source = MatrixSource::connect(&h.config.matrix, h.store.clone(), h.broker.clone())
        .await
        .unwrap();
    assert_eq!(source.user_id(), bot.id);
    let (stop_source, source_shutdown) = watch::channel(false);
    let source = std::sync::Arc::new(source);
    let loop_source = source.clone();
    let source_task = tokio::spawn(async move { loop_source.run(source_shutdown).await });

    let text = h
        .wait_state(&matrix_key(&text_id), MessageState::Archived)
        .await;
    let img = h
        .wait_state(&matrix_key(&image_id), MessageState::Archived)
        .await;
    // The KIS holds both; the image's hash is that of the downloaded bytes.
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
        Some(hex::encode(sha2::Sha256::digest(&image)).as_str())
    );
    assert!(text.content_sha256.is_some());

    for id in [&text_id, &image_id] {
        wait_until(Duration::from_secs(60), "deletion confirmed", || async {
            h.store.deletion_state(&matrix_key(id)).await.unwrap() == Some(DeletionState::Confirmed)
        })
        .await;
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
