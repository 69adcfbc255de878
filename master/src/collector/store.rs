//! The collector's side of the table: the agent-id index and every write. One `Store` per
//! collector process, behind a mutex; each method is one short critical section.

use std::collections::HashMap;

use sentinel_protocol::{Hello, Sample};
use sha2::{Digest, Sha256};

use super::handshake::{refusal, Refusal};
use crate::segment::{boot_ms, now_ms};
use crate::table::account::{self, Outcome};
use crate::table::layout::SAMPLE_BYTES;
use crate::table::{Table, TableError, Writer};

/// Why a handshake could not get a slot.
#[derive(Debug, PartialEq)]
pub enum SlotError {
    /// Every slot is taken by another host.
    Full(u32),
}

/// A connection lost its slot: to a newer connection of the same agent, or (`removed`)
/// because an operator removed the host.
#[derive(Debug, PartialEq)]
pub struct Superseded {
    pub removed: bool,
}

/// A host the store freed (operator removal or expiry).
#[derive(Debug, PartialEq)]
pub struct Removed {
    pub agent_id: String,
    pub hostname: String,
    /// A connection of the host was open; it is closed on its next frame.
    pub was_connected: bool,
    /// Master receive time of the host's last frame (unix ms).
    pub last_seen_ms: u64,
}

/// True if a host should expire: no open connection, `down` or `stopped`, and nothing
/// received for longer than `expiry_ms` (0 = never).
pub fn expired(rec: &crate::table::Record, connected: bool, now_ms: u64, expiry_ms: u64) -> bool {
    use crate::status::Status;
    if expiry_ms == 0 || connected || rec.in_use != 1 {
        return false;
    }
    let (seen, now) = crate::status::seen_and_now(rec.last_seen_ms, rec.last_seen_boot_ms, now_ms);
    let status = Status::derive(rec.goodbye == 1, seen, rec.interval_ms, now);
    matches!(status, Status::Down | Status::Stopped) && now.saturating_sub(seen) > expiry_ms
}

/// A connection of a pinned host counts as live for the clone rule while its last frame is
/// younger than this many of its declared intervals: a streaming agent sends one per
/// interval, so a second peer proving the same key then is a second machine, not a restart.
pub const CLONE_LIVE_INTERVALS: u64 = 3;
/// Floor of that liveness window, so short intervals do not turn a brief pause into a takeover.
pub const CLONE_LIVE_MIN_MS: u64 = 3_000;
/// A later refused hello proving the pinned key within this time of the first confirms a
/// clone if the connected one sent a frame in between (one alone can be a restarted agent
/// racing the master's notice of its old connection's end).
pub const CLONE_WINDOW_MS: u64 = 60_000;
/// The API and dashboard show a host `cloned` for this long after the last confirmed clone
/// hello: a clone that keeps retrying (at most every reconnect_max) keeps it shown.
pub const CLONED_SHOWN_MS: u64 = 600_000;

/// The fingerprint shown for a key: SHA-256 of the 32 key bytes, lowercase hex.
pub fn key_fingerprint(key: &[u8]) -> String {
    hex::encode(Sha256::digest(key))
}

/// [`Store::forget_key`] for an agent id the table does not hold.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("no host with agent id {0} in the table")]
pub struct UnknownHost(pub String);

pub struct Store {
    writer: Writer<'static>,
    /// agent id -> slot, rebuilt from the table at start.
    index: HashMap<String, usize>,
    /// slot -> the connection currently feeding it; an older connection of the same agent is
    /// closed on its next frame.
    owners: HashMap<usize, u64>,
    /// Free slots below `host_count` (removed or expired hosts), lowest reused first.
    free: std::collections::BTreeSet<usize>,
    /// Connections whose host was removed: closed (not refused) on their next frame.
    removed_conns: std::collections::HashSet<u64>,
}

