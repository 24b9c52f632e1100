//! Tests of CTF import: hand-written files with hand-checked figures, and every refusal with
//! its place in the source.

use super::*;
use crate::domain::TermName;
use crate::ingest::Violation;

const AUTUMN: &str = include_str!("../../../tests/fixtures/ctf/ctf25-autumn.xml");
const AUTUMN_SUPP: &str = include_str!("../../../tests/fixtures/ctf/ctf25-autumn-supplement.csv");
const SUMMER: &str = include_str!("../../../tests/fixtures/ctf/ctf24-summer.xml");
const SUMMER_SUPP: &str = include_str!("../../../tests/fixtures/ctf/ctf24-summer-supplement.csv");

fn urn() -> Urn {
    Urn::new(100001).unwrap()
}

fn run(xml: &str, supp: Option<&str>, year: u16, term: TermName) -> Result<Feed, FeedError> {
    run_with(xml, supp, year, term, &|_| Ok(Earlier::default()))
}

fn run_with(xml: &str, supp: Option<&str>, year: u16, term: TermName, earlier: &EarlierFn) -> Result<Feed, FeedError> {
    let imp = Import {
        ctf: xml.as_bytes(),
        supplement: supp.map(str::as_bytes),
        urn: urn(),
        term: Term::new(year, term).unwrap(),
        max_rows: 10_000,
    };
    parse_ctf(&imp, earlier)
}

fn lines(feed: &Feed) -> Vec<String> {
    feed.rows.iter().map(|r| crate::synth::row_cells(r).join(",")).collect()
}

fn rejected(r: Result<Feed, FeedError>) -> Vec<Violation> {
    match r {
        Err(FeedError::Rejected(r)) => r.errors,
        Ok(f) => panic!("expected a rejection, got {} rows", f.rows.len()),
        Err(e) => panic!("expected a rejection, got {e:?}"),
    }
}

#[test]
fn ctf25_autumn_gives_the_hand_checked_rows() {
    let feed = run(AUTUMN, Some(AUTUMN_SUPP), 2025, TermName::Autumn).unwrap();
    assert_eq!(
        lines(&feed),
        [
            // Two-character codes: 16 possible (9 present, 4 authorised I I C1 J1, 3 unauthorised
            // N O O); Y1 and D not possible; three spells, the second across a weekend. FSM ended
            // 31 July, before the term. The 2022 leaving is outside the 24 months.
            "V359200125001,4,F,WBRI,N,N,K,,N,0,16,4,3,3,0,0,N,2,,,4,2,5,1,8,N",
            // Mid-term joiner: marks from 10 September; FSM from 1 October; BSOM → BAFR; one
            // school left in July 2025 (the 2021 one is too old).
            "J359200125002,5,M,BAFR,Y,Y,N,CIN,,1,8,1,1,1,1,2,N,7,,,,,,,,Y",
            // Leaver on 3 September: 6 sessions. In care → CLA. The EHC plan starts after the
            // term, so SEN support. First language NOT → eal N. Leaving this school is a move.
            "Y359200125003,2,M,WBRI,N,N,K,CLA,Y,1,6,1,0,1,0,,N,,,,,,,,,N",
            // Dual registered: the D sessions are not possible here; the other school's
            // YearData (all absences) is not read. No SchoolHistory → school_moves unknown.
            "M359200125004,4,F,CHNE,N,N,N,CPP,N,,6,0,1,1,0,0,N,0,,,,,,,,N",
            // No marks: autumn's year-to-date totals, spells unknown. Unknown ethnicity → NOBT;
            // SEN P (School Action Plus) → K.
            "B359200125005,R,F,NOBT,N,Y,K,,,,140,6,2,,0,0,N,1,,,,,,,,N",
        ]
    );
    let w: Vec<(&str, Part, u64, &str)> =
        feed.warnings.iter().map(|v| (v.code.as_str(), v.part, v.line, v.element.as_str())).collect();
    let has = |code: &str, line: u64| w.iter().any(|(c, _, l, _)| *c == code && *l == line);
    let src: Vec<&str> = AUTUMN.lines().collect();
    let line_of = |needle: &str| src.iter().position(|l| l.contains(needle)).unwrap() as u64 + 1;
    assert!(has(cc::LEFT_OUT, line_of("<NCyearActual>N2")), "{w:?}");
    assert!(has(cc::UNKNOWN_ETHNICITY, line_of("XYZQ")), "{w:?}");
    assert!(has(cc::MAPPED_CODE, line_of("BSOM")), "extended ethnicity, first at BSOM: {w:?}");
    assert!(has(cc::MAPPED_CODE, line_of("<SENprovision>P")), "{w:?}");
    assert!(has(cc::UNCLASSIFIED_LANGUAGE, line_of("<Language>NOT")), "{w:?}");
    assert!(has(cc::YEAR_TO_DATE, line_of("<SessionsPossible>140")), "{w:?}");
    assert!(has(code::STATUTORY_CIN, line_of("<InCare>true")), "CLA is the CTF's: {w:?}");
    // CPP came from the supplement: its line there (line 5, the fourth pupil).
    assert!(w.iter().any(|(c, p, l, _)| *c == code::STATUTORY_CIN && *p == Part::Supplement && *l == 5), "{w:?}");
    let ext = feed.warnings.iter().find(|v| v.code == cc::MAPPED_CODE && v.column == "ethnicity").unwrap();
    assert!(ext.message.starts_with("2 pupils"), "{}", ext.message);
    assert_eq!(ext.element, "CTfile/CTFpupilData/Pupil[2]/BasicDetails/Ethnicity");
    assert!(!format!("{feed:?}").contains("Example Primary") && !format!("{feed:?}").contains("Ada"));
}

