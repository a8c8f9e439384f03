//! `broker.queue_arguments = "policy"` with the policies of
//! `deploy/rabbitmq/definitions.json`, on the real RabbitMQ: the worker
//! declares the queue type only, the policy's dead-lettering and delivery
//! limit act on the events queue, and changing the policy never makes the
//! worker's declare fail. Policies are set with `rabbitmqctl` (as the
//! definitions import would), their patterns narrowed to this run's queues.

use std::process::Command;
use std::time::Duration;

use chartbridge::config::Config;
use chartbridge::consume::{Broker, QueueArguments};
use lapin::options::{BasicGetOptions, BasicNackOptions};
use serde_json::Value;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl (Debian package rabbitmq-server) runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The named policy of definitions.json, its dead-letter exchange renamed.
fn shipped_policy(name: &str, dlx: &str, delivery_limit: u64) -> Value {
    let text = std::fs::read_to_string("deploy/rabbitmq/definitions.json").unwrap();
    let defs: Value = serde_json::from_str(&text).unwrap();
    let mut p = defs["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()["definition"]
        .clone();
    p["dead-letter-exchange"] = dlx.into();
    p["delivery-limit"] = delivery_limit.into();
    p
}

struct Policy(String);

impl Policy {
    fn set(name: &str, pattern: &str, definition: &Value) -> Self {
        rabbitmqctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            "--priority",
            "10",
            name,
            pattern,
            &definition.to_string(),
        ]);
        Self(name.to_owned())
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["clear_policy", &self.0])
            .output();
    }
}

/// `(policy, arguments)` of `queue` as the broker lists them.
fn queue_info(queue: &str) -> (String, Value) {
    let listed: Value = serde_json::from_str(&rabbitmqctl(&[
        "list_queues",
        "--formatter",
        "json",
        "name",
        "policy",
        "arguments",
    ]))
    .unwrap();
    let q = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue)
        .unwrap_or_else(|| panic!("{queue} not listed"))
        .clone();
    (
        q["policy"].as_str().unwrap_or("").to_owned(),
        q["arguments"].clone(),
    )
}

/// This run's id and a configuration whose queues and exchanges are this run's own, declared
/// with `broker.queue_arguments = "policy"`.
fn policy_config() -> (String, Config) {
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let text = format!(
        r#"
[broker]
url = "{AMQP_URL}"
events_queue = "p.{run}.events"
dead_letter_exchange = "p.{run}.dlx"
dead_letter_queue = "p.{run}.dead"
deletion_exchange = "p.{run}.deletions"
deletion_sources = []
receipts_queue = "p.{run}.receipts"
queue_arguments = "policy"
[store]
url = "sqlite::memory:"
key_file = "unused"
[kis]
base_url = "http://127.0.0.1:1"
"#
    );
    let config = Config::from_parts("policy.toml".as_ref(), &text, std::iter::empty()).unwrap();
    (run, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_own_dead_lettering_and_limits() {
    let (run, config) = policy_config();
    assert_eq!(config.broker.queue_arguments, QueueArguments::Policy);
    let events = config.broker.events_queue.clone();
    let pattern = format!("^p\\.{run}\\.events$");
    let name = format!("cb-test-{run}");
    let _policy = Policy::set(
        &name,
        &pattern,
        &shipped_policy("chartbridge-inputs", &config.broker.dead_letter_exchange, 2),
    );

    let broker = Broker::connect(&config.broker).await.unwrap();
    let (policy, arguments) = queue_info(&events);
    assert_eq!(policy, name, "the policy applies to the events queue");
    // rabbitmqctl lists arguments as [name, AMQP type, value].
    assert_eq!(
        arguments,
        serde_json::json!([["x-queue-type", "longstr", "quorum"]]),
        "the worker declared the queue type only"
    );

    // The policy's delivery limit dead-letters a payload handed back
    // again and again, through the policy's dead-letter exchange.
    broker.publish_event(b"{\"poison\": true}").await.unwrap();
    let ch = broker.consumer_channel(1).await.unwrap();
    let mut returned = 0;
    let dead = loop {
        if let Some(m) = ch
            .basic_get(
                config.broker.dead_letter_queue.as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .unwrap()
        {
            break m;
        }
        match ch
            .basic_get(events.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            Some(m) => {
                m.delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                returned += 1;
                assert!(returned <= 10, "the delivery limit never acted");
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(dead.delivery.data, b"{\"poison\": true}");
    assert!((2..=4).contains(&returned), "returned {returned} times");

    // Another limit in the policy: the worker's next session declares
    // without a PRECONDITION_FAILED.
    let _changed = Policy::set(
        &name,
        &pattern,
        &shipped_policy("chartbridge-inputs", &config.broker.dead_letter_exchange, 7),
    );
    Broker::connect(&config.broker)
        .await
        .expect("declare after a policy change");

    for q in [
        &events,
        &config.broker.dead_letter_queue,
        &config.broker.receipts_queue,
    ] {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_queue", q])
            .output();
    }
}

/// The shipped dead-letter policy gives the dead-letter queue a TTL, a
/// length limit and `reject-publish` overflow; on the real broker (with the
/// TTL and the length shortened for the test) a dead letter expires
/// unreviewed, and a full queue refuses the next dead letter, which the
/// worker then hands back instead of losing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_policy_expires_and_bounds_the_queue() {
    let text = std::fs::read_to_string("deploy/rabbitmq/definitions.json").unwrap();
    let defs: Value = serde_json::from_str(&text).unwrap();
    let shipped = defs["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "chartbridge-dead-letters")
        .unwrap()
        .clone();
    assert_eq!(
        shipped["pattern"].as_str(),
        Some("^chartbridge\\.events\\.dead$")
    );
    let mut definition = shipped["definition"].clone();
    assert_eq!(definition["message-ttl"], 14 * 24 * 3600 * 1000, "14 days");
    assert_eq!(definition["overflow"], "reject-publish");
    assert!(definition["max-length"].as_u64().is_some());

    let (run, config) = policy_config();
    let dead = config.broker.dead_letter_queue.clone();
    definition["message-ttl"] = 1500.into();
    definition["max-length"] = 2.into();
    let name = format!("cb-test-dead-{run}");
    let _policy = Policy::set(&name, &format!("^p\\.{run}\\.dead$"), &definition);
    let broker = Broker::connect(&config.broker).await.unwrap();
    let (policy, _) = queue_info(&dead);
    assert_eq!(policy, name, "the policy applies to the dead-letter queue");

    let dlx = config.broker.dead_letter_exchange.clone();
    let publish = |body: &'static [u8]| {
        let broker = broker.clone();
        let dlx = dlx.clone();
        async move {
            broker
                .publish_confirmed(&dlx, "", body, lapin::BasicProperties::default())
                .await
        }
    };
    // A quorum queue applies the limit once it is reached: at most one
    // publish beyond `max-length` is taken, the next is refused.
    let mut taken = 0;
    loop {
        match publish(b"dead").await {
            Ok(()) => taken += 1,
            Err(chartbridge::consume::BrokerError::Nacked) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(
            taken <= 3,
            "a full dead-letter queue refuses the publish (overflow reject-publish)"
        );
    }
    assert!(taken >= 2, "{taken} taken before the limit");
    // Unreviewed dead letters expire.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ch = broker.consumer_channel(1).await.unwrap();
    assert!(
        ch.basic_get(dead.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none(),
        "expired after the TTL"
    );
    publish(b"four").await.unwrap();

    for q in [
        &config.broker.events_queue,
        &dead,
        &config.broker.receipts_queue,
    ] {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_queue", q])
            .output();
    }
}
