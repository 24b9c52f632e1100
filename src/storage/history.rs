//! Every pupil's current rows, held in memory beside the store, so scoring a feed reads its
//! pupils' history from a map instead of the UPN index and the packed rows of every earlier
//! submission (about a quarter of bulk submission's CPU).
//!
//! The cache is labelled with the latest submission id whose rows it holds, and current rows
//! change only when a submission is accepted (a new id). A reader uses it only when that
//! label equals the latest submission id its own snapshot holds, so what it reads is exactly
//! what the snapshot would have given; otherwise it reads the store. Each accepted
//! submission is applied after its commit, still under the write lock, and only onto the
//! state it was written over; anything else (a write from another process, say) turns the
//! cache off for good, and the store is read as before.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::domain::{PupilTerm, SchoolTerm};

/// Beyond this many rows (about 150 bytes each) the store is read instead.
pub const MAX_CACHED_ROWS: usize = 1_000_000;

/// What one accepted submission changed: its rows replace those of the submission it
/// superseded (same school and term), if any.
#[derive(Debug, Clone)]
pub struct HistoryDelta {
    /// The latest submission id before this one was written.
    pub previous: i64,
    pub id: i64,
    pub school_term: SchoolTerm,
    /// The pupils of the superseded submission, whose rows for `school_term` go.
    pub superseded: Vec<String>,
    pub rows: Vec<PupilTerm>,
}

#[derive(Debug, Default)]
enum State {
    /// Not built yet: the next reader that finds it so builds it.
    #[default]
    Empty,
    /// A reader is reading every row from its snapshot; submissions committed meanwhile
    /// wait here, in commit order, to be applied once it is installed.
    Building(Vec<HistoryDelta>),
    Ready(Cached),
    /// Too large, or it missed a change: the store is read instead.
    Off,
}

#[derive(Debug)]
struct Cached {
    version: i64,
    rows: usize,
    by_upn: HashMap<String, Vec<(SchoolTerm, PupilTerm)>>,
}

#[derive(Debug)]
pub struct HistoryCache {
    state: RwLock<State>,
    limit: usize,
}

impl Default for HistoryCache {
    fn default() -> Self {
        Self::with_limit(MAX_CACHED_ROWS)
    }
}

impl HistoryCache {
    /// A cache that holds at most `limit` rows.
    pub fn with_limit(limit: usize) -> Self {
        Self { state: RwLock::default(), limit }
    }

    /// The current rows of `upns` (at every school and term but `except`), ordered by school,
    /// term and UPN as the store gives them, if the cache holds exactly the state with
    /// latest submission `version`.
    pub fn rows_of<'a>(
        &self,
        version: i64,
        upns: impl IntoIterator<Item = &'a str>,
        except: Option<SchoolTerm>,
    ) -> Option<Vec<(SchoolTerm, PupilTerm)>> {
        let mut upns: Vec<&str> = upns.into_iter().collect();
        upns.sort_unstable();
        upns.dedup();
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let State::Ready(c) = &*state else { return None };
        if c.version != version {
            return None;
        }
        let mut out = Vec::new();
        for u in upns {
            if let Some(rows) = c.by_upn.get(u) {
                out.extend(rows.iter().filter(|(st, _)| Some(*st) != except).cloned());
            }
        }
        drop(state);
        out.sort_by(|a, b| (a.0.urn, a.0.term, a.1.upn.as_str()).cmp(&(b.0.urn, b.0.term, b.1.upn.as_str())));
        Some(out)
    }

    /// Whether a reader should build the cache: true once, for the first caller that finds
    /// it empty, which must then call [`HistoryCache::fill`].
    pub fn claim_build(&self) -> bool {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::Empty) {
            *state = State::Building(Vec::new());
            true
        } else {
            false
        }
    }

    /// Installs every current row as of latest submission `version` (after `claim_build`),
    /// or gives up on the cache when there are too many, or they could not be read (`None`).
    pub fn fill(&self, version: i64, rows: Option<Vec<(SchoolTerm, PupilTerm)>>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let State::Building(pending) = std::mem::take(&mut *state) else { return };
        let Some(rows) = rows else {
            *state = State::Off;
            return;
        };
        let mut by_upn: HashMap<String, Vec<(SchoolTerm, PupilTerm)>> = HashMap::new();
        let n = rows.len();
        for (st, r) in rows {
            by_upn.entry(r.upn.as_str().to_owned()).or_default().push((st, r));
        }
        let mut c = Cached { version, rows: n, by_upn };
        // Submissions committed before the snapshot was taken are in it already.
        let fits = pending.into_iter().filter(|d| d.id > version).all(|d| c.apply(d));
        tracing::debug!(rows = c.rows, pupils = c.by_upn.len(), "history cache built");
        *state = if fits && !c.too_large(self.limit) { State::Ready(c) } else { State::Off };
    }

    /// Applies one committed submission. Called in commit order, under the write lock.
    pub fn apply(&self, d: HistoryDelta) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            State::Ready(c) => {
                if !c.apply(d) || c.too_large(self.limit) {
                    *state = State::Off;
                }
            }
            State::Building(pending) => {
                pending.push(d);
                // A build that never finishes (its reader failed) must not hold every feed.
                if pending.iter().map(|d| d.rows.len()).sum::<usize>() > self.limit {
                    *state = State::Off;
                }
            }
            State::Empty | State::Off => {}
        }
    }
}

