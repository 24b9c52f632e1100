//! Every pupil's current rows, held in memory beside the store, so scoring a feed reads its
//! pupils' history from a map instead of the UPN index and the packed rows of every earlier
//! submission (about a quarter of bulk submission's CPU).
//!
//! The cache is labelled with the latest submission id whose rows it holds, and current rows
//! change only when a submission is accepted (a new id). A reader uses it only when that
//! label equals the latest submission id its own snapshot holds, so what it reads is exactly
//! what the snapshot would have given; otherwise it reads the store. Each accepted
//! submission is applied in commit order, and only onto the state it was written over;
//! anything else (a write from another process, say) turns the cache off for good, and the
//! store is read as before.
//!
//! Each pupil's rows are kept as the store keeps them (encoded bytes, one allocation per
//! pupil), about 60 bytes a row, and decoded when read.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockWriteGuard};

use super::StoreResult;
use super::packed::{Format, Packed};
use crate::domain::{PupilTerm, SchoolTerm, Term, Urn};

/// Beyond this many rows the store is read instead.
pub const MAX_CACHED_ROWS: usize = 2_000_000;

/// A UPN's bytes (every UPN is 13 ASCII characters).
pub type Key = [u8; 13];

pub fn key(upn: &str) -> Option<Key> {
    upn.as_bytes().try_into().ok()
}

/// What one accepted submission changed: its rows replace those of the submission it
/// superseded (same school and term), if any.
pub struct HistoryDelta {
    /// The latest submission id before this one was written.
    pub previous: i64,
    pub id: i64,
    pub school_term: SchoolTerm,
    /// The pupils of the superseded submission, whose rows for `school_term` go.
    pub superseded: Vec<String>,
    /// Its rows, packed as they were stored (in UPN order).
    pub rows: Packed,
}

impl HistoryDelta {
    fn row_count(&self) -> usize {
        self.rows.len()
    }
}

/// Counts only: the UPNs it holds never reach a log.
impl std::fmt::Debug for HistoryDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryDelta")
            .field("previous", &self.previous)
            .field("id", &self.id)
            .field("school_term", &self.school_term)
            .field("superseded", &self.superseded.len())
            .field("rows", &self.rows.len())
            .finish()
    }
}

#[derive(Default)]
enum State {
    /// Not built yet: the next reader that finds it so builds it.
    #[default]
    Empty,
    /// A reader is reading every row from its snapshot; submissions committed meanwhile
    /// wait here, in commit order, to be applied once it is installed.
    Building {
        pending: Vec<HistoryDelta>,
        rows: usize,
    },
    Ready(Cached),
    /// Too large, or it missed a change: the store is read instead.
    Off,
}

struct Cached {
    version: i64,
    rows: usize,
    /// Per pupil, entries of: urn (u32), term index (u32), format (u8), length (u32), bytes.
    /// Ordered (a B-tree, not a hash table): a feed's pupils are looked up and added in UPN
    /// order, and real UPNs cluster by the school that gave them, so each feed touches few
    /// nodes; and it grows without rehashing the whole map inside the lock.
    by_upn: BTreeMap<Key, Vec<u8>>,
}

const HEAD: usize = 13;

fn push_entry(blob: &mut Vec<u8>, st: SchoolTerm, format: Format, bytes: &[u8]) {
    if blob.is_empty() {
        // Most pupils' first row is their only one for a while: no room to spare.
        blob.reserve_exact(HEAD + bytes.len());
    }
    push_raw(blob, raw(st), format as u8, bytes);
}

/// One entry: urn, term index, format byte, length, bytes.
fn push_raw(blob: &mut Vec<u8>, (urn, term): (u32, u32), format: u8, bytes: &[u8]) {
    blob.extend_from_slice(&urn.to_le_bytes());
    blob.extend_from_slice(&term.to_le_bytes());
    blob.push(format);
    blob.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    blob.extend_from_slice(bytes);
}

/// A blob's entries: ((urn, term index), format byte, bytes).
fn entries(blob: &[u8]) -> impl Iterator<Item = ((u32, u32), u8, &[u8])> {
    let mut rest = blob;
    std::iter::from_fn(move || {
        if rest.len() < HEAD {
            return None;
        }
        let word = |at: usize| u32::from_le_bytes(rest[at..at + 4].try_into().expect("four bytes"));
        let (urn, term, format, len) = (word(0), word(4), rest[8], word(9) as usize);
        let bytes = rest.get(HEAD..HEAD + len)?;
        let out = ((urn, term), format, bytes);
        rest = &rest[HEAD + len..];
        Some(out)
    })
}

