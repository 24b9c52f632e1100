//! An append-only, hash-chained audit trail, anchored outside the database.
//!
//! Each event's hash covers a canonical encoding of its content (owned here, not borrowed
//! from a JSON library's output) and the previous event's hash. Each hash is also
//! authenticated with a secret key kept outside the database (HMAC-SHA256), and the chain's
//! head is written, authenticated, to a file beside it and to checkpoints an operator keeps
//! elsewhere: so rewriting events and re-hashing the rest, or cutting events off the end,
//! is found by `verify` even by someone who can write to the database.

mod canonical;
pub mod key;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use key::AuditKey;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What was done. Stable names: they are part of every event's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "feed.accept")]
    FeedAccept,
    #[serde(rename = "scores.write")]
    ScoresWrite,
    #[serde(rename = "scores.rescore")]
    ScoresRescore,
    #[serde(rename = "model.train")]
    ModelTrain,
    #[serde(rename = "model.activate")]
    ModelActivate,
    #[serde(rename = "model.activate_forced")]
    ModelActivateForced,
    #[serde(rename = "cohort.propose")]
    CohortPropose,
    #[serde(rename = "decision.confirm")]
    DecisionConfirm,
    #[serde(rename = "decision.remove")]
    DecisionRemove,
    #[serde(rename = "decision.add")]
    DecisionAdd,
    #[serde(rename = "decision.undo")]
    DecisionUndo,
    #[serde(rename = "cohort.finalise")]
    CohortFinalise,
    #[serde(rename = "key.create")]
    KeyCreate,
    #[serde(rename = "key.revoke")]
    KeyRevoke,
}

impl Action {
    pub const ALL: [Action; 14] = [
        Action::FeedAccept,
        Action::ScoresWrite,
        Action::ScoresRescore,
        Action::ModelTrain,
        Action::ModelActivate,
        Action::ModelActivateForced,
        Action::CohortPropose,
        Action::DecisionConfirm,
        Action::DecisionRemove,
        Action::DecisionAdd,
        Action::DecisionUndo,
        Action::CohortFinalise,
        Action::KeyCreate,
        Action::KeyRevoke,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::FeedAccept => "feed.accept",
            Action::ScoresWrite => "scores.write",
            Action::ScoresRescore => "scores.rescore",
            Action::ModelTrain => "model.train",
            Action::ModelActivate => "model.activate",
            Action::ModelActivateForced => "model.activate_forced",
            Action::CohortPropose => "cohort.propose",
            Action::DecisionConfirm => "decision.confirm",
            Action::DecisionRemove => "decision.remove",
            Action::DecisionAdd => "decision.add",
            Action::DecisionUndo => "decision.undo",
            Action::CohortFinalise => "cohort.finalise",
            Action::KeyCreate => "key.create",
            Action::KeyRevoke => "key.revoke",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether the event's details hold pupil values (UPNs, scores shown, notes).
    pub fn holds_pupil_data(self) -> bool {
        matches!(
            self,
            Action::CohortPropose
                | Action::DecisionConfirm
                | Action::DecisionRemove
                | Action::DecisionAdd
                | Action::DecisionUndo
                | Action::CohortFinalise
        )
    }
}

/// What happened, before it is placed in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub at: i64,
    pub actor_key_id: i64,
    pub actor_role: String,
    pub action: Action,
    pub school_urn: Option<String>,
    pub subject: String,
    /// What was shown and decided, and digests of the state the change wrote.
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

/// The hash of an event: SHA-256 of its canonical encoding.
pub fn digest(seq: u64, e: &NewEvent, prev_hash: &str) -> String {
    hex::encode(Sha256::digest(canonical::event(seq, e, prev_hash)))
}

/// Places `new` after `prev` (or first) in the chain.
pub fn chain(prev: Option<&AuditEvent>, new: NewEvent) -> AuditEvent {
    let (seq, prev_hash) = prev.map_or((1, GENESIS.to_string()), |p| (p.seq + 1, p.hash.clone()));
    let hash = digest(seq, &new, &prev_hash);
    AuditEvent { seq, event: new, prev_hash, hash }
}

fn mac(key: &AuditKey, msg: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key.bytes()).expect("HMAC takes any key length");
    m.update(msg.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// The authentication code stored with each event.
pub fn event_mac(key: &AuditKey, hash: &str) -> String {
    mac(key, &format!("event:{hash}"))
}

/// A point in the chain, authenticated with the key: the head file and exported checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub mac: String,
}

impl Checkpoint {
    pub fn new(key: &AuditKey, seq: u64, hash: &str) -> Self {
        Self { seq, hash: hash.into(), mac: mac(key, &format!("checkpoint:{seq}:{hash}")) }
    }

