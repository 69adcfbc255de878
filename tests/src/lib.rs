//! Helpers shared by the end-to-end tests: real `sentinel-master` and `sentinel-agent`
//! processes on loopback, a tiny HTTP client, and waiting on conditions with deadlines.
//!
//! Every process a test starts is owned by a guard that kills it by PID on drop, and every
//! master gets its own shared-memory segment name, so a failing test leaves nothing behind.

/// Either release of master and agent side by side (tests/tests/compat.rs).
pub mod compat;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

mod fake_master;
pub use fake_master::{FakeMaster, MasterConn, ReservedPort, AGENT_DEADLINE};

pub const TOKEN: &str = "e2e-fleet-token";

/// Directory of the binaries under test: `SENTINEL_BIN_DIR`, else the cargo profile directory
/// this test binary was built into (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SENTINEL_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (the README test command does)",
        path.display()
    );
    path
}

/// 127.0.0.1 port 0: the kernel picks a free port when the master binds, and the harness
/// reads the port back from the master's `--addr-file` (no port is picked by binding and
/// releasing it, which races with every other process on the machine).
pub const ANY_LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// How long a master gets to bind its listeners and write its `--addr-file`.
pub const ADDR_FILE_WAIT: Duration = Duration::from_secs(10);

/// Waits until a master started with `--addr-file path` wrote its bound addresses, and
/// returns (agents, http). `None` if `child` exited first (a master that refused to start)
/// or nothing came within `timeout`.
pub fn read_addr_file(
    path: &Path,
    child: &mut Child,
    timeout: Duration,
) -> Option<(SocketAddr, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(addrs) = parse_addr_file(&fs::read_to_string(path).unwrap_or_default()) {
            return Some(addrs);
        }
        if !matches!(child.try_wait(), Ok(None)) || Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `agents=ADDR` and `http=ADDR` lines of an address file (docs/CONTRACT.md).
pub fn parse_addr_file(text: &str) -> Option<(SocketAddr, SocketAddr)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("agents")?, field("http")?))
}

/// `asked` with the port the master reported when `asked` had port 0 (the reported IP is
/// the bound one, e.g. 0.0.0.0, so the asked one is kept).
fn with_bound_port(asked: SocketAddr, bound: SocketAddr) -> SocketAddr {
    if asked.port() == 0 {
        SocketAddr::new(asked.ip(), bound.port())
    } else {
        asked
    }
}

/// Environment variable that replays a test's random faults: the `seed=` a run printed.
pub const SEED_ENV: &str = "SENTINEL_TEST_SEED";

