//! Mutual TLS towards the KIS (DSK I.4, II.1): the real FHIR server behind a
//! TLS-terminating proxy that requires a client certificate from the
//! hospital CA. Certificates are made per test with rcgen.

mod common;

use std::path::Path;
use std::sync::Arc;

use chartbridge::config::KisConfig;
use chartbridge::push::Kis;
use chartbridge::push::tls::TlsConfig;
use common::fhir_url;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate and its key (PEM) issued by `issuer`.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, KeyPair) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key)
}

/// Terminates TLS (client certificate from `client_ca` required) and
/// forwards the bytes to the FHIR server. Returns the https base URL.
async fn mtls_proxy(
    server_cert: CertificateDer<'static>,
    server_key: &KeyPair,
    client_ca: CertificateDer<'static>,
) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let upstream = fhir_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                // A handshake without an acceptable client certificate ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut up = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    url
}

fn kis_config(base: &str, tls: TlsConfig) -> KisConfig {
    let text = format!(
        "[broker]\nurl = \"amqp://127.0.0.1\"\n[store]\nkey_file = \"k\"\n[kis]\nbase_url = \"{base}\"\n"
    );
    let mut c = chartbridge::config::Config::from_parts(Path::new("t.toml"), &text, [])
        .unwrap()
        .kis;
    c.tls = tls;
    c
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn ii1_mutual_tls_push_needs_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let hospital = ca("hospital test CA");
    let stranger = ca("other test CA");
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "kis");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_cert = p.signed_by(&server_key, &hospital).unwrap();
    let url = mtls_proxy(
        server_cert.der().clone(),
        &server_key,
        hospital.der().clone(),
    )
    .await;

    let ca_file = write(dir.path(), "ca.pem", &hospital.pem());
    let (client_pem, client_key) = leaf(
        &hospital,
        &["chartbridge"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (foreign_pem, foreign_key) = leaf(
        &stranger,
        &["chartbridge"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let tls = |cert: Option<(&str, &KeyPair)>| TlsConfig {
        ca_file: Some(ca_file.clone()),
        client_cert_file: cert.map(|(pem, _)| write(dir.path(), "c.pem", pem)),
        client_key_file: cert.map(|(_, k)| write(dir.path(), "c.key", &k.serialize_pem())),
    };
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:5b0b7b7e-8b8e-4f1e-9d4a-1c2a3b4c5d6e",
        "resource": {"resourceType": "Patient", "identifier": [{
            "system": "urn:chartbridge:test:mtls", "value": uuid::Uuid::new_v4().to_string()}]},
        "request": {"method": "POST", "url": "Patient"}}]});

    // Without a client certificate the handshake fails: nothing is pushed.
    let without = Kis::new(&kis_config(&url, tls(None))).unwrap();
    let err = without.transaction(&bundle).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");

    // A certificate from another CA is refused as well.
    let foreign = Kis::new(&kis_config(&url, tls(Some((&foreign_pem, &foreign_key))))).unwrap();
    assert!(foreign.transaction(&bundle).await.is_err());

    // The system roots do not know the hospital CA: without ca_file the
    // server certificate is not trusted.
    let mut no_ca = tls(Some((&client_pem, &client_key)));
    no_ca.ca_file = None;
    let untrusting = Kis::new(&kis_config(&url, no_ca)).unwrap();
    assert!(untrusting.read("metadata").await.is_err());

    // With the hospital's client certificate and CA bundle the push succeeds.
    let with = Kis::new(&kis_config(&url, tls(Some((&client_pem, &client_key))))).unwrap();
    let confirmed = with.transaction(&bundle).await.unwrap();
    assert!(confirmed.locations[0].starts_with("Patient/"));
    assert!(with.read(&confirmed.locations[0]).await.is_ok());
}

#[test]
fn ii1_tls_config_rejects_half_an_identity_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let half = TlsConfig {
        client_cert_file: Some(dir.path().join("c.pem")),
        ..TlsConfig::default()
    };
    assert!(half.validate().is_err());
    let junk = write(dir.path(), "junk.pem", "not a certificate");
    let bad_ca = TlsConfig {
        ca_file: Some(junk),
        ..TlsConfig::default()
    };
    let err = Kis::new(&kis_config("https://kis.invalid", bad_ca)).unwrap_err();
    assert!(err.to_string().contains("kis.tls.ca_file"), "{err}");
}