    pub fn authentic(&self, key: &AuditKey) -> bool {
        Self::new(key, self.seq, &self.hash).mac == self.mac
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at event {seq}: {problem}")]
pub struct ChainBreak {
    pub seq: u64,
    pub problem: String,
}

/// One stored event as read back: its parsed content (or why it could not be read), and the
/// hash and MAC columns as stored.
pub struct StoredEvent {
    pub seq: u64,
    pub event: Result<AuditEvent, String>,
    pub hash: String,
    pub mac: String,
}

/// Checks every link, every stored hash and every MAC; returns the events checked.
pub fn verify(events: &[StoredEvent], key: &AuditKey) -> Result<Vec<AuditEvent>, ChainBreak> {
    verify_from(events, key, 1, GENESIS)
}

/// As [`verify`], for events that continue a chain whose event `first_seq - 1` has `prev`.
pub fn verify_from(
    events: &[StoredEvent],
    key: &AuditKey,
    first_seq: u64,
    prev: &str,
) -> Result<Vec<AuditEvent>, ChainBreak> {
    let (mut expected_seq, mut prev_hash) = (first_seq, prev.to_string());
    let mut out = Vec::with_capacity(events.len());
    for s in events {
        let brk = |problem: &str| ChainBreak { seq: s.seq, problem: problem.into() };
        if s.seq != expected_seq {
            return Err(ChainBreak {
                seq: expected_seq,
                problem: format!("expected event {expected_seq}, found {}: events are missing", s.seq),
            });
        }
        let e = s.event.as_ref().map_err(|why| brk(&format!("the event cannot be read ({why})")))?;
        if e.seq != s.seq {
            return Err(brk("the event's own sequence number differs from its row"));
        }
        if e.prev_hash != prev_hash {
            return Err(brk("does not link to the event before it"));
        }
        let recomputed = digest(e.seq, &e.event, &e.prev_hash);
        if recomputed != e.hash || recomputed != s.hash {
            return Err(brk("its content does not match its hash (altered)"));
        }
        if event_mac(key, &s.hash) != s.mac {
            return Err(brk("its hash is not authenticated by the audit key (rewritten, or another key)"));
        }
        prev_hash = s.hash.clone();
        expected_seq += 1;
        out.push(e.clone());
    }
    Ok(out)
}

/// Checks that the chain reaches an authenticated point: its event there has that hash.
pub fn verify_anchor(events: &[AuditEvent], anchor: &Checkpoint, key: &AuditKey, what: &str) -> Result<(), ChainBreak> {
    if !anchor.authentic(key) {
        return Err(ChainBreak {
            seq: anchor.seq,
            problem: format!("the {what} is not authenticated by the audit key"),
        });
    }
    let Some(e) = anchor.seq.checked_sub(1).and_then(|i| events.get(i as usize)) else {
        return Err(ChainBreak {
            seq: events.len() as u64 + 1,
            problem: format!(
                "the chain ends at event {} but the {what} records event {}: events were removed from the end",
                events.len(),
                anchor.seq
            ),
        });
    };
    if e.hash != anchor.hash {
        return Err(ChainBreak {
            seq: anchor.seq,
            problem: format!("the event differs from the one the {what} records: the chain was rewritten"),
        });
    }
    Ok(())
}

/// SHA-256 of some bytes, hex: digests of stored state kept in events.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: i64) -> NewEvent {
        NewEvent {
            at: 1_700_000_000 + i,
            actor_key_id: 3,
            actor_role: "link_worker".into(),
            action: Action::DecisionConfirm,
            school_urn: Some("100001".into()),
            subject: format!("cohort 1 member {i}"),
            details: serde_json::json!({"rank": i, "band": "high", "model_id": "m-1", "p": 0.25}),
        }
    }

