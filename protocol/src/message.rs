//! The messages. Field names are the documented CBOR map keys (docs/PROTOCOL.md); each
//! message travels as a one-entry map `{ "<kind>": { ...fields } }`. Unknown keys are ignored
//! (so later minor additions stay readable by old peers); missing keys are an error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::*;

/// Everything an agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentMessage {
    /// First frame, answering the master's `challenge`.
    Hello(Hello),
    /// One fresh sample (in its compact wire form, see `wire`).
    Sample(#[serde(with = "crate::wire::sample")] Sample),
    /// Samples replayed from the spool, oldest first.
    Batch(Batch),
    /// Planned stop: the master marks the host `stopped` instead of letting it go `stale`.
    Goodbye(Goodbye),
}

/// Everything a master sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterMessage {
    /// First frame on every connection: the master's version and a fresh nonce.
    Challenge(Challenge),
    /// The handshake succeeded.
    Welcome(Welcome),
    /// The handshake (or a later frame) was refused; the master closes the connection.
    Refused(Refused),
    /// Cumulative acknowledgement.
    Ack(Ack),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// The master's protocol version.
    pub version: u16,
    /// Fresh random bytes for this connection; the agent's proof covers them.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the agent speaks.
    pub version: u16,
    /// Stable identity of the host: 32 lowercase hex digits (128 bits).
    pub agent_id: String,
    /// Random per agent process start; sequence numbers count from 1 within a run.
    pub run_id: u64,
    pub hostname: String,
    /// The agent's sampling cadence; liveness is judged against it.
    pub interval_ms: u32,
    /// The agent's wall clock (unix milliseconds) when it sent this frame.
    pub clock_ms: u64,
    pub agent_version: String,
    pub host: HostInfo,
    /// HMAC-SHA256(token, "sentinel-auth-v1" || nonce || agent_id).
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
    /// The agent's Ed25519 public key (32 bytes); absent from a 0.1.0 agent. Optional key
    /// (PROTOCOL.md 1.2): a master that does not know it ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub key: Option<Vec<u8>>,
    /// Ed25519 signature (64 bytes) with that key over [`crate::auth::key_message`]; present
    /// exactly when `key` is.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub key_proof: Option<Vec<u8>>,
    /// The host's labels, name -> value (docs/PROTOCOL.md section 2, `labels`); absent from a
    /// 0.1.0 agent and from an agent without labels. Optional key (PROTOCOL.md 1.2): a master
    /// that does not know it ignores it. Checked by [`crate::labels::validate`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Facts about the host that do not change while the agent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HostInfo {
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// Highest sequence number of this agent's current run that the master already holds
    /// (0 if none); the agent resumes after it.
    pub last_seq: u64,
    /// The master's wall clock (unix ms), so the agent can log a large offset.
    pub clock_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// One of "version", "auth", "invalid", "busy", "conflict".
    pub code: String,
    /// A sentence for the agent's log.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// Every sample of the current run with a sequence number <= this is stored.
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    #[serde(with = "crate::wire::samples")]
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Sequence number of the last sample the agent produced in this run.
    pub last_seq: u64,
    pub reason: String,
}

/// One reading of a host. On the wire it travels under short keys (`wire.rs`); these long
/// names are its JSON form. Counters (`*_bytes` of disks and interfaces) are cumulative since
/// boot; the master derives rates from consecutive samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Sample {
    /// Per run, starting at 1, no gaps: the spool's and the master's bookkeeping rely on it.
    pub seq: u64,
    /// Agent wall clock when the sample was taken (unix ms).
    pub ts_ms: u64,
    /// Samples this run dropped from a full spool before this one (cumulative).
    pub dropped: u64,
    pub cpu_percent: f32,
    pub cpu_user_percent: f32,
    pub cpu_system_percent: f32,
    pub cpu_iowait_percent: f32,
    pub cpu_steal_percent: f32,
    pub cpu_cores_percent: Vec<f32>,
    pub load1: f32,
    pub load5: f32,
    pub load15: f32,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub mem_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub filesystems: Vec<Filesystem>,
    pub interfaces: Vec<Interface>,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub uptime_s: u64,
    pub boot_time_s: u64,
    pub processes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Filesystem {
    pub mount: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// Free bytes including the blocks reserved for root (statvfs `f_bfree * f_frsize`), so
    /// that "used" is `total - free` as df shows it. Optional: 0.1.0 agents do not send it,
    /// and the master then falls back to `total - available`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
}

