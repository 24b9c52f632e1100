//! Conversions between generated protobuf types and domain values.

use tonic::Status;

use super::pb;
use crate::domain::{Term, TermName, Urn};
use crate::ingest::{COLUMN_COUNT, Violation};
use crate::storage::{FeedSource, SubmissionRecord, SubmissionState};

pub fn term_name_to_pb(t: TermName) -> pb::TermName {
    match t {
        TermName::Autumn => pb::TermName::Autumn,
        TermName::Spring => pb::TermName::Spring,
        TermName::Summer => pb::TermName::Summer,
    }
}

pub fn school_term_to_pb(urn: Urn, term: Term) -> pb::SchoolTerm {
    pb::SchoolTerm {
        school_urn: urn.to_string(),
        academic_year: term.academic_year(),
        term: term_name_to_pb(term.name()) as i32,
    }
}

pub fn urn_from_pb(raw: &str) -> Result<Urn, Status> {
    Urn::parse(raw).map_err(Status::invalid_argument)
}

/// Reads a school and term, with messages naming the field.
pub fn term_from_pb(st: Option<&pb::SchoolTerm>) -> Result<(Urn, Term), Status> {
    let pb::SchoolTerm { school_urn, academic_year, term } =
        st.ok_or_else(|| Status::invalid_argument("school_term is required"))?;
    let urn = urn_from_pb(school_urn)?;
    let name = match pb::TermName::try_from(*term) {
        Ok(pb::TermName::Autumn) => TermName::Autumn,
        Ok(pb::TermName::Spring) => TermName::Spring,
        Ok(pb::TermName::Summer) => TermName::Summer,
        _ => {
            return Err(Status::invalid_argument("school_term.term must be AUTUMN, SPRING or SUMMER"));
        }
    };
    let term = Term::parse(academic_year, name.as_str()).map_err(Status::invalid_argument)?;
    Ok((urn, term))
}

pub fn violation_to_pb(v: &Violation) -> pb::Violation {
    pb::Violation { line: v.line, column: v.column.clone(), code: v.code.clone(), message: v.message.clone() }
}

fn timestamp(unix: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: unix, nanos: 0 }
}

pub fn submission_to_pb(r: &SubmissionRecord) -> pb::Submission {
    pb::Submission {
        submission_id: r.id.to_string(),
        school_term: Some(school_term_to_pb(r.school_term.urn, r.school_term.term)),
        state: match r.state {
            SubmissionState::Current => pb::SubmissionState::Current,
            SubmissionState::Superseded => pb::SubmissionState::Superseded,
        } as i32,
        source: match r.source {
            FeedSource::Csv => pb::FeedSource::Csv,
            FeedSource::Records => pb::FeedSource::Records,
        } as i32,
        row_count: r.row_count as u32,
        warning_count: r.warning_count as u32,
        warnings: r.warnings.iter().map(violation_to_pb).collect(),
        content_sha256: r.content_sha256.clone(),
        received_at: Some(timestamp(r.received_at)),
        supersedes_submission_id: r.supersedes.map(|i| i.to_string()).unwrap_or_default(),
        superseded_by_submission_id: r.superseded_by.map(|i| i.to_string()).unwrap_or_default(),
    }
}

