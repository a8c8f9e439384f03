use super::*;
use crate::event::MessageKey;

fn key(id: &str) -> MessageKey {
    MessageKey {
        source: "whatsapp".into(),
        message_id: id.into(),
    }
}

#[test]
fn derived_keys_are_stable_and_independent() {
    let a = Sealer::from_key([7; 32]);
    let b = Sealer::from_key([8; 32]);
    assert_eq!(a.derive("x/v1"), Sealer::from_key([7; 32]).derive("x/v1"));
    assert_ne!(a.derive("x/v1"), a.derive("y/v1"));
    assert_ne!(a.derive("x/v1"), b.derive("x/v1"));
    // Neither the key itself nor the pepper.
    assert_ne!(a.derive("x/v1"), [7; 32]);
    assert_ne!(&a.derive("x/v1"), a.ring.pepper.as_ref());
    // The contract of version 1: HKDF-SHA256, salt chartbridge/derive/v1.
    let mut expected = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"chartbridge/derive/v1"), &[7; 32])
        .expand(b"x/v1", &mut expected)
        .unwrap();
    assert_eq!(a.derive("x/v1"), expected);
    // Reserved infos do not reach the sealing or token keys.
    assert_ne!(&a.derive(INFO_TOKEN), a.ring.pepper.as_ref());
}

#[test]
fn seal_round_trip_and_tamper() {
    let s = Sealer::from_key([7; 32]);
    let k = key("wamid.1");
    let place = Place::message("quarantine", "sealed_event", &k.source, &k.message_id);
    let sealed = s.seal(b"Befund: Wunde reizlos").at(&place);
    assert_eq!(sealed[0], 2);
    assert_eq!(Sealer::key_id_of(&sealed), Some(s.current_key_id()));
    assert!(!sealed.windows(5).any(|w| w == b"Wunde"));
    assert_eq!(s.open(&place, &sealed).unwrap(), b"Befund: Wunde reizlos");
    let mut bad = sealed.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(matches!(s.open(&place, &bad), Err(SealError::Open { .. })));
    assert!(matches!(
        Sealer::from_key([8; 32]).open(&place, &sealed),
        Err(SealError::UnknownKey { .. })
    ));
}

#[test]
fn a_blob_opens_only_at_its_place() {
    let s = Sealer::from_key([7; 32]);
    let (a, b) = (key("wamid.A"), key("wamid.B"));
    let sealed = s.seal(b"x").at(&Place::message(
        "quarantine",
        "sealed_event",
        &a.source,
        &a.message_id,
    ));
    for other in [
        Place::message("quarantine", "sealed_event", &b.source, &b.message_id),
        Place::message("quarantine", "sealed_detail", &a.source, &a.message_id),
        Place::message("held_parts", "sealed_event", &a.source, &a.message_id),
    ] {
        let err = s.open(&other, &sealed).unwrap_err().to_string();
        assert!(err.contains(&other.describe(&s)), "{err}");
        assert!(!err.contains("wamid"), "{err}");
    }
    let err = s
        .open(
            &Place::message("quarantine", "sealed_event", &b.source, &b.message_id),
            &sealed,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("sealed data in quarantine.sealed_event of whatsapp item "),
        "{err}"
    );
}

#[test]
fn version_1_blobs_open_with_the_version_1_key() {
    let raw = [9u8; 32];
    // A blob as version 1 sealed it: 0x01 || nonce || ciphertext, raw key.
    let nonce = [5u8; NONCE_LEN];
    let mut v1 = vec![V1];
    v1.extend_from_slice(&nonce);
    v1.extend(
        ChaCha20Poly1305::new(Key::from_slice(&raw))
            .encrypt(Nonce::from_slice(&nonce), b"old".as_ref())
            .unwrap(),
    );
    let k = key("m");
    let place = Place::message("quarantine", "sealed_event", &k.source, &k.message_id);
    let legacy = Sealer::from_key(raw);
    assert_eq!(legacy.open(&place, &v1).unwrap(), b"old");
    assert_eq!(Sealer::key_id_of(&v1), None);
    // After a rotation the file still opens them, and tokens stay the same.
    let rotated = Sealer::from_file(&KeyFile {
        tokens: TokenScheme::V1Pepper,
        keys: vec![raw, [10; 32]],
    })
    .unwrap();
    assert_eq!(rotated.open(&place, &v1).unwrap(), b"old");
    assert_eq!(rotated.token(&["a"]), legacy.token(&["a"]));
    assert_eq!(rotated.derive("x"), legacy.derive("x"));
    assert_ne!(rotated.current_key_id(), legacy.current_key_id());
    let legacy_blob = legacy.seal(b"v2 under the old key").at(&place);
    assert_eq!(
        rotated.open(&place, &legacy_blob).unwrap(),
        b"v2 under the old key"
    );
    // A keyring created as such has no version-1 key.
    let fresh = Sealer::from_file(&KeyFile {
        tokens: TokenScheme::Hkdf,
        keys: vec![raw],
    })
    .unwrap();
    assert!(matches!(
        fresh.open(&place, &v1),
        Err(SealError::Format { .. })
    ));
    assert_ne!(fresh.token(&["a"]), legacy.token(&["a"]));
}

#[test]
fn the_version_1_pepper_is_kept_for_version_1_files() {
    let expected: [u8; 32] = Sha256::new()
        .chain_update(b"chartbridge/pepper/v1\0")
        .chain_update([7u8; 32])
        .finalize()
        .into();
    let mut h = Sha256::new().chain_update(expected);
    h.update(1u64.to_be_bytes());
    h.update(b"a");
    assert_eq!(
        Sealer::from_key([7; 32]).token(&["a"]),
        hex::encode(h.finalize())
    );
}

#[test]
fn key_file_is_created_once_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    Sealer::generate_key_file(&path).unwrap();
    assert!(Sealer::generate_key_file(&path).is_err());
    let a = Sealer::load(&path).unwrap();
    assert_eq!(
        a.token(&["whatsapp", "4917"]),
        Sealer::load(&path).unwrap().token(&["whatsapp", "4917"])
    );
    assert_ne!(a.token(&["whatsapp", "4917"]), a.token(&["whatsapp4917"]));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.lines().any(|l| l.starts_with("root ")), "{text}");
}

#[cfg(unix)]
#[test]
fn key_files_readable_by_group_or_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    Sealer::generate_key_file(&path).unwrap();
    for mode in [0o640, 0o604, 0o644, 0o660, 0o602] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = Sealer::load(&path).unwrap_err();
        assert!(matches!(err, SealError::Permissions { .. }), "{mode:o}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("mode {mode:03o}")) && text.contains("chmod 600"),
            "{text}"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(Sealer::load(&path).is_ok());
}

#[test]
fn version_1_key_files_read_as_a_version_1_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let text = format!(
        "{}\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32])
    );
    let file = KeyFile::parse(&text, &path).unwrap();
    assert_eq!(file.tokens, TokenScheme::V1Pepper);
    let rendered = file.render();
    assert!(rendered.contains("root-v1 "), "{rendered}");
    let again = KeyFile::parse(&rendered, &path).unwrap();
    assert_eq!(again.keys, file.keys);
    assert_eq!(again.tokens, TokenScheme::V1Pepper);
    for bad in ["key AAAA\n", "root x y\n", "root AAAA\nroot AAAA\n", ""] {
        assert!(KeyFile::parse(bad, &path).is_err(), "{bad:?}");
    }
}
