//! Command line and `agent.toml`: what the operator asked for, resolved into [`Settings`].
//! Flags override the file; a wrong file fails at start naming the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sentinel_protocol::limits::{MAX_INTERVAL_MS, MIN_INTERVAL_MS};
use serde::Deserialize;

/// Where the agent looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sentinel/agent.toml";

/// Default sampling cadence.
pub const fn default_interval() -> Duration {
    Duration::from_secs(1)
}

/// Default directory for the persisted agent id.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/sentinel")
}

/// One hour of samples at the default 1 s cadence.
pub const fn default_spool_samples() -> usize {
    3600
}

/// Cap of the reconnect backoff: a restarted master sees its fleet back within ~10 s.
pub const fn default_reconnect_max() -> Duration {
    Duration::from_secs(10)
}

/// sentinel-agent: samples this host's health and streams it to a Sentinel master.
#[derive(Debug, Parser)]
#[command(name = "sentinel-agent", version, about)]
pub struct Cli {
    /// Config file (TOML). Default /etc/sentinel/agent.toml; a missing default file means
    /// defaults, a missing explicit file is an error.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The master's agent listener, HOST:PORT (required unless in the config or with --once).
    #[arg(long, value_name = "HOST:PORT")]
    pub master: Option<String>,
    /// Sampling cadence, e.g. "1s", "500ms" (100ms..=300s).
    // Values are parsed in `Settings::resolve`, not by clap: clap's `error-context` (which
    // names the flag in its own errors) cost 13.9 KB of the agent's 2 MB budget.
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Hostname reported to the master (default: the system hostname). ASCII letters,
    /// digits, `-`, `.` and `_` only (the master refuses others).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// File holding the fleet token (trailing whitespace trimmed). None = empty token.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Directory holding the persisted `agent-id` (default /var/lib/sentinel).
    #[arg(long, value_name = "PATH")]
    pub state_dir: Option<PathBuf>,
    /// Unacknowledged samples kept for replay (default 3600); the oldest are dropped beyond it.
    #[arg(long, value_name = "N")]
    pub spool_samples: Option<String>,
    /// Cap of the exponential reconnect backoff (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub reconnect_max: Option<String>,
    /// A label sent in every hello, KEY=VALUE (repeatable); overrides the config file's
    /// `labels` entry of the same key. Names follow Prometheus label-name rules and may not be
    /// one Sentinel sets itself (docs/PROTOCOL.md section 2).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Print one real sample and exit (needs no master and no token).
    #[arg(long)]
    pub once: bool,
    /// Output format of --once.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
}

