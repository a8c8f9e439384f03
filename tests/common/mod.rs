//! Test harness: a real RabbitMQ (isolated by unique queue names), the real
//! FHIR server started by `deploy/dev/fhir-server.sh`, a fresh SQLite store.
//! Stand-ins exist only for injecting faults (KIS proxy) and for the
//! WhatsApp media API, which cannot run here.
#![allow(dead_code)]

pub mod chaos_proxy;
pub mod photos;
pub mod pki;
pub mod standins;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chartbridge::config::Config;
use chartbridge::consume::Broker;
use chartbridge::delete::DeletionCommand;
use chartbridge::event::MessageKey;
use chartbridge::push::Kis;
use chartbridge::seal::Sealer;
use chartbridge::store::{MessageState, Store, StoredMessage};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio::sync::watch;

pub const PATIENT_SYSTEM: &str = "https://kis.example-hospital.invalid/sid/patient-id";
pub const CASE_SYSTEM: &str = "https://kis.example-hospital.invalid/sid/case-id";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn fhir_url() -> String {
    std::env::var("CHARTBRIDGE_TEST_FHIR_URL").unwrap_or_else(|_| "http://127.0.0.1:8090".into())
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Harness {
    pub run: String,
    /// The broker this harness uses (the shared node unless a test runs
    /// its own, see `deploy/dev/chaos-rabbit.sh`).
    pub amqp_url: String,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub config_path: PathBuf,
    pub kis: Kis,
    pub store: Store,
    pub sealer: Sealer,
    pub broker: Broker,
    pub deletions_queue: String,
}

pub struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Worker {
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Each harness declares its own queues and exchanges (quorum queues are
/// Raft groups: left behind by the hundred they wear a broker down), so it
/// deletes them when dropped, also when the test panicked.
impl Drop for Harness {
    fn drop(&mut self) {
        let b = &self.config.broker;
        let mut queues = vec![
            b.events_queue.clone(),
            b.dead_letter_queue.clone(),
            b.receipts_queue.clone(),
            self.deletions_queue.clone(),
        ];
        queues.extend(
            b.deletion_sources
                .iter()
                .map(|s| format!("{}.{s}", b.deletion_exchange)),
        );
        // Deletion adapters declare their source's queue themselves.
        for source in ["matrix", "whatsapp"] {
            let q = format!("{}.{source}", b.deletion_exchange);
            if !queues.contains(&q) {
                queues.push(q);
            }
        }
        let exchanges = [b.dead_letter_exchange.clone(), b.deletion_exchange.clone()];
        let amqp_url = self.amqp_url.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(conn) =
                    lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default())
                        .await
                else {
                    return;
                };
                if let Ok(ch) = conn.create_channel().await {
                    for q in queues {
                        let _ = ch
                            .queue_delete(
                                q.as_str().into(),
                                lapin::options::QueueDeleteOptions::default(),
                            )
                            .await;
                    }
                    for e in exchanges {
                        let _ = ch
                            .exchange_delete(
                                e.as_str().into(),
                                lapin::options::ExchangeDeleteOptions::default(),
                            )
                            .await;
                    }
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

impl Harness {
    /// Enables the ADT feed on this run's queues, maps the fixtures'
    /// assigning authority `KIS` to the test systems, appends `extra` (TOML
    /// sections) to the configuration and declares the feed's queues and
    /// the reply queue; returns `(adt queue, reply queue)`.
    pub async fn enable_adt(&mut self, extra: &str) -> (String, String) {
        let queue = format!("t.{}.adt", self.run);
        let replies = format!("t.{}.adt.replies", self.run);
        let mut text = std::fs::read_to_string(&self.config_path).unwrap();
        text.push_str(&format!(
            "\n[adt]\nenabled = true\nqueue = \"{queue}\"\nack_queue = \"t.{run}.adt.acks\"\n\
             reply_to_allowed = [\"{replies}\"]\n\
             [adt.patient_authorities]\nKIS = \"{PATIENT_SYSTEM}\"\n\
             [adt.case_authorities]\nKIS = \"{CASE_SYSTEM}\"\n{extra}",
            run = self.run
        ));
        std::fs::write(&self.config_path, &text).unwrap();
        self.config = Config::from_parts(&self.config_path, &text, std::iter::empty()).unwrap();
        chartbridge::hl7::feed::declare(&self.broker, &self.config.adt)
            .await
            .unwrap();
        let ch = self.broker.consumer_channel(10).await.unwrap();
        ch.queue_declare(
            replies.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        (queue, replies)
    }

    /// A harness whose worker talks to `kis_url` (the real server, or a
    /// fault proxy in front of it) and to `media_url`.
    pub async fn new(kis_url: Option<&str>, media_url: Option<&str>) -> Self {
        Self::on_broker(kis_url, media_url, AMQP_URL).await
    }

    /// Like [`Harness::new`], on the broker at `amqp_url`.
    pub async fn on_broker(kis_url: Option<&str>, media_url: Option<&str>, amqp_url: &str) -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let dir = tempfile::tempdir().unwrap();
        let kis_url = kis_url.map(str::to_owned).unwrap_or_else(fhir_url);
        let media = media_url
            .map(|u| format!("[media]\napi_base_url = \"{u}\"\naccess_token = \"test-token\"\nmax_bytes = 1048576\n"))
            .unwrap_or_default();
        let text = format!(
            r#"
[broker]
url = "{amqp_url}"
events_queue = "t.{run}.events"
dead_letter_exchange = "t.{run}.dlx"
dead_letter_queue = "t.{run}.dead"
deletion_exchange = "t.{run}.deletions"
deletion_sources = []
receipts_queue = "t.{run}.receipts"
prefetch = 16
[store]
url = "sqlite://{db}?mode=rwc"
key_file = "{key}"
[kis]
base_url = "{kis_url}"
backoff_initial = "20ms"
backoff_max = "200ms"
[mappings]
rules_file = "{rules}"
[pipeline]
concurrency = 8
drain_timeout = "5s"
[schedule]
relay_interval = "50ms"
[http]
listen = "127.0.0.1:0"
[intake]
# Publisher authentication is tested in tests/intake.rs.
default_auth = "none"
{media}"#,
            db = dir.path().join("state.db").display(),
            key = dir.path().join("key").display(),
            rules = repo().join("mappings/rules.toml").display(),
        );
        let config_path = dir.path().join("chartbridge.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = Config::from_parts(&config_path, &text, std::iter::empty()).unwrap();
        Sealer::generate_key_file(&config.store.key_file).unwrap();
        let sealer = Sealer::load(&config.store.key_file).unwrap();
        let store = Store::open(config.store.url.expose(), 4, &sealer)
            .await
            .unwrap();
        let broker = Broker::connect(&config.broker).await.unwrap();
        let deletions_queue = format!("t.{run}.deletions.observed");
        let ch = broker.consumer_channel(10).await.unwrap();
        ch.queue_declare(
            deletions_queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            deletions_queue.as_str().into(),
            config.broker.deletion_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let kis = Kis::new(
            &Config::from_parts(
                &config_path,
                &text.replace(&kis_url, &fhir_url()),
                std::iter::empty(),
            )
            .unwrap()
            .kis,
        )
        .unwrap();
        assert!(
            kis.read("metadata").await.is_ok(),
            "no FHIR server at {}: start it with deploy/dev/fhir-server.sh start",
            fhir_url()
        );
        Self {
            run,
            amqp_url: amqp_url.to_owned(),
            dir,
            config,
            config_path,
            kis,
            store,
            sealer,
            broker,
            deletions_queue,
        }
    }

    pub fn start_worker(&self) -> Worker {
        let (stop, rx) = watch::channel(false);
        let config = self.config.clone();
        let task = tokio::spawn(chartbridge::app::run_until(config, rx.into()));
        Worker { stop, task }
    }

    /// Seeds the fixtures' patient and case in the KIS (once, conditionally).
    pub async fn seed_patient(&self, value: &str) -> (String, String) {
        let patient = self
            .kis
            .create_if_none_exist(
                &json!({"resourceType": "Patient",
                        "identifier": [{"system": PATIENT_SYSTEM, "value": value}],
                        "name": [{"family": "Mustermann", "given": ["Erika"]}]}),
                &[(
                    "identifier",
                    chartbridge::push::url::SearchValue::Token {
                        system: PATIENT_SYSTEM,
                        code: value,
                    },
                )],
            )
            .await
            .unwrap();
        let case = format!("F-{}", value.trim_start_matches("P-").replacen('1', "2", 1));
        let encounter = self
            .kis
            .create_if_none_exist(
                &json!({"resourceType": "Encounter", "status": "in-progress",
                        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                        "identifier": [{"system": CASE_SYSTEM, "value": case}],
                        "subject": {"reference": patient}}),
                &[(
                    "identifier",
                    chartbridge::push::url::SearchValue::Token {
                        system: CASE_SYSTEM,
                        code: &case,
                    },
                )],
            )
            .await
            .unwrap();
        (patient, encounter)
    }

    /// A fixture with this run's suffix on every message id, so tests and
    /// runs never share a message.
    pub fn fixture(&self, path: &str) -> Vec<u8> {
        let mut v: Value =
            serde_json::from_slice(&std::fs::read(repo().join("fixtures").join(path)).unwrap())
                .unwrap();
        self.uniquify(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    pub fn uniquify(&self, v: &mut Value) {
        let suffix = format!("-{}", self.run);
        if v.get("schema").is_some() {
            for k in ["message_id", "event_id"] {
                let s = format!("{}{suffix}", v[k].as_str().unwrap());
                v[k] = Value::String(s);
            }
        } else if let Some(entries) = v["entry"].as_array_mut() {
            for e in entries {
                for c in e["changes"].as_array_mut().unwrap() {
                    for m in c["value"]["messages"].as_array_mut().into_iter().flatten() {
                        let s = format!("{}{suffix}", m["id"].as_str().unwrap());
                        m["id"] = Value::String(s);
                    }
                }
            }
        }
    }

    pub fn key(&self, source: &str, id: &str) -> MessageKey {
        MessageKey {
            source: source.into(),
            message_id: format!("{id}-{}", self.run),
        }
    }

    pub async fn publish(&self, payload: &[u8]) {
        self.broker.publish_event(payload).await.unwrap();
    }

    /// The content bytes of an archived resource, read back from the KIS:
    /// a Communication's text, a DocumentReference's Binary data.
    pub async fn kis_content(&self, resource: &str) -> Vec<u8> {
        use base64::Engine;
        let json = self.kis.read(resource).await.unwrap();
        if resource.starts_with("Communication/") {
            return json["payload"][0]["contentString"]
                .as_str()
                .unwrap()
                .as_bytes()
                .to_vec();
        }
        let url = json["content"][0]["attachment"]["url"].as_str().unwrap();
        let binary = self.kis.read(url).await.unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(binary["data"].as_str().unwrap())
            .unwrap()
    }

    pub async fn state(&self, key: &MessageKey) -> Option<StoredMessage> {
        self.store.message(key).await.unwrap()
    }

    /// Waits (up to 60 s) until the retraction `redaction` has a recorded
    /// end, and answers it.
    pub async fn wait_redaction_mark(
        &self,
        redaction: &MessageKey,
    ) -> chartbridge::store::RedactionMark {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(mark) = self.store.redaction_mark(redaction).await.unwrap() {
                return mark;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the retraction {redaction} to be recorded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_state(&self, key: &MessageKey, want: MessageState) -> StoredMessage {
        wait_until(
            Duration::from_secs(60),
            &format!("{key} to be {want:?}"),
            || async { self.state(key).await.is_some() },
        )
        .await;
        let got = self.state(key).await.unwrap();
        assert_eq!(got.state, want, "{key}: {got:?}");
        got
    }

    /// Resources of `resource_type` in the KIS carrying the message identifier.
    pub async fn kis_ids(&self, resource_type: &str, key: &MessageKey) -> Vec<String> {
        let answer = self
            .kis
            .search(
                resource_type,
                &[(
                    "identifier",
                    chartbridge::push::url::SearchValue::Token {
                        system: &self.config.kis.identifier_system,
                        code: &key.to_string(),
                    },
                )],
            )
            .await
            .unwrap();
        answer["entry"]
            .as_array()
            .map(|es| {
                es.iter()
                    .map(|e| format!("{resource_type}/{}", e["resource"]["id"].as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes every message from `queue` (acking it).
    pub async fn drain_queue(&self, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
        let ch = self.broker.consumer_channel(100).await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            out.push(m);
        }
        out
    }

    pub async fn deletion_commands(&self) -> Vec<DeletionCommand> {
        self.drain_queue(&self.deletions_queue)
            .await
            .iter()
            .map(|m| serde_json::from_slice(&m.delivery.data).unwrap())
            .collect()
    }

    /// Waits for `n` deletion commands, checking as each arrives that the
    /// KIS already holds the archived resource.
    pub async fn expect_deletions(&self, n: usize) -> Vec<DeletionCommand> {
        let ch = self.broker.consumer_channel(100).await.unwrap();
        let mut consumer = ch
            .basic_consume(
                self.deletions_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let d = tokio::time::timeout(Duration::from_secs(60), consumer.next())
                .await
                .expect("deletion command in time")
                .unwrap()
                .unwrap();
            let cmd: DeletionCommand = serde_json::from_slice(&d.data).unwrap();
            if let Some(archive) = &cmd.archive {
                let held = self.kis.read(&archive.resource).await;
                assert!(
                    held.is_ok(),
                    "deletion issued before the KIS held {}",
                    archive.resource
                );
            }
            d.ack(BasicAckOptions::default()).await.unwrap();
            out.push(cmd);
        }
        ch.close(200, "done".into()).await.unwrap();
        out
    }

    pub fn config_file(&self) -> &Path {
        &self.config_path
    }

    /// Runs the `chartbridge` binary with this harness's configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_chartbridge"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap()
    }

    /// Appends `toml` (whole sections) to the config file and reloads `self.config`.
    pub fn add_config(&mut self, toml: &str) {
        let mut text = std::fs::read_to_string(&self.config_path).unwrap();
        text.push('\n');
        text.push_str(toml);
        std::fs::write(&self.config_path, &text).unwrap();
        self.config = Config::from_parts(&self.config_path, &text, std::iter::empty()).unwrap();
    }

    /// Adds a `[proofs]` section (this run's origin, a signer key file path
    /// in the harness directory, the given schedule) to the config file and
    /// `self.config`. The key file is not created. Returns its path.
    pub fn add_proofs_config(&mut self, checkpoint_schedule: &str) -> PathBuf {
        let key = self.dir.path().join("signing.key");
        let mut text = std::fs::read_to_string(&self.config_path).unwrap();
        text.push_str(&format!(
            "\n[proofs]\norigin = \"test.chartbridge.invalid/{run}\"\n\
             signing_key_file = \"{key}\"\ncheckpoint_schedule = \"{checkpoint_schedule}\"\n",
            run = self.run,
            key = key.display(),
        ));
        std::fs::write(&self.config_path, &text).unwrap();
        self.config = Config::from_parts(&self.config_path, &text, std::iter::empty()).unwrap();
        key
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Who the audit trail names for commands this test runs: `os:` and the
/// account `id -un` reports for the process's uid.
pub fn os_actor() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    format!("os:{}", String::from_utf8(out.stdout).unwrap().trim())
}

/// The audit trail's rows with `action`.
pub async fn audit_rows(h: &Harness, action: &str) -> Vec<chartbridge::audit::Row> {
    let rows = h.store.audit_trail().await.unwrap();
    assert!(
        chartbridge::audit::verify(&rows).is_ok(),
        "the chain verifies"
    );
    rows.into_iter().filter(|r| r.action == action).collect()
}

/// A new, empty PostgreSQL database named `{prefix}_{uuid}` on the server
/// of `CHARTBRIDGE_TEST_POSTGRES` (default: the local trust server); its URL.
pub async fn fresh_postgres_database(prefix: &str) -> String {
    sqlx::any::install_default_drivers();
    let admin = std::env::var("CHARTBRIDGE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

/// Peak resident set size of process `pid` (`VmHWM` in
/// `/proc/PID/status`), KiB; 0 when it cannot be read.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
