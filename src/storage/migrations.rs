//! Versioned schema migrations, kept in `migrations/` and tracked by `PRAGMA user_version`.

use rusqlite::{Connection, Transaction, params};

use super::packed::{COLUMNS, Format, Kind, pack};
use super::{StoreError, StoreResult};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_keys_and_submissions.sql"),
    include_str!("../../migrations/0002_models_scores_cohorts_audit.sql"),
    include_str!("../../migrations/0003_integrity.sql"),
    include_str!("../../migrations/0004_ctf_source.sql"),
    include_str!("../../migrations/0005_compact_rows_and_scores.sql"),
    include_str!("../../migrations/0006_packed_rows_and_scores.sql"),
    include_str!("../../migrations/0007_pupil_index_by_upn_only.sql"),
    include_str!("../../migrations/0008_pupil_index_by_upn_digits.sql"),
];

/// Work a migration's SQL cannot do, run in the same transaction after it: (version, step).
type Step = fn(&Transaction) -> StoreResult<()>;
const STEPS: &[(usize, Step)] = &[(6, pack_rows_and_scores)];

/// Schema 6: every submission's per-pupil rows, and its scores per model, into packed
/// records with the very same bytes per pupil (so every digest is unchanged); then the
/// per-pupil tables are dropped.
fn pack_rows_and_scores(tx: &Transaction) -> StoreResult<()> {
    fn format(v: rusqlite::types::ValueRef<'_>) -> StoreResult<(Format, Vec<u8>)> {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Blob(b) => Ok((Format::Postcard, b.to_vec())),
            ValueRef::Text(t) => Ok((Format::Json, t.to_vec())),
            other => Err(StoreError::Corrupt(format!("a stored pupil value as {:?}", other.data_type()))),
        }
    }
    type Pupil = (String, Format, Vec<u8>, [f64; COLUMNS]);
    // Rows, a submission at a time (each packed and written as soon as it is read whole, so
    // the migration holds one submission in memory, not the database): (submission, its
    // school, term and whether it is current, its pupils). Only current submissions' pupils
    // go in the UPN index.
    type Rows = (i64, i64, i64, bool, Vec<Pupil>);
    let write_rows = |(id, urn, term, current, pupils): Rows| -> StoreResult<()> {
        let (entries, data) = pack(Kind::Rows, pupils.iter().map(|p| (p.0.as_str(), p.1, &p.2[..], p.3)))?;
        tx.prepare_cached("INSERT INTO feed_rows (submission_id, pupils, entries, data) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![id, pupils.len() as i64, entries, data])?;
        if current {
            let mut ix = tx.prepare_cached(
                "INSERT INTO pupil_index (upn, term_index, submission_id, urn) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for p in &pupils {
                ix.execute(params![p.0, term, id, urn])?;
            }
        }
        Ok(())
    };
    {
        let mut stmt = tx.prepare(
            "SELECT p.submission_id, s.urn, s.term_index, s.state = 'current', p.upn, p.row_data FROM pupil_terms p \
             JOIN submissions s ON s.id = p.submission_id ORDER BY p.submission_id, p.upn",
        )?;
        let mut rows = stmt.query([])?;
        let mut group: Option<Rows> = None;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let (f, bytes) = format(r.get_ref(5)?)?;
            if group.as_ref().is_none_or(|g| g.0 != id)
                && let Some(done) = group.replace((id, r.get(1)?, r.get(2)?, r.get(3)?, Vec::new()))
            {
                write_rows(done)?;
            }
            group.as_mut().expect("set above").4.push((r.get(4)?, f, bytes, [0.0; COLUMNS]));
        }
        if let Some(done) = group {
            write_rows(done)?;
        }
    }
    // Scores, a (submission, model) at a time, likewise.
    type Scores = ((i64, String), Vec<Pupil>);
    let write_scores = |((id, model), pupils): Scores| -> StoreResult<()> {
        let (entries, data) = pack(Kind::Scores, pupils.iter().map(|p| (p.0.as_str(), p.1, &p.2[..], p.3)))?;
        tx.prepare_cached(
            "INSERT INTO score_sets (submission_id, model_id, pupils, entries, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![id, model, pupils.len() as i64, entries, data])?;
        Ok(())
    };
    {
        let mut stmt = tx.prepare(
            "SELECT submission_id, model_id, upn, explanation, priority, ncyear, statutory, p_absence, p_suspension, \
             p_referral FROM scores ORDER BY submission_id, model_id, upn",
        )?;
        let mut rows = stmt.query([])?;
        let mut group: Option<Scores> = None;
        while let Some(r) = rows.next()? {
            let key: (i64, String) = (r.get(0)?, r.get(1)?);
            let (f, bytes) = format(r.get_ref(3)?)?;
            let cols =
                [r.get(4)?, r.get::<_, i64>(5)? as f64, r.get::<_, i64>(6)? as f64, r.get(7)?, r.get(8)?, r.get(9)?];
            if group.as_ref().is_none_or(|g| g.0 != key)
                && let Some(done) = group.replace((key, Vec::new()))
            {
                write_scores(done)?;
            }
            group.as_mut().expect("set above").1.push((r.get(2)?, f, bytes, cols));
        }
        if let Some(done) = group {
            write_scores(done)?;
        }
    }
    tx.execute_batch("DROP TABLE pupil_terms; DROP TABLE scores;")?;
    Ok(())
}

