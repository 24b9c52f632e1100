//! Rendering rows as contract CSV.

use crate::domain::PupilTerm;
use crate::ingest::contract_header;

fn b(v: bool) -> &'static str {
    if v { "Y" } else { "N" }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// The rows as a feed file, columns in the contract's order.
pub fn feed_csv(rows: &[PupilTerm]) -> Vec<u8> {
    let mut out = String::with_capacity(rows.len() * 90 + 400);
    out.push_str(&contract_header());
    out.push('\n');
    for r in rows {
        // No generated value contains a comma, quote or newline, so no quoting is needed.
        out.push_str(&row_cells(r).join(","));
        out.push('\n');
    }
    out.into_bytes()
}

/// One row's cells, in the contract's column order, as the contract writes them.
pub fn row_cells(r: &PupilTerm) -> [String; 26] {
    {
        [
            r.upn.as_str().to_owned(),
            r.ncyear.label(),
            r.sex.code().to_owned(),
            r.ethnicity.code().to_owned(),
            b(r.fsm).into(),
            b(r.eal).into(),
            r.sen.code().into(),
            opt(r.cin.map(|c| c.code())),
            opt(r.young_carer.map(b)),
            opt(r.school_moves),
            r.sessions_possible.to_string(),
            r.sessions_authorised.to_string(),
            r.sessions_unauthorised.to_string(),
            opt(r.absence_spells),
            r.suspensions.to_string(),
            opt(r.suspension_sessions),
            b(r.permanent_exclusion).into(),
            opt(r.behaviour_incidents),
            opt(r.attainment_english.map(|a| a.code())),
            opt(r.attainment_maths.map(|a| a.code())),
            opt(r.sdq_emotional),
            opt(r.sdq_conduct),
            opt(r.sdq_hyperactivity),
            opt(r.sdq_peer),
            opt(r.sdq_prosocial),
            b(r.mh_referral).into(),
        ]
    }
}