#[test]
fn ctf24_summer_reads_gender_key_stage_results_and_only_the_terms_dates() {
    let feed = run(SUMMER, Some(SUMMER_SUPP), 2024, TermName::Summer).unwrap();
    assert_eq!(
        lines(&feed),
        [
            // Spring's absences (14–17 April) are before Easter Monday and not counted: summer
            // has 8 possible, 2 authorised (I I), 1 unauthorised (G), two spells. KS2 reading
            // 98 → below, maths 112 → above.
            "J359200124001,6,M,APKN,N,Y,N,,,,8,2,1,2,0,,N,,below,above,,,,,,N",
            // The supplement's teacher assessment (english above) wins; maths EXS → expected.
            "Y359200124002,6,F,WBRI,N,N,N,,,,8,0,0,0,0,,N,,above,expected,,,,,,Y",
        ]
    );
    assert!(feed.warnings.iter().all(|w| w.code == code::FEW_SESSIONS), "only the short term: {:?}", feed.warnings);
}

#[test]
fn spring_without_marks_subtracts_the_autumn_already_stored() {
    let xml = AUTUMN.to_owned();
    let supp = AUTUMN_SUPP;
    let earlier = |u: &Upn| {
        Ok(if u.as_str() == "B359200125005" {
            Earlier { possible: 100, authorised: 4, unauthorised: 1 }
        } else {
            Earlier::default()
        })
    };
    let feed = run_with(&xml, Some(supp), 2025, TermName::Spring, &earlier).unwrap();
    let l = lines(&feed);
    let eve = l.iter().find(|l| l.starts_with("B359200125005")).unwrap();
    assert!(eve.contains(",40,2,1,,"), "140 − 100, 6 − 4, 2 − 1: {eve}");
    // Pupils with marks have none in spring: their marks are all in September.
    assert!(l[0].contains(",0,0,0,0,"), "{}", l[0]);
    let bad = |_: &Upn| Ok(Earlier { possible: 200, authorised: 0, unauthorised: 0 });
    let errs = rejected(run_with(&xml, Some(supp), 2025, TermName::Spring, &bad));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].code, cc::NO_ATTENDANCE);
    assert!(errs[0].element.ends_with("Attendance/YearData[1]/SessionsPossible"), "{:?}", errs[0]);
    // Autumn not stored yet: refused, never the whole year's totals taken as spring's.
    let missing = |_: &Upn| Err("this school has no feed stored for 2025/26 autumn".to_string());
    let errs = rejected(run_with(&xml, Some(supp), 2025, TermName::Spring, &missing));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("no feed stored for 2025/26 autumn"), "{}", errs[0].message);
}

