//! Audit use cases: append inside the caller's transaction, list, verify.

use super::{App, AppError, AppResult};
use crate::audit::{AuditEvent, ChainBreak, NewEvent, chain, verify};
use crate::auth::Principal;
use crate::storage::audit::{insert_event, last_event};

fn parse(json: &str) -> AppResult<AuditEvent> {
    serde_json::from_str(json).map_err(|e| AppError::Internal(format!("unreadable audit event: {e}")))
}

/// Appends an event to the chain, in the caller's transaction.
pub(crate) fn append(tx: &rusqlite::Connection, event: NewEvent) -> AppResult<AuditEvent> {
    let prev = last_event(tx)?.map(|j| parse(&j)).transpose()?;
    let e = chain(prev.as_ref(), event);
    let json = serde_json::to_string(&e).map_err(|e| AppError::Internal(e.to_string()))?;
    insert_event(tx, e.seq, &json, &e.hash)?;
    Ok(e)
}

impl App {
    /// Events after `after_seq`, filtered by action and school, at most `limit`.
    pub async fn audit_events(
        &self,
        who: &Principal,
        after_seq: u64,
        limit: usize,
        action: Option<String>,
        school: Option<String>,
    ) -> AppResult<Vec<AuditEvent>> {
        who.may_read_audit()?;
        self.blocking(move |s| {
            let mut out = Vec::new();
            let mut cursor = after_seq;
            // Filtered reads page through the chain until the page is full.
            loop {
                let batch = s.audit_events(cursor, 1000)?;
                if batch.is_empty() {
                    return Ok(out);
                }
                for j in &batch {
                    let e = parse(j)?;
                    cursor = e.seq;
                    let keep = action.as_ref().is_none_or(|a| &e.event.action == a)
                        && school.as_ref().is_none_or(|u| e.event.school_urn.as_ref() == Some(u));
                    if keep {
                        out.push(e);
                        if out.len() == limit {
                            return Ok(out);
                        }
                    }
                }
            }
        })
        .await
    }

    /// Recomputes the whole chain from the rows as stored.
    pub async fn verify_audit(&self, who: &Principal) -> AppResult<Result<u64, ChainBreak>> {
        who.may_read_audit()?;
        self.blocking(|s| {
            let mut events = Vec::new();
            let mut cursor = 0;
            loop {
                let batch = s.audit_events(cursor, 5000)?;
                if batch.is_empty() {
                    break;
                }
                for j in &batch {
                    let e = parse(j)?;
                    cursor = e.seq;
                    events.push(e);
                }
            }
            Ok(verify(&events))
        })
        .await
    }
}
