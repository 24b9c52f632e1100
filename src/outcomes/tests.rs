//! Tests of the outcome estimate (matching, differences, the naive figure, by hand) and of its
//! publication (no count under 5 survives, nor any rate or difference resting on one).

use rand::{Rng, SeedableRng};

use super::*;
use crate::cohort::{CohortParams, Policy};
use crate::domain::{Attainment, Ethnicity, NcYear, SchoolTerm, Sen, Sex, TermName};
use crate::review::{CohortState, Decided, Decision, Member, ProposalStats};

fn upn(n: u64) -> Upn {
    let rest = format!("{:012}", 359_000_000_000 + n);
    let s = format!("{}{rest}", crate::domain::check_letter(rest.as_bytes()) as char);
    Upn::parse(&s).unwrap()
}

fn row(u: &Upn, year: u8, absent: u16, suspended: bool, referred: bool) -> PupilTerm {
    PupilTerm {
        upn: u.clone(),
        ncyear: NcYear::new(year).unwrap(),
        sex: Sex::F,
        ethnicity: Ethnicity::Wbri,
        fsm: false,
        eal: false,
        sen: Sen::N,
        cin: None,
        young_carer: None,
        school_moves: None,
        sessions_possible: 100,
        sessions_authorised: absent,
        sessions_unauthorised: 0,
        absence_spells: None,
        suspensions: u8::from(suspended),
        suspension_sessions: None,
        permanent_exclusion: false,
        behaviour_incidents: None,
        attainment_english: Some(Attainment::Expected),
        attainment_maths: None,
        sdq_emotional: None,
        sdq_conduct: None,
        sdq_hyperactivity: None,
        sdq_peer: None,
        sdq_prosocial: None,
        mh_referral: referred,
    }
}

fn cohort(id: i64, urn: Urn, term: Term, members: &[Upn]) -> Cohort {
    Cohort {
        id,
        school_term: SchoolTerm { urn, term },
        model_id: "m".into(),
        params: CohortParams { capacity: 36, min_year: 0, max_year: 13, policy: Policy::AnyAdverse, seed: 0 },
        stats: ProposalStats::default(),
        state: CohortState::Finalised,
        created_at: 0,
        created_by: 1,
        finalised_at: Some(0),
        over_capacity_reason: None,
        programme_end: Some(Term::from_index(term.index() + 6)),
        members: members
            .iter()
            .map(|u| Member {
                upn: u.clone(),
                proposed: true,
                rank: None,
                priority: None,
                shown: None,
                decided: Some(Decided { decision: Decision::Confirm { note: None }, by: 1, at: 0 }),
            })
            .collect(),
    }
}

