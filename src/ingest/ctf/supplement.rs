//! The supplement: a CSV keyed by UPN with what a CTF does not carry.

use std::collections::HashMap;

use super::super::columns::Column;
use super::super::csv_reader::{Next, Reader, Record};
use super::super::report::{Findings, Part, Place, code, quote};
use super::ctf_code as cc;

/// The contract columns a supplement may carry (besides `upn`): those a CTF lacks, and the
/// current teacher assessment of attainment (a CTF holds only end-of-key-stage results).
pub const SUPPLEMENT_COLUMNS: [Column; 14] = [
    Column::Cin,
    Column::YoungCarer,
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

pub struct Row {
    pub line: u64,
    pub upn: String,
    /// The supplement's cells for the columns it has (trimmed; empty = not known).
    pub cells: Vec<(Column, String)>,
}

#[derive(Default)]
pub struct Supplement {
    pub rows: Vec<Row>,
    /// UPN → index in `rows`.
    pub index: HashMap<String, usize>,
    /// The contract columns its header has.
    pub columns: Vec<Column>,
}

fn at(line: u64) -> Place {
    Place { part: Part::Supplement, line, element: String::new() }
}

/// Reads the supplement; `None` once it has more than `max_rows` rows (the server's limit on
/// a feed's rows applies to it too).
pub fn read(bytes: &[u8], max_rows: usize, f: &mut Findings) -> Option<Supplement> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = Reader::new(bytes);
    let mut record = Record::default();
    let mut out = Supplement::default();
    // Header.
    let header = loop {
        match reader.next(&mut record) {
            Next::Record => break header(&record, f),
            Next::Error(e) => f.error_at(&at(e.line), "", code::MALFORMED_CSV, e.message),
            Next::End => {
                f.error_at(&at(1), "", code::EMPTY_FILE, "the supplement is empty: it needs a header row".into());
                break None;
            }
        }
    };
    let Some((upn_pos, cols, width)) = header else { return Some(out) };
    out.columns = cols.iter().map(|(c, _)| *c).collect();
    let mut count = 0usize;
    loop {
        let next = reader.next(&mut record);
        if !matches!(next, Next::End) {
            count += 1;
            if count > max_rows {
                return None;
            }
        }
        match next {
            Next::End => break,
            Next::Error(e) => {
                f.error_at(&at(e.line), "", code::MALFORMED_CSV, e.message);
                continue;
            }
            Next::Record => {}
        }
        let line = record.line;
        if record.len() != width {
            f.error_at(
                &at(line),
                "",
                code::FIELD_COUNT,
                format!("this row has {} cells but the header has {width}", record.len()),
            );
            continue;
        }
        let cell = |i: usize| std::str::from_utf8(record.get(i)).map(|s| s.trim_matches(' ').to_owned());
        let Ok(upn) = cell(upn_pos) else {
            f.error_at(&at(line), "upn", code::INVALID_UTF8, "this cell is not valid UTF-8".into());
            continue;
        };
        let mut cells = Vec::with_capacity(cols.len());
        let mut ok = true;
        for &(c, pos) in &cols {
            match cell(pos) {
                Ok(v) => cells.push((c, v)),
                Err(_) => {
                    ok = false;
                    f.error_at(&at(line), c.name(), code::INVALID_UTF8, "this cell is not valid UTF-8".into());
                }
            }
        }
        if !ok {
            continue;
        }
        if upn.is_empty() {
            f.error_at(&at(line), "upn", code::REQUIRED, "upn is required and is empty".into());
            continue;
        }
        if let Some(&first) = out.index.get(&upn) {
            let first_line = out.rows[first].line;
            f.error_at(
                &at(line),
                "upn",
                code::DUPLICATE_UPN,
                format!("UPN {} is already on supplement line {first_line}", quote(&upn)),
            );
            continue;
        }
        out.index.insert(upn.clone(), out.rows.len());
        out.rows.push(Row { line, upn, cells });
    }
    Some(out)
}

type Header = (usize, Vec<(Column, usize)>, usize);

fn header(record: &Record, f: &mut Findings) -> Option<Header> {
    let line = record.line;
    let mut upn = None;
    let mut cols: Vec<(Column, usize)> = Vec::new();
    for (i, raw) in record.iter().enumerate() {
        let Ok(name) = std::str::from_utf8(raw) else {
            f.error_at(&at(line), &format!("#{}", i + 1), code::INVALID_UTF8, "header cell is not valid UTF-8".into());
            continue;
        };
        let name = name.trim_matches(' ').trim_start_matches('\u{feff}');
        match Column::from_header(name) {
            Some(Column::Upn) if upn.is_none() => upn = Some(i),
            Some(c) if c == Column::Upn || cols.iter().any(|(d, _)| *d == c) => f.error_at(
                &at(line),
                c.name(),
                code::DUPLICATE_COLUMN,
                format!("column {} appears more than once in the header", c.name()),
            ),
            Some(c) if SUPPLEMENT_COLUMNS.contains(&c) => cols.push((c, i)),
            Some(c) => f.warning_at(
                &at(line),
                c.name(),
                cc::IGNORED_COLUMN,
                format!("column {} comes from the CTF; the supplement's copy is ignored", c.name()),
            ),
            None => f.warning_at(
                &at(line),
                &crate::ingest::report::short(name),
                code::UNKNOWN_COLUMN,
                format!("column {} is not part of the feed contract and is ignored", quote(name)),
            ),
        }
    }
    if upn.is_none() {
        f.error_at(&at(line), "upn", code::MISSING_COLUMN, "the supplement needs a upn column".into());
    }
    for c in SUPPLEMENT_COLUMNS {
        if c.required() && !cols.iter().any(|(d, _)| *d == c) {
            f.error_at(
                &at(line),
                c.name(),
                code::MISSING_COLUMN,
                format!(
                    "required column {} is missing from the supplement's header (a CTF does not carry it)",
                    c.name()
                ),
            );
        }
    }
    upn.map(|u| (u, cols, record.len()))
}
