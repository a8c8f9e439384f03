//! Transport security shared by the connections: which hosts may be
//! reached without TLS, PEM loading, and the rustls configurations of the
//! MLLP listener (server with a client-certificate allow-list) and of
//! MLLP peers (client). docs/security.md.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: cannot read {path}")]
    Read { what: &'static str, path: String },
    #[error("{what}: {path} holds no usable PEM {kind}")]
    Pem {
        what: &'static str,
        path: String,
        kind: &'static str,
    },
    #[error("{0}: {1}")]
    Rustls(&'static str, rustls::Error),
    #[error("{0}: invalid client certificate verifier: {1}")]
    Verifier(&'static str, String),
    #[error("{0}: not a valid TLS server name")]
    ServerName(&'static str),
}

/// Whether `host` (a URL host, `host:port`, or a socket path) is this
/// machine: `localhost`, a loopback address (127.0.0.0/8, `::1`), a Unix
/// socket path, or empty (the client library's local default).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    if host.is_empty() || host.starts_with('/') {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .map(|(h, _)| h)
        .unwrap_or_else(|| match host.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.parse::<u16>().is_ok() => h,
            _ => host,
        });
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a plaintext connection to another host unless it was allowed
/// explicitly (`allow_plaintext = true` of that connection).
pub fn check_plaintext(setting: &str, host: &str, allowed: bool) -> Result<(), String> {
    if allowed || is_loopback_host(host) {
        return Ok(());
    }
    Err(format!(
        "{setting}: plaintext to a host other than loopback; use TLS or set allow_plaintext = true"
    ))
}

/// SHA-256 of a certificate's DER, lower-case hex: how client
/// certificates are named in allow-lists (`openssl x509 -noout
/// -fingerprint -sha256`, colons removed).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// Normalises a configured fingerprint (colons, case).
pub fn normalise_fingerprint(text: &str) -> String {
    text.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Certificates of a PEM file.
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|_| TlsError::Read {
        what,
        path: shown.clone(),
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: shown,
            kind: "certificate",
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|_| TlsError::Read {
        what,
        path: shown.clone(),
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Pem {
        what,
        path: shown,
        kind: "private key",
    })
}

fn roots(what: &'static str, ca_file: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(what, ca_file)? {
        roots.add(cert).map_err(|e| TlsError::Rustls(what, e))?;
    }
    Ok(roots)
}

/// A server that requires a client certificate chaining to `client_ca`;
/// which certificates are let in is decided after the handshake by
/// fingerprint ([`fingerprint`]).
pub fn server_config(
    what: &'static str,
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder(Arc::new(roots(what, client_ca_file)?))
            .build()
            .map_err(|e| TlsError::Verifier(what, e.to_string()))?;
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(what, cert_file)?, load_key(what, key_file)?)
        .map_err(|e| TlsError::Rustls(what, e))?;
    Ok(Arc::new(config))
}

/// A client that trusts only `ca_file` and presents a certificate when
/// one is given.
pub fn client_config(
    what: &'static str,
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots(what, ca_file)?);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(what, cert)?, load_key(what, key)?)
            .map_err(|e| TlsError::Rustls(what, e))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name a client checks the server certificate against: `server_name`
/// if set, else the host of `address` (`host:port`).
pub fn server_name(
    what: &'static str,
    address: &str,
    server_name: Option<&str>,
) -> Result<ServerName<'static>, TlsError> {
    let host = server_name.unwrap_or_else(|| {
        address
            .rsplit_once(':')
            .map_or(address, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
    });
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for local in [
            "localhost",
            "LOCALHOST:5432",
            "127.0.0.1",
            "127.0.0.1:5672",
            "127.9.9.9",
            "::1",
            "[::1]:2575",
            "",
            "/var/run/postgresql",
        ] {
            assert!(is_loopback_host(local), "{local}");
        }
        for remote in [
            "kis.example",
            "kis.example:443",
            "10.0.0.5",
            "[2001:db8::1]:5671",
            "localhost.example",
            "0.0.0.0:2575",
        ] {
            assert!(!is_loopback_host(remote), "{remote}");
        }
        assert!(check_plaintext("kis.base_url", "kis.example", false).is_err());
        assert!(check_plaintext("kis.base_url", "kis.example", true).is_ok());
        assert!(check_plaintext("kis.base_url", "127.0.0.1", false).is_ok());
    }

    #[test]
    fn fingerprints_normalise() {
        assert_eq!(normalise_fingerprint("AB:cd:01"), "abcd01");
    }
}