impl Cached {
    /// Applies `d` if it was written over exactly this state; false (and unchanged) if not.
    fn apply(&mut self, d: HistoryDelta) -> bool {
        if self.version != d.previous || d.id <= self.version {
            tracing::warn!(
                "a submission was written that this process did not see; pupils' history is read from disk from now on"
            );
            return false;
        }
        for u in &d.superseded {
            if let Some(rows) = self.by_upn.get_mut(u.as_str()) {
                let before = rows.len();
                rows.retain(|(st, _)| *st != d.school_term);
                self.rows -= before - rows.len();
                if rows.is_empty() {
                    self.by_upn.remove(u.as_str());
                }
            }
        }
        for r in d.rows {
            let rows = self.by_upn.entry(r.upn.as_str().to_owned()).or_default();
            let before = rows.len();
            rows.retain(|(st, _)| *st != d.school_term);
            self.rows = self.rows - (before - rows.len()) + 1;
            rows.push((d.school_term, r));
        }
        self.version = d.id;
        true
    }

    fn too_large(&self, limit: usize) -> bool {
        let over = self.rows > limit;
        if over {
            tracing::info!(rows = self.rows, "the store's history is read from disk: too large to hold in memory");
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Term, Urn};

    fn rows() -> Vec<PupilTerm> {
        crate::ingest::parse_csv(include_bytes!("../../tests/fixtures/valid-feed.csv")).unwrap().rows
    }

    fn st(urn: u32, term: usize) -> SchoolTerm {
        let mut t = Term::parse("2024/25", "autumn").unwrap();
        for _ in 0..term {
            t = t.next();
        }
        SchoolTerm { urn: Urn::new(urn).unwrap(), term: t }
    }

    fn delta(previous: i64, id: i64, at: SchoolTerm, superseded: &[PupilTerm], rows: &[PupilTerm]) -> HistoryDelta {
        HistoryDelta {
            previous,
            id,
            school_term: at,
            superseded: superseded.iter().map(|r| r.upn.as_str().to_owned()).collect(),
            rows: rows.to_vec(),
        }
    }

    fn upns(rows: &[PupilTerm]) -> impl Iterator<Item = &str> {
        rows.iter().map(|r| r.upn.as_str())
    }

    #[test]
    fn submissions_committed_while_it_is_built_are_applied_in_order_and_earlier_ones_once() {
        let r = rows();
        let cache = HistoryCache::default();
        assert!(cache.rows_of(0, upns(&r), None).is_none(), "not built yet");
        assert!(cache.claim_build());
        assert!(!cache.claim_build(), "one reader builds it");
        // Submission 1 committed before the builder's snapshot (so it is in the rows read)
        // but was applied after the build was claimed; submission 2 committed during the read.
        cache.apply(delta(0, 1, st(100001, 0), &[], &r));
        cache.apply(delta(1, 2, st(100001, 1), &[], &r[..3]));
        assert!(cache.rows_of(1, upns(&r), None).is_none(), "not installed while building");
        cache.fill(1, Some(r.iter().map(|x| (st(100001, 0), x.clone())).collect()));
        assert!(cache.rows_of(1, upns(&r), None).is_none(), "a snapshot older than the cache is not served");
        let got = cache.rows_of(2, upns(&r), None).unwrap();
        assert_eq!(got.len(), r.len() + 3, "submission 1 once, submission 2's three pupils");
        let mut want: Vec<(SchoolTerm, PupilTerm)> = r.iter().map(|x| (st(100001, 0), x.clone())).collect();
        want.extend(r[..3].iter().map(|x| (st(100001, 1), x.clone())));
        want.sort_by(|a, b| (a.0.urn, a.0.term, a.1.upn.as_str()).cmp(&(b.0.urn, b.0.term, b.1.upn.as_str())));
        assert_eq!(got, want, "ordered by school, term and UPN");
        let earlier = cache.rows_of(2, upns(&r[..1]), Some(st(100001, 1))).unwrap();
        assert_eq!(earlier, vec![(st(100001, 0), r[0].clone())], "one pupil, without the term excepted");
    }

    #[test]
    fn a_correction_replaces_its_school_terms_rows_and_drops_pupils_it_no_longer_lists() {
        let r = rows();
        let cache = HistoryCache::default();
        assert!(cache.claim_build());
        cache.fill(0, Some(Vec::new()));
        cache.apply(delta(0, 1, st(100001, 0), &[], &r));
        cache.apply(delta(1, 2, st(100002, 1), &[], &r[..2]));
        let mut corrected = r[1..].to_vec();
        corrected[0].suspensions = 3;
        cache.apply(delta(2, 3, st(100001, 0), &r, &corrected));
        let got = cache.rows_of(3, upns(&r), None).unwrap();
        assert_eq!(got.len(), corrected.len() + 2);
        assert!(!got.iter().any(|(s, x)| *s == st(100001, 0) && x.upn == r[0].upn), "dropped by the correction");
        assert_eq!(got.iter().filter(|(_, x)| x.upn == r[0].upn).count(), 1, "its other school's row stays");
        assert!(got.contains(&(st(100001, 0), corrected[0].clone())), "the corrected row replaces the first");
        assert!(!got.contains(&(st(100001, 0), r[1].clone())));
    }

    #[test]
    fn a_change_it_did_not_see_or_a_failed_read_turns_it_off_for_good() {
        let r = rows();
        let cache = HistoryCache::default();
        assert!(cache.claim_build());
        cache.fill(4, Some(Vec::new()));
        cache.apply(delta(5, 6, st(100001, 0), &[], &r));
        assert!(cache.rows_of(6, upns(&r), None).is_none());
        assert!(cache.rows_of(4, upns(&r), None).is_none());
        assert!(!cache.claim_build(), "not built again");

        let failed = HistoryCache::default();
        assert!(failed.claim_build());
        failed.fill(0, None);
        assert!(failed.rows_of(0, upns(&r), None).is_none());
        assert!(!failed.claim_build());
    }

    #[test]
    fn more_rows_than_its_limit_turn_it_off() {
        let r = rows();
        let cache = HistoryCache::with_limit(r.len() + 2);
        assert!(cache.claim_build());
        cache.fill(0, Some(Vec::new()));
        cache.apply(delta(0, 1, st(100001, 0), &[], &r));
        assert!(cache.rows_of(1, upns(&r), None).is_some(), "within the limit");
        cache.apply(delta(1, 2, st(100001, 1), &[], &r));
        assert!(cache.rows_of(2, upns(&r), None).is_none(), "over it");

        let built_too_large = HistoryCache::with_limit(1);
        assert!(built_too_large.claim_build());
        built_too_large.fill(0, Some(r.iter().map(|x| (st(100001, 0), x.clone())).collect()));
        assert!(built_too_large.rows_of(0, upns(&r), None).is_none());
    }
}
