use super::*;

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
    assert_eq!(form_encode("a b/c:d*~"), "a+b%2Fc%3Ad*%7E");
}
