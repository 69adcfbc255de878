//! Mixed-version fleets: a master or agent of release 0.1.0 (built from commit 280edf3 by
//! `cargo xtask compat-bins`, found through `SENTINEL_COMPAT_BIN_DIR`) beside the binaries
//! under test.
//!
//! The 0.1.0 master cannot report the addresses it bound, so every master here starts on
//! `127.0.0.1:0` and its listening sockets are read back from `/proc/<supervisor>/fd` and
//! `/proc/net/tcp`; the http one is the socket that answers `GET /healthz`. Ports are never
//! picked by binding and releasing them. The state directory and segment name live in a
//! [`MasterHome`] that outlives one master, so a new master can start on an old one's snapshot.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{http_get, http_json, process_alive, u64_field, wait_for, TOKEN};

/// Where `cargo xtask compat-bins` (and the CI step `compat`) put the 0.1.0 binaries.
pub const BIN_DIR_ENV: &str = "SENTINEL_COMPAT_BIN_DIR";

/// One pair of binaries: the release under test or 0.1.0.
#[derive(Clone, Debug)]
pub struct Bins {
    pub agent: PathBuf,
    pub master: PathBuf,
    /// For messages: "0.1.0" or "new".
    pub label: &'static str,
}

impl Bins {
    /// The binaries built from this tree (the harness's `bin_dir`).
    pub fn current() -> Bins {
        Bins {
            agent: crate::bin("sentinel-agent"),
            master: crate::bin("sentinel-master"),
            label: "new",
        }
    }

