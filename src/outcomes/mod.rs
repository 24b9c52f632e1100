//! Programme outcomes: how the supported children did, term by term, against a comparison
//! group of eligible children who were not supported, matched on the risk riskid gave them at
//! selection and their attendance then. See `docs/outcomes.md` for the method and its limits.
//!
//! [`estimate`] works on what the store holds and returns exact figures; [`publish`] turns
//! them into what may leave riskid: counts under 5 hidden, and every rate or difference that
//! would reveal one suppressed too. Nothing here carries a pupil.

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::domain::{PupilTerm, Term, Upn, Urn};
use crate::review::Cohort;

pub mod closed_loop;

/// Terms followed after selection, at most: the two-year programme is six terms with the
/// selection term, so five after it within the programme (`programme_end` decides).
pub const HORIZON: u32 = 6;
/// Bootstrap resamples for each interval.
pub const BOOTSTRAP: usize = 999;
/// Matching caliper on the logit of the combined risk, in standard deviations of it.
pub const CALIPER_SD: f64 = 0.2;
/// Counts under this are not published.
pub const SMALL: usize = 5;

/// What is measured in each later term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Sessions attended / possible (terms with at least 20 possible sessions).
    AttendanceRate,
    /// Absent 10% or more of possible sessions.
    PersistentAbsence,
    /// Suspended or permanently excluded.
    Suspension,
    /// Referred to mental-health services.
    MhReferral,
}

impl Measure {
    pub const ALL: [Measure; 4] =
        [Measure::AttendanceRate, Measure::PersistentAbsence, Measure::Suspension, Measure::MhReferral];

    pub fn as_str(self) -> &'static str {
        match self {
            Measure::AttendanceRate => "attendance_rate",
            Measure::PersistentAbsence => "persistent_absence",
            Measure::Suspension => "suspension",
            Measure::MhReferral => "mh_referral",
        }
    }

    /// A yes/no measure: its rate is a count over a count, and both must be publishable.
    pub fn binary(self) -> bool {
        self != Measure::AttendanceRate
    }

    /// The measure for one term's row; `None` where it is not defined.
    pub fn of(self, r: &PupilTerm) -> Option<f64> {
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        match self {
            Measure::AttendanceRate => r.absence_rate().map(|a| 1.0 - a),
            Measure::PersistentAbsence => r.persistently_absent().map(b),
            Measure::Suspension => Some(b(r.suspensions > 0 || r.permanent_exclusion)),
            Measure::MhReferral => Some(b(r.mh_referral)),
        }
    }
}

/// What the store holds, as the estimate needs it.
pub struct Inputs<'a> {
    /// Finalised cohorts (others are ignored).
    pub cohorts: &'a [Cohort],
    /// Every current row, by term index and UPN (the UPN follows the child between schools).
    pub rows: &'a HashMap<(u32, Upn), (Urn, PupilTerm)>,
    /// The combined risk (chance of at least one adverse outcome) riskid gave each pupil in
    /// each selection term, from that term's live scores.
    pub risk: &'a HashMap<(u32, Upn), f64>,
    /// The last term with any data.
    pub last_term: Option<Term>,
}

/// One figure for one scope (a school or the whole borough), term after selection and measure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// `None`: every school in the scope together.
    pub school: Option<Urn>,
    /// Terms after the selection term (1 = the next term).
    pub horizon: u32,
    pub measure: Measure,
    /// Children supported (final lists) whose programme had reached this term.
    pub supported: usize,
    /// Of them, with a row that term (at any school).
    pub seen: usize,
    /// With a row but the measure undefined (fewer than 20 possible sessions).
    pub undefined: usize,
    /// The supported children seen: their mean and, for a yes/no measure, how many.
    pub supported_mean: Option<f64>,
    pub supported_yes: Option<usize>,
    /// Matched pairs with the measure defined for both, at selection and this term.
    pub pairs: usize,
    pub pairs_supported_mean: Option<f64>,
    pub pairs_comparison_mean: Option<f64>,
    pub pairs_supported_yes: Option<usize>,
    pub pairs_comparison_yes: Option<usize>,
    /// The supported children's change since selection minus their comparison children's
    /// (difference in differences), with a 95% bootstrap interval (resampling pairs).
    pub difference: Option<f64>,
    pub interval: Option<(f64, f64)>,
    /// Naive before/after for the supported: the selection term's mean, this term's, and the
    /// change, over children with the measure in both. Not an effect: children picked for a
    /// bad term tend to do better the next (regression to the mean).
    pub naive_n: usize,
    pub naive_before: Option<f64>,
    pub naive_after: Option<f64>,
    pub naive_before_yes: Option<usize>,
    pub naive_after_yes: Option<usize>,
}

