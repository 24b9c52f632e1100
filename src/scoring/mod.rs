//! Scores as people see them: per-outcome probability, band and plain-language reasons.
//! The same `PupilRisk` is stored at scoring time and returned by every RPC that shows a child.

mod evidence;
mod explain;

pub use evidence::{Comparison, Evidence, Measure};
pub use explain::{SchoolContext, TOP_REASONS, score_pupil, score_pupil_in};

use serde::{Deserialize, Serialize};

use crate::domain::{Outcome, SchoolTerm};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Low,
    Medium,
    High,
}

impl Band {
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Low => "low",
            Band::Medium => "medium",
            Band::High => "high",
        }
    }
}

/// One reason: a domain, the evidence behind it (numbers, not prose), and how much it moved
/// the log-odds of the outcome (positive raises the risk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// The domain's stable name (as serialised); borrowed when scored, and when read back
    /// (a known name), so showing a reason costs no allocation.
    #[serde(deserialize_with = "known_name")]
    pub domain: std::borrow::Cow<'static, str>,
    pub evidence: Vec<Evidence>,
    pub contribution: f64,
}

/// A name riskid writes in reasons (a domain) or evidence (what a value compares with).
fn known(v: &str) -> Option<&'static str> {
    use crate::model::features::Domain;
    let compared = [evidence::SCHOOL_MEDIAN, evidence::SCHOOL_MEDIAN_THIS_TERM];
    Domain::ALL.iter().map(|d| d.as_str()).chain(compared).find(|k| *k == v)
}

/// A name as read back: one riskid writes is borrowed from its own, any other is kept as
/// read. Reading a school's scores would otherwise allocate every name again.
pub(crate) fn known_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::borrow::Cow<'static, str>, D::Error> {
    struct Name;
    impl serde::de::Visitor<'_> for Name {
        type Value = std::borrow::Cow<'static, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a name")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(known(v).map_or_else(|| v.to_owned().into(), Into::into))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(known(&v).map_or_else(|| v.into(), Into::into))
        }
    }
    d.deserialize_str(Name)
}

impl Reason {
    /// The reason in plain words, rendered from its evidence where it is shown.
    pub fn text(&self) -> String {
        evidence::words(&self.evidence)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRisk {
    pub outcome: Outcome,
    pub probability: f64,
    pub band: Band,
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PupilRisk {
    /// The pupil's UPN, as text: this record is shown to people entitled to see it, never logged.
    pub upn: String,
    pub school_term: SchoolTerm,
    pub ncyear: u8,
    pub statutory: bool,
    pub model_id: String,
    /// Chance of at least one adverse outcome, treating the three as independent.
    pub any_adverse: f64,
    pub outcomes: Vec<OutcomeRisk>,
    /// Missing or imputed inputs, in plain words.
    pub flags: Vec<String>,
}

impl PupilRisk {
    pub fn probabilities(&self) -> [f64; 3] {
        let mut p = [0.0; 3];
        for o in &self.outcomes {
            p[Outcome::ALL.iter().position(|x| *x == o.outcome).expect("known outcome")] = o.probability;
        }
        p
    }

    pub fn outcome(&self, o: Outcome) -> Option<&OutcomeRisk> {
        self.outcomes.iter().find(|r| r.outcome == o)
    }
}