/// `agent.toml`. Every key is optional; a flag given on the command line wins.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The master's agent listener as "host:port", e.g. "sentinel.example.net:7410".
    pub master: Option<String>,
    /// Sampling cadence in human units ("1s", "500ms"); 100ms..=300s. Default "1s".
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Hostname reported to the master. Default: the system hostname. ASCII letters,
    /// digits, `-`, `.` and `_` only (the master refuses others; the agent then fails at
    /// start naming the hostname).
    pub hostname: Option<String>,
    /// File holding the fleet token; its trailing whitespace is trimmed. Default: no token
    /// (an empty token, which only a master without a token accepts).
    pub token_file: Option<PathBuf>,
    /// Directory holding `agent-id`, this host's stable identity. Default "/var/lib/sentinel".
    pub state_dir: Option<PathBuf>,
    /// How many unacknowledged samples are kept for replay after a reconnect. Default 3600
    /// (one hour at 1 s). When full, the oldest are dropped and the drop is reported.
    pub spool_samples: Option<usize>,
    /// Cap of the reconnect backoff (starts at 250ms, doubles, +-20% jitter). Default "10s".
    #[serde(default, with = "humantime_serde")]
    pub reconnect_max: Option<Duration>,
    /// TLS to the master, verified against this CA bundle (PEM) and `tls_server_name`.
    /// Setting this or `tls_pin_sha256` turns TLS on. Default: plaintext.
    pub tls_ca_file: Option<PathBuf>,
    /// TLS to the master, which must present exactly this certificate: the SHA-256 of its
    /// DER form, 64 hex digits (colons allowed), e.g. from
    /// `openssl x509 -in master.crt -outform DER | sha256sum`. With `tls_ca_file` both must
    /// hold.
    pub tls_pin_sha256: Option<String>,
    /// The name the master's certificate must carry (with `tls_ca_file`). Default: the host
    /// part of `master`.
    pub tls_server_name: Option<String>,
    /// This host's labels, e.g. `labels = { role = "db", dc = "eu1" }`, sent in every hello
    /// (a change takes effect at the next start). At most 16; names `[a-zA-Z_][a-zA-Z0-9_]*`,
    /// not `__`-prefixed nor one Sentinel sets itself (`host`, `id`, ...); values 1..=128 bytes
    /// without control characters (docs/PROTOCOL.md section 2). `--label` flags override
    /// entries of the same key. A bad label fails the start naming it. Default: none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid config file {path}: {error}")]
    Parse {
        path: PathBuf,
        /// toml's message (it names the key) and where, on one line: logs are one line per event.
        error: String,
    },
    #[error("invalid {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The resolved settings the agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// None only with `--once`, which never connects.
    pub master: Option<String>,
    pub interval: Duration,
    /// None = ask the system.
    pub hostname: Option<String>,
    pub token_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub spool_samples: usize,
    pub reconnect_max: Duration,
    /// None = plaintext.
    pub tls: Option<TlsSettings>,
    /// The file's labels with the flags' over them; sent in every hello.
    pub labels: BTreeMap<String, String>,
}

/// How the agent verifies the master's certificate (at least one of the two is set).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub pin_sha256: Option<[u8; 32]>,
    /// Checked against the certificate with `ca_file`; also sent as SNI.
    pub server_name: String,
}

/// Parses `agent.toml` text; `path` only names the file in errors.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let message = e.message().trim().replace('\n', " ");
        let error = match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let column = before.len() - line_start + 1;
                // The key on that line, so the message names it even for a bad value.
                let line_text = text[line_start..].lines().next().unwrap_or("");
                match line_text.split_once('=') {
                    Some((key, _)) if !key.trim().is_empty() => format!(
                        "key `{}`: {message} (line {line}, column {column})",
                        key.trim()
                    ),
                    _ => format!("{message} (line {line}, column {column})"),
                }
            }
            None => message,
        };
        ConfigError::Parse {
            path: path.to_owned(),
            error,
        }
    })
}

/// Reads the config file: explicit path must exist; the default path may be missing.
pub fn load_file(explicit: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    match std::fs::read_to_string(path) {
        Ok(text) => parse_file(path, &text),
        Err(e) if explicit.is_none() && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(FileConfig::default())
        }
        Err(error) => Err(ConfigError::Read {
            path: path.to_owned(),
            error,
        }),
    }
}

impl Settings {
    /// Merges flags over the file and checks every value.
    pub fn resolve(cli: &Cli, file: FileConfig) -> Result<Settings, ConfigError> {
        let master = cli.master.clone().or(file.master);
        let tls = tls_settings(
            master.as_deref(),
            file.tls_ca_file,
            file.tls_pin_sha256,
            file.tls_server_name,
        )?;
        let settings = Settings {
            master,
            interval: flag_duration("--interval", &cli.interval)?
                .or(file.interval)
                .unwrap_or(default_interval()),
            hostname: cli.hostname.clone().or(file.hostname),
            token_file: cli.token_file.clone().or(file.token_file),
            state_dir: cli
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(default_state_dir),
            spool_samples: flag_number("--spool-samples", &cli.spool_samples)?
                .or(file.spool_samples)
                .unwrap_or(default_spool_samples()),
            reconnect_max: flag_duration("--reconnect-max", &cli.reconnect_max)?
                .or(file.reconnect_max)
                .unwrap_or(default_reconnect_max()),
            tls,
            labels: merge_labels(file.labels, &cli.labels)?,
        };
        settings.validate(cli.once)?;
        Ok(settings)
    }

