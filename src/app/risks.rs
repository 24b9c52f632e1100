//! Reading stored scores: a school's pupils ranked, one pupil's history.

use super::{App, AppError, AppResult};
use crate::auth::Principal;
use crate::domain::{Outcome, SchoolTerm};
use crate::scoring::{Band, PupilRisk};

fn parse(json: &str) -> AppResult<PupilRisk> {
    serde_json::from_str(json).map_err(|e| AppError::Internal(format!("unreadable stored score: {e}")))
}

impl App {
    /// A school's pupils for a term under the active model, highest risk first, optionally only
    /// those with `band` (for `outcome`, or for any outcome).
    pub async fn school_risks(
        &self,
        who: &Principal,
        st: SchoolTerm,
        band: Option<Band>,
        outcome: Option<Outcome>,
    ) -> AppResult<(String, Vec<PupilRisk>)> {
        who.may_read_risks()?.check(st.urn)?;
        let model_id = self.active_model().model_id.clone();
        let id = model_id.clone();
        let risks = self
            .blocking(move |s| {
                if s.current_submission_id(st)?.is_none() {
                    return Err(AppError::NotFound(format!("no feed for school {} in {}", st.urn, st.term)));
                }
                s.school_scores(st, &id)?.iter().map(|r| parse(&r.explanation_json)).collect::<AppResult<Vec<_>>>()
            })
            .await?;
        let keep = |r: &PupilRisk| match (band, outcome) {
            (None, _) => true,
            (Some(b), Some(o)) => r.outcome(o).is_some_and(|x| x.band == b),
            (Some(b), None) => r.outcomes.iter().any(|x| x.band == b),
        };
        Ok((model_id, risks.into_iter().filter(keep).collect()))
    }

    /// One pupil's stored scores over time, limited to the schools the caller may see.
    pub async fn pupil_risk(&self, who: &Principal, upn: String) -> AppResult<Vec<PupilRisk>> {
        let scope = who.may_read_risks()?;
        let rows = self.blocking(move |s| Ok(s.pupil_scores(&upn)?)).await?;
        let visible: Vec<PupilRisk> = rows
            .iter()
            .filter(|r| scope.covers(r.school_term.urn))
            .map(|r| parse(&r.explanation_json))
            .collect::<AppResult<_>>()?;
        if visible.is_empty() {
            // Unknown, or not visible to this caller: the same answer, so UPNs reveal nothing.
            return Err(AppError::NotFound("no scores for that pupil in the schools this key covers".into()));
        }
        Ok(visible)
    }
}
