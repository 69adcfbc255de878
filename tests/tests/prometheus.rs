//! Sentinel against a real Prometheus (Debian's `prometheus` package): `promtool check
//! metrics` on /metrics, a Prometheus that scrapes the master, and remote_write into a
//! Prometheus receiver across a 20 s master outage, counted sample by sample; and hosts with
//! labels (hostile values included) selected by PromQL on both paths.
//!
//! Each test starts its own master and real agents through the harness and its own
//! Prometheus on 127.0.0.1:0 (the bound port read back from its log), config and data in a
//! temp dir; everything is stopped by PID. They need the prometheus binaries, so they are
//! `#[ignore]`d in a plain `cargo test`; `tests/prometheus/run.sh` installs what is missing
//! and runs them. (Moved from master/tests/prometheus.rs onto the one harness.)

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sentinel_tests::*;
use serde_json::Value;

/// A Prometheus we started, stopped by PID (SIGTERM, then SIGKILL) when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes `dir/prometheus.yml`: with a `target`, scraping it every 1 s as job `sentinel`.
fn write_prometheus_config(dir: &Path, target: Option<SocketAddr>) {
    let mut config = "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n".to_string();
    if let Some(target) = target {
        config.push_str(&format!(
            "scrape_configs:\n  - job_name: sentinel\n    static_configs:\n      - targets: ['{target}']\n"
        ));
    }
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
}

impl Prometheus {
    /// Starts scraping `target` (the config rewritten, then SIGHUP to our Prometheus by PID):
    /// for a master that had to know this Prometheus's address first (remote_write).
    fn scrape(&self, dir: &Path, target: SocketAddr) {
        let log = dir.join("prometheus.log");
        let reloads = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("Completed loading of configuration file")
                .count()
        };
        let before = reloads();
        write_prometheus_config(dir, Some(target));
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGHUP).unwrap();
        wait_for(
            Duration::from_secs(30),
            "Prometheus to reload its config",
            || (reloads() > before).then_some(()),
        );
    }
}