    fn stored(key: &AuditKey, n: i64) -> Vec<StoredEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let e = chain(out.last(), ev(i));
            out.push(e);
        }
        out.into_iter()
            .map(|e| StoredEvent { seq: e.seq, hash: e.hash.clone(), mac: event_mac(key, &e.hash), event: Ok(e) })
            .collect()
    }

    fn key() -> AuditKey {
        AuditKey::from_bytes([7; 32])
    }

    #[test]
    fn a_chain_verifies_and_any_change_breaks_it() {
        let k = key();
        let c = stored(&k, 5);
        assert_eq!(verify(&c, &k).unwrap().len(), 5);
        let mut altered = stored(&k, 5);
        if let Ok(e) = &mut altered[2].event {
            e.event.details["rank"] = serde_json::json!(99);
        }
        assert_eq!(verify(&altered, &k).unwrap_err().seq, 3);
        let mut removed = stored(&k, 5);
        removed.remove(1);
        assert_eq!(verify(&removed, &k).unwrap_err().seq, 2);
        let mut hash_column = stored(&k, 5);
        hash_column[3].hash = "ab".repeat(32);
        assert_eq!(verify(&hash_column, &k).unwrap_err().seq, 4, "the stored hash column is compared too");
        let mut unreadable = stored(&k, 5);
        unreadable[1].event = Err("not JSON".into());
        assert_eq!(verify(&unreadable, &k).unwrap_err().seq, 2);
        assert!(verify(&c, &AuditKey::from_bytes([8; 32])).is_err(), "another key does not verify");
    }

    #[test]
    fn rewriting_and_rehashing_needs_the_key() {
        let k = key();
        let events: Vec<AuditEvent> = verify(&stored(&k, 5), &k).unwrap();
        // An attacker rewrites event 2 and re-hashes everything after it, without the key.
        let mut forged: Vec<AuditEvent> = events[..1].to_vec();
        for (i, e) in events[1..].iter().enumerate() {
            let mut n = e.event.clone();
            if i == 0 {
                n.actor_key_id = 99;
            }
            forged.push(chain(forged.last(), n));
        }
        let as_stored: Vec<StoredEvent> = forged
            .iter()
            .zip(stored(&k, 5))
            .map(|(e, s)| StoredEvent { seq: e.seq, hash: e.hash.clone(), mac: s.mac, event: Ok(e.clone()) })
            .collect();
        assert_eq!(verify(&as_stored, &k).unwrap_err().seq, 2);
    }

    #[test]
    fn anchors_find_truncation_and_rewrites() {
        let k = key();
        let events = verify(&stored(&k, 5), &k).unwrap();
        let head = Checkpoint::new(&k, 5, &events[4].hash);
        assert!(verify_anchor(&events, &head, &k, "head").is_ok());
        let e = verify_anchor(&events[..3], &head, &k, "head").unwrap_err();
        assert!(e.problem.contains("removed from the end"), "{e}");
        let wrong = Checkpoint::new(&k, 3, &events[4].hash);
        assert!(verify_anchor(&events, &wrong, &k, "checkpoint").unwrap_err().problem.contains("rewritten"));
        let mut forged = head.clone();
        forged.seq = 4;
        assert!(verify_anchor(&events, &forged, &k, "checkpoint").is_err(), "an edited checkpoint is not authentic");
    }

    #[test]
    fn the_encoding_is_ours_and_stable() {
        // A fixed event hashes to a fixed value: a dependency change cannot move it.
        let e = ev(1);
        let mut reordered = e.clone();
        reordered.details = serde_json::json!({"p": 0.25, "model_id": "m-1", "band": "high", "rank": 1});
        assert_eq!(digest(1, &e, GENESIS), digest(1, &reordered, GENESIS), "object key order does not matter");
        assert_eq!(digest(1, &e, GENESIS), "98f0c22cc5803bf76878944d9fe3a8f5e3adc03c70d86a2ad7070fddd88a4937");
    }
}
