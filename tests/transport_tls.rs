//! MLLP over TLS both ways, with certificates made here (rcgen): the ADT
//! listener of a real worker serves only clients whose certificate is on
//! its allow-list, at most `mllp_max_connections` at once, and closes idle
//! connections; the MDM sender (`push::mllp::send`) speaks TLS to it,
//! checking the listener's certificate. Plaintext to a host other than
//! loopback is refused at configuration for every connection.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chartbridge::config::Config;
use chartbridge::hl7::mllp::{frame, take_frame};
use chartbridge::push::config::{MllpClientTls, MllpConfig};
use common::pki::{Leaf, Pki, write};
use common::{CASE_SYSTEM, Harness, PATIENT_SYSTEM, wait_until};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn a01(h: &Harness, tag: &str) -> String {
    std::fs::read_to_string(common::repo().join("fixtures/hl7/adt-a01.hl7"))
        .unwrap()
        .replace("P-1001", &format!("P-{}-{tag}", h.run))
        .replace("F-2001", &format!("F-{}-{tag}", h.run))
        .replace("MSG-A01-0001", &format!("MSG-{}-{tag}", h.run))
}

fn connector(ca: &str, client: Option<&Leaf>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Sends one framed message; the ACK, or `None` when the listener closed
/// the connection (or said nothing for 10 s).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    message: &str,
) -> Option<String> {
    stream.write_all(&frame(message.as_bytes())).await.ok()?;
    stream.flush().await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(ack) = take_frame(&mut buf) {
            return Some(String::from_utf8(ack).unwrap());
        }
    }
}

