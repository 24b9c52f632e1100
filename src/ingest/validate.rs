//! Validation of one row's cells into a `PupilTerm`, collecting every violation.

use std::collections::HashMap;

use super::columns::{COLUMN_COUNT, Column};
use super::report::{Findings, code, quote};
use crate::domain::{Attainment, Cin, Ethnicity, NcYear, PupilTerm, Sen, Sex, Upn, UpnError};

/// One row's trimmed cells by column; `""` for an empty or absent cell.
pub type Cells<'a> = [&'a str; COLUMN_COUNT];

/// Validates rows one at a time and remembers UPNs to catch duplicates.
#[derive(Default)]
pub struct RowValidator {
    /// UPN → first line it appeared on.
    /// Each UPN seen so far (its 13 bytes: no allocation per row), and its line.
    seen: HashMap<[u8; 13], u64>,
    /// Required columns missing from the header: reported once there, not on every row.
    absent: [bool; COLUMN_COUNT],
}

struct Row<'f> {
    line: u64,
    absent: &'f [bool; COLUMN_COUNT],
    findings: &'f mut Findings,
    ok: bool,
}

impl Row<'_> {
    fn err(&mut self, col: Column, code: &str, message: String) {
        self.ok = false;
        self.findings.error(self.line, col.name(), code, message);
    }

    /// The cell, or an error if it is empty and the column is required.
    fn present<'c>(&mut self, cells: &Cells<'c>, col: Column) -> Option<&'c str> {
        let v = cells[col.index()];
        if v.is_empty() {
            if col.required() && !self.absent[col.index()] {
                self.err(col, code::REQUIRED, format!("{} is required and is empty", col.name()));
            }
            return None;
        }
        Some(v)
    }

    /// A whole number in `min..=max`, parsed exactly: a number too large for any type is
    /// out of range, never saturated or wrapped.
    fn int(&mut self, cells: &Cells, col: Column, min: u64, max: u64, why: &str) -> Option<u64> {
        let v = self.present(cells, col)?;
        if !v.bytes().all(|b| b.is_ascii_digit()) {
            let what = if v.starts_with('-') { "a number of 0 or more" } else { "a whole number" };
            self.err(col, code::INVALID_INTEGER, format!("{} must be {what}, got {}", col.name(), quote(v)));
            return None;
        }
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.err(col, code::OUT_OF_RANGE, format!("{} must be {min}–{max}{why}, got {}", col.name(), quote(v)));
                None
            }
        }
    }

    fn boolean(&mut self, cells: &Cells, col: Column) -> Option<bool> {
        let v = self.present(cells, col)?;
        // Case-insensitive, without making a lower-case copy of every cell.
        let is = |words: [&str; 4]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
        if is(["y", "yes", "true", "1"]) {
            Some(true)
        } else if is(["n", "no", "false", "0"]) {
            Some(false)
        } else {
            self.err(
                col,
                code::INVALID_BOOLEAN,
                format!("{} must be Y/N, Yes/No, true/false or 1/0, got {}", col.name(), quote(v)),
            );
            None
        }
    }

    fn code<T>(&mut self, cells: &Cells, col: Column, parse: fn(&str) -> Option<T>, allowed: &str) -> Option<T> {
        let v = self.present(cells, col)?;
        let parsed = parse(v);
        if parsed.is_none() {
            self.err(col, code::INVALID_CODE, format!("{} must be one of {allowed}, got {}", col.name(), quote(v)));
        }
        parsed
    }
}

/// A parsed UPN's bytes: always 13 ASCII characters.
fn upn_key(u: &Upn) -> [u8; 13] {
    u.as_str().as_bytes().try_into().expect("a parsed UPN has 13 characters")
}

const ETHNICITY_CODES: &str = "the DfE main ethnicity codes (ABAN … WROM)";

impl RowValidator {
    /// A validator for a file whose header lacks the columns marked in `absent`.
    pub fn with_absent_columns(absent: [bool; COLUMN_COUNT]) -> Self {
        Self { seen: HashMap::new(), absent }
    }

