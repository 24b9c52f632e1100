//! Versioned schema migrations, kept in `migrations/` and tracked by `PRAGMA user_version`.

use rusqlite::Connection;

use super::{StoreError, StoreResult};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_keys_and_submissions.sql"),
    include_str!("../../migrations/0002_models_scores_cohorts_audit.sql"),
    include_str!("../../migrations/0003_integrity.sql"),
    include_str!("../../migrations/0004_ctf_source.sql"),
    include_str!("../../migrations/0005_compact_rows_and_scores.sql"),
];

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
             INSERT INTO pupil_terms (submission_id, upn, urn, term_index, row_json) VALUES (1, 'U', 100001, 6075, '{}');",
        )
        .unwrap();
        apply(&mut conn).unwrap();
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let fk: bool = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0)).unwrap();
        assert!(fk, "foreign keys are on again");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM pupil_terms p JOIN submissions s ON s.id = p.submission_id", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1);
        // Rows written as JSON before schema 5 are kept as they were, under the renamed column.
        let kept: String = conn.query_row("SELECT row_data FROM pupil_terms", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, "{}");
        // The new source is accepted; others are not.
        conn.execute("UPDATE submissions SET source = 'ctf'", []).unwrap();
        assert!(conn.execute("UPDATE submissions SET source = 'xml'", []).is_err());
    }
}