impl Store {
    pub fn open(table: &'static Table) -> Result<Store, TableError> {
        let writer = table.writer()?;
        let mut index = HashMap::new();
        let mut free = std::collections::BTreeSet::new();
        for i in 0..table.host_count() {
            let mut rec = writer.record(i);
            if rec.in_use != 1 {
                free.insert(i);
                continue;
            }
            index.insert(rec.agent_id(), i);
            if rec.connected == 1 {
                // Connections died with the previous collector.
                rec.connected = 0;
                writer.commit(i, rec, None, None);
            }
        }
        Ok(Store {
            writer,
            index,
            owners: HashMap::new(),
            free,
            removed_conns: std::collections::HashSet::new(),
        })
    }

    /// True if this agent id has a slot (a known host is never refused for a full table or
    /// the new-identity rate).
    pub fn knows(&self, agent_id: &str) -> bool {
        self.index.contains_key(agent_id)
    }

    /// The hostname of a known agent id.
    pub fn hostname_of(&self, agent_id: &str) -> Option<String> {
        let slot = *self.index.get(agent_id)?;
        Some(self.writer.record(slot).hostname.get())
    }

    /// Frees the slot of `agent_id`. Its open connection, if any, is closed on its next frame.
    pub fn remove(&mut self, agent_id: &str) -> Option<Removed> {
        let slot = self.index.remove(agent_id)?;
        let rec = self.writer.record(slot);
        let was_connected = match self.owners.remove(&slot) {
            Some(conn) => {
                self.removed_conns.insert(conn);
                true
            }
            None => false,
        };
        self.writer.clear(slot);
        self.free.insert(slot);
        Some(Removed {
            agent_id: agent_id.to_string(),
            hostname: rec.hostname.get(),
            was_connected,
            last_seen_ms: rec.last_seen_ms,
        })
    }

