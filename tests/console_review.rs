//! The console's review page in a real headless Chromium, over the real
//! RabbitMQ, FHIR server and OpenID Provider: a message for a patient the
//! KIS does not know yet is held; a user without the reviewer role sees
//! the item's reason and age but never its content or sender; a reviewer
//! sees them (audited with the OIDC subject) and releases the item, which
//! the pipeline then archives in the KIS. An operator replays a dead
//! letter from the operations page; compliance staff see the log page.

mod browser;
mod common;

use std::sync::Arc;

use chartbridge::classify::Rules;
use chartbridge::event::MessageKey;
use chartbridge::pipeline::Pipeline;
use chartbridge::store::MessageState;
use common::Harness;
use fantoccini::Locator;
use serde_json::Value;

const CONTENT: &str = "Wundkontrolle";
const SENDER: &str = "@dr.mueller:hospital.invalid";

fn event(h: &Harness, patient: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    v["message_id"] = format!("$console-{}", h.run).into();
    v["event_id"] = format!("evt-console-{}", h.run).into();
    v["case"]["patient"]["identifier"]["value"] = patient.into();
    v.as_object_mut().unwrap()["case"]
        .as_object_mut()
        .unwrap()
        .remove("encounter");
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewer_sees_content_and_releases_into_the_kis_others_see_no_content() {
    let Some(browser) = browser::start().await else {
        return;
    };
    let c = &browser.client;
    let h = Harness::new(None, None).await;
    let worker = h.start_worker();
    let patient = format!("P-console-{}", h.run);
    let key = MessageKey {
        source: "matrix".into(),
        message_id: format!("$console-{}", h.run),
    };
    h.publish(&event(&h, &patient)).await;
    assert_eq!(
        h.wait_state(&key, MessageState::Quarantined).await.reason,
        "unknown_patient"
    );

    let rules = Rules::load(&h.config.mappings.rules_file).unwrap();
    let pipeline = Pipeline::new(&h.config, h.store.clone(), h.sealer.clone(), rules).unwrap();
    let console = browser::console::start(
        h.store.clone(),
        h.sealer.clone(),
        Some(Arc::new(pipeline)),
        None,
    )
    .await;
    let id = chartbridge::quarantine::list(&h.store, &h.sealer)
        .await
        .unwrap()[0]
        .0
        .clone();

    // An operator sees the item, its reason and age, and no content.
    browser::console::log_in(c, &console, "operator").await;
    c.goto(&console.url("/console/review")).await.unwrap();
    let row = c
        .find(Locator::Css(&format!("tr[data-item='{id}']")))
        .await
        .unwrap();
    let text = row.text().await.unwrap();
    assert!(text.contains("unknown_patient"), "{text}");
    assert!(
        c.find(Locator::Id(&format!("show-{id}"))).await.is_err(),
        "no content link"
    );
    browser::screenshot(c, "review-operator").await;
    c.goto(&console.url(&format!("/console/review/{id}")))
        .await
        .unwrap();
    let page = c.source().await.unwrap();
    assert!(
        page.contains("Your roles do not include this page"),
        "{page}"
    );
    assert!(!page.contains(CONTENT) && !page.contains(SENDER) && !page.contains(&patient));
    let shows = |h: &Harness| {
        let store = h.store.clone();
        async move {
            store
                .audit_trail()
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.action == "quarantine.show")
                .count()
        }
    };
    assert_eq!(shows(&h).await, 0, "nothing was shown");

    // A reviewer sees content and sender, recorded first.
    browser::console::log_in(c, &console, "reviewer").await;
    c.goto(&console.url("/console/review")).await.unwrap();
    c.find(Locator::Id(&format!("show-{id}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let event = c
        .find(Locator::Id("event"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sender = c
        .find(Locator::Id("sender"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(event.contains(CONTENT), "{event}");
    assert!(sender.contains(SENDER), "{sender}");
    browser::screenshot(c, "review-item").await;
    let trail = h.store.audit_trail().await.unwrap();
    let show = trail
        .iter()
        .find(|r| r.action == "quarantine.show")
        .unwrap();
    assert_eq!(
        (show.actor.as_str(), show.target.as_str()),
        (
            console.actor("reviewer").as_str(),
            format!("item {id}").as_str()
        )
    );

    // The patient arrives in the KIS; the reviewer releases; archived.
    h.seed_patient(&patient).await;
    c.find(Locator::Id("release"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let want = console.url("/console/review?done=released&archived=1");
    for _ in 0..200 {
        if c.current_url().await.unwrap().as_str() == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.current_url().await.unwrap().as_str(),
        want,
        "released and archived"
    );
    let got = h.state(&key).await.unwrap();
    assert_eq!(got.state, MessageState::Archived);
    let resource = got.resource.unwrap();
    let kis = reqwest::get(format!("{}/{resource}", common::fhir_url()))
        .await
        .unwrap();
    assert_eq!(kis.status(), 200, "{resource} is in the FHIR server");
    let body = kis.text().await.unwrap();
    assert!(body.contains(&resource.split('/').nth(1).unwrap().to_owned()));
    let release = h
        .store
        .audit_trail()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.action == "quarantine.release")
        .unwrap();
    assert_eq!(release.actor, console.actor("reviewer"));
    assert!(
        c.find(Locator::Css(&format!("tr[data-item='{id}']")))
            .await
            .is_err(),
        "no longer held"
    );
    browser::screenshot(c, "review-after-release").await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_replays_a_dead_letter_compliance_sees_the_log() {
    let Some(browser) = browser::start().await else {
        return;
    };
    let c = &browser.client;
    let h = Harness::new(None, None).await;
    let worker = h.start_worker();
    h.publish(b"{not json").await;
    // One message archived, one held: the charts count them.
    h.seed_patient("P-1001").await;
    h.publish(&h.fixture("events/text-canonical.json")).await;
    h.publish(&event(&h, &format!("P-nobody-{}", h.run))).await;
    h.wait_state(&h.key("matrix", "$msg-0001"), MessageState::Archived)
        .await;
    h.wait_state(
        &MessageKey {
            source: "matrix".into(),
            message_id: format!("$console-{}", h.run),
        },
        MessageState::Quarantined,
    )
    .await;
    let console = operations_console(&h).await;

    // Not for a reviewer.
    browser::console::log_in(c, &console, "reviewer").await;
    c.goto(&console.url("/console/operations")).await.unwrap();
    assert!(
        c.source()
            .await
            .unwrap()
            .contains("Your roles do not include this page")
    );

    browser::console::log_in(c, &console, "operator").await;
    let mut id = String::new();
    for _ in 0..100 {
        c.goto(&console.url("/console/operations")).await.unwrap();
        if let Ok(row) = c.find(Locator::Css("tr[data-dead-letter]")).await {
            id = row.attr("data-dead-letter").await.unwrap().unwrap();
            assert!(row.text().await.unwrap().contains("invalid_json"));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(!id.is_empty(), "the dead letter is listed");

    // The charts: server-rendered SVG, counts as the store holds them.
    let drawn = |svg: &'static str| async move {
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for rect in c
            .find_all(Locator::Css(&format!("svg#{svg} rect[data-state]")))
            .await
            .unwrap()
        {
            let state = rect.attr("data-state").await.unwrap().unwrap();
            let n: i64 = rect
                .attr("data-count")
                .await
                .unwrap()
                .unwrap()
                .parse()
                .unwrap();
            *counts.entry(state).or_default() += n;
        }
        counts.retain(|_, n| *n > 0);
        counts
    };
    let want: std::collections::BTreeMap<String, i64> =
        [("archived".to_owned(), 1), ("quarantined".to_owned(), 1)].into();
    for hours in ["1", "24"] {
        c.goto(&console.url(&format!("/console/operations?hours={hours}")))
            .await
            .unwrap();
        assert_eq!(drawn("timeline").await, want, "last {hours} h");
        assert_eq!(drawn("totals").await, want);
    }
    let bars = c
        .find_all(Locator::Css("svg#timeline rect[data-bucket]"))
        .await
        .unwrap();
    for bar in &bars {
        assert_eq!(
            bar.attr("data-bucket").await.unwrap().as_deref(),
            Some("23"),
            "both within the latest hour of 24"
        );
    }
    let page = c.source().await.unwrap();
    assert!(
        !page.contains("<script"),
        "no script on the operations page"
    );
    browser::screenshot(c, "operations").await;
    c.find(Locator::Id(&format!("replay-{id}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = c
        .wait()
        .for_element(Locator::Id("notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(notice, "Done: replayed.");
    assert!(
        h.store.replayed().await.unwrap().contains_key(&id),
        "recorded as replayed"
    );
    let replay = h
        .store
        .audit_trail()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.action == "replay")
        .unwrap();
    assert_eq!(replay.actor, console.actor("operator"));
    assert_eq!(replay.target, format!("dead-letters 1 id={id}"));

    browser::console::log_in(c, &console, "compliance-officer").await;
    c.goto(&console.url("/console/log")).await.unwrap();
    c.find(Locator::Id("checkpoints")).await.unwrap();
    c.find(Locator::Id("no-audits")).await.unwrap();
    // An integrity audit over the archived message is listed once recorded.
    let report = chartbridge::prove::service::audit_and_record(
        &h.kis,
        (&h.store, &h.sealer.proof_keys()),
        5,
        "cli",
    )
    .await
    .unwrap();
    assert!(report.ok() && report.checked == 1, "{report:?}");
    c.goto(&console.url("/console/log")).await.unwrap();
    let rows = c.find_all(Locator::Css("#audits tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1);
    let cells: Vec<String> = {
        let mut v = Vec::new();
        for td in rows[0].find_all(Locator::Css("td")).await.unwrap() {
            v.push(td.text().await.unwrap());
        }
        v
    };
    assert_eq!(cells[1..], ["cli", "1", "1", "0", "0", "none"], "{cells:?}");
    browser::screenshot(c, "log").await;
    c.goto(&console.url("/console/review")).await.unwrap();
    assert!(
        c.find(Locator::Css("[id^=show-]")).await.is_err(),
        "no content links for compliance"
    );
    worker.stop().await;
}

/// A console with the worker's configuration and readiness (operations
/// page) over `h`'s store, without a pipeline.
async fn operations_console(h: &Harness) -> browser::console::Console {
    let breaker = chartbridge::push::Breaker::new(chartbridge::push::BreakerSettings {
        threshold: 1,
        cooldown: std::time::Duration::from_secs(60),
        cooldown_max: std::time::Duration::from_secs(60),
        probe_timeout: std::time::Duration::from_secs(60),
    });
    let health = chartbridge::health::Health::new(&breaker);
    browser::console::start(
        h.store.clone(),
        h.sealer.clone(),
        None,
        Some((Arc::new(h.config.clone()), health)),
    )
    .await
}

/// A held event in conversation `conversation` naming a patient the KIS
/// does not know.
fn held_event(h: &Harness, message: &str, conversation: &str) -> (Vec<u8>, MessageKey) {
    let mut v: Value = serde_json::from_slice(&event(h, &format!("P-nobody-{}", h.run))).unwrap();
    let id = format!("${message}-{}", h.run);
    v["message_id"] = id.clone().into();
    v["event_id"] = format!("evt-{message}-{}", h.run).into();
    v["conversation"]["id"] = conversation.into();
    let key = MessageKey {
        source: "matrix".into(),
        message_id: id,
    };
    (serde_json::to_vec(&v).unwrap(), key)
}

/// The notice of the decision `done` once the page after it shows it. The
/// page before may still show an earlier decision's notice, and may be
/// replaced while it is read: both are waited out.
async fn wait_notice(c: &fantoccini::Client, done: &str) -> String {
    let want = format!("Done: {done}:");
    for _ in 0..400 {
        if let Ok(notice) = c.find(Locator::Id("notice")).await
            && let Ok(text) = notice.text().await
            && text.starts_with(&want)
        {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no notice of {done}");
}

/// The session cookie and CSRF token of the browser's console session.
async fn session_of(c: &fantoccini::Client) -> (String, String) {
    let cookie = c
        .get_named_cookie("__Host-chartbridge-console")
        .await
        .unwrap()
        .value()
        .to_owned();
    let csrf = c
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    (cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewer_assigns_by_kis_search_links_and_dismisses_conversations_others_are_refused() {
    let Some(browser) = browser::start().await else {
        return;
    };
    let c = &browser.client;
    let h = Harness::new(None, None).await;
    let worker = h.start_worker();
    let conv = |tag: &str| format!("!console-{tag}-{}:hospital.invalid", h.run);
    let (a, key_a) = held_event(&h, "assign", &conv("a"));
    let (b1, key_b1) = held_event(&h, "link1", &conv("b"));
    let (b2, key_b2) = held_event(&h, "link2", &conv("b"));
    let (d, key_d) = held_event(&h, "dismiss", &conv("d"));
    for payload in [&a, &b1, &b2, &d] {
        h.publish(payload).await;
    }
    for key in [&key_a, &key_b1, &key_b2, &key_d] {
        assert_eq!(
            h.wait_state(key, MessageState::Quarantined).await.reason,
            "unknown_patient"
        );
    }
    let cid = |tag: &str| {
        let token = chartbridge::resolve::conversation_token(&h.sealer, "matrix", &conv(tag));
        chartbridge::review::conversation_id(&h.sealer, &token)
    };
    let right = format!("P-console-right-{}", h.run);
    let (patient, encounter) = h.seed_patient(&right).await;
    let patient_id = patient.trim_start_matches("Patient/").to_owned();

    let rules = Rules::load(&h.config.mappings.rules_file).unwrap();
    let pipeline = Pipeline::new(&h.config, h.store.clone(), h.sealer.clone(), rules).unwrap();
    let console = browser::console::start(
        h.store.clone(),
        h.sealer.clone(),
        Some(Arc::new(pipeline)),
        None,
    )
    .await;
    let items = chartbridge::quarantine::list(&h.store, &h.sealer)
        .await
        .unwrap();
    let item_a = items
        .iter()
        .find(|(_, i)| h.store.message_ref(&key_a).unwrap() == i.key)
        .unwrap()
        .0
        .clone();

    // An operator sees the conversations, no decision, and is refused one.
    browser::console::log_in(c, &console, "operator").await;
    c.goto(&console.url("/console/review")).await.unwrap();
    let rows = c
        .find_all(Locator::Css("#conversations tr[data-conversation]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "one row per conversation");
    let row_b = c
        .find(Locator::Css(&format!(
            "tr[data-conversation='{}']",
            cid("b")
        )))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(row_b.contains("matrix") && row_b.contains(" 2 "), "{row_b}");
    assert!(c.find(Locator::Css("[id^=dismiss-]")).await.is_err());
    assert!(c.find(Locator::Css("[id^=assign-]")).await.is_err());
    c.goto(&console.url(&format!(
        "/console/review/assign?item={item_a}&identifier={right}"
    )))
    .await
    .unwrap();
    assert!(
        c.source()
            .await
            .unwrap()
            .contains("Your roles do not include this page")
    );
    c.goto(&console.url("/console/review")).await.unwrap();
    let (cookie, csrf) = session_of(c).await;
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/console/review/assign",
            format!("csrf={csrf}&item={item_a}&patient={patient}"),
        ),
        (
            "/console/review/dismiss",
            format!("csrf={csrf}&conversation={}", cid("d")),
        ),
    ] {
        let refused = http
            .post(console.url(path))
            .header("cookie", format!("__Host-chartbridge-console={cookie}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "{path}");
    }
    let decisions = |h: &Harness| {
        let store = h.store.clone();
        async move {
            store
                .audit_trail()
                .await
                .unwrap()
                .into_iter()
                .filter(|r| {
                    r.action.starts_with("quarantine.") || r.action.starts_with("conversation.")
                })
                .map(|r| (r.actor, r.action, r.target))
                .collect::<Vec<_>>()
        }
    };
    assert!(
        decisions(&h).await.is_empty(),
        "nothing recorded, nothing done"
    );
    for key in [&key_a, &key_d] {
        assert_eq!(h.state(key).await.unwrap().state, MessageState::Quarantined);
    }

    // A reviewer without the CSRF token is refused too.
    browser::console::log_in(c, &console, "reviewer").await;
    c.goto(&console.url("/console/review")).await.unwrap();
    let (cookie, _) = session_of(c).await;
    let forged = http
        .post(console.url("/console/review/dismiss"))
        .header("cookie", format!("__Host-chartbridge-console={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf=forged&conversation={}", cid("d")))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    browser::screenshot(c, "review-conversations").await;

    // Assign item A: search the KIS by identifier, pick patient and encounter.
    c.find(Locator::Id(&format!("assign-{item_a}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id("identifier"))
        .await
        .unwrap()
        .send_keys(&format!("{}|{right}", common::PATIENT_SYSTEM))
        .await
        .unwrap();
    c.find(Locator::Id("search"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let rows = c
        .wait()
        .for_element(Locator::Id("patients"))
        .await
        .unwrap()
        .find_all(Locator::Css("tr[data-patient]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one patient with this identifier");
    let shown = rows[0].text().await.unwrap();
    assert!(
        shown.contains(&patient) && shown.contains(&right),
        "{shown}"
    );
    assert!(!shown.contains("Mustermann"), "identifiers only, no name");
    c.find(Locator::Id(&format!("encounter-{patient_id}")))
        .await
        .unwrap()
        .select_by_value(&encounter)
        .await
        .unwrap();
    browser::screenshot(c, "review-assign").await;
    c.find(Locator::Id(&format!("assign-{patient_id}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        wait_notice(c, "assigned").await,
        "Done: assigned: archived 1, not relevant 0, still held 0, failed 0."
    );
    let got = h.state(&key_a).await.unwrap();
    assert_eq!(got.state, MessageState::Archived);
    let resource = got.resource.unwrap();
    let body = reqwest::get(format!("{}/{resource}", common::fhir_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains(&patient) && body.contains(&encounter),
        "{resource} names the assigned patient and encounter: {body}"
    );

    // Link conversation B (two messages) by the identifier's value alone.
    c.find(Locator::Id(&format!("link-{}", cid("b"))))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id("identifier"))
        .await
        .unwrap()
        .send_keys(&right)
        .await
        .unwrap();
    c.find(Locator::Id("search"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id(&format!("assign-{patient_id}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        wait_notice(c, "linked").await,
        "Done: linked: archived 2, not relevant 0, still held 0, failed 0."
    );
    for key in [&key_b1, &key_b2] {
        let got = h.state(key).await.unwrap();
        assert_eq!(got.state, MessageState::Archived);
        let kis = reqwest::get(format!("{}/{}", common::fhir_url(), got.resource.unwrap()))
            .await
            .unwrap();
        assert_eq!(kis.status(), 200);
    }

    // Dismiss conversation D.
    c.find(Locator::Id(&format!("dismiss-{}", cid("d"))))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        wait_notice(c, "dismissed").await,
        "Done: dismissed: archived 0, not relevant 1, still held 0, failed 0."
    );
    assert_eq!(
        h.state(&key_d).await.unwrap().state,
        MessageState::NotRelevant
    );
    assert!(
        c.find_all(Locator::Css("#conversations tr[data-conversation]"))
            .await
            .unwrap()
            .is_empty(),
        "no conversation left unresolved"
    );
    browser::screenshot(c, "review-after-decisions").await;

    // Every decision recorded with the OIDC subject, before it ran.
    let reviewer = console.actor("reviewer");
    assert_eq!(
        decisions(&h).await,
        vec![
            (
                reviewer.clone(),
                "quarantine.resolve".to_owned(),
                format!("item {item_a} {patient} {encounter}")
            ),
            (
                reviewer.clone(),
                "conversation.link".to_owned(),
                format!("conversation {} {patient}", cid("b"))
            ),
            (
                reviewer,
                "conversation.dismiss".to_owned(),
                format!("conversation {}", cid("d"))
            ),
        ]
    );
    // Each KIS search (item a by system|value, conversation b by value)
    // was recorded before it ran, the identifier sealed.
    let searches: Vec<String> = h
        .store
        .audit_trail()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "patient.search")
        .map(|r| r.target)
        .collect();
    assert!(
        searches.contains(&format!("item {item_a}"))
            && searches.contains(&format!("conversation {}", cid("b"))),
        "{searches:?}"
    );
    chartbridge::audit::verify(&h.store.audit_trail().await.unwrap()).unwrap();
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_fetches_a_bundle_by_kis_resource_and_verifies_it_in_the_page() {
    use chartbridge::prove::bundle::{Step, verify_bundle};
    use chartbridge::prove::checkpoint::KeyInfo;
    use chartbridge::prove::service::{self, ProofTarget};
    let Some(browser) = browser::start().await else {
        return;
    };
    let c = &browser.client;
    let mut h = Harness::new(None, None).await;
    let key_path = h.add_proofs_config("0 0 0 1 1 *");
    let signer = service::generate_signer_file("console-log", &key_path).unwrap();
    let now = chartbridge::store::millis(chrono::Utc::now());
    h.store
        .add_signing_key(&KeyInfo::new(&signer.verifier(), now), now)
        .await
        .unwrap();
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/image-canonical.json")).await;
    let image = h.key("matrix", "$msg-0002");
    let doc_ref = h
        .wait_state(&image, MessageState::Archived)
        .await
        .resource
        .unwrap();
    let console = operations_console(&h).await;
    let exports = |h: &Harness| {
        let store = h.store.clone();
        async move {
            store
                .audit_trail()
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.action == "proof.export")
                .map(|r| r.actor)
                .collect::<Vec<_>>()
        }
    };
    let fetch = |resource: &str| {
        let resource = resource.to_owned();
        async move {
            c.find(Locator::Id("resource"))
                .await
                .unwrap()
                .send_keys(&resource)
                .await
                .unwrap();
            c.find(Locator::Id("fetch-bundle"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            let status = c.find(Locator::Id("fetched")).await.unwrap();
            for _ in 0..200 {
                let state = status.attr("data-state").await.unwrap().unwrap();
                if state == "done" || state == "failed" {
                    return (state, status.text().await.unwrap());
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("the fetch did not finish");
        }
    };

    // Without the compliance role: no bundle, nothing exported.
    browser::console::log_in(c, &console, "reviewer").await;
    c.goto(&console.url("/console/verify")).await.unwrap();
    let (state, text) = fetch(&doc_ref).await;
    assert_eq!(state, "failed");
    assert!(
        text.contains("your roles do not include compliance"),
        "{text}"
    );
    assert!(exports(&h).await.is_empty());

    browser::console::log_in(c, &console, "compliance-officer").await;
    c.goto(&console.url("/console/verify")).await.unwrap();
    let (state, text) = fetch("DocumentReference/not-archived-here").await;
    assert_eq!(state, "failed");
    assert!(
        text.contains("Nothing archived has this resource"),
        "{text}"
    );

    c.goto(&console.url("/console/verify")).await.unwrap();
    let (state, text) = fetch(&doc_ref).await;
    assert_eq!(state, "done", "{text}");
    // The console signed the first checkpoint with the worker's key, as
    // `proof export` does; the bundle is exactly what it exports.
    let exported = service::export_bundle(
        &h.store,
        &ProofTarget::resource(&doc_ref).unwrap(),
        (None, &h.sealer.proof_keys()),
        &h.config.proofs.origin,
        now,
    )
    .await
    .unwrap();
    let served = browser::js(
        c,
        "return fetch('/console/verify/bundle?resource=' + encodeURIComponent(arguments[0])).then(r => r.text());",
        vec![serde_json::json!(doc_ref)],
    )
    .await;
    assert_eq!(served.as_str().unwrap(), exported.to_json());
    assert_eq!(
        exports(&h).await,
        vec![console.actor("compliance-officer"); 2],
        "each bundle handed out is recorded with the OIDC subject"
    );

    // Verified in the page against the KIS's bytes with the registered key;
    // a flipped byte fails at ContentHash; both as `verify_bundle` says.
    let keys = h.store.signing_keys().await.unwrap();
    let keys_json = serde_json::to_string(&keys).unwrap();
    let bytes = h.kis_content(&doc_ref).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("content.png");
    std::fs::write(&good, &bytes).unwrap();
    let (verdict, rows) =
        browser::verifier::run_here(c, &[("content", good.as_path())], &keys_json).await;
    assert!(verdict.verified, "{verdict:?} {rows:?}");
    assert!(verify_bundle(&exported, Some(&bytes), Some(&keys)).is_ok());
    for step in [
        "Format",
        "LeafData",
        "ContentHash",
        "Inclusion",
        "Signature",
    ] {
        assert!(
            rows.contains(&(step.to_owned(), "pass".to_owned())),
            "{step}: {rows:?}"
        );
    }
    browser::screenshot(c, "verify-by-resource").await;

    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    let bad = dir.path().join("flipped.png");
    std::fs::write(&bad, &flipped).unwrap();
    c.goto(&console.url("/console/verify")).await.unwrap();
    assert_eq!(fetch(&doc_ref).await.0, "done");
    let (verdict, _) =
        browser::verifier::run_here(c, &[("content", bad.as_path())], &keys_json).await;
    assert_eq!(verdict.failed_step.as_deref(), Some("ContentHash"));
    assert_eq!(
        verify_bundle(&exported, Some(&flipped), Some(&keys))
            .unwrap_err()
            .step(),
        Step::ContentHash
    );

    // Log view: two more messages archived and a second checkpoint signed;
    // the page checks the consistency between the two it lists.
    h.publish(&h.fixture("events/text-canonical.json")).await;
    h.publish(&event(&h, "P-1001")).await;
    h.wait_state(&h.key("matrix", "$msg-0001"), MessageState::Archived)
        .await;
    h.wait_state(
        &MessageKey {
            source: "matrix".into(),
            message_id: format!("$console-{}", h.run),
        },
        MessageState::Archived,
    )
    .await;
    let now = chartbridge::store::millis(chrono::Utc::now());
    let second = service::sign_checkpoint(&h.store, &signer, &h.config.proofs.origin, now)
        .await
        .unwrap()
        .expect("the log grew");
    assert_eq!((exported.tree_size, second.size), (1, 3));
    let proof = service::consistency(&h.store, 1, 3).await.unwrap();
    assert!(proof.first_checkpoint.is_some() && proof.second_checkpoint.is_some());
    let log_url = console.url("/console/log");
    let check = |keys: Option<String>| {
        let log_url = log_url.clone();
        async move {
            c.goto(&log_url).await.unwrap();
            let options = c
                .find_all(Locator::Css("#from option"))
                .await
                .unwrap()
                .len();
            assert_eq!(options, 2, "both checkpoints offered");
            c.find(Locator::Id("from"))
                .await
                .unwrap()
                .select_by_value("1")
                .await
                .unwrap();
            c.find(Locator::Id("to"))
                .await
                .unwrap()
                .select_by_value("3")
                .await
                .unwrap();
            if let Some(keys) = keys {
                browser::js(
                    c,
                    "document.getElementById('keys').value = arguments[0];",
                    vec![serde_json::json!(keys)],
                )
                .await;
            }
            c.find(Locator::Id("check-consistency"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            for _ in 0..200 {
                let r = browser::js(
                c,
                "const r = document.getElementById('result');
                 return { state: r.dataset.state, verified: r.dataset.verified === 'true',
                          failed: r.dataset.failedStep || null,
                          rows: Array.from(document.querySelectorAll('#steps > li'), li => li.dataset.step + ' ' + li.dataset.state), text: document.getElementById('steps').innerText };",
                vec![],
            )
            .await;
                if r["state"] == "done" {
                    return r;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("the check did not finish");
        }
    };
    let r = check(None).await;
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(
        r["rows"],
        serde_json::json!(["Checkpoint pass", "Checkpoint pass", "Consistency pass"])
    );
    browser::screenshot(c, "log-consistency").await;
    // Against a key that signed neither checkpoint: Signature fails.
    let other = service::generate_signer_file("other-log", &dir.path().join("other.key")).unwrap();
    let r = check(Some(other.verifier().to_string())).await;
    assert_eq!(r["failed"], "Signature", "{r}");
    worker.stop().await;
}
