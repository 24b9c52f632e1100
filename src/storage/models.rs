use rusqlite::{OptionalExtension, params};

use std::sync::Arc;

use super::{CachedStatements, RequestKey, RequestResult, Store, StoreResult, Tx};
use crate::audit::NewEvent;
use crate::model::ModelArtifact;

/// A stored model: its artifact parsed (or why it cannot be used by this build, e.g. an
/// older feature spec), and the digest of the bytes as trained.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRecord {
    pub model_id: String,
    pub artifact: Result<Arc<ModelArtifact>, String>,
    pub artifact_sha256: String,
    /// The artifact exactly as stored (its SHA-256 is `artifact_sha256`).
    pub artifact_json: Arc<str>,
    pub created_at: i64,
    pub active: bool,
    pub activated_at: Option<i64>,
}

const COLUMNS: &str = "model_id, artifact_json, created_at, active, activated_at";

fn read(r: &rusqlite::Row) -> rusqlite::Result<ModelRecord> {
    let json: String = r.get(1)?;
    Ok(ModelRecord {
        model_id: r.get(0)?,
        artifact: ModelArtifact::from_json(&json).map(Arc::new),
        artifact_sha256: crate::audit::sha256_hex(json.as_bytes()),
        artifact_json: Arc::from(json.as_str()),
        created_at: r.get(2)?,
        active: r.get::<_, i64>(3)? == 1,
        activated_at: r.get(4)?,
    })
}

impl Store {
    /// Stores a trained model with its audit event and the request's result, in one
    /// transaction; `false` if a model with this id exists (it is left as it was).
    pub fn save_model(
        &self,
        model_id: &str,
        artifact_json: &str,
        created_at: i64,
        rk: Option<&RequestKey>,
        event: NewEvent,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT INTO models (model_id, artifact_json, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (model_id) DO NOTHING",
                params![model_id, artifact_json, created_at],
            )?;
            if inserted == 1 {
                super::audit::append(tx, event)?;
                tx.remember(rk, &RequestResult::Model { model_id: model_id.into() })?;
            }
            Ok(inserted == 1)
        })
    }

    /// The earlier result of a request, if it was made (for requests whose work is done
    /// outside a transaction, such as training).
    pub fn prior_request(&self, rk: &RequestKey) -> StoreResult<Option<RequestResult>> {
        self.write(|tx| tx.prior(Some(rk)))
    }

    /// As [`Store::prior_request`], for a request that may have no id.
    pub fn prior_request_if(&self, rk: Option<&RequestKey>) -> StoreResult<Option<RequestResult>> {
        match rk {
            Some(rk) => self.prior_request(rk),
            None => Ok(None),
        }
    }

    pub fn get_model(&self, model_id: &str) -> StoreResult<Option<ModelRecord>> {
        let conn = self.conn();
        Ok(conn
            .cached_row(&format!("SELECT {COLUMNS} FROM models WHERE model_id = ?1"), [model_id], read)
            .optional()?)
    }

    pub fn active_model(&self) -> StoreResult<Option<ModelRecord>> {
        let conn = self.conn();
        Ok(conn.cached_row(&format!("SELECT {COLUMNS} FROM models WHERE active = 1"), [], read).optional()?)
    }

    pub fn list_models(&self) -> StoreResult<Vec<ModelRecord>> {
        let conn = self.conn();
        let rows = conn
            // Newest stored first, by insertion order: pagination counts from the oldest end,
            // which stays put when models are added (created_at has one-second ties).
            .prepare(&format!("SELECT {COLUMNS} FROM models ORDER BY rowid DESC"))?
            .query_map([], read)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Installs and activates a model with no request behind it (the bundled model on first
    /// start), with its audit event.
    pub fn install_active_model(
        &self,
        model_id: &str,
        artifact_json: &str,
        now: i64,
        event: NewEvent,
    ) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO models (model_id, artifact_json, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (model_id) DO NOTHING",
                params![model_id, artifact_json, now],
            )?;
            set_active(tx, model_id, now)?;
            super::audit::append(tx, event)?;
            Ok(())
        })
    }

    /// Makes `model_id` the active model and queues each school's latest term for scoring
    /// with it, with the audit event and the request's result, in one transaction. The queue
    /// is drained after (and, after a crash, at start-up), so an activation always completes.
    /// Returns the earlier result for a repeated request, or `None` if there is no such model.
    pub fn activate_model(
        &self,
        model_id: &str,
        now: i64,
        rk: Option<&RequestKey>,
        event: impl FnOnce(&[i64], usize) -> NewEvent,
    ) -> StoreResult<Option<RequestResult>> {
        self.write(|tx| {
            if let Some(prior) = tx.prior(rk)? {
                return Ok(Some(prior));
            }
            let exists: bool = tx
                .query_row("SELECT count(*) FROM models WHERE model_id = ?1", [model_id], |r| r.get::<_, i64>(0))?
                == 1;
            if !exists {
                return Ok(None);
            }
            set_active(tx, model_id, now)?;
            let (queued, pupils) = super::scores::queue_latest(tx, model_id)?;
            let schools = queued.len();
            super::audit::append(tx, event(&queued, pupils))?;
            let result = RequestResult::Activation { model_id: model_id.into(), schools, pupils };
            tx.remember(rk, &result)?;
            Ok(Some(result))
        })
    }
}

fn set_active(tx: &Tx, model_id: &str, now: i64) -> StoreResult<()> {
    tx.execute("UPDATE models SET active = 0 WHERE active = 1", [])?;
    tx.execute("UPDATE models SET active = 1, activated_at = ?2 WHERE model_id = ?1", params![model_id, now])?;
    Ok(())
}
