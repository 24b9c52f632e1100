use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, params};

use serde_json::json;

use super::{CachedStatements, Store, StoreError, StoreResult};
use crate::audit::{Action, NewEvent};
use crate::auth::Role;
use crate::domain::Urn;

pub struct NewKey<'a> {
    pub key_hash: &'a str,
    pub prefix: &'a str,
    pub role: Role,
    pub schools: &'a BTreeSet<Urn>,
    pub label: &'a str,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: i64,
    pub prefix: String,
    pub role: Role,
    pub schools: BTreeSet<Urn>,
    pub label: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Creates a key and its audit event (naming `actor`, e.g. the operator), together.
    pub fn create_key(&self, k: &NewKey, actor: &str) -> StoreResult<i64> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO api_keys (key_hash, prefix, role, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![k.key_hash, k.prefix, k.role.as_str(), k.label, k.created_at],
            )?;
            let id = tx.last_insert_rowid();
            for urn in k.schools {
                tx.execute("INSERT INTO api_key_schools (key_id, urn) VALUES (?1, ?2)", params![id, urn.get()])?;
            }
            let schools: Vec<u32> = k.schools.iter().map(|u| u.get()).collect();
            super::audit::append(
                tx,
                key_event(
                    actor,
                    Action::KeyCreate,
                    id,
                    k.created_at,
                    json!({ "key_id": id, "role": k.role.as_str(), "schools": schools, "prefix": k.prefix, "key_sha256": k.key_hash }),
                ),
            )?;
            Ok(id)
        })
    }

    /// The active (not revoked) key with this hash.
    pub fn find_active_key(&self, key_hash: &str) -> StoreResult<Option<KeyRecord>> {
        let conn = self.conn();
        let id: Option<i64> = conn
            .cached_row("SELECT id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL", [key_hash], |r| r.get(0))
            .optional()?;
        match id {
            Some(id) => load_key(&conn, id),
            None => Ok(None),
        }
    }

    pub fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let conn = self.conn();
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM api_keys ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.into_iter().filter_map(|id| load_key(&conn, id).transpose()).collect()
    }

    /// Every key's stored hash, for verify.
    pub fn key_hashes(&self) -> StoreResult<Vec<(i64, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, key_hash FROM api_keys ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Revokes a key; returns false if there is no such active key.
    pub fn revoke_key(&self, id: i64, now: i64, actor: &str) -> StoreResult<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now],
            )?;
            if n == 1 {
                super::audit::append(tx, key_event(actor, Action::KeyRevoke, id, now, json!({ "key_id": id })))?;
            }
            Ok(n == 1)
        })
    }
}

fn key_event(actor: &str, action: Action, id: i64, at: i64, details: serde_json::Value) -> NewEvent {
    NewEvent {
        at,
        actor_key_id: 0,
        actor_role: actor.into(),
        action,
        school_urn: None,
        subject: format!("key {id}"),
        details,
    }
}

fn load_key(conn: &rusqlite::Connection, id: i64) -> StoreResult<Option<KeyRecord>> {
    let row = conn
        .cached_row("SELECT prefix, role, label, created_at, revoked_at FROM api_keys WHERE id = ?1", [id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((prefix, role, label, created_at, revoked_at)) = row else {
        return Ok(None);
    };
    let role = role.parse().map_err(|_| StoreError::Corrupt(format!("key {id} has unknown role")))?;
    let schools = conn
        .prepare_cached("SELECT urn FROM api_key_schools WHERE key_id = ?1 ORDER BY urn")?
        .query_map([id], |r| r.get::<_, u32>(0))?
        .map(|u| u.map_err(StoreError::from).and_then(|u| Urn::new(u).map_err(StoreError::Corrupt)))
        .collect::<StoreResult<_>>()?;
    Ok(Some(KeyRecord { id, prefix, role, schools, label, created_at, revoked_at }))
}
