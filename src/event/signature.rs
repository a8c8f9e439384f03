//! `X-Hub-Signature-256` of WhatsApp Business webhooks: `sha256=` and the
//! hex HMAC-SHA256 of the raw request body under the Meta app secret. The
//! gateway forwards the header as the AMQP header `x-hub-signature-256`
//! with the raw body as the payload.

use hmac::{KeyInit, Mac};

use super::{DecodeError, DecodeErrorCode};

/// AMQP header the gateway forwards the webhook's signature in.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(key: &[u8], message: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    mac(key, message).finalize().into_bytes().into()
}

/// Checks `header` (`sha256=<hex>`) against `body` in constant time.
pub fn verify(app_secret: &[u8], body: &[u8], header: &str) -> Result<(), DecodeError> {
    let bad = |detail: &str| DecodeError::new(DecodeErrorCode::BadSignature, detail);
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(|| bad("x-hub-signature-256: not sha256=<hex>"))?;
    let given = hex::decode(hex_sig).map_err(|_| bad("x-hub-signature-256: not hex"))?;
    if given.len() != 32 {
        return Err(bad("x-hub-signature-256: wrong length"));
    }
    mac(app_secret, body)
        .verify_slice(&given)
        .map_err(|_| bad("x-hub-signature-256: does not match the body"))
}

/// The header value a sender computes for `body`.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(app_secret, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_vectors() {
        // RFC 4231 test case 2 and case 6 (key longer than a block).
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let header = sign(b"app-secret", body);
        assert!(verify(b"app-secret", body, &header).is_ok());
        let e = verify(b"other", body, &header).unwrap_err();
        assert_eq!(e.code, DecodeErrorCode::BadSignature);
        assert!(verify(b"app-secret", b"{}", &header).is_err());
        assert!(verify(b"app-secret", body, "sha1=00").is_err());
        assert!(verify(b"app-secret", body, "sha256=zz").is_err());
    }
}