#[test]
fn errors_name_their_place_in_the_ctf_or_the_supplement() {
    let xml = AUTUMN
        .replacen("<NCyearActual>4</NCyearActual>", "<NCyearActual>15x</NCyearActual>", 1)
        .replace("<FSMstartDate>2025-10-01", "<FSMstartDate>2025-13-01")
        .replace("/\\/\\M\\", "/\\/\\M?");
    let supp = AUTUMN_SUPP.replace("M359200125004,0,0,N,0,CPP", "M359200125004,0,0,N,0,CLA").replace(
        "B359200125005,0,0,N,1,,,,,,,,N",
        "B359200125005,0,0,maybe,1,,,,,,,,N\nE359200125007,0,0,N,0,,,,,,,,N",
    );
    let errs = rejected(run(&xml, Some(&supp), 2025, TermName::Autumn));
    let src: Vec<&str> = xml.lines().collect();
    let line_of = |needle: &str| src.iter().position(|l| l.contains(needle)).unwrap() as u64 + 1;
    let find = |code: &str| errs.iter().find(|v| v.code == code).unwrap_or_else(|| panic!("{code} in {errs:?}"));
    let nc = errs.iter().find(|v| v.column == "ncyear").unwrap();
    assert_eq!((nc.part, nc.line), (Part::Ctf, line_of("15x")));
    assert_eq!(nc.element, "CTfile/CTFpupilData/Pupil[1]/BasicDetails/NCyearActual");
    let date = find(cc::INVALID_DATE);
    assert_eq!((date.part, date.line), (Part::Ctf, line_of("2025-13-01")));
    assert!(date.element.ends_with("Pupil[2]/FSMhistory/FSMinstance[1]/FSMstartDate"));
    let mark = find(cc::INVALID_MARK);
    assert_eq!(mark.line, line_of("M?"));
    assert!(mark.message.contains("2025-09-03 PM"), "{}", mark.message);
    let cla = find(cc::CLA_CONFLICT);
    assert_eq!((cla.part, cla.line), (Part::Supplement, 5));
    let boolean = find(code::INVALID_BOOLEAN);
    assert_eq!((boolean.part, boolean.line, boolean.column.as_str()), (Part::Supplement, 6, "permanent_exclusion"));
    let extra = find(cc::NOT_IN_CTF);
    assert_eq!((extra.part, extra.line), (Part::Supplement, 7));
    assert_eq!(errs.len(), 6, "{errs:#?}");
}

#[test]
fn a_pupil_missing_from_the_supplement_or_a_missing_supplement_is_named() {
    let supp: String = AUTUMN_SUPP.lines().filter(|l| !l.starts_with("J359")).map(|l| format!("{l}\n")).collect();
    let errs = rejected(run(AUTUMN, Some(&supp), 2025, TermName::Autumn));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].code, cc::NOT_IN_SUPPLEMENT);
    assert_eq!(errs[0].element, "CTfile/CTFpupilData/Pupil[2]");
    let errs = rejected(run(AUTUMN, None, 2025, TermName::Autumn));
    assert_eq!(errs.len(), 1, "one error, not one per pupil: {errs:?}");
    assert_eq!((errs[0].code.as_str(), errs[0].part), (cc::NO_SUPPLEMENT, Part::Supplement));
    // A supplement without a required column: said once, at its header.
    let supp = AUTUMN_SUPP.replace("mh_referral", "notes");
    let errs = rejected(run(AUTUMN, Some(&supp), 2025, TermName::Autumn));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        (errs[0].code.as_str(), errs[0].line, errs[0].column.as_str()),
        (code::MISSING_COLUMN, 1, "mh_referral")
    );
}

#[test]
fn the_header_must_be_a_supported_version_from_this_school() {
    let old = AUTUMN.replace("<CTFversion>25.0", "<CTFversion>23.0");
    let errs = rejected(run(&old, Some(AUTUMN_SUPP), 2025, TermName::Autumn));
    assert_eq!(errs[0].code, cc::CTF_VERSION);
    assert!(errs[0].message.contains("CTF 24, 25 and 26"), "{}", errs[0].message);
    let other = AUTUMN.replace("<URN>100001", "<URN>100002");
    let errs = rejected(run(&other, Some(AUTUMN_SUPP), 2025, TermName::Autumn));
    assert_eq!((errs[0].code.as_str(), errs[0].element.as_str()), (cc::WRONG_SCHOOL, "CTfile/Header/SourceSchool/URN"));
    // A different academic year is a warning: only the term's dates are read.
    let feed = run(AUTUMN, Some(AUTUMN_SUPP), 2024, TermName::Summer);
    let errs = rejected(feed);
    assert!(errs.iter().all(|e| e.code == cc::NO_ATTENDANCE), "no YearData for 2024 at this school: {errs:?}");
}

