//! Reading a termly feed CSV into validated rows or a full list of violations.

use super::columns::{COLUMN_COUNT, Column};
use super::report::{Findings, code};
use super::validate::{Cells, RowValidator};
use super::{Feed, Rejected};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where each contract column sits in the file, from the header row.
struct Header {
    positions: [Option<usize>; COLUMN_COUNT],
    width: usize,
}

fn read_header(record: &csv::ByteRecord, findings: &mut Findings) -> Header {
    let mut positions = [None; COLUMN_COUNT];
    for (i, raw) in record.iter().enumerate() {
        let Ok(name) = std::str::from_utf8(raw) else {
            findings.error(1, &format!("#{}", i + 1), code::INVALID_UTF8, "header cell is not valid UTF-8".into());
            continue;
        };
        match Column::from_header(name) {
            Some(c) if positions[c.index()].is_some() => findings.error(
                1,
                c.name(),
                code::DUPLICATE_COLUMN,
                format!("column {} appears more than once in the header", c.name()),
            ),
            Some(c) => positions[c.index()] = Some(i),
            None => findings.warning(
                1,
                name.trim_matches(' '),
                code::UNKNOWN_COLUMN,
                format!("column {:?} is not part of the feed contract and is ignored", name.trim_matches(' ')),
            ),
        }
    }
    for c in Column::ALL {
        if c.required() && positions[c.index()].is_none() {
            findings.error(
                1,
                c.name(),
                code::MISSING_COLUMN,
                format!("required column {} is missing from the header", c.name()),
            );
        }
    }
    Header { positions, width: record.len() }
}

/// Parses and validates a whole feed. Every problem is reported; any error rejects it all.
pub fn parse_csv(bytes: &[u8]) -> Result<Feed, Rejected> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let mut findings = Findings::default();
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let header = match reader.read_byte_record(&mut record) {
        Ok(true) => Some(read_header(&record, &mut findings)),
        Ok(false) => {
            findings.error(
                1,
                "",
                code::EMPTY_FILE,
                "the file is empty: it needs a header row and one row per pupil".into(),
            );
            None
        }
        Err(e) => {
            findings.error(1, "", code::MALFORMED_CSV, format!("the header row cannot be read as CSV: {e}"));
            None
        }
    };
    let mut rows = Vec::new();
    let absent = header.as_ref().map_or([false; COLUMN_COUNT], |h| h.positions.map(|p| p.is_none()));
    let mut validator = RowValidator::with_absent_columns(absent);
    let mut data_rows = 0u64;
    if let Some(header) = header {
        loop {
            let line = reader.position().line();
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    findings.error(line, "", code::MALFORMED_CSV, format!("this row cannot be read as CSV: {e}"));
                    break;
                }
            }
            // Blank lines between records are not rows.
            if record.len() == 1 && record[0].iter().all(|&b| b == b' ') {
                continue;
            }
            let line = record.position().map_or(line, |p| p.line());
            data_rows += 1;
            if record.len() != header.width {
                findings.error(
                    line,
                    "",
                    code::FIELD_COUNT,
                    format!("this row has {} cells but the header has {}", record.len(), header.width),
                );
                continue;
            }
            let mut cells: Cells = [""; COLUMN_COUNT];
            let mut utf8_ok = true;
            for c in Column::ALL {
                if let Some(pos) = header.positions[c.index()] {
                    match std::str::from_utf8(&record[pos]) {
                        Ok(s) => cells[c.index()] = s.trim_matches(' '),
                        Err(_) => {
                            utf8_ok = false;
                            findings.error(line, c.name(), code::INVALID_UTF8, "this cell is not valid UTF-8".into());
                        }
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
    super::finish(rows, findings)
}