/// A record's cells in the contract's column order; an unset field is an empty cell.
pub fn record_cells(r: &pb::PupilRecord) -> [String; COLUMN_COUNT] {
    let b = |v: &Option<bool>| v.map(|b| if b { "Y" } else { "N" }.to_string()).unwrap_or_default();
    let n = |v: &Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    let pb::PupilRecord {
        upn,
        ncyear,
        sex,
        ethnicity,
        fsm,
        eal,
        sen,
        cin,
        young_carer,
        school_moves,
        sessions_possible,
        sessions_authorised,
        sessions_unauthorised,
        absence_spells,
        suspensions,
        suspension_sessions,
        permanent_exclusion,
        behaviour_incidents,
        attainment_english,
        attainment_maths,
        sdq_emotional,
        sdq_conduct,
        sdq_hyperactivity,
        sdq_peer,
        sdq_prosocial,
        mh_referral,
    } = r;
    // Order matches `Column::ALL`.
    [
        upn.clone(),
        ncyear.clone(),
        sex.clone(),
        ethnicity.clone(),
        b(fsm),
        b(eal),
        sen.clone(),
        cin.clone(),
        b(young_carer),
        n(school_moves),
        n(sessions_possible),
        n(sessions_authorised),
        n(sessions_unauthorised),
        n(absence_spells),
        n(suspensions),
        n(suspension_sessions),
        b(permanent_exclusion),
        n(behaviour_incidents),
        attainment_english.clone(),
        attainment_maths.clone(),
        n(sdq_emotional),
        n(sdq_conduct),
        n(sdq_hyperactivity),
        n(sdq_peer),
        n(sdq_prosocial),
        b(mh_referral),
    ]
}

/// Renders structured records as contract CSV (record i becomes line i + 2).
pub fn records_to_csv(records: &[pb::PupilRecord]) -> Vec<u8> {
    let cells: Vec<[String; COLUMN_COUNT]> = records.iter().map(record_cells).collect();
    crate::ingest::cells_to_csv(&cells)
}

pub fn band_to_pb(b: crate::scoring::Band) -> pb::Band {
    match b {
        crate::scoring::Band::Low => pb::Band::Low,
        crate::scoring::Band::Medium => pb::Band::Medium,
        crate::scoring::Band::High => pb::Band::High,
    }
}

pub fn outcome_to_pb(o: crate::domain::Outcome) -> pb::Outcome {
    match o {
        crate::domain::Outcome::PersistentAbsence => pb::Outcome::PersistentAbsence,
        crate::domain::Outcome::Suspension => pb::Outcome::Suspension,
        crate::domain::Outcome::MhReferral => pb::Outcome::MhReferral,
    }
}

/// The one conversion every RPC that shows a child uses. A domain's words are rendered
/// once per child and shared by the outcomes that cite it.
pub fn risk_to_pb(r: &crate::scoring::PupilRisk) -> pb::PupilRisk {
    let mut words: Vec<(String, String)> = Vec::with_capacity(5);
    let mut text = |x: &crate::scoring::Reason| -> String {
        if let Some((_, t)) = words.iter().find(|(d, _)| *d == x.domain) {
            return t.clone();
        }
        let t = x.text();
        words.push((x.domain.clone(), t.clone()));
        t
    };
    pb::PupilRisk {
        upn: r.upn.clone(),
        school_term: Some(school_term_to_pb(r.school_term.urn, r.school_term.term)),
        model_id: r.model_id.clone(),
        any_adverse: r.any_adverse,
        outcomes: r
            .outcomes
            .iter()
            .map(|o| pb::OutcomeRisk {
                outcome: outcome_to_pb(o.outcome) as i32,
                probability: o.probability,
                band: band_to_pb(o.band) as i32,
                reasons: o
                    .reasons
                    .iter()
                    .map(|x| pb::Reason {
                        domain: x.domain.clone(),
                        text: text(x),
                        evidence: x
                            .evidence
                            .iter()
                            .map(|e| pb::Evidence {
                                measure: e.measure.as_str().into(),
                                value: e.value,
                                earlier: e.earlier,
                                compared_with: e.compared_with.as_ref().map(|c| c.with.clone()).unwrap_or_default(),
                                compared_value: e.compared_with.as_ref().map(|c| c.value),
                            })
                            .collect(),
                        contribution: x.contribution,
                    })
                    .collect(),
            })
            .collect(),
        flags: r.flags.clone(),
        ncyear: crate::domain::NcYear::new(r.ncyear).map(|y| y.label()).unwrap_or_default(),
        statutory: r.statutory,
    }
}
