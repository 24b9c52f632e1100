//! An append-only, hash-chained audit trail: each event's hash covers its content and the
//! previous event's hash, so altering, removing or reordering any event is detectable.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, before it is placed in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub at: i64,
    pub actor_key_id: i64,
    pub actor_role: String,
    /// e.g. `decision.confirm`, `cohort.finalise`, `model.activate`, `key.create`.
    pub action: String,
    pub school_urn: Option<String>,
    pub subject: String,
    /// What was shown and decided. Serialised with sorted keys, so hashing is canonical.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: u64,
    #[serde(flatten)]
    pub event: NewEvent,
    pub prev_hash: String,
    pub hash: String,
}

fn digest(seq: u64, e: &NewEvent, prev_hash: &str) -> String {
    // serde_json's Value keeps object keys sorted (no preserve_order feature), and the struct's
    // field order is fixed, so the bytes are canonical.
    let body = serde_json::to_vec(&(seq, e, prev_hash)).expect("event serialises");
    hex::encode(Sha256::digest(body))
}

/// Places `new` after `prev` (or first) in the chain.
pub fn chain(prev: Option<&AuditEvent>, new: NewEvent) -> AuditEvent {
    let (seq, prev_hash) = prev.map_or((1, GENESIS.to_string()), |p| (p.seq + 1, p.hash.clone()));
    let hash = digest(seq, &new, &prev_hash);
    AuditEvent { seq, event: new, prev_hash, hash }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at event {seq}: {problem}")]
pub struct ChainBreak {
    pub seq: u64,
    pub problem: String,
}

/// Checks every link; returns how many events were checked.
pub fn verify<'a>(events: impl IntoIterator<Item = &'a AuditEvent>) -> Result<u64, ChainBreak> {
    let (mut expected_seq, mut prev_hash) = (1u64, GENESIS.to_string());
    for e in events {
        let brk = |problem: &str| ChainBreak { seq: e.seq, problem: problem.into() };
        if e.seq != expected_seq {
            return Err(ChainBreak {
                seq: expected_seq,
                problem: format!("expected event {expected_seq}, found {}", e.seq),
            });
        }
        if e.prev_hash != prev_hash {
            return Err(brk("does not link to the event before it"));
        }
        if digest(e.seq, &e.event, &e.prev_hash) != e.hash {
            return Err(brk("its content does not match its hash (altered)"));
        }
        prev_hash = e.hash.clone();
        expected_seq += 1;
    }
    Ok(expected_seq - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: i64) -> NewEvent {
        NewEvent {
            at: 1_700_000_000 + i,
            actor_key_id: 3,
            actor_role: "link_worker".into(),
            action: "decision.confirm".into(),
            school_urn: Some("100001".into()),
            subject: format!("cohort 1 member {i}"),
            details: serde_json::json!({"rank": i, "band": "high", "model_id": "m-1"}),
        }
    }

    fn chain_of(n: i64) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let e = chain(out.last(), ev(i));
            out.push(e);
        }
        out
    }

    #[test]
    fn a_chain_verifies_and_any_change_breaks_it() {
        let c = chain_of(5);
        assert_eq!(verify(&c), Ok(5));
        let mut altered = c.clone();
        altered[2].event.details = serde_json::json!({"rank": 99, "band": "high", "model_id": "m-1"});
        assert_eq!(verify(&altered).unwrap_err().seq, 3);
        let mut removed = c.clone();
        removed.remove(1);
        assert_eq!(verify(&removed).unwrap_err().seq, 2);
        let mut swapped = c.clone();
        swapped.swap(3, 4);
        assert!(verify(&swapped).is_err());
        let mut rehashed = c;
        rehashed[1].event.actor_key_id = 9;
        rehashed[1].hash = digest(2, &rehashed[1].event, &rehashed[1].prev_hash);
        assert_eq!(verify(&rehashed).unwrap_err().seq, 3, "re-hashing one event breaks the next link");
    }
}
