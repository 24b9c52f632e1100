use rusqlite::params;

use super::{Store, StoreError, StoreResult};
use crate::domain::{PupilTerm, SchoolTerm, Term, Urn};

/// One stored score: the explanation JSON is exactly what people are shown.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRecord {
    pub school_term: SchoolTerm,
    pub upn: String,
    pub model_id: String,
    pub submission_id: i64,
    pub priority: f64,
    pub explanation_json: String,
}

fn read(r: &rusqlite::Row) -> rusqlite::Result<ScoreRecord> {
    let urn = Urn::new(r.get(0)?)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, e.into()))?;
    Ok(ScoreRecord {
        school_term: SchoolTerm { urn, term: Term::from_index(r.get(1)?) },
        upn: r.get(2)?,
        model_id: r.get(3)?,
        submission_id: r.get(4)?,
        priority: r.get(5)?,
        explanation_json: r.get(6)?,
    })
}

const COLUMNS: &str = "urn, term_index, upn, model_id, submission_id, priority, explanation_json";

impl Store {
    /// Replaces the scores of one school, term and model in one transaction.
    pub fn save_scores(&self, scores: &[ScoreRecord]) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut cleared = std::collections::HashSet::new();
        {
            let mut del =
                tx.prepare_cached("DELETE FROM scores WHERE urn = ?1 AND term_index = ?2 AND model_id = ?3")?;
            let mut ins =
                tx.prepare_cached(&format!("INSERT INTO scores ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"))?;
            for s in scores {
                let (urn, ti) = (s.school_term.urn.get(), s.school_term.term.index());
                if cleared.insert((urn, ti, s.model_id.clone())) {
                    del.execute(params![urn, ti, s.model_id])?;
                }
                ins.execute(params![urn, ti, s.upn, s.model_id, s.submission_id, s.priority, s.explanation_json])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A school's scores for a term under one model, highest priority first.
    pub fn school_scores(&self, st: SchoolTerm, model_id: &str) -> StoreResult<Vec<ScoreRecord>> {
        let conn = self.conn();
        let rows = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM scores WHERE urn = ?1 AND term_index = ?2 AND model_id = ?3 \
                 ORDER BY priority DESC, upn"
            ))?
            .query_map(params![st.urn.get(), st.term.index(), model_id], read)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Every score of one pupil, oldest term first.
    pub fn pupil_scores(&self, upn: &str) -> StoreResult<Vec<ScoreRecord>> {
        let conn = self.conn();
        let rows = conn
            .prepare(&format!("SELECT {COLUMNS} FROM scores WHERE upn = ?1 ORDER BY term_index, model_id"))?
            .query_map([upn], read)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The current rows, at any school and term, of every pupil in a submission: what
    /// features need to describe those pupils' history.
    pub fn history_of_submission(&self, submission_id: i64) -> StoreResult<Vec<(SchoolTerm, PupilTerm)>> {
        let and = "AND p.upn IN (SELECT upn FROM pupil_terms WHERE submission_id = ?1)";
        super::submissions::located_rows(&self.conn(), and, [submission_id])
    }

    /// The current submission id for each school's latest term (for rescoring).
    pub fn latest_submissions(&self) -> StoreResult<Vec<(SchoolTerm, i64)>> {
        let conn = self.conn();
        let rows = conn
            .prepare(
                "SELECT urn, max(term_index), id FROM submissions WHERE state = 'current' GROUP BY urn ORDER BY urn",
            )?
            .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u32>(1)?, r.get::<_, i64>(2)?)))?
            .map(|r| {
                let (urn, ti, id) = r?;
                Ok((SchoolTerm { urn: Urn::new(urn).map_err(StoreError::Corrupt)?, term: Term::from_index(ti) }, id))
            })
            .collect::<StoreResult<_>>()?;
        Ok(rows)
    }

    /// The current submission for a school and term, if any.
    pub fn current_submission_id(&self, st: SchoolTerm) -> StoreResult<Option<i64>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()
            .query_row(
                "SELECT id FROM submissions WHERE urn = ?1 AND term_index = ?2 AND state = 'current'",
                params![st.urn.get(), st.term.index()],
                |r| r.get(0),
            )
            .optional()?)
    }
}