/// The random number generator of a test's faults (random bytes, a random moment to kill,
/// a shuffled order): seeded from `SENTINEL_TEST_SEED` if set, else at random, and the seed
/// is printed (`<what>: seed=N`; cargo test shows it for a failing test) so that a failure
/// can be replayed with `SENTINEL_TEST_SEED=N`.
pub fn test_rng(what: &str) -> fastrand::Rng {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV}={text:?} is not a u64")),
        Err(_) => fastrand::u64(..),
    };
    eprintln!("{what}: seed={seed} (replay with {SEED_ENV}={seed})");
    fastrand::Rng::with_seed(seed)
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` over HTTP/1.0 (so the server answers without chunking and closes).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let (status, _, body) = http_request(s, addr, path, "")?;
    Ok((status, body))
}

/// One HTTP/1.0 `GET path` over `stream` (plain or TLS) with extra header lines (each ending
/// in CRLF): (status, head, body).
pub fn http_request(
    stream: impl Read + Write,
    addr: SocketAddr,
    path: &str,
    headers: &str,
) -> std::io::Result<(u16, String, String)> {
    http_exchange(stream, addr, "GET", path, headers)
}

/// One HTTP/1.0 request (`method path`, extra header lines each ending in CRLF) over
/// `stream`, read to the server's close: (status, head, body).
fn http_exchange(
    mut stream: impl Read + Write,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> std::io::Result<(u16, String, String)> {
    let length = if method == "GET" || method == "HEAD" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{length}{headers}\r\n"
    )?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok((status, head.to_string(), body.to_string()))
}

/// One HTTP/1.0 request with any method and extra header lines (each ending in CRLF) on a
/// new connection: (status, head, body).
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> std::io::Result<(u16, String, String)> {
    let timeout = Duration::from_secs(10);
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    http_exchange(s, addr, method, path, headers)
}

pub fn http_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let (status, body) = http_get(addr, path, Duration::from_secs(2)).ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// Kills a process we started and reaps it.
fn stop_child(child: &mut Child, signal: Signal) {
    if let Ok(None) = child.try_wait() {
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        let _ = child.wait();
    }
}

pub fn process_alive(pid: u32) -> bool {
    // A zombie still answers signal 0; read its state to tell it apart.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// PIDs of every live process running `exe` whose ancestry includes `root` (inclusive).
pub fn process_tree_running(root: u32, exe: &Path) -> Vec<u32> {
    let exe = fs::canonicalize(exe).unwrap_or(exe.to_path_buf());
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if !process_alive(pid)
            || fs::read_link(format!("/proc/{pid}/exe")).ok().as_deref() != Some(&exe)
        {
            continue;
        }
        let mut p = pid;
        while p > 1 {
            if p == root {
                found.push(pid);
                break;
            }
            p = parent_of(p).unwrap_or(0);
        }
    }
    found.sort();
    found
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `sentinel-master` supervisor with its own ports, token, segment and state directory
/// (`<dir>/state`, where it keeps its table snapshot across restarts).
pub struct Master {
    pub child: Child,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub shm_name: String,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub token_file: PathBuf,
    /// Flags added to every start (e.g. `--snapshot-interval`).
    pub extra_args: Vec<String>,
    /// The network namespace the master runs in (started through `ip netns exec`); the
    /// test's HTTP requests enter it too.
    pub netns: Option<String>,
    /// The content of its master.toml (empty: defaults).
    pub config: String,
}

impl Master {
    pub fn start() -> Master {
        Self::start_with(&[])
    }

    /// A master on loopback with extra flags.
    pub fn start_with(extra_args: &[&str]) -> Master {
        Self::start_in(None, ANY_LOOPBACK, ANY_LOOPBACK, extra_args)
    }

    /// A master listening on `listen`/`http`, inside network namespace `netns` if given. A
    /// port 0 is replaced by the one the master bound (read from its `--addr-file`); a
    /// restart keeps that concrete port.
    pub fn start_in(
        netns: Option<&str>,
        listen: SocketAddr,
        http: SocketAddr,
        extra_args: &[&str],
    ) -> Master {
        let m = Self::spawn_configured(
            netns,
            listen,
            http,
            extra_args,
            "",
            tempfile::tempdir().unwrap(),
        );
        m.wait_healthy(Duration::from_secs(10));
        m
    }

    /// A master on loopback with `config` as its master.toml, in `dir` (which may hold the
    /// files the config names). It does not wait for /healthz: with HTTPS or basic auth the
    /// test knows how to ask.
    pub fn start_configured(config: &str, dir: tempfile::TempDir) -> Master {
        Self::spawn_configured(None, ANY_LOOPBACK, ANY_LOOPBACK, &[], config, dir)
    }

    /// A master on loopback with `config` as its master.toml and extra flags, once healthy.
    pub fn start_with_config(config: &str, extra_args: &[&str]) -> Master {
        let m = Self::spawn_configured(
            None,
            ANY_LOOPBACK,
            ANY_LOOPBACK,
            extra_args,
            config,
            tempfile::tempdir().unwrap(),
        );
        m.wait_healthy(Duration::from_secs(10));
        m
    }

    fn spawn_configured(
        netns: Option<&str>,
        listen: SocketAddr,
        http: SocketAddr,
        extra_args: &[&str],
        config: &str,
        dir: tempfile::TempDir,
    ) -> Master {
        let token_file = dir.path().join("fleet-token");
        fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let shm_name = unique("sentinel-e2e");
        let log = dir.path().join("master-0.log");
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let child = spawn_master(
            &dir,
            &token_file,
            listen,
            http,
            &shm_name,
            &log,
            &extra_args,
            netns,
            config,
        );
        let mut m = Master {
            child,
            listen,
            http,
            shm_name,
            dir,
            log,
            token_file,
            extra_args,
            netns: netns.map(str::to_string),
            config: config.to_string(),
        };
        m.read_bound_addrs();
        m
    }

    /// Replaces a port 0 in `listen`/`http` by the port the master reported in its
    /// `--addr-file`. A master that exits at start (a test of a refused config) reports
    /// nothing: the test sees its exit status, its addresses keep port 0. A running master
    /// that reports nothing in time fails the test (dropping `self` kills it).
    fn read_bound_addrs(&mut self) {
        match read_addr_file(&addr_file(&self.dir), &mut self.child, ADDR_FILE_WAIT) {
            Some((agents, http)) => {
                self.listen = with_bound_port(self.listen, agents);
                self.http = with_bound_port(self.http, http);
            }
            None => assert!(
                !matches!(self.child.try_wait(), Ok(None)),
                "the master wrote no --addr-file within {ADDR_FILE_WAIT:?}; log:\n{}",
                self.log_text()
            ),
        }
    }

    fn spawn(&self) -> Child {
        spawn_master(
            &self.dir,
            &self.token_file,
            self.listen,
            self.http,
            &self.shm_name,
            &self.log,
            &self.extra_args,
            self.netns.as_deref(),
            &self.config,
        )
    }

    /// The table snapshot this master writes (`--state-dir <dir>/state`).
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("state")
            .join(format!("{}.snapshot", self.shm_name))
    }

    /// `GET path` as JSON from this master's HTTP side (inside its namespace if it has one).
    pub fn json(&self, path: &str) -> Option<Value> {
        match &self.netns {
            None => http_json(self.http, path),
            Some(ns) => {
                let (ns, http, path) = (ns.clone(), self.http, path.to_string());
                in_netns(&ns, move || http_json(http, &path))
            }
        }
    }

    /// `GET path` (status, body) with a timeout, inside this master's namespace if any.
    pub fn get(&self, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
        match &self.netns {
            None => http_get(self.http, path, timeout),
            Some(ns) => {
                let (ns, http, path) = (ns.clone(), self.http, path.to_string());
                in_netns(&ns, move || http_get(http, &path, timeout))
            }
        }
    }

    /// Starts a new supervisor on the same ports, token, segment and state directory (what
    /// systemd's `Restart=` does), and waits until it is healthy.
    pub fn respawn(&mut self) {
        self.log = self.dir.path().join(format!(
            "master-{}.log",
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ));
        self.child = self.spawn();
        self.wait_healthy(Duration::from_secs(10));
    }

    /// Starts a new supervisor like [`Master::respawn`] but returns at once, without waiting
    /// for it to be healthy (tests that signal a master during its start-up).
    pub fn respawn_no_wait(&mut self) {
        self.log = self.dir.path().join(format!(
            "master-{}.log",
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ));
        self.child = self.spawn();
    }

    /// SIGKILLs the supervisor and waits until its children (SIGTERMed by PDEATHSIG) are
    /// gone too, as systemd waits for the unit's cgroup to empty before a restart. The
    /// segment stays behind in /dev/shm. Returns the children's pids.
    pub fn kill_supervisor(&mut self) -> Vec<u32> {
        let children: Vec<u32> = process_tree_running(self.pid(), &bin("sentinel-master"))
            .into_iter()
            .filter(|&p| p != self.pid())
            .collect();
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
        wait_for(
            Duration::from_secs(10),
            "the killed supervisor's children to exit",
            || children.iter().all(|&p| !process_alive(p)).then_some(()),
        );
        children
    }

    /// Stops this master (SIGTERM, waits for the exit), pauses, and starts a new one on the
    /// same ports, token and segment name.
    pub fn restart_after(&mut self, pause: Duration) {
        self.terminate();
        std::thread::sleep(pause);
        self.respawn();
    }

    pub fn wait_healthy(&self, timeout: Duration) -> Value {
        wait_for(timeout, "master /healthz to answer ok", || {
            let h = self.json("/healthz")?;
            (h["status"] == "ok").then_some(h)
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn collector_pid(&self) -> Option<u32> {
        self.json("/healthz")?["collector_pid"]
            .as_u64()
            .map(|p| p as u32)
    }

    pub fn hosts(&self) -> Option<Vec<Value>> {
        self.json("/api/v1/hosts")?["hosts"].as_array().cloned()
    }

    pub fn host(&self, hostname: &str) -> Option<Value> {
        self.hosts()?
            .into_iter()
            .find(|h| h["hostname"] == hostname)
    }

    pub fn host_detail(&self, id: &str) -> Option<Value> {
        self.json(&format!("/api/v1/hosts/{id}"))
    }

    pub fn segment_path(&self) -> PathBuf {
        PathBuf::from("/dev/shm").join(&self.shm_name)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait for the supervisor to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "master did not exit within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where a harness master reports its bound addresses (`--addr-file`).
fn addr_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("addr")
}

#[allow(clippy::too_many_arguments)]
fn spawn_master(
    dir: &tempfile::TempDir,
    token_file: &Path,
    listen: SocketAddr,
    http: SocketAddr,
    shm_name: &str,
    log: &Path,
    extra_args: &[String],
    netns: Option<&str>,
    config_text: &str,
) -> Child {
    // Never the default path: whatever /etc/sentinel holds on the test machine is ignored.
    let config = dir.path().join("master.toml");
    fs::write(&config, config_text).unwrap();
    // A restart must not read the previous supervisor's file.
    let addr_file = addr_file(dir);
    let _ = fs::remove_file(&addr_file);
    let mut cmd = match netns {
        None => Command::new(bin("sentinel-master")),
        Some(ns) => {
            // `ip netns exec` execs the master itself: the child's pid is the supervisor's.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin("sentinel-master"));
            c
        }
    };
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", &listen.to_string(), "--http", &http.to_string()])
        .arg("--token-file")
        .arg(token_file)
        .args(["--shm-name", shm_name])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--addr-file")
        .arg(&addr_file)
        .args(extra_args)
        .env("SENTINEL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .expect("start sentinel-master")
}

impl Drop for Master {
    fn drop(&mut self) {
        let children = process_tree_running(self.pid(), &bin("sentinel-master"));
        stop_child(&mut self.child, Signal::SIGKILL);
        for pid in children {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = fs::remove_file(self.segment_path());
    }
}

/// Variations of [`Agent::start_opts`].
#[derive(Default, Clone)]
pub struct AgentOpts {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub netns: Option<String>,
    /// The content of its agent.toml (empty: defaults).
    pub config: String,
}

/// A `sentinel-agent` streaming to a master.
pub struct Agent {
    pub child: Child,
    pub hostname: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start(master: &Master, hostname: &str, interval: &str) -> Agent {
        Self::start_to(master.listen, &master.token_file, hostname, interval)
    }

    pub fn start_to(
        master: SocketAddr,
        token_file: &Path,
        hostname: &str,
        interval: &str,
    ) -> Agent {
        Self::start_opts(
            master,
            token_file,
            hostname,
            interval,
            &AgentOpts::default(),
        )
    }

    /// An agent with extra flags (a `--reconnect-max` replaces the tests' 1 s), environment,
    /// or inside a network namespace.
    pub fn start_opts(
        master: SocketAddr,
        token_file: &Path,
        hostname: &str,
        interval: &str,
        opts: &AgentOpts,
    ) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        Self::spawn_in(master, token_file, hostname, interval, opts, dir)
    }

    /// An agent whose state directory starts as a copy of `from`'s (its `agent-id` and
    /// `agent-key`, whichever exist): a cloned machine, the same host after a restart, or
    /// (without `agent-key`) a reinstalled host that kept its id and lost its key.
    pub fn start_with_state_of(
        master: &Master,
        hostname: &str,
        interval: &str,
        from: &Agent,
    ) -> Agent {
        Self::start_opts_with_state_of(master, hostname, interval, &AgentOpts::default(), from)
    }

    /// [`Agent::start_with_state_of`] with [`AgentOpts`] (the same host restarted with other
    /// flags or another agent.toml).
    pub fn start_opts_with_state_of(
        master: &Master,
        hostname: &str,
        interval: &str,
        opts: &AgentOpts,
        from: &Agent,
    ) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        for name in ["agent-id", "agent-key"] {
            let src = from.state_dir().join(name);
            if src.exists() {
                fs::copy(&src, dir.path().join(name))
                    .unwrap_or_else(|e| panic!("copy {name}: {e}"));
            }
        }
        Self::spawn_in(
            master.listen,
            &master.token_file,
            hostname,
            interval,
            opts,
            dir,
        )
    }

    /// The agent's `--state-dir` (agent-id, agent-key, spool).
    pub fn state_dir(&self) -> &Path {
        self._dir.path()
    }

    fn spawn_in(
        master: SocketAddr,
        token_file: &Path,
        hostname: &str,
        interval: &str,
        opts: &AgentOpts,
        dir: tempfile::TempDir,
    ) -> Agent {
        let log = dir.path().join("agent.log");
        let config = dir.path().join("agent.toml");
        fs::write(&config, &opts.config).unwrap();
        let mut cmd = match &opts.netns {
            None => Command::new(bin("sentinel-agent")),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("sentinel-agent"));
                c
            }
        };
        let child = cmd
            .env("SENTINEL_LOG", "info")
            // After the default, so a test can ask for SENTINEL_LOG=debug.
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&config)
            .args([
                "--master",
                &master.to_string(),
                "--hostname",
                hostname,
                "--interval",
                interval,
            ])
            .arg("--token-file")
            .arg(token_file)
            .arg("--state-dir")
            .arg(dir.path())
            .args(
                (!opts.args.iter().any(|a| a == "--reconnect-max"))
                    .then_some(["--reconnect-max", "1s"])
                    .into_iter()
                    .flatten(),
            )
            .args(&opts.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sentinel-agent");
        Agent {
            child,
            hostname: hostname.to_string(),
            log,
            _dir: dir,
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the agent to exit after a signal; returns whether it exited successfully.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_for(timeout, "agent to exit", || self.child.try_wait().unwrap())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        wait_for(timeout, &format!("{needle:?} in the agent's log"), || {
            self.log_text().contains(needle).then_some(())
        });
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        stop_child(&mut self.child, Signal::SIGKILL);
    }
}

/// The cores an agent reports (`cpu_cores_percent` entries, `host.cpu_count`): the `cpuN`
/// lines of /proc/stat, every online core. Not `available_parallelism()`, which follows this
/// process's CPU affinity and cgroup quota and so differs on a CI runner or in a container.
pub fn online_cpus() -> usize {
    fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
}

/// MemTotal of this machine in bytes.
pub fn mem_total_bytes() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib * 1024
}

pub fn u64_field(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("field {key} missing or not an integer in {v}"))
}

/// Asserts the table's bookkeeping for one host of a single run: every sequence number from 1
/// to `last_seq` is accounted for exactly once, and nothing is missing or dropped.
pub fn assert_sequence_complete(host: &Value) {
    let name = &host["hostname"];
    let last = u64_field(host, "last_seq");
    let received = u64_field(host, "samples_received");
    let dropped = u64_field(host, "samples_dropped");
    let missing = u64_field(host, "samples_missing");
    assert!(last > 0, "{name}: no samples at all: {host}");
    assert_eq!(
        missing, 0,
        "{name}: sequence gap, {missing} samples missing: {host}"
    );
    assert_eq!(dropped, 0, "{name}: agent dropped samples: {host}");
    assert_eq!(
        received, last,
        "{name}: samples_received != last_seq (lost or counted twice): {host}"
    );
}

/// Runs `f` on a thread that entered network namespace `ns` (`/var/run/netns/NAME`):
/// sockets it opens live there. `setns` changes only the calling thread.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("netns thread")
}

/// Asserts that every sample of one host's run is accounted for exactly once, with nothing
/// missing: `samples_received + samples_dropped + samples_missing + samples_before_start ==
/// last_seq`, `samples_missing == 0`. Returns `last_seq` (the samples accounted for).
pub fn assert_accounted(host: &Value) -> u64 {
    let name = &host["hostname"];
    let last = u64_field(host, "last_seq");
    let received = u64_field(host, "samples_received");
    let dropped = u64_field(host, "samples_dropped");
    let missing = u64_field(host, "samples_missing");
    let before = u64_field(host, "samples_before_start");
    assert!(last > 0, "{name}: no samples at all: {host}");
    assert_eq!(missing, 0, "{name}: {missing} samples missing: {host}");
    assert_eq!(
        received + dropped + missing + before,
        last,
        "{name}: samples not accounted for exactly once: {host}"
    );
    last
}

