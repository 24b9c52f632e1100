//! DfE codes as a CTF writes them, mapped to the feed contract's.

use crate::domain::Ethnicity;

/// The DfE main code for an ethnicity code as a CTF may write it: a main code, or one of the
/// DfE's extended codes (CBDS "Ethnicity – extended"), which each sit under one main code.
/// `None` for a code the DfE lists do not hold.
pub fn ethnicity_main(code: &str) -> Option<(Ethnicity, bool)> {
    use Ethnicity::*;
    let upper = code.trim().to_ascii_uppercase();
    if let Some(e) = Ethnicity::parse(&upper) {
        return Some((e, false));
    }
    let main = match upper.as_str() {
        "WCOR" | "WENG" | "WSCO" | "WWEL" | "WOWB" => Wbri,
        "WALB" | "WBOS" | "WCRO" | "WGRE" | "WGRK" | "WGRC" | "WITA" | "WKOS" | "WPOR" | "WSER" | "WTUR" | "WTUK"
        | "WTUC" | "WEUR" | "WEEU" | "WWEU" | "WOTW" => Woth,
        "WROG" | "WROR" | "WROO" => Wrom,
        "MWAP" | "MWAI" | "MWAO" => Mwas,
        "MAOE" | "MABL" | "MACH" | "MBOE" | "MBCH" | "MCOE" | "MWOE" | "MWCH" | "MOTM" => Moth,
        "AKPA" | "AOPK" => Apkn,
        "AAFR" | "AKAO" | "ANEP" | "ASNL" | "ASLT" | "ASRO" | "AOTA" => Aoth,
        "BANN" | "BCON" | "BGHA" | "BNGN" | "BSLN" | "BSOM" | "BSUD" | "BAOF" => Bafr,
        "BEUR" | "BNAM" | "BOTB" => Both,
        "CHKC" | "CMAL" | "CSNG" | "CTWN" | "COCH" => Chne,
        "OAFG" | "OARA" | "OEGY" | "OFIL" | "OIRN" | "OIRQ" | "OJPN" | "OKOR" | "OKRD" | "OLAM" | "OLEB" | "OLIB"
        | "OMAL" | "OMRC" | "OPOL" | "OTHA" | "OVIE" | "OYEM" | "OOEG" => Ooth,
        _ => return None,
    };
    Some((main, true))
}

/// First language, as the DfE classifies it for "English as an additional language".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstLanguage {
    /// `ENG` (English) or `ENB` (believed to be English).
    English,
    /// Any other language code, including `OTB` (believed to be other than English).
    Other,
    /// `NOT` (not obtained), `REF` (refused), or no first language recorded.
    Unclassified,
}

pub fn first_language(code: Option<&str>) -> FirstLanguage {
    match code.map(|c| c.trim().to_ascii_uppercase()).as_deref() {
        None | Some("") | Some("NOT") | Some("REF") => FirstLanguage::Unclassified,
        Some("ENG") | Some("ENB") => FirstLanguage::English,
        Some(_) => FirstLanguage::Other,
    }
}

/// SEN provision: the contract's code, and whether it was a pre-2014 code mapped to it.
pub fn sen_provision(code: &str) -> Option<(&'static str, bool)> {
    Some(match code.trim().to_ascii_uppercase().as_str() {
        "N" => ("N", false),
        "K" => ("K", false),
        "E" => ("E", false),
        // School Action and School Action Plus became SEN support in 2014; a statement, an EHC plan.
        "A" | "P" => ("K", true),
        "S" => ("E", true),
        _ => return None,
    })
}

/// An `xs:boolean`, or a Y/N as some exports write it.
pub fn boolean(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "y" | "yes" => Some(true),
        "false" | "0" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// What one attendance mark means for absence statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Present, late before registers close, or at an approved educational activity.
    Present,
    Authorised,
    Unauthorised,
    /// Not a possible session: school closed, not required to attend, dual registered
    /// elsewhere, not on roll, or no mark recorded.
    NotPossible,
}

/// The meaning of an attendance code (2024 regulations, and the codes they replaced, which
/// files from earlier years still hold).
pub fn mark(code: &str) -> Option<Mark> {
    use Mark::*;
    Some(match code {
        // Present; late before the register closed.
        "/" | "\\" | "L" => Present,
        // Attending an approved educational activity (off-site, sporting, work experience;
        // before 2024 also J, an interview).
        "K" | "V" | "P" | "W" | "B" | "J" => Present,
        // Authorised absence: leave (C, C1, C2), medical (M), interview (J1, from 2024),
        // study leave (S), Traveller (T), religious observance (R), illness (I), suspended or
        // excluded (E); before 2024 also H (holiday) and F.
        "C" | "C1" | "C2" | "M" | "J1" | "S" | "T" | "R" | "I" | "E" | "H" | "F" => Authorised,
        // Unauthorised: holiday not agreed (G), no reason yet (N), other (O), late after the
        // register closed (U).
        "G" | "N" | "O" | "U" => Unauthorised,
        // Not possible: dual registered (D), not required to attend (X), exceptional
        // circumstances (Y, Y1–Y7), prepared for but not attending (Z), school closed (#),
        // lack of access arrangements (Q, from 2024: not counted as possible); '-' no mark
        // recorded, for sessions before a pupil joined or after they left.
        "D" | "X" | "Y" | "Y1" | "Y2" | "Y3" | "Y4" | "Y5" | "Y6" | "Y7" | "Z" | "#" | "Q" | "-" => NotPossible,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_ethnicity_codes_map_to_their_main_code() {
        assert_eq!(ethnicity_main("WENG"), Some((Ethnicity::Wbri, true)));
        assert_eq!(ethnicity_main("wbri"), Some((Ethnicity::Wbri, false)));
        assert_eq!(ethnicity_main("BSOM"), Some((Ethnicity::Bafr, true)));
        assert_eq!(ethnicity_main("XXXX"), None);
    }

    #[test]
    fn codes() {
        assert_eq!(first_language(Some("ENB")), FirstLanguage::English);
        assert_eq!(first_language(Some("POL")), FirstLanguage::Other);
        assert_eq!(first_language(Some("OTB")), FirstLanguage::Other);
        assert_eq!(first_language(Some("NOT")), FirstLanguage::Unclassified);
        assert_eq!(first_language(None), FirstLanguage::Unclassified);
        assert_eq!(sen_provision("P"), Some(("K", true)));
        assert_eq!(sen_provision("Z"), None);
        assert_eq!(mark("C1"), Some(Mark::Authorised));
        assert_eq!(mark("Y3"), Some(Mark::NotPossible));
        assert_eq!(mark("L"), Some(Mark::Present));
        assert_eq!(mark("?"), None);
        // A space is not a mark: a padded two-characters-per-session file fails loudly.
        assert_eq!(mark(" "), None);
        assert_eq!(mark("J"), Some(Mark::Present), "pre-2024 J, an interview, was an approved activity");
    }
}
