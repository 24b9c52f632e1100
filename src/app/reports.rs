//! Short-lived, in-memory state for uploads: rejected feeds' full reports (never written to
//! the database: they quote pupils' cells) and each key's count of open uploads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ingest::Rejected;

/// How long a rejection's full report can be fetched.
pub const REPORT_TTL: Duration = Duration::from_secs(15 * 60);
/// Most reports kept at once; the oldest goes first. Each is at most ~2,000 capped messages.
const MAX_REPORTS: usize = 256;

struct Entry {
    key_id: i64,
    at: Instant,
    report: Arc<Rejected>,
}

#[derive(Default)]
pub struct Reports {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Reports {
    /// Keeps a report for the key that submitted it; returns its id.
    pub fn put(&self, key_id: i64, report: Arc<Rejected>) -> String {
        let id = format!("rpt_{}", uuid::Uuid::new_v4().simple());
        let now = Instant::now();
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, e| now.duration_since(e.at) < REPORT_TTL);
        if m.len() >= MAX_REPORTS
            && let Some(oldest) = m.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(id.clone(), Entry { key_id, at: now, report });
        id
    }

    /// The report, if it exists, is still fresh and belongs to this key.
    pub fn get(&self, key_id: i64, id: &str) -> Option<Arc<Rejected>> {
        let m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id).filter(|e| e.key_id == key_id && e.at.elapsed() < REPORT_TTL).map(|e| e.report.clone())
    }
}

/// Open uploads per key.
#[derive(Default)]
pub struct KeySlots {
    open: Mutex<HashMap<i64, usize>>,
}

/// One open upload; dropping it frees the slot.
pub struct KeySlot {
    slots: Arc<KeySlots>,
    key_id: i64,
}

impl KeySlots {
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    pub fn take(self: &Arc<Self>, key_id: i64, max: usize) -> Option<KeySlot> {
        let mut m = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key_id).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(KeySlot { slots: self.clone(), key_id })
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut m = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key_id) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Arc<Rejected> {
        Arc::new(Rejected { errors: vec![], error_count: 1, warnings: vec![], warning_count: 0, records: false })
    }

    #[test]
    fn a_report_is_only_for_the_key_that_submitted_it() {
        let r = Reports::default();
        let id = r.put(7, report());
        assert!(r.get(7, &id).is_some());
        assert!(r.get(8, &id).is_none());
        assert!(r.get(7, "rpt_other").is_none());
    }

    #[test]
    fn the_oldest_report_goes_when_the_store_is_full() {
        let r = Reports::default();
        let first = r.put(1, report());
        for _ in 0..MAX_REPORTS {
            r.put(1, report());
        }
        assert!(r.get(1, &first).is_none());
        assert_eq!(r.entries.lock().unwrap().len(), MAX_REPORTS);
    }

    #[test]
    fn key_slots_are_counted_and_freed() {
        let s = Arc::new(KeySlots::default());
        let a = s.take(1, 2).unwrap();
        let _b = s.take(1, 2).unwrap();
        assert!(s.take(1, 2).is_none());
        assert!(s.take(2, 2).is_some(), "another key is not affected");
        drop(a);
        assert!(s.take(1, 2).is_some());
    }
}
