//! Turning a model's additive contributions into reasons a person can check.

use super::evidence::{Evidence, Measure, SCHOOL_MEDIAN, SCHOOL_MEDIAN_THIS_TERM};
use super::{OutcomeRisk, PupilRisk, Reason};
use crate::domain::{Attainment, Cin, Outcome, PupilTerm, SchoolTerm, Sen};
use crate::model::features::{Domain, FEATURES, PupilHistory, features, on_record, row_at};
use crate::model::{ModelArtifact, N_FEATURES};

/// Reasons shown per outcome.
pub const TOP_REASONS: usize = 3;

/// What a pupil's values compare with: the school's medians this term (absent for
/// stateless scoring, where there is no school to compare with).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SchoolContext {
    pub median_attendance: Option<f64>,
    pub median_incidents: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

impl SchoolContext {
    /// The medians over one school's rows for a term.
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a PupilTerm>) -> Self {
        let (mut att, mut inc) = (Vec::new(), Vec::new());
        for r in rows {
            if let Some(rate) = r.absence_rate() {
                att.push(1.0 - rate);
            }
            if let Some(n) = r.behaviour_incidents {
                inc.push(f64::from(n));
            }
        }
        Self { median_attendance: median(att), median_incidents: median(inc) }
    }
}

/// The data behind a domain, as evidence, from the pupil's own rows.
fn describe(domain: Domain, h: &PupilHistory, row: &PupilTerm, st: SchoolTerm, ctx: &SchoolContext) -> Vec<Evidence> {
    use Measure as M;
    let ev = Evidence::new;
    let prev = row_at(h, st.term.prev());
    let mut out = Vec::new();
    match domain {
        Domain::Attendance => {
            match row.absence_rate() {
                Some(r) => out.push(
                    ev(M::Attendance, 1.0 - r)
                        .earlier(prev.and_then(PupilTerm::absence_rate).map(|p| 1.0 - p))
                        .compared_with(SCHOOL_MEDIAN, ctx.median_attendance),
                ),
                None => out.push(ev(M::SessionsPossible, f64::from(row.sessions_possible))),
            }
            // Over every term on record, when there is more than this one.
            let all = on_record(h, row, st.term);
            let possible: u32 = all.iter().map(|r| u32::from(r.sessions_possible)).sum();
            if all.len() > 1 && possible > 0 {
                let absent: u32 = all.iter().map(|r| r.absent_sessions()).sum();
                out.push(
                    ev(M::AttendanceAllTerms, 1.0 - f64::from(absent) / f64::from(possible))
                        .compared_with(SCHOOL_MEDIAN_THIS_TERM, ctx.median_attendance),
                );
            }
            if let Some(sp) = row.absence_spells.filter(|&s| s > 1) {
                out.push(
                    ev(M::AbsenceSpells, f64::from(sp)).earlier(prev.and_then(|p| p.absence_spells).map(f64::from)),
                );
            }
            if row.sessions_unauthorised > 0 {
                out.push(
                    ev(M::UnauthorisedSessions, f64::from(row.sessions_unauthorised))
                        .earlier(prev.map(|p| f64::from(p.sessions_unauthorised))),
                );
            }
        }
        Domain::Behaviour => {
            let recent: u32 = h
                .iter()
                .filter(|(s, _)| s.term <= st.term && s.term.index() + 2 >= st.term.index())
                .map(|(_, r)| u32::from(r.suspensions))
                .sum();
            if recent > 0 {
                out.push(ev(M::SuspensionsLastThreeTerms, f64::from(recent)));
            }
            let ever: u32 = on_record(h, row, st.term).iter().map(|r| u32::from(r.suspensions)).sum();
            if ever > recent {
                out.push(ev(M::SuspensionsAllTerms, f64::from(ever)));
            }
            if row.permanent_exclusion {
                out.push(ev(M::PermanentExclusion, 1.0));
            }
            match row.behaviour_incidents {
                Some(n) => out.push(
                    ev(M::BehaviourIncidents, f64::from(n))
                        .earlier(prev.and_then(|p| p.behaviour_incidents).map(f64::from))
                        .compared_with(SCHOOL_MEDIAN, ctx.median_incidents),
                ),
                None => out.push(ev(M::BehaviourNotRecorded, 1.0)),
            }
            let recorded: Vec<f64> =
                on_record(h, row, st.term).iter().filter_map(|r| r.behaviour_incidents.map(f64::from)).collect();
            if recorded.len() > 1 {
                out.push(
                    ev(M::BehaviourIncidentsAllTerms, recorded.iter().sum::<f64>() / recorded.len() as f64)
                        .compared_with(SCHOOL_MEDIAN_THIS_TERM, ctx.median_incidents),
                );
            }
        }
        Domain::Wellbeing => {
            if row.mh_referral {
                out.push(ev(M::MhReferral, 1.0));
            }
            if h.iter().any(|(s, r)| s.term < st.term && r.mh_referral) {
                out.push(ev(M::MhReferralEarlier, 1.0));
            }
            // The survey the features use: the latest within this and the two terms before,
            // and complete (an incomplete one is imputed, and imputed values are never reasons).
            let in_window = |s: &SchoolTerm| s.term <= st.term && s.term.index() + 2 >= st.term.index();
            let complete = |r: &PupilTerm| {
                Some([r.sdq_emotional?, r.sdq_conduct?, r.sdq_hyperactivity?, r.sdq_peer?, r.sdq_prosocial?])
            };
            let latest =
                h.iter().rev().find(|(s, r)| in_window(s) && (r.sdq_emotional.is_some() || r.sdq_conduct.is_some()));
            let now = latest.and_then(|(s, r)| complete(r).map(|v| (s.term, v)));
            let before =
                now.and_then(|(t, _)| h.iter().rev().filter(|(s, _)| s.term < t).find_map(|(_, r)| complete(r)));
            match (now.map(|(_, v)| v), before) {
                (Some(now), before) => {
                    for (k, m) in
                        [M::SdqEmotional, M::SdqConduct, M::SdqHyperactivity, M::SdqPeer].into_iter().enumerate()
                    {
                        out.push(ev(m, f64::from(now[k])).earlier(before.map(|b| f64::from(b[k]))));
                    }
                }
                (None, _) => out.push(ev(M::NoSdq, 1.0)),
            }
        }
        Domain::Attainment => {
            let level = |a: Option<Attainment>| match a {
                Some(Attainment::Below) => 0.0,
                Some(Attainment::Expected) => 1.0,
                Some(Attainment::Above) => 2.0,
                None => -1.0,
            };
            let below =
                [(row.attainment_english, M::EnglishBelowExpected), (row.attainment_maths, M::MathsBelowExpected)];
            for (a, m) in below {
                if a == Some(Attainment::Below) {
                    out.push(ev(m, 1.0));
                }
            }
            if out.is_empty() {
                out.push(ev(M::EnglishAttainment, level(row.attainment_english)));
                out.push(ev(M::MathsAttainment, level(row.attainment_maths)));
            }
        }
        Domain::Context => {
            if row.fsm {
                out.push(ev(M::FreeSchoolMeals, 1.0));
            }
            match row.sen {
                Sen::K => out.push(ev(M::SenSupport, 1.0)),
                Sen::E => out.push(ev(M::EhcPlan, 1.0)),
                Sen::N => {}
            }
            if row.cin == Some(Cin::Cin) {
                out.push(ev(M::ChildInNeed, 1.0));
            }
            if row.young_carer == Some(true) {
                out.push(ev(M::YoungCarer, 1.0));
            }
            if let Some(m) = row.school_moves.filter(|&m| m > 0) {
                out.push(ev(M::SchoolMoves, f64::from(m)));
            }
            if row.eal {
                out.push(ev(M::EnglishAdditionalLanguage, 1.0));
            }
            out.push(ev(M::YearGroup, f64::from(row.ncyear.get())));
        }
    }
    out
}

