//! A strict RFC 4180 reader for the feed contract.
//!
//! The `csv` crate is deliberately lenient (a bare `\r` ends a record, a quote inside an
//! unquoted field is data, an unterminated quote runs to the end of the file) and counts
//! lines in a way that does not match what a data manager sees in an editor. The contract
//! needs the opposite: exactly `\n` or `\r\n` line ends, quotes only around whole cells, and
//! physical line numbers (counting `\n`), also when a quoted cell spans lines. So this small
//! reader does the tokenising and reports each syntax fault with its line, then resumes at
//! the next line so that every fault in the file is reported at once.

/// One record: its fields (unquoted, `""` unescaped) and the physical line it starts on.
#[derive(Debug, Default)]
pub struct Record {
    pub line: u64,
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Record {
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }
    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
    fn end_field(&mut self) {
        self.ends.push(self.buf.len());
    }
}

/// A syntax fault on one line. After it the reader resumes at the next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: u64,
    pub message: String,
}

pub enum Next {
    Record,
    Error(SyntaxError),
    End,
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Physical line (1-based) at `pos`.
    line: u64,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0, line: 1 }
    }

    /// Skips to just after the next `\n` (or the end), so reading resumes on a fresh line.
    fn resync(&mut self) {
        match self.bytes[self.pos..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                self.line += 1;
            }
            None => self.pos = self.bytes.len(),
        }
    }

    fn fault(&mut self, line: u64, message: impl Into<String>) -> Next {
        self.resync();
        Next::Error(SyntaxError { line, message: message.into() })
    }

    /// Reads the next record into `rec`.
    pub fn next(&mut self, rec: &mut Record) -> Next {
        rec.clear();
        let b = self.bytes;
        if self.pos >= b.len() {
            return Next::End;
        }
        rec.line = self.line;
        let start_line = self.line;
        // A line with nothing on it is not a row; only the file's last line end may be bare.
        if b[self.pos] == b'\n' || (b[self.pos] == b'\r' && b.get(self.pos + 1) == Some(&b'\n')) {
            return self
                .fault(start_line, "this line is blank: remove empty lines (only the file's last line may end it)");
        }
        loop {
            // Start of a field: optional spaces, then a quoted or an unquoted cell.
            let field_start = rec.buf.len();
            let mut p = self.pos;
            while p < b.len() && b[p] == b' ' {
                p += 1;
            }
            if p < b.len() && b[p] == b'"' {
                // Quoted: anything up to the closing quote; `""` is one quote.
                let opened = self.line;
                p += 1;
                loop {
                    let Some(i) = b[p..].iter().position(|&c| c == b'"' || c == b'\n') else {
                        self.pos = b.len();
                        return Next::Error(SyntaxError {
                            line: opened,
                            message:
                                "a quoted cell that starts on this line is never closed: add the closing quote (\")"
                                    .into(),
                        });
                    };
                    rec.buf.extend_from_slice(&b[p..p + i]);
                    p += i;
                    if b[p] == b'\n' {
                        rec.buf.push(b'\n');
                        self.line += 1;
                        p += 1;
                    } else if b.get(p + 1) == Some(&b'"') {
                        rec.buf.push(b'"');
                        p += 2;
                    } else {
                        p += 1;
                        break;
                    }
                }
                while p < b.len() && b[p] == b' ' {
                    p += 1;
                }
                if p < b.len() && !matches!(b[p], b',' | b'\n' | b'\r') {
                    self.pos = p;
                    return self.fault(
                        self.line,
                        "text follows a closing quote: a quoted cell must end at a comma or the line end",
                    );
                }
            } else {
                // Unquoted: up to a comma or the line end; it may not contain a quote.
                rec.buf.truncate(field_start);
                let end = b[self.pos..].iter().position(|&c| matches!(c, b',' | b'\n' | b'\r' | b'"'));
                let end = end.map_or(b.len(), |i| self.pos + i);
                rec.buf.extend_from_slice(&b[self.pos..end]);
                p = end;
                if p < b.len() && b[p] == b'"' {
                    self.pos = p;
                    return self.fault(
                        self.line,
                        "a quote (\") inside an unquoted cell: quote the whole cell and double any quote in it",
                    );
                }
            }
            rec.end_field();
            // After a field: a comma, a line end, or the end of the file.
            if p >= b.len() {
                self.pos = p;
                return Next::Record;
            }
            match b[p] {
                b',' => self.pos = p + 1,
                b'\n' => {
                    self.pos = p + 1;
                    self.line += 1;
                    return Next::Record;
                }
                b'\r' if b.get(p + 1) == Some(&b'\n') => {
                    self.pos = p + 2;
                    self.line += 1;
                    return Next::Record;
                }
                _ => {
                    // A carriage return not followed by a line feed.
                    self.pos = p;
                    return self.fault(
                        self.line,
                        "a carriage return (\\r) without a line feed: lines must end with \\n or \\r\\n",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record or fault: `Ok((line, fields))` or `Err((line, message start))`.
    fn read(input: &str) -> Vec<Result<(u64, Vec<String>), u64>> {
        let mut r = Reader::new(input.as_bytes());
        let mut rec = Record::default();
        let mut out = Vec::new();
        loop {
            match r.next(&mut rec) {
                Next::End => return out,
                Next::Record => {
                    out.push(Ok((rec.line, rec.iter().map(|f| String::from_utf8(f.to_vec()).unwrap()).collect())))
                }
                Next::Error(e) => out.push(Err(e.line)),
            }
        }
    }

    fn rec(line: u64, fields: &[&str]) -> Result<(u64, Vec<String>), u64> {
        Ok((line, fields.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn lf_and_crlf_give_the_same_records_and_lines() {
        let want = vec![rec(1, &["a", "b"]), rec(2, &["1", "2"]), rec(3, &["3", ""])];
        assert_eq!(read("a,b\n1,2\n3,\n"), want);
        assert_eq!(read("a,b\r\n1,2\r\n3,\r\n"), want);
        assert_eq!(read("a,b\r\n1,2\r\n3,"), want, "the last line end is optional");
    }

    #[test]
    fn quoted_cells_may_hold_commas_quotes_and_line_ends() {
        assert_eq!(
            read("a,b\n\"x,\"\"y\"\"\",\"two\nlines\"\n1,2\n"),
            vec![rec(1, &["a", "b"]), rec(2, &["x,\"y\"", "two\nlines"]), rec(4, &["1", "2"])]
        );
        assert_eq!(read("a\n  \"q\"  \n"), vec![rec(1, &["a"]), rec(2, &["q"])], "spaces around quotes");
    }

    #[test]
    fn faults_are_reported_on_their_line_and_reading_resumes() {
        // Bare CR, quote inside a cell, text after a closing quote, a blank line.
        assert_eq!(read("a\rb\n1\n"), vec![Err(1), rec(2, &["1"])]);
        assert_eq!(read("a\nx\"y\n2\n"), vec![rec(1, &["a"]), Err(2), rec(3, &["2"])]);
        assert_eq!(read("a\n\"x\"y\n2\n"), vec![rec(1, &["a"]), Err(2), rec(3, &["2"])]);
        assert_eq!(read("a\n\n2\n"), vec![rec(1, &["a"]), Err(2), rec(3, &["2"])]);
        assert_eq!(read("\r\na\n"), vec![Err(1), rec(2, &["a"])]);
        assert_eq!(read("a\n2\n\n"), vec![rec(1, &["a"]), rec(2, &["2"]), Err(3)]);
    }

    #[test]
    fn an_unterminated_quote_is_reported_where_it_opened() {
        assert_eq!(read("a\n\"open\nmore\nrows\n"), vec![rec(1, &["a"]), Err(2)]);
    }

    #[test]
    fn an_unclosed_quote_is_reported_on_the_line_where_its_cell_starts() {
        // Found in review: the cell opens on line 3, inside a record that starts on line 2.
        assert_eq!(read("a,b\n\"a\nb\",\"open\nx\n"), vec![rec(1, &["a", "b"]), Err(3)]);
    }

    #[test]
    fn bare_cr_files_are_one_fault_not_one_row() {
        assert_eq!(read("a,b\r1,2\r3,4\r"), vec![Err(1)]);
    }
}