fn raw(st: SchoolTerm) -> (u32, u32) {
    (st.urn.get(), st.term.index())
}

/// Drops a blob's entries for `st`; how many went.
fn remove_term(blob: &mut Vec<u8>, st: SchoolTerm) -> usize {
    let at = raw(st);
    if !entries(blob).any(|(t, _, _)| t == at) {
        return 0;
    }
    let mut kept = Vec::with_capacity(blob.len());
    let mut removed = 0;
    for (t, format, bytes) in entries(blob) {
        if t == at {
            removed += 1;
        } else {
            push_raw(&mut kept, t, format, bytes);
        }
    }
    *blob = kept;
    removed
}

fn too_large(rows: usize, limit: usize) -> bool {
    let over = rows > limit;
    if over {
        tracing::info!(rows, limit, "the store's history is read from disk: too large to hold in memory");
    }
    over
}

pub struct HistoryCache {
    state: RwLock<State>,
    limit: usize,
}

/// Its state and size only: the UPNs it holds never reach a log.
impl std::fmt::Debug for HistoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state.try_read().as_deref() {
            Ok(State::Empty) => "empty".to_owned(),
            Ok(State::Building { .. }) => "building".to_owned(),
            Ok(State::Ready(c)) => format!("{} rows of {} pupils at submission {}", c.rows, c.by_upn.len(), c.version),
            Ok(State::Off) => "off".to_owned(),
            Err(_) => "locked".to_owned(),
        };
        f.debug_struct("HistoryCache").field("state", &state).field("limit", &self.limit).finish()
    }
}

impl Default for HistoryCache {
    fn default() -> Self {
        Self::with_limit(MAX_CACHED_ROWS)
    }
}

/// The cache locked for applying one committed submission: taken before the write lock is
/// released, so submissions are applied in commit order, and applied after it is released.
pub struct Applying<'a> {
    state: RwLockWriteGuard<'a, State>,
    limit: usize,
}

impl HistoryCache {
    /// A cache that holds at most `limit` rows.
    pub fn with_limit(limit: usize) -> Self {
        Self { state: RwLock::default(), limit }
    }

    /// The most rows it holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A panic while the lock was held may have left a submission half applied: the cache is
    /// then turned off, never served.
    fn write(&self) -> RwLockWriteGuard<'_, State> {
        match self.state.write() {
            Ok(g) => g,
            Err(p) => {
                let mut g = p.into_inner();
                *g = State::Off;
                self.state.clear_poison();
                g
            }
        }
    }

    /// The current rows of `upns` (at every school and term but `except`), ordered by school,
    /// term and UPN as the store gives them, if the cache holds exactly the state with
    /// latest submission `version` (and every row decodes; otherwise the store is read and
    /// reports what it finds).
    pub fn rows_of<'a>(
        &self,
        version: i64,
        upns: impl IntoIterator<Item = &'a str>,
        except: Option<SchoolTerm>,
    ) -> Option<Vec<(SchoolTerm, PupilTerm)>> {
        let mut keys: Vec<Key> = upns.into_iter().map(key).collect::<Option<_>>()?;
        keys.sort_unstable();
        keys.dedup();
        let except = except.map(raw);
        // Each pupil's entries copied out under the lock, decoded after it.
        let blobs: Vec<Vec<u8>> = {
            let state = self.state.read().ok()?;
            let State::Ready(c) = &*state else { return None };
            if c.version != version {
                return None;
            }
            keys.iter().filter_map(|k| c.by_upn.get(k).cloned()).collect()
        };
        let mut out = Vec::new();
        for ((urn, term), format, bytes) in blobs.iter().flat_map(|b| entries(b)).filter(|(t, _, _)| Some(*t) != except)
        {
            let st = SchoolTerm { urn: Urn::new(urn).ok()?, term: Term::from_index(term) };
            out.push((st, super::packed::decode::<PupilTerm>(Format::from_byte(format)?, bytes, "a pupil row").ok()?));
        }
        super::submissions::sort_history(&mut out);
        Some(out)
    }

    /// Whether a reader should build the cache: true once, for the first caller that finds
    /// it empty, which must then call [`HistoryCache::fill`].
    pub fn claim_build(&self) -> bool {
        let mut state = self.write();
        if matches!(*state, State::Empty) {
            *state = State::Building { pending: Vec::new(), rows: 0 };
            true
        } else {
            false
        }
    }

    /// Installs every current submission's packed rows as of latest submission `version`
    /// (after `claim_build`), or gives up on the cache for good when they could not be read
    /// or are too many. The map is made before the lock is taken: meanwhile, commits only
    /// add to the pending list, and no writer waits for the build.
    pub fn fill(&self, version: i64, packs: StoreResult<Vec<(SchoolTerm, Packed)>>) {
        let built = match packs {
            Ok(packs) => Cached::of(version, &packs, self.limit),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the store's history into memory; reading it from disk");
                None
            }
        };
        let mut state = self.write();
        // Off unless installed below; and a cache turned off meanwhile stays off.
        let State::Building { pending, .. } = std::mem::replace(&mut *state, State::Off) else { return };
        let Some(mut c) = built else { return };
        // Submissions committed before the snapshot was taken are in it already.
        let fits = pending.into_iter().filter(|d| d.id > version).all(|d| c.apply(d));
        if fits && !c.too_large(self.limit) {
            tracing::debug!(rows = c.rows, pupils = c.by_upn.len(), "history cache built");
            *state = State::Ready(c);
        }
    }

    /// Gives up on the cache for good (a reader found the store too large to hold).
    pub fn give_up(&self) {
        *self.write() = State::Off;
    }

    /// Locks the cache to apply a submission just committed; see [`Applying`].
    pub fn applying(&self) -> Applying<'_> {
        Applying { state: self.write(), limit: self.limit }
    }

    /// Applies one committed submission (tests; the store uses [`HistoryCache::applying`]).
    #[cfg(test)]
    pub fn apply(&self, d: HistoryDelta) {
        self.applying().apply(d);
    }
}

