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

const ROW: &str = "B801200005001,5,M,WBRI,N,N,N,140,0,0,0,N,N";
const ROW2: &str = "P207000016049,5,M,WBRI,N,N,N,140,0,0,0,N,N";

fn rejected(csv: &[u8]) -> Vec<(u64, String, String)> {
    parse_csv(csv).unwrap_err().errors.into_iter().map(|e| (e.line, e.column, e.code)).collect()
}

fn err(line: u64, column: &str, code: &str) -> (u64, String, String) {
    (line, column.into(), code.into())
}

#[test]
fn huge_integers_are_out_of_range_never_saturated() {
    // Found by a hostile school: 2^64 and 10^20 were stored as 65535 and topped the cohort.
    for v in ["99999999999999999999", "18446744073709551616", "201", "65536"] {
        let row = format!("B801200005001,5,M,WBRI,N,N,N,140,{v},1,0,N,N");
        assert_eq!(rejected(format!("{H}\n{row}\n").as_bytes()), vec![err(2, "sessions_authorised", "out_of_range")]);
        let row = format!("B801200005001,5,M,WBRI,N,N,N,140,0,{v},0,N,N");
        assert_eq!(rejected(format!("{H}\n{row}\n").as_bytes()), vec![err(2, "sessions_unauthorised", "out_of_range")]);
    }
    let rej = parse_csv(format!("{H},absence_spells\n{ROW},99999999999999999999999\n").as_bytes()).unwrap_err();
    assert_eq!(rej.errors[0].code, code::OUT_OF_RANGE);
    assert!(rej.errors[0].message.contains("0–200"), "{}", rej.errors[0].message);
    // The largest accepted values fit the stored types and add up without overflow.
    let ok = feed_with(H, "B801200005001,5,M,WBRI,N,N,N,200,100,100,20,N,N").unwrap();
    assert_eq!(ok.rows[0].absent_sessions(), 200);
}

#[test]
fn crlf_files_report_the_same_lines_as_lf_files() {
    let lf = format!(
        "{H}\nB801200005001,99,M,WBRI,N,N,N,140,0,0,0,N,N\n{ROW2}\nB801200005001,5,M,WBRI,N,N,N,10,0,0,0,N,N\n"
    );
    let crlf = lf.replace('\n', "\r\n");
    let want = vec![err(2, "ncyear", "out_of_range"), err(4, "upn", "duplicate_upn")];
    assert_eq!(rejected(lf.as_bytes()), want);
    assert_eq!(rejected(crlf.as_bytes()), want, "a first-row error is on line 2, not the header");
    let warned =
        parse_csv(format!("{H}\r\n{ROW}\r\nP207000016049,5,M,WBRI,N,N,N,10,0,0,0,N,N\r\n").as_bytes()).unwrap();
    assert_eq!(at(&warned.warnings), vec![(3, "sessions_possible")]);
}

#[test]
fn a_quoted_cell_with_line_ends_keeps_later_lines_physical() {
    let csv = format!("{H},note\n{ROW},\"two\nlines\"\n{ROW2},x\nP207000016049,5,M,WBRI,N,N,N,140,0,0,0,N,N,y\n");
    // The duplicate is on physical line 5: the note spans lines 2 and 3.
    let rej = parse_csv(csv.as_bytes()).unwrap_err();
    assert_eq!(at(&rej.errors), vec![(5, "upn")]);
    assert!(rej.errors[0].message.contains("line 4"));
}

#[test]
fn the_contract_exactly_bare_cr_blank_lines_quotes_and_utf8() {
    // Bare CR line ends: one fault, not a row per line read as line 1.
    let bare = format!("{H}\r{ROW}\r");
    assert_eq!(rejected(bare.as_bytes()), vec![err(1, "", "malformed_csv")]);
    // A blank line anywhere but the one line end closing the last row.
    assert_eq!(rejected(format!("\n{H}\n{ROW}\n").as_bytes()), vec![err(1, "", "malformed_csv")]);
    assert_eq!(rejected(format!("{H}\n\n{ROW}\n").as_bytes()), vec![err(2, "", "malformed_csv")]);
    assert_eq!(rejected(format!("{H}\n{ROW}\n\n").as_bytes()), vec![err(3, "", "malformed_csv")]);
    assert!(parse_csv(format!("{H}\n{ROW}\n").as_bytes()).is_ok());
    // An unterminated quote at the end of the file.
    let open = rejected(format!("{H},note\n{ROW},\"never closed\n").as_bytes());
    assert_eq!(open, vec![err(2, "", "malformed_csv")]);
    // Quotes inside an unquoted cell, text after a closing quote.
    assert_eq!(rejected(format!("{H},note\n{ROW},a\"b\n").as_bytes()), vec![err(2, "", "malformed_csv")]);
    assert_eq!(rejected(format!("{H},note\n{ROW},\"a\"b\n").as_bytes()), vec![err(2, "", "malformed_csv")]);
    // Invalid UTF-8 in a column the contract does not know is still an error, by name.
    let bytes = [format!("{H},note\n{ROW},").as_bytes(), b"caf\xe9\n"].concat();
    assert_eq!(rejected(&bytes), vec![err(2, "note", "invalid_utf8")]);
    // Faults on several lines are all reported.
    let many = format!("{H}\n{ROW}\r\nx\"y\n\n{ROW2}\n");
    assert_eq!(rejected(many.as_bytes()).iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 4]);
}

