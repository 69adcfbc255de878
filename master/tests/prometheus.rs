//! Sentinel against a real Prometheus (Debian's `prometheus` package): `promtool check
//! metrics` on /metrics, a Prometheus that scrapes the master, and remote_write into a
//! Prometheus receiver across a 20 s master outage, counted sample by sample.
//!
//! Each test starts its own master (own ports, segment and state dir), real sentinel-agent
//! processes (target/debug, built by `cargo build --workspace --bins`) and its own Prometheus
//! on 127.0.0.1 with its config and data under a temp dir; everything is stopped by PID.
//! They need the prometheus binaries, so they are `#[ignore]`d in a plain `cargo test`;
//! `tests/prometheus/run.sh` installs what is missing and runs them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const MASTER: &str = env!("CARGO_BIN_EXE_sentinel-master");
const TOKEN: &str = "prometheus-test-token";

fn agent_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sentinel-agent");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A started process, stopped by PID (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.into(),
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM by PID and wait for the exit (SIGKILL after `grace`).
    fn stop(&mut self, grace: Duration) {
        if !self.running() {
            return;
        }
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while self.running() {
            if Instant::now() > deadline {
                eprintln!("{} did not stop in {grace:?}; killing it", self.name);
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// GET over HTTP/1.0 (no client library needed): status and body.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

fn get_json(addr: &str, path: &str) -> Option<Value> {
    let (code, body) = http_get(addr, path).ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Fixture {
    dir: PathBuf,
    shm: String,
    agent_addr: String,
    http_addr: String,
}

impl Fixture {
    fn new(tag: &str, extra_toml: &str) -> Fixture {
        let shm = format!("sentinel-prom-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{shm}-dir"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(
            dir.join("master.toml"),
            format!(
                "capacity = 64\nhistory_points = 600\nstate_dir = {:?}\n{extra_toml}",
                dir.display().to_string()
            ),
        )
        .unwrap();
        Fixture {
            dir,
            shm,
            agent_addr: format!("127.0.0.1:{}", free_port()),
            http_addr: format!("127.0.0.1:{}", free_port()),
        }
    }

    fn start_master(&self, n: u32) -> Proc {
        let mut m = Proc::spawn(
            "sentinel-master",
            Command::new(MASTER)
                .arg("--config")
                .arg(self.dir.join("master.toml"))
                .args(["--listen", &self.agent_addr, "--http", &self.http_addr])
                .args(["--shm-name", &self.shm])
                .arg("--token-file")
                .arg(self.dir.join("token")),
            &self.dir.join(format!("master-{n}.log")),
        );
        wait_for("the master's /healthz", Duration::from_secs(15), || {
            assert!(m.running(), "the master exited; see {}", self.dir.display());
            let h = get_json(&self.http_addr, "/healthz")?;
            (h["status"] == "ok").then_some(())
        });
        m
    }

    fn start_agent(&self, i: usize, hostname: &str, interval: &str) -> Proc {
        let state = self.dir.join(format!("agent-{i}"));
        std::fs::create_dir_all(&state).unwrap();
        Proc::spawn(
            hostname,
            Command::new(agent_bin())
                .args(["--master", &self.agent_addr, "--hostname", hostname])
                .args(["--interval", interval, "--reconnect-max", "1s"])
                .arg("--token-file")
                .arg(self.dir.join("token"))
                .arg("--state-dir")
                .arg(&state),
            &self.dir.join(format!("agent-{i}.log")),
        )
    }

    fn hosts(&self) -> Vec<Value> {
        get_json(&self.http_addr, "/api/v1/hosts")
            .and_then(|v| v["hosts"].as_array().cloned())
            .unwrap_or_default()
    }

    fn start_prometheus(&self, scrape: bool) -> (Proc, String) {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n".to_string();
        if scrape {
            config.push_str(&format!(
                "scrape_configs:\n  - job_name: sentinel\n    static_configs:\n      - targets: ['{}']\n",
                self.http_addr
            ));
        }
        std::fs::write(self.dir.join("prometheus.yml"), config).unwrap();
        let mut p = Proc::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    self.dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    self.dir.join("prometheus-data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--web.enable-remote-write-receiver")
                .stdin(Stdio::null()),
            &self.dir.join("prometheus.log"),
        );
        wait_for("Prometheus /-/ready", Duration::from_secs(30), || {
            assert!(p.running(), "prometheus exited; see {}", self.dir.display());
            let (code, _) = http_get(&addr, "/-/ready").ok()?;
            (code == 200).then_some(())
        });
        (p, addr)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.shm));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

/// An instant PromQL query through Prometheus's HTTP API: (labels, value) per series.
fn query(prom: &str, promql: &str) -> Vec<(Value, f64)> {
    let v = get_json(prom, &format!("/api/v1/query?query={}", urlencode(promql)))
        .unwrap_or(Value::Null);
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| {
                    let value = s["value"][1]
                        .as_str()
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(f64::NAN);
                    (s["metric"].clone(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs Debian's prometheus package; run tests/prometheus/run.sh"]
fn promtool_accepts_metrics_and_prometheus_scrapes_every_host() {
    let f = Fixture::new("scrape", "");
    let _master = f.start_master(1);
    let names = ["web-1", "db-1", "x\"y\\z"];
    let _agents: Vec<Proc> = names
        .iter()
        .enumerate()
        .map(|(i, n)| f.start_agent(i, n, "500ms"))
        .collect();
    let ids: Vec<String> = wait_for("every agent in the table", Duration::from_secs(20), || {
        let hosts = f.hosts();
        (hosts.len() == names.len()
            && hosts
                .iter()
                .all(|h| h["samples_received"].as_u64() >= Some(2)))
        .then(|| {
            hosts
                .iter()
                .map(|h| h["id"].as_str().unwrap().to_string())
                .collect()
        })
    });

    // promtool check metrics: exit 0 and no lint finding.
    let (code, metrics) = http_get(&f.http_addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {:?}\n{findings}",
        out.status
    );
    for family in [
        "sentinel_host_up",
        "sentinel_host_cpu_ratio",
        "sentinel_master_agent_connections",
        "sentinel_master_samples_ingested_total",
        "sentinel_master_table_fill_ratio",
    ] {
        assert!(metrics.contains(&format!("# TYPE {family} ")), "{family}");
    }

    // A real Prometheus scrapes the master; PromQL returns every host's CPU and up.
    let (_prom, prom) = f.start_prometheus(true);
    for q in ["sentinel_host_cpu_ratio", "sentinel_host_up == 1"] {
        let got = wait_for(
            &format!("{q} for every host"),
            Duration::from_secs(30),
            || {
                let r = query(&prom, q);
                let mut got: Vec<String> = r
                    .iter()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(m, _)| m["id"].as_str().unwrap_or("").to_string())
                    .collect();
                got.sort();
                let mut want = ids.clone();
                want.sort();
                (got == want).then_some(r)
            },
        );
        let mut hosts: Vec<String> = got
            .iter()
            .map(|(m, _)| m["host"].as_str().unwrap().to_string())
            .collect();
        hosts.sort();
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(hosts, want, "{q}: host labels survive escaping");
        eprintln!("{q}: {} series", got.len());
    }
    let up = query(&prom, "up{job=\"sentinel\"}");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0, "the scrape itself succeeds");
}

#[test]
#[ignore = "needs Debian's prometheus package; run tests/prometheus/run.sh"]
fn remote_write_delivers_every_sample_across_a_20s_master_outage() {
    let f = Fixture::new("rw", "");
    let (_prom, prom) = f.start_prometheus(false);
    std::fs::write(
        f.dir.join("master.toml"),
        format!(
            "capacity = 64\nhistory_points = 600\nstate_dir = {:?}\n[remote_write]\nurl = \"http://{prom}/api/v1/write\"\nbatch_samples = 300\n",
            f.dir.display().to_string()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut master = f.start_master(1);
    let names = ["alpha", "beta", "gamma"];
    let mut agents: Vec<Proc> = names
        .iter()
        .enumerate()
        .map(|(i, n)| f.start_agent(i, n, "1s"))
        .collect();
    wait_for("every agent connected", Duration::from_secs(15), || {
        (f.hosts().len() == names.len()).then_some(())
    });

    // 20 s up, 20 s down (SIGTERM to the supervisor by PID), 20 s up again on the same ports.
    let phase = |until: Duration| {
        while started.elapsed() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    phase(Duration::from_secs(20));
    master.stop(Duration::from_secs(10));
    let rw_state = std::fs::read_to_string(f.dir.join(format!("{}.remote-write", f.shm)))
        .expect("the stopping master saved its remote_write high-water marks");
    eprintln!("after the first master: {rw_state}");
    phase(Duration::from_secs(40));
    let mut master = f.start_master(2);
    phase(Duration::from_secs(60));
    for a in &mut agents {
        a.stop(Duration::from_secs(10)); // goodbye after every pending sample
    }

    // What each agent sent: its run's last sequence number (one run each, from 1, no drops).
    let sent: Vec<(String, u64)> = wait_for("every agent stopped", Duration::from_secs(15), || {
        let hosts = f.hosts();
        hosts.iter().all(|h| h["status"] == "stopped").then(|| {
            hosts
                .iter()
                .map(|h| {
                    assert_eq!(h["samples_dropped"], 0, "{h}");
                    assert_eq!(h["samples_missing"], 0, "{h}");
                    // The outage's samples came back as a replay (with their own times).
                    assert!(h["samples_replayed"].as_u64() >= Some(15), "{h}");
                    (
                        h["id"].as_str().unwrap().to_string(),
                        h["last_seq"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
    });
    assert_eq!(sent.len(), names.len());
    for (_, n) in &sent {
        assert!(
            *n >= 55,
            "a 60 s run at 1 s sends about 60 samples, got {n}"
        );
    }

    // Prometheus holds every sample of every agent: count per series == samples sent.
    for metric in [
        "sentinel_host_cpu_ratio",
        "sentinel_host_memory_used_bytes",
        "sentinel_host_load1",
    ] {
        let counts = wait_for(
            &format!("{metric}: every sample in Prometheus"),
            Duration::from_secs(20),
            || {
                let r = query(&prom, &format!("count_over_time({metric}[10m])"));
                let counts: Vec<(String, u64)> = sent
                    .iter()
                    .map(|(id, _)| {
                        let c = r
                            .iter()
                            .find(|(m, _)| m["id"] == id.as_str())
                            .map_or(0, |(_, v)| *v as u64);
                        (id.clone(), c)
                    })
                    .collect();
                (counts == sent).then_some(counts)
            },
        );
        eprintln!("{metric}: {counts:?} (sent {sent:?})");
    }
    let (_, metrics) = http_get(&f.http_addr, "/metrics").unwrap();
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sentinel_remote_write_samples_dropped_total "))
        .expect("the dropped counter is in /metrics");
    assert_eq!(dropped, "0", "nothing dropped by the second master");
    master.stop(Duration::from_secs(10));
    let log = std::fs::read_to_string(f.dir.join("master-1.log")).unwrap_or_default();
    assert!(
        !log.contains("remote_write: the receiver rejected")
            && !log.contains("shutting down with unsent samples"),
        "the first master delivered everything:\n{log}"
    );
}
