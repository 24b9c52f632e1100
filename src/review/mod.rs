//! Link-worker review: the cohort as a domain type, and its rules as pure functions.
//!
//! Reason codes for removing a proposed child: `already_supported` (already supported
//! elsewhere), `family_declined`, `data_wrong`, `professional_judgement`,
//! `statutory_involvement`, `left_school`, `other` (note required). Reason codes for adding
//! a child: `professional_judgement`, `school_concern`, `family_request`, `data_missing` (the
//! data does not show the need), `other` (note required).

use serde::{Deserialize, Serialize};

use crate::cohort::CohortParams;
use crate::domain::{SchoolTerm, Term, Upn};
use crate::scoring::PupilRisk;

/// Two years of terms: a cohort finalised at term t runs for terms t .. t+5.
pub const PROGRAMME_TERMS: u32 = 6;

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($v:ident = $code:literal: $label:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            pub fn code(self) -> &'static str {
                match self { $($name::$v => $code),+ }
            }
            pub fn label(self) -> &'static str {
                match self { $($name::$v => $label),+ }
            }
            pub fn parse(code: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|r| r.code() == code)
            }
            fn codes() -> String {
                Self::ALL.iter().map(|r| r.code()).collect::<Vec<_>>().join(", ")
            }
        }
    };
}

reasons!(
    /// Why a link worker removed a proposed child.
    RemoveReason {
        AlreadySupported = "already_supported": "already supported elsewhere",
        FamilyDeclined = "family_declined": "family declined",
        DataWrong = "data_wrong": "the data is wrong",
        ProfessionalJudgement = "professional_judgement": "professional judgement",
        StatutoryInvolvement = "statutory_involvement": "statutory involvement",
        LeftSchool = "left_school": "left the school",
        Other = "other": "other (see note)",
    }
);

reasons!(
    /// Why a link worker added a child the model did not propose.
    AddReason {
        ProfessionalJudgement = "professional_judgement": "professional judgement",
        SchoolConcern = "school_concern": "concern raised by the school",
        FamilyRequest = "family_request": "family asked for support",
        DataMissing = "data_missing": "the data does not show the need",
        Other = "other": "other (see note)",
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Confirm,
    Remove,
    Add,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Confirm => "confirm",
            Kind::Remove => "remove",
            Kind::Add => "add",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Kind::Confirm, Kind::Remove, Kind::Add].into_iter().find(|k| k.as_str() == s)
    }
}

/// A link worker's decision on one child, with its reason where one is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Decision {
    Confirm { note: Option<String> },
    Remove { reason: RemoveReason, note: Option<String> },
    Add { reason: AddReason, note: Option<String> },
}

impl Decision {
    /// Builds a decision from a request's parts, checking the reason code and its note.
    pub fn from_parts(kind: Kind, reason_code: &str, note: &str) -> Result<Self, ReviewError> {
        let note_opt = (!note.trim().is_empty()).then(|| note.to_owned());
        let need_note = |other: bool| {
            if other && note_opt.is_none() {
                Err(ReviewError::invalid("note", "NOTE_REQUIRED", "a note is required with reason \"other\""))
            } else {
                Ok(())
            }
        };
        match kind {
            Kind::Confirm => Ok(Decision::Confirm { note: note_opt }),
            Kind::Remove => {
                let reason = RemoveReason::parse(reason_code).ok_or_else(|| {
                    ReviewError::invalid(
                        "reason_code",
                        "UNKNOWN_REASON_CODE",
                        format!("reason_code must be one of {}", RemoveReason::codes()),
                    )
                })?;
                need_note(reason == RemoveReason::Other)?;
                Ok(Decision::Remove { reason, note: note_opt })
            }
            Kind::Add => {
                let reason = AddReason::parse(reason_code).ok_or_else(|| {
                    ReviewError::invalid(
                        "reason_code",
                        "UNKNOWN_REASON_CODE",
                        format!("reason_code must be one of {}", AddReason::codes()),
                    )
                })?;
                need_note(reason == AddReason::Other)?;
                Ok(Decision::Add { reason, note: note_opt })
            }
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Decision::Confirm { .. } => Kind::Confirm,
            Decision::Remove { .. } => Kind::Remove,
            Decision::Add { .. } => Kind::Add,
        }
    }