impl Applying<'_> {
    pub fn apply(mut self, d: HistoryDelta) {
        let state = &mut *self.state;
        match state {
            State::Ready(c) => {
                if !c.apply(d) || c.too_large(self.limit) {
                    *state = State::Off;
                }
            }
            State::Building { pending, rows } => {
                *rows += d.row_count();
                pending.push(d);
                // A build that never finishes (its reader failed) must not hold every feed.
                if *rows > self.limit {
                    *state = State::Off;
                }
            }
            State::Empty | State::Off => {}
        }
    }
}

impl Cached {
    /// Every row of `packs`, unless there are more than `limit`.
    fn of(version: i64, packs: &[(SchoolTerm, Packed)], limit: usize) -> Option<Self> {
        let rows: usize = packs.iter().map(|(_, p)| p.len()).sum();
        if too_large(rows, limit) {
            return None;
        }
        let mut c = Cached { version, rows: 0, by_upn: BTreeMap::new() };
        for (st, packed) in packs {
            for e in packed.iter() {
                push_entry(c.by_upn.entry(key(e.upn)?).or_default(), *st, e.format, e.bytes);
                c.rows += 1;
            }
        }
        Some(c)
    }

    /// Applies `d` if it was written over exactly this state; false if not.
    fn apply(&mut self, d: HistoryDelta) -> bool {
        if self.version != d.previous || d.id <= self.version {
            tracing::warn!(
                "a submission was written that this process did not see; pupils' history is read from disk from now on"
            );
            return false;
        }
        let Some(mut superseded) = d.superseded.iter().map(|u| key(u)).collect::<Option<Vec<Key>>>() else {
            return false;
        };
        superseded.sort_unstable();
        for k in superseded {
            if let Some(blob) = self.by_upn.get_mut(&k) {
                self.rows -= remove_term(blob, d.school_term);
                if blob.is_empty() {
                    self.by_upn.remove(&k);
                }
            }
        }
        for e in d.rows.iter() {
            let Some(k) = key(e.upn) else { return false };
            let blob = self.by_upn.entry(k).or_default();
            // Never two rows of one school and term for a pupil (a feed lists each pupil once).
            self.rows -= remove_term(blob, d.school_term);
            push_entry(blob, d.school_term, e.format, e.bytes);
            self.rows += 1;
        }
        self.version = d.id;
        true
    }

