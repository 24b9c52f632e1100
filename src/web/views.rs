//! What pages show of a child's scores: probabilities, bands in words, reasons with the
//! data behind them, and flags. Built once from a `PupilRisk`, rendered by the templates.

use crate::scoring::{Band, Evidence, Measure, PupilRisk};

pub fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

/// One outcome's cell: probability and band, in words (and a class for colour).
#[derive(Debug, Clone)]
pub struct OutcomeCell {
    pub label: &'static str,
    pub probability: String,
    pub band: &'static str,
    pub band_class: &'static str,
}

/// One row of a reason's data: the measure, the child's value, the earlier value, and what
/// it compares with.
#[derive(Debug, Clone)]
pub struct EvidenceRow {
    pub measure: String,
    pub value: String,
    pub earlier: String,
    pub compared: String,
}

#[derive(Debug, Clone)]
pub struct ReasonView {
    pub outcome: &'static str,
    pub domain: String,
    pub text: String,
    pub contribution: String,
    pub evidence: Vec<EvidenceRow>,
}

/// A child's scores as a page shows them.
#[derive(Debug, Clone)]
pub struct RiskView {
    pub pid: String,
    pub year: String,
    pub any_adverse: String,
    pub outcomes: Vec<OutcomeCell>,
    /// The highest outcome's first reason, in words (for tables).
    pub top_reason: String,
    pub reasons: Vec<ReasonView>,
    pub flags: Vec<String>,
    pub model_id: String,
}

pub fn band_words(b: Band) -> (&'static str, &'static str) {
    match b {
        Band::High => ("High", "band-high"),
        Band::Medium => ("Medium", "band-medium"),
        Band::Low => ("Low", "band-low"),
    }
}

fn measure_label(m: Measure) -> String {
    let s = m.as_str().replace('_', " ");
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// A value of a measure, as a person reads it.
pub fn value_words(m: Measure, v: f64) -> String {
    use Measure::*;
    match m {
        Attendance | AttendanceAllTerms => pct(v),
        EnglishAttainment | MathsAttainment => match v.round() as i64 {
            0 => "below expected".into(),
            1 => "expected".into(),
            2 => "above expected".into(),
            _ => "not recorded".into(),
        },
        PermanentExclusion
        | MhReferral
        | MhReferralEarlier
        | NoSdq
        | BehaviourNotRecorded
        | EnglishBelowExpected
        | MathsBelowExpected
        | FreeSchoolMeals
        | SenSupport
        | EhcPlan
        | ChildInNeed
        | YoungCarer
        | EnglishAdditionalLanguage => {
            if v > 0.5 {
                "yes".into()
            } else {
                "no".into()
            }
        }
        _ => {
            if (v - v.round()).abs() < 1e-9 {
                format!("{}", v.round() as i64)
            } else {
                format!("{v:.1}")
            }
        }
    }
}

fn evidence_row(e: &Evidence) -> EvidenceRow {
    EvidenceRow {
        measure: measure_label(e.measure),
        value: value_words(e.measure, e.value),
        earlier: e.earlier.map(|v| value_words(e.measure, v)).unwrap_or_else(|| "–".into()),
        compared: e
            .compared_with
            .as_ref()
            .map(|c| format!("{} {}", c.with.replace('_', " "), value_words(e.measure, c.value)))
            .unwrap_or_else(|| "–".into()),
    }
}

impl RiskView {
    pub fn new(r: &PupilRisk, pid: String) -> Self {
        let outcomes = r
            .outcomes
            .iter()
            .map(|o| {
                let (band, band_class) = band_words(o.band);
                OutcomeCell { label: o.outcome.label(), probability: pct(o.probability), band, band_class }
            })
            .collect();
        let top = r.outcomes.iter().max_by(|a, b| a.probability.total_cmp(&b.probability));
        let top_reason = top.and_then(|o| o.reasons.first()).map(|x| x.text()).unwrap_or_else(|| "–".into());
        // Only what raised the risk is a reason.
        let reasons = r
            .outcomes
            .iter()
            .flat_map(|o| {
                o.reasons.iter().filter(|x| x.contribution > 0.0).map(|x| ReasonView {
                    outcome: o.outcome.label(),
                    domain: x.domain.replace('_', " "),
                    text: x.text(),
                    contribution: format!("+{:.2}", x.contribution),
                    evidence: x.evidence.iter().map(evidence_row).collect(),
                })
            })
            .collect();
        Self {
            pid,
            year: format!("Year {}", r.ncyear),
            any_adverse: pct(r.any_adverse),
            outcomes,
            top_reason,
            reasons,
            flags: r.flags.clone(),
            model_id: r.model_id.clone(),
        }
    }
}

/// Unix seconds as a UTC date and time a person reads.
pub fn when(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => {
            format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
        }
        Err(_) => unix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_people_say_them() {
        assert_eq!(value_words(Measure::Attendance, 0.874), "87%");
        assert_eq!(value_words(Measure::EnglishAttainment, 0.0), "below expected");
        assert_eq!(value_words(Measure::FreeSchoolMeals, 1.0), "yes");
        assert_eq!(value_words(Measure::AbsenceSpells, 4.0), "4");
        assert_eq!(value_words(Measure::SdqEmotional, 6.5), "6.5");
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
    }
}