/// A `sentinel-loadgen run` process (simulated agents over the real protocol), killed on drop.
pub struct Loadgen {
    pub child: Child,
    args: Vec<String>,
}

impl Loadgen {
    pub fn start(master: &Master, args: &[&str]) -> Loadgen {
        let mut all = vec![
            "run".to_string(),
            "--master".into(),
            master.listen.to_string(),
            "--token-file".into(),
            master.token_file.display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let child = Self::spawn(&all);
        Loadgen { child, args: all }
    }

    fn spawn(args: &[String]) -> Child {
        Command::new(bin("sentinel-loadgen"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sentinel-loadgen")
    }

    /// Simulated agents do not reconnect: after a master-side kill the generator's agents
    /// end, so it is started again (same ids, new runs) to keep the load on.
    pub fn keep_running(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            self.child = Self::spawn(&self.args);
        }
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        stop_child(&mut self.child, Signal::SIGKILL);
    }
}

/// Raises this process's soft open-files limit to its hard limit (tests that hold thousands of
/// sockets); returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    hard
}

/// (soft, hard) "Max open files" of a process, from /proc/PID/limits.
pub fn nofile_limits(pid: u32) -> Option<(u64, u64)> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    Some((nums.next()?, nums.next()?))
}

/// VmRSS of one process in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