/// The model's features behind each fact. A fact is shown as a reason only where these
/// features raised the outcome's risk. Facts with none are never reasons: a year group or
/// an attainment level at the expected standard is context, not a cause, and missing data is
/// reported as a flag, not as a reason.
fn features_of(m: Measure) -> &'static [usize] {
    static TABLE: std::sync::OnceLock<Vec<Vec<usize>>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        Measure::ALL
            .iter()
            .map(|&m| {
                let names: &[&str] = match m {
                    Measure::Attendance => &[
                        "absence_rate",
                        "absence_10pct_or_more",
                        "absence_20pct_or_more",
                        "absence_over_10pct_by",
                        "absence_change_since_last_term",
                        "absence_rate_last_term",
                        "absence_logit",
                    ],
                    Measure::AttendanceAllTerms => &[
                        "absence_logit_all_terms",
                        "persistent_absence_share_all_terms",
                        "unauthorised_share_all_terms",
                        "spells_per_absent_session_all_terms",
                    ],
                    Measure::SuspensionsAllTerms => &["suspensions_all_terms"],
                    Measure::BehaviourIncidentsAllTerms => &["behaviour_incidents_log_all_terms"],
                    Measure::MhReferralEarlier => &["mh_referral_last_three_terms", "mh_referral_ever"],
                    Measure::SessionsPossible => &["few_sessions_possible"],
                    Measure::AbsenceSpells => &["spells_per_absent_session"],
                    Measure::UnauthorisedSessions => &["unauthorised_share"],
                    Measure::SuspensionsLastThreeTerms => &["suspended_this_term", "suspensions_last_three_terms"],
                    Measure::PermanentExclusion => &["suspended_this_term"],
                    Measure::BehaviourIncidents => &["behaviour_incidents_log"],
                    Measure::MhReferral => &["mh_referral_this_term"],
                    // The latest survey's score and the mean over every survey on record.
                    Measure::SdqEmotional => &["sdq_emotional", "sdq_emotional_all_surveys"],
                    Measure::SdqConduct => &["sdq_conduct", "sdq_conduct_all_surveys"],
                    Measure::SdqHyperactivity => &["sdq_hyperactivity", "sdq_hyperactivity_all_surveys"],
                    Measure::SdqPeer => &["sdq_peer", "sdq_peer_all_surveys"],
                    Measure::EnglishBelowExpected => &["english_below"],
                    Measure::MathsBelowExpected => &["maths_below"],
                    Measure::FreeSchoolMeals => &["fsm"],
                    Measure::SenSupport => &["sen_support"],
                    Measure::EhcPlan => &["ehc_plan"],
                    Measure::ChildInNeed => &["child_in_need"],
                    Measure::YoungCarer => &["young_carer"],
                    Measure::SchoolMoves => &["school_moves"],
                    Measure::EnglishAdditionalLanguage => &["eal"],
                    Measure::BehaviourNotRecorded
                    | Measure::NoSdq
                    | Measure::EnglishAttainment
                    | Measure::MathsAttainment
                    | Measure::YearGroup => &[],
                };
                names
                    .iter()
                    .map(|n| FEATURES.iter().position(|(f, _)| f == n).expect("a feature of this build"))
                    .collect()
            })
            .collect()
    });
    let i = Measure::ALL.iter().position(|x| *x == m).expect("every measure is in ALL");
    &table[i]
}

