//! Reading a termly feed CSV into validated rows or a full list of violations.

use super::columns::{COLUMN_COUNT, Column};
use super::csv_reader::{Next, Reader, Record};
use super::report::{Findings, code, quote};
use super::validate::{Cells, RowValidator};
use super::{Feed, FeedError};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where each contract column sits in the file, from the header row.
struct Header {
    positions: [Option<usize>; COLUMN_COUNT],
    /// Each position's header name, for errors in columns the contract does not know.
    names: Vec<String>,
}

fn read_header(record: &Record, findings: &mut Findings) -> Header {
    let line = record.line;
    let mut positions = [None; COLUMN_COUNT];
    let mut names = Vec::with_capacity(record.len());
    for (i, raw) in record.iter().enumerate() {
        let Ok(name) = std::str::from_utf8(raw) else {
            findings.error(line, &format!("#{}", i + 1), code::INVALID_UTF8, "header cell is not valid UTF-8".into());
            names.push(format!("#{}", i + 1));
            continue;
        };
        let trimmed = name.trim_matches(' ');
        if trimmed.starts_with('\u{feff}') {
            findings.error(
                line,
                &format!("#{}", i + 1),
                code::MALFORMED_CSV,
                "a byte-order mark inside the header: the file may start with one byte-order mark, no more".into(),
            );
            names.push(format!("#{}", i + 1));
            continue;
        }
        names.push(super::report::short(trimmed).into_owned());
        match Column::from_header(name) {
            Some(c) if positions[c.index()].is_some() => findings.error(
                line,
                c.name(),
                code::DUPLICATE_COLUMN,
                format!("column {} appears more than once in the header", c.name()),
            ),
            Some(c) => positions[c.index()] = Some(i),
            None => findings.warning(
                line,
                &names[i],
                code::UNKNOWN_COLUMN,
                format!("column {} is not part of the feed contract and is ignored", quote(trimmed)),
            ),
        }
    }
    for c in Column::ALL {
        if c.required() && positions[c.index()].is_none() {
            findings.error(
                line,
                c.name(),
                code::MISSING_COLUMN,
                format!("required column {} is missing from the header", c.name()),
            );
        }
    }
    Header { positions, names }
}

/// Parses and validates a whole feed with no row limit. Every problem is reported; any
/// error rejects it all.
pub fn parse_csv(bytes: &[u8]) -> Result<Feed, super::Rejected> {
    match parse_csv_limited(bytes, usize::MAX) {
        Ok(feed) => Ok(feed),
        Err(FeedError::Rejected(r)) => Err(*r),
        Err(FeedError::TooManyRows { .. }) => unreachable!("no row limit"),
    }
}

/// Parses and validates a feed of at most `max_rows` pupil rows. A longer feed is refused as
/// soon as the limit is passed, before more of it is read: that is a resource limit of this
/// server, not a fault in the file.
pub fn parse_csv_limited(bytes: &[u8], max_rows: usize) -> Result<Feed, FeedError> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let mut findings = Findings::default();
    let mut reader = Reader::new(bytes);
    let mut record = Record::default();
    let syntax = |findings: &mut Findings, e: super::csv_reader::SyntaxError| {
        findings.error(e.line, "", code::MALFORMED_CSV, e.message);
    };
    // The first record is the header; faults before it are reported and skipped.
    let header = loop {
        match reader.next(&mut record) {
            Next::Record => break Some(read_header(&record, &mut findings)),
            Next::Error(e) => syntax(&mut findings, e),
            Next::End => {
                if findings.error_count == 0 {
                    findings.error(
                        1,
                        "",
                        code::EMPTY_FILE,
                        "the file is empty: it needs a header row and one row per pupil".into(),
                    );
                }
                break None;
            }
        }
    };
    let mut rows = Vec::new();
    let absent = header.as_ref().map_or([false; COLUMN_COUNT], |h| h.positions.map(|p| p.is_none()));
    let mut validator = RowValidator::with_absent_columns(absent);
    let mut data_rows = 0usize;
    if let Some(header) = header {
        // Which contract column each position holds, if any.
        let mut column_at: Vec<Option<usize>> = vec![None; header.names.len()];
        for (c, pos) in header.positions.iter().enumerate() {
            if let Some(p) = pos {
                column_at[*p] = Some(c);
            }
        }
        loop {
            let next = reader.next(&mut record);
            if !matches!(next, Next::End) {
                data_rows += 1;
                // Faulty lines count too, so a flood of blank lines cannot pass the limit.
                if data_rows > max_rows {
                    return Err(FeedError::TooManyRows { limit: max_rows });
                }
            }
            match next {
                Next::End => break,
                Next::Error(e) => {
                    syntax(&mut findings, e);
                    continue;
                }
                Next::Record => {}
            }
            let line = record.line;
            if record.len() != header.names.len() {
                findings.error(
                    line,
                    "",
                    code::FIELD_COUNT,
                    format!("this row has {} cells but the header has {}", record.len(), header.names.len()),
                );
                continue;
            }
            // Every cell must be UTF-8, also in columns the contract does not use; each is
            // checked once, and the contract's cells kept as text.
            let mut utf8_ok = true;
            let mut cells: Cells = [""; COLUMN_COUNT];
            for (i, raw) in record.iter().enumerate() {
                match std::str::from_utf8(raw) {
                    Ok(text) => {
                        if let Some(c) = column_at[i] {
                            cells[c] = text.trim_matches(' ');
                        }
                    }
                    Err(_) => {
                        utf8_ok = false;
                        findings.error(
                            line,
                            &header.names[i],
                            code::INVALID_UTF8,
                            "this cell is not valid UTF-8".into(),
                        );
                    }
                }
            }
            if !utf8_ok {
                continue;
            }
            if let Some(row) = validator.validate(line, &cells, &mut findings) {
                rows.push(row);
            }
        }
        if data_rows == 0 && findings.error_count == 0 {
            findings.error(2, "", code::NO_ROWS, "the file has a header but no pupil rows".into());
        }
    }
    super::finish(rows, findings, false)
}