impl Filesystem {
    /// Used bytes as df shows them: `total - free`, or `total - available` without `free`.
    pub fn used_bytes(&self) -> u64 {
        used_bytes(self.total_bytes, self.available_bytes, self.free_bytes)
    }

    /// Used fraction as df computes it: `used / (used + available)` (0 for an empty one).
    pub fn used_ratio(&self) -> f64 {
        used_ratio(self.total_bytes, self.available_bytes, self.free_bytes)
    }
}

/// [`Filesystem::used_bytes`] from the figures alone (the master's borrowed fast path has no
/// `Filesystem`).
pub fn used_bytes(total: u64, available: u64, free: Option<u64>) -> u64 {
    total.saturating_sub(free.unwrap_or(available))
}

/// [`Filesystem::used_ratio`] from the figures alone.
pub fn used_ratio(total: u64, available: u64, free: Option<u64>) -> f64 {
    let used = used_bytes(total, available, free);
    match used.saturating_add(available) {
        0 => 0.0,
        whole => used as f64 / whole as f64,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// The agent's classification: `Some(false)` for a physical device (the kernel shows a
    /// `device` link for it in sysfs), `Some(true)` for a virtual one (veth, bridge, bond,
    /// tun/tap, ifb, dummy, ...). `None` from agents before 0.2, which did not say. The
    /// master's host totals count physical interfaces only when a host has any, so traffic
    /// that crosses a bridge or a veth pair on its way out is not counted twice.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "virtual")]
    pub is_virtual: Option<bool>,
}

/// Why a well-formed message is still unacceptable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Invalid {
    #[error("field {field} is {len} bytes long, the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("field {field} has {len} entries, the limit is {max}")]
    TooMany {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("field {field} is not a finite number in 0..=100")]
    BadPercent { field: &'static str },
    #[error("field {field} is not a finite non-negative number")]
    BadNumber { field: &'static str },
    #[error("agent_id must be 32 lowercase hex digits")]
    BadAgentId,
    #[error("interval_ms {0} is outside {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS}")]
    BadInterval(u32),
    #[error("proof must be {expected} bytes, got {got}")]
    BadProof { expected: usize, got: usize },
    #[error("key must be {expected} bytes, got {got}")]
    BadKey { expected: usize, got: usize },
    #[error("key_proof must be {expected} bytes, got {got}")]
    BadKeyProof { expected: usize, got: usize },
    #[error("key and key_proof must be sent together")]
    KeyWithoutProof,
    #[error("hostname is empty")]
    EmptyHostname,
    #[error("hostname has U+{code:04X} at byte {at}, outside the allowed A-Z a-z 0-9 - . _")]
    BadHostname { at: usize, code: u32 },
    #[error("field {field} ({value}) is above {bound} ({bound_value})")]
    Contradicts {
        field: &'static str,
        value: u64,
        bound: &'static str,
        bound_value: u64,
    },
    #[error("batch sequence numbers must be strictly ascending: seq {seq} follows {previous}")]
    BatchNotAscending { previous: u64, seq: u64 },
    #[error("seq must start at 1")]
    ZeroSeq,
    #[error("batch holds {0} samples, the limit is {MAX_BATCH_SAMPLES}")]
    BatchTooLarge(usize),
    #[error("batch is empty")]
    EmptyBatch,
    #[error("{0}")]
    Label(#[from] crate::labels::LabelError),
}

fn text(field: &'static str, s: &str, max: usize) -> Result<(), Invalid> {
    if s.len() > max {
        return Err(Invalid::TooLong {
            field,
            len: s.len(),
            max,
        });
    }
    Ok(())
}

/// `value` (of `field`) must not exceed `bound_value` (of `bound`): figures that contradict
/// each other are a broken or hostile agent, not data (a used above total showed as
/// 2147483647 %).
fn at_most(
    field: &'static str,
    value: u64,
    bound: &'static str,
    bound_value: u64,
) -> Result<(), Invalid> {
    if value > bound_value {
        return Err(Invalid::Contradicts {
            field,
            value,
            bound,
            bound_value,
        });
    }
    Ok(())
}

fn count(field: &'static str, len: usize, max: usize) -> Result<(), Invalid> {
    if len > max {
        return Err(Invalid::TooMany { field, len, max });
    }
    Ok(())
}

fn percent(field: &'static str, v: f32) -> Result<(), Invalid> {
    // A little over 100 happens when the kernel's tick accounting races the reader.
    if !(v.is_finite() && (0.0..=100.5).contains(&v)) {
        return Err(Invalid::BadPercent { field });
    }
    Ok(())
}

fn non_negative(field: &'static str, v: f32) -> Result<(), Invalid> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Invalid::BadNumber { field });
    }
    Ok(())
}

/// True for the agent-id format: 32 lowercase hex digits.
pub fn is_valid_agent_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Hello {
    /// Checks every limit of docs/PROTOCOL.md except the version and the proof's value.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !is_valid_agent_id(&self.agent_id) {
            return Err(Invalid::BadAgentId);
        }
        if self.hostname.is_empty() {
            return Err(Invalid::EmptyHostname);
        }
        text("hostname", &self.hostname, MAX_HOSTNAME_BYTES)?;
        if let Some((at, c)) = crate::text::first_bad_hostname_char(&self.hostname) {
            // The character's code, not the name: the reason goes back to the agent and
            // into the master's log, and must not carry the hostile text itself.
            return Err(Invalid::BadHostname {
                at,
                code: u32::from(c),
            });
        }
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            return Err(Invalid::BadInterval(self.interval_ms));
        }
        text("agent_version", &self.agent_version, MAX_TEXT_BYTES)?;
        text("host.os", &self.host.os, MAX_TEXT_BYTES)?;
        text("host.kernel", &self.host.kernel, MAX_TEXT_BYTES)?;
        text("host.arch", &self.host.arch, MAX_TEXT_BYTES)?;
        text("host.cpu_model", &self.host.cpu_model, MAX_TEXT_BYTES)?;
        if self.proof.len() != crate::auth::PROOF_BYTES {
            return Err(Invalid::BadProof {
                expected: crate::auth::PROOF_BYTES,
                got: self.proof.len(),
            });
        }
        match (&self.key, &self.key_proof) {
            (None, None) => {}
            (Some(key), Some(sig)) => {
                if key.len() != AGENT_KEY_BYTES {
                    return Err(Invalid::BadKey {
                        expected: AGENT_KEY_BYTES,
                        got: key.len(),
                    });
                }
                if sig.len() != KEY_PROOF_BYTES {
                    return Err(Invalid::BadKeyProof {
                        expected: KEY_PROOF_BYTES,
                        got: sig.len(),
                    });
                }
            }
            _ => return Err(Invalid::KeyWithoutProof),
        }
        crate::labels::validate(&self.labels)?;
        Ok(())
    }
}

