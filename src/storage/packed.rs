//! A submission's pupil rows, or its scores under one model, kept as one record: an `entries`
//! blob of fixed-width entries in UPN order (each pupil's UPN, how its bytes are encoded,
//! where they are, and for scores the columns ranking reads) and a `data` blob of each
//! pupil's stored bytes, in the same order. A feed is then one insert, not one per pupil
//! (each with its own index updates), and a reader finds one pupil by binary search over the
//! entries without decoding the others.
//!
//! Each pupil's bytes are exactly what a per-pupil row held before (postcard, or JSON for
//! what releases before schema 5 wrote), so digests over them are unchanged.

use super::{StoreError, StoreResult};

/// Every UPN is 13 characters (checked when a feed is read, and again here).
pub const UPN_LEN: usize = 13;
/// UPN, format, offset (u32 LE), length (u32 LE).
const BASE: usize = UPN_LEN + 1 + 4 + 4;
/// Columns kept with each score: priority, year group, statutory status, and the three
/// outcomes' probabilities, as f64 bits (LE).
pub const COLUMNS: usize = 6;

/// How a pupil's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Postcard = 0,
    /// Written as JSON text by releases before schema 5.
    Json = 1,
}

impl Format {
    /// The format a stored byte names, if any.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Format::Postcard),
            1 => Some(Format::Json),
            _ => None,
        }
    }
}

/// What a packed record holds per pupil besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rows,
    Scores,
}

impl Kind {
    fn width(self) -> usize {
        match self {
            Kind::Rows => BASE,
            Kind::Scores => BASE + 8 * COLUMNS,
        }
    }
}

/// Builds a packed record from pupils given in any order (sorted here, by UPN bytes: the
/// order SQLite's default collation gave per-pupil rows).
pub fn pack<'a>(
    kind: Kind,
    pupils: impl IntoIterator<Item = (&'a str, Format, &'a [u8], [f64; COLUMNS])>,
) -> StoreResult<(Vec<u8>, Vec<u8>)> {
    let mut pupils: Vec<_> = pupils.into_iter().collect();
    pupils.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if pupils.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(StoreError::Corrupt("a pupil twice in one submission".into()));
    }
    let mut entries = Vec::with_capacity(pupils.len() * kind.width());
    let mut data = Vec::with_capacity(pupils.iter().map(|p| p.2.len()).sum());
    for (upn, format, bytes, columns) in pupils {
        if upn.len() != UPN_LEN || !upn.is_ascii() {
            return Err(StoreError::Corrupt("a UPN that is not 13 characters".into()));
        }
        let offset = u32::try_from(data.len()).map_err(|_| StoreError::Corrupt("a submission over 4 GiB".into()))?;
        let len = u32::try_from(bytes.len()).map_err(|_| StoreError::Corrupt("a pupil over 4 GiB".into()))?;
        entries.extend_from_slice(upn.as_bytes());
        entries.push(format as u8);
        entries.extend_from_slice(&offset.to_le_bytes());
        entries.extend_from_slice(&len.to_le_bytes());
        if kind == Kind::Scores {
            for c in columns {
                entries.extend_from_slice(&c.to_bits().to_le_bytes());
            }
        }
        data.extend_from_slice(bytes);
    }
    Ok((entries, data))
}

/// A packed record as read back: checked once, then read by index.
#[derive(Debug, Clone)]
pub struct Packed {
    kind: Kind,
    entries: Vec<u8>,
    data: Vec<u8>,
}

/// One pupil of a packed record.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub upn: &'a str,
    pub format: Format,
    pub bytes: &'a [u8],
    /// Scores only (zeros for rows).
    pub columns: [f64; COLUMNS],
}

impl Packed {
    /// Checks the record's shape: whole entries, UPNs in order, every pupil's bytes within
    /// the data. A record changed by hand so that it no longer fits is corrupt, not a panic.
    pub fn new(kind: Kind, entries: Vec<u8>, data: Vec<u8>) -> StoreResult<Self> {
        let corrupt = |m: &str| StoreError::Corrupt(format!("a packed {kind:?} record: {m}"));
        if !entries.len().is_multiple_of(kind.width()) {
            return Err(corrupt("entries of the wrong length"));
        }
        let p = Self { kind, entries, data };
        let mut last: Option<&[u8]> = None;
        for i in 0..p.len() {
            let e = p.raw(i);
            let upn = &e[..UPN_LEN];
            if !upn.is_ascii() || last.is_some_and(|l| l >= upn) {
                return Err(corrupt("UPNs out of order"));
            }
            last = Some(upn);
            if e[UPN_LEN] > 1 {
                return Err(corrupt("an unknown format"));
            }
            let (off, len) = Self::span(e);
            if off.checked_add(len).is_none_or(|end| end > p.data.len()) {
                return Err(corrupt("bytes outside the data"));
            }
        }
        Ok(p)
    }

    pub fn len(&self) -> usize {
        self.entries.len() / self.kind.width()
    }