    fn validate(&self, once: bool) -> Result<(), ConfigError> {
        let ms = self.interval.as_millis();
        if !(u128::from(MIN_INTERVAL_MS)..=u128::from(MAX_INTERVAL_MS)).contains(&ms) {
            return Err(invalid(
                "interval",
                format!(
                    "{} is outside {}..={}",
                    humantime::format_duration(self.interval),
                    humantime::format_duration(Duration::from_millis(MIN_INTERVAL_MS.into())),
                    humantime::format_duration(Duration::from_millis(MAX_INTERVAL_MS.into())),
                ),
            ));
        }
        match &self.master {
            Some(m) => check_master(m)?,
            None if !once => {
                return Err(invalid(
                    "master",
                    "is required (--master HOST:PORT or `master` in the config)".into(),
                ))
            }
            None => {}
        }
        if let Some(h) = &self.hostname {
            if h.trim().is_empty() {
                return Err(invalid("hostname", "is empty".into()));
            }
            if h.len() > sentinel_protocol::limits::MAX_HOSTNAME_BYTES {
                return Err(invalid(
                    "hostname",
                    format!(
                        "is longer than {} bytes",
                        sentinel_protocol::limits::MAX_HOSTNAME_BYTES
                    ),
                ));
            }
        }
        if self.spool_samples == 0 {
            return Err(invalid("spool_samples", "must be at least 1".into()));
        }
        if self.reconnect_max.is_zero() {
            return Err(invalid("reconnect_max", "must be greater than zero".into()));
        }
        Ok(())
    }
}

/// TLS is on when a CA file or a pin is configured.
fn tls_settings(
    master: Option<&str>,
    ca_file: Option<PathBuf>,
    pin: Option<String>,
    server_name: Option<String>,
) -> Result<Option<TlsSettings>, ConfigError> {
    if ca_file.is_none() && pin.is_none() {
        if server_name.is_some() {
            return Err(invalid(
                "tls_server_name",
                "needs tls_ca_file or tls_pin_sha256 (TLS is off without them)".into(),
            ));
        }
        return Ok(None);
    }
    let pin_sha256 = match pin {
        None => None,
        Some(text) => {
            let digits: String = text.chars().filter(|c| *c != ':').collect();
            let mut pin = [0u8; 32];
            hex::decode_to_slice(digits.trim(), &mut pin).map_err(|_| {
                invalid(
                    "tls_pin_sha256",
                    format!("{text:?} is not 64 hex digits (the SHA-256 of the master's certificate in DER form)"),
                )
            })?;
            Some(pin)
        }
    };
    let server_name = match server_name {
        Some(name) => name,
        None => master
            .and_then(|m| m.rsplit_once(':'))
            .map(|(host, _)| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            })
            .unwrap_or_default(),
    };
    Ok(Some(TlsSettings {
        ca_file,
        pin_sha256,
        server_name,
    }))
}

/// The file's labels, each `--label KEY=VALUE` over them, checked as the master will check them.
fn merge_labels(
    mut labels: BTreeMap<String, String>,
    flags: &[String],
) -> Result<BTreeMap<String, String>, ConfigError> {
    for flag in flags {
        let (name, value) =
            sentinel_protocol::labels::parse_assignment(flag).map_err(|e| invalid("--label", e))?;
        labels.insert(name, value);
    }
    sentinel_protocol::labels::validate(&labels).map_err(|e| invalid("labels", e.to_string()))?;
    Ok(labels)
}