/// Starts Prometheus on 127.0.0.1:0 in `dir`; with `scrape`, scraping `target` every 1 s.
fn start_prometheus(dir: &Path, target: Option<SocketAddr>) -> Prometheus {
    write_prometheus_config(dir, target);
    let log = dir.join("prometheus.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus-data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg("--web.enable-remote-write-receiver")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("prometheus (Debian package prometheus)");
    // Prometheus 2.42 logs the bound address: `msg="Listening on" address=127.0.0.1:46751`.
    let addr = wait_for(
        Duration::from_secs(30),
        "Prometheus to log its bound address",
        || {
            assert!(
                matches!(child.try_wait(), Ok(None)),
                "prometheus exited; see {}",
                log.display()
            );
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("msg=\"Listening on\""))
                .find_map(|l| l.split("address=").nth(1)?.split(' ').next()?.parse().ok())
        },
    );
    let prom = Prometheus { child, addr };
    wait_for(Duration::from_secs(30), "Prometheus /-/ready", || {
        let (code, _) = http_get(addr, "/-/ready", Duration::from_secs(5)).ok()?;
        (code == 200).then_some(())
    });
    prom
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

/// An instant PromQL query through Prometheus's HTTP API: (labels, value) per series.
fn query(prom: SocketAddr, promql: &str) -> Vec<(Value, f64)> {
    let v = http_json(prom, &format!("/api/v1/query?query={}", urlencode(promql)))
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

/// `promtool check metrics` on `metrics`: exit 0 and no lint finding.
fn assert_promtool_accepts(metrics: &str) {
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
}

/// A master with a 64-host table and 600 history points (plus `extra_toml`), once healthy.
fn start_master(extra_toml: &str) -> Master {
    let config = format!("capacity = 64\nhistory_points = 600\n{extra_toml}");
    let m = Master::start_configured(&config, tempfile::tempdir().unwrap());
    m.wait_healthy(Duration::from_secs(15));
    m
}

fn hosts(m: &Master) -> Vec<Value> {
    m.hosts().unwrap_or_default()
}

#[test]
#[ignore = "needs Debian's prometheus package; run tests/prometheus/run.sh"]
fn promtool_accepts_metrics_and_prometheus_scrapes_every_host() {
    let master = start_master("");
    // Hostnames are limited to A-Z a-z 0-9 - . _ (PROTOCOL.md); the odd-but-allowed one
    // checks that label values keep dots and underscores.
    let names = ["web-1", "db-1", "x_y.z-"];
    let _agents: Vec<Agent> = names
        .iter()
        .map(|n| Agent::start(&master, n, "500ms"))
        .collect();
    let ids: Vec<String> = wait_for(Duration::from_secs(20), "every agent in the table", || {
        let hosts = hosts(&master);
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
    let (code, metrics) = master.get("/metrics", Duration::from_secs(10)).unwrap();
    assert_eq!(code, 200);
    assert_promtool_accepts(&metrics);
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
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(dir.path(), Some(master.http));
    for q in ["sentinel_host_cpu_ratio", "sentinel_host_up == 1"] {
        let got = wait_for(
            Duration::from_secs(30),
            &format!("{q} for every host"),
            || {
                let r = query(prom.addr, q);
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
    let up = query(prom.addr, "up{job=\"sentinel\"}");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0, "the scrape itself succeeds");
}

#[test]
#[ignore = "needs Debian's prometheus package; run tests/prometheus/run.sh"]
fn remote_write_delivers_every_sample_across_a_20s_master_outage() {
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(dir.path(), None);
    let started = Instant::now();
    let mut master = start_master(&format!(
        "[remote_write]\nurl = \"http://{}/api/v1/write\"\nbatch_samples = 300\n",
        prom.addr
    ));
    let names = ["alpha", "beta", "gamma"];
    let mut agents: Vec<Agent> = names
        .iter()
        .map(|n| Agent::start(&master, n, "1s"))
        .collect();
    wait_for(Duration::from_secs(15), "every agent connected", || {
        (hosts(&master).len() == names.len()).then_some(())
    });

    // 20 s up, 20 s down (SIGTERM to the supervisor by PID), 20 s up again on the same ports.
    // The phases are the scenario's own clock, not a guess at how long something takes.
    let phase = |until: Duration| {
        if let Some(left) = until.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
    };
    phase(Duration::from_secs(20));
    assert!(master.terminate().success());
    let rw_file = master
        .dir
        .path()
        .join("state")
        .join(format!("{}.remote-write", master.shm_name));
    let rw_state = std::fs::read_to_string(&rw_file)
        .expect("the stopping master saved its remote_write high-water marks");
    eprintln!("after the first master: {rw_state}");
    let first_log = master.log.clone();
    phase(Duration::from_secs(40));
    master.respawn();
    phase(Duration::from_secs(60));
    for a in &mut agents {
        a.signal(Signal::SIGTERM); // goodbye after every pending sample
        a.wait_exit(Duration::from_secs(10));
    }

    // What each agent sent: its run's last sequence number (one run each, from 1, no drops).
    let sent: Vec<(String, u64)> = wait_for(Duration::from_secs(15), "every agent stopped", || {
        let hosts = hosts(&master);
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
            Duration::from_secs(20),
            &format!("{metric}: every sample in Prometheus"),
            || {
                let r = query(prom.addr, &format!("count_over_time({metric}[10m])"));
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
    let (_, metrics) = master.get("/metrics", Duration::from_secs(10)).unwrap();
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sentinel_remote_write_samples_dropped_total "))
        .expect("the dropped counter is in /metrics");
    assert_eq!(dropped, "0", "nothing dropped by the second master");
    assert!(master.terminate().success());
    let log = std::fs::read_to_string(first_log).unwrap_or_default();
    assert!(
        !log.contains("remote_write: the receiver rejected")
            && !log.contains("shutting down with unsent samples"),
        "the first master delivered everything:\n{log}"
    );
}

/// The value [[host_labels]] gives the `odd-*` hosts: every character the text format
/// escapes but newline (the hello refuses control characters), the text format's own
/// punctuation, and non-ASCII.
const HOSTILE: &str = r#"a"b\c ☃ Zürich},x="1"#;
/// How it must appear in /metrics (Prometheus text format 0.0.4 escapes).
const HOSTILE_ESCAPED: &str = r#"a\"b\\c ☃ Zürich},x=\"1"#;
/// A hostile value an agent sends itself (`--label`).
const AGENT_HOSTILE: &str = r#"say "hi" \ bye ☃"#;

/// A host's own labels as a Prometheus series shows them: everything but the ones named in
/// `skip` (`__name__`, Sentinel's `host`/`id`, the scrape's `job`/`instance`).
fn own_labels(metric: &Value, skip: &[&str]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = metric
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    labels
}

/// Label pairs, sorted by name.
type Labels = Vec<(String, String)>;

fn pairs(labels: &[(&str, &str)]) -> Labels {
    let mut v: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

/// Five real agents labelled from agent.toml, `--label` (one overriding the file), master.toml
/// `[[host_labels]]` (a hostile value) or not at all: /metrics is promtool-valid with each
/// host's labels after `host` and `id` on its series, escaped; a real Prometheus scraping it and
/// receiving its remote_write answers PromQL by label with exactly the matching hosts on both
/// paths (the hostile values matching as themselves, the configured remote_write label winning
/// over a host's own of that name); a host restarted with other labels moves to new series, and
/// the receiver rejects nothing.
#[test]
#[ignore = "needs Debian's prometheus package; run tests/prometheus/run.sh"]
fn prometheus_selects_hosts_by_label_in_scrapes_and_remote_write() {
    let dir = tempfile::tempdir().unwrap();
    // One Prometheus both scrapes the master and receives its remote_write: scraped series
    // carry `job="sentinel"`, pushed ones no `job` at all, so PromQL tells them apart.
    let prom = start_prometheus(dir.path(), None);
    let master = start_master(&format!(
        "[remote_write]\nurl = \"http://{}/api/v1/write\"\nlabels = {{ master = \"m1\" }}\n\n\
         [[host_labels]]\nhostname = \"odd-*\"\nlabels = {{ role = \"db\", note = '{HOSTILE}' }}\n",
        prom.addr
    ));
    // Labels from agent.toml, from --label flags, a flag overriding the file, from the
    // master's [[host_labels]], and none at all.
    let file = "labels = { role = \"db\", dc = \"eu1\" }\n";
    let flags = |l: &[&str]| -> Vec<String> {
        l.iter()
            .flat_map(|x| ["--label".to_string(), x.to_string()])
            .collect()
    };
    let hosts_and_opts: Vec<(&str, AgentOpts, Labels)> = vec![
        (
            "db-1",
            AgentOpts {
                config: file.into(),
                ..AgentOpts::default()
            },
            pairs(&[("role", "db"), ("dc", "eu1")]),
        ),
        (
            "db-2",
            AgentOpts {
                args: flags(&["role=db", "dc=eu2"]),
                ..AgentOpts::default()
            },
            pairs(&[("role", "db"), ("dc", "eu2")]),
        ),
        (
            "web-1",
            AgentOpts {
                config: file.into(),
                args: flags(&[
                    "role=web",
                    &format!("note={AGENT_HOSTILE}"),
                    "master=agent-says",
                ]),
                ..AgentOpts::default()
            },
            pairs(&[
                ("role", "web"),
                ("dc", "eu1"),
                ("note", AGENT_HOSTILE),
                ("master", "agent-says"),
            ]),
        ),
        (
            "odd-1",
            AgentOpts::default(),
            pairs(&[("role", "db"), ("note", HOSTILE)]),
        ),
        ("plain", AgentOpts::default(), Vec::new()),
    ];
    let mut agents: Vec<Agent> = hosts_and_opts
        .iter()
        .map(|(name, opts, _)| {
            Agent::start_opts(master.listen, &master.token_file, name, "500ms", opts)
        })
        .collect();
    // (hostname, id, the labels it must carry)
    let expect: Vec<(String, String, Labels)> = wait_for(
        Duration::from_secs(20),
        "every agent in the table with its labels",
        || {
            let hosts = hosts(&master);
            (hosts.len() == hosts_and_opts.len()
                && hosts
                    .iter()
                    .all(|h| h["samples_received"].as_u64() >= Some(2)))
            .then(|| {
                hosts_and_opts
                    .iter()
                    .map(|(name, _, labels)| {
                        let h = hosts.iter().find(|h| h["hostname"] == *name).unwrap();
                        (
                            name.to_string(),
                            h["id"].as_str().unwrap().to_string(),
                            labels.clone(),
                        )
                    })
                    .collect()
            })
        },
    );
    let id_of = |name: &str| expect.iter().find(|(n, ..)| n == name).unwrap().1.clone();
    let mut db_ids: Vec<String> = ["db-1", "db-2", "odd-1"].iter().map(|n| id_of(n)).collect();
    db_ids.sort();

    // /metrics: promtool-valid, and every host series carries host, id, then its labels in
    // name order, escaped.
    let (code, metrics) = master.get("/metrics", Duration::from_secs(10)).unwrap();
    assert_eq!(code, 200);
    assert_promtool_accepts(&metrics);
    let families = [
        "sentinel_host_up",
        "sentinel_host_cpu_ratio",
        "sentinel_host_samples_received_total",
    ];
    for (name, id, labels) in &expect {
        let escaped: String = labels
            .iter()
            .map(|(k, v)| {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!(",{k}=\"{v}\"")
            })
            .collect();
        let set = format!("{{host=\"{name}\",id=\"{id}\"{escaped}}} ");
        for family in families {
            let line = format!("\n{family}{set}");
            assert!(
                metrics.contains(&line),
                "{name}: no line starting {line:?} in\n{metrics}"
            );
        }
    }
    assert!(
        metrics.contains(&format!(",note=\"{HOSTILE_ESCAPED}\",role=\"db\"}}")),
        "the hostile value escaped as the text format says"
    );

    // A real Prometheus scrapes the same text, and PromQL selects by label: exactly the db
    // hosts (agent file, agent flags, master config), and the hostile value matches as itself.
    prom.scrape(dir.path(), master.http);
    let selected = |q: &str, want: &[String]| -> Vec<(Value, f64)> {
        wait_for(Duration::from_secs(30), &format!("{q}: {want:?}"), || {
            let r = query(prom.addr, q);
            let mut got: Vec<String> = r
                .iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(m, _)| m["id"].as_str().unwrap_or("").to_string())
                .collect();
            got.sort();
            (got == want).then_some(r)
        })
    };
    let scraped = selected(
        "sentinel_host_cpu_ratio{job=\"sentinel\",role=\"db\"}",
        &db_ids,
    );
    for (m, _) in &scraped {
        let (name, _, labels) = expect.iter().find(|(_, id, _)| m["id"] == *id).unwrap();
        assert_eq!(m["host"], name.as_str());
        assert_eq!(
            &own_labels(m, &["__name__", "host", "id", "job", "instance"]),
            labels,
            "{name}: scraped labels"
        );
    }
    let promql_string = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    selected(
        &format!(
            "sentinel_host_up{{job=\"sentinel\",note=\"{}\"}}",
            promql_string(HOSTILE)
        ),
        &[id_of("odd-1")],
    );
    selected(
        &format!(
            "sentinel_host_up{{job=\"sentinel\",note=\"{}\"}}",
            promql_string(AGENT_HOSTILE)
        ),
        &[id_of("web-1")],
    );
    selected("sentinel_host_up{job=\"sentinel\",role!=\"db\"}", &{
        let mut v = vec![id_of("web-1"), id_of("plain")];
        v.sort();
        v
    });

    // remote_write: the pushed series (no `job`) carry the same labels, plus the configured
    // `master`, which wins over web-1's own `master` (operator authority).
    let pushed = selected("sentinel_host_cpu_ratio{job=\"\",role=\"db\"}", &db_ids);
    let with_master = |labels: &[(String, String)]| {
        let mut v: Vec<(String, String)> = labels
            .iter()
            .filter(|(k, _)| k != "master")
            .cloned()
            .chain([("master".to_string(), "m1".to_string())])
            .collect();
        v.sort();
        v
    };
    for (m, _) in &pushed {
        let (name, _, labels) = expect.iter().find(|(_, id, _)| m["id"] == *id).unwrap();
        assert_eq!(
            own_labels(m, &["__name__", "host", "id"]),
            with_master(labels),
            "{name}: remote_write labels"
        );
    }
    for metric in ["sentinel_host_memory_used_bytes", "sentinel_host_load1"] {
        selected(&format!("{metric}{{job=\"\",role=\"db\"}}"), &db_ids);
    }
    let web = selected(
        &format!(
            "sentinel_host_cpu_ratio{{job=\"\",note=\"{}\"}}",
            promql_string(AGENT_HOSTILE)
        ),
        &[id_of("web-1")],
    );
    assert_eq!(web[0].0["master"], "m1", "the configured label wins");

    // A label change takes effect at the next hello and starts new series on both paths:
    // db-2 restarted (same agent id) as role=web.
    let at = hosts_and_opts
        .iter()
        .position(|(n, ..)| *n == "db-2")
        .unwrap();
    agents[at].signal(Signal::SIGTERM);
    agents[at].wait_exit(Duration::from_secs(10));
    let relabelled = AgentOpts {
        args: flags(&["role=web", "dc=eu2"]),
        ..AgentOpts::default()
    };
    let db2 = Agent::start_opts_with_state_of(&master, "db-2", "500ms", &relabelled, &agents[at]);
    agents[at] = db2;
    let mut web_ids = vec![id_of("web-1"), id_of("db-2")];
    web_ids.sort();
    selected(
        "sentinel_host_cpu_ratio{job=\"sentinel\",role=\"web\"}",
        &web_ids,
    );
    selected("sentinel_host_cpu_ratio{job=\"\",role=\"web\"}", &web_ids);
    // The scrape's old db-2 series is marked stale once /metrics no longer has it.
    selected("sentinel_host_cpu_ratio{job=\"sentinel\",role=\"db\"}", &{
        let mut v = vec![id_of("db-1"), id_of("odd-1")];
        v.sort();
        v
    });
    let (_, metrics) = master.get("/metrics", Duration::from_secs(10)).unwrap();
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sentinel_remote_write_samples_dropped_total "))
        .expect("the dropped counter is in /metrics");
    assert_eq!(dropped, "0", "the receiver took every labelled request");
}