impl Master {
    /// A master started the way systemd starts services, with a soft RLIMIT_NOFILE of `soft`
    /// (systemd's default is 1024): the supervisor and its children inherit it. This process
    /// lowers its own soft limit while spawning and restores it after (lowering it closes
    /// nothing; only opening fds above it would fail meanwhile, and no test holds that many).
    pub fn start_with_nofile(soft: u64) -> Master {
        static SPAWNING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = SPAWNING.lock().unwrap_or_else(|p| p.into_inner());
        let (old, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard).unwrap();
        let started = std::panic::catch_unwind(Master::start);
        setrlimit(Resource::RLIMIT_NOFILE, old, hard).unwrap();
        started.unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// The supervisor and its children (all live processes of this master).
    pub fn pids(&self) -> Vec<u32> {
        process_tree_running(self.pid(), &bin("sentinel-master"))
    }

    /// Sum of VmRSS over the master's processes, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pids().into_iter().map(rss_kib).sum()
    }

    /// Waits until a line of the current log contains every one of `words`; returns it.
    pub fn wait_log(&self, words: &[&str], timeout: Duration) -> String {
        wait_for(
            timeout,
            &format!("a master log line with {words:?}"),
            || {
                self.log_text()
                    .lines()
                    .find(|l| words.iter().all(|w| l.contains(w)))
                    .map(str::to_string)
            },
        )
    }