/// The exact estimate (never published as it is: see [`publish`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub cohorts: usize,
    pub supported: usize,
    /// Supported children with a comparison child within the caliper.
    pub matched: usize,
    /// Without one (left out of the differences; counted here).
    pub unmatched: usize,
    pub rows: Vec<Row>,
    /// The supported children with a match: the children the differences are about (for the
    /// closed loop's truth; never serialised, never published).
    #[serde(skip)]
    pub matched_supported: HashSet<Upn>,
}

/// A supported child and their comparison child.
struct Pair {
    school: Urn,
    selected: u32,
    programme_end: u32,
    treated: Upn,
    control: Option<Upn>,
    /// What still differs at selection, supported minus comparison: the risk's logit, the
    /// absence rate, and their schools' mean absence rate.
    gap: [f64; 3],
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-4, 1.0 - 1e-4);
    (p / (1.0 - p)).ln()
}

fn secondary(r: &PupilTerm) -> bool {
    r.ncyear.get() >= 7
}

/// Standard deviation (population), or 1 when it is 0 or undefined.
fn sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 1.0;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    if s > 1e-9 { s } else { 1.0 }
}

/// Matches every supported child, within each selection term: the comparison child is the
/// nearest eligible unsupported child of the same phase (primary or secondary) on the logit of
/// the combined risk and, second, the absence rate, within a caliper of 0.2 SD of the logit
/// (over every pupil scored that term);
/// with replacement; ties go to the smaller UPN. Eligible: on roll that term, scored, not
/// looked after or on a protection plan, not permanently excluded, and never supported.
fn match_all(inp: &Inputs) -> Vec<Pair> {
    let finalised: Vec<&Cohort> =
        inp.cohorts.iter().filter(|c| c.state == crate::review::CohortState::Finalised).collect();
    let ever: HashSet<Upn> = finalised.iter().flat_map(|c| c.final_list()).collect();
    let mut terms: Vec<u32> = finalised.iter().map(|c| c.school_term.term.index()).collect();
    terms.sort_unstable();
    terms.dedup();
    let mut pairs = Vec::new();
    for t in terms {
        // Each school's mean absence rate that term: children regress towards their own
        // school's level, so a comparison child should come from a school like theirs.
        let mut school_sum: HashMap<Urn, (f64, usize)> = HashMap::new();
        let mut at_t: Vec<(&Upn, &(Urn, PupilTerm))> =
            inp.rows.iter().filter(|((ti, _), _)| *ti == t).map(|((_, u), v)| (u, v)).collect();
        at_t.sort_by(|a, b| a.0.cmp(b.0));
        for (_, (urn, r)) in &at_t {
            if let Some(a) = r.absence_rate() {
                let e = school_sum.entry(*urn).or_default();
                e.0 += a;
                e.1 += 1;
            }
        }
        let school_mean = |urn: &Urn| school_sum.get(urn).map_or(0.0, |(s, n)| s / *n as f64);
        // The pool at t: (phase, logit, absence rate, school mean, UPN), sorted by phase then logit.
        let mut pool: Vec<(bool, f64, f64, f64, &Upn)> = inp
            .risk
            .iter()
            .filter(|((ti, u), _)| *ti == t && !ever.contains(u))
            .filter_map(|((_, u), p)| {
                let (urn, r) = inp.rows.get(&(t, u.clone()))?;
                (!r.statutory() && !r.permanent_exclusion)
                    .then(|| (secondary(r), logit(*p), r.absence_rate().unwrap_or(0.0), school_mean(urn), u))
            })
            .collect();
        pool.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.4.cmp(b.4)));
        // The caliper's scale: every pupil scored that term (supported and not), as usual for
        // a caliper on a score's logit.
        let mut xs: Vec<f64> = inp.risk.iter().filter(|((ti, _), _)| *ti == t).map(|(_, p)| logit(*p)).collect();
        // Summed in a fixed order, so the caliper (and every match) is the same on every run.
        xs.sort_by(f64::total_cmp);
        let sd_x = sd(&xs);
        let sd_a = sd(&pool.iter().map(|p| p.2).collect::<Vec<_>>()); // pool is sorted
        let caliper = CALIPER_SD * sd_x;
        // Every supported child of the term, hardest to match (highest risk) first, each taking
        // the nearest comparison child not yet taken: without replacement, so no comparison
        // child counts twice and the pairs are independent for the interval.
        let mut todo: Vec<(f64, Upn, Urn, u32)> = Vec::new();
        for c in finalised.iter().filter(|c| c.school_term.term.index() == t) {
            let end = c.programme_end.map_or(t + HORIZON + 1, |e| e.index());
            for u in c.final_list() {
                let x = inp.risk.get(&(t, u.clone())).map_or(f64::INFINITY, |p| logit(*p));
                todo.push((x, u, c.school_term.urn, end));
            }
        }
        todo.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut taken = vec![false; pool.len()];
        for (_, u, school, end) in todo {
            let found = inp.rows.get(&(t, u.clone())).zip(inp.risk.get(&(t, u.clone())));
            let mut gap = [0.0; 3];
            let control = found.and_then(|((urn, r), p)| {
                let (ph, x, a, m) = (secondary(r), logit(*p), r.absence_rate().unwrap_or(0.0), school_mean(urn));
                let lo = pool.partition_point(|q| (q.0, q.1) < (ph, x - caliper));
                let best = pool[lo..]
                    .iter()
                    .enumerate()
                    .take_while(|(_, q)| q.0 == ph && q.1 <= x + caliper)
                    .filter(|(i, _)| !taken[lo + i])
                    .map(|(i, q)| {
                        let d = ((q.1 - x) / sd_x).powi(2) + ((q.2 - a) / sd_a).powi(2);
                        (d, q.4, lo + i)
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)))?;
                taken[best.2] = true;
                let q = &pool[best.2];
                gap = [x - q.1, a - q.2, m - q.3];
                Some(best.1.clone())
            });
            pairs.push(Pair { school, selected: t, programme_end: end, treated: u, control, gap });
        }
    }
    pairs
}

