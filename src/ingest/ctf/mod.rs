//! Common Transfer File import: a school's MIS export (XML, keyed by UPN) plus a small CSV
//! supplement → the termly rows the contract defines, through exactly the contract's
//! validation. Every finding names its place in the source: the XML line and element path
//! and pupil, or the supplement's line and column. See `docs/ctf-import.md` for each rule.

mod calendar;
mod codes;
mod supplement;
pub mod xml;

use std::collections::HashMap;

use time::Date;

use super::columns::{COLUMN_COUNT, Column};
use super::report::{Findings, Part, Place, code, quote};
use super::validate::{Cells, RowValidator};
use super::{Feed, FeedError};
use crate::domain::{Term, Upn, Urn};
pub use calendar::{easter_sunday, term_dates};
use codes::{FirstLanguage, Mark};
pub use supplement::SUPPLEMENT_COLUMNS;

/// CTF versions riskid reads for a term: the version numbered for its academic year (CTF 25
/// is for 2025/26), the one before, and the one after (an export made after 1 August for the
/// summer term carries the next year's number). The elements riskid reads are the same in all.
pub fn supported_versions(term: Term) -> [u32; 3] {
    let y = u32::from(term.start_year()) % 100;
    [y.saturating_sub(1), y, y + 1]
}

/// Codes of the findings that only a CTF import makes.
pub mod ctf_code {
    pub use super::xml::code::*;
    pub const CTF_VERSION: &str = "ctf_version";
    pub const WRONG_SCHOOL: &str = "wrong_school";
    pub const INVALID_DATE: &str = "invalid_date";
    pub const INVALID_MARK: &str = "invalid_mark";
    pub const NO_ATTENDANCE: &str = "no_attendance";
    pub const NOT_IN_SUPPLEMENT: &str = "not_in_supplement";
    pub const NOT_IN_CTF: &str = "not_in_ctf";
    pub const CLA_CONFLICT: &str = "cla_conflict";
    pub const NO_SUPPLEMENT: &str = "no_supplement";
    // Warnings.
    pub const ACADEMIC_YEAR: &str = "academic_year_differs";
    pub const LEFT_OUT: &str = "pupil_left_out";
    pub const MAPPED_CODE: &str = "mapped_code";
    pub const UNCLASSIFIED_LANGUAGE: &str = "unclassified_language";
    pub const UNKNOWN_ETHNICITY: &str = "unknown_ethnicity";
    pub const MISSING_MARKS: &str = "missing_marks";
    pub const YEAR_TO_DATE: &str = "attendance_from_totals";
    pub const IGNORED_COLUMN: &str = "ignored_column";
    pub const EARLY_EXPORT: &str = "early_export";
}

/// An export this many days before the term's end date is normal (terms for absence
/// statistics end on 31 December, Easter Sunday and 31 July, after the last school day).
pub const EXPORT_SLACK_DAYS: i64 = 21;
use ctf_code as cc;

/// What this school already has stored for a pupil in the earlier terms of the same academic
/// year: subtracted from a CTF's year-to-date totals when it carries no marks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Earlier {
    pub possible: u32,
    pub authorised: u32,
    pub unauthorised: u32,
}

/// One submission's CTF import.
pub struct Import<'a> {
    pub ctf: &'a [u8],
    /// `None` when no supplement was sent: an error, as the required columns it carries
    /// (suspensions, permanent exclusion, mental-health referral) are not in any CTF.
    pub supplement: Option<&'a [u8]>,
    pub urn: Urn,
    pub term: Term,
    pub max_rows: usize,
}

/// A pupil's stored figures for the earlier terms of the year at this school, or why they
/// cannot be had (an earlier term's feed not stored yet, or the store could not be read).
pub type EarlierFn<'a> = dyn Fn(&Upn) -> Result<Earlier, String> + 'a;