    /// Removes every host that [`expired`] at `now_ms`.
    pub fn expire(&mut self, now_ms: u64, expiry_ms: u64) -> Vec<Removed> {
        if expiry_ms == 0 {
            return Vec::new();
        }
        let due: Vec<String> = self
            .index
            .iter()
            .filter(|&(_, &slot)| {
                let connected = self.owners.contains_key(&slot);
                expired(&self.writer.record(slot), connected, now_ms, expiry_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        due.iter().filter_map(|id| self.remove(id)).collect()
    }

    pub fn host_count(&self) -> usize {
        self.index.len()
    }

    /// Finds or allocates the host's slot, applies the handshake and makes `conn` its owner.
    /// Returns the slot and the `last_seq` for the welcome.
    pub fn handshake(
        &mut self,
        hello: &Hello,
        address: &str,
        conn: u64,
    ) -> Result<(usize, u64), SlotError> {
        let table = self.writer.table();
        let (slot, fresh) = match self.index.get(&hello.agent_id) {
            Some(&i) => (i, false),
            None => match self.free.first().copied() {
                Some(i) => (i, true),
                None => {
                    let i = table.host_count();
                    if i >= table.capacity() as usize {
                        return Err(SlotError::Full(table.capacity()));
                    }
                    (i, true)
                }
            },
        };
        let mut rec = if fresh {
            crate::table::Record::zeroed()
        } else {
            self.writer.record(slot)
        };
        let now = now_ms();
        let last_seq = account::handshake(&mut rec, hello, address, now);
        rec.last_seen_boot_ms = boot_ms();
        rec.clone_suspect_ms = 0;
        if let (None, Some(key)) = (rec.pinned_key(), hello.key.as_deref()) {
            if let Ok(key) = <[u8; 32]>::try_from(key) {
                rec.key = key;
                rec.key_pinned_ms = now;
                tracing::info!(agent_id = %hello.agent_id, peer = %address, key_sha256 = %key_fingerprint(&key), "pinned the agent's key to its id");
            }
        }
        self.writer.commit(slot, rec, None, None);
        if fresh {
            if !self.free.remove(&slot) {
                self.writer.publish_host_count(slot + 1);
            }
            self.index.insert(hello.agent_id.clone(), slot);
        }
        self.owners.insert(slot, conn);
        Ok((slot, last_seq))
    }

    /// Stores validated samples (each committed before the next), returns the ack value.
    pub fn ingest<'a>(
        &mut self,
        slot: usize,
        conn: u64,
        samples: impl IntoIterator<Item = Incoming<'a>>,
    ) -> Result<u64, Superseded> {
        self.check_owner(slot, conn)?;
        let mut rec = self.writer.record(slot);
        let boot = boot_ms();
        for Incoming {
            sample,
            wire,
            replayed,
        } in samples
        {
            let (outcome, point) = account::apply_sample(&mut rec, sample, replayed, now_ms());
            rec.last_seen_boot_ms = boot;
            match outcome {
                Outcome::Stored => {
                    let encoded;
                    let bytes = match wire {
                        Some(b) if b.len() <= SAMPLE_BYTES => Some(b),
                        _ => {
                            encoded = encode_bounded(sample);
                            encoded.as_deref()
                        }
                    };
                    self.writer.commit_in_place(slot, &mut rec, bytes, point);
                }
                Outcome::Duplicate => self.writer.commit_in_place(slot, &mut rec, None, None),
            }
        }
        Ok(rec.last_seq)
    }

    pub fn goodbye(&mut self, slot: usize, conn: u64) -> Result<(), Superseded> {
        self.check_owner(slot, conn)?;
        let mut rec = self.writer.record(slot);
        account::goodbye(&mut rec, now_ms());
        rec.last_seen_boot_ms = boot_ms();
        self.writer.commit(slot, rec, None, None);
        self.owners.remove(&slot);
        Ok(())
    }

    /// A connection ended; the host shows disconnected unless a newer connection owns it.
    pub fn disconnect(&mut self, slot: usize, conn: u64) {
        self.removed_conns.remove(&conn);
        if self.owners.get(&slot) != Some(&conn) {
            return;
        }
        self.owners.remove(&slot);
        let mut rec = self.writer.record(slot);
        if rec.connected == 1 {
            rec.connected = 0;
            self.writer.commit(slot, rec, None, None);
        }
    }

    /// The identity decision on a hello that passed the handshake checks, made before anything
    /// about the host changes: a refusal here leaves the host's record, its connection and
    /// its accounting untouched (only a clone report is written, see below).
    ///
    /// - The id is pinned to a key and the hello carries another key, or none: `identity`.
    /// - No key and `require_keys`: `identity`.
    /// - The hello proves the pinned key while another connection of the host is live (a
    ///   frame within [`CLONE_LIVE_INTERVALS`]): `conflict`, and the host's clone report is
    ///   updated (`clone_suspect_ms`, then `cloned_ms`/`cloned_address`). The live
    ///   connection keeps the slot: the accounting never flips between two machines.
    pub fn check_identity(
        &mut self,
        hello: &Hello,
        peer: &str,
        require_keys: bool,
    ) -> Result<(), Refusal> {
        let id = &hello.agent_id;
        let slot = self.index.get(id).copied();
        let rec = slot.map(|i| self.writer.record(i));
        let pinned = rec.as_ref().and_then(|r| r.pinned_key().copied());
        match (hello.key.as_deref(), pinned) {
            (None, Some(pin)) => {
                return Err(refusal(
                    "identity",
                    format!(
                        "peer {peer} sent no key for agent id {id}, which is pinned to key sha256:{}; if the host was reinstalled with an older agent, forget its key",
                        key_fingerprint(&pin)
                    ),
                ))
            }
            (None, None) if require_keys => {
                return Err(refusal(
                    "identity",
                    format!("peer {peer} sent no key for agent id {id} and this master has require_agent_keys = true; upgrade the agent"),
                ))
            }
            (Some(key), Some(pin)) if key != pin => {
                return Err(refusal(
                    "identity",
                    format!(
                        "peer {peer} proved key sha256:{} for agent id {id}, which is pinned to key sha256:{}; if the host was reinstalled, forget its key",
                        key_fingerprint(key),
                        key_fingerprint(&pin)
                    ),
                ))
            }
            (Some(_), Some(_)) => {}
            _ => return Ok(()),
        }
        // The hello proves the pinned key.
        let (Some(i), Some(mut rec)) = (slot, rec) else {
            return Ok(());
        };
        let now = now_ms();
        let live_ms = (u64::from(rec.interval_ms) * CLONE_LIVE_INTERVALS).max(CLONE_LIVE_MIN_MS);
        let (seen, since) =
            crate::status::seen_and_now(rec.last_seen_ms, rec.last_seen_boot_ms, now);
        if !self.owners.contains_key(&i) || since.saturating_sub(seen) > live_ms {
            return Ok(()); // a restart or a reconnect: the newcomer takes over as before
        }
        let other = rec.address.get();
        // Confirmed only once the connected one sent a frame after the first refused hello:
        // a half-open connection the agent itself already gave up (it reconnects before the
        // master noticed) sends nothing more, so a reconnecting agent is never called a clone.
        let fresh = rec.clone_suspect_ms != 0
            && now.saturating_sub(rec.clone_suspect_ms) <= CLONE_WINDOW_MS;
        let confirmed = fresh && rec.last_seen_ms > rec.clone_suspect_ms;
        if !fresh {
            rec.clone_suspect_ms = now;
        }
        if confirmed {
            rec.cloned_ms = now;
            rec.cloned_address.set(peer);
            tracing::warn!(agent_id = %id, peer = %peer, connected_peer = %other, "two machines prove the same agent key: a cloned identity; the connected one keeps the slot");
        }
        self.writer.commit(i, rec, None, None);
        Err(refusal(
            "conflict",
            format!("peer {peer}: agent id {id} with its pinned key is already connected from {other} (a cloned machine? give it a new identity: stop its agent and delete its state directory)"),
        ))
    }

    /// Clears the key pinned to `agent_id` (and its clone report), so the next keyed hello
    /// pins its key: a reinstalled host. Returns the forgotten key's fingerprint, if any.
    /// A connection open at that moment keeps streaming.
    pub fn forget_key(&mut self, agent_id: &str) -> Result<Option<String>, UnknownHost> {
        let slot = *self
            .index
            .get(agent_id)
            .ok_or_else(|| UnknownHost(agent_id.to_owned()))?;
        let mut rec = self.writer.record(slot);
        let old = rec.pinned_key().map(|k| key_fingerprint(k));
        rec.key = [0; 32];
        rec.key_pinned_ms = 0;
        rec.clone_suspect_ms = 0;
        rec.cloned_ms = 0;
        rec.cloned_address.set("");
        self.writer.commit(slot, rec, None, None);
        tracing::info!(agent_id = %agent_id, key_sha256 = ?old, "forgot the agent's key; its next key is pinned");
        Ok(old)
    }

    /// True if another live connection feeds this agent's slot.
    pub fn is_connected_elsewhere(&self, agent_id: &str) -> Option<(String, u64)> {
        let slot = *self.index.get(agent_id)?;
        self.owners.get(&slot)?;
        let rec = self.writer.record(slot);
        Some((rec.hostname.get(), rec.run_id))
    }

    fn check_owner(&mut self, slot: usize, conn: u64) -> Result<(), Superseded> {
        if self.owners.get(&slot) == Some(&conn) {
            Ok(())
        } else {
            Err(Superseded {
                removed: self.removed_conns.remove(&conn),
            })
        }
    }
}

/// One sample for [`Store::ingest`].
pub struct Incoming<'a> {
    pub sample: &'a Sample,
    /// The sample as it came on the wire (PROTOCOL.md section 4, short keys), when the frame
    /// held exactly one sample: stored as is instead of encoding it again.
    pub wire: Option<&'a [u8]>,
    /// It came in a `batch` (replay).
    pub replayed: bool,
}

/// The sample in its wire encoding (what the table's sample buffers hold, docs/ARCHITECTURE.md),
/// re-encoded with shorter lists if it does not fit the slot's buffer.
pub fn encode_bounded(s: &Sample) -> Option<Vec<u8>> {
    let mut s = std::borrow::Cow::Borrowed(s);
    for _ in 0..12 {
        let mut out = Vec::with_capacity(1024);
        if sentinel_protocol::encode_sample(&s, &mut out).is_ok() && out.len() <= SAMPLE_BYTES {
            return Some(out);
        }
        let t = s.to_mut();
        let half = |n: usize| n / 2;
        t.cpu_cores_percent
            .truncate(half(t.cpu_cores_percent.len()));
        t.filesystems.truncate(half(t.filesystems.len()));
        t.interfaces.truncate(half(t.interfaces.len()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentinel_protocol::{Filesystem, HostInfo, Interface};

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn store() -> Store {
        let t: &'static crate::table::TestTable =
            Box::leak(Box::new(crate::table::TestTable::new(4, 8)));
        Store::open(&t.table).unwrap()
    }

    fn hello(run_id: u64, key: Option<u8>) -> Hello {
        Hello {
            version: 1,
            agent_id: ID.into(),
            run_id,
            hostname: "web-1".into(),
            interval_ms: 1000,
            clock_ms: 1_000,
            agent_version: "t".into(),
            host: HostInfo::default(),
            proof: vec![0; 32],
            key: key.map(|k| vec![k; 32]),
            key_proof: key.map(|_| vec![0; 64]),
            labels: Default::default(),
        }
    }

    /// The record's bytes, to show a refusal wrote nothing.
    fn record_bytes(s: &Store, slot: usize) -> Vec<u8> {
        let r = s.writer.record(slot);
        // SAFETY: Record is plain old data.
        unsafe {
            std::slice::from_raw_parts(
                &r as *const crate::table::Record as *const u8,
                std::mem::size_of::<crate::table::Record>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn the_first_key_is_pinned_and_another_key_or_none_is_refused_without_a_write() {
        let mut s = store();
        s.check_identity(&hello(1, Some(1)), "p1", false).unwrap();
        let (slot, _) = s.handshake(&hello(1, Some(1)), "p1", 1).unwrap();
        assert_eq!(s.writer.record(slot).pinned_key(), Some(&[1; 32]));
        let before = record_bytes(&s, slot);
        for (h, what) in [
            (hello(1, Some(2)), "another key"),
            (hello(9, None), "no key"),
        ] {
            let r = s.check_identity(&h, "10.9.9.9:5", false).unwrap_err();
            assert_eq!(r.code, "identity", "{what}");
            assert!(r.reason.contains("10.9.9.9:5"), "{what}: {}", r.reason);
            assert_eq!(record_bytes(&s, slot), before, "{what}: nothing written");
        }
    }

    #[test]
    fn require_keys_refuses_a_hello_without_a_key_and_otherwise_it_is_unpinned() {
        let mut s = store();
        assert_eq!(
            s.check_identity(&hello(1, None), "p", true)
                .unwrap_err()
                .code,
            "identity"
        );
        s.check_identity(&hello(1, None), "p", false).unwrap();
        let (slot, _) = s.handshake(&hello(1, None), "p", 1).unwrap();
        assert_eq!(s.writer.record(slot).pinned_key(), None);
        // An unpinned host pins the first key it proves (an upgraded agent).
        s.check_identity(&hello(2, Some(3)), "p", false).unwrap();
        s.handshake(&hello(2, Some(3)), "p", 2).unwrap();
        assert_eq!(s.writer.record(slot).pinned_key(), Some(&[3; 32]));
    }

    #[test]
    fn a_second_machine_proving_the_key_while_the_first_streams_is_a_clone_not_a_takeover() {
        let mut s = store();
        let (slot, _) = s.handshake(&hello(1, Some(1)), "10.0.0.1:1", 1).unwrap();
        let r = s
            .check_identity(&hello(2, Some(1)), "10.0.0.2:2", false)
            .unwrap_err();
        assert_eq!(r.code, "conflict");
        assert!(r.reason.contains("10.0.0.1:1"), "{}", r.reason);
        let rec = s.writer.record(slot);
        assert_eq!(
            (rec.run_id, rec.cloned_ms),
            (1, 0),
            "one refusal only suspects"
        );
        assert_ne!(rec.clone_suspect_ms, 0);
        // Without a frame of the connected one in between, a retry proves nothing (it may be
        // the same agent reconnecting over a connection the master still holds).
        s.check_identity(&hello(3, Some(1)), "10.0.0.2:3", false)
            .unwrap_err();
        assert_eq!(s.writer.record(slot).cloned_ms, 0);
        std::thread::sleep(std::time::Duration::from_millis(2)); // a later master ms
        let sample = Sample {
            seq: 1,
            ..Sample::default()
        };
        let incoming = Incoming {
            sample: &sample,
            wire: None,
            replayed: false,
        };
        s.ingest(slot, 1, [incoming]).unwrap();
        s.check_identity(&hello(3, Some(1)), "10.0.0.2:3", false)
            .unwrap_err();
        let rec = s.writer.record(slot);
        assert_ne!(rec.cloned_ms, 0, "a retry while the first streams confirms");
        assert_eq!(rec.cloned_address.get(), "10.0.0.2:3");
        assert_eq!(
            (rec.run_id, rec.handshakes, rec.address.get()),
            (1, 1, "10.0.0.1:1".into())
        );
        // Once the first connection is gone, the key's holder is welcomed (a restart).
        s.disconnect(slot, 1);
        s.check_identity(&hello(4, Some(1)), "10.0.0.2:4", false)
            .unwrap();
    }

    #[test]
    fn forget_key_clears_the_pin_so_the_next_key_is_pinned() {
        let mut s = store();
        let (slot, _) = s.handshake(&hello(1, Some(1)), "p", 1).unwrap();
        s.disconnect(slot, 1);
        assert_eq!(
            s.check_identity(&hello(2, Some(2)), "p", false)
                .unwrap_err()
                .code,
            "identity"
        );
        assert_eq!(s.forget_key(ID).unwrap(), Some(key_fingerprint(&[1; 32])));
        assert_eq!(s.writer.record(slot).pinned_key(), None);
        s.check_identity(&hello(2, Some(2)), "p", false).unwrap();
        s.handshake(&hello(2, Some(2)), "p", 2).unwrap();
        assert_eq!(s.writer.record(slot).pinned_key(), Some(&[2; 32]));
        assert_eq!(
            s.forget_key("ffffffffffffffffffffffffffffffff"),
            Err(UnknownHost("ffffffffffffffffffffffffffffffff".into()))
        );
    }

    #[test]
    fn only_silent_down_or_stopped_hosts_expire() {
        let mut rec = crate::table::Record::zeroed();
        rec.in_use = 1;
        rec.interval_ms = 1000;
        rec.last_seen_ms = 1_000_000;
        let week = 7 * 24 * 3600 * 1000;
        let later = rec.last_seen_ms + week + 1;
        assert!(expired(&rec, false, later, week));
        assert!(!expired(&rec, true, later, week), "connected");
        assert!(!expired(&rec, false, later - 2, week), "not long enough");
        assert!(!expired(&rec, false, later, 0), "0 = never");
        // Shorter than 10 intervals: still stale, not down, so it stays.
        assert!(!expired(&rec, false, rec.last_seen_ms + 5000, 2000));
        rec.goodbye = 1;
        assert!(
            expired(&rec, false, rec.last_seen_ms + 2001, 2000),
            "stopped counts"
        );
        rec.in_use = 0;
        assert!(!expired(&rec, false, later, week), "a free slot");
    }

    #[test]
    fn oversized_sample_is_stored_with_truncated_lists() {
        let long = "x".repeat(250);
        let s = Sample {
            seq: 1,
            cpu_cores_percent: vec![12.5; 1024],
            filesystems: vec![
                Filesystem {
                    mount: long.clone(),
                    fs_type: long.clone(),
                    ..Default::default()
                };
                64
            ],
            interfaces: vec![
                Interface {
                    name: long,
                    ..Default::default()
                };
                64
            ],
            ..Sample::default()
        };
        let bytes = encode_bounded(&s).unwrap();
        assert!(bytes.len() <= SAMPLE_BYTES);
        let back = sentinel_protocol::decode_sample(&bytes).unwrap();
        assert_eq!(back.seq, 1);
        assert!(back.filesystems.len() < 64);
    }
}
