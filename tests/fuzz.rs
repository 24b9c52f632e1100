//! A fuzz harness on stable Rust: seeded mutation of real inputs for the CSV validator, the
//! record-batch path and request decoding, checking properties rather than just "no panic".
//!
//! `cargo test --test fuzz` runs 100,000 cases per target (10,000 for whole rewritten files) in
//! CI. A long run:
//! `RISKID_FUZZ_CASES=10000000 cargo test --release --test fuzz -- --nocapture`.
//! `RISKID_FUZZ_SEED` picks another seed. A failing case prints its seed and case number
//! and writes the input to `target/fuzz-failures/`; add it to `REGRESSIONS` once fixed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use prost::Message;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use riskid::api::codec::{MAX_BATCH_RECORDS, MAX_PRIOR_TERMS, MAX_SCORE_PUPILS, check_wire};
use riskid::api::pb;
use riskid::ingest::{COLUMN_COUNT, FeedError, MAX_LISTED, parse_csv, parse_records};

const VALID: &[u8] = include_bytes!("fixtures/valid-feed.csv");
const INVALID: &[u8] = include_bytes!("fixtures/invalid-feed.csv");

/// Inputs that broke something once (found by the outsiders' probe or by this harness).
const REGRESSIONS: &[&[u8]] = &[
    b"upn,ncyear\r1,2\r",             // bare CR line ends: every row was line 1
    b"upn\n\"never closed\n",         // unterminated quote accepted
    b"\n\nupn,ncyear\n",              // leading blank lines accepted
    b"upn,x\nB801200005001,\xff\n",   // invalid UTF-8 in an unknown column
    b"upn\r\n\"a\r\nb\"\r\n",         // CRLF inside a quoted cell
    b"\xef\xbb\xbf\xef\xbb\xbfupn\n", // a second byte-order mark
    b"upn,sessions_authorised\nB801200005001,99999999999999999999\n", // saturated to 65535
    b"\"",
    b"\r",
    b",\"\"\"",
];

fn cases() -> u64 {
    std::env::var("RISKID_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn seed() -> u64 {
    std::env::var("RISKID_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261201)
}

/// Runs `cases` inputs through `check`, reporting the first failure with its input.
fn run(target: &str, make: impl FnMut(&mut ChaCha8Rng) -> Vec<u8>, check: impl Fn(&[u8])) {
    run_n(target, cases(), make, check)
}

fn run_n(target: &str, n: u64, mut make: impl FnMut(&mut ChaCha8Rng) -> Vec<u8>, check: impl Fn(&[u8])) {
    let s = seed();
    let mut rng = ChaCha8Rng::seed_from_u64(s ^ target.len() as u64);
    let (started, mut slowest) = (Instant::now(), Duration::ZERO);
    for case in 0..n {
        let input = make(&mut rng);
        let t = Instant::now();
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{target}-{s}-{case}.bin"));
            let _ = std::fs::write(&path, &input);
            panic!("{target}: case {case} (seed {s}) failed; input written to {}", path.display());
        }
        slowest = slowest.max(t.elapsed());
    }
    // A hang would show as a case far slower than the rest; inputs are at most ~64 KB.
    assert!(slowest < Duration::from_secs(2), "{target}: slowest case took {slowest:?}");
    println!(
        "fuzz {target}: {n} cases, 0 failures, {:.1} s, slowest case {:.2} ms (seed {s})",
        started.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
}

const SPECIAL: &[&[u8]] = &[
    b"\"",
    b",",
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"\xff",
    b"\xc3",
    b"\xef\xbb\xbf",
    b"\"\"",
    b"0",
    b"9",
    b"99999999999999999999",
    b"18446744073709551616",
    b"-1",
    b"Y",
    b"CLA",
    b"R",
    b"\x00",
    b"\x1b[2J",
];

/// A mutation of a seed file: the structure stays mostly intact, so deep paths are reached.
fn mutate(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let at = if v.is_empty() { 0 } else { rng.random_range(0..=v.len()) };
        match rng.random_range(0..6) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = rng.random();
            }
            1 => {
                let s = SPECIAL[rng.random_range(0..SPECIAL.len())];
                v.splice(at..at, s.iter().copied());
            }
            2 if !v.is_empty() => {
                let end = (at + rng.random_range(1..40)).min(v.len());
                v.drain(at.min(end)..end);
            }
            3 if !v.is_empty() => {
                // Duplicate a span (repeated rows, repeated UPNs).
                let start = at.min(v.len() - 1);
                let end = (start + rng.random_range(1..200)).min(v.len());
                let span = v[start..end].to_vec();
                v.splice(start..start, span);
            }
            4 => v.truncate(at),
            _ => {
                let mut junk = vec![0u8; rng.random_range(1..16)];
                rng.fill_bytes(&mut junk);
                v.splice(at..at, junk);
            }
        }
    }
    v
}