/// Parses and derives a CTF import; every problem is reported; any error rejects it all.
/// `earlier` is asked only for pupils whose attendance comes from year-to-date totals.
pub fn parse_ctf(imp: &Import, earlier: &EarlierFn) -> Result<Feed, FeedError> {
    let mut f = Findings::default();
    let file = |line| Place { part: Part::Ctf, line, element: String::new() };
    let doc = match xml::read(imp.ctf, imp.max_rows) {
        Ok(d) => d,
        Err(xml::ReadError::TooManyPupils) => return Err(FeedError::TooManyRows { limit: imp.max_rows }),
        Err(xml::ReadError::Xml(e)) => {
            f.error_at(&file(e.line), "", e.code, e.message);
            return super::finish(Vec::new(), f, false);
        }
    };
    check_header(&doc.header, imp, &mut f);
    let has_supplement = imp.supplement.is_some();
    let supp = match imp.supplement {
        Some(bytes) => match supplement::read(bytes, imp.max_rows, &mut f) {
            Some(s) => s,
            None => return Err(FeedError::TooManyRows { limit: imp.max_rows }),
        },
        None => {
            f.error_at(
                &Place { part: Part::Supplement, line: 1, element: String::new() },
                "",
                cc::NO_SUPPLEMENT,
                "a CTF needs its supplement: a CSV keyed by upn with suspensions, permanent_exclusion and \
                 mh_referral (and the optional columns a CTF lacks); see the README"
                    .into(),
            );
            supplement::Supplement::default()
        }
    };
    if doc.pupils.is_empty() {
        f.error_at(&file(1), "", code::NO_ROWS, "the CTF has no pupils (no CTFpupilData/Pupil elements)".into());
    }
    let ctx = Context::new(imp, &doc.header);
    let mut derived = Vec::with_capacity(doc.pupils.len());
    let mut tally = Tally::default();
    let mut used = vec![false; supp.rows.len()];
    for p in &doc.pupils {
        if let Some(d) = ctx.derive(p, has_supplement.then_some(&supp), &mut used, &mut tally, earlier, &mut f) {
            derived.push(d);
        }
    }
    // With no pupils read at all, listing every supplement row would only repeat that.
    for (row, used) in supp.rows.iter().zip(&used).filter(|_| !doc.pupils.is_empty()) {
        if !used && !tally.left_out_upns.contains(&row.upn) {
            f.error_at(
                &Place { part: Part::Supplement, line: row.line, element: String::new() },
                "upn",
                cc::NOT_IN_CTF,
                format!(
                    "UPN {} is in the supplement (line {}) but not among the CTF's pupils: each supplement row must \
                     match a pupil in the CTF",
                    quote(&row.upn),
                    row.line
                ),
            );
        }
    }
    tally.report(&mut f);
    // Exactly the contract's validation, then each finding is put back at its source.
    // A required column missing from the supplement's header is reported there, once.
    let absent = std::array::from_fn(|i| {
        let c = Column::ALL[i];
        c.required() && SUPPLEMENT_COLUMNS.contains(&c) && !supp.columns.contains(&c)
    });
    let mut validator = RowValidator::with_absent_columns(absent);
    let mut rows = Vec::with_capacity(derived.len());
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for (i, d) in derived.iter().enumerate() {
        let cells: Cells = std::array::from_fn(|c| d.cells[c].as_str());
        let mut local = Findings::default();
        let row = validator.validate(i as u64 + 2, &cells, &mut local);
        for (list, error) in [(local.errors, true), (local.warnings, false)] {
            for mut v in list {
                let col = Column::ALL.iter().position(|c| c.name() == v.column);
                if col.is_some_and(|c| d.failed[c]) {
                    continue;
                }
                let place = col.map_or_else(|| d.pupil_place.clone(), |c| d.places[c].clone());
                if v.code == code::DUPLICATE_UPN {
                    let first = first_line.get(&d.cells[0]).copied().unwrap_or(0);
                    v.message = format!("this UPN is also the UPN of the pupil on CTF line {first}");
                }
                v.line = place.line;
                v.part = place.part;
                v.element = place.element;
                f.push_violation(v, error);
            }
        }
        first_line.entry(d.cells[0].clone()).or_insert(d.pupil_place.line);
        if let Some(r) = row {
            rows.push(r);
        }
    }
    super::finish(rows, f, false)
}

