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
    let want = console.url("/console/review?released=archived");
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
    let breaker = chartbridge::push::Breaker::new(chartbridge::push::BreakerSettings {
        threshold: 1,
        cooldown: std::time::Duration::from_secs(60),
        cooldown_max: std::time::Duration::from_secs(60),
        probe_timeout: std::time::Duration::from_secs(60),
    });
    let health = chartbridge::health::Health::new(&breaker);
    let console = browser::console::start(
        h.store.clone(),
        h.sealer.clone(),
        None,
        Some((Arc::new(h.config.clone()), health)),
    )
    .await;

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
    browser::screenshot(c, "log").await;
    c.goto(&console.url("/console/review")).await.unwrap();
    assert!(
        c.find(Locator::Css("[id^=show-]")).await.is_err(),
        "no content links for compliance"
    );
    worker.stop().await;
}