    fn raw(&self, i: usize) -> &[u8] {
        let w = self.kind.width();
        &self.entries[i * w..(i + 1) * w]
    }

    fn span(e: &[u8]) -> (usize, usize) {
        let off = u32::from_le_bytes(e[UPN_LEN + 1..UPN_LEN + 5].try_into().expect("4 bytes")) as usize;
        let len = u32::from_le_bytes(e[UPN_LEN + 5..UPN_LEN + 9].try_into().expect("4 bytes")) as usize;
        (off, len)
    }

    pub fn upn(&self, i: usize) -> &str {
        // Checked ASCII in `new`.
        std::str::from_utf8(&self.raw(i)[..UPN_LEN]).expect("checked ASCII")
    }

    pub fn get(&self, i: usize) -> Entry<'_> {
        let e = self.raw(i);
        let (off, len) = Self::span(e);
        let mut columns = [0.0; COLUMNS];
        if self.kind == Kind::Scores {
            for (k, c) in columns.iter_mut().enumerate() {
                let at = BASE + 8 * k;
                *c = f64::from_bits(u64::from_le_bytes(e[at..at + 8].try_into().expect("8 bytes")));
            }
        }
        Entry {
            upn: self.upn(i),
            format: if e[UPN_LEN] == 0 { Format::Postcard } else { Format::Json },
            bytes: &self.data[off..off + len],
            columns,
        }
    }

    /// The index of `upn`, by binary search.
    pub fn find(&self, upn: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.upn(mid).as_bytes().cmp(upn.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    pub fn iter(&self) -> impl Iterator<Item = Entry<'_>> {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// The UPNs of a packed record, from its entries alone.
pub fn upns(kind: Kind, entries: &[u8]) -> StoreResult<Vec<String>> {
    entries_only(kind, entries).map(|v| v.into_iter().map(|(u, _)| u).collect())
}

/// Each pupil's UPN and columns, from a packed record's entries alone (the data unread).
pub fn entries_only(kind: Kind, entries: &[u8]) -> StoreResult<Vec<(String, [f64; COLUMNS])>> {
    let w = kind.width();
    if !entries.len().is_multiple_of(w) {
        return Err(StoreError::Corrupt(format!("a packed {kind:?} record: entries of the wrong length")));
    }
    entries
        .chunks_exact(w)
        .map(|e| {
            let upn = std::str::from_utf8(&e[..UPN_LEN])
                .map_err(|_| StoreError::Corrupt(format!("a packed {kind:?} record: a UPN that is not text")))?;
            let mut columns = [0.0; COLUMNS];
            if kind == Kind::Scores {
                for (k, c) in columns.iter_mut().enumerate() {
                    let at = BASE + 8 * k;
                    *c = f64::from_bits(u64::from_le_bytes(e[at..at + 8].try_into().expect("8 bytes")));
                }
            }
            Ok((upn.to_owned(), columns))
        })
        .collect()
}

/// A pupil found by [`lookup`]: how its bytes are encoded, the bytes, and its columns.
pub type Found = (Format, Vec<u8>, [f64; COLUMNS]);

/// Writes `data` into the `data` column of the row `rowid` of `table`, which was inserted
/// with `rusqlite::blob::ZeroBlob(data.len())` there: straight into the database's pages.
/// Bound as a parameter instead, SQLite copies a blob twice (the bound value, then the
/// record) into fresh allocations; for a feed's scores, megabytes whose pages the kernel
/// zero-fills on first touch, inside the write lock.
pub fn write_data(conn: &rusqlite::Connection, table: &'static str, rowid: i64, data: &[u8]) -> StoreResult<()> {
    let mut blob = conn.blob_open(rusqlite::MAIN_DB, table, "data", rowid, false)?;
    blob.write_at(data, 0)?;
    Ok(())
}

/// The `ZeroBlob` a packed record's data is inserted as, before [`write_data`] fills it.
pub fn zeroed(data: &[u8]) -> StoreResult<rusqlite::blob::ZeroBlob> {
    let n = i32::try_from(data.len()).map_err(|_| StoreError::Corrupt("a packed record over 2 GiB".into()))?;
    Ok(rusqlite::blob::ZeroBlob(n))
}

/// One pupil of the packed record in row `rowid` of `table`, found without reading the
/// others: a binary search over the entries and one read of the pupil's bytes (SQLite's
/// incremental blob reads). `None` if the pupil is not in it.
pub fn lookup(
    conn: &rusqlite::Connection,
    table: &'static str,
    rowid: i64,
    kind: Kind,
    upn: &str,
) -> StoreResult<Option<Found>> {
    let main = rusqlite::MAIN_DB;
    let corrupt = |m: &str| StoreError::Corrupt(format!("a packed {kind:?} record: {m}"));
    let entries = conn.blob_open(main, table, "entries", rowid, true)?;
    let w = kind.width();
    if !entries.len().is_multiple_of(w) {
        return Err(corrupt("entries of the wrong length"));
    }
    let (mut lo, mut hi) = (0, entries.len() / w);
    let mut key = [0u8; UPN_LEN];
    let found = loop {
        if lo >= hi {
            return Ok(None);
        }
        let mid = (lo + hi) / 2;
        entries.read_at_exact(&mut key, mid * w)?;
        match key[..].cmp(upn.as_bytes()) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => break mid,
        }
    };
    let mut e = vec![0u8; w];
    entries.read_at_exact(&mut e, found * w)?;
    let (off, len) = Packed::span(&e);
    let format = Format::from_byte(e[UPN_LEN]).ok_or_else(|| corrupt("an unknown format"))?;
    let mut columns = [0.0; COLUMNS];
    if kind == Kind::Scores {
        for (k, c) in columns.iter_mut().enumerate() {
            let at = BASE + 8 * k;
            *c = f64::from_bits(u64::from_le_bytes(e[at..at + 8].try_into().expect("8 bytes")));
        }
    }
    let data = conn.blob_open(main, table, "data", rowid, true)?;
    if off.checked_add(len).is_none_or(|end| end > data.len()) {
        return Err(corrupt("bytes outside the data"));
    }
    let mut bytes = vec![0u8; len];
    data.read_at_exact(&mut bytes, off)?;
    Ok(Some((format, bytes, columns)))
}

/// Decodes a pupil's bytes.
pub fn decode<T: serde::de::DeserializeOwned>(format: Format, bytes: &[u8], what: &str) -> StoreResult<T> {
    let corrupt = |e: String| StoreError::Corrupt(format!("{what}: {e}"));
    match format {
        Format::Postcard => postcard::from_bytes(bytes).map_err(|e| corrupt(e.to_string())),
        Format::Json => serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string())),
    }
}

