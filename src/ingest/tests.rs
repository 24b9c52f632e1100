use super::*;

const VALID: &[u8] = include_bytes!("../../tests/fixtures/valid-feed.csv");
const INVALID: &[u8] = include_bytes!("../../tests/fixtures/invalid-feed.csv");

fn at(v: &[Violation]) -> Vec<(u64, &str)> {
    v.iter().map(|v| (v.line, v.column.as_str())).collect()
}

#[test]
fn valid_fixture_is_accepted_with_its_two_warnings() {
    let feed = parse_csv(VALID).expect("valid fixture accepted");
    assert_eq!(feed.rows.len(), 10);
    assert_eq!(at(&feed.warnings), vec![(8, "sessions_possible"), (9, "cin")]);
    assert_eq!(feed.warnings[0].code, code::FEW_SESSIONS);
    assert_eq!(feed.warnings[1].code, code::STATUTORY_CIN);
    // Line 5's " N" cell was trimmed and read as a boolean.
    assert!(!feed.rows[3].mh_referral);
    assert_eq!(feed.rows[3].school_moves, None);
}

#[test]
fn invalid_fixture_reports_every_fault_and_only_those() {
    let rej = parse_csv(INVALID).expect_err("invalid fixture rejected");
    assert_eq!(
        at(&rej.errors),
        vec![
            (2, "upn"),
            (3, "ncyear"),
            (4, "ethnicity"),
            (5, "sessions_unauthorised"),
            (6, "sen"),
            (7, "sessions_possible"),
            (9, "upn"),
            (10, "fsm"),
            (11, "sdq_emotional"),
        ]
    );
    let codes: Vec<_> = rej.errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(
        codes,
        vec![
            code::INVALID_UPN,
            code::OUT_OF_RANGE,
            code::INVALID_CODE,
            code::INCONSISTENT,
            code::INVALID_CODE,
            code::REQUIRED,
            code::DUPLICATE_UPN,
            code::INVALID_BOOLEAN,
            code::OUT_OF_RANGE,
        ]
    );
    assert!(rej.errors[6].message.contains("line 8"), "duplicate names the first line");
    assert_eq!(rej.error_count, 9);
}

fn feed_with(header: &str, row: &str) -> Result<Feed, Rejected> {
    parse_csv(format!("{header}\n{row}\n").as_bytes())
}

const H: &str = "upn,ncyear,sex,ethnicity,fsm,eal,sen,sessions_possible,sessions_authorised,sessions_unauthorised,suspensions,permanent_exclusion,mh_referral";

#[test]
fn columns_in_any_order_any_case_with_bom_crlf_and_quotes() {
    let csv = "\u{feff} MH_Referral ,Upn,NCYEAR,sex,ethnicity,fsm,eal,sen,sessions_possible,sessions_authorised,sessions_unauthorised,suspensions,permanent_exclusion,favourite_colour\r\n\
               yes,\"B801200005001\",R,f,wbri,TRUE,0,k,140,3,2,0,No,\"blue, mostly\"\r\n";
    let feed = parse_csv(csv.as_bytes()).expect("accepted");
    assert_eq!(feed.rows.len(), 1);
    let r = &feed.rows[0];
    assert!(r.mh_referral && r.fsm && !r.eal);
    assert_eq!(r.ncyear.get(), 0);
    assert_eq!(at(&feed.warnings), vec![(1, "favourite_colour")]);
}

#[test]
fn missing_required_column_and_empty_optional_cells() {
    let rej = parse_csv(b"upn,ncyear\nB801200005001,5\n").unwrap_err();
    assert!(rej.errors.iter().all(|e| e.line == 1 && e.code == code::MISSING_COLUMN));
    assert_eq!(rej.error_count, 11);
    let ok = feed_with(&format!("{H},cin,sdq_peer"), "B801200005001,5,M,WBRI,N,N,N,140,0,0,0,N,N,,").unwrap();
    assert_eq!(ok.rows[0].cin, None);
    assert_eq!(ok.rows[0].sdq_peer, None);
}

#[test]
fn cross_column_rules() {
    let h = format!("{H},absence_spells,suspension_sessions");
    let codes = |row: &str| -> Vec<(String, String)> {
        match feed_with(&h, row) {
            Ok(_) => vec![],
            Err(r) => r.errors.into_iter().map(|e| (e.column, e.code)).collect(),
        }
    };
    assert!(codes("B801200005001,5,M,WBRI,N,N,N,140,0,0,0,N,N,0,0").is_empty());
    assert_eq!(codes("B801200005001,5,M,WBRI,N,N,N,140,0,0,0,N,N,1,0")[0].0, "absence_spells");
    assert_eq!(codes("B801200005001,5,M,WBRI,N,N,N,140,2,0,0,N,N,0,0")[0].0, "absence_spells");
    assert_eq!(codes("B801200005001,5,M,WBRI,N,N,N,140,2,0,0,N,N,3,0")[0].0, "absence_spells");
    assert_eq!(codes("B801200005001,5,M,WBRI,N,N,N,140,2,0,0,N,N,1,4")[0].0, "suspension_sessions");
    assert!(codes("B801200005001,5,M,WBRI,N,N,N,140,2,0,1,N,N,1,4").is_empty());
}

#[test]
fn malformed_rows_are_reported_by_line() {
    let rej = parse_csv(format!("{H}\nB801200005001,5,M\nP207000016049,-1,M,WBRI,N,N,N,140,0,0,0,N,N\n").as_bytes())
        .unwrap_err();
    assert_eq!(at(&rej.errors), vec![(2, ""), (3, "ncyear")]);
    assert_eq!(rej.errors[0].code, code::FIELD_COUNT);
    assert_eq!(parse_csv(b"").unwrap_err().errors[0].code, code::EMPTY_FILE);
    assert_eq!(parse_csv(H.as_bytes()).unwrap_err().errors[0].code, code::NO_ROWS);
    let bad_utf8 = [H.as_bytes(), b"\nB801200005001,5,M,WB\xffI,N,N,N,140,0,0,0,N,N\n"].concat();
    assert_eq!(at(&parse_csv(&bad_utf8).unwrap_err().errors), vec![(2, "ethnicity")]);
}

#[test]
fn errors_beyond_the_listed_thousand_are_counted() {
    let mut csv = String::from(H);
    for _ in 0..1500 {
        csv.push_str("\nB801200005001,99,M,WBRI,N,N,N,140,0,0,0,N,N");
    }
    let rej = parse_csv(csv.as_bytes()).unwrap_err();
    assert_eq!(rej.errors.len(), MAX_LISTED);
    assert_eq!(rej.error_count, 1500 + 1499);
}
