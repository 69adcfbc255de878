//! Command line and /etc/sentinel/master.toml. Flags override the file; a wrong file fails at
//! start naming the file and the key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::http::auth::{ApiToken, BasicAuth};
use crate::tls::TlsFiles;

/// Used when `--config` is not given; a missing default file means "all defaults".
pub const DEFAULT_CONFIG: &str = "/etc/sentinel/master.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Collector,
    Http,
}

/// Sentinel master: collects agent samples into a shared-memory table and serves the
/// dashboard, the JSON API and Prometheus metrics.
#[derive(Debug, Parser, Default)]
#[command(name = "sentinel-master", version)]
pub struct Cli {
    /// Config file [default: /etc/sentinel/master.toml; a missing default file means defaults]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Agent listener address [default: 0.0.0.0:7410]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// HTTP listener address [default: 0.0.0.0:7411]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// File holding the fleet token (trailing whitespace trimmed); none = empty token
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Shared-memory segment name: the table is /dev/shm/NAME [default: sentinel-master]
    #[arg(long, value_name = "NAME")]
    pub shm_name: Option<String>,
    /// Host slots in the table [default: 4096]
    #[arg(long, value_name = "N")]
    pub capacity: Option<u32>,
    /// History ring points per host [default: 600]
    #[arg(long, value_name = "N")]
    pub history_points: Option<u32>,
    /// Concurrent agent connections [default: 16384]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Directory of the table snapshot <shm_name>.snapshot [default: /var/lib/sentinel]
    #[arg(long, value_name = "PATH")]
    pub state_dir: Option<PathBuf>,
    /// How often the table is snapshotted; "0s" = only at shutdown [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub snapshot_interval: Option<std::time::Duration>,
    /// Refuse agents whose hello carries no key (0.1.0 agents) with code `identity` [default: off]
    #[arg(long)]
    pub require_agent_keys: bool,
    /// Remove hosts down or stopped longer than this; "0" = never [default: 7days]
    #[arg(long, value_name = "DURATION", value_parser = parse_expiry)]
    pub host_expiry: Option<std::time::Duration>,
    /// New host identities accepted per peer address (IPv6: per /64) per minute; 0 = no
    /// bound [default: 60]
    #[arg(long, value_name = "N")]
    pub new_hosts_per_minute: Option<u32>,
    /// Once both listeners are bound, write their addresses to PATH (`agents=ADDR` and
    /// `http=ADDR` lines), so that a master started on port 0 can be found; removed at a
    /// clean stop. For tests and scripts; the packaged unit does not use it.
    #[arg(long, value_name = "PATH")]
    pub addr_file: Option<PathBuf>,
    /// Internal: the process role, set by the supervisor when it starts its children.
    #[arg(long, hide = true, value_enum)]
    pub role: Option<Role>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Operator commands against a running master (instead of running one).
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Remove a host (by agent id) from the running master's table, through its HTTP API on
    /// this machine with the operator token (`api_token_file`); exits 0 if it was removed.
    RemoveHost {
        /// The host's agent id (the `id` of /api/v1/hosts).
        id: String,
    },
    /// Forget the agent key pinned to a host (a reinstalled host that lost its key), so its
    /// next key is pinned; through the running master's HTTP API like `remove-host`.
    ForgetKey {
        /// The host's agent id (the `id` of /api/v1/hosts).
        id: String,
    },
}

/// `host_expiry`: a humantime duration, or a bare "0" for never.
pub fn parse_expiry(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("expected a duration like \"7days\" or \"12h\", or 0 for never: {e}"))
}

