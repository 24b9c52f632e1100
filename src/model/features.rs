//! The feature spec: what the models see of a pupil at term t, from that term and the
//! terms before it (by UPN, across schools). `sex` and `ethnicity` are never inputs.

use std::collections::BTreeMap;

use crate::domain::{Attainment, PupilTerm, SchoolTerm, Sen, Term, TermName, Upn};

/// Bump when features change: artifacts record it, and scoring refuses a mismatch.
pub const FEATURE_SPEC_VERSION: &str = "riskid-features-2";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    Attendance,
    Behaviour,
    Wellbeing,
    Attainment,
    Context,
}

impl Domain {
    /// Every domain, in the order reasons are gathered.
    pub const ALL: [Domain; 5] =
        [Domain::Attendance, Domain::Behaviour, Domain::Wellbeing, Domain::Attainment, Domain::Context];

    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Attendance => "attendance",
            Domain::Behaviour => "behaviour",
            Domain::Wellbeing => "wellbeing",
            Domain::Attainment => "attainment",
            Domain::Context => "context",
        }
    }
}

/// (name, domain). Order is the column order of the model matrix.
pub const FEATURES: &[(&str, Domain)] = &[
    ("absence_rate", Domain::Attendance),
    ("absence_10pct_or_more", Domain::Attendance),
    ("absence_20pct_or_more", Domain::Attendance),
    ("absence_over_10pct_by", Domain::Attendance),
    ("absence_change_since_last_term", Domain::Attendance),
    ("absence_rate_last_term", Domain::Attendance),
    ("unauthorised_share", Domain::Attendance),
    ("spells_per_absent_session", Domain::Attendance),
    ("few_sessions_possible", Domain::Attendance),
    ("suspended_this_term", Domain::Behaviour),
    ("suspensions_last_three_terms", Domain::Behaviour),
    ("behaviour_incidents_log", Domain::Behaviour),
    ("behaviour_not_recorded", Domain::Behaviour),
    ("sdq_emotional", Domain::Wellbeing),
    ("sdq_conduct", Domain::Wellbeing),
    ("sdq_hyperactivity", Domain::Wellbeing),
    ("sdq_peer", Domain::Wellbeing),
    ("sdq_prosocial", Domain::Wellbeing),
    ("sdq_missing", Domain::Wellbeing),
    ("mh_referral_this_term", Domain::Wellbeing),
    ("mh_referral_last_three_terms", Domain::Wellbeing),
    ("english_below", Domain::Attainment),
    ("maths_below", Domain::Attainment),
    ("attainment_above", Domain::Attainment),
    ("attainment_missing", Domain::Attainment),
    ("fsm", Domain::Context),
    ("sen_support", Domain::Context),
    ("ehc_plan", Domain::Context),
    ("eal", Domain::Context),
    ("child_in_need", Domain::Context),
    ("young_carer", Domain::Context),
    ("school_moves", Domain::Context),
    ("secondary", Domain::Context),
    ("years_8_to_10", Domain::Context),
    ("year_group", Domain::Context),
    ("next_term_spring", Domain::Context),
    ("next_term_summer", Domain::Context),
    // The whole history (every term on record, at any school, up to and including this one):
    // the child's persistent state, which the last two terms estimate only noisily.
    ("absence_logit", Domain::Attendance),
    ("absence_logit_all_terms", Domain::Attendance),
    ("persistent_absence_share_all_terms", Domain::Attendance),
    ("spells_per_absent_session_all_terms", Domain::Attendance),
    ("unauthorised_share_all_terms", Domain::Attendance),
    ("terms_on_record", Domain::Context),
    ("suspensions_all_terms", Domain::Behaviour),
    ("behaviour_incidents_log_all_terms", Domain::Behaviour),
    ("sdq_emotional_all_surveys", Domain::Wellbeing),
    ("sdq_conduct_all_surveys", Domain::Wellbeing),
    ("sdq_hyperactivity_all_surveys", Domain::Wellbeing),
    ("sdq_peer_all_surveys", Domain::Wellbeing),
    ("sdq_prosocial_all_surveys", Domain::Wellbeing),
    ("sdq_surveys_on_record", Domain::Wellbeing),
    ("mh_referral_ever", Domain::Wellbeing),
    // Next term's year group, where suspension and referral rates change most.
    ("next_year_group", Domain::Context),
    ("next_year_reception_to_4", Domain::Context),
    ("next_year_5_or_6", Domain::Context),
    ("next_year_8_to_10", Domain::Context),
    ("moving_to_secondary", Domain::Context),
];

