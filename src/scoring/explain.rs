//! Turning a model's additive contributions into reasons a person can check.

use super::evidence::{Evidence, Measure};
use super::{OutcomeRisk, PupilRisk, Reason};
use crate::domain::{Attainment, Cin, Outcome, PupilTerm, SchoolTerm, Sen};
use crate::model::features::{Domain, FEATURES, PupilHistory, features, row_at};
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
                        .compared_with("school median", ctx.median_attendance),
                ),
                None => out.push(ev(M::SessionsPossible, f64::from(row.sessions_possible))),
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
            out.push(ev(M::SuspensionsLastThreeTerms, f64::from(recent)));
            if row.permanent_exclusion {
                out.push(ev(M::PermanentExclusion, 1.0));
            }
            match row.behaviour_incidents {
                Some(n) => out.push(
                    ev(M::BehaviourIncidents, f64::from(n))
                        .earlier(prev.and_then(|p| p.behaviour_incidents).map(f64::from))
                        .compared_with("school median", ctx.median_incidents),
                ),
                None => out.push(ev(M::BehaviourNotRecorded, 1.0)),
            }
        }
        Domain::Wellbeing => {
            if row.mh_referral {
                out.push(ev(M::MhReferral, 1.0));
            }
            let mut surveys = h
                .iter()
                .rev()
                .filter(|(s, _)| s.term <= st.term)
                .filter_map(|(_, r)| Some([r.sdq_emotional?, r.sdq_conduct?, r.sdq_hyperactivity?, r.sdq_peer?]));
            match (surveys.next(), surveys.next()) {
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

const DOMAINS: [Domain; 5] =
    [Domain::Attendance, Domain::Behaviour, Domain::Wellbeing, Domain::Attainment, Domain::Context];

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
    // The same domain's evidence serves every outcome that names it: gather it once.
    let mut words: [Option<Vec<Evidence>>; 5] = Default::default();
    let outcomes: Vec<OutcomeRisk> = Outcome::ALL
        .iter()
        .zip(&explained)
        .zip(&model.outcomes)
        .map(|((&outcome, e), m)| {
            let mut by_domain = [0.0; 5];
            for (j, c) in e.contributions.iter().enumerate().take(N_FEATURES) {
                let d = DOMAINS.iter().position(|d| *d == FEATURES[j].1).expect("known domain");
                by_domain[d] += c;
            }
            let mut order: Vec<usize> = (0..5).filter(|&d| by_domain[d] > 0.0).collect();
            order.sort_by(|&a, &b| by_domain[b].total_cmp(&by_domain[a]).then(a.cmp(&b)));
            let reasons = order
                .into_iter()
                .take(TOP_REASONS)
                .map(|d| Reason {
                    domain: DOMAINS[d].as_str().into(),
                    evidence: words[d].get_or_insert_with(|| describe(DOMAINS[d], h, row, st, ctx)).clone(),
                    contribution: by_domain[d],
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
