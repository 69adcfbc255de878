//! The agent's stable identity: `<state_dir>/agent-id`, 32 lowercase hex digits. Created once
//! as the first 16 bytes of SHA-256(machine-id || "\n" || hostname), so it survives restarts
//! and differs for distinct `--hostname`s on one machine.

use std::io::Write;
use std::path::{Path, PathBuf};

use sentinel_protocol::is_valid_agent_id;
use sha2::{Digest, Sha256};

/// Name of the id file inside the state directory.
pub const ID_FILE: &str = "agent-id";
const MACHINE_ID: &str = "/etc/machine-id";

/// 32 lowercase hex digits; only constructed from a validated string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentId(String);

impl AgentId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} does not hold 32 lowercase hex digits")]
    Malformed { path: PathBuf },
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The id derived from a machine id and a hostname; random when there is no machine id.
pub fn derive(machine_id: Option<&str>, hostname: &str) -> AgentId {
    let bytes: [u8; 16] = match machine_id.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => {
            let mut h = Sha256::new();
            h.update(m.as_bytes());
            h.update(b"\n");
            h.update(hostname.as_bytes());
            let digest = h.finalize();
            let mut out = [0u8; 16];
            out.copy_from_slice(&digest[..16]);
            out
        }
        None => std::array::from_fn(|_| fastrand::u8(..)),
    };
    AgentId(hex::encode(bytes))
}

fn read_machine_id() -> Option<String> {
    std::fs::read_to_string(MACHINE_ID).ok()
}

/// Outcome of [`load_or_create`], so the caller can log what happened.
#[derive(Debug)]
pub enum Loaded {
    Existing(AgentId),
    Created(AgentId),
    /// Derived but not persisted (the state dir is not writable): stable only while
    /// /etc/machine-id exists.
    Unsaved(AgentId, IdentityError),
}

impl Loaded {
    pub fn id(&self) -> &AgentId {
        match self {
            Loaded::Existing(id) | Loaded::Created(id) | Loaded::Unsaved(id, _) => id,
        }
    }
}

/// Reads `<state_dir>/agent-id`, creating it if missing. A malformed file is an error (an
/// operator edited it; guessing would split the host's history).
pub fn load_or_create(state_dir: &Path, hostname: &str) -> Result<Loaded, IdentityError> {
    load_or_create_with(state_dir, hostname, read_machine_id().as_deref())
}

/// Like [`load_or_create`] but never writes: `--once` must leave no trace on the host.
pub fn load_or_derive(state_dir: &Path, hostname: &str) -> Result<AgentId, IdentityError> {
    let path = state_dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if is_valid_agent_id(text.trim()) => Ok(AgentId(text.trim().to_owned())),
        Ok(_) => Err(IdentityError::Malformed { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(derive(read_machine_id().as_deref(), hostname))
        }
        Err(error) => Err(IdentityError::Read { path, error }),
    }
}

fn load_or_create_with(
    state_dir: &Path,
    hostname: &str,
    machine_id: Option<&str>,
) -> Result<Loaded, IdentityError> {
    let path = state_dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if !is_valid_agent_id(id) {
                return Err(IdentityError::Malformed { path });
            }
            return Ok(Loaded::Existing(AgentId(id.to_owned())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(IdentityError::Read { path, error }),
    }
    let id = derive(machine_id, hostname);
    match write_atomically(state_dir, &path, &id) {
        Ok(()) => Ok(Loaded::Created(id)),
        Err(error) => Ok(Loaded::Unsaved(id, IdentityError::Write { path, error })),
    }
}

fn write_atomically(dir: &Path, path: &Path, id: &AgentId) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{ID_FILE}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{id}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_id_is_stable_and_distinct_per_hostname() {
        let a = derive(Some("3d1219c7c4c5404aaa1f6d2a48adfda4\n"), "web-1");
        assert_eq!(a, derive(Some("3d1219c7c4c5404aaa1f6d2a48adfda4"), "web-1"));
        assert_ne!(a, derive(Some("3d1219c7c4c5404aaa1f6d2a48adfda4"), "web-2"));
        assert_ne!(a, derive(Some("00000000000000000000000000000000"), "web-1"));
        assert!(is_valid_agent_id(a.as_str()), "{a}");
    }

    #[test]
    fn derived_id_matches_the_documented_formula() {
        let digest = Sha256::digest(b"abc\nhost");
        assert_eq!(
            derive(Some("abc"), "host").as_str(),
            hex::encode(&digest[..16])
        );
    }

    #[test]
    fn without_machine_id_the_id_is_random_but_valid() {
        let a = derive(None, "h");
        assert!(is_valid_agent_id(a.as_str()));
        assert_ne!(a, derive(None, "h"));
    }

    #[test]
    fn id_file_is_created_once_then_reused() {
        let dir = std::env::temp_dir().join(format!(
            "sentinel-id-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let first = load_or_create_with(&dir, "h1", Some("m")).unwrap();
        assert!(matches!(first, Loaded::Created(_)));
        // Even another hostname reuses the persisted id: the file is the identity.
        let again = load_or_create_with(&dir, "h2", Some("m")).unwrap();
        assert!(matches!(again, Loaded::Existing(_)));
        assert_eq!(first.id(), again.id());
        let text = std::fs::read_to_string(dir.join(ID_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", first.id()));

        std::fs::write(dir.join(ID_FILE), "not an id\n").unwrap();
        assert!(matches!(
            load_or_create_with(&dir, "h1", Some("m")),
            Err(IdentityError::Malformed { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