#[test]
fn hostile_xml_is_refused_with_one_clear_error() {
    for (xml, want) in [
        (
            "<?xml version=\"1.0\"?><!DOCTYPE CTfile [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>\
             <CTfile><Header><CTFversion>&b;</CTFversion></Header></CTfile>",
            cc::DTD_REFUSED,
        ),
        ("<CTfile><Header><CTFversion>&xxe;</CTFversion></Header></CTfile>", cc::MALFORMED_XML),
        ("<CTfile><Header>", cc::MALFORMED_XML),
        ("name,upn\n", cc::NOT_CTF),
    ] {
        let errs = rejected(run(xml, Some(AUTUMN_SUPP), 2025, TermName::Autumn));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].code, want);
        assert_eq!(errs[0].part, Part::Ctf);
    }
    let many = format!("<CTfile><CTFpupilData>{}</CTFpupilData></CTfile>", "<Pupil/>".repeat(11));
    let imp = Import {
        ctf: many.as_bytes(),
        supplement: Some(b"upn\n"),
        urn: urn(),
        term: Term::new(2025, TermName::Autumn).unwrap(),
        max_rows: 10,
    };
    assert!(matches!(parse_ctf(&imp, &|_| Ok(Earlier::default())), Err(FeedError::TooManyRows { limit: 10 })));
}

#[test]
fn a_generated_boroughs_ctf_and_supplement_give_exactly_its_csv_rows() {
    use crate::synth::{WorldConfig, generate, world_ctf};
    let world = generate(&WorldConfig { schools: 3, years: 2, seed: 5, ..Default::default() }).unwrap();
    let files = world_ctf(&world);
    // What the store would hold: the current rows of earlier feeds, by (school, term, UPN).
    let mut stored: HashMap<(Urn, Term, String), crate::domain::PupilTerm> = HashMap::new();
    let (mut with_totals, mut rows) = (0, 0);
    for (f, (xml, supp)) in world.feeds.iter().zip(&files) {
        let imp = Import { ctf: xml, supplement: Some(supp), urn: f.urn, term: f.term, max_rows: 10_000 };
        let earlier = |u: &Upn| {
            let mut e = Earlier::default();
            let mut t = f.term;
            while t.name() != TermName::Autumn {
                t = t.prev();
                if let Some(r) = stored.get(&(f.urn, t, u.as_str().to_owned())) {
                    e.possible += u32::from(r.sessions_possible);
                    e.authorised += u32::from(r.sessions_authorised);
                    e.unauthorised += u32::from(r.sessions_unauthorised);
                }
            }
            Ok(e)
        };
        let feed = parse_ctf(&imp, &earlier).unwrap_or_else(|e| panic!("{} {}: {e:?}", f.urn, f.term));
        assert_eq!(feed.rows.len(), f.rows.len());
        for (got, want) in feed.rows.iter().zip(&f.rows) {
            assert_eq!(got, want, "{} {}", f.urn, f.term);
        }
        with_totals += feed.warnings.iter().filter(|w| w.code == cc::YEAR_TO_DATE).count();
        rows += f.rows.len();
        for r in &f.rows {
            stored.insert((f.urn, f.term, r.upn.as_str().to_owned()), r.clone());
        }
    }
    assert!(rows > 1_000, "{rows}");
    assert!(with_totals > 0, "some feeds exercise year-to-date totals");
}

#[test]
fn every_ctf_finding_code_is_documented() {
    let readme = include_str!("../../../README.md");
    let doc = include_str!("../../../docs/ctf-import.md");
    for c in [
        cc::MALFORMED_XML,
        cc::DTD_REFUSED,
        cc::NOT_CTF,
        cc::TOO_DEEP,
        cc::TEXT_TOO_LONG,
        cc::CTF_VERSION,
        cc::WRONG_SCHOOL,
        cc::INVALID_DATE,
        cc::INVALID_MARK,
        cc::NO_ATTENDANCE,
        cc::NOT_IN_SUPPLEMENT,
        cc::NOT_IN_CTF,
        cc::CLA_CONFLICT,
        cc::NO_SUPPLEMENT,
        cc::ACADEMIC_YEAR,
        cc::LEFT_OUT,
        cc::MAPPED_CODE,
        cc::UNCLASSIFIED_LANGUAGE,
        cc::UNKNOWN_ETHNICITY,
        cc::MISSING_MARKS,
        cc::YEAR_TO_DATE,
        cc::IGNORED_COLUMN,
        cc::TOO_MANY_ELEMENTS,
        cc::EARLY_EXPORT,
    ] {
        assert!(readme.contains(&format!("`{c}`")), "README lacks {c}");
    }
    assert!(doc.contains("invalid_mark"));
}

