//! Domain values shared by every layer. Depends on nothing else in the crate.

mod pupil;
mod term;
mod upn;

pub use pupil::{Attainment, Cin, Ethnicity, NcYear, PupilTerm, SchoolTerm, Sen, Sex};
pub use term::{Term, TermName, Urn};
pub use upn::{Upn, UpnError, check_letter};

/// The three outcomes the models predict, observed in the term after scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    PersistentAbsence,
    Suspension,
    MhReferral,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::PersistentAbsence, Outcome::Suspension, Outcome::MhReferral];
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::PersistentAbsence => "persistent_absence",
            Outcome::Suspension => "suspension",
            Outcome::MhReferral => "mh_referral",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Outcome::PersistentAbsence => "persistent absence",
            Outcome::Suspension => "suspension or exclusion",
            Outcome::MhReferral => "mental-health referral",
        }
    }
    /// The outcome as observed in a pupil's next-term row; `None` when undefined.
    pub fn observe(self, next: &PupilTerm) -> Option<bool> {
        match self {
            Outcome::PersistentAbsence => next.persistently_absent(),
            Outcome::Suspension => Some(next.suspended_or_excluded()),
            Outcome::MhReferral => Some(next.mh_referral),
        }
    }
}