fn check_header(h: &xml::Header, imp: &Import, f: &mut Findings) {
    let at = |l: &xml::Loc, el: &str| Place { part: Part::Ctf, line: l.line, element: format!("CTfile/Header/{el}") };
    match &h.version {
        None => f.error_at(
            &Place { part: Part::Ctf, line: 1, element: "CTfile/Header".into() },
            "",
            cc::CTF_VERSION,
            "the CTF header has no CTFversion".into(),
        ),
        Some(v) => {
            let major = v.text.split('.').next().and_then(|m| m.trim().parse::<u32>().ok());
            let ok = supported_versions(imp.term);
            if !major.is_some_and(|m| ok.contains(&m)) {
                f.error_at(
                    &at(v, "CTFversion"),
                    "",
                    cc::CTF_VERSION,
                    format!(
                        "CTF version {} is not one riskid reads for {}: it reads CTF {}, {} and {} (export the file \
                         again from an up-to-date MIS)",
                        quote(&v.text),
                        imp.term,
                        ok[0],
                        ok[1],
                        ok[2]
                    ),
                );
            }
        }
    }
    if let Some(u) = &h.urn
        && u.text.trim() != imp.urn.to_string()
    {
        f.error_at(
            &at(u, "SourceSchool/URN"),
            "",
            cc::WRONG_SCHOOL,
            format!(
                "this CTF comes from school URN {}, but it was submitted for school {}: check the file",
                quote(&u.text),
                imp.urn
            ),
        );
    }
    if let Some(d) = &h.date_time {
        let (_, end) = calendar::term_dates(imp.term);
        if let Some(day) = calendar::parse_date(&d.text)
            && day + time::Duration::days(EXPORT_SLACK_DAYS) < end
        {
            f.warning_at(
                &at(d, "DateTime"),
                "",
                cc::EARLY_EXPORT,
                format!(
                    "the CTF was exported on {day}, more than {EXPORT_SLACK_DAYS} days before {} ends ({end}): \
                     sessions after the export are missing from this term's figures",
                    imp.term
                ),
            );
        }
    }
    if let Some(y) = &h.academic_year
        && y.text.trim() != imp.term.start_year().to_string()
    {
        f.warning_at(
            &at(y, "SourceSchool/AcademicYear"),
            "",
            cc::ACADEMIC_YEAR,
            format!(
                "the CTF's academic year is {} but it was submitted for {}: only the marks dated in that term are read",
                quote(&y.text),
                imp.term
            ),
        );
    }
}

/// Counts of mapped and left-out values, reported once per file (with the first place).
#[derive(Default)]
struct Tally {
    /// (code, place, message), in file order.
    notes: Vec<(&'static str, Place, String)>,
    left_out_upns: std::collections::HashSet<String>,
    unclassified_language: Counted,
    missing_marks: Counted,
    year_to_date: Counted,
    extended_ethnicity: Counted,
    legacy_sen: Counted,
}

#[derive(Default)]
struct Counted {
    n: usize,
    first: Option<Place>,
}

impl Counted {
    fn add(&mut self, p: &Place) {
        self.n += 1;
        if self.first.is_none() {
            self.first = Some(p.clone());
        }
    }
}

impl Tally {
    fn report(&self, f: &mut Findings) {
        for (code, place, message) in &self.notes {
            f.warning_at(place, "", code, message.clone());
        }
        let summary = |f: &mut Findings, c: &Counted, code: &str, col: &str, what: &str| {
            if let Some(p) = &c.first {
                let n = c.n;
                let pupils = if n == 1 { "pupil" } else { "pupils" };
                f.warning_at(p, col, code, format!("{n} {pupils}: {what} (the first is here)"));
            }
        };
        summary(
            f,
            &self.extended_ethnicity,
            cc::MAPPED_CODE,
            "ethnicity",
            "an extended ethnicity code, read as its DfE main code",
        );
        summary(f, &self.legacy_sen, cc::MAPPED_CODE, "sen", "a pre-2014 SEN code (A, P → K; S → E)");
        summary(
            f,
            &self.unclassified_language,
            cc::UNCLASSIFIED_LANGUAGE,
            "eal",
            "first language not obtained, refused or not recorded, so eal is N (as in the DfE's EAL figures)",
        );
        summary(
            f,
            &self.missing_marks,
            cc::MISSING_MARKS,
            "sessions_possible",
            "sessions in the term with no attendance mark ('-'), not counted as possible sessions",
        );
        summary(
            f,
            &self.year_to_date,
            cc::YEAR_TO_DATE,
            "sessions_possible",
            "no attendance marks: the term's sessions are the year-to-date totals less the earlier terms stored \
             for this school, and absence_spells is left empty",
        );
    }
}

/// One pupil's derived cells and where each came from.
struct Derived {
    cells: [String; COLUMN_COUNT],
    places: [Place; COLUMN_COUNT],
    pupil_place: Place,
    /// Columns whose derivation already reported an error: the contract's check of the
    /// (empty) cell would only repeat it.
    failed: [bool; COLUMN_COUNT],
}

struct Context<'a> {
    imp: &'a Import<'a>,
    start: Date,
    end: Date,
    lea: Option<String>,
    estab: Option<String>,
}

fn text(l: &Option<xml::Loc>) -> Option<&str> {
    l.as_ref().map(|l| l.text.trim()).filter(|t| !t.is_empty())
}

