//! Link-worker review rules: confirm, remove or add with reasons, undo, finalise.
//!
//! Reason codes for removing a proposed child:
//! `already_supported` (already supported elsewhere), `family_declined`, `data_wrong`,
//! `professional_judgement`, `statutory_involvement`, `left_school`, `other` (note required).
//! Reason codes for adding a child: `professional_judgement`, `school_concern`,
//! `family_request`, `data_missing` (the data does not show the need), `other` (note required).

use crate::storage::{CohortRow, MemberRow};

pub const REMOVE_REASONS: &[(&str, &str)] = &[
    ("already_supported", "already supported elsewhere"),
    ("family_declined", "family declined"),
    ("data_wrong", "the data is wrong"),
    ("professional_judgement", "professional judgement"),
    ("statutory_involvement", "statutory involvement"),
    ("left_school", "left the school"),
    ("other", "other (see note)"),
];

pub const ADD_REASONS: &[(&str, &str)] = &[
    ("professional_judgement", "professional judgement"),
    ("school_concern", "concern raised by the school"),
    ("family_request", "family asked for support"),
    ("data_missing", "the data does not show the need"),
    ("other", "other (see note)"),
];

/// Two years of terms: a cohort finalised at term t runs for terms t .. t+5.
pub const PROGRAMME_TERMS: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("{0}")]
    Invalid(String),
    #[error("this child already has a decision ({0}); undo it first")]
    AlreadyDecided(String),
    #[error("the cohort is finalised; it can no longer change")]
    Finalised,
    #[error("this child is not in the cohort")]
    NotMember,
    #[error("{0}")]
    NotReady(String),
}

fn reason_ok(list: &[(&str, &str)], code: &str, note: &str) -> Result<(), ReviewError> {
    if !list.iter().any(|(c, _)| *c == code) {
        let codes: Vec<&str> = list.iter().map(|(c, _)| *c).collect();
        return Err(ReviewError::Invalid(format!("reason_code must be one of {}", codes.join(", "))));
    }
    if code == "other" && note.trim().is_empty() {
        return Err(ReviewError::Invalid("a note is required with reason \"other\"".into()));
    }
    Ok(())
}

fn open(c: &CohortRow) -> Result<(), ReviewError> {
    if c.state == "finalised" { Err(ReviewError::Finalised) } else { Ok(()) }
}

/// What an added child must satisfy; checked by the caller against the term's data.
pub struct AddCheck {
    pub on_roll: bool,
    pub statutory: bool,
    pub in_programme: bool,
    pub shown_json: String,
}

/// Applies a confirm or remove to a proposed child.
pub fn decide(
    c: &mut CohortRow,
    upn: &str,
    kind: Kind,
    reason: &str,
    note: &str,
    by: i64,
    at: i64,
) -> Result<(), ReviewError> {
    open(c)?;
    if kind == Kind::Remove {
        reason_ok(REMOVE_REASONS, reason, note)?;
    }
    let m = c.members.iter_mut().find(|m| m.upn == upn).ok_or(ReviewError::NotMember)?;
    if let Some(d) = &m.decision {
        return Err(ReviewError::AlreadyDecided(d.clone()));
    }
    m.decision = Some(kind.as_str().into());
    (m.reason_code, m.note) = match kind {
        Kind::Remove => (Some(reason.into()), Some(note.into())),
        _ => (None, (!note.is_empty()).then(|| note.into())),
    };
    (m.decided_by, m.decided_at) = (Some(by), Some(at));
    c.state = "in_review".into();
    Ok(())
}

/// Adds a child the model did not propose.
pub fn add(
    c: &mut CohortRow,
    upn: &str,
    check: AddCheck,
    reason: &str,
    note: &str,
    by: i64,
    at: i64,
) -> Result<(), ReviewError> {
    open(c)?;
    reason_ok(ADD_REASONS, reason, note)?;
    if let Some(m) = c.members.iter().find(|m| m.upn == upn) {
        return Err(match &m.decision {
            Some(d) => ReviewError::AlreadyDecided(d.clone()),
            None => ReviewError::Invalid("this child is already proposed: confirm them instead".into()),
        });
    }
    if !check.on_roll {
        return Err(ReviewError::Invalid("this child is not on the school's roll for the cohort's term".into()));
    }
    if check.statutory {
        return Err(ReviewError::Invalid(
            "this child has a child protection plan or is looked after: statutory services lead, not early help".into(),
        ));
    }
    if check.in_programme {
        return Err(ReviewError::Invalid("this child is already in a running two-year programme".into()));
    }
    c.members.push(MemberRow {
        upn: upn.into(),
        proposed: false,
        rank: None,
        priority: None,
        shown_json: check.shown_json,
        decision: Some(Kind::Add.as_str().into()),
        reason_code: Some(reason.into()),
        note: Some(note.into()),
        decided_by: Some(by),
        decided_at: Some(at),
    });
    c.state = "in_review".into();
    Ok(())
}

/// Undoes a decision (an added child leaves the list). Returns the decision undone.
pub fn undo(c: &mut CohortRow, upn: &str) -> Result<String, ReviewError> {
    open(c)?;
    let i = c.members.iter().position(|m| m.upn == upn).ok_or(ReviewError::NotMember)?;
    let m = &mut c.members[i];
    let Some(d) = m.decision.take() else {
        return Err(ReviewError::Invalid("this child has no decision to undo".into()));
    };
    if !m.proposed {
        c.members.remove(i);
    } else {
        (m.reason_code, m.note, m.decided_by, m.decided_at) = (None, None, None, None);
    }
    Ok(d)
}