impl Sample {
    /// Checks every limit of docs/PROTOCOL.md: lengths, counts, finite and ranged numbers.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.seq == 0 {
            return Err(Invalid::ZeroSeq);
        }
        percent("cpu_percent", self.cpu_percent)?;
        percent("cpu_user_percent", self.cpu_user_percent)?;
        percent("cpu_system_percent", self.cpu_system_percent)?;
        percent("cpu_iowait_percent", self.cpu_iowait_percent)?;
        percent("cpu_steal_percent", self.cpu_steal_percent)?;
        count("cpu_cores_percent", self.cpu_cores_percent.len(), MAX_CORES)?;
        for &c in &self.cpu_cores_percent {
            percent("cpu_cores_percent", c)?;
        }
        non_negative("load1", self.load1)?;
        non_negative("load5", self.load5)?;
        non_negative("load15", self.load15)?;
        let (mt, mt_name) = (self.mem_total_bytes, "mem_total_bytes");
        at_most("mem_used_bytes", self.mem_used_bytes, mt_name, mt)?;
        at_most("mem_available_bytes", self.mem_available_bytes, mt_name, mt)?;
        at_most(
            "swap_used_bytes",
            self.swap_used_bytes,
            "swap_total_bytes",
            self.swap_total_bytes,
        )?;
        count("filesystems", self.filesystems.len(), MAX_FILESYSTEMS)?;
        for fs in &self.filesystems {
            text("filesystems.mount", &fs.mount, MAX_TEXT_BYTES)?;
            text("filesystems.fs_type", &fs.fs_type, MAX_TEXT_BYTES)?;
            let total = ("filesystems.total_bytes", fs.total_bytes);
            at_most(
                "filesystems.available_bytes",
                fs.available_bytes,
                total.0,
                total.1,
            )?;
            if let Some(free) = fs.free_bytes {
                at_most("filesystems.free_bytes", free, total.0, total.1)?;
                at_most(
                    "filesystems.available_bytes",
                    fs.available_bytes,
                    "filesystems.free_bytes",
                    free,
                )?;
            }
        }
        count("interfaces", self.interfaces.len(), MAX_INTERFACES)?;
        for i in &self.interfaces {
            text("interfaces.name", &i.name, MAX_TEXT_BYTES)?;
        }
        Ok(())
    }
}