/// The exact figures: every scope (each school with a finalised cohort, and all together),
/// every term after selection up to the programme's end and the data, every measure.
pub fn estimate(inp: &Inputs) -> Estimate {
    estimate_for(inp, None)
}

/// As [`estimate`], reporting only the schools in `only` (and their total). Matching is always
/// over every finalised cohort of the borough: who was supported, and so who may be a
/// comparison child, does not depend on who asks.
pub fn estimate_for(inp: &Inputs, only: Option<&std::collections::BTreeSet<Urn>>) -> Estimate {
    let pairs: Vec<Pair> = match_all(inp).into_iter().filter(|p| only.is_none_or(|o| o.contains(&p.school))).collect();
    let last = inp.last_term.map_or(0, |t| t.index());
    let mut schools: Vec<Urn> = pairs.iter().map(|p| p.school).collect();
    schools.sort_unstable();
    schools.dedup();
    let mut rows = Vec::new();
    let scopes = std::iter::once(None).chain(schools.iter().copied().map(Some));
    for scope in scopes {
        let mine: Vec<&Pair> = pairs.iter().filter(|p| scope.is_none_or(|s| p.school == s)).collect();
        for k in 1..=HORIZON {
            let due: Vec<&&Pair> =
                mine.iter().filter(|p| p.selected + k < p.programme_end && p.selected + k <= last).collect();
            if due.is_empty() {
                continue;
            }
            for m in Measure::ALL {
                rows.push(figure(inp, scope, k, m, &due));
            }
        }
    }
    let matched_supported: HashSet<Upn> =
        pairs.iter().filter(|p| p.control.is_some()).map(|p| p.treated.clone()).collect();
    let matched = matched_supported.len();
    let cohorts = inp
        .cohorts
        .iter()
        .filter(|c| c.state == crate::review::CohortState::Finalised)
        .filter(|c| only.is_none_or(|o| o.contains(&c.school_term.urn)))
        .count();
    Estimate { cohorts, supported: pairs.len(), matched, unmatched: pairs.len() - matched, rows, matched_supported }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn yes(v: &[f64], m: Measure) -> Option<usize> {
    m.binary().then(|| v.iter().filter(|x| **x > 0.5).count())
}

fn figure(inp: &Inputs, school: Option<Urn>, k: u32, m: Measure, due: &[&&Pair]) -> Row {
    let value = |t: u32, u: &Upn| inp.rows.get(&(t, u.clone())).map(|(_, r)| m.of(r));
    let (mut seen, mut undefined) = (0, 0);
    let mut sup = Vec::new();
    let (mut ds, mut ts, mut cs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for p in due {
        let u = p.selected + k;
        match value(u, &p.treated) {
            None => continue,
            Some(None) => {
                seen += 1;
                undefined += 1;
                continue;
            }
            Some(Some(y)) => {
                seen += 1;
                sup.push(y);
                if let Some(Some(y0)) = value(p.selected, &p.treated) {
                    before.push(y0);
                    after.push(y);
                }
                // The pair's difference in change since selection (difference in differences):
                // what stays the same for a child over time (their school, say) cancels out.
                let c = p.control.as_ref();
                let changes =
                    (value(p.selected, &p.treated), c.and_then(|c| value(u, c)), c.and_then(|c| value(p.selected, c)));
                if let (Some(Some(y0)), Some(Some(yc)), Some(Some(yc0))) = changes {
                    // The pair's difference in change since selection (difference in differences),
                    // adjusted below for what still differs within the pair at selection.
                    ds.push(Obs { school: p.school, d: (y - y0) - (yc - yc0), z: [p.gap[0], p.gap[1]] });
                    ts.push(y);
                    cs.push(yc);
                }
            }
        }
    }
    let interval = (ds.len() >= 2).then(|| bootstrap(&ds, school, k, m));
    let difference = (!ds.is_empty()).then(|| adjusted(&ds.iter().collect::<Vec<_>>()));
    Row {
        school,
        horizon: k,
        measure: m,
        supported: due.len(),
        seen,
        undefined,
        supported_mean: mean(&sup),
        supported_yes: yes(&sup, m),
        pairs: ds.len(),
        pairs_supported_mean: mean(&ts),
        pairs_comparison_mean: mean(&cs),
        pairs_supported_yes: yes(&ts, m),
        pairs_comparison_yes: yes(&cs, m),
        difference,
        interval,
        naive_n: before.len(),
        naive_before: mean(&before),
        naive_after: mean(&after),
        naive_before_yes: yes(&before, m),
        naive_after_yes: yes(&after, m),
    }
}

/// One matched pair's figures for one measure and term: the outcome difference, and what
/// differed at selection (risk logit, absence rate, school mean absence, the measure itself).
struct Obs {
    school: Urn,
    d: f64,
    z: [f64; 2],
}

/// The difference adjusted for what still differs within pairs at selection: the intercept of
/// a least-squares fit of the pairs' outcome differences on their selection-term gaps (the
/// bias-corrected matching estimator). With few pairs, the plain mean difference.
fn adjusted(obs: &[&Obs]) -> f64 {
    const P: usize = 3;
    let n = obs.len();
    if n < 4 * P {
        return obs.iter().map(|o| o.d).sum::<f64>() / n.max(1) as f64;
    }
    let mut a = [[0.0f64; P]; P];
    let mut b = [0.0f64; P];
    for o in obs {
        let x = [1.0, o.z[0], o.z[1]];
        for i in 0..P {
            b[i] += x[i] * o.d;
            for j in 0..P {
                a[i][j] += x[i] * x[j];
            }
        }
    }
    // A touch of ridge on the slopes keeps a gap that never varies (all zero) harmless.
    for (i, row) in a.iter_mut().enumerate().skip(1) {
        row[i] += 1e-6 * n as f64;
    }
    // Gaussian elimination with partial pivoting.
    for c in 0..P {
        let piv = (c..P).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap_or(c);
        a.swap(c, piv);
        b.swap(c, piv);
        if a[c][c].abs() < 1e-12 {
            return obs.iter().map(|o| o.d).sum::<f64>() / n as f64;
        }
        let pivot = a[c];
        for r in c + 1..P {
            let f = a[r][c] / pivot[c];
            for (x, p) in a[r][c..].iter_mut().zip(&pivot[c..]) {
                *x -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut beta = [0.0; P];
    for r in (0..P).rev() {
        let s: f64 = (r + 1..P).map(|k| a[r][k] * beta[k]).sum();
        beta[r] = (b[r] - s) / a[r][r];
    }
    beta[0]
}

/// A 95% interval for the adjusted difference, from a bootstrap standard error. Pairs of one school share its cut-off and
/// its own ups and downs, so with several schools the schools are resampled (a cluster
/// bootstrap, each school with all its pairs); within one school, the pairs. Seeded by the
/// scope, so the same data always give the same interval.
fn bootstrap(ds: &[Obs], school: Option<Urn>, k: u32, m: Measure) -> (f64, f64) {
    let seed = 0x05ee_d0f0_u64 ^ u64::from(school.map_or(0, |s| s.get())) << 8 ^ u64::from(k) << 40 ^ (m as u64) << 48;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut clusters: Vec<(Urn, Vec<&Obs>)> = Vec::new();
    for o in ds {
        match clusters.iter_mut().find(|c| c.0 == o.school) {
            Some(c) => c.1.push(o),
            None => clusters.push((o.school, vec![o])),
        }
    }
    let n = ds.len();
    let mut sample: Vec<&Obs> = Vec::with_capacity(n * 2);
    let means: Vec<f64> = (0..BOOTSTRAP)
        .map(|_| {
            sample.clear();
            if clusters.len() >= 2 {
                for _ in 0..clusters.len() {
                    sample.extend(clusters[rng.random_range(0..clusters.len())].1.iter().copied());
                }
            } else {
                sample.extend((0..n).map(|_| &ds[rng.random_range(0..n)]));
            }
            adjusted(&sample)
        })
        .collect();
    // The estimate ± t × the bootstrap standard error, t from Student's distribution with one
    // fewer degrees of freedom than there are schools (pairs, for one school): with a dozen
    // schools a percentile interval is too narrow.
    let est = adjusted(&ds.iter().collect::<Vec<_>>());
    let mean = means.iter().sum::<f64>() / BOOTSTRAP as f64;
    let se = (means.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (BOOTSTRAP - 1) as f64).sqrt();
    let df = if clusters.len() >= 2 { clusters.len() - 1 } else { n.saturating_sub(1).max(1) };
    let t = t975(df);
    (est - t * se, est + t * se)
}

/// The 97.5% point of Student's t distribution with `df` degrees of freedom.
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => T[0],
        1..=30 => T[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// A count as published: from 5 up, rounded to the nearest 5 (so that differencing one figure
/// against others cannot recover a small count exactly); under 5, only "fewer than 5".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    Rounded(usize),
    FewerThan5,
    /// All of the supported but fewer than 5 (so that the few not seen cannot be worked out).
    AllButFewerThan5,
}

impl Count {
    fn of(n: usize) -> Self {
        if n < SMALL { Count::FewerThan5 } else { Count::Rounded((n + 2) / 5 * 5) }
    }
}

/// Rates, means and differences are published to three decimal places (0.1 percentage point):
/// enough for a reader, too coarse to work a small denominator back from.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Rounded(n) => write!(f, "{n}"),
            Count::FewerThan5 => f.write_str("fewer than 5"),
            Count::AllButFewerThan5 => f.write_str("all but fewer than 5"),
        }
    }
}

/// A rate, mean or difference as published.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Shown(f64),
    /// Would reveal a count under 5.
    Suppressed,
    /// Not computable (no data).
    NotAvailable,
}

impl Value {
    pub fn shown(self) -> Option<f64> {
        if let Value::Shown(v) = self { Some(v) } else { None }
    }
}

/// A row as it may leave riskid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishedRow {
    pub school: Option<Urn>,
    pub horizon: u32,
    pub measure: Measure,
    pub supported: Count,
    pub seen: Count,
    pub not_seen: Count,
    pub supported_rate: Value,
    pub pairs: Count,
    pub pairs_supported_rate: Value,
    pub comparison_rate: Value,
    pub difference: Value,
    pub interval_low: Value,
    pub interval_high: Value,
    pub naive_n: Count,
    pub naive_before: Value,
    pub naive_after: Value,
    pub naive_change: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Published {
    pub cohorts: Count,
    pub supported: Count,
    pub matched: Count,
    pub unmatched: Count,
    pub rows: Vec<PublishedRow>,
}

/// A mean over `n` children, of which `yes` said yes for a yes/no measure: shown only if no
/// count under 5 could be worked out from it (n, yes and n − yes all at least 5).
fn rate(mean: Option<f64>, n: usize, yes: Option<usize>) -> Value {
    let Some(v) = mean else { return Value::NotAvailable };
    let small = n < SMALL || yes.is_some_and(|y| y < SMALL || n - y < SMALL);
    if small { Value::Suppressed } else { Value::Shown(round3(v)) }
}

fn both(a: Value, b: Value, v: Option<f64>) -> Value {
    match (a, b, v) {
        (_, _, None) => Value::NotAvailable,
        (Value::Shown(_), Value::Shown(_), Some(v)) => Value::Shown(round3(v)),
        (Value::NotAvailable, _, _) | (_, Value::NotAvailable, _) => Value::NotAvailable,
        _ => Value::Suppressed,
    }
}

/// What may be published: counts under 5 hidden; a count that the others would give away
/// (seen and not seen, from the supported) hidden with it; a rate hidden when it rests on a
/// count under 5 (of children, or of yes or no answers); a difference, its interval and the
/// naive change hidden when either side is.
pub fn publish(e: &Estimate) -> Published {
    let rows = e
        .rows
        .iter()
        .map(|r| {
            let not_seen = r.supported - r.seen;
            // Secondary suppression: supported − seen = not seen, so a small "not seen"
            // hides the exact "seen" too (and a small "seen" the exact "not seen").
            let (seen, not) = match (r.seen < SMALL, not_seen < SMALL) {
                (false, false) => (Count::of(r.seen), Count::of(not_seen)),
                (false, true) => (Count::AllButFewerThan5, Count::FewerThan5),
                (true, false) => (Count::FewerThan5, Count::AllButFewerThan5),
                (true, true) => (Count::FewerThan5, Count::FewerThan5),
            };
            let sup_n = r.seen - r.undefined;
            let supported_rate = rate(r.supported_mean, sup_n, r.supported_yes);
            let ts = rate(r.pairs_supported_mean, r.pairs, r.pairs_supported_yes);
            let cs = rate(r.pairs_comparison_mean, r.pairs, r.pairs_comparison_yes);
            let difference = both(ts, cs, r.difference);
            let (lo, hi) = match (difference, r.interval) {
                (Value::Shown(_), Some((lo, hi))) => (Value::Shown(round3(lo)), Value::Shown(round3(hi))),
                (Value::Shown(_), None) => (Value::NotAvailable, Value::NotAvailable),
                (d, _) => (d, d),
            };
            let nb = rate(r.naive_before, r.naive_n, r.naive_before_yes);
            let na = rate(r.naive_after, r.naive_n, r.naive_after_yes);
            let change = both(nb, na, r.naive_before.zip(r.naive_after).map(|(b, a)| a - b));
            PublishedRow {
                school: r.school,
                horizon: r.horizon,
                measure: r.measure,
                supported: Count::of(r.supported),
                seen,
                not_seen: not,
                supported_rate,
                pairs: Count::of(r.pairs),
                pairs_supported_rate: ts,
                comparison_rate: cs,
                difference,
                interval_low: lo,
                interval_high: hi,
                naive_n: Count::of(r.naive_n),
                naive_before: nb,
                naive_after: na,
                naive_change: change,
            }
        })
        .collect();
    Published {
        cohorts: Count::of(e.cohorts),
        supported: Count::of(e.supported),
        matched: Count::of(e.matched),
        unmatched: Count::of(e.unmatched),
        rows,
    }
}

/// What the design cannot rule out, said with every report.
pub const CAVEATS: &[&str] = &[
    "The comparison children were matched on the risk riskid gave them at selection and their attendance then, \
     within the same phase; anything else that differs between supported and comparison children (what a link \
     worker knew, a school's own support) is not accounted for.",
    "Link workers' removals and additions make selection depend on more than the score: a child added for a reason \
     the data does not show may differ from their match.",
    "Support can spill over: a link worker in a school may help classmates who are not in the cohort, which shrinks \
     the difference.",
    "Comparison children come from other schools with the same risk; school effects beyond the risk are not \
     removed.",
    "Small numbers: per school, differences rest on a few dozen children and their intervals are wide; counts under \
     5 are not shown.",
    "The naive before/after change is not an effect: children picked because their last term was bad tend to do \
     better the next term anyway (regression to the mean).",
];

#[cfg(test)]
mod tests;