impl<'a> Context<'a> {
    fn new(imp: &'a Import<'a>, h: &xml::Header) -> Self {
        let (start, end) = calendar::term_dates(imp.term);
        Self { imp, start, end, lea: text(&h.lea).map(str::to_owned), estab: text(&h.estab).map(str::to_owned) }
    }

    #[allow(clippy::too_many_arguments)]
    fn derive(
        &self,
        p: &xml::Pupil,
        supp: Option<&supplement::Supplement>,
        used: &mut [bool],
        tally: &mut Tally,
        earlier: &EarlierFn,
        f: &mut Findings,
    ) -> Option<Derived> {
        use Column as C;
        let base = p.path();
        let pupil_place = Place { part: Part::Ctf, line: p.line, element: base.clone() };
        let at = |l: &Option<xml::Loc>, el: &str| Place {
            part: Part::Ctf,
            line: l.as_ref().map_or(p.line, |l| l.line),
            element: format!("{base}/{el}"),
        };
        let mut cells: [String; COLUMN_COUNT] = Default::default();
        let mut failed = [false; COLUMN_COUNT];
        let mut places: [Place; COLUMN_COUNT] = std::array::from_fn(|_| pupil_place.clone());
        let mut set = |c: Column, v: String, place: Place| {
            cells[c.index()] = v;
            places[c.index()] = place;
        };
        let upn = text(&p.upn).unwrap_or("").to_owned();
        set(C::Upn, upn.clone(), at(&p.upn, "UPN"));

        // Year group: nursery, "X" (not following the national curriculum) and years past 13
        // are outside the contract: the pupil is left out, with a warning.
        let ncyear = text(&p.ncyear).unwrap_or("");
        let nc_place = at(&p.ncyear, "BasicDetails/NCyearActual");
        let left_out = match ncyear.to_ascii_uppercase().as_str() {
            "N1" | "N2" => Some("a nursery year group"),
            "X" => Some("year group X (not following the national curriculum)"),
            y if y.parse::<u32>().is_ok_and(|n| n > 13) => Some("a year group after 13"),
            _ => None,
        };
        if let Some(why) = left_out {
            tally.notes.push((
                cc::LEFT_OUT,
                nc_place,
                // No UPN: nothing of a left-out pupil is kept, and warnings are stored.
                format!(
                    "the pupil here has NCyearActual {}: {why} is outside the feed contract (R, 1–13), so this pupil \
                     is left out of the import",
                    quote(ncyear)
                ),
            ));
            tally.left_out_upns.insert(upn);
            return None;
        }
        set(C::Ncyear, ncyear.to_owned(), nc_place);

        let sex_el = if p.sex_element == "Gender" { "Gender" } else { "Sex" };
        set(C::Sex, text(&p.sex).unwrap_or("").to_ascii_uppercase(), at(&p.sex, sex_el));

        let eth_place = at(&p.ethnicity, "BasicDetails/Ethnicity");
        let eth = match text(&p.ethnicity) {
            Some(code) => match codes::ethnicity_main(code) {
                Some((main, extended)) => {
                    if extended {
                        tally.extended_ethnicity.add(&eth_place);
                    }
                    main.code().to_owned()
                }
                None => {
                    tally.notes.push((
                        cc::UNKNOWN_ETHNICITY,
                        eth_place.clone(),
                        format!(
                            "ethnicity {} is not a DfE code: recorded as NOBT (information not obtained); correct it in \
                             the MIS",
                            quote(code)
                        ),
                    ));
                    "NOBT".into()
                }
            },
            None => {
                tally.notes.push((
                    cc::UNKNOWN_ETHNICITY,
                    eth_place.clone(),
                    "no ethnicity in the CTF: recorded as NOBT (information not obtained)".into(),
                ));
                "NOBT".into()
            }
        };
        set(C::Ethnicity, eth, eth_place);

        // FSM at any point in the term: an instance that overlaps the term's dates.
        let mut fsm = false;
        for (k, inst) in p.fsm.iter().enumerate() {
            let el = format!("FSMhistory/FSMinstance[{}]", k + 1);
            let start = self.date(&inst.start, &format!("{el}/FSMstartDate"), &at, "fsm", f);
            let end = self.date(&inst.end, &format!("{el}/FSMendDate"), &at, "fsm", f);
            if let (Some(Some(s)), e) = (start, end) {
                let ends_after = match e {
                    Some(Some(e)) => e >= self.start,
                    Some(None) => true, // no end date: ongoing
                    None => true,       // invalid end: already an error
                };
                if s <= self.end && ends_after {
                    fsm = true;
                }
            } else if let (Some(None), _) = (start, end) {
                f.error_at(
                    &Place { part: Part::Ctf, line: inst.line, element: format!("{base}/{el}") },
                    "fsm",
                    code::REQUIRED,
                    "an FSMinstance has no FSMstartDate".into(),
                );
            }
        }
        let fsm_place = p.fsm.first().map_or_else(
            || Place { element: format!("{base}/FSMhistory"), ..pupil_place.clone() },
            |i| Place { part: Part::Ctf, line: i.line, element: format!("{base}/FSMhistory/FSMinstance[1]") },
        );
        set(C::Fsm, if fsm { "Y" } else { "N" }.into(), fsm_place);

        // EAL: the first language (LanguageType F).
        let first = p
            .languages
            .iter()
            .find(|l| text(&l.kind).is_some_and(|k| k.eq_ignore_ascii_case("F")))
            .or(p.languages.first());
        let lang_place = first.map_or_else(
            || Place { element: format!("{base}/BasicDetails/Languages"), ..pupil_place.clone() },
            |l| at(&l.code, "BasicDetails/Languages/Type/Language"),
        );
        let eal = match codes::first_language(first.and_then(|l| text(&l.code))) {
            FirstLanguage::English => "N",
            FirstLanguage::Other => "Y",
            FirstLanguage::Unclassified => {
                tally.unclassified_language.add(&lang_place);
                "N"
            }
        };
        set(C::Eal, eal.into(), lang_place);

        // SEN: the latest record starting by the term's end.
        let mut sen: Option<(Option<Date>, &xml::SenRecord, usize)> = None;
        for (k, rec) in p.sen.iter().enumerate() {
            let el = format!("SENhistory/SEN[{}]/StartDate", k + 1);
            let start = match self.date(&rec.start, &el, &at, "sen", f) {
                Some(d) => d,
                None => continue,
            };
            if start.is_some_and(|s| s > self.end) {
                continue;
            }
            if sen.as_ref().is_none_or(|(best, _, _)| start >= *best) {
                sen = Some((start, rec, k));
            }
        }
        match sen {
            Some((_, rec, k)) => {
                let place = at(&rec.provision, &format!("SENhistory/SEN[{}]/SENprovision", k + 1));
                let raw = text(&rec.provision).unwrap_or("");
                let v = match codes::sen_provision(raw) {
                    Some((c, legacy)) => {
                        if legacy {
                            tally.legacy_sen.add(&place);
                        }
                        c.to_owned()
                    }
                    None => raw.to_owned(), // the contract's check reports it
                };
                set(C::Sen, v, place);
            }
            None => set(C::Sen, "N".into(), Place { element: format!("{base}/SENhistory"), ..pupil_place.clone() }),
        }

        // School moves: schools left in the 24 months to the term's end; unknown without a history.
        if p.has_school_history {
            let since = calendar::months_before(self.end, 24);
            let mut moves = 0u32;
            for (k, s) in p.schools.iter().enumerate() {
                let el = format!("SchoolHistory/School[{}]/LeavingDate", k + 1);
                if let Some(Some(d)) = self.date(&s.leaving, &el, &at, "school_moves", f)
                    && d > since
                    && d <= self.end
                {
                    moves += 1;
                }
            }
            set(
                C::SchoolMoves,
                moves.min(20).to_string(),
                Place { element: format!("{base}/SchoolHistory"), ..pupil_place.clone() },
            );
        }

        // Attendance for the term.
        if !self.attendance(p, &upn, &pupil_place, tally, earlier, f, &mut set) {
            for c in [C::SessionsPossible, C::SessionsAuthorised, C::SessionsUnauthorised, C::AbsenceSpells] {
                failed[c.index()] = true;
            }
        }

        // Attainment from the latest key stage result, unless the supplement gives it.
        for (col, subjects) in [(C::AttainmentEnglish, &["ENG", "REA"][..]), (C::AttainmentMaths, &["MAT"][..])] {
            if let Some((v, place)) = attainment(p, subjects, &base) {
                set(col, v.into(), place);
            }
        }

        // The supplement's columns.
        let in_care = text(&p.in_care).and_then(codes::boolean);
        let care_place = at(&p.in_care, "LookedAfter/InCare");
        if in_care == Some(true) {
            set(C::Cin, "CLA".into(), care_place.clone());
        }
        match supp.map(|s| (s, s.index.get(upn.as_str()))) {
            // No supplement at all: said once, for the whole file.
            None => {
                for c in SUPPLEMENT_COLUMNS {
                    failed[c.index()] = true;
                }
            }
            Some((_, None)) => {
                f.error_at(
                    &pupil_place,
                    "upn",
                    cc::NOT_IN_SUPPLEMENT,
                    format!(
                        "pupil {} (CTF line {}) has no row in the supplement: add a row with this upn to the supplement",
                        quote(&upn),
                        p.line
                    ),
                );
                for c in SUPPLEMENT_COLUMNS {
                    failed[c.index()] = true;
                }
            }
            Some((supp, Some(&i))) => {
                used[i] = true;
                let row = &supp.rows[i];
                for (col, v) in &row.cells {
                    let place = Place { part: Part::Supplement, line: row.line, element: String::new() };
                    if *col == C::Cin {
                        let claims_cla = v.eq_ignore_ascii_case("CLA");
                        if claims_cla && in_care != Some(true) {
                            f.error_at(
                                &place,
                                "cin",
                                cc::CLA_CONFLICT,
                                format!(
                                    "the supplement (line {}) says this pupil is looked after (CLA), but the CTF (line {}) \
                                     does not record them in care (LookedAfter/InCare): correct one of them",
                                    row.line, care_place.line
                                ),
                            );
                            continue;
                        }
                        if in_care == Some(true) || v.is_empty() {
                            continue; // CLA from the CTF stands
                        }
                    }
                    if matches!(col, C::AttainmentEnglish | C::AttainmentMaths) && v.is_empty() {
                        continue; // the CTF's key stage result, if any, stands
                    }
                    set(*col, v.clone(), place);
                }
            }
        }
        Some(Derived { cells, places, pupil_place, failed })
    }

