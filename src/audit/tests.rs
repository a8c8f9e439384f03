use super::*;

fn chain(n: i64) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut prev = GENESIS.to_vec();
    for seq in 1..=n {
        let target = format!("item {seq:016x}");
        let hash = chain_hash(
            &prev,
            seq,
            1000 + seq,
            "os:ops",
            "quarantine.release",
            &target,
            None,
        );
        rows.push(Row {
            seq,
            at: 1000 + seq,
            actor: "os:ops".into(),
            action: "quarantine.release".into(),
            target,
            reason_digest: None,
            prev_hash: prev,
            hash: hash.clone(),
        });
        prev = hash;
    }
    rows
}

#[test]
fn an_unbroken_chain_verifies_to_its_head() {
    let rows = chain(5);
    let head = verify(&rows).unwrap();
    assert_eq!((head.rows, head.seq), (5, 5));
    assert_eq!(head.hash, rows[4].hash);
    assert_eq!(verify(&[]).unwrap().seq, 0);
}

#[test]
fn deleted_edited_and_replaced_rows_are_named() {
    let mut rows = chain(5);
    rows.remove(2);
    assert_eq!(verify(&rows), Err(ChainError::Gap { from: 3, to: 3 }));

    let mut rows = chain(5);
    rows[1].target = "item 0".into();
    assert_eq!(verify(&rows), Err(ChainError::Changed { seq: 2 }));

    let mut rows = chain(5);
    rows[1].actor = "os:someone-else".into();
    assert_eq!(verify(&rows), Err(ChainError::Changed { seq: 2 }));

    // Row 3 removed and row 4 renumbered with a recomputed hash: the
    // next row's prev_hash no longer matches.
    let mut rows = chain(5);
    rows.remove(2);
    rows[2].seq = 3;
    rows[2].hash = chain_hash(
        &rows[2].prev_hash,
        3,
        rows[2].at,
        &rows[2].actor,
        &rows[2].action,
        &rows[2].target,
        None,
    );
    assert_eq!(verify(&rows), Err(ChainError::Broken { seq: 3, prev: 2 }));
}

#[test]
fn the_reason_digest_is_in_the_chain() {
    let a = chain_hash(&GENESIS, 1, 1, "os:a", "x", "t", None);
    let b = chain_hash(&GENESIS, 1, 1, "os:a", "x", "t", Some(""));
    let c = chain_hash(&GENESIS, 1, 1, "os:a", "x", "t", Some("d"));
    assert_ne!(a, b);
    assert_ne!(b, c);
    // Field boundaries are unambiguous.
    assert_ne!(
        chain_hash(&GENESIS, 1, 1, "os:ab", "c", "t", None),
        chain_hash(&GENESIS, 1, 1, "os:a", "bc", "t", None)
    );
}

#[test]
fn action_names_are_distinct() {
    let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Action::ALL.len());
}

#[test]
fn the_os_actor_is_the_account_of_the_uid() {
    let actor = Actor::os().unwrap();
    let expected = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let name = String::from_utf8(expected.stdout).unwrap();
    assert_eq!(actor.as_str(), format!("os:{}", name.trim()));
}