    pub fn reason_code(&self) -> Option<&'static str> {
        match self {
            Decision::Confirm { .. } => None,
            Decision::Remove { reason, .. } => Some(reason.code()),
            Decision::Add { reason, .. } => Some(reason.code()),
        }
    }

    pub fn note(&self) -> Option<&str> {
        match self {
            Decision::Confirm { note } | Decision::Remove { note, .. } | Decision::Add { note, .. } => note.as_deref(),
        }
    }

    /// In the final list: confirmed or added.
    pub fn keeps(&self) -> bool {
        !matches!(self, Decision::Remove { .. })
    }
}

/// A decision with who made it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    pub decision: Decision,
    pub by: i64,
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CohortState {
    /// Proposed; no decision yet (a new proposal may replace it).
    Proposed,
    /// At least one decision recorded.
    InReview,
    /// Frozen: the programme runs.
    Finalised,
    /// Superseded by a newer proposal before review.
    Replaced,
}

impl CohortState {
    pub fn as_str(self) -> &'static str {
        match self {
            CohortState::Proposed => "proposed",
            CohortState::InReview => "in_review",
            CohortState::Finalised => "finalised",
            CohortState::Replaced => "replaced",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [CohortState::Proposed, CohortState::InReview, CohortState::Finalised, CohortState::Replaced]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// How the proposal was drawn from the school's pupils, kept with the cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProposalStats {
    pub eligible: usize,
    pub excluded_year_group: usize,
    pub excluded_statutory: usize,
    pub excluded_in_programme: usize,
    /// Permanently excluded in the term (cohorts stored before this count was kept read 0).
    #[serde(default)]
    pub excluded_permanently: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub upn: Upn,
    /// Proposed by the model (false: added by a link worker).
    pub proposed: bool,
    pub rank: Option<u32>,
    pub priority: Option<f64>,
    /// What the link worker was shown for this child (absent for an added child with no score).
    pub shown: Option<PupilRisk>,
    pub decided: Option<Decided>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cohort {
    pub id: i64,
    pub school_term: SchoolTerm,
    pub model_id: String,
    pub params: CohortParams,
    pub stats: ProposalStats,
    pub state: CohortState,
    pub created_at: i64,
    pub created_by: i64,
    pub finalised_at: Option<i64>,
    pub over_capacity_reason: Option<String>,
    /// Exclusive end of the programme, once finalised.
    pub programme_end: Option<Term>,
    pub members: Vec<Member>,
}

impl Cohort {
    pub fn member(&self, upn: &Upn) -> Option<&Member> {
        self.members.iter().find(|m| &m.upn == upn)
    }

    /// The children in the final list (confirmed and added), in list order.
    pub fn final_list(&self) -> Vec<Upn> {
        self.members
            .iter()
            .filter(|m| m.decided.as_ref().is_some_and(|d| d.decision.keeps()))
            .map(|m| m.upn.clone())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// A request field that does not fit the review's rules: the field, a stable reason, words.
    #[error("{message}")]
    Invalid { field: &'static str, reason: &'static str, message: String },
    #[error("this child already has a decision ({0}); undo it first")]
    AlreadyDecided(&'static str),
    #[error("the cohort is finalised; it can no longer change")]
    Finalised,
    #[error("the cohort was replaced by a newer proposal")]
    Replaced,
    #[error("this child is not in the cohort")]
    NotMember,
    #[error("{0}")]
    NotReady(String),
}

impl ReviewError {
    fn invalid(field: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        ReviewError::Invalid { field, reason, message: message.into() }
    }
}

fn open(c: &Cohort) -> Result<(), ReviewError> {
    match c.state {
        CohortState::Finalised => Err(ReviewError::Finalised),
        CohortState::Replaced => Err(ReviewError::Replaced),
        CohortState::Proposed | CohortState::InReview => Ok(()),
    }
}

/// What an added child must satisfy; read by the caller from the term's data.
pub struct AddCheck {
    pub on_roll: bool,
    pub statutory: bool,
    pub in_programme: bool,
    /// Permanently excluded in the cohort's term: leaving the school.
    pub permanently_excluded: bool,
    pub shown: Option<PupilRisk>,
}

/// The most members (proposed and added) a cohort may hold, so that it always fits one reply.
pub const MAX_MEMBERS: usize = 1_000;

/// Records a confirm or remove for a proposed child.
pub fn decide(c: &mut Cohort, upn: &Upn, decision: Decision, by: i64, at: i64) -> Result<(), ReviewError> {
    open(c)?;
    if decision.kind() == Kind::Add {
        return Err(ReviewError::invalid("decision", "USE_ADD", "use add for a child the model did not propose"));
    }
    let m = c.members.iter_mut().find(|m| &m.upn == upn).ok_or(ReviewError::NotMember)?;
    if let Some(d) = &m.decided {
        return Err(ReviewError::AlreadyDecided(d.decision.kind().as_str()));
    }
    m.decided = Some(Decided { decision, by, at });
    c.state = CohortState::InReview;
    Ok(())
}

/// Adds a child the model did not propose.
pub fn add(
    c: &mut Cohort,
    upn: &Upn,
    check: AddCheck,
    decision: Decision,
    by: i64,
    at: i64,
) -> Result<(), ReviewError> {
    open(c)?;
    if decision.kind() != Kind::Add {
        return Err(ReviewError::invalid("decision", "NOT_AN_ADDITION", "an addition needs an add reason"));
    }
    if let Some(m) = c.member(upn) {
        return Err(match &m.decided {
            Some(d) => ReviewError::AlreadyDecided(d.decision.kind().as_str()),
            None => {
                ReviewError::invalid("upn", "ALREADY_PROPOSED", "this child is already proposed: confirm them instead")
            }
        });
    }
    if c.members.len() >= MAX_MEMBERS {
        return Err(ReviewError::invalid(
            "upn",
            "COHORT_FULL",
            format!("a cohort holds at most {MAX_MEMBERS} children, proposed and added"),
        ));
    }
    if !check.on_roll {
        return Err(ReviewError::invalid(
            "upn",
            "NOT_ON_ROLL",
            "this child is not on the school's roll for the cohort's term",
        ));
    }
    if check.statutory {
        return Err(ReviewError::invalid(
            "upn",
            "STATUTORY_CASE",
            "this child has a child protection plan or is looked after: statutory services lead, not early help",
        ));
    }
    if check.permanently_excluded {
        return Err(ReviewError::invalid(
            "upn",
            "PERMANENTLY_EXCLUDED",
            "this child was permanently excluded this term and is leaving the school",
        ));
    }
    if check.in_programme {
        return Err(ReviewError::invalid(
            "upn",
            "IN_PROGRAMME",
            "this child is already in a running two-year programme",
        ));
    }
    c.members.push(Member {
        upn: upn.clone(),
        proposed: false,
        rank: None,
        priority: None,
        shown: check.shown,
        decided: Some(Decided { decision, by, at }),
    });
    c.state = CohortState::InReview;
    Ok(())
}

/// Undoes a decision (an added child leaves the list). Returns the decision undone.
pub fn undo(c: &mut Cohort, upn: &Upn) -> Result<Decision, ReviewError> {
    open(c)?;
    let i = c.members.iter().position(|m| &m.upn == upn).ok_or(ReviewError::NotMember)?;
    let Some(d) = c.members[i].decided.take() else {
        return Err(ReviewError::invalid("upn", "NOT_DECIDED", "this child has no decision to undo"));
    };
    if !c.members[i].proposed {
        c.members.remove(i);
    }
    Ok(d.decision)
}

/// Freezes the cohort. Returns the final list (confirmed and added).
pub fn finalise(c: &mut Cohort, over_capacity_reason: &str, at: i64) -> Result<Vec<Upn>, ReviewError> {
    open(c)?;
    let undecided = c.members.iter().filter(|m| m.proposed && m.decided.is_none()).count();
    if undecided > 0 {
        return Err(ReviewError::NotReady(format!("{undecided} proposed child(ren) still need a decision")));
    }
    let final_list = c.final_list();
    let capacity = c.params.capacity;
    if final_list.len() > capacity && over_capacity_reason.trim().is_empty() {
        return Err(ReviewError::NotReady(format!(
            "the final list has {} children, over the capacity of {capacity}: give an over_capacity_reason",
            final_list.len()
        )));
    }
    c.state = CohortState::Finalised;
    c.finalised_at = Some(at);
    c.over_capacity_reason = (!over_capacity_reason.trim().is_empty()).then(|| over_capacity_reason.into());
    c.programme_end = Some(Term::from_index(c.school_term.term.index() + PROGRAMME_TERMS));
    Ok(final_list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::Policy;
    use crate::domain::{Urn, check_letter};

    fn upn(n: u64) -> Upn {
        let rest = format!("{n:012}");
        Upn::parse(&format!("{}{rest}", check_letter(rest.as_bytes()) as char)).unwrap()
    }

    fn cohort(n: u64, capacity: usize) -> Cohort {
        Cohort {
            id: 1,
            school_term: SchoolTerm { urn: Urn::new(100001).unwrap(), term: Term::parse("2025/26", "autumn").unwrap() },
            model_id: "m".into(),
            params: CohortParams { capacity, min_year: 0, max_year: 13, policy: Policy::AnyAdverse, seed: 0 },
            stats: ProposalStats::default(),
            state: CohortState::Proposed,
            created_at: 0,
            created_by: 1,
            finalised_at: None,
            over_capacity_reason: None,
            programme_end: None,
            members: (0..n)
                .map(|i| Member {
                    upn: upn(i),
                    proposed: true,
                    rank: Some(i as u32 + 1),
                    priority: Some(0.5),
                    shown: None,
                    decided: None,
                })
                .collect(),
        }
    }

    fn check() -> AddCheck {
        AddCheck { on_roll: true, statutory: false, in_programme: false, permanently_excluded: false, shown: None }
    }

    fn d(kind: Kind, reason: &str, note: &str) -> Decision {
        Decision::from_parts(kind, reason, note).unwrap()
    }

    #[test]
    fn reasons_are_checked_when_the_decision_is_built() {
        assert!(Decision::from_parts(Kind::Remove, "", "").is_err());
        assert!(Decision::from_parts(Kind::Remove, "other", " ").is_err());
        assert!(Decision::from_parts(Kind::Add, "family_declined", "").is_err(), "a remove reason is no add reason");
        assert_eq!(d(Kind::Remove, "other", "moved").reason_code(), Some("other"));
        assert_eq!(d(Kind::Confirm, "", "").note(), None);
    }

    #[test]
    fn a_full_review() {
        let mut c = cohort(3, 3);
        decide(&mut c, &upn(0), d(Kind::Confirm, "", ""), 7, 1).unwrap();
        assert_eq!(c.state, CohortState::InReview);
        assert_eq!(
            decide(&mut c, &upn(0), d(Kind::Remove, "data_wrong", ""), 8, 2),
            Err(ReviewError::AlreadyDecided("confirm"))
        );
        decide(&mut c, &upn(1), d(Kind::Remove, "family_declined", "moved away"), 7, 2).unwrap();
        assert!(matches!(finalise(&mut c, "", 3), Err(ReviewError::NotReady(_))));
        decide(&mut c, &upn(2), d(Kind::Confirm, "", ""), 7, 3).unwrap();
        add(&mut c, &upn(9), check(), d(Kind::Add, "school_concern", "teacher worried"), 7, 4).unwrap();
        let add_reason = d(Kind::Add, "school_concern", "");
        assert!(add(&mut c, &upn(10), AddCheck { on_roll: false, ..check() }, add_reason.clone(), 7, 4).is_err());
        assert!(add(&mut c, &upn(11), AddCheck { statutory: true, ..check() }, add_reason, 7, 4).is_err());
        let list = finalise(&mut c, "", 5).unwrap();
        assert_eq!(list, vec![upn(0), upn(2), upn(9)]);
        assert_eq!(c.programme_end.unwrap(), Term::parse("2027/28", "autumn").unwrap());
        assert_eq!(decide(&mut c, &upn(0), d(Kind::Confirm, "", ""), 7, 6), Err(ReviewError::Finalised));
    }

    #[test]
    fn undo_and_capacity() {
        let mut c = cohort(2, 2);
        decide(&mut c, &upn(0), d(Kind::Remove, "already_supported", ""), 7, 1).unwrap();
        assert_eq!(undo(&mut c, &upn(0)).unwrap().kind(), Kind::Remove);
        assert!(c.members[0].decided.is_none());
        add(&mut c, &upn(5), check(), d(Kind::Add, "professional_judgement", ""), 7, 2).unwrap();
        undo(&mut c, &upn(5)).unwrap();
        assert_eq!(c.members.len(), 2, "undoing an addition removes the child");
        for u in [upn(0), upn(1)] {
            decide(&mut c, &u, d(Kind::Confirm, "", ""), 7, 3).unwrap();
        }
        add(&mut c, &upn(5), check(), d(Kind::Add, "professional_judgement", ""), 7, 4).unwrap();
        assert!(finalise(&mut c.clone(), "", 5).is_err(), "over capacity needs a reason");
        assert_eq!(finalise(&mut c, "sibling of a cohort child", 5).unwrap().len(), 3);
    }
}
