//! Starts the real sentinel-master (supervisor + collector + http), talks to it over TCP
//! with an agent written with the protocol crate, and checks the API, the process tree and
//! the clean shutdown. Every wait is a condition with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sentinel_protocol::{
    auth, decode_body, encode_frame, split_frame, AgentMessage, Batch, Goodbye, Hello, HostInfo,
    MasterMessage, Sample,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sentinel-master");
const TOKEN: &str = "fleet-secret";
const AGENT_ID: &str = "00112233445566778899aabbccddeeff";

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Master {
    child: Option<Child>,
    shm_name: String,
    agent_addr: String,
    http_addr: String,
    log: mpsc::Receiver<String>,
    lines: Vec<String>,
    dir: PathBuf,
}

impl Master {
    fn start(tag: &str) -> Master {
        let shm_name = format!("sentinel-test-{tag}-{}", std::process::id());
        Self::start_with(&shm_name, &[])
    }

    fn start_named(shm_name: &str) -> Master {
        Self::start_with(shm_name, &[])
    }

    fn start_with(shm_name: &str, extra: &[&str]) -> Master {
        let dir = std::env::temp_dir().join(format!("{shm_name}-dir"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(
            dir.join("master.toml"),
            "capacity = 64\nhistory_points = 30\n",
        )
        .unwrap();
        let mut child = Command::new(BIN)
            .args(["--config", dir.join("master.toml").to_str().unwrap()])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--shm-name",
                shm_name,
            ])
            .args(["--token-file", dir.join("token").to_str().unwrap()])
            .args(["--state-dir", dir.join("state").to_str().unwrap()])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("master: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut m = Master {
            child: Some(child),
            shm_name: shm_name.into(),
            agent_addr: String::new(),
            http_addr: String::new(),
            log: rx,
            lines: Vec::new(),
            dir,
        };
        let line = m.wait_log("listening line", |l| {
            l.contains("sentinel-master listening")
        });
        let field = |k: &str| {
            line.split(&format!("{k}="))
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        };
        m.agent_addr = field("agent_addr");
        m.http_addr = field("http_addr");
        wait_for("healthz ok", Duration::from_secs(10), || {
            let (code, body) = http_get(&m.http_addr, "/healthz").ok()?;
            (code == 200 && body["collector_pid"].as_u64()? > 0).then_some(())
        });
        m
    }

    fn wait_log(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.lines.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out waiting for log: {what}"));
            self.lines.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn health(&self) -> Value {
        http_get(&self.http_addr, "/healthz").unwrap().1
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = wait_for("master exit", Duration::from_secs(15), || {
            child.try_wait().unwrap()
        });
        self.child = None;
        status
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.shm_name));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Pids of processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && cmd.contains("sentinel-master") {
            pids.push(pid);
        }
    }
    pids
}

fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    Ok((code, serde_json::from_str(body).unwrap_or(Value::Null)))
}

struct Agent {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Agent {
    fn connect(addr: &str) -> (Agent, Vec<u8>) {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut a = Agent { s, buf: Vec::new() };
        let MasterMessage::Challenge(c) = a.recv().unwrap() else {
            panic!("expected a challenge")
        };
        (a, c.nonce)
    }

    fn send(&mut self, msg: &AgentMessage) {
        let mut out = Vec::new();
        encode_frame(msg, &mut out).unwrap();
        self.s.write_all(&out).unwrap();
    }

