//! The secret key that authenticates the audit chain. It lives outside the database (a file
//! an operator can move to a secrets store), so someone who can write to the database cannot
//! forge a chain that verifies.

use std::io::Write;
use std::path::Path;

pub const DEFAULT_FILE: &str = "audit.key";

#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl AuditKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads the key file (64 hex characters).
    pub fn read(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the audit key {}: {e}", path.display()))?;
        let raw = hex::decode(text.trim()).map_err(|_| format!("the audit key {} is not hex", path.display()))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| format!("the audit key {} must be 32 bytes (64 hex characters)", path.display()))?;
        Ok(Self(bytes))
    }

    /// Reads the key, or creates a new random one (readable by the owner only) if the file
    /// does not exist. Returns the key and whether it was created.
    pub fn read_or_create(path: &Path) -> Result<(Self, bool), String> {
        if path.exists() {
            return Self::read(path).map(|k| (k, false));
        }
        let bytes: [u8; 32] = rand::random();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path).map_err(|e| format!("cannot create the audit key {}: {e}", path.display()))?;
        f.write_all(hex::encode(bytes).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write the audit key {}: {e}", path.display()))?;
        Ok((Self(bytes), true))
    }
}