    /// Log lines containing every one of `words`.
    /// `sentinel-master --config <its master.toml> --http <its address> COMMAND ID`: an
    /// operator command (`remove-host`, `forget-key`) against this running master.
    pub fn operator_command(&self, command: &str, id: &str) -> std::process::Output {
        Command::new(bin("sentinel-master"))
            .arg("--config")
            .arg(self.dir.path().join("master.toml"))
            .args(["--http", &self.http.to_string(), command, id])
            .output()
            .expect("run sentinel-master")
    }

    pub fn log_lines_with(&self, words: &[&str]) -> usize {
        self.log_text()
            .lines()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .count()
    }
}

/// A hand-driven agent connection speaking raw frames, for hostile and edge-case peers.
pub struct Peer {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    pub fn connect(addr: SocketAddr) -> Peer {
        Self::try_connect(addr).unwrap()
    }

    /// [`Peer::connect`] that returns the error (a peer that reconnects in a loop).
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Peer> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(8)))?;
        stream.set_write_timeout(Some(Duration::from_secs(8)))?;
        Ok(Peer {
            stream,
            buf: Vec::new(),
        })
    }

    /// The next frame, expected to be an ack: its sequence number.
    pub fn ack(&mut self) -> u64 {
        match self.read() {
            Some(sentinel_protocol::MasterMessage::Ack(a)) => a.seq,
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// A connection from `source` (another loopback address such as 127.0.0.2, so the
    /// master sees a second peer address), bound before it connects.
    pub fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Peer {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind the peer's source address");
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(5))
            .unwrap();
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(8)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(8)))
            .unwrap();
        Peer {
            stream,
            buf: Vec::new(),
        }
    }

    /// This end's address, which the master's log names as `peer=`.
    pub fn name(&self) -> String {
        self.stream.local_addr().unwrap().to_string()
    }

    /// Next frame from the master, or None once it closed the connection (or went silent
    /// for the read timeout).
    pub fn read(&mut self) -> Option<sentinel_protocol::MasterMessage> {
        loop {
            if let Some((body, n)) =
                sentinel_protocol::split_frame(&self.buf).expect("master frames are valid")
            {
                let msg = sentinel_protocol::decode_body(body).expect("master frame decodes");
                self.buf.drain(..n);
                return Some(msg);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn challenge(&mut self) -> sentinel_protocol::Nonce {
        match self.read() {
            Some(sentinel_protocol::MasterMessage::Challenge(c)) => {
                c.nonce.as_slice().try_into().expect("32-byte nonce")
            }
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// Writes raw bytes; false if the master already closed.
    pub fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Writes one frame whose body is `body` (any bytes).
    pub fn send_body(&mut self, body: &[u8]) -> bool {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        self.send_raw(&out)
    }

    pub fn send(&mut self, msg: &sentinel_protocol::AgentMessage) -> bool {
        let mut out = Vec::new();
        sentinel_protocol::encode_frame(msg, &mut out).unwrap();
        self.send_raw(&out)
    }

    /// Reads until the master closes; returns the last `refused` it sent.
    pub fn refusal(&mut self) -> Option<sentinel_protocol::Refused> {
        let mut refused = None;
        while let Some(msg) = self.read() {
            if let sentinel_protocol::MasterMessage::Refused(r) = msg {
                refused = Some(r);
            }
        }
        refused
    }

    /// Challenge, then `hello` (with a proof computed for this connection's nonce and `token`);
    /// returns the master's answer.
    pub fn handshake(
        &mut self,
        hello: &sentinel_protocol::Hello,
        token: &str,
    ) -> Option<sentinel_protocol::MasterMessage> {
        let nonce = self.challenge();
        self.hello(&nonce, hello, token)
    }

    /// [`Peer::handshake`] for a peer that outlives masters going away (a reconnect loop):
    /// `None` instead of a panic when no challenge comes.
    pub fn try_handshake(
        &mut self,
        hello: &sentinel_protocol::Hello,
        token: &str,
    ) -> Option<sentinel_protocol::MasterMessage> {
        let Some(sentinel_protocol::MasterMessage::Challenge(c)) = self.read() else {
            return None;
        };
        let nonce: sentinel_protocol::Nonce = c.nonce.as_slice().try_into().ok()?;
        self.hello(&nonce, hello, token)
    }

    /// Sends `hello` with the proof for `nonce` and `token`; returns the master's answer.
    fn hello(
        &mut self,
        nonce: &sentinel_protocol::Nonce,
        hello: &sentinel_protocol::Hello,
        token: &str,
    ) -> Option<sentinel_protocol::MasterMessage> {
        let mut hello = hello.clone();
        hello.proof = sentinel_protocol::proof(token.as_bytes(), nonce, &hello.agent_id).to_vec();
        if !self.send(&sentinel_protocol::AgentMessage::Hello(hello)) {
            return None;
        }
        self.read()
    }

    /// [`Peer::handshake`] with an Ed25519 `key` (PROTOCOL.md section 3): the hello carries its
    /// public key and a key proof over this connection's nonce, `hello.run_id` and agent id.
    pub fn handshake_with_key(
        &mut self,
        hello: &sentinel_protocol::Hello,
        token: &str,
        key: &ring::signature::Ed25519KeyPair,
    ) -> Option<sentinel_protocol::MasterMessage> {
        use ring::signature::KeyPair;
        let nonce = self.challenge();
        let mut hello = hello.clone();
        hello.proof = sentinel_protocol::proof(token.as_bytes(), &nonce, &hello.agent_id).to_vec();
        let msg = sentinel_protocol::auth::key_message(&nonce, hello.run_id, &hello.agent_id);
        hello.key = Some(key.public_key().as_ref().to_vec());
        hello.key_proof = Some(key.sign(&msg).as_ref().to_vec());
        self.send(&sentinel_protocol::AgentMessage::Hello(hello));
        self.read()
    }
}

/// The key pair an agent keeps in `<state_dir>/agent-key`.
pub fn agent_key(state_dir: &Path) -> ring::signature::Ed25519KeyPair {
    let doc = fs::read(state_dir.join("agent-key")).expect("agent-key");
    ring::signature::Ed25519KeyPair::from_pkcs8(&doc).expect("a PKCS#8 Ed25519 key")
}

/// A key pair that is no agent's (a forger's), from a fixed seed.
pub fn forged_key(seed: u8) -> ring::signature::Ed25519KeyPair {
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("seed")
}

/// A hello that passes every check (the proof is filled in by [`Peer::handshake`]).
pub fn test_hello(agent_id: &str, hostname: &str, run_id: u64) -> sentinel_protocol::Hello {
    sentinel_protocol::Hello {
        version: sentinel_protocol::PROTOCOL_VERSION,
        agent_id: agent_id.into(),
        run_id,
        hostname: hostname.into(),
        interval_ms: 1000,
        clock_ms: 0,
        agent_version: "test".into(),
        host: sentinel_protocol::HostInfo::default(),
        proof: vec![0; 32],
        key: None,
        key_proof: None,
        labels: Default::default(),
    }
}

/// [`test_hello`] carrying `labels` (name, value), for a [`Peer`] that sends labels. Nothing
/// is checked here: hostile labels go out as they are.
pub fn test_hello_with_labels(
    agent_id: &str,
    hostname: &str,
    run_id: u64,
    labels: &[(&str, &str)],
) -> sentinel_protocol::Hello {
    sentinel_protocol::Hello {
        labels: labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..test_hello(agent_id, hostname, run_id)
    }
}

/// A valid sample with sequence number `seq`.
pub fn test_sample(seq: u64) -> sentinel_protocol::Sample {
    sentinel_protocol::Sample {
        seq,
        ts_ms: 1_764_000_000_000u64.wrapping_add(seq.wrapping_mul(1000)),
        cpu_percent: 10.0,
        mem_total_bytes: 1 << 30,
        mem_available_bytes: 1 << 29,
        mem_used_bytes: 1 << 29,
        ..sentinel_protocol::Sample::default()
    }
}

/// libfaketime's preload library (Debian's `faketime`), installed first when missing and run
/// as root (CI): the clock tests need it to step a real process's wall clock.
pub fn libfaketime() -> Option<PathBuf> {
    let find = || {
        let dirs = fs::read_dir("/usr/lib").ok()?;
        dirs.flatten()
            .map(|d| d.path().join("faketime/libfaketime.so.1"))
            .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
            .find(|p| p.exists())
    };
    if let Some(p) = find() {
        return Some(p);
    }
    if nix::unistd::geteuid().is_root() {
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "faketime"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        // A fresh machine may have no package lists yet.
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-q"]).status();
            install();
        }
    }
    find()
}

/// A dynamically linked binary (LD_PRELOAD works on it): it names an ELF interpreter.
pub fn is_dynamic(path: &Path) -> bool {
    let bytes = fs::read(path).unwrap_or_default();
    let head = &bytes[..bytes.len().min(4096)];
    head.windows(7).any(|w| w == b"ld-linu" || w == b"ld-musl")
}

/// A test that cannot run here says so and passes, except under CI (`CI` set, as `.ci/run`
/// runs), where a missing prerequisite would hide an unproven line: there it fails.
pub fn skip_unless_ci(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("cannot run under CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// `/api/v1/events` read in the background: (event name, data) in arrival order, the bytes
/// received, and whether the master closed it.
pub struct EventStream {
    events: Arc<Mutex<Vec<(String, Value)>>>,
    /// Bytes received so far, the response head included.
    pub bytes: Arc<Mutex<usize>>,
    /// Set when the master closed the stream.
    pub ended: Arc<Mutex<bool>>,
}

impl EventStream {
    /// Opens `/api/v1/events?QUERY` (`""` = unfiltered); the reader thread panics on a
    /// status other than 200.
    pub fn open(master: &Master, query: &str) -> EventStream {
        let mut s = TcpStream::connect(master.http).expect("connect to the http address");
        write!(
            s,
            "GET /api/v1/events?{query} HTTP/1.0\r\nHost: {}\r\n\r\n",
            master.http
        )
        .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let bytes = Arc::new(Mutex::new(0));
        let ended = Arc::new(Mutex::new(false));
        let (ev, by, end) = (events.clone(), bytes.clone(), ended.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut text = String::new();
            let mut head_done = false;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                *by.lock().unwrap() += n;
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                if !head_done {
                    let Some(i) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    assert!(
                        text.lines().next().is_some_and(|l| l.contains(" 200 ")),
                        "{text}"
                    );
                    text.drain(..i + 4);
                    head_done = true;
                }
                while let Some(i) = text.find("\n\n") {
                    let block: String = text.drain(..i + 2).collect();
                    let mut name = String::new();
                    let mut data = None;
                    for line in block.lines() {
                        if let Some(n) = line.strip_prefix("event: ") {
                            name = n.to_owned();
                        } else if let Some(d) = line.strip_prefix("data: ") {
                            data = Some(serde_json::from_str(d).expect("event data is JSON"));
                        }
                    }
                    if let Some(d) = data {
                        ev.lock().unwrap().push((name, d));
                    }
                }
            }
            *end.lock().unwrap() = true;
        });
        EventStream {
            events,
            bytes,
            ended,
        }
    }

    pub fn all(&self) -> Vec<(String, Value)> {
        self.events.lock().unwrap().clone()
    }

    /// Ids of every host row this stream has received in `snapshot` and `hosts` events.
    pub fn row_ids(&self) -> BTreeSet<String> {
        self.all()
            .iter()
            .filter(|(n, _)| n == "snapshot" || n == "hosts")
            .flat_map(|(_, d)| d["hosts"].as_array().unwrap().clone())
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Updates (`hosts` rows) received per host id.
    pub fn updates(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (_, d) in self.all().iter().filter(|(n, _)| n == "hosts") {
            for h in d["hosts"].as_array().unwrap() {
                *out.entry(h["id"].as_str().unwrap().to_owned()).or_default() += 1;
            }
        }
        out
    }

    pub fn snapshot_ids(&self) -> Option<BTreeSet<String>> {
        let all = self.all();
        let (_, d) = all.iter().find(|(n, _)| n == "snapshot")?;
        Some(
            d["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap().to_owned())
                .collect(),
        )
    }
}
