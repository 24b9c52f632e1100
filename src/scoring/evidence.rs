//! The data behind a reason, kept as numbers: what was measured, the pupil's value, the
//! value a term earlier, and what it compares with. Words are rendered from it where it is
//! shown (an API reply, a page, an audit event), so every surface shows the same facts.

use serde::{Deserialize, Serialize};

/// What a piece of evidence measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Share of possible sessions attended this term (0–1).
    Attendance,
    /// Possible sessions, when too few for an attendance rate.
    SessionsPossible,
    AbsenceSpells,
    UnauthorisedSessions,
    SuspensionsLastThreeTerms,
    PermanentExclusion,
    BehaviourIncidents,
    BehaviourNotRecorded,
    MhReferral,
    SdqEmotional,
    SdqConduct,
    SdqHyperactivity,
    SdqPeer,
    NoSdq,
    EnglishBelowExpected,
    MathsBelowExpected,
    EnglishAttainment,
    MathsAttainment,
    FreeSchoolMeals,
    SenSupport,
    EhcPlan,
    ChildInNeed,
    YoungCarer,
    SchoolMoves,
    EnglishAdditionalLanguage,
    YearGroup,
    /// Share of possible sessions attended over every term on record (0–1).
    AttendanceAllTerms,
    SuspensionsAllTerms,
    /// Mean incidents a term over the terms on record that recorded them.
    BehaviourIncidentsAllTerms,
    MhReferralEarlier,
}

impl Measure {
    /// The measure's stable name (as serialised).
    pub const ALL: &'static [Measure] = &[
        Measure::Attendance,
        Measure::SessionsPossible,
        Measure::AbsenceSpells,
        Measure::UnauthorisedSessions,
        Measure::SuspensionsLastThreeTerms,
        Measure::PermanentExclusion,
        Measure::BehaviourIncidents,
        Measure::BehaviourNotRecorded,
        Measure::MhReferral,
        Measure::SdqEmotional,
        Measure::SdqConduct,
        Measure::SdqHyperactivity,
        Measure::SdqPeer,
        Measure::NoSdq,
        Measure::EnglishBelowExpected,
        Measure::MathsBelowExpected,
        Measure::EnglishAttainment,
        Measure::MathsAttainment,
        Measure::FreeSchoolMeals,
        Measure::SenSupport,
        Measure::EhcPlan,
        Measure::ChildInNeed,
        Measure::YoungCarer,
        Measure::SchoolMoves,
        Measure::EnglishAdditionalLanguage,
        Measure::YearGroup,
        Measure::AttendanceAllTerms,
        Measure::SuspensionsAllTerms,
        Measure::BehaviourIncidentsAllTerms,
        Measure::MhReferralEarlier,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Attendance => "attendance",
            Measure::SessionsPossible => "sessions_possible",
            Measure::AbsenceSpells => "absence_spells",
            Measure::UnauthorisedSessions => "unauthorised_sessions",
            Measure::SuspensionsLastThreeTerms => "suspensions_last_three_terms",
            Measure::PermanentExclusion => "permanent_exclusion",
            Measure::BehaviourIncidents => "behaviour_incidents",
            Measure::BehaviourNotRecorded => "behaviour_not_recorded",
            Measure::MhReferral => "mh_referral",
            Measure::SdqEmotional => "sdq_emotional",
            Measure::SdqConduct => "sdq_conduct",
            Measure::SdqHyperactivity => "sdq_hyperactivity",
            Measure::SdqPeer => "sdq_peer",
            Measure::NoSdq => "no_sdq",
            Measure::EnglishBelowExpected => "english_below_expected",
            Measure::MathsBelowExpected => "maths_below_expected",
            Measure::EnglishAttainment => "english_attainment",
            Measure::MathsAttainment => "maths_attainment",
            Measure::FreeSchoolMeals => "free_school_meals",
            Measure::SenSupport => "sen_support",
            Measure::EhcPlan => "ehc_plan",
            Measure::ChildInNeed => "child_in_need",
            Measure::YoungCarer => "young_carer",
            Measure::SchoolMoves => "school_moves",
            Measure::EnglishAdditionalLanguage => "english_additional_language",
            Measure::YearGroup => "year_group",
            Measure::AttendanceAllTerms => "attendance_all_terms",
            Measure::SuspensionsAllTerms => "suspensions_all_terms",
            Measure::BehaviourIncidentsAllTerms => "behaviour_incidents_all_terms",
            Measure::MhReferralEarlier => "mh_referral_earlier",
        }
    }
}