    /// A date element: `None` if invalid (reported), `Some(None)` if absent or empty.
    fn date(
        &self,
        l: &Option<xml::Loc>,
        el: &str,
        at: &dyn Fn(&Option<xml::Loc>, &str) -> Place,
        column: &str,
        f: &mut Findings,
    ) -> Option<Option<Date>> {
        let Some(t) = text(l) else { return Some(None) };
        match calendar::parse_date(t) {
            Some(d) => Some(Some(d)),
            None => {
                f.error_at(&at(l, el), column, cc::INVALID_DATE, format!("{} is not a date (YYYY-MM-DD)", quote(t)));
                None
            }
        }
    }

    /// Whether a YearData is this school's, for this academic year.
    fn ours(&self, y: &xml::YearData) -> bool {
        let year_ok = text(&y.year).is_none_or(|t| t == self.imp.term.start_year().to_string());
        let school_ok = match (&self.lea, &self.estab, text(&y.lea), text(&y.estab)) {
            (Some(l), Some(e), Some(yl), Some(ye)) => l == yl && e == ye,
            _ => true,
        };
        year_ok && school_ok && text(&y.year).is_some()
    }

    #[allow(clippy::too_many_arguments)]
    fn attendance(
        &self,
        p: &xml::Pupil,
        upn: &str,
        pupil_place: &Place,
        tally: &mut Tally,
        earlier: &EarlierFn,
        f: &mut Findings,
        set: &mut dyn FnMut(Column, String, Place),
    ) -> bool {
        use Column as C;
        let base = p.path();
        let years: Vec<&xml::YearData> = p.years.iter().filter(|y| self.ours(y)).collect();
        let yd_el = |y: &xml::YearData, el: &str| format!("{base}/Attendance/YearData[{}]{el}", y.index);
        if years.is_empty() {
            f.error_at(
                &Place { element: format!("{base}/Attendance"), ..pupil_place.clone() },
                "sessions_possible",
                cc::NO_ATTENDANCE,
                format!(
                    "the CTF has no attendance for this pupil at this school in {}/{:02} (Attendance/YearData with \
                     Year {}): sessions_possible, sessions_authorised and sessions_unauthorised cannot be derived",
                    self.imp.term.start_year(),
                    (self.imp.term.start_year() + 1) % 100,
                    self.imp.term.start_year()
                ),
            );
            return false;
        }
        if years.len() > 1 && (self.lea.is_none() || self.estab.is_none()) {
            f.error_at(
                &Place { element: format!("{base}/Attendance"), ..pupil_place.clone() },
                "sessions_possible",
                cc::NO_ATTENDANCE,
                format!(
                    "this pupil has {} YearData for the year, and the header has no SourceSchool LEA and Estab to tell \
                     which is this school's (a dual-registered pupil's other school must not be counted)",
                    years.len()
                ),
            );
            return false;
        }
        let with_marks: Vec<&&xml::YearData> = years.iter().filter(|y| text(&y.marks).is_some()).collect();
        if !with_marks.is_empty() {
            let (mut possible, mut auth, mut unauth, mut spells, mut missing) = (0u32, 0u32, 0u32, 0u32, 0u32);
            let mut ok = true;
            let first = with_marks[0];
            let place = Place {
                part: Part::Ctf,
                line: first.marks.as_ref().map_or(first.line, |m| m.line),
                element: yd_el(first, "/AttendSessions/AttendanceMarks"),
            };
            // Sessions across this school's YearData, in date order, for spells.
            let mut sessions: Vec<(Date, bool, Mark)> = Vec::new();
            for y in &with_marks {
                let start_el = yd_el(y, "/AttendSessions/AttendanceStartDate");
                let start_place = Place {
                    part: Part::Ctf,
                    line: y.start_date.as_ref().map_or(y.line, |l| l.line),
                    element: start_el,
                };
                let Some(start) = text(&y.start_date) else {
                    f.error_at(
                        &start_place,
                        "sessions_possible",
                        code::REQUIRED,
                        "AttendanceMarks need an AttendanceStartDate".into(),
                    );
                    ok = false;
                    continue;
                };
                let Some(mut day) = calendar::parse_date(start) else {
                    f.error_at(
                        &start_place,
                        "sessions_possible",
                        cc::INVALID_DATE,
                        format!("{} is not a date (YYYY-MM-DD)", quote(start)),
                    );
                    ok = false;
                    continue;
                };
                let marks = text(&y.marks).unwrap_or("");
                let mark_place = Place {
                    part: Part::Ctf,
                    line: y.marks.as_ref().map_or(y.line, |m| m.line),
                    element: yd_el(y, "/AttendSessions/AttendanceMarks"),
                };
                let mut am = true;
                let mut iter = marks.char_indices().peekable();
                while let Some((i, c)) = iter.next() {
                    // A two-character code is a letter then a digit (C1, C2, J1, Y1–Y7): no
                    // one-character code is a digit, so the two forms cannot be confused.
                    let mut end = i + c.len_utf8();
                    if let Some(&(j, d)) = iter.peek()
                        && d.is_ascii_digit()
                    {
                        end = j + 1;
                        iter.next();
                    }
                    let code_text = &marks[i..end];
                    let Some(m) = codes::mark(code_text) else {
                        let session = if am { "AM" } else { "PM" };
                        f.error_at(
                            &mark_place,
                            "sessions_possible",
                            cc::INVALID_MARK,
                            format!(
                                "attendance mark {} for {day} {session} is not an attendance code (2024 codes, or the \
                                 earlier ones)",
                                quote(code_text)
                            ),
                        );
                        ok = false;
                        break;
                    };
                    if day >= self.start && day <= self.end {
                        sessions.push((day, am, m));
                        if code_text == "-" {
                            missing += 1;
                        }
                    }
                    if !am {
                        match day.next_day() {
                            Some(d) if d <= self.end => day = d,
                            _ => break,
                        }
                    }
                    am = !am;
                }
            }
            if !ok {
                return false;
            }
            sessions.sort_by_key(|&(d, am, _)| (d, !am));
            let mut in_spell = false;
            for &(_, _, m) in &sessions {
                match m {
                    Mark::Present => {
                        possible += 1;
                        in_spell = false;
                    }
                    Mark::Authorised | Mark::Unauthorised => {
                        possible += 1;
                        if m == Mark::Authorised {
                            auth += 1
                        } else {
                            unauth += 1
                        }
                        if !in_spell {
                            spells += 1;
                            in_spell = true;
                        }
                    }
                    // Not a session the pupil could attend: it neither ends nor starts a spell.
                    Mark::NotPossible => {}
                }
            }
            if missing > 0 {
                tally.missing_marks.add(&place);
            }
            set(C::SessionsPossible, possible.to_string(), place.clone());
            set(C::SessionsAuthorised, auth.to_string(), place.clone());
            set(C::SessionsUnauthorised, unauth.to_string(), place.clone());
            set(C::AbsenceSpells, spells.to_string(), place);
            return true;
        }
        // No marks: year-to-date totals, less what is stored for the earlier terms of the year.
        let y = years[0];
        let num = |l: &Option<xml::Loc>, el: &str, col: &str, f: &mut Findings| -> Option<u32> {
            let place = Place {
                part: Part::Ctf,
                line: l.as_ref().map_or(y.line, |l| l.line),
                element: yd_el(y, &format!("/{el}")),
            };
            match text(l) {
                None => {
                    f.error_at(
                        &place,
                        col,
                        cc::NO_ATTENDANCE,
                        format!("this pupil's YearData has neither attendance marks nor {el}: {col} cannot be derived"),
                    );
                    None
                }
                Some(t) => match t.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        f.error_at(
                            &place,
                            col,
                            code::INVALID_INTEGER,
                            format!("{el} must be a whole number, got {}", quote(t)),
                        );
                        None
                    }
                },
            }
        };
        let possible = num(&y.possible, "SessionsPossible", "sessions_possible", f);
        let auth = num(&y.authorised, "SessionsAuthorised", "sessions_authorised", f);
        let unauth = num(&y.unauthorised, "SessionsUnauthorised", "sessions_unauthorised", f);
        let (Some(possible), Some(auth), Some(unauth)) = (possible, auth, unauth) else { return false };
        let before = match Upn::parse(upn).map(|u| earlier(&u)) {
            Ok(Ok(e)) => e,
            // An invalid UPN is reported by the contract's check; nothing to subtract for it.
            Err(_) => Earlier::default(),
            Ok(Err(why)) => {
                f.error_at(
                    &Place {
                        part: Part::Ctf,
                        line: y.possible.as_ref().map_or(y.line, |l| l.line),
                        element: yd_el(y, "/SessionsPossible"),
                    },
                    "sessions_possible",
                    cc::NO_ATTENDANCE,
                    format!(
                        "this pupil has no attendance marks, and the year-to-date totals cannot be split into terms: \
                         {why}"
                    ),
                );
                return false;
            }
        };
        let place = Place {
            part: Part::Ctf,
            line: y.possible.as_ref().map_or(y.line, |l| l.line),
            element: yd_el(y, "/SessionsPossible"),
        };
        let (Some(p2), Some(a2), Some(u2)) = (
            possible.checked_sub(before.possible),
            auth.checked_sub(before.authorised),
            unauth.checked_sub(before.unauthorised),
        ) else {
            f.error_at(
                &place,
                "sessions_possible",
                cc::NO_ATTENDANCE,
                format!(
                    "the year-to-date totals ({possible} possible, {auth} authorised, {unauth} unauthorised) are less \
                     than this school's earlier terms of the year already stored ({}, {}, {}): the file may be older \
                     than those submissions",
                    before.possible, before.authorised, before.unauthorised
                ),
            );
            return false;
        };
        tally.year_to_date.add(&place);
        set(C::SessionsPossible, p2.to_string(), place.clone());
        set(C::SessionsAuthorised, a2.to_string(), place.clone());
        set(C::SessionsUnauthorised, u2.to_string(), place);
        true
    }
}