fn csv_input(rng: &mut ChaCha8Rng) -> Vec<u8> {
    match rng.random_range(0..10) {
        0 => REGRESSIONS[rng.random_range(0..REGRESSIONS.len())].to_vec(),
        1..=4 => mutate(rng, VALID),
        5..=6 => mutate(rng, INVALID),
        7 => {
            let crlf = String::from_utf8_lossy(VALID).replace('\n', "\r\n").into_bytes();
            mutate(rng, &crlf)
        }
        _ => {
            let mut v = vec![0u8; rng.random_range(0..256)];
            let alphabet = b"ab,\"\r\n 01Y";
            for b in &mut v {
                *b = alphabet[rng.random_range(0..alphabet.len())];
            }
            v
        }
    }
}

static ACCEPTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Properties of every feed, accepted or not.
fn check_csv(input: &[u8]) {
    let lines = input.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    match parse_csv(input) {
        Ok(feed) => {
            ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(!feed.rows.is_empty());
            let mut upns: Vec<_> = feed.rows.iter().map(|r| r.upn.as_str().to_owned()).collect();
            upns.sort();
            upns.dedup();
            assert_eq!(upns.len(), feed.rows.len(), "accepted a duplicate UPN");
            for r in &feed.rows {
                assert!(r.sessions_authorised as u32 + r.sessions_unauthorised as u32 <= r.sessions_possible as u32);
                assert!(r.sessions_possible <= 200);
            }
            // What was accepted round-trips exactly through the contract's CSV.
            let again = parse_csv(&riskid::synth::feed_csv(&feed.rows)).expect("a re-rendered feed is valid");
            assert_eq!(again.rows, feed.rows);
            assert!(feed.warnings.iter().all(|w| w.line >= 1 && w.line <= lines));
        }
        Err(rej) => {
            assert!(rej.error_count >= rej.errors.len() && rej.error_count > 0);
            assert!(rej.errors.len() <= MAX_LISTED);
            for w in rej.errors.windows(2) {
                assert!(w[0].line <= w[1].line, "errors are in file order");
            }
            for e in &rej.errors {
                assert!(e.line >= 1 && e.line <= lines.max(2), "line {} of {lines}", e.line);
                assert!(e.message.len() < 400, "messages are short");
                assert!(!e.message.chars().any(|c| c.is_control()), "messages never carry control characters");
                assert!(!e.column.chars().any(|c| c.is_control()));
            }
        }
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, options: &[&'a str]) -> &'a str {
    options[rng.random_range(0..options.len())]
}

fn number(rng: &mut ChaCha8Rng) -> Option<u64> {
    match rng.random_range(0..8) {
        0 => None,
        1 => Some(rng.random()),
        2 => Some(u64::MAX),
        3 => Some((1 << 32) + rng.random_range(0..300)),
        _ => Some(rng.random_range(0..250)),
    }
}

fn flag(rng: &mut ChaCha8Rng) -> Option<bool> {
    [None, Some(true), Some(false)][rng.random_range(0..3)]
}

fn record(rng: &mut ChaCha8Rng) -> pb::PupilRecord {
    let upns = ["B801200005001", "P207000016049", "C820123424001", "B82012342401A", "Q207000016049", "", "x\ny"];
    pb::PupilRecord {
        upn: pick(rng, &upns).into(),
        ncyear: pick(rng, &["R", "1", "7", "13", "14", "", " 5 ", "N1"]).into(),
        sex: pick(rng, &["M", "F", "U", "m", "", "X", "M\nF"]).into(),
        ethnicity: pick(rng, &["WBRI", "bafr", "", "ZZZZ"]).into(),
        fsm: flag(rng),
        eal: flag(rng),
        sen: pick(rng, &["N", "K", "E", "", "Q"]).into(),
        cin: pick(rng, &["", "CIN", "CPP", "CLA", "no"]).into(),
        young_carer: flag(rng),
        school_moves: number(rng),
        sessions_possible: number(rng),
        sessions_authorised: number(rng),
        sessions_unauthorised: number(rng),
        absence_spells: number(rng),
        suspensions: number(rng),
        suspension_sessions: number(rng),
        permanent_exclusion: flag(rng),
        behaviour_incidents: number(rng),
        attainment_english: pick(rng, &["", "below", "Expected", "above", "great"]).into(),
        attainment_maths: pick(rng, &["", "below", "expected", "ABOVE"]).into(),
        sdq_emotional: number(rng),
        sdq_conduct: number(rng),
        sdq_hyperactivity: number(rng),
        sdq_peer: number(rng),
        sdq_prosocial: number(rng),
        mh_referral: flag(rng),
    }
}

#[test]
fn fuzz_csv_validator() {
    for r in REGRESSIONS {
        check_csv(r);
    }
    run("csv", csv_input, check_csv);
    let accepted = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed);
    println!("fuzz csv: {accepted} mutated inputs still accepted, the rest rejected");
}

/// Rewrites the valid fixture in ways the contract says mean the same: columns in another
/// order and letter case, spaces around cells, quoted cells, CRLF, a byte-order mark, no
/// final line end. Every such file must be accepted with exactly the same rows.
fn equivalent(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let text = std::str::from_utf8(VALID).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    let mut order: Vec<usize> = (0..rows[0].len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let crlf = rng.random_bool(0.5);
    let mut out = String::new();
    if rng.random_bool(0.3) {
        out.push('\u{feff}');
    }
    for (n, row) in rows.iter().enumerate() {
        let cells: Vec<String> = order
            .iter()
            .map(|&i| {
                let mut c = row[i].to_string();
                if n == 0 && rng.random_bool(0.3) {
                    c = c.to_ascii_uppercase();
                }
                if rng.random_bool(0.2) {
                    c = format!("\"{}\"", c.trim());
                }
                if rng.random_bool(0.2) {
                    c = format!("  {c} ");
                }
                c
            })
            .collect();
        out.push_str(&cells.join(","));
        if n + 1 < rows.len() || rng.random_bool(0.7) {
            out.push_str(if crlf { "\r\n" } else { "\n" });
        }
    }
    out.into_bytes()
}

#[test]
fn fuzz_csv_equivalent_files() {
    let want = parse_csv(VALID).unwrap();
    // Each case builds a whole file, so a tenth as many.
    run_n("csv-equivalent", cases() / 10, equivalent, |input| {
        let got = parse_csv(input).unwrap_or_else(|r| panic!("an equivalent file was rejected: {:?}", r.errors));
        assert_eq!(got.rows, want.rows);
        assert_eq!(
            got.warnings.iter().map(|w| (w.line, &w.code)).collect::<Vec<_>>(),
            want.warnings.iter().map(|w| (w.line, &w.code)).collect::<Vec<_>>()
        );
    });
}

#[test]
fn fuzz_record_batches() {
    run(
        "records",
        |rng| pb::RecordBatch { records: (0..rng.random_range(0..6)).map(|_| record(rng)).collect() }.encode_to_vec(),
        |bytes| {
            let batch = pb::RecordBatch::decode(bytes).unwrap();
            let cells: Vec<[String; COLUMN_COUNT]> = batch.records.iter().map(riskid::api::record_cells).collect();
            let trimmed = cells.iter().map(|c| std::array::from_fn(|i| c[i].trim_matches(' ')));
            match parse_records(trimmed, 10_000) {
                Ok(feed) => {
                    assert_eq!(feed.rows.len(), batch.records.len());
                    let again = parse_csv(&riskid::synth::feed_csv(&feed.rows)).expect("re-rendered rows are valid");
                    assert_eq!(again.rows, feed.rows);
                    for (r, p) in feed.rows.iter().zip(&batch.records) {
                        assert_eq!(Some(u64::from(r.sessions_authorised)), p.sessions_authorised, "no wrap-around");
                    }
                }
                Err(FeedError::Rejected(rej)) => {
                    let last = batch.records.len() as u64 + 1;
                    assert!(rej.errors.iter().all(|e| (2..=last.max(2)).contains(&e.line)), "record i is line i + 2");
                }
                Err(FeedError::TooManyRows { .. }) => panic!("under the limit"),
            }
        },
    );
}

/// Either a mutated valid request or a small hostile one built from runs of empty entries.
fn request_bytes(rng: &mut ChaCha8Rng) -> (bool, Vec<u8>) {
    let score = rng.random_bool(0.5);
    let base = if score {
        let pupil = |rng: &mut ChaCha8Rng| pb::PupilToScore {
            school_term: None,
            record: Some(record(rng)),
            prior_terms: (0..rng.random_range(0..3))
                .map(|_| pb::PriorTerm { school_term: None, record: None })
                .collect(),
        };
        pb::ScoreRecordsRequest { pupils: (0..rng.random_range(0..4)).map(|_| pupil(rng)).collect(), view: 0 }
            .encode_to_vec()
    } else {
        use pb::submit_feed_request::Part;
        let part = match rng.random_range(0..3) {
            0 => Part::CsvChunk(VALID[..rng.random_range(0..VALID.len())].to_vec()),
            1 => Part::Records(pb::RecordBatch { records: (0..rng.random_range(0..4)).map(|_| record(rng)).collect() }),
            _ => Part::Header(pb::SubmissionHeader::default()),
        };
        pb::SubmitFeedRequest { part: Some(part) }.encode_to_vec()
    };
    let bytes = match rng.random_range(0..16) {
        // Runs of empty entries around the limits, by hand as a hostile client sends them.
        0 => {
            let n = [MAX_SCORE_PUPILS, MAX_BATCH_RECORDS, MAX_PRIOR_TERMS][rng.random_range(0..3)]
                + rng.random_range(0..3)
                - 1;
            let inner = if rng.random_bool(0.5) { [0x1a_u8, 0x00].repeat(n) } else { [0x0a_u8, 0x00].repeat(n) };
            let mut v = vec![if score { 0x0a } else { 0x1a }];
            prost::encoding::encode_varint(inner.len() as u64, &mut v);
            v.extend(inner);
            if score && rng.random_bool(0.5) { [0x0a_u8, 0x00].repeat(n) } else { v }
        }
        1..=3 => base,
        _ => mutate(rng, &base),
    };
    (score, [vec![score as u8], bytes].concat())
}

#[test]
fn fuzz_request_decoding() {
    run(
        "decode",
        |rng| request_bytes(rng).1,
        |input| {
            let (score, bytes) = (input[0] == 1, &input[1..]);
            // Whatever passes the wire check and decodes is within every limit.
            if score {
                let wire = check_wire("riskid.v1.ScoreRecordsRequest", bytes);
                if let (Ok(()), Ok(req)) = (wire, pb::ScoreRecordsRequest::decode(bytes)) {
                    assert!(req.pupils.len() <= MAX_SCORE_PUPILS);
                    assert!(req.pupils.iter().all(|p| p.prior_terms.len() <= MAX_PRIOR_TERMS));
                }
            } else {
                let wire = check_wire("riskid.v1.SubmitFeedRequest", bytes);
                if let (Ok(()), Ok(req)) = (wire, pb::SubmitFeedRequest::decode(bytes))
                    && let Some(pb::submit_feed_request::Part::Records(b)) = req.part
                {
                    assert!(b.records.len() <= MAX_BATCH_RECORDS, "{} records passed", b.records.len());
                }
            }
        },
    );
}
