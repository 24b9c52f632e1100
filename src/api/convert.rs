//! Conversions between generated protobuf types and domain values.

use tonic::Status;

use super::status::bad_field;

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

/// A school URN from a request field.
pub fn urn_from_pb(field: &str, raw: &str) -> Result<Urn, Status> {
    Urn::parse(raw).map_err(|e| bad_field(field, "INVALID_VALUE", e))
}

/// A required school term at `field` (e.g. `school_term`, `pupils[3].school_term`).
pub fn term_at(field: &str, st: Option<&pb::SchoolTerm>) -> Result<(Urn, Term), Status> {
    let pb::SchoolTerm { school_urn, academic_year, term } =
        st.ok_or_else(|| bad_field(field, "REQUIRED", format!("{field} is required")))?;
    let urn = urn_from_pb(&format!("{field}.school_urn"), school_urn)?;
    let name = term_name_from_pb(*term)
        .ok_or_else(|| bad_field(format!("{field}.term"), "REQUIRED", "term must be AUTUMN, SPRING or SUMMER"))?;
    let term = Term::parse(academic_year, name.as_str())
        .map_err(|e| bad_field(format!("{field}.academic_year"), "INVALID_VALUE", e))?;
    Ok((urn, term))
}

pub fn term_from_pb(st: Option<&pb::SchoolTerm>) -> Result<(Urn, Term), Status> {
    term_at("school_term", st)
}

pub fn term_name_from_pb(t: i32) -> Option<TermName> {
    match pb::TermName::try_from(t) {
        Ok(pb::TermName::Autumn) => Some(TermName::Autumn),
        Ok(pb::TermName::Spring) => Some(TermName::Spring),
        Ok(pb::TermName::Summer) => Some(TermName::Summer),
        _ => None,
    }
}

/// A feed violation; `records`: the feed came as a record stream.
pub fn violation_to_pb(v: &Violation, records: bool) -> pb::Violation {
    pb::Violation {
        line: v.line,
        column: v.column.clone(),
        code: v.code.clone(),
        message: v.message.clone(),
        field: super::status::field_of(v, records),
        file: match v.part {
            crate::ingest::Part::Feed => pb::ViolationFile::Feed,
            crate::ingest::Part::Ctf => pb::ViolationFile::Ctf,
            crate::ingest::Part::Supplement => pb::ViolationFile::Supplement,
        } as i32,
        element: v.element.clone(),
    }
}

pub fn timestamp(unix: i64) -> prost_types::Timestamp {
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
            FeedSource::Ctf => pb::FeedSource::Ctf,
        } as i32,
        row_count: r.row_count as u32,
        warning_count: r.warning_count as u32,
        warnings: r.warnings.iter().map(|v| violation_to_pb(v, r.source == FeedSource::Records)).collect(),
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

/// A validated row's cells (contract order) as a record: the inverse of [`record_cells`].
pub fn record_from_cells(c: &[String; COLUMN_COUNT]) -> pb::PupilRecord {
    let b = |i: usize| match c[i].as_str() {
        "" => None,
        v => Some(matches!(v, "Y" | "y" | "1" | "true" | "TRUE" | "True")),
    };
    let n = |i: usize| c[i].parse::<u64>().ok();
    pb::PupilRecord {
        upn: c[0].clone(),
        ncyear: c[1].clone(),
        sex: c[2].clone(),
        ethnicity: c[3].clone(),
        fsm: b(4),
        eal: b(5),
        sen: c[6].clone(),
        cin: c[7].clone(),
        young_carer: b(8),
        school_moves: n(9),
        sessions_possible: n(10),
        sessions_authorised: n(11),
        sessions_unauthorised: n(12),
        absence_spells: n(13),
        suspensions: n(14),
        suspension_sessions: n(15),
        permanent_exclusion: b(16),
        behaviour_incidents: n(17),
        attainment_english: c[18].clone(),
        attainment_maths: c[19].clone(),
        sdq_emotional: n(20),
        sdq_conduct: n(21),
        sdq_hyperactivity: n(22),
        sdq_peer: n(23),
        sdq_prosocial: n(24),
        mh_referral: b(25),
    }
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

/// Whether a reply carries reasons: RISK_VIEW_BASIC leaves them out; FULL (the default) has them.
pub fn full_view(view: i32) -> bool {
    pb::RiskView::try_from(view) != Ok(pb::RiskView::Basic)
}

/// The protobuf value of a reason's domain, by name. Every child shown costs several of
/// these, so each name's value is worked out once (from the enum's own names) and looked up.
pub fn domain_to_pb(d: &str) -> pb::ReasonDomain {
    static TABLE: std::sync::OnceLock<Vec<(&'static str, pb::ReasonDomain)>> = std::sync::OnceLock::new();
    let by_name = |d: &str| {
        pb::ReasonDomain::from_str_name(&format!("REASON_DOMAIN_{}", d.to_ascii_uppercase())).unwrap_or_default()
    };
    let table = TABLE.get_or_init(|| {
        crate::model::features::Domain::ALL.iter().map(|d| (d.as_str(), by_name(d.as_str()))).collect()
    });
    table.iter().find(|(name, _)| *name == d).map_or_else(|| by_name(d), |(_, value)| *value)
}

/// The protobuf value of a measure, from the enum's own names, worked out once per measure.
pub fn measure_to_pb(m: crate::scoring::Measure) -> pb::Measure {
    use crate::scoring::Measure;
    static TABLE: std::sync::OnceLock<Vec<(Measure, pb::Measure)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        Measure::ALL
            .iter()
            .map(|&m| {
                let name = format!("MEASURE_{}", m.as_str().to_ascii_uppercase());
                (m, pb::Measure::from_str_name(&name).unwrap_or_default())
            })
            .collect()
    });
    table.iter().find(|(x, _)| *x == m).map_or(pb::Measure::Unspecified, |(_, value)| *value)
}

