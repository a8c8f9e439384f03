use super::*;
use serde_json::json;

#[test]
fn retryability_in_one_place() {
    for (code, want) in [
        (200, Retry::Success),
        (201, Retry::Success),
        (408, Retry::Transient),
        (429, Retry::Transient),
        (500, Retry::Transient),
        (503, Retry::Transient),
        (400, Retry::Permanent),
        (404, Retry::Permanent),
        (409, Retry::Permanent),
        (412, Retry::Permanent),
        (422, Retry::Permanent),
    ] {
        assert_eq!(
            Retry::of_status(StatusCode::from_u16(code).unwrap()),
            want,
            "{code}"
        );
    }
}

#[test]
fn locations() {
    let base = "http://kis/fhir";
    assert_eq!(
        type_and_id("http://kis/fhir/Communication/7/_history/2", base).as_deref(),
        Some("Communication/7")
    );
    assert_eq!(
        type_and_id("Binary/ab-1", base).as_deref(),
        Some("Binary/ab-1")
    );
    assert_eq!(type_and_id("nonsense", base), None);
}

#[test]
fn transaction_response_must_confirm_every_entry() {
    let req = json!({"entry": [{}, {}]});
    let ok = json!({"type": "transaction-response", "entry": [
            {"response": {"status": "201 Created", "location": "Communication/1/_history/1"}},
            {"response": {"status": "200 OK", "location": "Provenance/p/_history/2"}}]});
    assert_eq!(
        confirmed(&req, &ok, "x").unwrap().locations,
        vec!["Communication/1", "Provenance/p"]
    );
    let short = json!({"type": "transaction-response", "entry": [
            {"response": {"status": "201 Created", "location": "Communication/1"}}]});
    assert!(confirmed(&req, &short, "x").is_err());
    let failed = json!({"type": "transaction-response", "entry": [
            {"response": {"status": "201 Created", "location": "Communication/1"}},
            {"response": {"status": "400 Bad Request"}}]});
    assert!(confirmed(&req, &failed, "x").is_err());
    // An update answered `200 OK` without a location: the PUT's own
    // `Type/id`; a conditional create without one is not confirmed.
    let put = json!({"entry": [
        {"request": {"method": "POST", "url": "Communication", "ifNoneExist": "identifier=s|v"}},
        {"request": {"method": "PUT", "url": "Provenance/p"}}]});
    let bare = json!({"type": "transaction-response", "entry": [
            {"response": {"status": "201 Created", "location": "Communication/1"}},
            {"response": {"status": "200 OK", "etag": "W/\"3\""}}]});
    assert_eq!(
        confirmed(&put, &bare, "x").unwrap().locations,
        vec!["Communication/1", "Provenance/p"]
    );
    let bare_create = json!({"type": "transaction-response", "entry": [
            {"response": {"status": "200 OK"}},
            {"response": {"status": "200 OK"}}]});
    assert!(confirmed(&put, &bare_create, "x").is_err());
}

#[test]
fn references_compare_by_type_and_id() {
    for same in [
        "Patient/7",
        "https://kis.example/fhir/Patient/7",
        "Patient/7/_history/2",
    ] {
        assert_eq!(
            type_and_id(same, "").as_deref(),
            Some("Patient/7"),
            "{same}"
        );
    }
    assert_eq!(type_and_id("7", ""), None);
    assert_eq!(type_and_id("urn:uuid:1234", ""), None);
}
