//! Writing a generated feed as a DfE Common Transfer File plus its supplement, as a school's
//! MIS would export it, so that CTF import can be checked against the CSV it must equal.
//!
//! Each pupil's attendance is written as marks over the terms' calendar dates (two per day, AM
//! then PM, `#` where the school is closed), laid out so that the marks give back exactly the
//! row's sessions and spells. A pupil whose row this term leaves the spells unknown gets no
//! marks, only year-to-date totals, as an MIS without session marks would export.

use std::collections::HashMap;
use std::fmt::Write as _;

use time::{Date, Duration, Weekday};

use super::{Feed, School, World};
use crate::domain::{Cin, PupilTerm, Sen, Term, TermName, Urn};
use crate::ingest::Column;
use crate::ingest::ctf::term_dates;

/// The local authority number written in generated CTFs.
pub const LEA: &str = "900";

/// The establishment number of a generated school (its URN's last four digits).
pub fn estab(urn: Urn) -> String {
    format!("{:04}", urn.get() % 10_000)
}

fn fnv(s: &str, salt: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Rows by (school, term, UPN), to find a pupil's earlier terms of the year at a school.
pub struct Index<'w> {
    rows: HashMap<(Urn, Term, &'w str), &'w PupilTerm>,
}

impl<'w> Index<'w> {
    pub fn new(world: &'w World) -> Self {
        let mut rows = HashMap::new();
        for f in &world.feeds {
            for r in &f.rows {
                rows.insert((f.urn, f.term, r.upn.as_str()), r);
            }
        }
        Self { rows }
    }
}

/// A feed as CTF XML and supplement CSV.
pub fn feed_ctf(school: &School, feed: &Feed, index: &Index) -> (Vec<u8>, Vec<u8>) {
    let term = feed.term;
    // The version numbered for the academic year (CTF 25 for 2025/26); from CTF 25 the
    // element is `Sex`, before it `Gender`.
    let version = term.start_year() % 100;
    let v25 = version >= 25;
    let mut x = String::with_capacity(feed.rows.len() * 1_200 + 1_000);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CTfile>\n<Header>\n");
    let _ = writeln!(x, "<DocumentName>Common Transfer File</DocumentName>");
    let _ = writeln!(x, "<CTFversion>{version}.0</CTFversion>");
    let (_, end) = term_dates(term);
    let _ = writeln!(x, "<DateTime>{end}T16:00:00</DateTime>\n<DocumentQualifier>full</DocumentQualifier>");
    let _ = writeln!(
        x,
        "<SourceSchool><LEA>{LEA}</LEA><Estab>{}</Estab><URN>{}</URN><SchoolName>{}</SchoolName>\
         <AcademicYear>{}</AcademicYear></SourceSchool>",
        estab(school.urn),
        school.urn,
        school.name.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"),
        term.start_year()
    );
    x.push_str("<DestSchool><LEA>MMM</LEA><Estab>MMMM</Estab></DestSchool>\n</Header>\n<CTFpupilData>\n");
    let mut supp = supplement_columns().map(|c| c.name()).collect::<Vec<_>>().join(",");
    supp.push('\n');
    for r in &feed.rows {
        pupil(&mut x, school.urn, term, r, index, v25);
        supplement_row(&mut supp, r);
    }
    x.push_str("</CTFpupilData>\n</CTfile>\n");
    (x.into_bytes(), supp.into_bytes())
}

/// The supplement's header: `upn`, then every column a supplement may carry (the importer's
/// own list, so the two cannot drift apart).
fn supplement_columns() -> impl Iterator<Item = Column> {
    std::iter::once(Column::Upn).chain(crate::ingest::ctf::SUPPLEMENT_COLUMNS)
}

/// The row's supplement cells: its contract cells for those columns (CLA left out: it comes
/// from the CTF's LookedAfter).
fn supplement_row(out: &mut String, r: &PupilTerm) {
    let cells = super::row_cells(r);
    let row: Vec<&str> = supplement_columns()
        .map(|c| match cells[c.index()].as_str() {
            "CLA" if c == Column::Cin => "",
            v => v,
        })
        .collect();
    out.push_str(&row.join(","));
    out.push('\n');
}

const LANGUAGES: [&str; 8] = ["POL", "URD", "PAN", "BEN", "SOM", "ARA", "ROM", "POR"];

fn pupil(x: &mut String, urn: Urn, term: Term, r: &PupilTerm, index: &Index, v25: bool) {
    let upn = r.upn.as_str();
    let h = fnv(upn, 0);
    let (start, end) = term_dates(term);
    let born = i32::from(term.start_year()) - i32::from(r.ncyear.get()) - 5;
    let _ = writeln!(x, "<Pupil>\n<UPN>{upn}</UPN>\n<Surname>Synthetic</Surname><Forename>Pupil</Forename>");
    let _ = writeln!(x, "<DOB>{born}-0{}-1{}</DOB>", 1 + h % 9, h % 10);
    let sex_el = if v25 { "Sex" } else { "Gender" };
    let _ = writeln!(x, "<{sex_el}>{}</{sex_el}>", r.sex.code());
    let eth = match r.ethnicity.code() {
        // Some MIS export extended codes: one in three White British pupils as English.
        "WBRI" if h.is_multiple_of(3) => "WENG",
        c => c,
    };
    let lang = if r.eal { LANGUAGES[(h / 7 % 8) as usize] } else { "ENG" };
    let _ = writeln!(
        x,
        "<BasicDetails><NCyearActual>{}</NCyearActual><Ethnicity>{eth}</Ethnicity><Languages><Type>\
         <LanguageType>F</LanguageType><Language>{lang}</Language></Type></Languages><EnrolStatus>C</EnrolStatus>\
         </BasicDetails>",
        r.ncyear.label()
    );
    let _ = writeln!(x, "<LookedAfter><InCare>{}</InCare></LookedAfter>", r.cin == Some(Cin::Cla));
    if r.fsm {
        let _ = writeln!(
            x,
            "<FSMhistory><FSMinstance><FSMstartDate>{}</FSMstartDate><UKcountry>ENG</UKcountry></FSMinstance></FSMhistory>",
            start - Duration::days(400)
        );
    } else if h.is_multiple_of(5) {
        // An eligibility that ended the day before the term: not FSM in the term.
        let _ = writeln!(
            x,
            "<FSMhistory><FSMinstance><FSMstartDate>{}</FSMstartDate><FSMendDate>{}</FSMendDate></FSMinstance></FSMhistory>",
            start - Duration::days(700),
            start - Duration::days(1)
        );
    }
    match r.sen {
        Sen::N => {}
        s => {
            let _ = writeln!(
                x,
                "<SENhistory><SEN><StartDate>{}</StartDate><SENprovision>{}</SENprovision></SEN></SENhistory>",
                start - Duration::days(200),
                s.code()
            );
        }
    }
    attendance(x, urn, term, r, index);
    match r.school_moves {
        None => {}
        Some(0) => {
            let _ = writeln!(
                x,
                "<SchoolHistory><School><LEA>{LEA}</LEA><Estab>0001</Estab><LeavingDate>{}</LeavingDate></School></SchoolHistory>",
                end - Duration::days(1_500)
            );
        }
        Some(m) => {
            x.push_str("<SchoolHistory>");
            for k in 0..i64::from(m) {
                let _ = write!(
                    x,
                    "<School><LEA>{LEA}</LEA><Estab>{:04}</Estab><LeavingDate>{}</LeavingDate></School>",
                    1 + k,
                    end - Duration::days(20 + 30 * k)
                );
            }
            x.push_str("</SchoolHistory>\n");
        }
    }
    x.push_str("</Pupil>\n");
}

/// This school's YearData for the academic year up to `term`: marks over every term of the
/// year the pupil had a row here, or, if this term's row leaves spells unknown, totals only.
fn attendance(x: &mut String, urn: Urn, term: Term, r: &PupilTerm, index: &Index) {
    let upn = r.upn.as_str();
    let mut terms = Vec::new();
    let mut t = term;
    loop {
        if let Some(row) = index.rows.get(&(urn, t, upn)) {
            terms.push((t, *row));
        }
        if t.name() == TermName::Autumn {
            break;
        }
        t = t.prev();
    }
    terms.reverse();
    let sum = |f: fn(&PupilTerm) -> u16| terms.iter().map(|(_, r)| u32::from(f(r))).sum::<u32>();
    let (p, a, u) = (sum(|r| r.sessions_possible), sum(|r| r.sessions_authorised), sum(|r| r.sessions_unauthorised));
    let _ = write!(
        x,
        "<Attendance><YearData><Year>{}</Year><LEA>{LEA}</LEA><Estab>{}</Estab><SessionsPossible>{p}</SessionsPossible>\
         <SessionsAuthorised>{a}</SessionsAuthorised><SessionsAttended>{}</SessionsAttended>\
         <SessionsUnauthorised>{u}</SessionsUnauthorised>",
        term.start_year(),
        estab(urn),
        p - a - u
    );
    // Earlier terms' marks are written whatever their rows said of spells: only this term's
    // figures are derived from this file.
    if r.absence_spells.is_some() {
        let first = term_dates(terms[0].0).0;
        let mut marks = String::new();
        let mut day = first;
        for &(t, row) in &terms {
            let (s, e) = term_dates(t);
            // Terms with no row here between the pupil's terms: not on roll.
            while day < s {
                marks.push_str("--");
                day = day.next_day().expect("in range");
            }
            marks.push_str(&term_marks(t, row));
            day = e.next_day().expect("in range");
        }
        let _ = write!(
            x,
            "<AttendSessions><AttendanceStartDate>{first}</AttendanceStartDate><AttendanceMarks>{marks}</AttendanceMarks>\
             </AttendSessions>"
        );
    }
    x.push_str("</YearData></Attendance>\n");
}

/// Two marks per calendar day of the term that give back exactly the row's possible,
/// authorised and unauthorised sessions and spells.
pub fn term_marks(term: Term, r: &PupilTerm) -> String {
    let (start, end) = term_dates(term);
    let days = (end - start).whole_days() as usize + 1;
    let sessions = 2 * days;
    // Teaching starts in September in autumn, the first weekday of January in spring, the day
    // after Easter Monday in summer.
    let teach_from: Date = match term.name() {
        TermName::Autumn => Date::from_calendar_date(start.year(), time::Month::September, 1).expect("valid"),
        TermName::Spring => start.next_day().expect("valid"),
        TermName::Summer => start.next_day().expect("valid"),
    };
    let weekday = |d: Date| !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday);
    let day_of = |k: usize| start + Duration::days((k / 2) as i64);
    // Sessions to use: teaching weekdays first, then any others, in date order.
    let mut order: Vec<usize> = (0..sessions).filter(|&k| day_of(k) >= teach_from && weekday(day_of(k))).collect();
    order.extend((0..sessions).filter(|&k| !(day_of(k) >= teach_from && weekday(day_of(k)))));
    // A row that does not fit the term's calendar (more possible sessions than half-days, or
    // more spells than present sessions can separate) is laid out as near as it allows: the
    // generator's own rows always fit, so its round trip is exact.
    let possible = usize::from(r.sessions_possible).min(sessions);
    let mut chosen: Vec<usize> = order[..possible].to_vec();
    chosen.sort_unstable();
    // Absences in `spells` runs separated by one present session, centred in the term.
    let auth = usize::from(r.sessions_authorised).min(possible);
    let absent = (auth + usize::from(r.sessions_unauthorised)).min(possible);
    let spells = usize::from(r.absence_spells.unwrap_or(u16::from(absent > 0)))
        .max(usize::from(absent > 0))
        .min(absent)
        .min(possible - absent + 1);
    let mut kind = vec![b'P'; possible]; // P present, A authorised, U unauthorised
    if absent > 0 {
        let present = possible - absent;
        let gaps = spells - 1;
        let mut k = (present - gaps.min(present)) / 2;
        let mut left = absent;
        let mut n_auth = 0;
        for s in 0..spells {
            let size = absent / spells + usize::from(s < absent % spells);
            for _ in 0..size {
                kind[k] = if n_auth < auth { b'A' } else { b'U' };
                n_auth += 1;
                k += 1;
                left -= 1;
            }
            if s + 1 < spells {
                k += 1; // one present session ends the spell
            }
        }
        debug_assert_eq!(left, 0);
    }
    let h = fnv(r.upn.as_str(), u64::from(term.index()));
    const AUTH: [&str; 5] = ["I", "M", "C1", "R", "J1"];
    const UNAUTH: [&str; 4] = ["O", "G", "N", "U"];
    let mut out = String::with_capacity(sessions + 16);
    let mut next = 0;
    for k in 0..sessions {
        let code: &str = if next < chosen.len() && chosen[next] == k {
            let c = match kind[next] {
                b'A' => AUTH[((h >> (next % 40)) % 5) as usize],
                b'U' => UNAUTH[((h >> (next % 40)) % 4) as usize],
                _ if (h >> (next % 50)).is_multiple_of(29) => "L",
                _ if k % 2 == 0 => "/",
                _ => "\\",
            };
            next += 1;
            c
        } else {
            "#"
        };
        out.push_str(code);
    }
    out
}