pub const N_FEATURES: usize = FEATURES.len();

/// Values used when an input is missing; the flag says so.
const TYPICAL_ABSENCE: f64 = 0.06;
const TYPICAL_SPELLINESS: f64 = 0.35;
const TYPICAL_SDQ: [f64; 5] = [2.5, 1.5, 3.5, 1.5, 7.5];

/// One pupil's rows, oldest first, each with the school and term it came from.
pub type PupilHistory = Vec<(SchoolTerm, PupilTerm)>;

/// Every pupil's rows, keyed by UPN (ordered, so iteration is deterministic).
#[derive(Debug, Default, Clone)]
pub struct History {
    pub pupils: BTreeMap<Upn, PupilHistory>,
}

impl History {
    pub fn from_rows(rows: impl IntoIterator<Item = (SchoolTerm, PupilTerm)>) -> Self {
        let mut pupils: BTreeMap<Upn, PupilHistory> = BTreeMap::new();
        for (st, row) in rows {
            pupils.entry(row.upn.clone()).or_default().push((st, row));
        }
        for rows in pupils.values_mut() {
            // A pupil on two rolls in one term (a move mid-term) keeps both; order by school too.
            rows.sort_by_key(|(st, _)| (st.term, st.urn));
        }
        Self { pupils }
    }

    pub fn rows(&self) -> usize {
        self.pupils.values().map(Vec::len).sum()
    }
}

/// The row at exactly `term`, if any (the last one if the pupil was on two rolls).
pub fn row_at(h: &PupilHistory, term: Term) -> Option<&PupilTerm> {
    h.iter().rev().find(|(st, _)| st.term == term).map(|(_, r)| r)
}

/// Every row on record for the pupil up to `now` (at `at`): the earlier terms' rows, then
/// `now` itself (not a second roll in the same term). The whole-history features and the
/// reasons that cite them both read this.
pub fn on_record<'a>(h: &'a PupilHistory, now: &'a PupilTerm, at: Term) -> Vec<&'a PupilTerm> {
    h.iter().filter(|(st, _)| st.term < at).map(|(_, r)| r).chain(std::iter::once(now)).collect()
}

/// A feature vector and what was missing or imputed, in plain words.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    pub values: [f64; N_FEATURES],
    pub flags: Vec<String>,
}

fn b(v: bool) -> f64 {
    if v { 1.0 } else { 0.0 }
}

