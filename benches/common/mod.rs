//! Helpers the benchmarks share (each bench uses some of them).

use std::collections::BTreeSet;
use std::process::Command;

use riskid::auth::Role;
use riskid::domain::Urn;
use riskid::storage::{NewKey, Store};

/// Creates a key with `role` over `schools` directly in the store; returns its secret.
#[allow(dead_code)]
pub fn key(store: &Store, role: Role, schools: &BTreeSet<Urn>, label: &str) -> String {
    let (k, hash, prefix) = riskid::auth::generate_key();
    store
        .create_key(&NewKey { key_hash: &hash, prefix: &prefix, role, schools, label, created_at: 0 }, "operator:bench")
        .expect("key");
    k
}

/// The reference pipeline's Python, installed by `tools/reference/setup.sh` (which prints its
/// path last), or `None` if setup failed (the reason is printed).
#[allow(dead_code)]
pub fn python() -> Option<String> {
    let out = Command::new("sh").arg("tools/reference/setup.sh").output().ok()?;
    if !out.status.success() {
        eprintln!("reference setup failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8_lossy(&out.stdout).lines().last().map(str::to_owned)
}
