//! The collector's side of the table: the agent-id index and every write. One `Store` per
//! collector process, behind a mutex; each method is one short critical section.

use std::collections::HashMap;

use sentinel_protocol::{Hello, Sample};

use crate::segment::now_ms;
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
    let status = Status::derive(rec.goodbye == 1, rec.last_seen_ms, rec.interval_ms, now_ms);
    matches!(status, Status::Down | Status::Stopped)
        && now_ms.saturating_sub(rec.last_seen_ms) > expiry_ms
}

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
        let last_seq = account::handshake(&mut rec, hello, address, now_ms());
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
        for Incoming {
            sample,
            wire,
            replayed,
        } in samples
        {
            let (outcome, point) = account::apply_sample(&mut rec, sample, replayed, now_ms());
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
    use sentinel_protocol::{Filesystem, Interface};

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
