//! One pupil's row in one termly feed, as the contract defines it.

use serde::{Deserialize, Serialize};

use super::{Term, Upn, Urn};

macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn code(self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }
            /// Parses the contract's code, ignoring ASCII case.
            pub fn parse(raw: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.code().eq_ignore_ascii_case(raw))
            }
        }
    };
}

code_enum!(Sex { M = "M", F = "F", U = "U" });
code_enum!(
    /// SEN provision: none, SEN support, EHC plan.
    Sen { N = "N", K = "K", E = "E" }
);
code_enum!(
    /// Children's social care status; absence of a value means none.
    Cin { Cin = "CIN", Cpp = "CPP", Cla = "CLA" }
);
code_enum!(Attainment { Below = "below", Expected = "expected", Above = "above" });
code_enum!(
    /// DfE main ethnicity codes.
    Ethnicity {
        Aban = "ABAN", Aind = "AIND", Aoth = "AOTH", Apkn = "APKN", Bafr = "BAFR", Bcrb = "BCRB",
        Both = "BOTH", Chne = "CHNE", Moth = "MOTH", Mwas = "MWAS", Mwba = "MWBA", Mwbc = "MWBC",
        Nobt = "NOBT", Ooth = "OOTH", Refu = "REFU", Wbri = "WBRI", Wiri = "WIRI", Wirt = "WIRT",
        Woth = "WOTH", Wrom = "WROM",
    }
);

impl Ethnicity {
    /// Major group, used only for fairness audits (never as a model input).
    pub fn group(self) -> &'static str {
        use Ethnicity::*;
        match self {
            Wbri | Wiri | Wirt | Woth | Wrom => "White",
            Mwbc | Mwba | Mwas | Moth => "Mixed",
            Aind | Apkn | Aban | Aoth | Chne => "Asian",
            Bafr | Bcrb | Both => "Black",
            Ooth => "Other",
            Nobt | Refu => "Unknown",
        }
    }
}

/// National curriculum year group: 0 is Reception, then 1..=13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NcYear(u8);

impl NcYear {
    pub const RECEPTION: NcYear = NcYear(0);
    pub fn new(y: u8) -> Option<Self> {
        (y <= 13).then_some(Self(y))
    }
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.eq_ignore_ascii_case("R") {
            return Some(Self::RECEPTION);
        }
        if raw.is_empty() || raw.len() > 2 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        raw.parse::<u8>().ok().filter(|y| (1..=13).contains(y)).map(Self)
    }
    pub fn get(self) -> u8 {
        self.0
    }
    pub fn label(self) -> String {
        if self.0 == 0 { "R".into() } else { self.0.to_string() }
    }
}

/// One validated row of a termly feed. Optional columns are `None` when the cell was empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PupilTerm {
    pub upn: Upn,
    pub ncyear: NcYear,
    pub sex: Sex,
    pub ethnicity: Ethnicity,
    pub fsm: bool,
    pub eal: bool,
    pub sen: Sen,
    pub cin: Option<Cin>,
    pub young_carer: Option<bool>,
    pub school_moves: Option<u8>,
    pub sessions_possible: u16,
    pub sessions_authorised: u16,
    pub sessions_unauthorised: u16,
    pub absence_spells: Option<u16>,
    pub suspensions: u8,
    pub suspension_sessions: Option<u8>,
    pub permanent_exclusion: bool,
    pub behaviour_incidents: Option<u16>,
    pub attainment_english: Option<Attainment>,
    pub attainment_maths: Option<Attainment>,
    pub sdq_emotional: Option<u8>,
    pub sdq_conduct: Option<u8>,
    pub sdq_hyperactivity: Option<u8>,
    pub sdq_peer: Option<u8>,
    pub sdq_prosocial: Option<u8>,
    pub mh_referral: bool,
}

impl PupilTerm {
    /// Widened so no stored value can overflow the sum.
    pub fn absent_sessions(&self) -> u32 {
        u32::from(self.sessions_authorised) + u32::from(self.sessions_unauthorised)
    }
    /// Absence rate, defined only when at least 20 sessions were possible.
    pub fn absence_rate(&self) -> Option<f64> {
        (self.sessions_possible >= 20).then(|| self.absent_sessions() as f64 / self.sessions_possible as f64)
    }
    pub fn persistently_absent(&self) -> Option<bool> {
        self.absence_rate().map(|r| r >= 0.10)
    }
    pub fn suspended_or_excluded(&self) -> bool {
        self.suspensions >= 1 || self.permanent_exclusion
    }
    /// SDQ total difficulties, defined only when all four difficulty subscales are present.
    pub fn sdq_total(&self) -> Option<u8> {
        let sum = [self.sdq_emotional?, self.sdq_conduct?, self.sdq_hyperactivity?, self.sdq_peer?]
            .iter()
            .map(|&v| u16::from(v))
            .sum::<u16>();
        u8::try_from(sum).ok()
    }
    /// Statutory involvement: not eligible for early-help cohorts.
    pub fn statutory(&self) -> bool {
        matches!(self.cin, Some(Cin::Cla | Cin::Cpp))
    }
}

/// Where a row came from: which school and term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchoolTerm {
    pub urn: Urn,
    pub term: Term,
}
