//! The real sentinel-master (supervisor + collector + http) against an agent written with the
//! protocol crate (the harness's raw [`Peer`]): the API, the process tree, child restarts,
//! stale segments and the clean shutdown. Every wait is a condition with a deadline.
//! (Moved from master/tests/master_e2e.rs onto the one harness.)

use std::net::Shutdown;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sentinel_protocol::{
    AgentMessage, Batch, Goodbye, Hello, HostInfo, MasterMessage, Sample, PROTOCOL_VERSION,
};
use sentinel_tests::*;
use serde_json::Value;

const AGENT_ID: &str = "00112233445566778899aabbccddeeff";
/// A small table: the tests look at a handful of hosts.
const CONFIG: &str = "capacity = 64\nhistory_points = 30\n";

fn hello(version: u16, run_id: u64) -> Hello {
    Hello {
        version,
        clock_ms: 1_700_000_000_000,
        host: HostInfo {
            // Markup in a free-text field (hostnames are limited to A-Z a-z 0-9 - . _).
            os: "<b>Linux</b>".into(),
            kernel: "6.1".into(),
            arch: "x86_64".into(),
            cpu_model: "cpu".into(),
            cpu_count: 4,
        },
        ..test_hello(AGENT_ID, "web-1", run_id)
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

fn health(m: &Master) -> Value {
    m.json("/healthz").expect("/healthz answers 200")
}

fn first_host(m: &Master) -> Value {
    m.hosts().expect("/api/v1/hosts answers")[0].clone()
}

fn sigkill(pid: u64) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
}

#[test]
fn master_stores_samples_serves_them_survives_a_collector_kill_and_shuts_down_clean() {
    let mut m = Master::start_with_config(CONFIG, &[]);
    assert!(m.segment_path().exists());
    let procs = wait_for(Duration::from_secs(5), "3 processes", || {
        let p = m.pids();
        (p.len() == 3).then_some(p)
    });
    let h0 = health(&m);
    assert_eq!(h0["status"], "ok");
    assert_eq!(h0["supervisor_pid"].as_u64(), Some(m.pid() as u64));
    for key in ["collector_pid", "http_pid"] {
        assert!(
            procs.contains(&(h0[key].as_u64().unwrap() as u32)),
            "{key} in {procs:?}"
        );
    }
    assert_eq!(h0["capacity"], 64);

    // Refusals: wrong token, unknown version.
    let mut bad = Peer::connect(m.listen);
    match bad.handshake(&hello(PROTOCOL_VERSION, 1), "wrong") {
        Some(MasterMessage::Refused(r)) => assert_eq!(r.code, "auth"),
        other => panic!("{other:?}"),
    }
    m.wait_log(
        &["refused connection", "code=\"auth\""],
        Duration::from_secs(10),
    );
    let mut old = Peer::connect(m.listen);
    match old.handshake(&hello(99, 1), TOKEN) {
        Some(MasterMessage::Refused(r)) => {
            assert!(r.code == "version" && r.reason.contains('1'), "{r:?}")
        }
        other => panic!("{other:?}"),
    }

    // A real session: 5 samples, then a batch of 3.
    let mut a = Peer::connect(m.listen);
    match a.handshake(&hello(PROTOCOL_VERSION, 42), TOKEN) {
        Some(MasterMessage::Welcome(w)) => assert_eq!(w.last_seq, 0),
        other => panic!("{other:?}"),
    }
    for seq in 1..=5 {
        a.send(&AgentMessage::Sample(sample(seq)));
        assert_eq!(a.ack(), seq);
    }
    a.send(&AgentMessage::Batch(Batch {
        samples: (6..=8).map(sample).collect(),
    }));
    assert_eq!(a.ack(), 8);
    a.send(&AgentMessage::Sample(sample(3))); // a duplicate is acked, not counted
    assert_eq!(a.ack(), 8);

    let h = first_host(&m);
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

    let detail = m.host_detail(AGENT_ID).expect("host detail answers 200");
    assert_eq!(detail["sample"]["seq"], 8);
    let points = detail["history"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 8);
    assert_eq!(points[7]["disk_read_bytes_per_s"].as_f64(), Some(1000.0));
    let (code, _) = m
        .get(
            "/api/v1/hosts/ffffffffffffffffffffffffffffffff",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(code, 404);

    // SIGKILL the collector: it comes back, the agent resumes where the table says.
    let old_collector = h0["collector_pid"].as_u64().unwrap();
    sigkill(old_collector);
    wait_for(Duration::from_secs(3), "a new collector", || {
        let h = m.json("/healthz")?;
        (h["status"] == "ok"
            && h["collector_pid"].as_u64()? != old_collector
            && h["collector_pid"].as_u64()? != 0)
            .then_some(())
    });
    let mut a = Peer::connect(m.listen);
    match a.handshake(&hello(PROTOCOL_VERSION, 42), TOKEN) {
        Some(MasterMessage::Welcome(w)) => assert_eq!(w.last_seq, 8),
        other => panic!("{other:?}"),
    }
    a.send(&AgentMessage::Sample(sample(9)));
    assert_eq!(a.ack(), 9);
    a.send(&AgentMessage::Goodbye(Goodbye {
        last_seq: 9,
        reason: "test".into(),
    }));
    let h = wait_for(Duration::from_secs(3), "stopped", || {
        let h = m.hosts()?.first()?.clone();
        (h["status"] == "stopped").then_some(h)
    });
    assert_eq!(
        (h["samples_received"].as_u64(), h["reconnects"].as_u64()),
        (Some(9), Some(1))
    );
    assert_eq!(m.pids().len(), 3);

    // SIGKILL the http process: it comes back on the same port with the same data.
    let old_http = health(&m)["http_pid"].as_u64().unwrap();
    sigkill(old_http);
    wait_for(Duration::from_secs(3), "a new http process", || {
        let h = m.json("/healthz")?;
        (h["http_pid"].as_u64()? != old_http).then_some(())
    });
    assert_eq!(first_host(&m)["samples_received"], 9);
    wait_for(Duration::from_secs(3), "3 processes again", || {
        (m.pids().len() == 3).then_some(())
    });

    let pids = m.pids();
    assert!(m.terminate().success());
    wait_for(Duration::from_secs(5), "children gone", || {
        pids.iter().all(|&p| !process_alive(p)).then_some(())
    });
    assert!(!m.segment_path().exists());
}

#[test]
fn stale_segment_of_a_killed_master_is_replaced_and_a_live_one_is_not() {
    let mut m = Master::start_with_config(CONFIG, &[]);
    // A second master on the same segment while the first lives: refused with a reason.
    let out = Command::new(bin("sentinel-master"))
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--shm-name", &m.shm_name])
        .arg("--config")
        .arg(m.dir.path().join("master.toml"))
        .arg("--state-dir")
        .arg(m.dir.path().join("second-state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another sentinel-master"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGKILL the supervisor: the children follow (PDEATHSIG), the segment stays behind.
    m.kill_supervisor();
    assert!(m.segment_path().exists());
    // A new master on the same segment name replaces the stale segment.
    m.respawn();
    m.wait_log(
        &["removing a stale shared memory segment"],
        Duration::from_secs(10),
    );
    assert_eq!(health(&m)["status"], "ok");
    assert!(m.terminate().success());
    assert!(!m.segment_path().exists());
}

/// A minimal agent with a spool: streams samples, and after any connection failure
/// reconnects, drops what the welcome says is held, and replays the rest in batches.
/// Returns (samples produced, connections welcomed).
fn streaming_agent(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> (u64, u64) {
    use std::collections::VecDeque;
    let mut spool: VecDeque<Sample> = VecDeque::new();
    let mut next = 1u64;
    let mut connects = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    'outer: while Instant::now() < deadline {
        let Ok(mut a) = Peer::try_connect(addr) else {
            continue;
        };
        let Some(MasterMessage::Welcome(w)) = a.try_handshake(&hello(PROTOCOL_VERSION, 7), TOKEN)
        else {
            continue;
        };
        connects += 1;
        spool.retain(|x| x.seq > w.last_seq);
        let pending: Vec<Sample> = spool.iter().cloned().collect();
        for chunk in pending.chunks(64) {
            if !a.send(&AgentMessage::Batch(Batch {
                samples: chunk.to_vec(),
            })) {
                continue 'outer;
            }
            match a.read() {
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
            let Some(last) = spool.back().cloned() else {
                continue 'outer;
            };
            if !a.send(&AgentMessage::Sample(last)) {
                continue 'outer;
            }
            match a.read() {
                Some(MasterMessage::Ack(x)) => spool.retain(|s| s.seq > x.seq),
                _ => continue 'outer,
            }
        }
    }
    panic!("agent did not finish");
}

#[test]
fn collector_sigkilled_mid_stream_loses_nothing_and_counts_nothing_twice() {
    let m = Master::start_with_config(CONFIG, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let agent = {
        let (addr, stop) = (m.listen, stop.clone());
        std::thread::spawn(move || streaming_agent(addr, stop))
    };
    let received = |m: &Master| -> u64 {
        let start = Instant::now();
        let (code, body) = m.get("/api/v1/hosts", Duration::from_secs(5)).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "HTTP answered within 1 s"
        );
        assert_eq!(code, 200);
        let hosts: Value = serde_json::from_str(&body).unwrap();
        hosts["hosts"][0]["samples_received"].as_u64().unwrap_or(0)
    };
    for round in 0..20 {
        let before = received(&m);
        wait_for(Duration::from_secs(10), "agent progress", || {
            (received(&m) >= before + 20).then_some(())
        });
        let old = health(&m)["collector_pid"].as_u64().unwrap();
        sigkill(old);
        let killed = Instant::now();
        wait_for(Duration::from_secs(2), "collector back", || {
            let start = Instant::now();
            let (code, body) = m.get("/healthz", Duration::from_secs(5)).ok()?;
            assert!(start.elapsed() < Duration::from_secs(1));
            let h: Value = serde_json::from_str(&body).ok()?;
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
    let h = first_host(&m);
    assert_eq!(u64_field(&h, "last_seq"), sent, "{h}");
    assert_eq!(
        u64_field(&h, "samples_received"),
        sent,
        "nothing lost, nothing counted twice: {h}"
    );
    assert_sequence_complete(&h);
}

#[test]
fn hostile_frames_are_refused_with_a_logged_reason_while_an_agent_keeps_streaming() {
    let m = Master::start_with_config(CONFIG, &[]);
    let mut good = Peer::connect(m.listen);
    assert!(matches!(
        good.handshake(&hello(PROTOCOL_VERSION, 1), TOKEN),
        Some(MasterMessage::Welcome(_))
    ));
    let mut seq = 0;
    let mut keep_streaming = |good: &mut Peer| {
        seq += 1;
        good.send(&AgentMessage::Sample(sample(seq)));
        assert_eq!(good.ack(), seq);
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
        let mut bad = Peer::connect(m.listen);
        bad.challenge();
        assert!(bad.send_raw(bytes), "{name}");
        if *close_write {
            bad.stream.shutdown(Shutdown::Write).unwrap();
        }
        match bad.read() {
            Some(MasterMessage::Refused(r)) => assert!(
                r.code == "invalid" && r.reason.contains(reason),
                "{name}: {r:?}"
            ),
            other => panic!("{name}: {other:?}"),
        }
        m.wait_log(&["refused connection", reason], Duration::from_secs(10));
        keep_streaming(&mut good);
    }
}

#[test]
fn connections_over_max_connections_are_refused_busy() {
    let m = Master::start_with_config(CONFIG, &["--max-connections", "1"]);
    let mut first = Peer::connect(m.listen);
    first.challenge();
    let mut second = Peer::connect(m.listen);
    match second.read() {
        Some(MasterMessage::Refused(r)) => assert_eq!(r.code, "busy"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn after_a_master_restart_without_a_snapshot_the_replayed_run_shows_no_gap() {
    let mut m = Master::start_with_config(CONFIG, &[]);
    let mut a = Peer::connect(m.listen);
    assert!(matches!(
        a.handshake(&hello(PROTOCOL_VERSION, 5), TOKEN),
        Some(MasterMessage::Welcome(_))
    ));
    for seq in 1..=5 {
        a.send(&AgentMessage::Sample(sample(seq)));
        assert_eq!(a.ack(), seq);
    }
    assert!(m.terminate().success());
    // Without its snapshot (lost with the disk, say) the new master starts empty: the run's
    // acked prefix is samples_before_start, not missing. (With it, see tests/tests/faults.rs.)
    std::fs::remove_file(m.snapshot_path()).expect("the master wrote a snapshot at shutdown");
    assert!(!Path::new(&m.segment_path()).exists());

    m.respawn();
    let mut a = Peer::connect(m.listen);
    match a.handshake(&hello(PROTOCOL_VERSION, 5), TOKEN) {
        Some(MasterMessage::Welcome(w)) => assert_eq!(w.last_seq, 0, "a new table knows nothing"),
        other => panic!("{other:?}"),
    }
    a.send(&AgentMessage::Batch(Batch {
        samples: (6..=8).map(sample).collect(),
    }));
    assert_eq!(a.ack(), 8);
    let h = first_host(&m);
    let get = |k: &str| u64_field(&h, k);
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
