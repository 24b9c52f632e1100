//! The closed loop that tests the method against the truth: the generator makes a borough
//! term by term; riskid takes each term's feeds, proposes a cohort per school in the selection
//! term, and scripted link workers confirm it and finalise; from the next term the generator
//! shifts the supported children's latent risk by a chosen effect (zero by default) and records
//! what that truly changed. Runs in process on a temporary store.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::{Estimate, HORIZON, Measure};
use crate::app::{App, FeedBody, Limits};
use crate::auth::{Principal, Role};
use crate::cohort::{CohortParams, Policy};
use crate::domain::{SchoolTerm, Upn, Urn};
use crate::review::Kind;
use crate::storage::{NewKey, Store};
use crate::synth::{Simulation, WorldConfig, feed_csv};

#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub world: WorldConfig,
    /// How much support lowers the supported children's logits of absence, suspension and
    /// referral (0 = support that does nothing).
    pub effect: f64,
    /// The selection term, as an index into the world's terms (2 = the first summer).
    pub select: usize,
    pub capacity: usize,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            world: WorldConfig { schools: 12, years: 2, ..Default::default() },
            effect: 0.0,
            select: 2,
            capacity: 36,
        }
    }
}

/// What the loop found: riskid's estimate, and the truth it should find; and the running
/// application with its store and keys, for tests that read the report as clients do.
pub struct LoopResult {
    pub estimate: Estimate,
    /// The true effect, by (terms after selection, measure): the mean over the supported
    /// children the estimate is about (those with a match) seen that term, of (expected
    /// outcome with support − without).
    pub truth: HashMap<(u32, Measure), f64>,
    /// The same over every supported child seen (the unmatched, the highest risk, included).
    pub truth_all: HashMap<(u32, Measure), f64>,
    pub app: Arc<App>,
    /// (role, schools, the key itself) for an analyst, a school key covering every school, and
    /// a link worker for the first school.
    pub keys: Vec<(Role, BTreeSet<Urn>, String)>,
    pub schools: Vec<Urn>,
    /// The data directory, removed when the result is dropped.
    pub dir: tempfile::TempDir,
}

fn key(
    store: &Store,
    role: Role,
    schools: &BTreeSet<Urn>,
    keys: &mut Vec<(Role, BTreeSet<Urn>, String)>,
) -> anyhow::Result<Principal> {
    let (plain, hash, prefix) = crate::auth::generate_key();
    let id = store.create_key(
        &NewKey { key_hash: &hash, prefix: &prefix, role, schools, label: "closed loop", created_at: 0 },
        "operator:test",
    )?;
    keys.push((role, schools.clone(), plain));
    Ok(Principal { key_id: id, role, schools: schools.clone() })
}

pub async fn run(cfg: &LoopConfig) -> anyhow::Result<LoopResult> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(dir.path())?);
    let mut sim = Simulation::new(&cfg.world);
    let urns: BTreeSet<Urn> = sim.schools().iter().map(|s| s.urn).collect();
    let mut keys = Vec::new();
    let school = key(&store, Role::School, &urns, &mut keys)?;
    let link_worker = key(&store, Role::LinkWorker, &urns, &mut keys)?;
    let analyst = key(&store, Role::Analyst, &BTreeSet::new(), &mut keys)?;
    let first: BTreeSet<Urn> = urns.iter().take(1).copied().collect();
    key(&store, Role::LinkWorker, &first, &mut keys)?;
    let app = Arc::new(App::new(store, Limits::default())?);
    let terms = sim.terms().to_vec();
    let mut supported: Vec<Upn> = Vec::new();
    for (k, term) in terms.iter().enumerate() {
        let feeds = sim.next_term().expect("a term per index");
        for f in feeds {
            let pass = school.may_submit(f.urn)?;
            app.submit_feed(pass, *term, FeedBody::Csv(feed_csv(&f.rows)), None, false).await?;
        }
        if k == cfg.select {
            for &urn in &urns {
                let st = SchoolTerm { urn, term: *term };
                let params = CohortParams {
                    capacity: cfg.capacity,
                    min_year: 0,
                    max_year: 13,
                    policy: Policy::AnyAdverse,
                    seed: 7,
                };
                let c = app
                    .propose_cohort(
                        &link_worker,
                        crate::app::ProposeInput { school_term: st, params, force: false, request_id: None },
                    )
                    .await?;
                for m in &c.members {
                    let d = crate::app::DecisionInput {
                        cohort_id: c.id,
                        upn: m.upn.clone(),
                        kind: Kind::Confirm,
                        reason_code: String::new(),
                        note: String::new(),
                        request_id: None,
                    };
                    app.decide(&link_worker, d).await?;
                }
                let done = app.finalise(&link_worker, c.id, String::new(), None).await?;
                supported.extend(done.final_list());
            }
            sim.support(&supported, cfg.effect);
        }
    }
    let estimate = app.programme_estimate(&analyst, None).await?;
    // The truth over the supported children seen each term after selection.
    let select_index = terms[cfg.select].index();
    let mean_truth = |only: Option<&std::collections::HashSet<Upn>>| {
        let mut sums: HashMap<(u32, Measure), (f64, usize)> = HashMap::new();
        for t in sim.truth().iter().filter(|t| only.is_none_or(|o| o.contains(&t.upn))) {
            let k = t.term.index() - select_index;
            if k == 0 || k > HORIZON {
                continue;
            }
            for (m, v) in [
                (Measure::AttendanceRate, t.attendance),
                (Measure::PersistentAbsence, t.persistent_absence),
                (Measure::Suspension, t.suspension),
                (Measure::MhReferral, t.mh_referral),
            ] {
                let e = sums.entry((k, m)).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
        // With no effect the truth is exactly 0 (the generator records nothing).
        let mut truth: HashMap<(u32, Measure), f64> = sums.into_iter().map(|(k, (s, n))| (k, s / n as f64)).collect();
        for k in 1..=HORIZON {
            for m in Measure::ALL {
                truth.entry((k, m)).or_insert(0.0);
            }
        }
        truth
    };
    let truth = mean_truth(Some(&estimate.matched_supported));
    let truth_all = mean_truth(None);
    let schools = urns.into_iter().collect();
    Ok(LoopResult { estimate, truth, truth_all, app, keys, schools, dir })
}
