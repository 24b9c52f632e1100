//! Versioned schema migrations, kept in `migrations/` and tracked by `PRAGMA user_version`.

use rusqlite::Connection;

use super::{StoreError, StoreResult};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_keys_and_submissions.sql"),
    include_str!("../../migrations/0002_models_scores_cohorts_audit.sql"),
    include_str!("../../migrations/0003_integrity.sql"),
    include_str!("../../migrations/0004_ctf_source.sql"),
];

pub fn apply(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::SchemaTooNew { found: version, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}
