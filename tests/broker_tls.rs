//! The broker over TLS and least privilege, against a private RabbitMQ
//! node (deploy/dev/chaos-rabbit.sh with a TLS listener; ports 5675 and
//! 5676) loaded with deploy/rabbitmq/users.json: the worker connects with
//! `amqps://`, the hospital CA and its client certificate (EXTERNAL login,
//! no password); a gateway's broker user can write its own source's
//! ingress exchanges only, and cannot claim another `user_id`.

mod common;

use std::path::Path;
use std::process::Command;

use chartbridge::config::Config;
use chartbridge::consume::Broker;
use common::pki::{Leaf, Pki, write};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const PORT: u16 = 5675;
const TLS_PORT: u16 = 5676;

/// One test at a time owns the node.
static NODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The private node, stopped when dropped (also after a panic).
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new(common::repo().join("deploy/dev/chaos-rabbit.sh"))
            .args(args)
            .env("CHAOS_RABBIT_PORT", PORT.to_string())
            .env("CHAOS_RABBIT_TLS_PORT", TLS_PORT.to_string())
            .env("CHAOS_RABBIT_DIR", self.dir.path().join("node"))
            .env("CHAOS_RABBIT_TLS_DIR", self.dir.path().join("tls"))
            .output()
            .unwrap()
    }

    /// Starts the node with a server certificate of `pki` for `localhost`
    /// and imports the shipped users and permissions.
    fn start(pki: &Pki) -> Self {
        let node = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let tls = node.dir.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        let server = pki.server(&["localhost"]);
        write(&tls, "ca.pem", &pki.ca_pem());
        write(&tls, "server.pem", &server.pem);
        write(&tls, "server.key", &server.key);
        let started = node.script(&["start"]);
        assert!(
            started.status.success(),
            "private RabbitMQ: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        let users = common::repo().join("deploy/rabbitmq/users.json");
        let imported = node.script(&["ctl", "import_definitions", users.to_str().unwrap()]);
        assert!(imported.status.success(), "{imported:?}");
        // The import is asynchronous: wait until every permission is there.
        for _ in 0..100 {
            let out = node.script(&["ctl", "list_permissions", "--silent"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if [
                "chartbridge\t",
                "chartbridge-gw-whatsapp",
                "chartbridge-gw-matrix",
            ]
            .iter()
            .all(|u| text.contains(u))
            {
                return node;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("users.json was not imported");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.script(&["stop"]);
    }
}

/// `[broker]` towards the node's TLS port with `client` as identity.
fn broker_config(dir: &Path, ca: &str, client: Option<&Leaf>) -> Config {
    let ca = write(dir, "broker-ca.pem", ca);
    let identity = client.map_or(String::new(), |c| {
        format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            write(dir, "client.pem", &c.pem).display(),
            write(dir, "client.key", &c.key).display()
        )
    });
    let text = format!(
        "[broker]\nurl = \"amqps://localhost:{TLS_PORT}/%2f?auth_mechanism=external\"\n\
         deletion_sources = [\"whatsapp\", \"matrix\"]\n\
         ingress_sources = [\"whatsapp\", \"matrix\"]\n\
         [broker.tls]\nca_file = \"{}\"\n{identity}\
         [store]\nkey_file = \"k\"\n[kis]\nbase_url = \"http://127.0.0.1:1\"\n",
        ca.display()
    );
    Config::from_parts(Path::new("t.toml"), &text, []).unwrap()
}

fn tls_identity(ca: &str, client: &Leaf) -> lapin::tcp::OwnedTLSConfig {
    lapin::tcp::OwnedTLSConfig {
        identity: Some(lapin::tcp::OwnedIdentity::PKCS8 {
            pem: client.pem.clone().into_bytes(),
            key: client.key.clone().into_bytes(),
        }),
        cert_chain: Some(ca.to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_the_hospital_ca_a_client_certificate_and_external_login() {
    let _owner = NODE.lock().await;
    let hospital = Pki::new("hospital test CA");
    let node = Node::start(&hospital);
    let dir = tempfile::tempdir().unwrap();
    let worker = hospital.client("chartbridge");

    // The worker's identity is its certificate: connected, the topology
    // declared within its permissions, a publish confirmed.
    let config = broker_config(dir.path(), &hospital.ca_pem(), Some(&worker));
    let broker = Broker::connect(&config.broker).await.unwrap();
    broker.publish_event(b"{}").await.unwrap();
    broker.close().await;

    // A server certificate from another CA is not trusted.
    let stranger = Pki::new("other test CA");
    let config = broker_config(dir.path(), &stranger.ca_pem(), Some(&worker));
    assert!(Broker::connect(&config.broker).await.is_err());
    // No client certificate: the broker ends the handshake.
    let config = broker_config(dir.path(), &hospital.ca_pem(), None);
    assert!(Broker::connect(&config.broker).await.is_err());
    // A certificate of the right CA for a name that is no broker user.
    let intruder = hospital.client("intruder");
    let config = broker_config(dir.path(), &hospital.ca_pem(), Some(&intruder));
    assert!(Broker::connect(&config.broker).await.is_err());
    drop(node);
}

/// Publishes on a fresh confirming channel; `Err` carries the broker's
/// refusal.
async fn publish(conn: &Connection, exchange: &str, user_id: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_publish(
        exchange.into(),
        "".into(),
        BasicPublishOptions::default(),
        b"{}",
        BasicProperties::default().with_user_id(user_id.into()),
    )
    .await?
    .await?;
    // A refusal closes the channel; a round trip makes it visible.
    ch.basic_qos(1, Default::default()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_user_writes_only_its_own_sources_exchanges() {
    let _owner = NODE.lock().await;
    let hospital = Pki::new("hospital test CA");
    let node = Node::start(&hospital);
    let dir = tempfile::tempdir().unwrap();
    // The worker declares the topology with the ingress exchanges.
    let config = broker_config(
        dir.path(),
        &hospital.ca_pem(),
        Some(&hospital.client("chartbridge")),
    );
    let worker = Broker::connect(&config.broker).await.unwrap();

    let gateway = hospital.client("chartbridge-gw-whatsapp");
    let conn = Connection::connect_with_config(
        &format!("amqps://localhost:{TLS_PORT}/%2f?auth_mechanism=external"),
        ConnectionProperties::default(),
        tls_identity(&hospital.ca_pem(), &gateway),
        lapin::runtime::default_runtime().unwrap(),
    )
    .await
    .unwrap();
    let me = "chartbridge-gw-whatsapp";
    publish(&conn, "chartbridge.events.whatsapp", me)
        .await
        .unwrap();
    publish(&conn, "chartbridge.deletion-receipts.whatsapp", me)
        .await
        .unwrap();
    for other in [
        "chartbridge.events.matrix",
        "chartbridge.deletion-receipts.matrix",
        "",
        "chartbridge.deletions",
    ] {
        let e = publish(&conn, other, me).await.unwrap_err();
        assert!(e.to_string().contains("ACCESS_REFUSED"), "{other}: {e}");
    }
    // RabbitMQ checks user_id against the connection's user.
    let e = publish(
        &conn,
        "chartbridge.events.whatsapp",
        "chartbridge-gw-matrix",
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("PRECONDITION_FAILED"), "{e}");
    // Deletion commands: its own queue only.
    let ch = conn.create_channel().await.unwrap();
    ch.basic_consume(
        "chartbridge.deletions.whatsapp".into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let e = ch
        .basic_consume(
            "chartbridge.deletions.matrix".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ACCESS_REFUSED"), "{e}");
    let _ = conn.close(200, "done".into()).await;
    worker.close().await;
    drop(node);
}
