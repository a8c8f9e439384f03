use super::*;

#[test]
fn ecdsa_der_becomes_fixed_width() {
    // r = 0x00ff (leading zero for sign), s = 0x01
    let der = [0x30, 0x07, 0x02, 0x02, 0x00, 0xff, 0x02, 0x01, 0x01];
    let raw = ecdsa_der_to_fixed(&der, 4).unwrap();
    assert_eq!(raw, vec![0, 0, 0, 0xff, 0, 0, 0, 1]);
    assert!(ecdsa_der_to_fixed(&der[..8], 4).is_none());
    assert!(ecdsa_der_to_fixed(&[0x31, 0x00], 4).is_none());
}

#[test]
fn iv2_auth_kinds_need_their_keys() {
    let parse = |keys: &str| {
        toml::from_str::<AuthConfig>(&format!(
            "token_url = \"https://as.invalid/token\"\nclient_id = \"cb\"\n{keys}"
        ))
    };
    let err = parse("kind = \"smart_backend\"").unwrap_err();
    assert!(err.to_string().contains("private_key_file"), "{err}");
    let smart = parse("kind = \"smart_backend\"\nprivate_key_file = \"k.pem\"").unwrap();
    assert!(matches!(smart, AuthConfig::SmartBackend { .. }));
    let err = parse("kind = \"client_credentials\"").unwrap_err();
    assert!(err.to_string().contains("client_secret"), "{err}");
    let err = toml::from_str::<AuthConfig>("kind = \"bearer\"").unwrap_err();
    assert!(err.to_string().contains("token"), "{err}");
}

#[test]
fn form_encoding() {
    assert_eq!(form_encode("a b/c:d"), "a+b%2Fc%3Ad");
}
