//! Term dates for absence statistics, and CTF dates.
//!
//! The DfE's terms for absence statistics: autumn 1 August – 31 December, spring 1 January –
//! Easter Sunday, summer Easter Monday – 31 July.

use time::{Date, Month};

use crate::domain::{Term, TermName};

/// Easter Sunday in the Gregorian calendar (the anonymous Gregorian algorithm, "Meeus/Jones/
/// Butcher").
pub fn easter_sunday(year: i32) -> Date {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    let month = if month == 3 { Month::March } else { Month::April };
    Date::from_calendar_date(year, month, day as u8).expect("Easter is a real date")
}

/// The first and last day (inclusive) of a term for absence statistics.
pub fn term_dates(term: Term) -> (Date, Date) {
    let y = i32::from(term.start_year());
    let d = |y, m, day| Date::from_calendar_date(y, m, day).expect("fixed dates are valid");
    match term.name() {
        TermName::Autumn => (d(y, Month::August, 1), d(y, Month::December, 31)),
        TermName::Spring => (d(y + 1, Month::January, 1), easter_sunday(y + 1)),
        TermName::Summer => (easter_sunday(y + 1).next_day().expect("not the last day"), d(y + 1, Month::July, 31)),
    }
}

/// A CTF date, `YYYY-MM-DD` (an `xs:date`; a trailing time zone or time is tolerated).
pub fn parse_date(s: &str) -> Option<Date> {
    let s = s.trim();
    let core = s.get(..10)?;
    let rest = &s[10..];
    if !(rest.is_empty()
        || rest.starts_with('T')
        || rest.starts_with('Z')
        || rest.starts_with('+')
        || rest.starts_with('-'))
    {
        return None;
    }
    let b = core.as_bytes();
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = &core[r];
        if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().ok() } else { None }
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
    Date::from_calendar_date(y as i32, month, u8::try_from(d).ok()?).ok()
}

/// The same day `months` months earlier (clamped to the month's last day).
pub fn months_before(date: Date, months: u32) -> Date {
    let total = date.year() * 12 + (date.month() as i32 - 1) - months as i32;
    let (y, m) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let month = Month::try_from(m as u8).expect("1–12");
    let last = month.length(y);
    Date::from_calendar_date(y, month, date.day().min(last)).expect("clamped day is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easter_matches_published_dates() {
        for (y, m, d) in [(2024, 3, 31), (2025, 4, 20), (2026, 4, 5), (2027, 3, 28), (2038, 4, 25), (2035, 3, 25)] {
            let e = easter_sunday(y);
            assert_eq!((e.month() as u8, e.day()), (m, d), "{y}");
        }
    }

    #[test]
    fn terms_cover_the_year_without_gaps() {
        let t = Term::new(2025, TermName::Autumn).unwrap();
        let (a0, a1) = term_dates(t);
        let (s0, s1) = term_dates(t.next());
        let (u0, u1) = term_dates(t.next().next());
        assert_eq!(a0, parse_date("2025-08-01").unwrap());
        assert_eq!(a1.next_day(), Some(s0));
        assert_eq!(s1, parse_date("2026-04-05").unwrap());
        assert_eq!(s1.next_day(), Some(u0));
        assert_eq!(u1, parse_date("2026-07-31").unwrap());
    }

    #[test]
    fn dates_parse_strictly() {
        assert!(parse_date("2025-02-29").is_none());
        assert!(parse_date("2025-2-1").is_none());
        assert!(parse_date("01/09/2025").is_none());
        assert_eq!(parse_date("2024-02-29"), Date::from_calendar_date(2024, Month::February, 29).ok());
        assert!(parse_date("2025-09-01T00:00:00").is_some());
        assert_eq!(months_before(parse_date("2026-03-31").unwrap(), 24), parse_date("2024-03-31").unwrap());
        assert_eq!(months_before(parse_date("2026-02-28").unwrap(), 1), parse_date("2026-01-28").unwrap());
        assert_eq!(months_before(parse_date("2026-03-31").unwrap(), 1), parse_date("2026-02-28").unwrap());
    }
}
