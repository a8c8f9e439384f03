use super::*;
use proptest::prelude::*;

fn h(s: &str) -> Hash {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).expect("test vector hex");
    out
}

// Leaf inputs, roots and node hashes: transparency-dev/merkle
// testonly/constants.go (LeafInputs, RootHashes, NodeHashes), the reference
// data of the Certificate Transparency / Trillian RFC 6962 implementations.
const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

const NODES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

// Inclusion proofs (0-based leaf index, tree size, path) and consistency
// proofs (size1, size2, proof): transparency-dev/merkle proof/verify_test.go
// (inclusionProofs, whose leaf numbers are 1-based there, and
// consistencyProofs).
const INCLUSION: [(u64, u64, &[&str]); 6] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, &[]),
];

const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn vector_log() -> MemoryLog {
    let mut log = MemoryLog::new();
    for leaf in LEAVES {
        log.append(&hex::decode(leaf).expect("hex"));
    }
    log
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

fn ref_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = largest_pow2_below(n as u64) as usize;
            node_hash(&ref_root(&leaves[..k]), &ref_root(&leaves[k..]))
        }
    }
}

fn ref_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = largest_pow2_below(leaves.len() as u64) as usize;
    if m < k {
        let mut p = ref_path(m, &leaves[..k]);
        p.push(ref_root(&leaves[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &leaves[k..]);
        p.push(ref_root(&leaves[..k]));
        p
    }
}

fn ref_subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole {
            Vec::new()
        } else {
            vec![ref_root(leaves)]
        };
    }
    let k = largest_pow2_below(n as u64) as usize;
    if m <= k {
        let mut p = ref_subproof(m, &leaves[..k], whole);
        p.push(ref_root(&leaves[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &leaves[k..], false);
        p.push(ref_root(&leaves[..k]));
        p
    }
}

fn leaf_hashes(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
        .collect()
}

fn log_of(n: usize) -> MemoryLog {
    let mut log = MemoryLog::new();
    for leaf in leaf_hashes(n) {
        log.append_leaf_hash(leaf);
    }
    log
}

fn ceil_log2(n: u64) -> usize {
    if n <= 1 {
        0
    } else {
        (64 - (n - 1).leading_zeros()) as usize
    }
}

#[test]
fn empty_root_is_sha256_of_nothing() {
    assert_eq!(empty_root(), h(ROOTS[0]));
    assert_eq!(MemoryLog::new().root(0), Ok(h(ROOTS[0])));
}

#[test]
fn known_roots_for_every_size() {
    let log = vector_log();
    for (size, root) in ROOTS.iter().enumerate() {
        assert_eq!(log.root(size as u64), Ok(h(root)), "size {size}");
    }
}

#[test]
fn known_node_hashes_are_stored_on_append() {
    let log = vector_log();
    for (level, row) in NODES.iter().enumerate() {
        for (index, node) in row.iter().enumerate() {
            assert_eq!(
                log.node(NodeId::new(level as u8, index as u64)),
                Some(h(node)),
                "node {level}/{index}"
            );
        }
    }
}

#[test]
fn known_inclusion_proofs() {
    let log = vector_log();
    for (index, size, path) in INCLUSION {
        let want = hashes(path);
        assert_eq!(log.inclusion_proof(index, size), Ok(want.clone()));
        let leaf = leaf_hash(&hex::decode(LEAVES[index as usize]).expect("hex"));
        let root = h(ROOTS[size as usize]);
        assert_eq!(verify_inclusion(&leaf, index, size, &want, &root), Ok(()));
    }
}

#[test]
fn known_consistency_proofs() {
    let log = vector_log();
    for (m, n, proof) in CONSISTENCY {
        let want = hashes(proof);
        assert_eq!(log.consistency_proof(m, n), Ok(want.clone()));
        let (r1, r2) = (h(ROOTS[m as usize]), h(ROOTS[n as usize]));
        assert_eq!(verify_consistency(m, n, &r1, &r2, &want), Ok(()));
    }
}

#[test]
fn completed_by_append_lists_new_perfect_nodes() {
    assert_eq!(completed_by_append(0), vec![]);
    assert_eq!(completed_by_append(1), vec![NodeId::new(1, 0)]);
    assert_eq!(completed_by_append(2), vec![]);
    assert_eq!(
        completed_by_append(3),
        vec![NodeId::new(1, 1), NodeId::new(2, 0)]
    );
    assert_eq!(
        completed_by_append(7),
        vec![NodeId::new(1, 3), NodeId::new(2, 1), NodeId::new(3, 0)]
    );
    assert_eq!(completed_by_append(u64::MAX).len(), 63);
}

#[test]
fn range_nodes_decomposes_ranges() {
    assert_eq!(range_nodes(0, 0), vec![]);
    assert_eq!(range_nodes(5, 3), vec![]);
    assert_eq!(
        range_nodes(0, 7),
        vec![NodeId::new(2, 0), NodeId::new(1, 2), NodeId::new(0, 6)]
    );
    assert_eq!(
        range_nodes(3, 8),
        vec![NodeId::new(0, 3), NodeId::new(2, 1)]
    );
    assert_eq!(range_nodes(0, u64::MAX).len(), 64);
}

#[test]
fn roots_and_inclusion_match_reference_up_to_256() {
    let leaves = leaf_hashes(256);
    let log = log_of(256);
    for n in 1..=256usize {
        let root = ref_root(&leaves[..n]);
        assert_eq!(log.root(n as u64), Ok(root), "root {n}");
        for i in 0..n {
            let path = log.inclusion_proof(i as u64, n as u64).expect("proof");
            if n <= 64 {
                assert_eq!(path, ref_path(i, &leaves[..n]), "path {i}/{n}");
            }
            assert_eq!(
                verify_inclusion(&leaves[i], i as u64, n as u64, &path, &root),
                Ok(()),
                "verify {i}/{n}"
            );
        }
    }
}

#[test]
fn consistency_matches_reference_up_to_256() {
    let leaves = leaf_hashes(256);
    let log = log_of(256);
    let roots: Vec<Hash> = (0..=256).map(|n| ref_root(&leaves[..n])).collect();
    for n in 1..=256usize {
        for m in 1..=n {
            let proof = log.consistency_proof(m as u64, n as u64).expect("proof");
            if n <= 64 {
                assert_eq!(proof, ref_subproof(m, &leaves[..n], true), "{m}->{n}");
            }
            assert_eq!(
                verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &proof),
                Ok(()),
                "verify {m}->{n}"
            );
        }
    }
}