/// Attainment against the expected standard from the pupil's latest key stage result in one
/// of `subjects`: teacher assessment codes (GDS above; EXS expected; WTS, HNM, PK1–PK6, BLW
/// below), test outcomes (AS expected, NS below) or a scaled score (80–120: under 100 below,
/// 100–109 expected, 110 or more above). Other results (absent, not taken) give nothing.
fn attainment(p: &xml::Pupil, subjects: &[&str], base: &str) -> Option<(&'static str, Place)> {
    let mut best: Option<(u32, &'static str, Place)> = None;
    for a in &p.assessments {
        let Some(subject) = text(&a.subject) else { continue };
        if !subjects.iter().any(|s| s.eq_ignore_ascii_case(subject)) {
            continue;
        }
        let Some(result) = text(&a.result) else { continue };
        let r = result.to_ascii_uppercase();
        let level = match r.as_str() {
            "GDS" => "above",
            "EXS" | "AS" => "expected",
            "WTS" | "HNM" | "BLW" | "NS" | "PK1" | "PK2" | "PK3" | "PK4" | "PK5" | "PK6" => "below",
            // A number is read only where the component says it is a scaled score (a raw
            // mark can fall in 80–120 too).
            s if text(&a.component).is_some_and(|c| c.to_ascii_uppercase().contains("SC")) => match s.parse::<u32>() {
                Ok(n @ 80..=120) if n < 100 => "below",
                Ok(100..=109) => "expected",
                Ok(110..=120) => "above",
                _ => continue,
            },
            _ => continue,
        };
        let year = text(&a.year).and_then(|y| y.parse::<u32>().ok()).unwrap_or(0);
        if best.as_ref().is_none_or(|(y, _, _)| year >= *y) {
            let place = Place {
                part: Part::Ctf,
                line: a.result.as_ref().map_or(a.line, |l| l.line),
                element: format!("{base}/StageAssessments/KeyStage/StageAssessment/Result"),
            };
            best = Some((year, level, place));
        }
    }
    best.map(|(_, l, p)| (l, p))
}

#[cfg(test)]
mod tests;