impl Batch {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.samples.is_empty() {
            return Err(Invalid::EmptyBatch);
        }
        if self.samples.len() > MAX_BATCH_SAMPLES {
            return Err(Invalid::BatchTooLarge(self.samples.len()));
        }
        self.samples.iter().try_for_each(Sample::validate)?;
        // Acks are cumulative: a batch out of order would have its earlier samples acked
        // as stored and then dropped as "older than the slot's last_seq" (silently lost).
        for pair in self.samples.windows(2) {
            if pair[1].seq <= pair[0].seq {
                return Err(Invalid::BatchNotAscending {
                    previous: pair[0].seq,
                    seq: pair[1].seq,
                });
            }
        }
        Ok(())
    }
}

impl Goodbye {
    /// The reason is text like every other field: bounded by [`MAX_TEXT_BYTES`].
    pub fn validate(&self) -> Result<(), Invalid> {
        text("reason", &self.reason, MAX_TEXT_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(total: u64, available: u64, free: Option<u64>) -> Filesystem {
        Filesystem {
            mount: "/".into(),
            fs_type: "ext4".into(),
            total_bytes: total,
            available_bytes: available,
            free_bytes: free,
        }
    }

    fn sample() -> Sample {
        Sample {
            seq: 1,
            mem_total_bytes: 100,
            mem_available_bytes: 40,
            mem_used_bytes: 60,
            swap_total_bytes: 10,
            swap_used_bytes: 10,
            filesystems: vec![fs(100, 20, Some(30))],
            ..Sample::default()
        }
    }

    #[test]
    fn figures_that_contradict_each_other_are_refused_naming_the_field() {
        type Edit = fn(&mut Sample);
        let cases: [(&str, Edit, Option<&str>); 10] = [
            ("consistent", |_| {}, None),
            ("used = total", |s| s.mem_used_bytes = 100, None),
            (
                "used > total",
                |s| s.mem_used_bytes = 101,
                Some("mem_used_bytes"),
            ),
            (
                "available > total",
                |s| s.mem_available_bytes = 101,
                Some("mem_available_bytes"),
            ),
            (
                "swap used > swap total",
                |s| s.swap_used_bytes = 11,
                Some("swap_used_bytes"),
            ),
            (
                "fs available > total",
                |s| s.filesystems[0] = fs(100, 101, None),
                Some("filesystems.available_bytes"),
            ),
            (
                "fs free > total",
                |s| s.filesystems[0] = fs(100, 20, Some(101)),
                Some("filesystems.free_bytes"),
            ),
            (
                "fs available > free",
                |s| s.filesystems[0] = fs(100, 31, Some(30)),
                Some("filesystems.available_bytes"),
            ),
            (
                "fs without free (0.1.0)",
                |s| s.filesystems[0] = fs(100, 100, None),
                None,
            ),
            (
                "all zero",
                |s| {
                    *s = Sample {
                        seq: 1,
                        ..Sample::default()
                    }
                },
                None,
            ),
        ];
        for (what, edit, field) in cases {
            let mut s = sample();
            edit(&mut s);
            match (s.validate(), field) {
                (Ok(()), None) => {}
                (Err(Invalid::Contradicts { field: got, .. }), Some(want)) => {
                    assert_eq!(got, want, "{what}");
                    let text = s.validate().unwrap_err().to_string();
                    assert!(text.contains(want), "{what}: {text}");
                }
                (other, _) => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn used_is_total_minus_free_and_the_ratio_is_as_df_computes_it() {
        // 100 blocks, 30 free, 20 available to users (10 reserved): df shows used 70, 78 %.
        let f = fs(100, 20, Some(30));
        assert_eq!(f.used_bytes(), 70);
        assert!((f.used_ratio() - 70.0 / 90.0).abs() < 1e-12);
        // A 0.1.0 agent sends no free: used = total - available.
        let old = fs(100, 20, None);
        assert_eq!(old.used_bytes(), 80);
        assert!((old.used_ratio() - 0.8).abs() < 1e-12);
        assert_eq!(fs(0, 0, Some(0)).used_ratio(), 0.0);
    }

    #[test]
    fn a_batch_must_be_strictly_ascending() {
        let at = |seqs: &[u64]| Batch {
            samples: seqs
                .iter()
                .map(|&seq| Sample {
                    seq,
                    ..Sample::default()
                })
                .collect(),
        };
        assert_eq!(at(&[1, 2, 5]).validate(), Ok(()));
        assert_eq!(
            at(&[2, 1]).validate(),
            Err(Invalid::BatchNotAscending {
                previous: 2,
                seq: 1
            })
        );
        assert_eq!(
            at(&[3, 3]).validate(),
            Err(Invalid::BatchNotAscending {
                previous: 3,
                seq: 3
            })
        );
        assert!(at(&[2, 1])
            .validate()
            .unwrap_err()
            .to_string()
            .contains("seq"));
    }

    #[test]
    fn a_goodbye_reason_is_bounded_like_every_text() {
        let bye = |n: usize| Goodbye {
            last_seq: 1,
            reason: "x".repeat(n),
        };
        assert_eq!(bye(MAX_TEXT_BYTES).validate(), Ok(()));
        assert!(matches!(
            bye(MAX_TEXT_BYTES + 1).validate(),
            Err(Invalid::TooLong {
                field: "reason",
                ..
            })
        ));
    }

    #[test]
    fn a_hello_with_a_hostname_outside_the_character_set_is_invalid() {
        let hello = |hostname: &str| Hello {
            version: 1,
            agent_id: "0123456789abcdef0123456789abcdef".into(),
            run_id: 1,
            hostname: hostname.into(),
            interval_ms: 1000,
            clock_ms: 0,
            agent_version: "t".into(),
            host: HostInfo::default(),
            proof: vec![0; crate::auth::PROOF_BYTES],
            key: None,
            key_proof: None,
            labels: Default::default(),
        };
        assert_eq!(hello("web-1.example_x").validate(), Ok(()));
        let bad = hello("ab\u{202e}c").validate().unwrap_err();
        assert_eq!(
            bad,
            Invalid::BadHostname {
                at: 2,
                code: 0x202e
            }
        );
        let text = bad.to_string();
        assert!(
            text.contains("hostname") && text.contains("U+202E at byte 2"),
            "{text}"
        );
        assert_eq!(
            hello("a\nb").validate(),
            Err(Invalid::BadHostname { at: 1, code: 10 })
        );
    }
}