/// The keys of master.toml (every one optional; flags override them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Agent listener address, e.g. "0.0.0.0:7410".
    pub listen: Option<String>,
    /// HTTP listener address, e.g. "127.0.0.1:7411".
    pub http: Option<String>,
    /// Fleet token file.
    pub token_file: Option<PathBuf>,
    /// Shared-memory segment name (no '/').
    pub shm_name: Option<String>,
    /// Host slots.
    pub capacity: Option<u32>,
    /// History ring points per host.
    pub history_points: Option<u32>,
    /// Concurrent agent connections.
    pub max_connections: Option<usize>,
    /// Directory of the table snapshot `<shm_name>.snapshot` (the packaged unit has
    /// `StateDirectory=sentinel`), e.g. "/var/lib/sentinel".
    pub state_dir: Option<PathBuf>,
    /// How often the supervisor snapshots the table (it also does at shutdown), e.g. "10s";
    /// "0s" = only at shutdown.
    pub snapshot_interval: Option<String>,
    /// Optional: push every stored sample to a Prometheus remote-write endpoint.
    pub remote_write: Option<RemoteWriteFile>,
    /// Refuse agents that do not prove an Ed25519 key in their hello (0.1.0 agents, or an
    /// agent that cannot write its state directory) with code `identity` [default: false].
    /// Off, such agents stream and their hosts show `identity: "unpinned"`.
    pub require_agent_keys: Option<bool>,
    /// TLS on the agent listener: the certificate chain (PEM, server certificate first).
    /// With `tls_key_file`, agents must connect with TLS; plaintext ones are refused.
    pub tls_cert_file: Option<PathBuf>,
    /// TLS on the agent listener: the certificate's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// HTTPS on the HTTP listener (dashboard, API, /metrics, /healthz): certificate chain (PEM).
    pub http_tls_cert_file: Option<PathBuf>,
    /// HTTPS on the HTTP listener: the certificate's private key (PEM).
    pub http_tls_key_file: Option<PathBuf>,
    /// HTTP basic authentication for everything but /healthz: the user name.
    pub http_basic_auth_user: Option<String>,
    /// HTTP basic authentication: SHA-256 of the password, 64 hex digits
    /// (`printf %s 'PASSWORD' | sha256sum`). The password itself is never stored.
    pub http_basic_auth_sha256: Option<String>,
    /// Operator user (basic auth) who may also write (remove hosts): the user name. Without
    /// an operator user or `api_token_file`, the write routes do not exist (405).
    pub http_operator_user: Option<String>,
    /// Operator user: SHA-256 of the password, 64 hex digits, as `http_basic_auth_sha256`.
    pub http_operator_sha256: Option<String>,
    /// File holding the operator API token (trailing whitespace trimmed, at least 16 bytes),
    /// sent as `Authorization: Bearer TOKEN`; it may read and write. `sentinel-master
    /// remove-host` uses it.
    pub api_token_file: Option<PathBuf>,
    /// Remove hosts that have been `down` or `stopped` longer than this, e.g. "7days", "12h";
    /// "0" = never [default: "7days"].
    pub host_expiry: Option<String>,
    /// New host identities (agent ids the table does not know) accepted per peer address per
    /// minute (IPv6: per /64); more are refused `throttled`. 0 = no bound [default: 60]. A
    /// site with many new hosts behind one NAT address raises it for a rollout.
    pub new_hosts_per_minute: Option<u32>,
    /// Labels the master adds to hosts by hostname, so agents that cannot be reconfigured
    /// get labels too: `[[host_labels]]` tables, each `hostname = "GLOB"` (`*`, `?`, `[a-z]`,
    /// `[!a-z]`, matching the whole hostname, case-sensitively) and `labels = { ... }`. Every
    /// matching table applies, in file order, over the agent's own labels (a later one wins
    /// for the same name); a merged set beyond the bounds (16 labels, 512 bytes) refuses the
    /// hello `invalid`. Label rules as the agent's (docs/PROTOCOL.md section 2) [default: none].
    #[serde(default)]
    pub host_labels: Vec<HostLabelsFile>,
}

/// One `[[host_labels]]` table of master.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostLabelsFile {
    /// Required. Glob over the whole hostname, e.g. "db-*" or "web-[0-9]*.eu1.example".
    pub hostname: String,
    /// The labels to add, e.g. `{ role = "db", dc = "eu1" }`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// `[remote_write]` in master.toml: the http process pushes every sample the table stores