#[test]
fn record_floods_supplement_floods_and_unsplittable_attendance_are_refused() {
    // A flood of empty assessments for one pupil: refused at the 65th, not stored 900 times over.
    let flood = format!(
        "<CTfile><CTFpupilData><Pupil><StageAssessments><KeyStage><Stage>{}</Stage>{}</KeyStage></StageAssessments>\
         </Pupil></CTFpupilData></CTfile>",
        "A".repeat(16_000),
        "<Assessment/>".repeat(100_000)
    );
    let errs = rejected(run(&flood, Some(AUTUMN_SUPP), 2025, TermName::Autumn));
    assert_eq!(errs[0].code, cc::TOO_MANY_ELEMENTS);
    let years = format!(
        "<CTfile><CTFpupilData><Pupil><Attendance>{}</Attendance></Pupil></CTFpupilData></CTfile>",
        "<YearData/>".repeat(65)
    );
    assert_eq!(rejected(run(&years, Some(AUTUMN_SUPP), 2025, TermName::Autumn))[0].code, cc::TOO_MANY_ELEMENTS);
    // A supplement longer than the row limit.
    let supp = format!("upn,suspensions,permanent_exclusion,mh_referral\n{}", "x,0,N,N\n".repeat(11));
    let imp = Import {
        ctf: AUTUMN.as_bytes(),
        supplement: Some(supp.as_bytes()),
        urn: urn(),
        term: Term::new(2025, TermName::Autumn).unwrap(),
        max_rows: 10,
    };
    assert!(matches!(parse_ctf(&imp, &|_| Ok(Earlier::default())), Err(FeedError::TooManyRows { limit: 10 })));
    // Without the header's LEA and Estab, a pupil with two YearData cannot be read.
    let no_school = AUTUMN.replace("<LEA>359</LEA>\n      <Estab>2001</Estab>", "");
    let errs = rejected(run(&no_school, Some(AUTUMN_SUPP), 2025, TermName::Autumn));
    assert!(errs.iter().all(|e| e.code == cc::NO_ATTENDANCE), "{errs:?}");
    assert_eq!(errs.len(), 1, "pupil 4 has two YearData for 2025 (pupil 1 has one, and one for 2024): {errs:?}");
    // An undefined entity inside a name is refused without quoting it.
    let named = AUTUMN.replace("<Surname>Example</Surname>", "<Surname>Smith&Jones;</Surname>");
    let errs = rejected(run(&named, Some(AUTUMN_SUPP), 2025, TermName::Autumn));
    assert!(!errs[0].message.contains("Jones"), "{}", errs[0].message);
    // Left-out pupils' warnings hold no UPN.
    let feed = run(AUTUMN, Some(AUTUMN_SUPP), 2025, TermName::Autumn).unwrap();
    assert!(feed.warnings.iter().all(|w| !w.message.contains("Q359200125006")));
}

#[test]
fn an_export_made_weeks_before_the_term_ends_is_flagged() {
    let early = AUTUMN.replace("<DateTime>2025-12-19T16:00:00", "<DateTime>2025-10-01T09:00:00");
    let feed = run(&early, Some(AUTUMN_SUPP), 2025, TermName::Autumn).unwrap();
    let w = feed.warnings.iter().find(|w| w.code == cc::EARLY_EXPORT).expect("an early_export warning");
    assert_eq!(w.element, "CTfile/Header/DateTime");
    let feed = run(AUTUMN, Some(AUTUMN_SUPP), 2025, TermName::Autumn).unwrap();
    assert!(feed.warnings.iter().all(|w| w.code != cc::EARLY_EXPORT), "19 December is the end of term");
}
