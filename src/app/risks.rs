//! Reading stored scores: a school's pupils ranked, one pupil's history. Reads return the
//! scores that are live (what people were shown), labelled with the model that made them.

use super::cohorts::ready_scores;
use super::{App, AppError, AppResult};
use crate::auth::Principal;
use crate::domain::{Outcome, SchoolTerm};
use crate::scoring::{Band, PupilRisk};

impl App {
    /// A school's pupils for a term with the model whose scores are live for it, highest
    /// risk first, optionally only those with `band` (for `outcome`, or for any outcome).
    /// A term whose scores are still being computed is `NotReady`, never an empty list.
    pub async fn school_risks(
        &self,
        who: &Principal,
        st: SchoolTerm,
        band: Option<Band>,
        outcome: Option<Outcome>,
    ) -> AppResult<(String, Vec<PupilRisk>)> {
        who.may_read_risks()?.check(st.urn)?;
        let (model_id, scores) = self.blocking(move |s| ready_scores(s.live_scores(st)?, st)).await?;
        let keep = |r: &PupilRisk| match (band, outcome) {
            (None, _) => true,
            (Some(b), Some(o)) => r.outcome(o).is_some_and(|x| x.band == b),
            (Some(b), None) => r.outcomes.iter().any(|x| x.band == b),
        };
        Ok((model_id, scores.into_iter().map(|r| r.risk).filter(keep).collect()))
    }

    /// One pupil's live scores over time, limited to the schools the caller may see.
    pub async fn pupil_risk(&self, who: &Principal, upn: String) -> AppResult<Vec<PupilRisk>> {
        let scope = who.may_read_risks()?;
        let rows = self.blocking(move |s| Ok(s.pupil_scores(&upn)?)).await?;
        let visible: Vec<PupilRisk> =
            rows.into_iter().map(|r| r.risk).filter(|r| scope.covers(r.school_term.urn)).collect();
        if visible.is_empty() {
            // Unknown, or not visible to this caller: the same answer, so UPNs reveal nothing.
            return Err(AppError::not_found(
                "PUPIL_NOT_FOUND",
                "no scores for that pupil in the schools this key covers",
            ));
        }
        Ok(visible)
    }
}

impl App {
    /// One pupil's attendance (share of possible sessions attended) in every term on record
    /// at the schools the caller may see, oldest first: for the attendance-over-terms chart.
    pub async fn pupil_attendance(
        &self,
        who: &Principal,
        upn: crate::domain::Upn,
    ) -> AppResult<Vec<(SchoolTerm, Option<f64>)>> {
        let scope = who.may_read_risks()?;
        let mut rows = self.blocking(move |s| Ok(s.pupil_history(&upn)?)).await?;
        rows.retain(|(st, _)| scope.covers(st.urn));
        rows.sort_by_key(|(st, _)| (st.term, st.urn));
        Ok(rows.into_iter().map(|(st, r)| (st, r.absence_rate().map(|a| 1.0 - a))).collect())
    }
}
