//! sentinel-agent: samples this host's health and streams it to a Sentinel master.
//! See docs/CONTRACT.md for the command line and config, and the modules for each concern:
//! `config` (flags + agent.toml), `identity` (agent-id), `collect` (sysinfo + /proc),
//! `spool` (unacked samples), `ship` (the connection and event loop), `tls` (TLS to the
//! master).

mod backoff;
mod collect;
mod config;
mod identity;
mod ship;
mod spool;
mod tick;
mod tls;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Parser;
use sentinel_protocol::limits::MAX_HOSTNAME_BYTES;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Cli, Settings};
use crate::identity::Loaded;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "sentinel-agent cannot start.");
            if error.is::<Misconfigured>() {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// sysexits' EX_CONFIG: the unit has `RestartPreventExitStatus=78`, so systemd does not
/// restart an agent that cannot work until someone edits its configuration.
const EX_CONFIG: u8 = 78;

/// A start error that only a configuration change can fix.
#[derive(Debug)]
struct Misconfigured(anyhow::Error);

impl std::fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Misconfigured {}

fn misconfigured(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Misconfigured(e.into()))
}

/// Logs to stderr (journald picks them up), filtered by `SENTINEL_LOG` (default `info`):
/// a level (`debug`) or `target=level` directives (`info,sentinel_agent=debug`). Parsed with
/// tracing's `Targets`, which needs no regex engine: the agent stays small.
fn init_logging() {
    let spec = std::env::var("SENTINEL_LOG").unwrap_or_default();
    let parsed = if spec.trim().is_empty() {
        Ok(Targets::new().with_default(LevelFilter::INFO))
    } else {
        spec.parse::<Targets>()
    };
    let (filter, bad) = match parsed {
        Ok(f) => (f, None),
        Err(e) => (Targets::new().with_default(LevelFilter::INFO), Some(e)),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false),
        )
        .with(filter)
        .init();
    if let Some(error) = bad {
        tracing::warn!(%error, value = %spec, "Ignoring an invalid SENTINEL_LOG; logging at info.");
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let file = config::load_file(cli.config.as_deref()).map_err(misconfigured)?;
    let settings = Settings::resolve(&cli, file).map_err(misconfigured)?;
    let hostname = hostname(&settings)?;
    let mut collector = collect::Collector::new().context("cannot initialise collection")?;
    let host = collector.host_info();
    if cli.once {
        let agent_id = identity::load_or_derive(&settings.state_dir, &hostname)?;
        return print_once(collector, &hostname, &agent_id, &host);
    }
    let agent_id = agent_id(&settings.state_dir, &hostname)?;
    let key = agent_key(&settings.state_dir)?;
    let token = read_token(settings.token_file.as_deref()).map_err(misconfigured)?;
    let master = settings
        .master
        .clone()
        .ok_or_else(|| misconfigured(anyhow!("invalid master: is required")))?;
    let id = ship::Identity {
        agent_id: agent_id.as_str().to_owned(),
        hostname,
        host,
        token,
        run_id: fastrand::u64(..),
        interval: settings.interval,
        key,
        labels: settings.labels.clone(),
    };
    let tls = match &settings.tls {
        Some(t) => Some(tls::Client::new(t).map_err(misconfigured)?),
        None => None,
    };
    let opts = ship::Options {
        master,
        spool_samples: settings.spool_samples,
        reconnect_max: settings.reconnect_max,
        tls,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(ship::Agent::new(id, opts, collector).run());
    // A blocking-pool task (the master's name lookup) must not hold up the exit (dropping
    // the runtime would wait for it). A statvfs hung on the collector's helper thread does
    // not: that thread is not the runtime's.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result?;
    Ok(())
}

fn hostname(settings: &Settings) -> anyhow::Result<String> {
    let name = match &settings.hostname {
        Some(h) => h.trim().to_owned(),
        None => sysinfo::System::host_name()
            .map_err(|e| anyhow!("cannot read the system hostname ({e}); set --hostname"))?
            .trim()
            .to_owned(),
    };
    if name.is_empty() {
        return Err(anyhow!("the system hostname is empty; set --hostname"));
    }
    let name = collect::truncate_text(name, MAX_HOSTNAME_BYTES);
    // The master refuses any other hostname (docs/PROTOCOL.md section 2): fail at start,
    // naming it, rather than be refused at every connection.
    if let Some((at, c)) = sentinel_protocol::text::first_bad_hostname_char(&name) {
        return Err(anyhow!(
            "the hostname {} has U+{:04X} at byte {at}, outside the characters the master accepts (A-Z a-z 0-9 - . _); set --hostname",
            sentinel_protocol::escape(&name),
            u32::from(c)
        ));
    }
    Ok(name)
}

fn agent_id(state_dir: &Path, hostname: &str) -> anyhow::Result<identity::AgentId> {
    let loaded = identity::load_or_create(state_dir, hostname)?;
    match &loaded {
        Loaded::Existing(_) => {}
        Loaded::Created(id) => {
            tracing::info!(agent_id = %id, state_dir = %state_dir.display(), "Created this host's agent id.")
        }
        Loaded::Unsaved(id, error) => {
            tracing::warn!(agent_id = %id, %error, "Cannot persist the agent id; using the derived one.")
        }
    }
    Ok(loaded.id().clone())
}

fn agent_key(
    state_dir: &Path,
) -> anyhow::Result<Option<std::sync::Arc<ring::signature::Ed25519KeyPair>>> {
    use identity::LoadedKey;
    Ok(match identity::load_or_create_key(state_dir)? {
        LoadedKey::Existing(pair) => Some(std::sync::Arc::new(pair)),
        LoadedKey::Created(pair) => {
            tracing::info!(key_file = %state_dir.join(identity::KEY_FILE).display(), "Created this host's key pair.");
            Some(std::sync::Arc::new(pair))
        }
        LoadedKey::Unsaved(error) => {
            tracing::warn!(%error, "Cannot persist the key pair; connecting without a key (the master shows this host unpinned).");
            None
        }
    })
}

/// The fleet token: file content without trailing whitespace; no file = empty token.
fn read_token(path: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let Some(path) = path else {
        tracing::info!("No --token-file: using the empty token.");
        return Ok(Vec::new());
    };
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    let end = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    Ok(text[..end].to_vec())
}

/// The `--once` JSON: every `Sample` field under its own name, plus who took it.
#[derive(serde::Serialize)]
struct OnceOutput<'a> {
    #[serde(flatten)]
    sample: &'a sentinel_protocol::Sample,
    hostname: &'a str,
    agent_id: &'a str,
    host: &'a sentinel_protocol::HostInfo,
}

/// How long `--once` waits for the statvfs figures: a hung mount must not hang the command,
/// which then prints the sample without filesystems.
const ONCE_FILESYSTEMS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `--once --format json`: one real sample plus who took it, on stdout.
fn print_once(
    mut collector: collect::Collector,
    hostname: &str,
    agent_id: &identity::AgentId,
    host: &sentinel_protocol::HostInfo,
) -> anyhow::Result<()> {
    std::thread::sleep(collect::PRIMING_DELAY);
    collector.wait_filesystems(ONCE_FILESYSTEMS_WAIT);
    let mut sample = collector.sample().context("cannot take a sample")?;
    sample.seq = 1;
    sample.ts_ms = ship::unix_ms();
    let out = OnceOutput {
        sample: &sample,
        hostname,
        agent_id: agent_id.as_str(),
        host,
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
