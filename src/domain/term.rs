//! School identity and the academic calendar.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A school's Unique Reference Number: exactly six digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Urn(u32);

impl Urn {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.len() != 6 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("school URN must be 6 digits, got {raw:?}"));
        }
        Ok(Self(raw.parse().expect("six digits parse")))
    }
    /// Any number of at most six digits (written with leading zeros), as `parse` takes it,
    /// without formatting it first: every stored school term is read through this.
    pub fn new(v: u32) -> Result<Self, String> {
        if v <= 999_999 { Ok(Self(v)) } else { Self::parse(&v.to_string()) }
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Urn {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        Urn::new(v)
    }
}
impl From<Urn> for u32 {
    fn from(u: Urn) -> u32 {
        u.0
    }
}
impl fmt::Display for Urn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}
impl FromStr for Urn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Urn::parse(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TermName {
    Autumn,
    Spring,
    Summer,
}

impl TermName {
    pub const ALL: [TermName; 3] = [TermName::Autumn, TermName::Spring, TermName::Summer];
    pub fn as_str(self) -> &'static str {
        match self {
            TermName::Autumn => "autumn",
            TermName::Spring => "spring",
            TermName::Summer => "summer",
        }
    }
    fn index(self) -> u32 {
        self as u32
    }
}

impl FromStr for TermName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "autumn" => Ok(TermName::Autumn),
            "spring" => Ok(TermName::Spring),
            "summer" => Ok(TermName::Summer),
            other => Err(format!("term must be autumn, spring or summer, got {other:?}")),
        }
    }
}

/// One term of one academic year. Ordered in time; `2025/26 summer` is followed by `2026/27 autumn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Term {
    /// First calendar year of the academic year (2025 for `2025/26`).
    start_year: u16,
    name: TermName,
}

impl Term {
    pub fn new(start_year: u16, name: TermName) -> Result<Self, String> {
        if !(2000..=2098).contains(&start_year) {
            return Err(format!("academic year {start_year} is out of range 2000–2098"));
        }
        Ok(Self { start_year, name })
    }

    /// Parses an academic year `YYYY/YY` and a term name.
    pub fn parse(academic_year: &str, term: &str) -> Result<Self, String> {
        let ay = academic_year.trim();
        let bad = || format!("academic year must look like 2025/26, got {ay:?}");
        let (a, b) = ay.split_once('/').ok_or_else(bad)?;
        if a.len() != 4 || b.len() != 2 || !a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let start: u16 = a.parse().map_err(|_| bad())?;
        let end: u16 = b.parse().map_err(|_| bad())?;
        if (start + 1) % 100 != end {
            return Err(format!(
                "academic year {ay:?}: the second part must be the first plus one ({}/{:02})",
                start,
                (start + 1) % 100
            ));
        }
        Self::new(start, term.parse()?)
    }

    pub fn start_year(self) -> u16 {
        self.start_year
    }
    pub fn name(self) -> TermName {
        self.name
    }
    pub fn academic_year(self) -> String {
        format!("{}/{:02}", self.start_year, (self.start_year + 1) % 100)
    }
    /// A dense, ordered index: consecutive terms differ by one.
    pub fn index(self) -> u32 {
        self.start_year as u32 * 3 + self.name.index()
    }
    pub fn from_index(i: u32) -> Self {
        let start_year = (i / 3) as u16;
        Self { start_year, name: TermName::ALL[(i % 3) as usize] }
    }
    pub fn next(self) -> Self {
        Self::from_index(self.index() + 1)
    }
    pub fn prev(self) -> Self {
        Self::from_index(self.index() - 1)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.academic_year(), self.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_order_and_roll_over() {
        let s = Term::parse("2025/26", "summer").unwrap();
        assert_eq!(s.next(), Term::parse("2026/27", "autumn").unwrap());
        assert_eq!(s.next().prev(), s);
        assert!(Term::parse("2025/26", "autumn").unwrap() < Term::parse("2025/26", "spring").unwrap());
        assert_eq!(s.to_string(), "2025/26 summer");
        assert_eq!(Term::parse("2099/00", "autumn").unwrap_err(), "academic year 2099 is out of range 2000–2098");
    }

    #[test]
    fn academic_year_must_be_consecutive() {
        assert!(Term::parse("2025/27", "autumn").is_err());
        assert!(Term::parse("25/26", "autumn").is_err());
        assert!(Term::parse("2025/26", "winter").is_err());
        assert_eq!(Term::parse(" 2025/26 ", "Autumn").unwrap().academic_year(), "2025/26");
    }

    #[test]
    fn urn_is_six_digits() {
        assert_eq!(Urn::parse("100001").unwrap().to_string(), "100001");
        assert!(Urn::parse("10001").is_err());
        assert!(Urn::parse("10000a").is_err());
        assert_eq!(Urn::new(42).unwrap().to_string(), "000042");
        // `new` takes exactly the numbers `parse` takes written with six digits.
        for v in [0, 1, 42, 100_001, 999_999, 1_000_000, 1_234_567, u32::MAX] {
            assert_eq!(Urn::new(v), Urn::parse(&format!("{v:06}")), "{v}");
        }
        assert_eq!(Urn::new(1_000_000).unwrap_err(), "school URN must be 6 digits, got \"1000000\"");
    }
}