/// (replayed ones included, each with the agent's own timestamp) to a Prometheus
/// remote-write endpoint (protobuf + snappy, remote-write 1.0).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteFile {
    /// Required. The receiver, e.g. "http://127.0.0.1:9090/api/v1/write" (Prometheus with
    /// `--web.enable-remote-write-receiver`). Plain http only: put a TLS proxy in front of a
    /// remote https endpoint.
    pub url: String,
    /// Most samples held in memory waiting to be sent [default: 100000]. When full, the
    /// forwarder stops reading the table and the hosts' history rings buffer instead; samples
    /// the ring overwrites before they were read count as dropped.
    pub queue_samples: Option<usize>,
    /// Most samples per request [default: 2000].
    pub batch_samples: Option<usize>,
    /// Timeout of one request [default: "10s"].
    pub timeout: Option<String>,
    /// First retry delay after a failed request (5xx, 429 or no connection); doubles per
    /// failure up to `max_backoff` [default: "100ms"].
    pub min_backoff: Option<String>,
    /// Longest retry delay [default: "5s"]. A request the receiver rejects with another 4xx
    /// is not retried: its samples count as dropped.
    pub max_backoff: Option<String>,
    /// Extra labels added to every series, e.g. `{ master = "dc1" }`.
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

/// The effective remote_write settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWrite {
    /// "host:port" of the receiver.
    pub authority: String,
    /// Path and query of the receiver ("/api/v1/write").
    pub path: String,
    pub queue_samples: usize,
    pub batch_samples: usize,
    pub timeout: std::time::Duration,
    pub min_backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
    pub labels: Vec<(String, String)>,
}

pub const fn default_queue_samples() -> usize {
    100_000
}
pub const fn default_batch_samples() -> usize {
    2000
}
pub const DEFAULT_RW_TIMEOUT: &str = "10s";
pub const DEFAULT_MIN_BACKOFF: &str = "100ms";
pub const DEFAULT_MAX_BACKOFF: &str = "5s";