/// A duration flag ("1s", "500ms"), its error naming the flag.
fn flag_duration(
    flag: &'static str,
    value: &Option<String>,
) -> Result<Option<Duration>, ConfigError> {
    value
        .as_deref()
        .map(|v| humantime::parse_duration(v).map_err(|e| invalid(flag, format!("{v:?}: {e}"))))
        .transpose()
}

/// A count flag, its error naming the flag.
fn flag_number(flag: &'static str, value: &Option<String>) -> Result<Option<usize>, ConfigError> {
    value
        .as_deref()
        .map(|v| v.parse().map_err(|e| invalid(flag, format!("{v:?}: {e}"))))
        .transpose()
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

/// "host:port" with a numeric port; the host is resolved at connect time (DNS may change).
fn check_master(m: &str) -> Result<(), ConfigError> {
    let Some((host, port)) = m.rsplit_once(':') else {
        return Err(invalid("master", format!("{m:?} is not HOST:PORT")));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid("master", format!("{m:?} is not HOST:PORT")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("sentinel-agent").chain(args.iter().copied()))
    }

    #[test]
    fn config_files_parse_or_name_the_bad_key() {
        // (file text, Ok(expected check) or Err(substrings the message must contain))
        let cases: &[(&str, Result<FileConfig, &[&str]>)] = &[
            ("", Ok(FileConfig::default())),
            (
                "master = \"m:7410\"\ninterval = \"500ms\"\nhostname = \"h\"\ntoken_file = \"/t\"\n\
                 state_dir = \"/s\"\nspool_samples = 10\nreconnect_max = \"2s\"\n",
                Ok(FileConfig {
                    master: Some("m:7410".into()),
                    interval: Some(Duration::from_millis(500)),
                    hostname: Some("h".into()),
                    token_file: Some("/t".into()),
                    state_dir: Some("/s".into()),
                    spool_samples: Some(10),
                    reconnect_max: Some(Duration::from_secs(2)),
                    ..FileConfig::default()
                }),
            ),
            ("mastr = \"m:1\"\n", Err(&["/etc/x.toml", "mastr"])),
            ("interval = \"fast\"\n", Err(&["/etc/x.toml", "interval"])),
            ("spool_samples = \"many\"\n", Err(&["/etc/x.toml", "spool_samples"])),
            ("interval = 5\n", Err(&["/etc/x.toml", "interval"])),
        ];
        for (text, want) in cases {
            let got = parse_file(Path::new("/etc/x.toml"), text);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text}"),
                (Err(e), Err(needles)) => {
                    let msg = e.to_string();
                    for n in *needles {
                        assert!(msg.contains(n), "{msg:?} should contain {n:?}");
                    }
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file = FileConfig {
            master: Some("file:1".into()),
            interval: Some(Duration::from_secs(5)),
            ..FileConfig::default()
        };
        let s = Settings::resolve(&cli(&["--master", "flag:2"]), file).unwrap();
        assert_eq!(s.master.as_deref(), Some("flag:2"));
        assert_eq!(s.interval, Duration::from_secs(5));
        assert_eq!(s.spool_samples, 3600);
        assert_eq!(s.reconnect_max, Duration::from_secs(10));
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/sentinel"));
    }

    #[test]
    fn flag_values_that_do_not_parse_are_refused_naming_the_flag() {
        for (args, needles) in [
            (
                &["--interval", "1x"][..],
                &["invalid --interval", "\"1x\""][..],
            ),
            (
                &["--reconnect-max", "soon"],
                &["invalid --reconnect-max", "\"soon\""],
            ),
            (
                &["--spool-samples", "many"],
                &["invalid --spool-samples", "\"many\""],
            ),
        ] {
            let err = Settings::resolve(&cli(args), FileConfig::default()).unwrap_err();
            let msg = err.to_string();
            for n in needles {
                assert!(msg.contains(n), "{args:?}: {msg:?} should contain {n:?}");
            }
        }
        let s = Settings::resolve(
            &cli(&[
                "--master",
                "m:7410",
                "--interval",
                "250ms",
                "--reconnect-max",
                "3s",
                "--spool-samples",
                "7",
            ]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(s.interval, Duration::from_millis(250));
        assert_eq!(s.reconnect_max, Duration::from_secs(3));
        assert_eq!(s.spool_samples, 7);
    }

    #[test]
    fn label_flags_override_the_file_and_bad_labels_are_refused_by_name() {
        let file = parse_file(
            Path::new("a.toml"),
            "labels = { role = \"db\", dc = \"eu1\" }\n",
        )
        .unwrap();
        let s = Settings::resolve(
            &cli(&[
                "--master", "m:1", "--label", "role=web", "--label", "team=a=b",
            ]),
            file,
        )
        .unwrap();
        let got: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(got, ["dc=eu1", "role=web", "team=a=b"]);
        let bad_file = parse_file(Path::new("a.toml"), "labels = { host = \"x\" }\n").unwrap();
        let err = Settings::resolve(&cli(&["--master", "m:1"]), bad_file).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid labels: label \"host\": the name is reserved for a label Sentinel sets itself"
        );
        for (flag, needle) in [
            ("a-b=1", "label \"a-b\""),
            ("role", "expected KEY=VALUE"),
            ("role=", "value is empty"),
        ] {
            let err = Settings::resolve(
                &cli(&["--master", "m:1", "--label", flag]),
                FileConfig::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("invalid --label: ") && err.contains(needle),
                "{flag}: {err}"
            );
        }
    }

    #[test]
    fn out_of_range_values_are_rejected_by_key() {
        let cases: &[(&[&str], &str)] = &[
            (&["--master", "m:1", "--interval", "50ms"], "interval"),
            (&["--master", "m:1", "--interval", "301s"], "interval"),
            (&[], "master"),
            (&["--master", "nocolon"], "master"),
            (
                &["--master", "m:1", "--spool-samples", "0"],
                "spool_samples",
            ),
            (&["--master", "m:1", "--hostname", ""], "hostname"),
        ];
        for (args, key) in cases {
            let err = Settings::resolve(&cli(args), FileConfig::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{args:?}: {err}");
        }
        assert!(Settings::resolve(&cli(&["--once"]), FileConfig::default()).is_ok());
        assert!(Settings::resolve(
            &cli(&["--master", "m:1", "--interval", "100ms"]),
            FileConfig::default()
        )
        .is_ok());
    }

    #[test]
    fn tls_is_on_with_a_ca_or_a_pin_and_the_server_name_defaults_to_the_master_host() {
        let resolve = |master: &str, text: &str| {
            Settings::resolve(
                &cli(&["--master", master]),
                parse_file(Path::new("a.toml"), text).unwrap(),
            )
        };
        assert_eq!(resolve("m:1", "").unwrap().tls, None);
        let pin = "ab".repeat(32);
        let tls = resolve(
            "master.example:7410",
            &format!("tls_pin_sha256 = \"{pin}\"\n"),
        )
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(
            (tls.pin_sha256, tls.server_name.as_str(), tls.ca_file),
            (Some([0xab; 32]), "master.example", None)
        );
        let colons = vec!["AB"; 32].join(":");
        let tls = resolve(
            "[::1]:7410",
            &format!("tls_pin_sha256 = \"{colons}\"\ntls_ca_file = \"/ca.pem\"\n"),
        )
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(
            (tls.pin_sha256, tls.server_name.as_str()),
            (Some([0xab; 32]), "::1")
        );
        for (text, key) in [
            ("tls_pin_sha256 = \"abc\"\n", "tls_pin_sha256"),
            ("tls_server_name = \"m\"\n", "tls_server_name"),
        ] {
            let err = resolve("m:1", text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn missing_explicit_config_is_an_error_but_missing_default_is_not() {
        let err = load_file(Some(Path::new("/nonexistent/agent.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/agent.toml"));
    }
}