    fn too_large(&self, limit: usize) -> bool {
        too_large(self.rows, limit)
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
            rows: packs(at, rows).unwrap().pop().unwrap().1,
        }
    }

    /// `rows` packed as the store keeps a submission's rows.
    fn packs(at: SchoolTerm, rows: &[PupilTerm]) -> StoreResult<Vec<(SchoolTerm, Packed)>> {
        use super::super::packed::{COLUMNS, Kind, pack};
        let bytes: Vec<Vec<u8>> = rows.iter().map(|r| super::super::codec::encode(r).unwrap()).collect();
        let (entries, data) = pack(
            Kind::Rows,
            rows.iter().zip(&bytes).map(|(r, b)| (r.upn.as_str(), Format::Postcard, &b[..], [0.0; COLUMNS])),
        )
        .unwrap();
        Ok(vec![(at, Packed::new(Kind::Rows, entries, data).unwrap())])
    }

    /// A cache built from an empty store (latest submission 0), holding at most `limit` rows.
    fn built_empty(limit: usize) -> HistoryCache {
        let cache = HistoryCache::with_limit(limit);
        assert!(cache.claim_build());
        cache.fill(0, Ok(Vec::new()));
        cache
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
        cache.fill(1, packs(st(100001, 0), &r));
        assert!(cache.rows_of(1, upns(&r), None).is_none(), "a snapshot older than the cache is not served");
        let got = cache.rows_of(2, upns(&r), None).unwrap();
        assert_eq!(got.len(), r.len() + 3, "submission 1 once, submission 2's three pupils");
        let mut want: Vec<(SchoolTerm, PupilTerm)> = r.iter().map(|x| (st(100001, 0), x.clone())).collect();
        want.extend(r[..3].iter().map(|x| (st(100001, 1), x.clone())));
        super::super::submissions::sort_history(&mut want);
        assert_eq!(got, want, "ordered by school, term and UPN");
        let earlier = cache.rows_of(2, upns(&r[..1]), Some(st(100001, 1))).unwrap();
        assert_eq!(earlier, vec![(st(100001, 0), r[0].clone())], "one pupil, without the term excepted");
    }

    #[test]
    fn a_correction_replaces_its_school_terms_rows_and_drops_pupils_it_no_longer_lists() {
        let r = rows();
        let cache = built_empty(MAX_CACHED_ROWS);
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
        cache.fill(4, Ok(Vec::new()));
        cache.apply(delta(5, 6, st(100001, 0), &[], &r));
        assert!(cache.rows_of(6, upns(&r), None).is_none());
        assert!(cache.rows_of(4, upns(&r), None).is_none());
        assert!(!cache.claim_build(), "not built again");

        let failed = HistoryCache::default();
        assert!(failed.claim_build());
        failed.fill(0, Err(super::super::StoreError::Corrupt("unreadable".into())));
        assert!(failed.rows_of(0, upns(&r), None).is_none());
        assert!(!failed.claim_build());
    }

    #[test]
    fn more_rows_than_its_limit_turn_it_off() {
        let r = rows();
        let cache = built_empty(r.len() + 2);
        cache.apply(delta(0, 1, st(100001, 0), &[], &r));
        assert!(cache.rows_of(1, upns(&r), None).is_some(), "within the limit");
        cache.apply(delta(1, 2, st(100001, 1), &[], &r));
        assert!(cache.rows_of(2, upns(&r), None).is_none(), "over it");

        let built_too_large = HistoryCache::with_limit(1);
        assert!(built_too_large.claim_build());
        built_too_large.fill(0, packs(st(100001, 0), &r));
        assert!(built_too_large.rows_of(0, upns(&r), None).is_none());
    }

    #[test]
    fn a_cache_turned_off_while_it_is_built_stays_off() {
        let r = rows();
        let cache = HistoryCache::with_limit(r.len());
        assert!(cache.claim_build());
        // Commits during the build pile up past the limit: off, and the build is not installed.
        cache.apply(delta(0, 1, st(100001, 0), &[], &r));
        cache.apply(delta(1, 2, st(100001, 1), &[], &r));
        cache.fill(0, Ok(Vec::new()));
        assert!(cache.rows_of(2, upns(&r), None).is_none());
        assert!(!cache.claim_build(), "never built again");
    }

    #[test]
    fn a_panic_while_it_is_locked_turns_it_off_rather_than_serving_it() {
        let r = rows();
        let cache = built_empty(MAX_CACHED_ROWS);
        cache.apply(delta(0, 1, st(100001, 0), &[], &r));
        assert!(cache.rows_of(1, upns(&r), None).is_some());
        let poisoned = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = cache.state.write();
                panic!("while applying");
            })
            .join()
        });
        assert!(poisoned.is_err());
        assert!(cache.rows_of(1, upns(&r), None).is_none(), "not served");
        assert!(!cache.claim_build(), "off");
        assert!(cache.rows_of(1, upns(&r), None).is_none());
    }

    #[test]
    fn its_debug_form_shows_no_upn() {
        let r = rows();
        let cache = built_empty(MAX_CACHED_ROWS);
        let d = delta(0, 1, st(100001, 0), &r, &r);
        let shown = format!("{d:?} {cache:?}");
        cache.apply(d);
        let shown = format!("{shown} {cache:?}");
        assert!(shown.contains("rows of"), "{shown}");
        for x in &r {
            assert!(!shown.contains(x.upn.as_str()) && !shown.contains(&x.upn.as_str()[1..]), "{shown}");
        }
    }
}
