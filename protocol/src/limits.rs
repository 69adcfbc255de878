//! Every limit of the wire, in one place. Each number says why it is that number; both peers
//! enforce them, and docs/PROTOCOL.md repeats them.

use std::time::Duration;

/// Largest frame body (the CBOR item, without the 4-byte prefix). A replay batch of
/// [`MAX_BATCH_SAMPLES`] typical samples (~0.5-2 KiB each) fits with room to spare, and the
/// master never buffers more than this per connection, so memory stays bounded under abuse.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// Most samples in one `batch`: enough to drain an hour of spool in ~60 round trips, small
/// enough that one batch never stalls the master's other connections.
pub const MAX_BATCH_SAMPLES: usize = 64;

/// A connection that has not completed the handshake in this time is closed: it bounds what a
/// handshake flood or a slowloris can hold.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// An authenticated connection that sends nothing for this many declared intervals is closed
/// (and never sooner than [`MIN_IDLE_TIMEOUT`]): a live agent sends every interval.
pub const IDLE_TIMEOUT_INTERVALS: u32 = 10;

/// Floor of the idle timeout, so short intervals do not make brief network hiccups fatal.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Default cap on concurrent agent connections at one master (configurable). Each costs one
/// task and at most one frame buffer; 16384 covers a 10,000-host shard with headroom.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16384;

/// Shortest interval an agent may declare: faster sampling measures the sampler itself.
pub const MIN_INTERVAL_MS: u32 = 100;

/// Longest interval an agent may declare: beyond it, liveness (3 and 10 intervals) is too coarse.
pub const MAX_INTERVAL_MS: u32 = 300_000;

/// Longest hostname: a fully qualified DNS name is at most 253 bytes (and only the characters
/// of `text::is_valid_hostname` are allowed).
pub const MAX_HOSTNAME_BYTES: usize = 253;

/// Longest other text field (agent version, OS, kernel, CPU model, mount point, interface name).
pub const MAX_TEXT_BYTES: usize = 256;

/// Most CPU cores reported per sample (the largest machines today have ~1000 hardware threads).
pub const MAX_CORES: usize = 1024;

/// Most filesystems / network interfaces per sample; an agent reports the first ones it finds.
pub const MAX_FILESYSTEMS: usize = 64;
/// See [`MAX_FILESYSTEMS`].
pub const MAX_INTERFACES: usize = 64;

/// Length of the `key` in a hello: an Ed25519 public key is exactly 32 bytes (RFC 8032); any
/// other length is refused before the signature is looked at.
pub const AGENT_KEY_BYTES: usize = 32;

/// Length of the `key_proof` in a hello: an Ed25519 signature is exactly 64 bytes (RFC 8032).
pub const KEY_PROOF_BYTES: usize = 64;

/// CBOR nesting depth accepted by the decoder. Real messages nest at most 6 deep (a batch:
/// `frame::depth_tests`); the bound keeps a
/// hostile deeply-nested item from exhausting the stack.
pub const MAX_CBOR_DEPTH: usize = 16;

/// Idle timeout for an agent declaring `interval_ms`.
pub fn idle_timeout(interval_ms: u32) -> Duration {
    let by_interval =
        Duration::from_millis(u64::from(interval_ms) * u64::from(IDLE_TIMEOUT_INTERVALS));
    by_interval.max(MIN_IDLE_TIMEOUT)
}

/// Most labels one host carries (after the master adds its own from master.toml): enough for
/// role, site, team, environment and a few more; every label multiplies nothing but costs
/// bytes in the table, in every API host object and on every Prometheus series of the host.
pub const MAX_LABELS: usize = 16;

/// Longest label name: names are keys an operator types, not data.
pub const MAX_LABEL_NAME_BYTES: usize = 64;

/// Longest label value: fits a team, a rack or a URL-ish identifier; longer text is not a label.
pub const MAX_LABEL_VALUE_BYTES: usize = 128;

/// Largest label set, summed over labels as `name + value + 2` (`name=value\0`): the size of the
/// master's fixed table field, so a host's record stays a fixed size.
pub const MAX_LABELS_BYTES: usize = 512;

/// Label names Sentinel sets on its own series, API objects or filters; a host label of one of
/// these names would shadow or collide with it, so the hello is refused (never renamed).
pub const RESERVED_LABELS: &[&str] = &[
    "host",
    "id",
    "instance",
    "job",
    "status",
    "code",
    "alertname",
    "alertstate",
    "severity",
    "le",
    "quantile",
    "device",
    "mountpoint",
    "fstype",
    "interface",
    "hostname",
    "agent_id",
    "group_by",
];