impl RemoteWriteFile {
    fn resolve(self) -> anyhow::Result<RemoteWrite> {
        let rest = self.url.strip_prefix("http://").with_context(|| {
            format!(
                "key `remote_write.url`: expected http://HOST:PORT/PATH (https is not supported; use a local TLS proxy), got {:?}",
                self.url
            )
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority
            .rsplit_once(':')
            .and_then(|(h, p)| (!h.is_empty()).then_some(p))
            .and_then(|p| p.parse::<u16>().ok())
            .is_none()
        {
            bail!(
                "key `remote_write.url`: expected http://HOST:PORT/PATH with a port, got {:?}",
                self.url
            );
        }
        let dur = |key: &str, v: Option<String>, default: &str| {
            let text = v.unwrap_or_else(|| default.to_string());
            humantime::parse_duration(&text)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| {
                    format!(
                        "key `remote_write.{key}`: expected a duration like \"5s\", got {text:?}"
                    )
                })
        };
        let queue_samples = self.queue_samples.unwrap_or(default_queue_samples());
        let batch_samples = self.batch_samples.unwrap_or(default_batch_samples());
        if queue_samples == 0 || batch_samples == 0 {
            bail!("key `remote_write.queue_samples`/`batch_samples`: expected at least 1");
        }
        let labels: Vec<(String, String)> = self.labels.unwrap_or_default().into_iter().collect();
        for (name, _) in &labels {
            let ok = name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if !ok
                || name.is_empty()
                || name.starts_with("__")
                || ["host", "id"].contains(&name.as_str())
            {
                bail!("key `remote_write.labels`: {name:?} is not a usable label name (Prometheus syntax; not host, id or __*)");
            }
        }
        Ok(RemoteWrite {
            authority: authority.to_string(),
            path: path.to_string(),
            queue_samples,
            batch_samples,
            timeout: dur("timeout", self.timeout, DEFAULT_RW_TIMEOUT)?,
            min_backoff: dur("min_backoff", self.min_backoff, DEFAULT_MIN_BACKOFF)?,
            max_backoff: dur("max_backoff", self.max_backoff, DEFAULT_MAX_BACKOFF)?,
            labels,
        })
    }
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: String,
    pub http: String,
    pub token_file: Option<PathBuf>,
    pub shm_name: String,
    pub capacity: u32,
    pub history_points: u32,
    pub max_connections: usize,
    pub remote_write: Option<RemoteWrite>,
    pub state_dir: PathBuf,
    pub snapshot_interval: std::time::Duration,
    /// TLS on the agent listener (`tls_cert_file`/`tls_key_file`).
    pub agent_tls: Option<TlsFiles>,
    /// HTTPS on the HTTP listener (`http_tls_cert_file`/`http_tls_key_file`).
    pub http_tls: Option<TlsFiles>,
    /// Basic auth on the HTTP listener (`http_basic_auth_user`/`http_basic_auth_sha256`).
    pub basic_auth: Option<BasicAuth>,
    /// `require_agent_keys`: a hello without a key is refused `identity`.
    pub require_agent_keys: bool,
    /// The operator user (`http_operator_user`/`http_operator_sha256`): reads and writes.
    pub operator: Option<BasicAuth>,
    /// The operator API token (`api_token_file`), kept as its SHA-256.
    pub api_token: Option<ApiToken>,
    /// Where the token came from (`sentinel-master remove-host` reads it again).
    pub api_token_file: Option<PathBuf>,
    /// `host_expiry`; zero = never.
    pub host_expiry: std::time::Duration,
    /// `new_hosts_per_minute`; zero = no bound.
    pub new_hosts_per_minute: u32,
    /// Where the supervisor reports the bound addresses (`--addr-file`; flag only).
    pub addr_file: Option<PathBuf>,
    /// `[[host_labels]]`, checked.
    pub host_labels: crate::collector::host_labels::HostLabels,
}

pub fn default_listen() -> String {
    "0.0.0.0:7410".into()
}
pub fn default_http() -> String {
    "0.0.0.0:7411".into()
}
pub fn default_shm_name() -> String {
    "sentinel-master".into()
}
pub const fn default_capacity() -> u32 {
    4096
}
pub const fn default_history_points() -> u32 {
    600
}
pub const fn default_max_connections() -> usize {
    sentinel_protocol::limits::DEFAULT_MAX_CONNECTIONS
}
pub fn default_state_dir() -> PathBuf {
    "/var/lib/sentinel".into()
}
/// A master killed without warning (power loss, SIGKILL and a reboot) loses at most this
/// much of every host's history; writing more often costs a full table copy each time.
pub const fn default_snapshot_interval() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

/// A host silent (down or stopped) this long is removed: a week covers a long weekend, a
/// holiday shutdown or a hardware repair, and still frees a decommissioned host's slot.
pub const fn default_host_expiry() -> std::time::Duration {
    std::time::Duration::from_secs(7 * 24 * 3600)
}
/// A real rollout behind one address (a NAT, a proxy) adds one host per Ansible fork; 60 a
/// minute lets 500 hosts in within ~9 minutes (refused agents retry with backoff), while one
/// token holder needs over an hour per address to fill a 4,096-slot table.
pub const fn default_new_hosts_per_minute() -> u32 {
    60
}

/// Upper bounds that keep the segment within reason (1M hosts x 1 day at 1 s would be TBs).
const MAX_CAPACITY: u32 = 1_000_000;
const MAX_HISTORY_POINTS: u32 = 86_400;

impl Config {
    pub fn load(cli: &Cli) -> anyhow::Result<Config> {
        let file = match &cli.config {
            Some(path) => parse_file(path, &read(path)?)?,
            None => match std::fs::read_to_string(DEFAULT_CONFIG) {
                Ok(text) => parse_file(Path::new(DEFAULT_CONFIG), &text)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot read config file {DEFAULT_CONFIG}"))
                }
            },
        };
        let source = cli
            .config
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_CONFIG))
            .display()
            .to_string();
        let config = Config {
            listen: cli
                .listen
                .clone()
                .or(file.listen)
                .unwrap_or_else(default_listen),
            http: cli.http.clone().or(file.http).unwrap_or_else(default_http),
            token_file: cli.token_file.clone().or(file.token_file),
            shm_name: cli
                .shm_name
                .clone()
                .or(file.shm_name)
                .unwrap_or_else(default_shm_name),
            capacity: cli.capacity.or(file.capacity).unwrap_or(default_capacity()),
            history_points: cli
                .history_points
                .or(file.history_points)
                .unwrap_or(default_history_points()),
            max_connections: cli
                .max_connections
                .or(file.max_connections)
                .unwrap_or(default_max_connections()),
            remote_write: match file.remote_write {
                Some(rw) => Some(
                    rw.resolve()
                        .with_context(|| format!("invalid configuration ({source})"))?,
                ),
                None => None,
            },
            state_dir: cli
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(default_state_dir),
            snapshot_interval: match (cli.snapshot_interval, file.snapshot_interval) {
                (Some(d), _) => d,
                (None, Some(text)) => humantime::parse_duration(&text).with_context(|| {
                    format!("invalid config file {source}: key `snapshot_interval`: expected a duration like \"10s\", got {text:?}")
                })?,
                (None, None) => default_snapshot_interval(),
            },
            agent_tls: TlsFiles::from_keys("tls_", file.tls_cert_file, file.tls_key_file)
                .with_context(|| format!("invalid config file {source}"))?,
            http_tls: TlsFiles::from_keys(
                "http_tls_",
                file.http_tls_cert_file,
                file.http_tls_key_file,
            )
            .with_context(|| format!("invalid config file {source}"))?,
            require_agent_keys: cli.require_agent_keys || file.require_agent_keys.unwrap_or(false),
            basic_auth: match (file.http_basic_auth_user, file.http_basic_auth_sha256) {
                (None, None) => None,
                (Some(user), Some(hash)) => Some(
                    BasicAuth::new(&user, &hash)
                        .map_err(|e| anyhow::anyhow!("invalid config file {source}: {e}"))?,
                ),
                _ => bail!("invalid config file {source}: keys `http_basic_auth_user` and `http_basic_auth_sha256`: set both or neither"),
            },
            operator: match (file.http_operator_user, file.http_operator_sha256) {
                (None, None) => None,
                (Some(user), Some(hash)) => Some(
                    BasicAuth::new(&user, &hash)
                        .map_err(|e| {
                            let e = e
                                .replace("http_basic_auth_user", "http_operator_user")
                                .replace("http_basic_auth_sha256", "http_operator_sha256");
                            anyhow::anyhow!("invalid config file {source}: {e}")
                        })?,
                ),
                _ => bail!("invalid config file {source}: keys `http_operator_user` and `http_operator_sha256`: set both or neither"),
            },
            api_token_file: file.api_token_file.clone(),
            api_token: match &file.api_token_file {
                None => None,
                Some(path) => Some(
                    ApiToken::new(read(path)?.trim_end())
                        .map_err(|e| anyhow::anyhow!("invalid config file {source}: key `api_token_file` ({}): {e}", path.display()))?,
                ),
            },
            host_expiry: match (cli.host_expiry, file.host_expiry) {
                (Some(d), _) => d,
                (None, Some(text)) => parse_expiry(&text).map_err(|e| {
                    anyhow::anyhow!("invalid config file {source}: key `host_expiry`: {e}, got {text:?}")
                })?,
                (None, None) => default_host_expiry(),
            },
            new_hosts_per_minute: cli
                .new_hosts_per_minute
                .or(file.new_hosts_per_minute)
                .unwrap_or(default_new_hosts_per_minute()),
            addr_file: cli.addr_file.clone(),
            host_labels: crate::collector::host_labels::HostLabels::new(
                file.host_labels.into_iter().map(|t| (t.hostname, t.labels)),
            )
            .map_err(|e| anyhow::anyhow!("invalid config file {source}: {e}"))?,
        };
        if let (Some(viewer), Some(op)) = (&config.basic_auth, &config.operator) {
            if viewer.user == op.user {
                bail!("invalid config file {source}: keys `http_basic_auth_user` and `http_operator_user`: the viewer and the operator need different user names");
            }
        }
        config
            .check()
            .with_context(|| format!("invalid configuration (flags or {source})"))?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.shm_name.is_empty()
            || self.shm_name.len() > 200
            || self.shm_name.contains('/')
            || self.shm_name.contains('\0')
        {
            bail!(
                "key `shm_name`: expected 1..=200 bytes without '/', got {:?}",
                self.shm_name
            );
        }
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            bail!(
                "key `capacity`: expected 1..={MAX_CAPACITY}, got {}",
                self.capacity
            );
        }
        if !(1..=MAX_HISTORY_POINTS).contains(&self.history_points) {
            bail!(
                "key `history_points`: expected 1..={MAX_HISTORY_POINTS}, got {}",
                self.history_points
            );
        }
        if self.max_connections == 0 {
            bail!("key `max_connections`: expected at least 1");
        }
        // Loaded once here so a bad certificate or key stops the master at start; each
        // child loads its own again.
        if let Some(tls) = &self.agent_tls {
            tls.server_config(&[])
                .context("key `tls_cert_file`/`tls_key_file`")?;
        }
        if let Some(tls) = &self.http_tls {
            tls.server_config(&[])
                .context("key `http_tls_cert_file`/`http_tls_key_file`")?;
        }
        for (key, addr) in [("listen", &self.listen), ("http", &self.http)] {
            if addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                bail!("key `{key}`: expected HOST:PORT, got {addr:?}");
            }
        }
        Ok(())
    }

    /// The fleet token: file content with trailing whitespace trimmed; empty without a file.
    pub fn token(&self) -> anyhow::Result<Vec<u8>> {
        match &self.token_file {
            None => Ok(Vec::new()),
            Some(path) => Ok(read(path)?.trim_end().as_bytes().to_vec()),
        }
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Parses master.toml; the error names the file and the offending key.
pub fn parse_file(path: &Path, text: &str) -> anyhow::Result<FileConfig> {
    toml::from_str::<FileConfig>(text).map_err(|e| {
        let key = e
            .span()
            .and_then(|span| key_at(text, span.start))
            .map(|k| format!("key `{k}`: "))
            .unwrap_or_default();
        anyhow::anyhow!(
            "invalid config file {}: {key}{}",
            path.display(),
            e.message()
        )
    })
}

/// The key on the line containing byte `pos` ("key = value").
fn key_at(text: &str, pos: usize) -> Option<String> {
    let start = text[..pos.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let key = line.split('=').next()?.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_file_and_the_key() {
        let cases = [
            ("capacity = \"many\"\n", "key `capacity`"),
            ("listen = \"0.0.0.0:7410\"\nbogus = 1\n", "key `bogus`"),
            ("history_points = -3\n", "key `history_points`"),
            ("shm_name = 5\n", "key `shm_name`"),
            (
                "[remote_write]\nurl = \"http://x:1/w\"\nretries = 3\n",
                "key `retries`",
            ),
        ];
        for (text, want) in cases {
            let err = parse_file(Path::new("/etc/x.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("/etc/x.toml") && err.contains(want),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        let cases: &[(Cli, &str)] = &[
            (
                Cli {
                    capacity: Some(0),
                    ..Cli::default()
                },
                "key `capacity`",
            ),
            (
                Cli {
                    history_points: Some(0),
                    ..Cli::default()
                },
                "key `history_points`",
            ),
            (
                Cli {
                    shm_name: Some("a/b".into()),
                    ..Cli::default()
                },
                "key `shm_name`",
            ),
            (
                Cli {
                    listen: Some("nowhere".into()),
                    ..Cli::default()
                },
                "key `listen`",
            ),
            (
                Cli {
                    max_connections: Some(0),
                    ..Cli::default()
                },
                "key `max_connections`",
            ),
        ];
        for (cli, want) in cases {
            let dir = std::env::temp_dir().join(format!("sentinel-cfg-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("empty.toml");
            std::fs::write(&path, "").unwrap();
            let cli = Cli {
                config: Some(path),
                ..Cli { ..clone_cli(cli) }
            };
            let err = format!("{:#}", Config::load(&cli).unwrap_err());
            assert!(err.contains(want), "{err}");
        }
    }

    fn clone_cli(c: &Cli) -> Cli {
        Cli {
            config: c.config.clone(),
            listen: c.listen.clone(),
            http: c.http.clone(),
            token_file: c.token_file.clone(),
            shm_name: c.shm_name.clone(),
            capacity: c.capacity,
            history_points: c.history_points,
            max_connections: c.max_connections,
            state_dir: c.state_dir.clone(),
            snapshot_interval: c.snapshot_interval,
            require_agent_keys: c.require_agent_keys,
            host_expiry: c.host_expiry,
            new_hosts_per_minute: c.new_hosts_per_minute,
            addr_file: c.addr_file.clone(),
            role: c.role,
            command: c.command.clone(),
        }
    }

    #[test]
    fn require_agent_keys_comes_from_the_file_or_the_flag_and_is_off_by_default() {
        let dir = std::env::temp_dir().join(format!("sentinel-cfg-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |text: &str, flag: bool| {
            let path = dir.join("m.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&Cli {
                config: Some(path),
                require_agent_keys: flag,
                ..Cli::default()
            })
            .map(|c| c.require_agent_keys)
        };
        assert!(!load("", false).unwrap());
        assert!(load("require_agent_keys = true\n", false).unwrap());
        assert!(load("require_agent_keys = false\n", true).unwrap());
        let err = format!(
            "{:#}",
            load("require_agent_keys = \"yes\"\n", false).unwrap_err()
        );
        assert!(err.contains("require_agent_keys"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flags_override_file_and_defaults_fill_the_rest() {
        let file = parse_file(
            Path::new("m.toml"),
            "capacity = 10\nhttp = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        assert_eq!(file.capacity, Some(10));
        let dir = std::env::temp_dir().join(format!("sentinel-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        std::fs::write(&path, "capacity = 10\nhttp = \"127.0.0.1:1\"\n").unwrap();
        let cli = Cli {
            config: Some(path),
            capacity: Some(20),
            ..Cli::default()
        };
        let c = Config::load(&cli).unwrap();
        assert_eq!(
            (
                c.capacity,
                c.http.as_str(),
                c.listen.as_str(),
                c.history_points
            ),
            (20, "127.0.0.1:1", "0.0.0.0:7410", 600)
        );
    }

    #[test]
    fn remote_write_section_is_checked_and_defaulted() {
        let load = |text: &str| {
            let dir = std::env::temp_dir().join(format!("sentinel-cfg3-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("rw.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&Cli {
                config: Some(path),
                ..Cli::default()
            })
            .map_err(|e| format!("{e:#}"))
        };
        let c = load("[remote_write]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\nlabels = { master = \"dc1\" }\n").unwrap();
        let rw = c.remote_write.unwrap();
        assert_eq!(
            (
                rw.authority.as_str(),
                rw.path.as_str(),
                rw.queue_samples,
                rw.batch_samples
            ),
            ("127.0.0.1:9090", "/api/v1/write", 100_000, 2000)
        );
        assert_eq!(rw.max_backoff, std::time::Duration::from_secs(5));
        assert_eq!(rw.labels, vec![("master".to_string(), "dc1".to_string())]);
        assert!(load("").unwrap().remote_write.is_none());
        for (text, want) in [
            (
                "[remote_write]\nurl = \"https://x:1/w\"\n",
                "https is not supported",
            ),
            ("[remote_write]\nurl = \"http://x/w\"\n", "with a port"),
            (
                "[remote_write]\nurl = \"http://x:1/w\"\ntimeout = \"soon\"\n",
                "remote_write.timeout",
            ),
            (
                "[remote_write]\nurl = \"http://x:1/w\"\nlabels = { id = \"x\" }\n",
                "remote_write.labels",
            ),
            ("[remote_write]\nqueue_samples = 5\n", "url"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn host_labels_tables_are_checked_at_load_naming_the_file_the_table_and_the_key() {
        let dir = std::env::temp_dir().join(format!("sentinel-cfg6-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labels.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::load(&Cli {
                config: Some(path.clone()),
                ..Cli::default()
            })
            .map_err(|e| format!("{e:#}"))
        };
        let ok = "[[host_labels]]\nhostname = \"db-*\"\nlabels = { role = \"db\" }\n\n\
                  [[host_labels]]\nhostname = \"*\"\nlabels = { dc = \"eu1\" }\n";
        let c = load(ok).unwrap();
        assert!(!c.host_labels.is_empty());
        assert!(load("").unwrap().host_labels.is_empty());
        let file = path.display().to_string();
        let cases = [
            (
                "[[host_labels]]\nhostname = \"*\"\nlabels = { dc = \"eu1\" }\n\n\
                 [[host_labels]]\nhostname = \"db-*\"\nlabels = { \"a-b\" = \"x\" }\n",
                "[[host_labels]] table 2 (counting from 1), key `labels`: label \"a-b\": name must match",
            ),
            (
                "[[host_labels]]\nhostname = \"db-[0-9\"\n",
                "[[host_labels]] table 1 (counting from 1), key `hostname`:",
            ),
            ("[[host_labels]]\nhostname = \"x\"\nlabel = {}\n", "key `label`"),
            ("[[host_labels]]\nlabels = {}\n", "hostname"),
        ];
        for (text, want) in cases {
            let err = load(text).unwrap_err();
            assert!(err.contains(&file) && err.contains(want), "{text:?}: {err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lifecycle_and_operator_keys_are_checked_at_load() {
        let dir = std::env::temp_dir().join(format!("sentinel-cfg5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |text: &str| {
            let path = dir.join("life.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&Cli {
                config: Some(path),
                ..Cli::default()
            })
            .map_err(|e| format!("{e:#}"))
        };
        let c = load("").unwrap();
        assert_eq!(c.host_expiry, default_host_expiry());
        assert_eq!(c.new_hosts_per_minute, 60);
        assert!(c.operator.is_none() && c.api_token.is_none());
        let c = load("host_expiry = \"0\"\nnew_hosts_per_minute = 0\n").unwrap();
        assert_eq!(
            (c.host_expiry, c.new_hosts_per_minute),
            (std::time::Duration::ZERO, 0)
        );
        assert_eq!(
            load("host_expiry = \"12h\"\n").unwrap().host_expiry,
            std::time::Duration::from_secs(43200)
        );
        let token = dir.join("api-token");
        std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
        let c = load(&format!(
            "api_token_file = {:?}\n",
            token.display().to_string()
        ))
        .unwrap();
        assert!(c.api_token.is_some());
        let hash = "c4bbcb1fbec99d65bf59d85c8cb62ee2db963f0fe106f483d9afa73bd4e39a8a";
        assert_eq!(
            load(&format!(
                "http_operator_user = \"admin\"\nhttp_operator_sha256 = \"{hash}\"\n"
            ))
            .unwrap()
            .operator
            .unwrap()
            .user,
            "admin"
        );
        std::fs::write(&token, "short\n").unwrap();
        for (text, want) in [
            ("host_expiry = \"soon\"\n".to_string(), "key `host_expiry`"),
            ("http_operator_user = \"admin\"\n".to_string(), "http_operator_sha256"),
            (
                "http_operator_user = \"admin\"\nhttp_operator_sha256 = \"nothex\"\n".to_string(),
                "key `http_operator_sha256`",
            ),
            (
                format!("http_operator_user = \"ops\"\nhttp_operator_sha256 = \"{hash}\"\nhttp_basic_auth_user = \"ops\"\nhttp_basic_auth_sha256 = \"{hash}\"\n"),
                "different user names",
            ),
            (format!("api_token_file = {:?}\n", token.display().to_string()), "key `api_token_file`"),
        ] {
            let err = load(&text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn tls_and_basic_auth_keys_come_in_pairs_and_are_checked_at_load() {
        let dir = std::env::temp_dir().join(format!("sentinel-cfg4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |text: &str| {
            let path = dir.join("tls.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&Cli {
                config: Some(path),
                ..Cli::default()
            })
            .map_err(|e| format!("{e:#}"))
        };
        let hash = "c4bbcb1fbec99d65bf59d85c8cb62ee2db963f0fe106f483d9afa73bd4e39a8a";
        let c = load(&format!(
            "http_basic_auth_user = \"ops\"\nhttp_basic_auth_sha256 = \"{hash}\"\n"
        ))
        .unwrap();
        assert_eq!(c.basic_auth.unwrap().user, "ops");
        assert!(c.agent_tls.is_none() && c.http_tls.is_none());
        for (text, want) in [
            ("tls_cert_file = \"/x.crt\"\n", "tls_key_file"),
            ("http_tls_key_file = \"/x.key\"\n", "http_tls_cert_file"),
            ("http_basic_auth_user = \"ops\"\n", "http_basic_auth_sha256"),
            (
                "http_basic_auth_user = \"ops\"\nhttp_basic_auth_sha256 = \"secret\"\n",
                "64 hex digits",
            ),
            (
                "tls_cert_file = \"/nonexistent.crt\"\ntls_key_file = \"/nonexistent.key\"\n",
                "/nonexistent.crt",
            ),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn missing_explicit_config_file_is_an_error() {
        let cli = Cli {
            config: Some("/nonexistent/sentinel.toml".into()),
            ..Cli::default()
        };
        assert!(
            format!("{:#}", Config::load(&cli).unwrap_err()).contains("/nonexistent/sentinel.toml")
        );
    }
}
