//! OutcomeService: programme outcomes against a matched comparison group, published figures only.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::urn_from_pb;
use super::pb::{self, outcome_service_server::OutcomeService};
use super::principal;
use crate::app::App;
use crate::outcomes::{CAVEATS, Count, Measure, Published, Value};

pub struct OutcomeApi {
    app: Arc<App>,
}

impl OutcomeApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// How the comparison group is made, in words (the same as docs/outcomes.md says).
pub const METHOD: &str = "Each supported child is matched, without replacement and highest risk first, to an \
    eligible child who was never supported (on roll, scored, not looked after or on a protection plan, not \
    permanently excluded) of the same phase in the same selection term, nearest on the logit of the combined risk \
    riskid gave them and then on their absence rate that term, within a caliper of 0.2 standard deviations of the \
    logit. The difference is a difference in differences: the supported child's change since selection minus \
    their match's, adjusted by least squares for the gaps in risk and absence left within the pairs. Its 95% \
    interval is the estimate plus or minus Student's t (one fewer degrees of freedom than schools) times a \
    bootstrap standard error that resamples the schools (999 samples; one school's pairs for its own figures).";

fn count(c: Count) -> pb::PublishedCount {
    let (value, state) = match c {
        Count::Rounded(n) => (n as u32, pb::CountState::Rounded),
        Count::FewerThan5 => (0, pb::CountState::FewerThanFive),
        Count::AllButFewerThan5 => (0, pb::CountState::AllButFewerThanFive),
    };
    pb::PublishedCount { value, state: state as i32 }
}

fn value(v: Value) -> pb::PublishedValue {
    let (value, state) = match v {
        Value::Shown(x) => (x, pb::ValueState::Shown),
        Value::Suppressed => (0.0, pb::ValueState::Suppressed),
        Value::NotAvailable => (0.0, pb::ValueState::NotAvailable),
    };
    pb::PublishedValue { value, state: state as i32 }
}

/// Only published figures can be converted: the estimate's exact counts never reach here.
pub fn outcomes_to_pb(p: &Published) -> pb::ProgrammeOutcomes {
    pb::ProgrammeOutcomes {
        cohorts: Some(count(p.cohorts)),
        supported: Some(count(p.supported)),
        matched: Some(count(p.matched)),
        unmatched: Some(count(p.unmatched)),
        figures: p
            .rows
            .iter()
            .map(|r| pb::OutcomeFigure {
                school_urn: r.school.map(|u| u.to_string()).unwrap_or_default(),
                terms_after_selection: r.horizon,
                measure: match r.measure {
                    Measure::AttendanceRate => pb::ProgrammeMeasure::AttendanceRate,
                    Measure::PersistentAbsence => pb::ProgrammeMeasure::PersistentAbsence,
                    Measure::Suspension => pb::ProgrammeMeasure::Suspension,
                    Measure::MhReferral => pb::ProgrammeMeasure::MhReferral,
                } as i32,
                supported: Some(count(r.supported)),
                seen: Some(count(r.seen)),
                not_seen: Some(count(r.not_seen)),
                supported_rate: Some(value(r.supported_rate)),
                pairs: Some(count(r.pairs)),
                pairs_supported_rate: Some(value(r.pairs_supported_rate)),
                comparison_rate: Some(value(r.comparison_rate)),
                difference: Some(value(r.difference)),
                interval_low: Some(value(r.interval_low)),
                interval_high: Some(value(r.interval_high)),
                naive_n: Some(count(r.naive_n)),
                naive_before: Some(value(r.naive_before)),
                naive_after: Some(value(r.naive_after)),
                naive_change: Some(value(r.naive_change)),
            })
            .collect(),
        method: METHOD.into(),
        caveats: CAVEATS.iter().map(|c| c.to_string()).collect(),
    }
}

#[tonic::async_trait]
impl OutcomeService for OutcomeApi {
    async fn get_programme_outcomes(
        &self,
        request: Request<pb::GetProgrammeOutcomesRequest>,
    ) -> Result<Response<pb::ProgrammeOutcomes>, Status> {
        let who = principal(&request)?;
        let pb::GetProgrammeOutcomesRequest { school_urn } = request.into_inner();
        let school = if school_urn.is_empty() { None } else { Some(urn_from_pb("school_urn", &school_urn)?) };
        let published = self.app.programme_outcomes(&who, school).await?;
        Ok(Response::new(outcomes_to_pb(&published)))
    }
}
