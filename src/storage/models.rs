use rusqlite::{OptionalExtension, params};

use super::{Store, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRecord {
    pub model_id: String,
    pub artifact_json: String,
    pub created_at: i64,
    pub active: bool,
    pub activated_at: Option<i64>,
}

const COLUMNS: &str = "model_id, artifact_json, created_at, active, activated_at";

fn read(r: &rusqlite::Row) -> rusqlite::Result<ModelRecord> {
    Ok(ModelRecord {
        model_id: r.get(0)?,
        artifact_json: r.get(1)?,
        created_at: r.get(2)?,
        active: r.get::<_, i64>(3)? == 1,
        activated_at: r.get(4)?,
    })
}

impl Store {
    /// Saves an artifact; saving the same id again with the same bytes is a no-op.
    /// Stores a model; `false` if one with this id exists (it is left as it was).
    pub fn save_model(&self, model_id: &str, artifact_json: &str, created_at: i64) -> StoreResult<bool> {
        let inserted = self.conn().execute(
            "INSERT INTO models (model_id, artifact_json, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (model_id) DO NOTHING",
            params![model_id, artifact_json, created_at],
        )?;
        Ok(inserted == 1)
    }

    pub fn get_model(&self, model_id: &str) -> StoreResult<Option<ModelRecord>> {
        let conn = self.conn();
        Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM models WHERE model_id = ?1"), [model_id], read).optional()?)
    }

    pub fn active_model(&self) -> StoreResult<Option<ModelRecord>> {
        let conn = self.conn();
        Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM models WHERE active = 1"), [], read).optional()?)
    }

    pub fn list_models(&self) -> StoreResult<Vec<ModelRecord>> {
        let conn = self.conn();
        let rows = conn
            .prepare(&format!("SELECT {COLUMNS} FROM models ORDER BY created_at DESC, model_id"))?
            .query_map([], read)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Makes `model_id` the one active model. Returns false if there is no such model.
    pub fn activate_model(&self, model_id: &str, now: i64) -> StoreResult<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: bool =
            tx.query_row("SELECT count(*) FROM models WHERE model_id = ?1", [model_id], |r| r.get::<_, i64>(0))? == 1;
        if exists {
            tx.execute("UPDATE models SET active = 0 WHERE active = 1", [])?;
            tx.execute("UPDATE models SET active = 1, activated_at = ?2 WHERE model_id = ?1", params![model_id, now])?;
        }
        tx.commit()?;
        Ok(exists)
    }
}