    /// Validates one data row. Returns the row only if it has no errors; warnings never reject.
    pub fn validate(&mut self, line: u64, cells: &Cells, findings: &mut Findings) -> Option<PupilTerm> {
        use Column as C;
        let mut r = Row { line, absent: &self.absent, findings, ok: true };

        let upn = r.present(cells, C::Upn).and_then(|v| match Upn::parse(v) {
            Ok(u) => Some(u),
            Err(e) => {
                let hint = match e {
                    _ if v.bytes().any(|b| b.is_ascii_lowercase()) && Upn::parse(&v.to_ascii_uppercase()).is_ok() => {
                        "a UPN's letters are upper case"
                    }
                    UpnError::CheckLetter => "the check letter does not match: check the number was copied exactly",
                    UpnError::Length => "a UPN has 13 characters",
                    UpnError::Format => "a UPN is a letter then 12 digits (or 11 digits and a letter)",
                };
                r.err(C::Upn, code::INVALID_UPN, format!("UPN {} is not valid: {hint}", quote(v)));
                None
            }
        });
        if let Some(first) = upn.as_ref().and_then(|u| self.seen.get(&upn_key(u))) {
            r.err(C::Upn, code::DUPLICATE_UPN, format!("this UPN already appears on line {first}"));
        }
        let ncyear = match r.present(cells, C::Ncyear) {
            Some(v) if v.bytes().all(|b| b.is_ascii_digit()) && NcYear::parse(v).is_none() => {
                r.err(C::Ncyear, code::OUT_OF_RANGE, format!("ncyear must be R or 1–13, got {}", quote(v)));
                None
            }
            Some(_) => r.code(cells, C::Ncyear, NcYear::parse, "R or 1–13"),
            None => None,
        };
        let sex = r.code(cells, C::Sex, Sex::parse, "M, F or U");
        let ethnicity = r.code(cells, C::Ethnicity, Ethnicity::parse, ETHNICITY_CODES);
        let fsm = r.boolean(cells, C::Fsm);
        let eal = r.boolean(cells, C::Eal);
        let sen = r.code(cells, C::Sen, Sen::parse, "N, K or E");
        let cin = r.code(cells, C::Cin, Cin::parse, "CIN, CPP or CLA (or empty)");
        let young_carer = r.boolean(cells, C::YoungCarer);
        // The contract bounds every count: none can exceed sessions_possible, at most 200.
        const SESSIONS: &str = " (no count of sessions can exceed sessions_possible, at most 200)";
        let school_moves = r.int(cells, C::SchoolMoves, 0, 20, "");
        let possible = r.int(cells, C::SessionsPossible, 0, 200, "");
        let authorised = r.int(cells, C::SessionsAuthorised, 0, 200, SESSIONS);
        let unauthorised = r.int(cells, C::SessionsUnauthorised, 0, 200, SESSIONS);
        let spells = r.int(cells, C::AbsenceSpells, 0, 200, SESSIONS);
        let suspensions = r.int(cells, C::Suspensions, 0, 20, "");
        let suspension_sessions = r.int(cells, C::SuspensionSessions, 0, 90, "");
        let permanent_exclusion = r.boolean(cells, C::PermanentExclusion);
        let behaviour = r.int(cells, C::BehaviourIncidents, 0, 500, "");
        let att = |v: &str| Attainment::parse(v);
        let english = r.code(cells, C::AttainmentEnglish, att, "below, expected or above");
        let maths = r.code(cells, C::AttainmentMaths, att, "below, expected or above");
        let sdq = |r: &mut Row, col| r.int(cells, col, 0, 10, "").map(|v| v as u8);
        let sdq_emotional = sdq(&mut r, C::SdqEmotional);
        let sdq_conduct = sdq(&mut r, C::SdqConduct);
        let sdq_hyperactivity = sdq(&mut r, C::SdqHyperactivity);
        let sdq_peer = sdq(&mut r, C::SdqPeer);
        let sdq_prosocial = sdq(&mut r, C::SdqProsocial);
        let mh_referral = r.boolean(cells, C::MhReferral);

        // Cross-column rules, checked only where their inputs are themselves valid.
        if let (Some(p), Some(a), Some(u)) = (possible, authorised, unauthorised) {
            if a + u > p {
                r.err(
                    C::SessionsUnauthorised,
                    code::INCONSISTENT,
                    format!(
                        "sessions_authorised ({a}) + sessions_unauthorised ({u}) = {} is more than sessions_possible ({p})",
                        a + u
                    ),
                );
            } else if let Some(s) = spells {
                let absent = a + u;
                if (s == 0) != (absent == 0) {
                    r.err(
                        C::AbsenceSpells,
                        code::INCONSISTENT,
                        format!("absence_spells is {s} but {absent} sessions were missed: it is 0 if and only if there was no absence"),
                    );
                } else if s > absent {
                    r.err(
                        C::AbsenceSpells,
                        code::INCONSISTENT,
                        format!("absence_spells ({s}) cannot be more than the sessions missed ({absent})"),
                    );
                }
            }
        }
        if let (Some(0), Some(ss @ 1..)) = (suspensions, suspension_sessions) {
            r.err(
                C::SuspensionSessions,
                code::INCONSISTENT,
                format!("suspension_sessions is {ss} but suspensions is 0: it must be 0 too"),
            );
        }

        if let Some(u) = &upn {
            self.seen.entry(upn_key(u)).or_insert(line);
        }
        let findings = r.findings;
        if !r.ok {
            return None;
        }
        // Warnings only for rows that are otherwise valid, so each line reads once.
        let possible = possible?;
        if possible < 20 {
            findings.warning(
                line,
                C::SessionsPossible.name(),
                code::FEW_SESSIONS,
                format!("sessions_possible is {possible} (under 20): the absence rate is not meaningful this term"),
            );
        }
        if let Some(c @ (Cin::Cla | Cin::Cpp)) = cin {
            findings.warning(
                line,
                C::Cin.name(),
                code::STATUTORY_CIN,
                format!("cin is {}: statutory involvement, so not eligible for early-help cohorts", c.code()),
            );
        }
        Some(PupilTerm {
            upn: upn?,
            ncyear: ncyear?,
            sex: sex?,
            ethnicity: ethnicity?,
            fsm: fsm?,
            eal: eal?,
            sen: sen?,
            cin,
            young_carer,
            school_moves: school_moves.map(|v| v as u8),
            sessions_possible: possible as u16,
            sessions_authorised: authorised? as u16,
            sessions_unauthorised: unauthorised? as u16,
            absence_spells: spells.map(|v| v as u16),
            suspensions: suspensions? as u8,
            suspension_sessions: suspension_sessions.map(|v| v as u8),
            permanent_exclusion: permanent_exclusion?,
            behaviour_incidents: behaviour.map(|v| v as u16),
            attainment_english: english,
            attainment_maths: maths,
            sdq_emotional,
            sdq_conduct,
            sdq_hyperactivity,
            sdq_peer,
            sdq_prosocial,
            mh_referral: mh_referral?,
        })
    }
}
