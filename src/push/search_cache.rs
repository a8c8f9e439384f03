//! A bounded cache of KIS identifier searches (`GET {type}?identifier=
//! {system}|{value}` → `Type/id`), so a conversation's messages do not
//! search the same Patient and Encounter again and again.
//!
//! Only matches are kept (a search that found nothing is asked again), for
//! `kis.search_cache_ttl` at most, `kis.search_cache_size` entries at most
//! (expired entries go first, then the oldest). The ADT feed invalidates
//! every entry of an identifier value an ADT message names (PID-3, MRG-1,
//! PV1-19) before it searches or applies anything, and again after: an
//! update or merge is seen by the next message. Other workers' feeds do not
//! reach this cache; the TTL bounds how long they may go unseen. Values are
//! held as SHA-256 digests, never in clear.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// `(resource type, system, SHA-256 of the value)`.
type Key = (String, String, [u8; 32]);

#[derive(Debug)]
struct Inner {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<Key, (String, Instant)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Shared by clones; disabled (every lookup misses, nothing is kept) when
/// the TTL or the size is zero.
#[derive(Debug, Clone, Default)]
pub struct SearchCache {
    inner: Option<Arc<Inner>>,
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

impl SearchCache {
    /// A cache keeping matches for `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        if ttl.is_zero() || capacity == 0 {
            return Self::default();
        }
        Self {
            inner: Some(Arc::new(Inner {
                ttl,
                capacity,
                entries: Mutex::new(HashMap::new()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            })),
        }
    }

    /// The cached `Type/id` for an identifier, unless expired or absent.
    pub fn get(&self, resource_type: &str, system: &str, value: &str) -> Option<String> {
        let inner = self.inner.as_ref()?;
        let key = (resource_type.to_owned(), system.to_owned(), digest(value));
        let mut entries = inner.entries.lock().expect("search cache lock");
        let found = match entries.get(&key) {
            Some((reference, at)) if at.elapsed() < inner.ttl => Some(reference.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        };
        let counter = if found.is_some() {
            &inner.hits
        } else {
            &inner.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps a match; makes room first when full.
    pub fn put(&self, resource_type: &str, system: &str, value: &str, reference: &str) {
        let Some(inner) = self.inner.as_ref() else {
            return;
        };
        let mut entries = inner.entries.lock().expect("search cache lock");
        if entries.len() >= inner.capacity {
            entries.retain(|_, (_, at)| at.elapsed() < inner.ttl);
        }
        if entries.len() >= inner.capacity
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(
            (resource_type.to_owned(), system.to_owned(), digest(value)),
            (reference.to_owned(), Instant::now()),
        );
    }

    /// Forgets every entry of these identifier values, in any type and
    /// system. Returns how many were forgotten.
    pub fn invalidate<'a>(&self, values: impl IntoIterator<Item = &'a str>) -> usize {
        let Some(inner) = self.inner.as_ref() else {
            return 0;
        };
        let gone: Vec<[u8; 32]> = values.into_iter().map(digest).collect();
        if gone.is_empty() {
            return 0;
        }
        let mut entries = inner.entries.lock().expect("search cache lock");
        let before = entries.len();
        entries.retain(|(_, _, d), _| !gone.contains(d));
        before - entries.len()
    }

    /// Entries held now (expired ones included until they are touched).
    pub fn len(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |i| i.entries.lock().expect("search cache lock").len())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(hits, misses)` of [`SearchCache::get`] so far.
    pub fn stats(&self) -> (u64, u64) {
        self.inner.as_ref().map_or((0, 0), |i| {
            (
                i.hits.load(Ordering::Relaxed),
                i.misses.load(Ordering::Relaxed),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS: &str = "https://kis.example-hospital.invalid/sid/patient-id";

    #[test]
    fn keeps_matches_by_type_system_and_value() {
        let c = SearchCache::new(Duration::from_secs(60), 10);
        assert_eq!(c.get("Patient", SYS, "P-1"), None);
        c.put("Patient", SYS, "P-1", "Patient/1");
        assert_eq!(c.get("Patient", SYS, "P-1").as_deref(), Some("Patient/1"));
        assert_eq!(c.get("Encounter", SYS, "P-1"), None);
        assert_eq!(c.get("Patient", "urn:other", "P-1"), None);
        assert_eq!(c.get("Patient", SYS, "P-2"), None);
        assert_eq!(c.stats(), (1, 4));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = SearchCache::new(Duration::from_millis(30), 10);
        c.put("Patient", SYS, "P-1", "Patient/1");
        assert!(c.get("Patient", SYS, "P-1").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get("Patient", SYS, "P-1"), None);
        assert!(c.is_empty());
    }

    #[test]
    fn size_is_bounded_and_the_oldest_goes_first() {
        let c = SearchCache::new(Duration::from_secs(60), 3);
        for i in 0..3 {
            c.put("Patient", SYS, &format!("P-{i}"), &format!("Patient/{i}"));
            std::thread::sleep(Duration::from_millis(2));
        }
        c.put("Patient", SYS, "P-3", "Patient/3");
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("Patient", SYS, "P-0"), None);
        assert!(c.get("Patient", SYS, "P-3").is_some());
    }

    #[test]
    fn invalidation_forgets_a_value_in_every_type_and_system() {
        let c = SearchCache::new(Duration::from_secs(60), 10);
        c.put("Patient", SYS, "P-1", "Patient/1");
        c.put("Patient", "urn:other", "P-1", "Patient/9");
        c.put("Encounter", SYS, "F-1", "Encounter/1");
        assert_eq!(c.invalidate(["P-1", "unknown"]), 2);
        assert_eq!(c.get("Patient", SYS, "P-1"), None);
        assert!(c.get("Encounter", SYS, "F-1").is_some());
    }

    #[test]
    fn a_zero_ttl_or_size_disables_it() {
        for c in [
            SearchCache::new(Duration::ZERO, 10),
            SearchCache::new(Duration::from_secs(60), 0),
        ] {
            c.put("Patient", SYS, "P-1", "Patient/1");
            assert_eq!(c.get("Patient", SYS, "P-1"), None);
            assert_eq!(c.stats(), (0, 0));
        }
    }
}