#[test]
fn a_second_byte_order_mark_is_an_error_and_codes_ignore_case() {
    let two = format!("\u{feff}\u{feff}{H}\n{ROW}\n");
    assert_eq!(rejected(two.as_bytes())[0], err(1, "#1", "malformed_csv"));
    // Codes are matched ignoring letter case (documented in docs/termly-feed.md).
    let ok =
        feed_with(&format!("{H},cin,attainment_maths"), "B801200005001,r,m,wbri,n,y,k,140,0,0,0,no,FALSE,cla,Above")
            .expect("any case");
    let r = &ok.rows[0];
    assert_eq!(
        (r.ncyear.get(), r.sex, r.sen, r.cin),
        (0, crate::domain::Sex::M, crate::domain::Sen::K, Some(crate::domain::Cin::Cla))
    );
    assert_eq!(r.attainment_maths, Some(crate::domain::Attainment::Above));
    // UPN letters are upper case (the DfE's format), and the message says so.
    let lower = parse_csv(format!("{H}\nb801200005001,5,M,WBRI,N,N,N,140,0,0,0,N,N\n").as_bytes()).unwrap_err();
    assert!(lower.errors[0].message.contains("upper case"), "{}", lower.errors[0].message);
}

#[test]
fn a_huge_cell_is_quoted_short_in_its_message() {
    let big = "9".repeat(1 << 20);
    let rej = parse_csv(format!("{H}\nB801200005001,{big},M,WBRI,N,N,N,140,0,0,0,N,N\n").as_bytes()).unwrap_err();
    assert!(rej.errors[0].message.len() < 200, "{}", rej.errors[0].message.len());
    assert!(rej.errors[0].message.contains("1048576 characters"));
    let esc = parse_csv(format!("{H}\nB801200005001,5,\u{1b}[31m,WBRI,N,N,N,140,0,0,0,N,N\n").as_bytes()).unwrap_err();
    assert!(!esc.errors[0].message.contains('\u{1b}'), "control characters are escaped");
}

#[test]
fn the_row_limit_is_a_resource_limit_not_a_contract_error() {
    let csv = format!("{H}\n{ROW}\n{ROW2}\n");
    assert!(matches!(parse_csv_limited(csv.as_bytes(), 1), Err(FeedError::TooManyRows { limit: 1 })));
    assert!(parse_csv_limited(csv.as_bytes(), 2).is_ok());
}

#[test]
fn records_are_line_i_plus_2_whatever_their_content() {
    let row = |upn: &str, sex: &str| -> [String; COLUMN_COUNT] {
        let mut c: [String; COLUMN_COUNT] = Default::default();
        for (col, v) in [
            (Column::Upn, upn),
            (Column::Ncyear, "5"),
            (Column::Sex, sex),
            (Column::Ethnicity, "WBRI"),
            (Column::Fsm, "N"),
            (Column::Eal, "N"),
            (Column::Sen, "N"),
            (Column::SessionsPossible, "140"),
            (Column::SessionsAuthorised, "0"),
            (Column::SessionsUnauthorised, "0"),
            (Column::Suspensions, "0"),
            (Column::PermanentExclusion, "N"),
            (Column::MhReferral, "N"),
        ] {
            c[col.index()] = v.into();
        }
        c
    };
    let records = [row("B801200005001", "M\nF\nU"), row("P207000016049", "X")];
    let cells = records.iter().map(|r| std::array::from_fn(|i| r[i].as_str()));
    let Err(FeedError::Rejected(rej)) = parse_records(cells, 10) else { panic!("rejected") };
    assert_eq!(at(&rej.errors), vec![(2, "sex"), (3, "sex")]);
}

#[test]
fn a_flood_of_blank_lines_is_refused_at_the_row_limit() {
    let csv = format!("{H}\n{}", "\n".repeat(50));
    assert!(matches!(parse_csv_limited(csv.as_bytes(), 10), Err(FeedError::TooManyRows { limit: 10 })));
}