    /// The 0.1.0 binaries, or `None` (after printing `SKIPPED <test>`) when
    /// `SENTINEL_COMPAT_BIN_DIR` is unset: the plain e2e step runs without them, the `compat`
    /// step with them. A set variable naming a directory without both binaries fails.
    pub fn release_or_skip(test: &str) -> Option<Bins> {
        let Some(dir) = std::env::var_os(BIN_DIR_ENV) else {
            println!(
                "SKIPPED {test}: {BIN_DIR_ENV} is unset (the ci step `compat` sets it; \
                 `cargo xtask compat-bins` prints the directory)"
            );
            return None;
        };
        let dir = PathBuf::from(dir);
        let bins = Bins {
            agent: dir.join("sentinel-agent"),
            master: dir.join("sentinel-master"),
            label: "0.1.0",
        };
        for b in [&bins.agent, &bins.master] {
            assert!(b.is_file(), "{BIN_DIR_ENV}: {} is missing", b.display());
        }
        let version = Command::new(&bins.agent)
            .arg("--version")
            .output()
            .expect("run the 0.1.0 agent");
        assert!(
            String::from_utf8_lossy(&version.stdout).contains("0.1.0"),
            "{} is not release 0.1.0: {:?}",
            bins.agent.display(),
            version
        );
        Some(bins)
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// What survives one master process: token, config, state directory (the snapshot) and the
/// shared-memory segment name.
pub struct MasterHome {
    pub dir: tempfile::TempDir,
    pub token_file: PathBuf,
    pub shm_name: String,
}

impl Default for MasterHome {
    fn default() -> Self {
        Self::new()
    }
}

impl MasterHome {
    pub fn new() -> MasterHome {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("fleet-token");
        fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        fs::write(dir.path().join("master.toml"), "").unwrap();
        let shm_name = format!(
            "sentinel-compat-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        MasterHome {
            dir,
            token_file,
            shm_name,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The snapshot both releases write: `<state_dir>/<shm_name>.snapshot`.
    pub fn snapshot_path(&self) -> PathBuf {
        self.state_dir().join(format!("{}.snapshot", self.shm_name))
    }

    pub fn segment_path(&self) -> PathBuf {
        PathBuf::from("/dev/shm").join(&self.shm_name)
    }
}

impl Drop for MasterHome {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.segment_path());
    }
}

/// A supervisor of either release, on a [`MasterHome`].
pub struct VersionedMaster {
    pub child: Child,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    pub label: &'static str,
    exe: PathBuf,
}

impl VersionedMaster {
    /// Starts `bins.master` on `home`, on loopback port 0 (then discovered), and waits until
    /// it is healthy.
    pub fn start(bins: &Bins, home: &MasterHome) -> VersionedMaster {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(bins, home, any, any)
    }

    /// Starts `bins.master` on `home` with these addresses (port 0 means any, discovered).
    pub fn start_on(
        bins: &Bins,
        home: &MasterHome,
        listen: SocketAddr,
        http: SocketAddr,
    ) -> VersionedMaster {
        Self::start_with(bins, home, listen, http, &[])
    }

    /// [`VersionedMaster::start_on`] with extra flags both releases know (e.g.
    /// `--snapshot-interval 1s`).
    pub fn start_with(
        bins: &Bins,
        home: &MasterHome,
        listen: SocketAddr,
        http: SocketAddr,
        extra: &[&str],
    ) -> VersionedMaster {
        let log = home.dir.path().join(format!(
            "master-{}-{}.log",
            bins.label,
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let child = Command::new(&bins.master)
            .arg("--config")
            .arg(home.dir.path().join("master.toml"))
            .args(["--listen", &listen.to_string(), "--http", &http.to_string()])
            .arg("--token-file")
            .arg(&home.token_file)
            .args(["--shm-name", &home.shm_name])
            .arg("--state-dir")
            .arg(home.state_dir())
            .args(extra)
            .env("SENTINEL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bins.master.display()));
        let mut m = VersionedMaster {
            child,
            listen,
            http,
            log,
            label: bins.label,
            exe: bins.master.clone(),
        };
        let (listen, http) = m.discover_addrs(Duration::from_secs(15));
        m.listen = listen;
        m.http = http;
        m.wait_healthy(Duration::from_secs(10));
        m
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The supervisor's two listening sockets. Each child inherits exactly its own (both
    /// releases): the one the `--role http` child holds is the http socket. Probing with
    /// `GET /healthz` is only the fallback (it makes the collector log a refused peer).
    fn discover_addrs(&mut self, timeout: Duration) -> (SocketAddr, SocketAddr) {
        let pid = self.pid();
        let ports = wait_for(timeout, "the master's two listening sockets", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} master exited at start ({status}); its log:\n{}",
                    self.label,
                    self.log_text()
                );
            }
            let ports = listening_ports(pid);
            (ports.len() == 2).then_some(ports)
        });
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let by_role = || {
            crate::process_tree_running(pid, &self.exe)
                .into_iter()
                .filter(|&p| p != pid && child_role(p).as_deref() == Some("http"))
                .flat_map(listening_ports)
                .find(|p| ports.contains(p))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let http = loop {
            if let Some(p) = by_role() {
                break p;
            }
            if std::time::Instant::now() > deadline {
                break wait_for(
                    timeout,
                    "the master's http socket to answer /healthz",
                    || {
                        ports.iter().copied().find(|&p| {
                            matches!(http_get(addr(p), "/healthz", Duration::from_secs(2)),
                                 Ok((200, body)) if body.contains("collector_pid"))
                        })
                    },
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let listen = ports.into_iter().find(|&p| p != http).unwrap();
        (addr(listen), addr(http))
    }

    pub fn wait_healthy(&self, timeout: Duration) -> Value {
        wait_for(timeout, "master /healthz to answer ok", || {
            let h = http_json(self.http, "/healthz")?;
            (h["status"] == "ok").then_some(h)
        })
    }

    pub fn hosts(&self) -> Option<Vec<Value>> {
        http_json(self.http, "/api/v1/hosts")?["hosts"]
            .as_array()
            .cloned()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and waits for the supervisor to exit (it writes its final snapshot first).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_and_wait(Signal::SIGTERM)
    }

    /// SIGKILL of the supervisor, as a crash: waits until its children (stopped by their
    /// parent-death signal) are gone too. The segment stays in /dev/shm.
    pub fn kill(&mut self) -> std::process::ExitStatus {
        let children: Vec<u32> = crate::process_tree_running(self.pid(), &self.exe)
            .into_iter()
            .filter(|&p| p != self.pid())
            .collect();
        let status = self.signal_and_wait(Signal::SIGKILL);
        wait_for(
            Duration::from_secs(10),
            "the killed supervisor's children to exit",
            || children.iter().all(|&p| !process_alive(p)).then_some(()),
        );
        status
    }

    fn signal_and_wait(&mut self, signal: Signal) -> std::process::ExitStatus {
        let _ = kill(Pid::from_raw(self.pid() as i32), signal);
        wait_for(Duration::from_secs(15), "the master to exit", || {
            self.child.try_wait().unwrap()
        })
    }
}

impl Drop for VersionedMaster {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let children = crate::process_tree_running(self.pid(), &self.exe);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in children {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// The `--role` argument of a master child process, if it has one.
pub fn child_role(pid: u32) -> Option<String> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let at = args.iter().position(|a| *a == b"--role")?;
    Some(String::from_utf8_lossy(args.get(at + 1)?).into_owned())
}

/// Loopback TCP ports in LISTEN state held by `pid`'s open file descriptors.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: Vec<String> = fds
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != "0A" || !inodes.iter().any(|i| i == inode) {
                return None;
            }
            u16::from_str_radix(local.split(':').nth(1)?, 16).ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// A `sentinel-agent` of either release, with its own state directory.
pub struct VersionedAgent {
    pub child: Child,
    pub hostname: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl VersionedAgent {
    /// Starts `bins.agent` streaming to `master` every `interval`; reconnect backoff capped at
    /// 1 s as everywhere in the tests.
    pub fn start(
        bins: &Bins,
        master: SocketAddr,
        token_file: &Path,
        hostname: &str,
        interval: &str,
    ) -> VersionedAgent {
        Self::start_with_config(bins, master, token_file, hostname, interval, "")
    }

    /// [`VersionedAgent::start`] with `config` as its agent.toml (a 0.1.0 agent refuses keys
    /// it does not know, such as `labels`).
    pub fn start_with_config(
        bins: &Bins,
        master: SocketAddr,
        token_file: &Path,
        hostname: &str,
        interval: &str,
        config: &str,
    ) -> VersionedAgent {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let config_text = config;
        let config = dir.path().join("agent.toml");
        fs::write(&config, config_text).unwrap();
        let child = Command::new(&bins.agent)
            .arg("--config")
            .arg(&config)
            .args(["--master", &master.to_string(), "--hostname", hostname])
            .args(["--interval", interval, "--reconnect-max", "1s"])
            .arg("--token-file")
            .arg(token_file)
            .arg("--state-dir")
            .arg(dir.path())
            .env("SENTINEL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bins.agent.display()));
        VersionedAgent {
            child,
            hostname: hostname.to_string(),
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// SIGTERM, waits for the exit, and returns the `last_seq` its goodbye carried (0.1.0
    /// logs "Said goodbye to the master; stopping." with `last_seq=N`). Panics if the
    /// agent exited unsuccessfully or was not connected to say goodbye.
    pub fn stop_with_goodbye(&mut self) -> u64 {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let status = wait_for(Duration::from_secs(10), "the agent to exit", || {
            self.child.try_wait().unwrap()
        });
        let log = self.log_text();
        assert!(
            status.success(),
            "{}: exit {status}; log:\n{log}",
            self.hostname
        );
        let line = log
            .lines()
            .find(|l| {
                // Any wording of the sent-goodbye line, never "no goodbye" / "Could not send".
                let lower = l.to_lowercase();
                lower.contains("goodbye")
                    && l.contains("last_seq=")
                    && !lower.contains("no goodbye")
                    && !lower.contains("could not")
            })
            .unwrap_or_else(|| panic!("{}: no goodbye sent; log:\n{log}", self.hostname));
        field_u64(line, "last_seq")
            .unwrap_or_else(|| panic!("{}: no last_seq in `{line}`", self.hostname))
    }
}

impl Drop for VersionedAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=N` in a tracing log line.
pub fn field_u64(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Removes the terminal colour sequences tracing may write.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Asserts that a stopped agent's whole run reached the master: the host said goodbye
/// (`stopped`), holds `last_seq == goodbye_seq`, every sample received exactly once, nothing
/// missing, dropped or counted before the table's start. Returns the samples accounted.
pub fn assert_run_complete(host: &Value, goodbye_seq: u64) -> u64 {
    let name = &host["hostname"];
    assert_eq!(
        host["status"], "stopped",
        "{name}: goodbye not recorded: {host}"
    );
    let last = crate::assert_accounted(host);
    assert_eq!(
        last, goodbye_seq,
        "{name}: the agent's last sample was {goodbye_seq}, the master holds {last}: {host}"
    );
    for key in ["samples_missing", "samples_dropped", "samples_before_start"] {
        assert_eq!(u64_field(host, key), 0, "{name}: {key} != 0: {host}");
    }
    assert_eq!(
        u64_field(host, "samples_received"),
        last,
        "{name}: received != last_seq: {host}"
    );
    last
}

/// A 0.1.0 agent has no key: once the master shows identities (issue 12), its host must be
/// `unpinned`. Masters without the field (0.1.0, or before that work merged) pass.
pub fn assert_unpinned_if_shown(host: &Value) {
    if let Some(identity) = host.get("identity") {
        assert_eq!(
            identity, "unpinned",
            "{}: a 0.1.0 agent (no key) must show as unpinned: {host}",
            host["hostname"]
        );
    }
}

/// The accounting invariant with holes allowed (counted as `samples_missing`): every sample
/// of the run is received, dropped, missing or before the start, exactly once. Returns
/// `last_seq`.
pub fn assert_accounted_with_holes(host: &Value) -> u64 {
    let name = &host["hostname"];
    let last = u64_field(host, "last_seq");
    let sum: u64 = [
        "samples_received",
        "samples_dropped",
        "samples_missing",
        "samples_before_start",
    ]
    .iter()
    .map(|k| u64_field(host, k))
    .sum();
    assert!(last > 0, "{name}: no samples at all: {host}");
    assert_eq!(
        sum, last,
        "{name}: samples not accounted for exactly once: {host}"
    );
    last
}

/// Totals over the scenarios of one test binary, for the summary line.
#[derive(Default, Debug)]
pub struct Tally {
    pub scenarios: u64,
    pub accounted: u64,
    pub lost: u64,
}

impl Tally {
    /// Prints `compat-suite <name>: scenarios=N samples accounted=N samples lost=N`.
    pub fn print(&self, name: &str) {
        println!(
            "compat-suite {name}: scenarios={} samples accounted={} samples lost={}",
            self.scenarios, self.accounted, self.lost
        );
    }
}

/// Waits until `master` shows exactly `names` (and no other host), each with `last_seq` at
/// least `min_seq` and connected.
pub fn wait_streaming(
    master: &VersionedMaster,
    names: &[&str],
    min_seq: u64,
    timeout: Duration,
) -> Vec<Value> {
    let what = format!(
        "{names:?} streaming to the {} master past seq {min_seq}",
        master.label
    );
    wait_for(timeout, &what, || {
        let hosts = master.hosts()?;
        let ok = hosts.len() == names.len()
            && names.iter().all(|n| {
                hosts.iter().any(|h| {
                    h["hostname"] == *n
                        && h["connected"] == true
                        && h["last_seq"].as_u64() >= Some(min_seq)
                })
            });
        ok.then_some(hosts)
    })
}

/// The host named `name` in `hosts`.
pub fn by_name<'a>(hosts: &'a [Value], name: &str) -> &'a Value {
    hosts
        .iter()
        .find(|h| h["hostname"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {hosts:?}"))
}
