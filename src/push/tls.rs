//! Mutual TLS towards the KIS (DSK I.4, II.1): a client certificate and key
//! (PEM) and the CA bundle that the KIS's server certificate must chain to.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SetupError;

/// `[kis.tls]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain presented to the KIS (leaf first).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1) of the client certificate.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// PEM CA bundle; when set, only these CAs are trusted for the KIS and
    /// its token endpoint (the system roots are not).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err("kis.tls.client_cert_file and kis.tls.client_key_file go together".into());
        }
        Ok(())
    }

    /// Applies the client identity and CA bundle to a reqwest builder.
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, SetupError> {
        if let Some(ca) = &self.ca_file {
            let pem =
                std::fs::read(ca).map_err(|_| SetupError::Tls("kis.tls.ca_file cannot be read"))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| SetupError::Tls("kis.tls.ca_file is not a PEM bundle"))?;
            if certs.is_empty() {
                return Err(SetupError::Tls("kis.tls.ca_file holds no certificate"));
            }
            builder = builder.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&self.client_cert_file, &self.client_key_file) {
            let mut pem = std::fs::read(key)
                .map_err(|_| SetupError::Tls("kis.tls.client_key_file cannot be read"))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(cert)
                    .map_err(|_| SetupError::Tls("kis.tls.client_cert_file cannot be read"))?,
            );
            let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
                SetupError::Tls("kis.tls client certificate or key is not valid PEM")
            })?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }
}