impl Entry<'_> {
    /// The pupil's value, decoded from its bytes.
    pub fn decode<T: serde::de::DeserializeOwned>(&self, what: &str) -> StoreResult<T> {
        decode(self.format, self.bytes, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "A123456789012";
    const B: &str = "B123456789012";
    const C: &str = "C123456789012";

    #[test]
    fn packs_in_upn_order_and_finds_each_pupil() {
        let cols = |x: f64| [x, 7.0, 0.0, 0.1, 0.2, 0.3];
        let (entries, data) = pack(
            Kind::Scores,
            [
                (C, Format::Postcard, &b"ccc"[..], cols(3.0)),
                (A, Format::Json, b"{}", cols(1.0)),
                (B, Format::Postcard, b"", cols(2.0)),
            ],
        )
        .unwrap();
        let p = Packed::new(Kind::Scores, entries, data).unwrap();
        assert_eq!(p.iter().map(|e| e.upn).collect::<Vec<_>>(), [A, B, C]);
        let c = p.get(p.find(C).unwrap());
        assert_eq!((c.bytes, c.format, c.columns), (&b"ccc"[..], Format::Postcard, cols(3.0)));
        assert_eq!(p.get(p.find(A).unwrap()).format, Format::Json);
        assert_eq!(p.get(p.find(B).unwrap()).bytes, b"");
        assert_eq!(p.find("D123456789012"), None);
    }

    #[test]
    fn a_record_changed_out_of_shape_is_corrupt_not_a_panic() {
        let (entries, data) = pack(
            Kind::Rows,
            [(A, Format::Postcard, &b"aaaa"[..], [0.0; COLUMNS]), (B, Format::Postcard, b"bb", [0.0; COLUMNS])],
        )
        .unwrap();
        assert!(Packed::new(Kind::Rows, entries.clone(), data[..5].to_vec()).is_err(), "bytes past the data");
        assert!(Packed::new(Kind::Rows, entries[..entries.len() - 1].to_vec(), data.clone()).is_err());
        let mut swapped = entries[BASE..].to_vec();
        swapped.extend_from_slice(&entries[..BASE]);
        assert!(Packed::new(Kind::Rows, swapped, data.clone()).is_err(), "out of order");
        assert!(Packed::new(Kind::Scores, entries, data).is_err(), "rows read as scores");
        assert!(pack(Kind::Rows, [(A, Format::Postcard, &b""[..], [0.0; COLUMNS]); 2]).is_err(), "a pupil twice");
        assert!(pack(Kind::Rows, [("A1", Format::Postcard, &b""[..], [0.0; COLUMNS])]).is_err(), "a short UPN");
    }

    /// Data written in place reads back byte for byte, an empty record included.
    #[test]
    fn data_written_in_place_reads_back_whole() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)").unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for (id, data) in [(1i64, &big[..]), (2, &[][..])] {
            conn.execute("INSERT INTO t (id, data) VALUES (?1, ?2)", rusqlite::params![id, zeroed(data).unwrap()])
                .unwrap();
            write_data(&conn, "t", id, data).unwrap();
            let back: Vec<u8> = conn.query_row("SELECT data FROM t WHERE id = ?1", [id], |r| r.get(0)).unwrap();
            assert_eq!(back, data);
        }
    }
}
