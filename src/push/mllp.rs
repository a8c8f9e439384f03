//! HL7 v2 over MLLP (minimal lower layer protocol) to a v2-only KIS:
//! `0x0B message 0x1C 0x0D`, one message per exchange, the ACK read back on
//! the same connection. AA confirms; CA (a commit acknowledgment, not the
//! application's) and AE/AR/CE/CR reject (quarantine with
//! the MSA code); no answer, a broken frame or a foreign control id is
//! transient (retried with backoff, the same control id and unique
//! document number each time so the receiver can drop duplicates).
//! With `[kis.mllp.tls]` the exchange runs over TLS: the peer's
//! certificate must chain to `ca_file` and name the peer; a client
//! certificate is presented when configured.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PushError;
use crate::hl7::mllp::{frame, take_frame};
use crate::map::mdm::MdmSettings;
use crate::transport::{self, TlsError};

/// Largest ACK accepted.
const MAX_ACK: usize = 64 * 1024;

pub use super::config::MllpConfig;

impl MllpConfig {
    /// The TLS connector and server name of `[kis.mllp.tls]`, if set.
    pub fn connector(
        &self,
    ) -> Result<
        Option<(
            tokio_rustls::TlsConnector,
            rustls::pki_types::ServerName<'static>,
        )>,
        TlsError,
    > {
        const WHAT: &str = "kis.mllp.tls";
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let identity = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let config = transport::client_config(WHAT, &tls.ca_file, identity)?;
        let name = transport::server_name(WHAT, &self.address, tls.server_name.as_deref())?;
        Ok(Some((config.into(), name)))
    }

    pub fn mdm_settings(&self) -> MdmSettings {
        MdmSettings {
            sending_application: self.sending_application.clone(),
            sending_facility: self.sending_facility.clone(),
            receiving_application: self.receiving_application.clone(),
            receiving_facility: self.receiving_facility.clone(),
            assigning_authority: self.assigning_authority.clone(),
        }
    }
}

/// The acknowledgment code of MSA-1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub code: String,
    pub control_id: String,
}

/// Reads MSA-1 and MSA-2 from an ACK.
pub fn parse_ack(ack: &str) -> Option<Ack> {
    let msh = ack.split('\r').find(|s| s.starts_with("MSH"))?;
    let sep = msh.chars().nth(3)?;
    let msa = ack.split(['\r', '\n']).find(|s| s.starts_with("MSA"))?;
    let fields: Vec<&str> = msa.split(sep).collect();
    Some(Ack {
        code: fields.get(1)?.trim().to_owned(),
        control_id: fields.get(2).map_or("", |s| s.trim()).to_owned(),
    })
}

fn transient(detail: &str) -> PushError {
    PushError::Transient {
        detail: format!("MLLP: {detail}"),
        retry_after: None,
    }
}

/// Sends one message and waits for its ACK.
pub async fn send(config: &MllpConfig, message: &str, control_id: &str) -> Result<Ack, PushError> {
    let connector = config.connector().map_err(|e| PushError::Transient {
        detail: format!("MLLP: {e}"),
        retry_after: None,
    })?;
    let exchange = async {
        let tcp = TcpStream::connect(&config.address)
            .await
            .map_err(|_| transient("connection failed"))?;
        match connector {
            None => exchange(tcp, message).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|_| transient("TLS handshake failed"))?;
                exchange(tls, message).await
            }
        }
    };
    let ack = tokio::time::timeout(config.ack_timeout, exchange)
        .await
        .map_err(|_| transient("no ACK in time"))??;
    if ack.control_id != control_id {
        return Err(transient("ACK for another message"));
    }
    // The MDM is sent in the original acknowledgment mode (MSH-15/16
    // empty): AA is the receiving application's word that it filed the
    // document. A commit acknowledgment (CA, enhanced mode) only says the
    // message was stored for processing (v2.5 chapter 2.9.3), not that it
    // was filed: never proof of an archive. Held for a person, never
    // resent (the document may still be filed).
    match ack.code.as_str() {
        "AA" => Ok(ack),
        "CA" | "AE" | "AR" | "CE" | "CR" => Err(PushError::Rejected {
            status: 0,
            outcome: Some(serde_json::json!({"hl7v2_ack": ack.code})),
        }),
        _ => Err(transient("unknown acknowledgment code")),
    }
}

/// Writes one framed message on `stream` and reads the framed ACK.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    message: &str,
) -> Result<Ack, PushError> {
    stream
        .write_all(&frame(message.as_bytes()))
        .await
        .map_err(|_| transient("send failed"))?;
    stream.flush().await.map_err(|_| transient("send failed"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let body = loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| transient("receive failed"))?;
        if n == 0 {
            return Err(transient("connection closed before the ACK"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(body) = take_frame(&mut buf) {
            break body;
        }
        if buf.len() > MAX_ACK {
            return Err(transient("ACK too large"));
        }
    };
    let text = std::str::from_utf8(&body).map_err(|_| transient("ACK not UTF-8"))?;
    parse_ack(text).ok_or_else(|| transient("no MSA segment"))
}

/// Renders `tx` as MDM^T02 and sends it; the archive is `MDM/{control id}`.
/// The control id derives from the message key: a retry repeats it.
pub async fn send_mdm(
    config: &MllpConfig,
    tx: &crate::map::Transaction,
    document_type: Option<&crate::map::DocumentType>,
    key: &crate::event::MessageKey,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<super::Confirmed, PushError> {
    let control_id = crate::map::stable_id(key, "MDM").simple().to_string()[..20].to_owned();
    let message =
        crate::map::mdm::mdm_t02(tx, document_type, &config.mdm_settings(), &control_id, now)
            .map_err(|_| PushError::Incomplete("cannot render MDM^T02".into()))?;
    send(config, &message, &control_id).await?;
    Ok(super::Confirmed::at(vec![format!("MDM/{control_id}")]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_codes() {
        let ack = "MSH|^~\\&|KIS|KIS|CHARTBRIDGE|CHARTBRIDGE|20261128||ACK^T02^ACK|9|P|2.5\rMSA|AE|ctl-1\r";
        assert_eq!(
            parse_ack(ack),
            Some(Ack {
                code: "AE".into(),
                control_id: "ctl-1".into()
            })
        );
        assert_eq!(parse_ack("MSH|^~\\&|X\r"), None);
    }
}