/// Features for the pupil's row `now` (at `at`), using earlier rows of `h` as history.
pub fn features(h: &PupilHistory, now: &PupilTerm, at: Term) -> FeatureRow {
    let mut flags = Vec::new();
    let prev = row_at(h, at.prev());
    let recent: Vec<&PupilTerm> = h
        .iter()
        .filter(|(st, _)| st.term <= at && st.term.index() + 2 >= at.index() && st.term != at)
        .map(|(_, r)| r)
        .chain(std::iter::once(now))
        .collect();

    let rate = now.absence_rate().unwrap_or_else(|| {
        flags.push(format!("only {} sessions possible this term: absence rate assumed typical", now.sessions_possible));
        TYPICAL_ABSENCE
    });
    let prev_rate = prev.and_then(PupilTerm::absence_rate);
    if prev.is_none() {
        flags.push("no record for last term: attendance trend unknown".into());
    }
    let absent = f64::from(now.absent_sessions());
    let unauthorised = if absent > 0.0 { f64::from(now.sessions_unauthorised) / absent } else { 0.0 };
    let spelliness = match now.absence_spells {
        Some(s) if absent > 0.0 => f64::from(s) / absent,
        Some(_) => 0.0,
        None => {
            if absent > 0.0 {
                flags.push("absence spells not recorded".into());
            }
            TYPICAL_SPELLINESS
        }
    };
    let suspensions_recent: f64 = recent.iter().map(|r| f64::from(r.suspensions)).sum::<f64>().min(6.0);
    let behaviour = now.behaviour_incidents.map(|n| (1.0 + f64::from(n)).ln());
    if behaviour.is_none() {
        flags.push("behaviour incidents not recorded".into());
    }
    // The latest SDQ within the last three terms: surveys are once or twice a year.
    let sdq_row = recent.iter().rev().find(|r| r.sdq_emotional.is_some() || r.sdq_conduct.is_some());
    let sdq_vals: [Option<u8>; 5] = match sdq_row {
        Some(r) => [r.sdq_emotional, r.sdq_conduct, r.sdq_hyperactivity, r.sdq_peer, r.sdq_prosocial],
        None => [None; 5],
    };
    let sdq_missing = sdq_vals.iter().any(Option::is_none);
    if sdq_missing {
        flags.push("no recent SDQ wellbeing survey: typical scores assumed".into());
    }
    let sdq: [f64; 5] = std::array::from_fn(|i| sdq_vals[i].map_or(TYPICAL_SDQ[i], f64::from));
    let att_missing = now.attainment_english.is_none() || now.attainment_maths.is_none();
    if att_missing && now.ncyear.get() > 0 {
        flags.push("attainment not recorded".into());
    }
    let year = now.ncyear.get();
    let all = on_record(h, now, at);
    let (mut abs_all, mut poss_all, mut unauth_all, mut spells_all, mut spell_abs_all) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut pa_terms, mut rated_terms) = (0.0, 0.0);
    let (mut inc_sum, mut inc_terms, mut susp_all, mut mh_ever) = (0.0, 0.0, 0.0, false);
    let mut sdq_sum = [0.0; 5];
    let mut sdq_n = [0.0; 5];
    for r in &all {
        let a = f64::from(r.absent_sessions());
        abs_all += a;
        poss_all += f64::from(r.sessions_possible);
        unauth_all += f64::from(r.sessions_unauthorised);
        if let Some(sp) = r.absence_spells {
            spells_all += f64::from(sp);
            spell_abs_all += a;
        }
        if let Some(pa) = r.persistently_absent() {
            rated_terms += 1.0;
            pa_terms += b(pa);
        }
        if let Some(n) = r.behaviour_incidents {
            inc_sum += (1.0 + f64::from(n)).ln();
            inc_terms += 1.0;
        }
        susp_all += f64::from(r.suspensions);
        mh_ever |= r.mh_referral;
        for (k, v) in
            [r.sdq_emotional, r.sdq_conduct, r.sdq_hyperactivity, r.sdq_peer, r.sdq_prosocial].into_iter().enumerate()
        {
            if let Some(v) = v {
                sdq_sum[k] += f64::from(v);
                sdq_n[k] += 1.0;
            }
        }
    }
    let elogit = |absent: f64, possible: f64| ((absent + 0.5) / (possible - absent + 0.5)).ln();
    let sdq_all: [f64; 5] =
        std::array::from_fn(|k| if sdq_n[k] > 0.0 { sdq_sum[k] / sdq_n[k] } else { TYPICAL_SDQ[k] });
    let next = at.next();
    let next_year = if next.name() == TermName::Autumn { year + 1 } else { year };
    let values = [
        rate,
        b(rate >= 0.10),
        b(rate >= 0.20),
        (rate - 0.10).max(0.0),
        prev_rate.map_or(0.0, |p| rate - p),
        prev_rate.unwrap_or(rate),
        unauthorised,
        spelliness,
        b(now.sessions_possible < 20),
        b(now.suspended_or_excluded()),
        suspensions_recent,
        behaviour.unwrap_or(0.0),
        b(behaviour.is_none()),
        sdq[0],
        sdq[1],
        sdq[2],
        sdq[3],
        sdq[4],
        b(sdq_missing),
        b(now.mh_referral),
        b(recent.iter().any(|r| r.mh_referral)),
        b(now.attainment_english == Some(Attainment::Below)),
        b(now.attainment_maths == Some(Attainment::Below)),
        b(now.attainment_english == Some(Attainment::Above) || now.attainment_maths == Some(Attainment::Above)),
        b(att_missing),
        b(now.fsm),
        b(now.sen == Sen::K),
        b(now.sen == Sen::E),
        b(now.eal),
        b(now.cin.is_some()),
        b(now.young_carer == Some(true)),
        now.school_moves.map_or(0.0, |m| f64::from(m.min(3))),
        b(year >= 7),
        b((8..=10).contains(&year)),
        f64::from(year) / 13.0,
        b(at.next().name() == TermName::Spring),
        b(at.next().name() == TermName::Summer),
        elogit(absent, f64::from(now.sessions_possible)),
        elogit(abs_all, poss_all),
        if rated_terms > 0.0 { pa_terms / rated_terms } else { b(rate >= 0.10) },
        if spell_abs_all > 0.0 { spells_all / spell_abs_all } else { TYPICAL_SPELLINESS },
        if abs_all > 0.0 { unauth_all / abs_all } else { 0.0 },
        (all.len().min(9) as f64) / 9.0,
        susp_all.min(9.0),
        if inc_terms > 0.0 { inc_sum / inc_terms } else { 0.0 },
        sdq_all[0],
        sdq_all[1],
        sdq_all[2],
        sdq_all[3],
        sdq_all[4],
        sdq_n[0].min(6.0),
        b(mh_ever),
        f64::from(next_year) / 13.0,
        b(next_year <= 4),
        b((5..=6).contains(&next_year)),
        b((8..=10).contains(&next_year)),
        b(year == 6 && next.name() == TermName::Autumn),
    ];
    FeatureRow { values, flags }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Urn;

    fn row(csv_line: &str) -> PupilTerm {
        let csv = format!("{}\n{csv_line}\n", crate::ingest::contract_header());
        crate::ingest::parse_csv(csv.as_bytes()).unwrap().rows.remove(0)
    }

    #[test]
    fn features_read_the_term_and_its_history() {
        let st = |t: &str| SchoolTerm { urn: Urn::new(100001).unwrap(), term: Term::parse("2025/26", t).unwrap() };
        let last = row("B801200005001,8,F,WBRI,Y,N,K,,,,140,10,4,3,1,2,N,5,below,expected,,,,,,N");
        let now = row("B801200005001,8,F,WBRI,Y,N,K,,,,140,20,8,14,0,0,N,,below,below,7,3,5,2,6,Y");
        let h: PupilHistory = vec![(st("autumn"), last), (st("spring"), now.clone())];
        let f = features(&h, &now, st("spring").term);
        let v = |name: &str| f.values[FEATURES.iter().position(|x| x.0 == name).unwrap()];
        assert!((v("absence_rate") - 0.2).abs() < 1e-12);
        assert_eq!(v("absence_20pct_or_more"), 1.0);
        assert!((v("absence_change_since_last_term") - 0.1).abs() < 1e-12);
        assert!((v("spells_per_absent_session") - 0.5).abs() < 1e-12);
        assert_eq!(v("suspensions_last_three_terms"), 1.0);
        assert_eq!(v("behaviour_not_recorded"), 1.0);
        assert_eq!(v("sdq_emotional"), 7.0);
        assert_eq!((v("mh_referral_this_term"), v("maths_below"), v("sen_support")), (1.0, 1.0, 1.0));
        assert_eq!(v("next_term_summer"), 1.0);
        assert!(f.flags.iter().any(|m| m.contains("behaviour")));
        assert!(!FEATURES.iter().any(|(n, _)| n.contains("sex") || n.contains("ethnic")));
    }
}