/// Two supported children in school A, candidates in school B; one supported child has no
/// candidate near enough. Every figure is worked out by hand.
#[test]
fn matching_differences_and_the_naive_figure_by_hand() {
    let t = Term::new(2025, TermName::Autumn).unwrap();
    let (a, b) = (Urn::new(100001).unwrap(), Urn::new(100002).unwrap());
    let (s1, s2, s3) = (upn(1), upn(2), upn(3));
    let (c1, c2, c3, c4) = (upn(11), upn(12), upn(13), upn(14));
    let mut rows = HashMap::new();
    let mut risk = HashMap::new();
    let mut put = |u: &Upn, urn: Urn, p: Option<f64>, now: PupilTerm, next: Option<PupilTerm>| {
        rows.insert((t.index(), u.clone()), (urn, now));
        if let Some(n) = next {
            rows.insert((t.index() + 1, u.clone()), (urn, n));
        }
        if let Some(p) = p {
            risk.insert((t.index(), u.clone()), p);
        }
    };
    // Supported: s1 (risk 0.50, absent 30%), s2 (0.60, 20%), s3 (0.99: no one near).
    put(&s1, a, Some(0.50), row(&s1, 5, 30, false, false), Some(row(&s1, 5, 5, false, false)));
    put(&s2, a, Some(0.60), row(&s2, 5, 20, true, false), Some(row(&s2, 5, 12, false, false)));
    put(&s3, a, Some(0.99), row(&s3, 5, 50, true, true), Some(row(&s3, 5, 40, true, true)));
    // Candidates: c1 matches s1 (same risk, closer absence than c2); c3 matches s2; c4 is a
    // secondary pupil with s1's risk: another phase, never a match.
    put(&c1, b, Some(0.50), row(&c1, 4, 28, false, false), Some(row(&c1, 4, 15, false, false)));
    put(&c2, b, Some(0.50), row(&c2, 4, 2, false, false), Some(row(&c2, 4, 2, false, false)));
    put(&c3, b, Some(0.61), row(&c3, 6, 20, false, false), Some(row(&c3, 6, 10, true, false)));
    put(&c4, b, Some(0.50), row(&c4, 8, 30, false, false), Some(row(&c4, 8, 30, false, false)));
    let cohorts = vec![cohort(1, a, t, &[s1.clone(), s2.clone(), s3.clone()])];
    let inp = Inputs { cohorts: &cohorts, rows: &rows, risk: &risk, last_term: Some(t.next()) };
    let e = estimate(&inp);
    assert_eq!((e.cohorts, e.supported, e.matched, e.unmatched), (1, 3, 2, 1));
    let get = |school: Option<Urn>, m: Measure| {
        e.rows.iter().find(|r| r.school == school && r.horizon == 1 && r.measure == m).unwrap().clone()
    };
    let pa = get(None, Measure::PersistentAbsence);
    assert_eq!((pa.supported, pa.seen, pa.pairs), (3, 3, 2));
    // Changes since selection (all four persistently absent then): s1 → no (−1), c1 → yes
    // (0); s2 → yes (0), c3 → yes (0): ((−1 − 0) + (0 − 0)) / 2. (Fewer than 20 pairs: the
    // plain mean, no regression adjustment.)
    assert_eq!(pa.difference, Some(-0.5));
    assert_eq!(pa.pairs_supported_mean, Some(0.5));
    assert_eq!(pa.pairs_comparison_mean, Some(1.0));
    // Naive: all three persistently absent at selection; after, s2 and s3: 1 → 2/3.
    assert_eq!((pa.naive_n, pa.naive_before, pa.naive_after), (3, Some(1.0), Some(2.0 / 3.0)));
    let att = get(None, Measure::AttendanceRate);
    // s1 0.70 → 0.95 (+0.25) against c1 0.72 → 0.85 (+0.13); s2 0.80 → 0.88 (+0.08) against
    // c3 0.80 → 0.90 (+0.10): (0.12 − 0.02) / 2.
    assert!((att.difference.unwrap() - 0.05).abs() < 1e-12, "{att:?}");
    let susp = get(None, Measure::Suspension);
    // s2 suspended at selection, not after (−1); c3 the other way (+1): −2; s1, c1: 0.
    assert_eq!(susp.difference, Some(-1.0));
    let (lo, hi) = susp.interval.unwrap();
    // Two pairs: the estimate ± t(1 df) × SE, wide as it should be, centred on the estimate.
    assert!(lo < -2.0 && hi > 0.0 && ((lo + hi) / 2.0 + 1.0).abs() < 1e-9, "{lo} {hi}");
    // The same again gives the same interval (seeded).
    assert_eq!(estimate(&inp), e);
    // The school's own rows equal the borough's here (one school).
    assert_eq!(get(Some(a), Measure::PersistentAbsence).difference, pa.difference);
    // Nothing after the data ends: one term followed.
    assert!(e.rows.iter().all(|r| r.horizon == 1));
}

#[test]
fn a_child_supported_in_any_cohort_is_never_a_comparison_child() {
    let t = Term::new(2025, TermName::Autumn).unwrap();
    let (a, b) = (Urn::new(100001).unwrap(), Urn::new(100002).unwrap());
    let (s1, s2) = (upn(1), upn(2));
    let mut rows = HashMap::new();
    let mut risk = HashMap::new();
    for (u, urn) in [(&s1, a), (&s2, b)] {
        rows.insert((t.index(), u.clone()), (urn, row(u, 5, 10, false, false)));
        rows.insert((t.index() + 1, u.clone()), (urn, row(u, 5, 10, false, false)));
        risk.insert((t.index(), u.clone()), 0.5);
    }
    // s2 is supported by school B: not a match for s1, although the same in every way.
    let cohorts = vec![cohort(1, a, t, std::slice::from_ref(&s1)), cohort(2, b, t, std::slice::from_ref(&s2))];
    let e = estimate(&Inputs { cohorts: &cohorts, rows: &rows, risk: &risk, last_term: Some(t.next()) });
    assert_eq!((e.supported, e.matched), (2, 0));
}