/// What a pupil's value this term is compared with.
pub const SCHOOL_MEDIAN: &str = "school median";
/// What a pupil's value over every term on record is compared with.
pub const SCHOOL_MEDIAN_THIS_TERM: &str = "school median this term";

/// What a value compares with, such as the school's median this term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    #[serde(deserialize_with = "super::known_name")]
    pub with: std::borrow::Cow<'static, str>,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Evidence {
    pub measure: Measure,
    pub value: f64,
    #[serde(default)]
    pub earlier: Option<f64>,
    #[serde(default)]
    pub compared_with: Option<Comparison>,
}

/// In JSON (what cohorts keep as shown, and hash into the audit chain) an absent value is
/// left out, exactly as earlier releases wrote it, so re-serialising what was shown gives the
/// same bytes. In the store's compact format (postcard, not self-describing) every field is
/// written: it has no way to leave one out.
impl Serialize for Evidence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let all = !s.is_human_readable();
        let earlier = all || self.earlier.is_some();
        let compared = all || self.compared_with.is_some();
        let mut st = s.serialize_struct("Evidence", 2 + usize::from(earlier) + usize::from(compared))?;
        st.serialize_field("measure", &self.measure)?;
        st.serialize_field("value", &self.value)?;
        if earlier {
            st.serialize_field("earlier", &self.earlier)?;
        } else {
            st.skip_field("earlier")?;
        }
        if compared {
            st.serialize_field("compared_with", &self.compared_with)?;
        } else {
            st.skip_field("compared_with")?;
        }
        st.end()
    }
}

impl Evidence {
    pub fn new(measure: Measure, value: f64) -> Self {
        Self { measure, value, earlier: None, compared_with: None }
    }

    pub fn earlier(mut self, v: Option<f64>) -> Self {
        self.earlier = v;
        self
    }

    pub fn compared_with(mut self, with: &'static str, v: Option<f64>) -> Self {
        self.compared_with = v.map(|value| Comparison { with: with.into(), value });
        self
    }