async fn tls(
    port: u16,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Identifiers in the ADT identity map: each applied A01 here adds its own.
async fn identifiers(h: &Harness) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM adt_identifiers")
        .fetch_one(h.store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_over_tls_both_ways_with_a_client_allow_list() {
    let hospital = Pki::new("hospital test CA");
    let stranger = Pki::new("other test CA");
    let server = hospital.server(&["localhost"]);
    let kis = hospital.client("kis-adt");
    let unlisted = hospital.client("other-system");
    let mut h = Harness::new(None, None).await;
    let dir = h.dir.path().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    h.add_config(&format!(
        "[adt]\nenabled = true\nqueue = \"t.{run}.adt\"\nack_queue = \"t.{run}.adt.acks\"\n\
         mllp_listen = \"127.0.0.1:{port}\"\nmllp_max_connections = 1\nmllp_idle_timeout = \"2s\"\n\
         [adt.mllp_tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nclient_ca_file = \"{ca}\"\n\
         allowed_clients = [\"{allowed}\"]\n\
         [adt.patient_authorities]\nKIS = \"{PATIENT_SYSTEM}\"\n[adt.case_authorities]\nKIS = \"{CASE_SYSTEM}\"\n",
        run = h.run,
        cert = write(&dir, "mllp.pem", &server.pem).display(),
        key = write(&dir, "mllp.key", &server.key).display(),
        ca = write(&dir, "clients-ca.pem", &hospital.ca_pem()).display(),
        allowed = kis.fingerprint.to_uppercase(),
    ));
    let worker = h.start_worker();
    wait_until(Duration::from_secs(20), "MLLP listener", || async move {
        TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;

    // The listed client: applied and acknowledged over TLS.
    let listed = connector(&hospital.ca_pem(), Some(&kis));
    let mut first = tls(port, &listed).await.unwrap();
    let ack = exchange(&mut first, &a01(&h, "listed")).await.expect("ACK");
    assert!(
        ack.contains(&format!("MSA|AA|MSG-{}-listed", h.run)),
        "{ack}"
    );
    let applied = identifiers(&h).await;

    // One connection at a time: a second one is not served while the
    // first is open, and is once it closed.
    let waiting = tokio::time::timeout(Duration::from_millis(800), tls(port, &listed)).await;
    assert!(
        waiting.is_err(),
        "a second connection was served beyond the cap"
    );
    drop(first);
    let mut second = tokio::time::timeout(Duration::from_secs(10), tls(port, &listed))
        .await
        .expect("served after the first closed")
        .unwrap();
    // Idle past mllp_idle_timeout: the listener closes it.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(10), second.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection kept open: {closed:?}"
    );
    drop(second);

    // Refused: a certificate of the CA that is not listed, one of another
    // CA, none at all, and plaintext. Nothing is applied.
    for (name, attempt) in [
        (
            "unlisted",
            Some(connector(&hospital.ca_pem(), Some(&unlisted))),
        ),
        (
            "stranger",
            Some(connector(
                &hospital.ca_pem(),
                Some(&stranger.client("kis-adt")),
            )),
        ),
        ("anonymous", Some(connector(&hospital.ca_pem(), None))),
        ("plaintext", None),
    ] {
        let answer = match attempt {
            Some(c) => match tls(port, &c).await {
                Ok(mut s) => exchange(&mut s, &a01(&h, name)).await,
                Err(_) => None,
            },
            None => {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                exchange(&mut s, &a01(&h, name)).await
            }
        };
        assert_eq!(answer, None, "{name} was answered");
    }
    assert_eq!(identifiers(&h).await, applied);

    // The sender side (kis.mllp with TLS) against this listener: the
    // listener's certificate is checked, ours is presented.
    let sender = |ca: &str, client: &Leaf| MllpConfig {
        address: format!("localhost:{port}"),
        ack_timeout: Duration::from_secs(10),
        tls: Some(MllpClientTls {
            ca_file: write(&dir, "kis-ca.pem", ca),
            client_cert_file: Some(write(&dir, "sender.pem", &client.pem)),
            client_key_file: Some(write(&dir, "sender.key", &client.key)),
            server_name: None,
        }),
        ..MllpConfig::default()
    };
    let control = format!("MSG-{}-sent", h.run);
    let sent = chartbridge::push::mllp::send(
        &sender(&hospital.ca_pem(), &kis),
        &a01(&h, "sent"),
        &control,
    )
    .await
    .unwrap();
    assert_eq!(
        (sent.code.as_str(), sent.control_id.as_str()),
        ("AA", control.as_str())
    );
    // A listener whose certificate is not of the configured CA, or that
    // does not accept our certificate: no exchange.
    let e =
        chartbridge::push::mllp::send(&sender(&stranger.ca_pem(), &kis), &a01(&h, "x"), "x").await;
    assert!(e.is_err());
    let e =
        chartbridge::push::mllp::send(&sender(&hospital.ca_pem(), &unlisted), &a01(&h, "y"), "y")
            .await;
    assert!(e.is_err());
    assert!(identifiers(&h).await > applied);
    worker.stop().await;
}

fn config(extra: &str) -> Result<Config, String> {
    let text = format!("[broker]\nurl = \"amqp://127.0.0.1\"\n[store]\nkey_file = \"k\"\n{extra}");
    Config::from_parts(Path::new("t.toml"), &text, []).map_err(|e| e.to_string())
}

#[test]
fn plaintext_to_another_host_is_refused_unless_allowed() {
    let kis = |url: &str, more: &str| config(&format!("[kis]\nbase_url = \"{url}\"\n{more}"));
    // KIS (FHIR base and token endpoint).
    let e = kis("http://kis.hospital.invalid/fhir", "").unwrap_err();
    assert!(
        e.contains("kis.base_url") && e.contains("allow_plaintext"),
        "{e}"
    );
    assert!(kis("https://kis.hospital.invalid/fhir", "").is_ok());
    assert!(kis("http://127.0.0.1:8090", "").is_ok());
    assert!(
        kis(
            "http://kis.hospital.invalid/fhir",
            "allow_plaintext = true\n"
        )
        .is_ok()
    );
    let e = kis(
        "https://kis.hospital.invalid/fhir",
        "[kis.auth]\nkind = \"client_credentials\"\ntoken_url = \"http://idp.hospital.invalid/token\"\n\
         client_id = \"cb\"\nclient_secret = \"s\"\n",
    )
    .unwrap_err();
    assert!(e.contains("kis.auth.token_url"), "{e}");
    // MLLP out (MDM) and in (ADT).
    let mdm = "[kis]\nbase_url = \"https://kis.hospital.invalid\"\noutput = \"hl7v2_mdm\"\n[kis.mllp]\naddress = \"kis.hospital.invalid:2575\"\n";
    assert!(config(mdm).unwrap_err().contains("kis.mllp.address"));
    assert!(config(&format!("{mdm}allow_plaintext = true\n")).is_ok());
    assert!(config(&format!("{mdm}[kis.mllp.tls]\nca_file = \"ca.pem\"\n")).is_ok());
    let adt = "[kis]\nbase_url = \"https://kis.hospital.invalid\"\n[adt]\nenabled = true\nmllp_listen = \"0.0.0.0:2575\"\n";
    assert!(config(adt).unwrap_err().contains("adt.mllp_listen"));
    assert!(config(&format!("{adt}mllp_allow_plaintext = true\n")).is_ok());
    // The broker.
    let amqp = |url: &str, more: &str| {
        Config::from_parts(
            Path::new("t.toml"),
            &format!(
                "[broker]\nurl = \"{url}\"\n{more}[store]\nkey_file = \"k\"\n[kis]\nbase_url = \"https://kis.hospital.invalid\"\n"
            ),
            [],
        )
        .map_err(|e| e.to_string())
    };
    assert!(
        amqp("amqp://cb@mq.hospital.invalid/%2f", "")
            .unwrap_err()
            .contains("broker.url")
    );
    assert!(
        amqp(
            "amqp://cb@mq.hospital.invalid/%2f",
            "allow_plaintext = true\n"
        )
        .is_ok()
    );
    assert!(
        amqp(
            "amqps://mq.hospital.invalid/%2f?auth_mechanism=external",
            ""
        )
        .is_ok()
    );
}
