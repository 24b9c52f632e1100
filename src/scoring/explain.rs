//! Turning a model's additive contributions into reasons a person can check.

use super::{OutcomeRisk, PupilRisk, Reason};
use crate::domain::{Attainment, Cin, Outcome, PupilTerm, SchoolTerm, Sen};
use crate::model::features::{Domain, FEATURES, PupilHistory, features, row_at};
use crate::model::{ModelArtifact, N_FEATURES};

/// Reasons shown per outcome.
pub const TOP_REASONS: usize = 3;

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

/// The data behind a domain, in plain words, from the pupil's own rows.
fn describe(domain: Domain, h: &PupilHistory, row: &PupilTerm, st: SchoolTerm) -> String {
    match domain {
        Domain::Attendance => {
            let mut parts = Vec::new();
            match row.absence_rate() {
                Some(r) => {
                    let mut s = format!("attendance {} this term", pct(1.0 - r));
                    if let Some(p) = row_at(h, st.term.prev()).and_then(PupilTerm::absence_rate) {
                        let dir = if p < r {
                            "down"
                        } else if p > r {
                            "up"
                        } else {
                            "the same as"
                        };
                        let from = if dir == "the same as" { String::new() } else { " from".into() };
                        s.push_str(&format!(", {dir}{from} {} last term", pct(1.0 - p)));
                    }
                    parts.push(s);
                }
                None => parts.push(format!("only {} sessions possible this term", row.sessions_possible)),
            }
            if let Some(sp) = row.absence_spells.filter(|&s| s > 1) {
                parts.push(format!("{sp} separate spells of absence"));
            }
            if row.sessions_unauthorised > 0 {
                parts.push(format!("{} unauthorised sessions", row.sessions_unauthorised));
            }
            parts.join("; ")
        }
        Domain::Behaviour => {
            let recent: u32 = h
                .iter()
                .filter(|(s, _)| s.term <= st.term && s.term.index() + 2 >= st.term.index())
                .map(|(_, r)| u32::from(r.suspensions))
                .sum();
            let mut parts = vec![format!("{recent} suspension(s) in the last three terms")];
            if row.permanent_exclusion {
                parts.push("permanently excluded this term".into());
            }
            match row.behaviour_incidents {
                Some(n) => parts.push(format!("{n} behaviour incidents this term")),
                None => parts.push("behaviour incidents not recorded".into()),
            }
            parts.join("; ")
        }
        Domain::Wellbeing => {
            let mut parts = Vec::new();
            if row.mh_referral {
                parts.push("referred to mental-health services this term".to_string());
            }
            let sdq =
                h.iter().rev().filter(|(s, _)| s.term <= st.term).find_map(|(s, r)| {
                    Some((s.term, r.sdq_emotional?, r.sdq_conduct?, r.sdq_hyperactivity?, r.sdq_peer?))
                });
            match sdq {
                Some((t, e, c, hy, p)) => parts
                    .push(format!("SDQ ({t}): emotional {e}/10, conduct {c}/10, hyperactivity {hy}/10, peer {p}/10")),
                None => parts.push("no SDQ wellbeing survey on record".into()),
            }
            parts.join("; ")
        }
        Domain::Attainment => {
            let below: Vec<&str> = [("English", row.attainment_english), ("maths", row.attainment_maths)]
                .iter()
                .filter(|(_, a)| *a == Some(Attainment::Below))
                .map(|(s, _)| *s)
                .collect();
            if below.is_empty() {
                let e = row.attainment_english.map_or("not recorded", |a| a.code());
                let m = row.attainment_maths.map_or("not recorded", |a| a.code());
                format!("English {e}, maths {m}")
            } else {
                format!("below the expected standard in {}", below.join(" and "))
            }
        }
        Domain::Context => {
            let mut parts = Vec::new();
            if row.fsm {
                parts.push("eligible for free school meals".to_string());
            }
            match row.sen {
                Sen::K => parts.push("SEN support".into()),
                Sen::E => parts.push("EHC plan".into()),
                Sen::N => {}
            }
            if row.cin == Some(Cin::Cin) {
                parts.push("child in need".into());
            }
            if row.young_carer == Some(true) {
                parts.push("young carer".into());
            }
            if let Some(m) = row.school_moves.filter(|&m| m > 0) {
                parts.push(format!("{m} school move(s) in two years"));
            }
            if row.eal {
                parts.push("English as an additional language".into());
            }
            parts.push(format!("Year {}", row.ncyear.label()));
            parts.join("; ")
        }
    }
}

const DOMAINS: [Domain; 5] =
    [Domain::Attendance, Domain::Behaviour, Domain::Wellbeing, Domain::Attainment, Domain::Context];

/// Scores one pupil's row with the model, with reasons and flags.
pub fn score_pupil(model: &ModelArtifact, h: &PupilHistory, row: &PupilTerm, st: SchoolTerm) -> PupilRisk {
    let f = features(h, row, st.term);
    let explained = model.explain(&f.values);
    // The same domain's words serve every outcome that names it: write them once.
    let mut words: [Option<String>; 5] = Default::default();
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
                    text: words[d].get_or_insert_with(|| describe(DOMAINS[d], h, row, st)).clone(),
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