    fn recv(&mut self) -> Option<MasterMessage> {
        loop {
            if let Some((body, n)) = split_frame(&self.buf).unwrap() {
                let msg = decode_body(body).unwrap();
                self.buf.drain(..n);
                return Some(msg);
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn hello(&mut self, nonce: &[u8], token: &str, version: u16, run_id: u64) -> MasterMessage {
        let nonce: auth::Nonce = nonce.try_into().unwrap();
        let hello = Hello {
            version,
            agent_id: AGENT_ID.into(),
            run_id,
            // Markup in a free-text field (hostnames are limited to A-Z a-z 0-9 - . _).
            hostname: "web-1".into(),
            interval_ms: 1000,
            clock_ms: 1_700_000_000_000,
            agent_version: "test".into(),
            host: HostInfo {
                os: "<b>Linux</b>".into(),
                kernel: "6.1".into(),
                arch: "x86_64".into(),
                cpu_model: "cpu".into(),
                cpu_count: 4,
            },
            proof: auth::proof(token.as_bytes(), &nonce, AGENT_ID).to_vec(),
            key: None,
            key_proof: None,
        };
        self.send(&AgentMessage::Hello(hello));
        self.recv().expect("an answer to hello")
    }
}

fn sample(seq: u64) -> Sample {
    Sample {
        seq,
        ts_ms: 1_700_000_000_000 + seq * 1000,
        cpu_percent: 12.5,
        load1: 0.5,
        mem_total_bytes: 8 << 30,
        mem_available_bytes: 6 << 30,
        mem_used_bytes: 2 << 30,
        disk_read_bytes: seq * 1000,
        ..Sample::default()
    }
}

fn ack(a: &mut Agent) -> u64 {
    match a.recv() {
        Some(MasterMessage::Ack(x)) => x.seq,
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[test]
fn master_stores_samples_serves_them_survives_a_collector_kill_and_shuts_down_clean() {
    let mut m = Master::start("main");
    assert!(std::path::Path::new(&format!("/dev/shm/{}", m.shm_name)).exists());
    let procs = wait_for("3 processes", Duration::from_secs(5), || {
        let p = processes_with(&m.shm_name);
        (p.len() == 3).then_some(p)
    });
    let health = m.health();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["supervisor_pid"].as_u64(), Some(m.pid() as u64));
    for key in ["collector_pid", "http_pid"] {
        assert!(
            procs.contains(&(health[key].as_u64().unwrap() as i32)),
            "{key} in {procs:?}"
        );
    }
    assert_eq!(health["capacity"], 64);

    // Refusals: wrong token, unknown version.
    let (mut bad, nonce) = Agent::connect(&m.agent_addr);
    match bad.hello(&nonce, "wrong", 1, 1) {
        MasterMessage::Refused(r) => assert_eq!(r.code, "auth"),
        other => panic!("{other:?}"),
    }
    m.wait_log("auth refusal log", |l| {
        l.contains("refused connection") && l.contains("code=\"auth\"")
    });
    let (mut old, nonce) = Agent::connect(&m.agent_addr);
    match old.hello(&nonce, TOKEN, 99, 1) {
        MasterMessage::Refused(r) => {
            assert!(r.code == "version" && r.reason.contains('1'), "{r:?}")
        }
        other => panic!("{other:?}"),
    }

    // A real session: 5 samples, then a batch of 3.
    let (mut a, nonce) = Agent::connect(&m.agent_addr);
    match a.hello(&nonce, TOKEN, 1, 42) {
        MasterMessage::Welcome(w) => assert_eq!(w.last_seq, 0),
        other => panic!("{other:?}"),
    }
    for seq in 1..=5 {
        a.send(&AgentMessage::Sample(sample(seq)));
        assert_eq!(ack(&mut a), seq);
    }
    a.send(&AgentMessage::Batch(Batch {
        samples: (6..=8).map(sample).collect(),
    }));
    assert_eq!(ack(&mut a), 8);
    a.send(&AgentMessage::Sample(sample(3))); // a duplicate is acked, not counted
    assert_eq!(ack(&mut a), 8);

    let (code, hosts) = http_get(&m.http_addr, "/api/v1/hosts").unwrap();
    assert_eq!(code, 200);
    let h = &hosts["hosts"][0];
    assert_eq!(h["id"], AGENT_ID);
    assert_eq!(h["hostname"], "web-1");
    assert_eq!(h["os"], "<b>Linux</b>");
    assert_eq!(h["status"], "up");
    assert_eq!(h["connected"], true);
    assert_eq!(
        (
            h["samples_received"].as_u64(),
            h["samples_replayed"].as_u64()
        ),
        (Some(8), Some(3))
    );
    assert_eq!(
        (h["last_seq"].as_u64(), h["duplicates"].as_u64()),
        (Some(8), Some(1))
    );
    assert_eq!(h["mem_total_bytes"].as_u64(), Some(8 << 30));
    assert_eq!(h["cpu_percent"].as_f64(), Some(12.5));
    assert_eq!(h["cpu_count"], 4);

    let (code, detail) = http_get(&m.http_addr, &format!("/api/v1/hosts/{AGENT_ID}")).unwrap();
    assert_eq!(code, 200);
    assert_eq!(detail["sample"]["seq"], 8);
    let points = detail["history"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 8);
    assert_eq!(points[7]["disk_read_bytes_per_s"].as_f64(), Some(1000.0));
    assert_eq!(
        http_get(
            &m.http_addr,
            "/api/v1/hosts/ffffffffffffffffffffffffffffffff"
        )
        .unwrap()
        .0,
        404
    );

    // SIGKILL the collector: it comes back, the agent resumes where the table says.
    let old_collector = health["collector_pid"].as_u64().unwrap();
    unsafe { libc::kill(old_collector as i32, libc::SIGKILL) };
    wait_for("a new collector", Duration::from_secs(3), || {
        let h = m.health();
        (h["status"] == "ok"
            && h["collector_pid"].as_u64()? != old_collector
            && h["collector_pid"].as_u64()? != 0)
            .then_some(())
    });
    let (mut a, nonce) = Agent::connect(&m.agent_addr);
    match a.hello(&nonce, TOKEN, 1, 42) {
        MasterMessage::Welcome(w) => assert_eq!(w.last_seq, 8),
        other => panic!("{other:?}"),
    }
    a.send(&AgentMessage::Sample(sample(9)));
    assert_eq!(ack(&mut a), 9);
    a.send(&AgentMessage::Goodbye(Goodbye {
        last_seq: 9,
        reason: "test".into(),
    }));
    let h = wait_for("stopped", Duration::from_secs(3), || {
        let (_, hosts) = http_get(&m.http_addr, "/api/v1/hosts").ok()?;
        let h = hosts["hosts"][0].clone();
        (h["status"] == "stopped").then_some(h)
    });
    assert_eq!(
        (h["samples_received"].as_u64(), h["reconnects"].as_u64()),
        (Some(9), Some(1))
    );
    assert_eq!(processes_with(&m.shm_name).len(), 3);

    // SIGKILL the http process: it comes back on the same port with the same data.
    let old_http = m.health()["http_pid"].as_u64().unwrap();
    unsafe { libc::kill(old_http as i32, libc::SIGKILL) };
    wait_for("a new http process", Duration::from_secs(3), || {
        let (code, h) = http_get(&m.http_addr, "/healthz").ok()?;
        (code == 200 && h["http_pid"].as_u64()? != old_http).then_some(())
    });
    let (_, hosts) = http_get(&m.http_addr, "/api/v1/hosts").unwrap();
    assert_eq!(hosts["hosts"][0]["samples_received"], 9);
    wait_for("3 processes again", Duration::from_secs(3), || {
        (processes_with(&m.shm_name).len() == 3).then_some(())
    });

    m.signal(libc::SIGTERM);
    assert!(m.wait_exit().success());
    wait_for("children gone", Duration::from_secs(5), || {
        processes_with(&m.shm_name).is_empty().then_some(())
    });
    assert!(!std::path::Path::new(&format!("/dev/shm/{}", m.shm_name)).exists());
}

#[test]
fn stale_segment_of_a_killed_master_is_replaced_and_a_live_one_is_not() {
    let m = Master::start("stale");
    let name = m.shm_name.clone();
    // A second master on the same segment while the first lives: refused with a reason.
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--shm-name",
            &name,
        ])
        .args(["--config", m.dir.join("master.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another sentinel-master"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGKILL the supervisor: the children follow (PDEATHSIG), the segment stays behind.
    m.signal(libc::SIGKILL);
    let mut m = m;
    m.wait_exit();
    wait_for("children gone", Duration::from_secs(5), || {
        processes_with(&name).is_empty().then_some(())
    });
    assert!(std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    let mut m2 = Master::start_named(&name);
    m2.wait_log("stale segment warning", |l| {
        l.contains("removing a stale shared memory segment")
    });
    assert_eq!(m2.health()["status"], "ok");
    m.shm_name = "already-removed".into(); // m2 owns the segment now
    drop(m);
    m2.signal(libc::SIGTERM);
    assert!(m2.wait_exit().success());
    assert!(!std::path::Path::new(&format!("/dev/shm/{name}")).exists());
}

/// A minimal agent with a spool: streams samples, and after any connection failure
/// reconnects, drops what the welcome says is held, and replays the rest in batches.
fn streaming_agent(
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64) {
    use std::collections::VecDeque;
    use std::sync::atomic::Ordering;
    let mut spool: VecDeque<Sample> = VecDeque::new();
    let mut next = 1u64;
    let mut connects = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    'outer: while Instant::now() < deadline {
        let Ok(s) = TcpStream::connect(&addr) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut a = Agent { s, buf: Vec::new() };
        let Some(MasterMessage::Challenge(c)) = a.recv() else {
            continue;
        };
        let MasterMessage::Welcome(w) = a.hello(&c.nonce, TOKEN, 1, 7) else {
            continue;
        };
        connects += 1;
        spool.retain(|x| x.seq > w.last_seq);
        let pending: Vec<Sample> = spool.iter().cloned().collect();
        for chunk in pending.chunks(64) {
            let mut out = Vec::new();
            encode_frame(
                &AgentMessage::Batch(Batch {
                    samples: chunk.to_vec(),
                }),
                &mut out,
            )
            .unwrap();
            if a.s.write_all(&out).is_err() {
                continue 'outer;
            }
            match a.recv() {
                Some(MasterMessage::Ack(x)) => spool.retain(|s| s.seq > x.seq),
                _ => continue 'outer,
            }
        }
        loop {
            if stop.load(Ordering::Relaxed) && spool.is_empty() {
                return (next - 1, connects);
            }
            if !stop.load(Ordering::Relaxed) {
                spool.push_back(sample(next));
                next += 1;
            }
            let mut out = Vec::new();
            encode_frame(
                &AgentMessage::Sample(spool.back().unwrap().clone()),
                &mut out,
            )
            .unwrap();
            if spool.is_empty() || a.s.write_all(&out).is_err() {
                continue 'outer;
            }
            match a.recv() {
                Some(MasterMessage::Ack(x)) => spool.retain(|s| s.seq > x.seq),
                _ => continue 'outer,
            }
        }
    }
    panic!("agent did not finish");
}

#[test]
fn collector_sigkilled_mid_stream_loses_nothing_and_counts_nothing_twice() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let m = Master::start("kill");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let agent = {
        let (addr, stop) = (m.agent_addr.clone(), stop.clone());
        std::thread::spawn(move || streaming_agent(addr, stop))
    };
    let received = |m: &Master| -> u64 {
        let start = Instant::now();
        let (code, hosts) = http_get(&m.http_addr, "/api/v1/hosts").unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "HTTP answered within 1 s"
        );
        assert_eq!(code, 200);
        hosts["hosts"][0]["samples_received"].as_u64().unwrap_or(0)
    };
    for round in 0..20 {
        let before = received(&m);
        wait_for("agent progress", Duration::from_secs(10), || {
            (received(&m) >= before + 20).then_some(())
        });
        let old = m.health()["collector_pid"].as_u64().unwrap();
        unsafe { libc::kill(old as i32, libc::SIGKILL) };
        let killed = Instant::now();
        wait_for("collector back", Duration::from_secs(2), || {
            let start = Instant::now();
            let (code, h) = http_get(&m.http_addr, "/healthz").ok()?;
            assert!(start.elapsed() < Duration::from_secs(1));
            let pid = h["collector_pid"].as_u64()?;
            (code == 200
                && pid != 0
                && pid != old
                && h["collector_heartbeat_age_ms"].as_u64()? < 1000)
                .then_some(())
        });
        eprintln!("round {round}: collector back in {:?}", killed.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, connects) = agent.join().unwrap();
    assert!(connects > 1);
    let (_, hosts) = http_get(&m.http_addr, "/api/v1/hosts").unwrap();
    let h = &hosts["hosts"][0];
    let get = |k: &str| h[k].as_u64().unwrap();
    assert_eq!(get("last_seq"), sent, "{h}");
    assert_eq!(
        get("samples_received"),
        sent,
        "nothing lost, nothing counted twice: {h}"
    );
    assert_eq!(
        (get("samples_missing"), get("samples_dropped")),
        (0, 0),
        "{h}"
    );
    assert_eq!(
        get("samples_received") + get("samples_dropped") + get("samples_missing"),
        get("last_seq")
    );
}

#[test]
fn hostile_frames_are_refused_with_a_logged_reason_while_an_agent_keeps_streaming() {
    let mut m = Master::start("hostile");
    let (mut good, nonce) = Agent::connect(&m.agent_addr);
    assert!(matches!(
        good.hello(&nonce, TOKEN, 1, 1),
        MasterMessage::Welcome(_)
    ));
    let mut seq = 0;
    let mut keep_streaming = |good: &mut Agent| {
        seq += 1;
        good.send(&AgentMessage::Sample(sample(seq)));
        assert_eq!(ack(good), seq);
    };
    let cases: &[(&str, Vec<u8>, bool, &str)] = &[
        (
            "oversized",
            [&(1u32 << 30).to_be_bytes()[..], b"xx"].concat(),
            false,
            "exceeds the limit",
        ),
        (
            "random bytes",
            b"\x00\x00\x00\x05\xff\xfe\xfd\xfc\xfb".to_vec(),
            false,
            "not valid CBOR",
        ),
        (
            "truncated",
            b"\x00\x00\x01\x00\xa1\x65hello".to_vec(),
            true,
            "truncated frame",
        ),
    ];
    for (name, bytes, close_write, reason) in cases {
        let (mut bad, _) = Agent::connect(&m.agent_addr);
        bad.s.write_all(bytes).unwrap();
        if *close_write {
            bad.s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        match bad.recv() {
            Some(MasterMessage::Refused(r)) => assert!(
                r.code == "invalid" && r.reason.contains(reason),
                "{name}: {r:?}"
            ),
            other => panic!("{name}: {other:?}"),
        }
        m.wait_log(name, |l| {
            l.contains("refused connection") && l.contains(reason)
        });
        keep_streaming(&mut good);
    }
}

#[test]
fn connections_over_max_connections_are_refused_busy() {
    let name = format!("sentinel-test-busy-{}", std::process::id());
    let m = Master::start_with(&name, &["--max-connections", "1"]);
    let (_first, _) = Agent::connect(&m.agent_addr);
    let mut second = Agent {
        s: TcpStream::connect(&m.agent_addr).unwrap(),
        buf: Vec::new(),
    };
    second
        .s
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match second.recv() {
        Some(MasterMessage::Refused(r)) => assert_eq!(r.code, "busy"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn after_a_master_restart_without_a_snapshot_the_replayed_run_shows_no_gap() {
    let name = format!("sentinel-test-restart-{}", std::process::id());
    let mut m = Master::start_named(&name);
    let (mut a, nonce) = Agent::connect(&m.agent_addr);
    assert!(matches!(
        a.hello(&nonce, TOKEN, 1, 5),
        MasterMessage::Welcome(_)
    ));
    for seq in 1..=5 {
        a.send(&AgentMessage::Sample(sample(seq)));
        assert_eq!(ack(&mut a), seq);
    }
    m.signal(libc::SIGTERM);
    assert!(m.wait_exit().success());
    // Without its snapshot (lost with the disk, say) the new master starts empty: the run's
    // acked prefix is samples_before_start, not missing. (With it, see tests/tests/faults.rs.)
    std::fs::remove_file(m.dir.join(format!("state/{name}.snapshot")))
        .expect("the master wrote a snapshot at shutdown");
    m.shm_name = "already-removed".into();
    drop(m);
    assert!(!std::path::Path::new(&format!("/dev/shm/{name}")).exists());

    let m = Master::start_named(&name);
    let (mut a, nonce) = Agent::connect(&m.agent_addr);
    match a.hello(&nonce, TOKEN, 1, 5) {
        MasterMessage::Welcome(w) => assert_eq!(w.last_seq, 0, "a new table knows nothing"),
        other => panic!("{other:?}"),
    }
    a.send(&AgentMessage::Batch(Batch {
        samples: (6..=8).map(sample).collect(),
    }));
    assert_eq!(ack(&mut a), 8);
    let (_, hosts) = http_get(&m.http_addr, "/api/v1/hosts").unwrap();
    let h = &hosts["hosts"][0];
    let get = |k: &str| h[k].as_u64().unwrap();
    assert_eq!(
        (
            get("last_seq"),
            get("samples_received"),
            get("samples_replayed")
        ),
        (8, 3, 3),
        "{h}"
    );
    assert_eq!(
        (get("samples_missing"), get("samples_before_start")),
        (0, 5),
        "{h}"
    );
}