#[test]
fn plans_fetch_logarithmically_many_nodes() {
    let sizes = [1u64, 2, 3, 1000, 1 << 20, (1 << 40) + 12345, u64::MAX];
    for &n in &sizes {
        let bound = 2 * ceil_log2(n) + 2;
        assert!(root_plan(n).nodes().len() <= 64);
        for i in [0, n / 3, n / 2, n - 1] {
            let plan = inclusion_plan(i, n).expect("plan");
            assert!(plan.nodes().len() <= bound, "inclusion {i}/{n}");
            assert!(plan.proof_len() <= ceil_log2(n));
        }
        for m in [1, n / 3, n / 2, n - 1] {
            let plan = consistency_plan(m.max(1), n).expect("plan");
            assert!(plan.nodes().len() <= bound, "consistency {m}/{n}");
        }
    }
}

#[test]
fn planning_rejects_bad_arguments() {
    assert_eq!(
        inclusion_plan(3, 3),
        Err(MerkleError::IndexOutOfRange { index: 3, size: 3 })
    );
    assert_eq!(
        consistency_plan(4, 3),
        Err(MerkleError::SizeOrder {
            first: 4,
            second: 3
        })
    );
    assert_eq!(consistency_plan(0, 9).map(|p| p.proof_len()), Ok(0));
    let log = log_of(4);
    assert_eq!(
        log.root(5),
        Err(MerkleError::MissingNode(NodeId::new(0, 4)))
    );
}

#[test]
fn inclusion_rejects_tampering_exhaustively_up_to_32() {
    let leaves = leaf_hashes(32);
    let log = log_of(32);
    for n in 1..=32u64 {
        let root = log.root(n).expect("root");
        for i in 0..n {
            let leaf = leaves[i as usize];
            let path = log.inclusion_proof(i, n).expect("proof");
            for byte in 0..32 {
                let mut bad_leaf = leaf;
                bad_leaf[byte] ^= 0x01;
                assert!(verify_inclusion(&bad_leaf, i, n, &path, &root).is_err());
                let mut bad_root = root;
                bad_root[byte] ^= 0x80;
                assert!(verify_inclusion(&leaf, i, n, &path, &bad_root).is_err());
                for k in 0..path.len() {
                    let mut bad = path.clone();
                    bad[k][byte] ^= 0x10;
                    assert!(verify_inclusion(&leaf, i, n, &bad, &root).is_err());
                }
            }
            for j in (0..n).filter(|&j| j != i) {
                assert!(verify_inclusion(&leaf, j, n, &path, &root).is_err());
            }
            assert!(verify_inclusion(&leaf, i, n * 2, &path, &root).is_err());
            if i < n / 2 {
                assert!(verify_inclusion(&leaf, i, n / 2, &path, &root).is_err());
            }
            let mut longer = path.clone();
            longer.push(root);
            assert!(verify_inclusion(&leaf, i, n, &longer, &root).is_err());
            if let Some((_, shorter)) = path.split_last() {
                assert!(verify_inclusion(&leaf, i, n, shorter, &root).is_err());
            }
        }
    }
}

