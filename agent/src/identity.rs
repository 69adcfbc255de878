//! The agent's stable identity: `<state_dir>/agent-id`, 32 lowercase hex digits. Created once
//! as the first 16 bytes of SHA-256(machine-id || "\n" || hostname), so it survives restarts
//! and differs for distinct `--hostname`s on one machine.
//!
//! Beside it, `<state_dir>/agent-key`: the agent's Ed25519 key pair as a PKCS#8 v2 document
//! (mode 0600), created once. The agent proves possession of it in every hello, and the master
//! pins its public key to the agent id, so a fleet-token holder cannot speak for this host.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair};

use sentinel_protocol::is_valid_agent_id;
use sha2::{Digest, Sha256};

/// Name of the id file inside the state directory.
pub const ID_FILE: &str = "agent-id";
/// Name of the key file inside the state directory.
pub const KEY_FILE: &str = "agent-key";
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
    #[error("{path} is not an Ed25519 PKCS#8 v2 key ({reason}); restore it from a backup, or delete it and have the master forget this host's key")]
    BadKey { path: PathBuf, reason: String },
    #[error("cannot create a key pair: {0}")]
    Generate(String),
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
    write_file_atomically(dir, path, format!("{id}\n").as_bytes(), 0o644)
}

/// The agent's one "write temp, fsync, rename, fsync the directory": a crash at any moment
/// leaves the old file or the new one, never a torn one. The temp file gets `mode` from its
/// creation on (a key is never readable by others, not even for a moment).
fn write_file_atomically(dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The agent's key pair, from `<state_dir>/agent-key`.
#[derive(Debug)]
pub enum LoadedKey {
    Existing(Ed25519KeyPair),
    Created(Ed25519KeyPair),
    /// The state dir is not writable: the agent runs without a key (its host shows
    /// `unpinned`), since a key that changes at every start would be refused once pinned.
    Unsaved(IdentityError),
}

/// Reads the key pair, creating it (mode 0600, atomically) if the file is missing. A file
/// that exists but cannot be read or is not a valid key fails the start: regenerating would
/// lock the host out of a master that pinned the old key.
pub fn load_or_create_key(state_dir: &Path) -> Result<LoadedKey, IdentityError> {
    let path = state_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(doc) => {
            return Ed25519KeyPair::from_pkcs8(&doc)
                .map(LoadedKey::Existing)
                .map_err(|e| IdentityError::BadKey {
                    path,
                    reason: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(IdentityError::Read { path, error }),
    }
    let rng = ring::rand::SystemRandom::new();
    let doc =
        Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| IdentityError::Generate(e.to_string()))?;
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
        .map_err(|e| IdentityError::Generate(e.to_string()))?;
    match write_file_atomically(state_dir, &path, doc.as_ref(), 0o600) {
        Ok(()) => Ok(LoadedKey::Created(pair)),
        Err(error) => Ok(LoadedKey::Unsaved(IdentityError::Write { path, error })),
    }
}

/// The hello's `key` and `key_proof` for this connection's nonce (PROTOCOL.md section 3).
pub fn key_proof(
    pair: &Ed25519KeyPair,
    nonce: &sentinel_protocol::Nonce,
    run_id: u64,
    agent_id: &str,
) -> (Vec<u8>, Vec<u8>) {
    let msg = sentinel_protocol::auth::key_message(nonce, run_id, agent_id);
    (
        pair.public_key().as_ref().to_vec(),
        pair.sign(&msg).as_ref().to_vec(),
    )
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

    fn temp_dir(what: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "sentinel-{what}-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ))
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600_then_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("key");
        let LoadedKey::Created(first) = load_or_create_key(&dir).unwrap() else {
            panic!("expected a new key")
        };
        let meta = std::fs::metadata(dir.join(KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let LoadedKey::Existing(again) = load_or_create_key(&dir).unwrap() else {
            panic!("expected the same key")
        };
        assert_eq!(first.public_key().as_ref(), again.public_key().as_ref());
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_key_file_fails_with_its_path_and_is_never_replaced() {
        let dir = temp_dir("badkey");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(KEY_FILE), b"garbage").unwrap();
        let err = load_or_create_key(&dir).unwrap_err();
        assert!(matches!(err, IdentityError::BadKey { .. }), "{err}");
        assert!(err.to_string().contains(KEY_FILE), "{err}");
        assert_eq!(std::fs::read(dir.join(KEY_FILE)).unwrap(), b"garbage");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn key_proof_verifies_for_this_nonce_run_and_id_only() {
        use ring::signature::{UnparsedPublicKey, ED25519};
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let (key, sig) = key_proof(&pair, &[1; 32], 7, id);
        let verify = |nonce: &[u8; 32], run: u64| {
            UnparsedPublicKey::new(&ED25519, &key)
                .verify(&sentinel_protocol::auth::key_message(nonce, run, id), &sig)
                .is_ok()
        };
        assert!(verify(&[1; 32], 7));
        assert!(!verify(&[2; 32], 7));
        assert!(!verify(&[1; 32], 8));
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