pub fn risk_to_pb(r: &crate::scoring::PupilRisk) -> pb::PupilRisk {
    risk_view_to_pb(r, true)
}

type Words<'a> = Vec<(&'a str, &'a [crate::scoring::Evidence], String)>;

/// A reason's words, rendered once for the same facts cited by several outcomes.
fn text_of<'a>(words: &mut Words<'a>, x: &'a crate::scoring::Reason) -> String {
    if let Some((_, _, t)) = words.iter().find(|(d, e, _)| *d == x.domain && *e == x.evidence.as_slice()) {
        return t.clone();
    }
    let t = x.text();
    words.push((&*x.domain, x.evidence.as_slice(), t.clone()));
    t
}

/// The one conversion every RPC that shows a child uses (`full`: with reasons). A domain's
/// words are rendered once per child and shared by the outcomes that cite it.
pub fn risk_view_to_pb(r: &crate::scoring::PupilRisk, full: bool) -> pb::PupilRisk {
    // The same facts cited by several outcomes are rendered once.
    let mut words: Words<'_> = Vec::with_capacity(9);
    let mut text = |x| text_of(&mut words, x);
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
                    .filter(|_| full)
                    .map(|x| pb::Reason {
                        domain: domain_to_pb(&x.domain) as i32,
                        text: text(x),
                        evidence: x
                            .evidence
                            .iter()
                            .map(|e| pb::Evidence {
                                measure: measure_to_pb(e.measure) as i32,
                                value: e.value,
                                earlier: e.earlier,
                                compared_with: e.compared_with.as_ref().map(|c| c.with.to_string()).unwrap_or_default(),
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

pub fn action_to_pb(a: crate::audit::Action) -> pb::AuditAction {
    pb::AuditAction::from_str_name(&format!("AUDIT_ACTION_{}", a.as_str().replace('.', "_").to_ascii_uppercase()))
        .unwrap_or_default()
}

pub fn action_from_pb(v: i32) -> Option<crate::audit::Action> {
    crate::audit::Action::ALL.into_iter().find(|a| action_to_pb(*a) as i32 == v)
}

pub fn role_to_pb(role: &str) -> pb::Role {
    pb::Role::from_str_name(&format!("ROLE_{}", role.to_ascii_uppercase())).unwrap_or_default()
}

/// JSON as a google.protobuf.Struct. Numbers there are doubles, so integers beyond 2^53
/// (which a double would round) travel as strings, as proto3's JSON mapping does for int64.
pub fn json_to_struct(v: &serde_json::Value) -> prost_types::Struct {
    match json_to_value(v).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        other => prost_types::Struct {
            fields: [("value".to_string(), prost_types::Value { kind: other })].into_iter().collect(),
        },
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    const EXACT: u64 = 1 << 53;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) if u > EXACT => Kind::StringValue(u.to_string()),
            (None, Some(i)) if i.unsigned_abs() > EXACT => Kind::StringValue(i.to_string()),
            _ => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => {
            Kind::ListValue(prost_types::ListValue { values: a.iter().map(json_to_value).collect() })
        }
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measure_domain_and_role_has_an_enum_value() {
        use crate::scoring::Measure;
        for m in Measure::ALL {
            assert_ne!(measure_to_pb(*m), pb::Measure::Unspecified, "{m:?}");
        }
        for d in ["attendance", "behaviour", "wellbeing", "attainment", "context"] {
            assert_ne!(domain_to_pb(d), pb::ReasonDomain::Unspecified, "{d}");
        }
        // Each maps to its own value, by name.
        assert_eq!(measure_to_pb(Measure::SdqConduct), pb::Measure::SdqConduct);
        assert_eq!(domain_to_pb("wellbeing"), pb::ReasonDomain::Wellbeing);
        assert_eq!(domain_to_pb("not a domain"), pb::ReasonDomain::Unspecified);
        let measures: std::collections::BTreeSet<i32> = Measure::ALL.iter().map(|m| measure_to_pb(*m) as i32).collect();
        assert_eq!(measures.len(), Measure::ALL.len(), "no two measures share a value");
        for a in crate::audit::Action::ALL {
            assert_ne!(action_to_pb(a), pb::AuditAction::Unspecified, "{a:?}");
            assert_eq!(action_from_pb(action_to_pb(a) as i32), Some(a));
        }
        for r in crate::auth::Role::ALL {
            assert_ne!(role_to_pb(r.as_str()), pb::Role::Unspecified, "{r}");
        }
    }

    #[test]
    fn records_and_cells_round_trip() {
        let world =
            crate::synth::generate(&crate::synth::WorldConfig { schools: 2, years: 1, ..Default::default() }).unwrap();
        for row in world.feeds.iter().flat_map(|f| &f.rows).take(500) {
            let cells = crate::synth::row_cells(row);
            assert_eq!(record_cells(&record_from_cells(&cells)), cells);
        }
    }

    #[test]
    fn big_integers_stay_exact_in_structs() {
        let s = json_to_struct(&serde_json::json!({"seed": u64::MAX, "n": 3, "neg": i64::MIN}));
        let kind = |k: &str| s.fields[k].kind.clone();
        assert_eq!(kind("seed"), Some(prost_types::value::Kind::StringValue(u64::MAX.to_string())));
        assert_eq!(kind("n"), Some(prost_types::value::Kind::NumberValue(3.0)));
        assert_eq!(kind("neg"), Some(prost_types::value::Kind::StringValue(i64::MIN.to_string())));
    }
}