fn counts(p: &PublishedRow) -> Vec<Count> {
    vec![p.supported, p.seen, p.not_seen, p.pairs, p.naive_n]
}

/// Over many random estimates, no published count is under 5, and no shown rate, difference
/// or change rests on a count under 5 (of children, or of yes or no answers).
#[test]
fn publication_hides_every_count_under_5_and_everything_that_would_reveal_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for _ in 0..3_000 {
        let supported = rng.random_range(0..40usize);
        let seen = rng.random_range(0..=supported);
        let undefined = rng.random_range(0..=seen);
        let n = seen - undefined;
        let m = Measure::ALL[rng.random_range(0..4)];
        let yes = |rng: &mut ChaCha8Rng, n: usize| m.binary().then(|| rng.random_range(0..=n));
        let sup_yes = yes(&mut rng, n);
        let pairs = rng.random_range(0..=n);
        let (py, cy) = (yes(&mut rng, pairs), yes(&mut rng, pairs));
        let naive_n = rng.random_range(0..=n);
        let (by, ay) = (yes(&mut rng, naive_n), yes(&mut rng, naive_n));
        let mean = |y: Option<usize>, n: usize| (n > 0).then(|| y.map_or(0.9, |y| y as f64 / n as f64));
        let r = Row {
            school: None,
            horizon: 1,
            measure: m,
            supported,
            seen,
            undefined,
            supported_mean: mean(sup_yes, n),
            supported_yes: sup_yes,
            pairs,
            pairs_supported_mean: mean(py, pairs),
            pairs_comparison_mean: mean(cy, pairs),
            pairs_supported_yes: py,
            pairs_comparison_yes: cy,
            difference: (pairs > 0).then_some(0.1),
            interval: (pairs > 1).then_some((0.0, 0.2)),
            naive_n,
            naive_before: mean(by, naive_n),
            naive_after: mean(ay, naive_n),
            naive_before_yes: by,
            naive_after_yes: ay,
        };
        let e = Estimate {
            cohorts: 1,
            supported,
            matched: pairs,
            unmatched: supported - pairs,
            rows: vec![r.clone()],
            matched_supported: HashSet::new(),
        };
        let p = publish(&e);
        let row = &p.rows[0];
        for c in counts(row).into_iter().chain([p.supported, p.matched, p.unmatched]) {
            if let Count::Rounded(v) = c {
                assert!(v >= SMALL && v % 5 == 0, "count {v} published: {r:?}");
            }
        }
        // Seen and not seen: neither exact when the other is small (supported is exact).
        if r.supported - r.seen < SMALL || r.seen < SMALL {
            assert!(!matches!(row.seen, Count::Rounded(_)) && !matches!(row.not_seen, Count::Rounded(_)), "{r:?}");
        }
        let ok = |n: usize, y: Option<usize>| n >= SMALL && y.is_none_or(|y| y >= SMALL && n - y >= SMALL);
        if row.supported_rate.shown().is_some() {
            assert!(ok(n, sup_yes), "{r:?}");
        }
        if row.difference.shown().is_some() || row.interval_low.shown().is_some() {
            assert!(ok(pairs, py) && ok(pairs, cy), "{r:?}");
        }
        if row.naive_change.shown().is_some() {
            assert!(ok(naive_n, by) && ok(naive_n, ay), "{r:?}");
        }
        // The JSON a client sees carries no other number than these.
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            !json.contains("\"exact\":0") && !json.contains("\"exact\":1,") && !json.contains("\"exact\":4"),
            "{json}"
        );
    }
}