pub fn apply(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::SchemaTooNew { found: version, known });
    }
    if version == known {
        return Ok(());
    }
    // A migration may rebuild a table that others reference (SQLite cannot alter a CHECK in
    // place): foreign keys are off while migrations run (the pragma is a no-op inside a
    // transaction, so it is set around them), then checked, then on again.
    let enforced: bool = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let result = (|| {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            for (_, step) in STEPS.iter().filter(|(v, _)| *v == i + 1) {
                step(&tx)?;
            }
            let broken: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
            if broken > 0 {
                return Err(StoreError::Corrupt(format!(
                    "schema migration {} would leave {broken} broken references; nothing was changed",
                    i + 1
                )));
            }
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "applied schema migration");
        }
        Ok(())
    })();
    if enforced {
        conn.pragma_update(None, "foreign_keys", "ON")?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database at version 3 with a submission, its rows and scores upgrades in place (the
    /// submissions table is rebuilt under it) with everything kept.
    #[test]
    fn a_populated_version_3_database_upgrades_with_foreign_keys_on() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO api_keys (id, key_hash, prefix, role, label, created_at) VALUES (1, 'h', 'p', 'school', 'l', 0);
             INSERT INTO submissions (id, urn, term_index, state, source, content_sha256, row_count, warning_count,
                 warnings_json, received_at, key_id) VALUES (1, 100001, 6075, 'current', 'csv', 'x', 1, 0, '[]', 0, 1);
             INSERT INTO pupil_terms (submission_id, upn, urn, term_index, row_json) VALUES (1, 'B123456789012', 100001, 6075, '{\"b\":1}');
             INSERT INTO pupil_terms (submission_id, upn, urn, term_index, row_json) VALUES (1, 'A123456789012', 100001, 6075, '{}');
             INSERT INTO submissions (id, urn, term_index, state, source, content_sha256, row_count, warning_count,
                 warnings_json, received_at, key_id) VALUES (2, 100001, 6074, 'superseded', 'csv', 'y', 1, 0, '[]', 0, 1);
             INSERT INTO pupil_terms (submission_id, upn, urn, term_index, row_json) VALUES (2, 'A123456789012', 100001, 6074, '{}');
             INSERT INTO models (model_id, artifact_json, created_at) VALUES ('m', '{}', 0);
             INSERT INTO scores (urn, term_index, upn, model_id, submission_id, priority, explanation_json, ncyear, statutory,
                 p_absence, p_suspension, p_referral) VALUES (100001, 6075, 'A123456789012', 'm', 1, 0.5, '{\"s\":1}', 7, 1, 0.1, 0.2, 0.3);",
        )
        .unwrap();
        apply(&mut conn).unwrap();
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let fk: bool = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0)).unwrap();
        assert!(fk, "foreign keys are on again");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM pupil_index p JOIN submissions s ON s.id = p.submission_id", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 2, "the current submission's two pupils, not the superseded one's");
        let urns: i64 =
            conn.query_row("SELECT count(*) FROM pupil_index WHERE urn = 100001", [], |r| r.get(0)).unwrap();
        assert_eq!(urns, 2);
        // Keyed by each UPN with its check letter moved to the end (schema 8).
        let keys: Vec<String> = conn
            .prepare("SELECT upn_key FROM pupil_index ORDER BY upn_key")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, ["123456789012A", "123456789012B"]);
        // Rows written as JSON before schema 5 are kept byte for byte, packed in UPN order.
        let (e, d): (Vec<u8>, Vec<u8>) = conn
            .query_row("SELECT entries, data FROM feed_rows WHERE submission_id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let rows = super::super::packed::Packed::new(Kind::Rows, e, d).unwrap();
        let kept: Vec<_> = rows.iter().map(|e| (e.upn, e.format, e.bytes)).collect();
        assert_eq!(
            kept,
            [("A123456789012", Format::Json, &b"{}"[..]), ("B123456789012", Format::Json, &br#"{"b":1}"#[..])]
        );
        // Scores too, with the columns ranking reads.
        let (e, d): (Vec<u8>, Vec<u8>) =
            conn.query_row("SELECT entries, data FROM score_sets", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        let scores = super::super::packed::Packed::new(Kind::Scores, e, d).unwrap();
        let s = scores.get(0);
        assert_eq!((scores.len(), s.upn, s.bytes), (1, "A123456789012", &br#"{"s":1}"#[..]));
        assert_eq!(s.columns, [0.5, 7.0, 1.0, 0.1, 0.2, 0.3]);
        for old in ["pupil_terms", "scores"] {
            let left: i64 =
                conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = ?1", [old], |r| r.get(0)).unwrap();
            assert_eq!(left, 0, "{old} dropped");
        }
        // The new source is accepted; others are not.
        conn.execute("UPDATE submissions SET source = 'ctf'", []).unwrap();
        assert!(conn.execute("UPDATE submissions SET source = 'xml'", []).is_err());
    }
}
