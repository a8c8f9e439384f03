//! Criterion benchmarks of the pure core: decoding, classification and
//! mapping of one event, and proof-log work in memory.
//!
//!     cargo bench --bench pure

use chartbridge::classify::Rules;
use chartbridge::config::Config;
use chartbridge::map::MapSettings;
use chartbridge::prove::merkle::MemoryLog;
use criterion::{Criterion, criterion_group, criterion_main};

fn settings() -> MapSettings {
    let text = "[broker]\nurl = \"amqp://127.0.0.1\"\n[store]\nkey_file = \"k\"\n[kis]\nbase_url = \"http://x\"\nallow_plaintext = true\n";
    MapSettings::from(
        &Config::from_parts(std::path::Path::new("b.toml"), text, std::iter::empty())
            .unwrap()
            .kis,
    )
}

fn core(c: &mut Criterion) {
    let rules = Rules::load(std::path::Path::new("mappings/rules.toml")).unwrap();
    let settings = settings();
    let now = chrono::DateTime::UNIX_EPOCH;
    for name in ["text-canonical", "image-canonical", "whatsapp-text-image"] {
        let payload = std::fs::read(format!("fixtures/events/{name}.json")).unwrap();
        c.bench_function(&format!("decode/{name}"), |b| {
            b.iter(|| chartbridge::event::decode(&payload, usize::MAX).unwrap())
        });
        if name != "whatsapp-text-image" {
            c.bench_function(&format!("decode+classify+map/{name}"), |b| {
                b.iter(|| {
                    chartbridge::app::offline_map(
                        &payload,
                        &rules,
                        &settings,
                        Some("Patient/1"),
                        now,
                    )
                    .unwrap()
                })
            });
        }
    }
    let mut log = MemoryLog::new();
    for i in 0..100_000u32 {
        log.append(&i.to_be_bytes());
    }
    c.bench_function("merkle/append (100k log)", |b| {
        b.iter(|| log.append(b"leaf"))
    });
    c.bench_function("merkle/inclusion proof (100k log)", |b| {
        b.iter(|| log.inclusion_proof(4_242, 100_000).unwrap())
    });
}

criterion_group!(benches, core);
criterion_main!(benches);