/// Scores one pupil's row with the model, with reasons and flags, on its own.
pub fn score_pupil(model: &ModelArtifact, h: &PupilHistory, row: &PupilTerm, st: SchoolTerm) -> PupilRisk {
    score_pupil_in(model, h, row, st, &SchoolContext::default())
}

/// Scores one pupil's row with the model, with reasons whose evidence compares with `ctx`.
pub fn score_pupil_in(
    model: &ModelArtifact,
    h: &PupilHistory,
    row: &PupilTerm,
    st: SchoolTerm,
    ctx: &SchoolContext,
) -> PupilRisk {
    let f = features(h, row, st.term);
    let explained = model.explain(&f.values);
    // Each domain's facts are gathered once and shared by the outcomes that cite them.
    let mut facts: [Option<Vec<Evidence>>; 5] = Default::default();
    let outcomes: Vec<OutcomeRisk> = Outcome::ALL
        .iter()
        .zip(&explained)
        .zip(&model.outcomes)
        .map(|((&outcome, e), m)| {
            let c = &e.contributions;
            // Per domain: the facts whose own features raised this outcome's risk, and how
            // much those features raised it together (each feature counted once).
            let mut candidates: Vec<(usize, f64, Vec<Evidence>)> = Vec::new();
            for (d, (&domain, facts)) in Domain::ALL.iter().zip(facts.iter_mut()).enumerate() {
                let all = facts.get_or_insert_with(|| describe(domain, h, row, st, ctx));
                let mut used = [false; N_FEATURES];
                let kept: Vec<Evidence> = all
                    .iter()
                    .filter(|ev| {
                        let raised: f64 = features_of(ev.measure).iter().map(|&j| c[j]).sum();
                        let keep = raised > 0.0;
                        if keep {
                            features_of(ev.measure).iter().for_each(|&j| used[j] = true);
                        }
                        keep
                    })
                    .cloned()
                    .collect();
                let contribution: f64 = (0..N_FEATURES).filter(|&j| used[j]).map(|j| c[j]).sum();
                if !kept.is_empty() && contribution > 0.0 {
                    candidates.push((d, contribution, kept));
                }
            }
            candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let reasons = candidates
                .into_iter()
                .take(TOP_REASONS)
                .map(|(d, contribution, evidence)| Reason {
                    domain: Domain::ALL[d].as_str().into(),
                    evidence,
                    contribution,
                })
                .collect();
            OutcomeRisk { outcome, probability: e.probability, band: m.bands.band(e.probability), reasons }
        })
        .collect();
    let p: Vec<f64> = outcomes.iter().map(|o| o.probability).collect();
    PupilRisk {
        upn: row.upn.as_str().to_owned(),
        school_term: st,
        ncyear: row.ncyear.get(),
        statutory: row.statutory(),
        model_id: model.model_id.clone(),
        any_adverse: 1.0 - p.iter().map(|q| 1.0 - q).product::<f64>(),
        outcomes,
        flags: f.flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_raised_the_risk_and_names_only_facts_that_did() {
        let model = ModelArtifact::from_json(include_str!("../../models/default.json")).unwrap();
        let world =
            crate::synth::generate(&crate::synth::WorldConfig { schools: 3, years: 1, ..Default::default() }).unwrap();
        let history = crate::model::History::from_rows(world.feeds.iter().flat_map(|f| {
            let st = SchoolTerm { urn: f.urn, term: f.term };
            f.rows.iter().cloned().map(move |r| (st, r))
        }));
        let (mut reasons, mut pupils) = (0, 0);
        for feed in &world.feeds {
            let st = SchoolTerm { urn: feed.urn, term: feed.term };
            for row in &feed.rows {
                let h = &history.pupils[&row.upn];
                let risk = score_pupil(&model, h, row, st);
                let explained = model.explain(&features(h, row, st.term).values);
                for (o, e) in risk.outcomes.iter().zip(&explained) {
                    for r in &o.reasons {
                        reasons += 1;
                        assert!(r.contribution > 0.0, "a reason that did not raise the risk: {r:?}");
                        assert!(!r.evidence.is_empty());
                        for ev in &r.evidence {
                            let raised: f64 = features_of(ev.measure).iter().map(|&j| e.contributions[j]).sum();
                            assert!(raised > 0.0, "{:?} shown though it did not raise {:?}", ev.measure, o.outcome);
                            assert!(
                                !matches!(ev.measure, Measure::YearGroup | Measure::EnglishAttainment | Measure::NoSdq),
                                "a neutral fact shown as a reason"
                            );
                        }
                    }
                }
                pupils += 1;
            }
        }
        assert!(reasons > pupils, "reasons are still given: {reasons} for {pupils} pupils");
    }

    #[test]
    fn contributions_add_up_to_the_logit() {
        let model = ModelArtifact::from_json(include_str!("../../models/default.json")).unwrap();
        let world =
            crate::synth::generate(&crate::synth::WorldConfig { schools: 1, years: 1, ..Default::default() }).unwrap();
        let feed = &world.feeds[0];
        let st = SchoolTerm { urn: feed.urn, term: feed.term };
        for row in feed.rows.iter().take(50) {
            let h = vec![(st, row.clone())];
            let x = features(&h, row, st.term).values;
            for (e, m) in model.explain(&x).iter().zip(&model.outcomes) {
                let logit = e.baseline + e.contributions.iter().sum::<f64>();
                assert!((logit - m.model.scorer.logit(&x)).abs() < 1e-9, "{logit} vs {}", m.model.scorer.logit(&x));
                assert!((m.model.calibration.apply(logit) - e.probability).abs() < 1e-12);
            }
        }
    }
}