/// Freezes the cohort. Returns the final list (confirmed and added).
pub fn finalise(
    c: &mut CohortRow,
    capacity: usize,
    over_capacity_reason: &str,
    at: i64,
) -> Result<Vec<String>, ReviewError> {
    open(c)?;
    let undecided = c.members.iter().filter(|m| m.proposed && m.decision.is_none()).count();
    if undecided > 0 {
        return Err(ReviewError::NotReady(format!("{undecided} proposed child(ren) still need a decision")));
    }
    let final_list: Vec<String> = c
        .members
        .iter()
        .filter(|m| matches!(m.decision.as_deref(), Some("confirm" | "add")))
        .map(|m| m.upn.clone())
        .collect();
    if final_list.len() > capacity && over_capacity_reason.trim().is_empty() {
        return Err(ReviewError::NotReady(format!(
            "the final list has {} children, over the capacity of {capacity}: give an over_capacity_reason",
            final_list.len()
        )));
    }
    c.state = "finalised".into();
    c.finalised_at = Some(at);
    c.over_capacity_reason = (!over_capacity_reason.trim().is_empty()).then(|| over_capacity_reason.into());
    c.programme_end = Some(crate::domain::Term::from_index(c.school_term.term.index() + PROGRAMME_TERMS));
    Ok(final_list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SchoolTerm, Term, Urn};

    fn cohort(n: usize) -> CohortRow {
        CohortRow {
            id: 1,
            school_term: SchoolTerm { urn: Urn::new(100001).unwrap(), term: Term::parse("2025/26", "autumn").unwrap() },
            model_id: "m".into(),
            params_json: "{}".into(),
            state: "proposed".into(),
            created_at: 0,
            created_by: 1,
            finalised_at: None,
            over_capacity_reason: None,
            programme_end: None,
            members: (0..n)
                .map(|i| MemberRow {
                    upn: format!("U{i}"),
                    proposed: true,
                    rank: Some(i as u32 + 1),
                    priority: Some(0.5),
                    shown_json: "{}".into(),
                    decision: None,
                    reason_code: None,
                    note: None,
                    decided_by: None,
                    decided_at: None,
                })
                .collect(),
        }
    }

    fn check() -> AddCheck {
        AddCheck { on_roll: true, statutory: false, in_programme: false, shown_json: "{}".into() }
    }

    #[test]
    fn a_full_review() {
        let mut c = cohort(3);
        decide(&mut c, "U0", Kind::Confirm, "", "", 7, 1).unwrap();
        assert_eq!(c.state, "in_review");
        assert!(matches!(
            decide(&mut c, "U0", Kind::Remove, "data_wrong", "", 8, 2),
            Err(ReviewError::AlreadyDecided(_))
        ));
        assert!(matches!(decide(&mut c, "U1", Kind::Remove, "", "", 7, 2), Err(ReviewError::Invalid(_))));
        assert!(matches!(decide(&mut c, "U1", Kind::Remove, "other", " ", 7, 2), Err(ReviewError::Invalid(_))));
        decide(&mut c, "U1", Kind::Remove, "family_declined", "moved away", 7, 2).unwrap();
        assert!(matches!(finalise(&mut c, 3, "", 3), Err(ReviewError::NotReady(_))));
        decide(&mut c, "U2", Kind::Confirm, "", "", 7, 3).unwrap();
        add(&mut c, "X1", check(), "school_concern", "teacher worried", 7, 4).unwrap();
        assert!(add(&mut c, "X2", AddCheck { on_roll: false, ..check() }, "school_concern", "", 7, 4).is_err());
        assert!(add(&mut c, "X3", AddCheck { statutory: true, ..check() }, "school_concern", "", 7, 4).is_err());
        let list = finalise(&mut c, 3, "", 5).unwrap();
        assert_eq!(list, vec!["U0", "U2", "X1"]);
        assert_eq!(c.programme_end.unwrap(), Term::parse("2027/28", "autumn").unwrap());
        assert_eq!(decide(&mut c, "U0", Kind::Confirm, "", "", 7, 6), Err(ReviewError::Finalised));
    }

    #[test]
    fn undo_and_capacity() {
        let mut c = cohort(2);
        decide(&mut c, "U0", Kind::Remove, "already_supported", "", 7, 1).unwrap();
        assert_eq!(undo(&mut c, "U0").unwrap(), "remove");
        assert!(c.members[0].decision.is_none() && c.members[0].reason_code.is_none());
        add(&mut c, "X1", check(), "professional_judgement", "", 7, 2).unwrap();
        undo(&mut c, "X1").unwrap();
        assert_eq!(c.members.len(), 2, "undoing an addition removes the child");
        for u in ["U0", "U1"] {
            decide(&mut c, u, Kind::Confirm, "", "", 7, 3).unwrap();
        }
        add(&mut c, "X1", check(), "professional_judgement", "", 7, 4).unwrap();
        assert!(finalise(&mut c, 2, "", 5).is_err(), "over capacity needs a reason");
        assert_eq!(finalise(&mut c, 2, "sibling of a cohort child", 5).unwrap().len(), 3);
    }
}