    /// The evidence in plain words, for a school or a link worker.
    pub fn words(&self) -> String {
        let pct = |x: f64| format!("{:.0}%", 100.0 * x);
        let n = self.value.round() as i64;
        let attainment = |v: f64| match v.round() as i64 {
            0 => "below",
            1 => "expected",
            2 => "above",
            _ => "not recorded",
        };
        let mut s = match self.measure {
            Measure::Attendance => {
                let mut s = format!("attendance {} this term", pct(self.value));
                if let Some(p) = self.earlier {
                    let (now, then) = ((self.value * 100.0).round(), (p * 100.0).round());
                    s.push_str(&if then > now {
                        format!(", down from {} last term", pct(p))
                    } else if then < now {
                        format!(", up from {} last term", pct(p))
                    } else {
                        format!(", the same as {} last term", pct(p))
                    });
                }
                s
            }
            Measure::SessionsPossible => format!("only {n} sessions possible this term"),
            Measure::AbsenceSpells => format!("{n} separate spells of absence"),
            Measure::UnauthorisedSessions => format!("{n} unauthorised sessions"),
            Measure::SuspensionsLastThreeTerms => format!("{n} suspension(s) in the last three terms"),
            Measure::PermanentExclusion => "permanently excluded this term".into(),
            Measure::BehaviourIncidents => format!("{n} behaviour incidents this term"),
            Measure::BehaviourNotRecorded => "behaviour incidents not recorded".into(),
            Measure::MhReferral => "referred to mental-health services this term".into(),
            Measure::SdqEmotional => format!("SDQ emotional {n}/10"),
            Measure::SdqConduct => format!("SDQ conduct {n}/10"),
            Measure::SdqHyperactivity => format!("SDQ hyperactivity {n}/10"),
            Measure::SdqPeer => format!("SDQ peer {n}/10"),
            Measure::NoSdq => "no SDQ wellbeing survey on record".into(),
            Measure::EnglishBelowExpected => "below the expected standard in English".into(),
            Measure::MathsBelowExpected => "below the expected standard in maths".into(),
            Measure::EnglishAttainment => format!("English {}", attainment(self.value)),
            Measure::MathsAttainment => format!("maths {}", attainment(self.value)),
            Measure::FreeSchoolMeals => "eligible for free school meals".into(),
            Measure::SenSupport => "SEN support".into(),
            Measure::EhcPlan => "EHC plan".into(),
            Measure::ChildInNeed => "child in need".into(),
            Measure::YoungCarer => "young carer".into(),
            Measure::SchoolMoves => format!("{n} school move(s) in two years"),
            Measure::EnglishAdditionalLanguage => "English as an additional language".into(),
            Measure::YearGroup => {
                if n == 0 {
                    "Year R".into()
                } else {
                    format!("Year {n}")
                }
            }
            Measure::AttendanceAllTerms => format!("attendance {} over all terms on record", pct(self.value)),
            Measure::SuspensionsAllTerms => format!("{n} suspension(s) in all terms on record"),
            Measure::BehaviourIncidentsAllTerms => {
                format!("{:.1} behaviour incidents a term over all terms on record", self.value)
            }
            Measure::MhReferralEarlier => "referred to mental-health services in an earlier term".into(),
        };
        if self.measure != Measure::Attendance
            && let Some(e) = self.earlier
        {
            s.push_str(&format!(" (last term {})", e.round() as i64));
        }
        if let Some(c) = &self.compared_with {
            let v = if matches!(self.measure, Measure::Attendance | Measure::AttendanceAllTerms) {
                pct(c.value)
            } else {
                format!("{}", c.value)
            };
            s.push_str(&format!(" ({} {v})", c.with));
        }
        s
    }
}

/// Every piece of evidence in words, joined as one sentence.
pub fn words(evidence: &[Evidence]) -> String {
    evidence.iter().map(Evidence::words).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names riskid writes come back borrowed (no allocation per reason read), through both
    /// stored formats, and equal to what was written; any other name is kept as read.
    #[test]
    fn known_names_are_borrowed_when_read_back() {
        use std::borrow::Cow;
        let e = Evidence::new(Measure::Attendance, 0.8).compared_with("school median this term", Some(0.9));
        let r = crate::scoring::Reason { domain: "attendance".into(), evidence: vec![e], contribution: 0.5 };
        let json: crate::scoring::Reason = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        let compact: crate::scoring::Reason = postcard::from_bytes(&postcard::to_allocvec(&r).unwrap()).unwrap();
        for back in [json, compact] {
            assert_eq!(back, r);
            assert!(matches!(back.domain, Cow::Borrowed("attendance")));
            let with = &back.evidence[0].compared_with.as_ref().unwrap().with;
            assert!(matches!(with, Cow::Borrowed("school median this term")));
        }
        let odd = crate::scoring::Reason { domain: "other".into(), ..r };
        let back: crate::scoring::Reason = serde_json::from_str(&serde_json::to_string(&odd).unwrap()).unwrap();
        assert_eq!(back.domain, "other");
        assert!(matches!(back.domain, Cow::Owned(_)));
    }

    #[test]
    fn words_come_from_the_numbers() {
        let a = Evidence::new(Measure::Attendance, 0.84).earlier(Some(0.93)).compared_with("school median", Some(0.95));
        assert_eq!(a.words(), "attendance 84% this term, down from 93% last term (school median 95%)");
        let b = Evidence::new(Measure::BehaviourIncidents, 12.0).earlier(Some(3.0));
        assert_eq!(b.words(), "12 behaviour incidents this term (last term 3)");
        assert_eq!(serde_json::to_value(Measure::SdqHyperactivity).unwrap(), Measure::SdqHyperactivity.as_str());
        assert_eq!(
            words(&[Evidence::new(Measure::FreeSchoolMeals, 1.0), Evidence::new(Measure::YearGroup, 0.0)]),
            "eligible for free school meals; Year R"
        );
    }
}
