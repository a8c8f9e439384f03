use lapin::types::{AMQPValue, FieldTable, LongString};

use super::*;
use crate::auth::config::SourceIntake;

const WA_KEY: [u8; 32] = [1; 32];
const MX_KEY: [u8; 32] = [2; 32];

fn intake(default_auth: AuthPolicy, app_secret: Option<&str>) -> Intake {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = std::collections::BTreeMap::new();
    for (kid, key, source) in [("wa-1", WA_KEY, "whatsapp"), ("mx-1", MX_KEY, "matrix")] {
        use base64::Engine;
        use std::os::unix::fs::PermissionsExt;
        let file = dir.path().join(kid);
        std::fs::write(&file, base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        keys.insert(
            kid.to_owned(),
            IntakeKey {
                file,
                sources: vec![source.to_owned()],
            },
        );
    }
    let config = IntakeConfig {
        default_auth,
        sources: [(
            "whatsapp".to_owned(),
            SourceIntake {
                auth: AuthPolicy::Required,
                publishers: vec!["gw-whatsapp".into()],
            },
        )]
        .into(),
        keys,
        sign_with: Some("mx-1".into()),
    };
    Intake {
        keys: Keyring::load(&config).unwrap(),
        config,
        app_secret: app_secret.map(Secret::new),
        events_queue: "cb.events".into(),
        receipts_queue: "cb.receipts".into(),
        ingress_sources: vec!["whatsapp".into(), "matrix".into()],
        max_event_bytes: 1 << 20,
    }
}

fn headers(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(
            (*k).into(),
            AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())),
        );
    }
    t
}

fn check(
    intake: &Intake,
    payload: &[u8],
    headers: &FieldTable,
    user_id: Option<&str>,
    exchange: &str,
) -> Result<(), &'static str> {
    let envelope = Envelope {
        payload,
        headers: Some(headers),
        user_id,
        exchange,
    };
    intake.check_event(&envelope).map_err(|e| e.code.as_str())
}

fn canonical(source: &str) -> Vec<u8> {
    format!(r#"{{"schema":"chartbridge.event/v1","source":"{source}","message_id":"m1"}}"#)
        .into_bytes()
}

#[test]
fn canonical_events_need_the_gateway_signature_of_their_source() {
    let intake = intake(AuthPolicy::Required, None);
    let body = canonical("matrix");
    let none = headers(&[]);
    assert_eq!(
        check(&intake, &body, &none, None, ""),
        Err("missing_signature")
    );
    let good = signature_header("mx-1", &MX_KEY, &body);
    assert_eq!(
        check(
            &intake,
            &body,
            &headers(&[(SIGNATURE_HEADER, &good)]),
            None,
            ""
        ),
        Ok(())
    );
    // The whatsapp gateway's key cannot speak for matrix.
    let other = signature_header("wa-1", &WA_KEY, &body);
    assert_eq!(
        check(
            &intake,
            &body,
            &headers(&[(SIGNATURE_HEADER, &other)]),
            None,
            ""
        ),
        Err("bad_signature")
    );
    // A signature over other bytes.
    let moved = signature_header("mx-1", &MX_KEY, &canonical("import"));
    assert_eq!(
        check(
            &intake,
            &body,
            &headers(&[(SIGNATURE_HEADER, &moved)]),
            None,
            ""
        ),
        Err("bad_signature")
    );
    // A source without its own section falls under default_auth.
    let import = canonical("import");
    assert_eq!(
        check(&intake, &import, &none, None, ""),
        Err("missing_signature")
    );
    let open = self::intake(AuthPolicy::None, None);
    assert_eq!(check(&open, &import, &none, None, ""), Ok(()));
    // Unreadable payloads go to the decoder, which refuses them.
    assert_eq!(check(&intake, b"{not json", &none, None, ""), Ok(()));
}

#[test]
fn publishers_and_ingress_exchanges_bind_a_broker_user_to_its_source() {
    let intake = intake(AuthPolicy::Required, None);
    let body = canonical("whatsapp");
    let signed = headers(&[(SIGNATURE_HEADER, &signature_header("wa-1", &WA_KEY, &body))]);
    assert_eq!(
        check(&intake, &body, &signed, Some("gw-whatsapp"), ""),
        Ok(())
    );
    assert_eq!(
        check(&intake, &body, &signed, Some("gw-matrix"), ""),
        Err("unauthorized_publisher")
    );
    assert_eq!(
        check(&intake, &body, &signed, None, ""),
        Err("unauthorized_publisher")
    );
    assert_eq!(
        check(
            &intake,
            &body,
            &signed,
            Some("gw-whatsapp"),
            "cb.events.whatsapp"
        ),
        Ok(())
    );
    assert_eq!(
        check(
            &intake,
            &body,
            &signed,
            Some("gw-whatsapp"),
            "cb.events.matrix"
        ),
        Err("unauthorized_publisher")
    );
}

#[test]
fn whatsapp_webhooks_pass_on_meta_signature() {
    let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    let meta = crate::event::signature::sign(b"app-secret", body);
    let meta_header = headers(&[(crate::event::signature::SIGNATURE_HEADER, &meta)]);
    let with_secret = intake(AuthPolicy::Required, Some("app-secret"));
    assert_eq!(
        check(&with_secret, body, &meta_header, Some("gw-whatsapp"), ""),
        Ok(())
    );
    assert_eq!(
        check(&with_secret, body, &headers(&[]), Some("gw-whatsapp"), ""),
        Err("missing_signature")
    );
    let forged = headers(&[(
        crate::event::signature::SIGNATURE_HEADER,
        &crate::event::signature::sign(b"guess", body),
    )]);
    assert_eq!(
        check(&with_secret, body, &forged, Some("gw-whatsapp"), ""),
        Err("bad_signature")
    );
    // Without an app secret the gateway signs the webhook itself.
    let without = intake(AuthPolicy::Required, None);
    assert_eq!(
        check(&without, body, &headers(&[]), Some("gw-whatsapp"), ""),
        Err("missing_signature")
    );
    let gw = headers(&[(SIGNATURE_HEADER, &signature_header("wa-1", &WA_KEY, body))]);
    assert_eq!(check(&without, body, &gw, Some("gw-whatsapp"), ""), Ok(()));
}

#[test]
fn receipts_follow_their_deletions_source() {
    let intake = intake(AuthPolicy::Required, None);
    let body =
        br#"{"schema":"chartbridge.deletion-receipt/v1","deletion_id":"d1","status":"deleted"}"#;
    let envelope = |h: &FieldTable, user: Option<&'static str>, exchange: &'static str| {
        let h = h.clone();
        move |intake: &Intake, source: &str| {
            intake
                .check_receipt(
                    source,
                    &Envelope {
                        payload: body,
                        headers: Some(&h),
                        user_id: user,
                        exchange,
                    },
                )
                .map_err(|e| e.code.as_str())
        }
    };
    let none = headers(&[]);
    assert_eq!(
        envelope(&none, None, "")(&intake, "matrix"),
        Err("missing_signature")
    );
    let own = headers(&[(SIGNATURE_HEADER, &intake.own_signature(body).unwrap())]);
    assert_eq!(envelope(&own, None, "")(&intake, "matrix"), Ok(()));
    assert_eq!(
        envelope(&own, Some("gw-whatsapp"), "")(&intake, "whatsapp"),
        Err("bad_signature")
    );
    assert_eq!(
        envelope(&own, None, "cb.receipts.whatsapp")(&intake, "matrix"),
        Err("unauthorized_publisher")
    );
}
