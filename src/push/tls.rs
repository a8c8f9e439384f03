//! Mutual TLS towards the KIS (DSK I.4, II.1): a client certificate and key
//! (PEM) and the CA bundle that the KIS's server certificate must chain to.

use super::SetupError;
pub use super::config::TlsConfig;

impl TlsConfig {
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