#[test]
fn inclusion_edge_cases() {
    let leaf = leaf_hash(b"data");
    assert_eq!(verify_inclusion(&leaf, 0, 1, &[], &leaf), Ok(()));
    assert_eq!(
        verify_inclusion(&leaf, 0, 0, &[], &empty_root()),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert!(verify_inclusion(&leaf, 1, 1, &[], &leaf).is_err());
    assert!(verify_inclusion(&leaf, 0, 1, &[leaf], &leaf).is_err());
    assert!(verify_inclusion(&leaf, u64::MAX - 1, u64::MAX, &[leaf; 80], &leaf).is_err());
}

#[test]
fn consistency_edge_cases() {
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    assert_eq!(verify_consistency(0, 0, &a, &a, &[]), Ok(()));
    assert_eq!(verify_consistency(0, 5, &a, &b, &[]), Ok(()));
    assert_eq!(verify_consistency(3, 3, &a, &a, &[]), Ok(()));
    assert_eq!(
        verify_consistency(3, 3, &a, &b, &[]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 3, &a, &a, &[a]),
        Err(ProofError::WrongLength)
    );
    assert_eq!(
        verify_consistency(1, 2, &a, &b, &[]),
        Err(ProofError::WrongLength)
    );
    assert_eq!(
        verify_consistency(2, 1, &a, &b, &[]),
        Err(ProofError::SizeOrder {
            first: 2,
            second: 1
        })
    );
    assert!(verify_consistency(u64::MAX - 7, u64::MAX, &a, &b, &[a; 130]).is_err());
}

#[test]
fn consistency_rejects_tampering_up_to_40() {
    let log = log_of(40);
    let roots: Vec<Hash> = (0..=40).map(|n| log.root(n).expect("root")).collect();
    for n in 2..=40u64 {
        for m in 1..n {
            let proof = log.consistency_proof(m, n).expect("proof");
            let (r1, r2) = (roots[m as usize], roots[n as usize]);
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k][(k + m as usize) % 32] ^= 0x10;
                assert!(verify_consistency(m, n, &r1, &r2, &bad).is_err());
            }
            let mut bad_r1 = r1;
            bad_r1[(n % 32) as usize] ^= 1;
            assert!(verify_consistency(m, n, &bad_r1, &r2, &proof).is_err());
            let mut bad_r2 = r2;
            bad_r2[(m % 32) as usize] ^= 1;
            assert!(verify_consistency(m, n, &r1, &bad_r2, &proof).is_err());
            assert!(verify_consistency(m, n, &r2, &r1, &proof).is_err());
            assert!(verify_consistency(m - 1, n, &r1, &r2, &proof).is_err());
            assert!(verify_consistency(m + 1, n, &r1, &r2, &proof).is_err());
            assert!(verify_consistency(m, n / 2, &r1, &r2, &proof).is_err());
            assert!(verify_consistency(m, n * 2, &r1, &r2, &proof).is_err());
            let mut longer = proof.clone();
            longer.push(r2);
            assert!(verify_consistency(m, n, &r1, &r2, &longer).is_err());
            let mut front = vec![proof[0]];
            front.extend_from_slice(&proof);
            assert!(verify_consistency(m, n, &r1, &r2, &front).is_err());
            assert!(verify_consistency(m, n, &r1, &r2, &proof[..proof.len() - 1]).is_err());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn flipped_byte_fails_inclusion(
        n in 1u64..=256,
        i_seed in any::<u64>(),
        which in any::<u16>(),
        byte in 0usize..32,
        mask in 1u8..=255,
    ) {
        let log = log_of(n as usize);
        let i = i_seed % n;
        let leaf = log.node(NodeId::leaf(i)).expect("leaf");
        let root = log.root(n).expect("root");
        let mut path = log.inclusion_proof(i, n).expect("proof");
        prop_assert!(verify_inclusion(&leaf, i, n, &path, &root).is_ok());
        let (mut leaf2, mut root2) = (leaf, root);
        match which as usize % (path.len() + 2) {
            0 => leaf2[byte] ^= mask,
            1 => root2[byte] ^= mask,
            k => path[k - 2][byte] ^= mask,
        }
        prop_assert!(verify_inclusion(&leaf2, i, n, &path, &root2).is_err());
    }

    #[test]
    fn flipped_byte_fails_consistency(
        n in 2u64..=256,
        m_seed in any::<u64>(),
        which in any::<u16>(),
        byte in 0usize..32,
        mask in 1u8..=255,
    ) {
        let log = log_of(n as usize);
        let m = 1 + m_seed % (n - 1);
        let (mut r1, mut r2) = (log.root(m).expect("r1"), log.root(n).expect("r2"));
        let mut proof = log.consistency_proof(m, n).expect("proof");
        prop_assert!(verify_consistency(m, n, &r1, &r2, &proof).is_ok());
        match which as usize % (proof.len() + 2) {
            0 => r1[byte] ^= mask,
            1 => r2[byte] ^= mask,
            k => proof[k - 2][byte] ^= mask,
        }
        prop_assert!(verify_consistency(m, n, &r1, &r2, &proof).is_err());
    }

    #[test]
    fn verifiers_never_panic(
        leaf in any::<[u8; 32]>(),
        index in any::<u64>(),
        size in any::<u64>(),
        path in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
    ) {
        let _ = verify_inclusion(&leaf, index, size, &path, &leaf);
        let _ = verify_consistency(index, size, &leaf, &leaf, &path);
        let _ = inclusion_plan(index, size).map(|p| p.nodes().len());
        let _ = consistency_plan(index, size).map(|p| p.nodes().len());
    }
}
