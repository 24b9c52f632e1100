//! The contract's columns and header matching.

/// Every column of the termly feed, version 1, in the contract's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    Upn,
    Ncyear,
    Sex,
    Ethnicity,
    Fsm,
    Eal,
    Sen,
    Cin,
    YoungCarer,
    SchoolMoves,
    SessionsPossible,
    SessionsAuthorised,
    SessionsUnauthorised,
    AbsenceSpells,
    Suspensions,
    SuspensionSessions,
    PermanentExclusion,
    BehaviourIncidents,
    AttainmentEnglish,
    AttainmentMaths,
    SdqEmotional,
    SdqConduct,
    SdqHyperactivity,
    SdqPeer,
    SdqProsocial,
    MhReferral,
}

pub const COLUMN_COUNT: usize = 26;

impl Column {
    pub const ALL: [Column; COLUMN_COUNT] = [
        Column::Upn,
        Column::Ncyear,
        Column::Sex,
        Column::Ethnicity,
        Column::Fsm,
        Column::Eal,
        Column::Sen,
        Column::Cin,
        Column::YoungCarer,
        Column::SchoolMoves,
        Column::SessionsPossible,
        Column::SessionsAuthorised,
        Column::SessionsUnauthorised,
        Column::AbsenceSpells,
        Column::Suspensions,
        Column::SuspensionSessions,
        Column::PermanentExclusion,
        Column::BehaviourIncidents,
        Column::AttainmentEnglish,
        Column::AttainmentMaths,
        Column::SdqEmotional,
        Column::SdqConduct,
        Column::SdqHyperactivity,
        Column::SdqPeer,
        Column::SdqProsocial,
        Column::MhReferral,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::Upn => "upn",
            Column::Ncyear => "ncyear",
            Column::Sex => "sex",
            Column::Ethnicity => "ethnicity",
            Column::Fsm => "fsm",
            Column::Eal => "eal",
            Column::Sen => "sen",
            Column::Cin => "cin",
            Column::YoungCarer => "young_carer",
            Column::SchoolMoves => "school_moves",
            Column::SessionsPossible => "sessions_possible",
            Column::SessionsAuthorised => "sessions_authorised",
            Column::SessionsUnauthorised => "sessions_unauthorised",
            Column::AbsenceSpells => "absence_spells",
            Column::Suspensions => "suspensions",
            Column::SuspensionSessions => "suspension_sessions",
            Column::PermanentExclusion => "permanent_exclusion",
            Column::BehaviourIncidents => "behaviour_incidents",
            Column::AttainmentEnglish => "attainment_english",
            Column::AttainmentMaths => "attainment_maths",
            Column::SdqEmotional => "sdq_emotional",
            Column::SdqConduct => "sdq_conduct",
            Column::SdqHyperactivity => "sdq_hyperactivity",
            Column::SdqPeer => "sdq_peer",
            Column::SdqProsocial => "sdq_prosocial",
            Column::MhReferral => "mh_referral",
        }
    }

    pub fn required(self) -> bool {
        use Column::*;
        matches!(
            self,
            Upn | Ncyear
                | Sex
                | Ethnicity
                | Fsm
                | Eal
                | Sen
                | SessionsPossible
                | SessionsAuthorised
                | SessionsUnauthorised
                | Suspensions
                | PermanentExclusion
                | MhReferral
        )
    }

    /// Matches a header cell: case-insensitive after trimming spaces.
    pub fn from_header(raw: &str) -> Option<Column> {
        let h = raw.trim_matches(' ');
        Column::ALL.iter().copied().find(|c| c.name().eq_ignore_ascii_case(h))
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The contract's header line, in its documented order.
pub fn contract_header() -> String {
    Column::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(",")
}

/// Renders rows of cells (in the contract's column order) as contract CSV with `\n` line
/// ends, quoting where needed: the canonical form of a record submission.
pub fn cells_to_csv<S: AsRef<str>>(rows: &[[S; COLUMN_COUNT]]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    let mut out = contract_header().into_bytes();
    out.push(b'\n');
    for r in rows {
        // Writing to a Vec cannot fail.
        let _ = w.write_record(r.iter().map(|c| c.as_ref()));
    }
    out.extend(w.into_inner().unwrap_or_default());
    out
}
