//! Regression tests for the wire defects of issue 12 part 3 (docs/RELIABILITY.md, one row
//! each): hostnames outside the documented character set, peer text forging log lines,
//! figures that contradict each other, unordered batches, unbounded goodbye reasons,
//! filesystem "used" as df shows it, and agent uptime after a wall-clock step.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sentinel_protocol::*;
use sentinel_tests::*;
use serde_json::Value;

const ID: &str = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0";

fn welcomed(master: &Master, hello: &Hello) -> Peer {
    let mut p = Peer::connect(master.listen);
    let answer = p.handshake(hello, TOKEN);
    assert!(
        matches!(answer, Some(MasterMessage::Welcome(_))),
        "{}: {answer:?}",
        hello.hostname
    );
    p
}

/// Sends `msg` and returns the ack's value.
fn ack_of(p: &mut Peer, msg: &AgentMessage) -> u64 {
    p.send(msg);
    match p.read() {
        Some(MasterMessage::Ack(a)) => a.seq,
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// Sends `msg` on a welcomed connection and returns the `refused` that ends it.
fn refused_after(p: &mut Peer, msg: &AgentMessage) -> Refused {
    p.send(msg);
    p.refusal().expect("a refused frame")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The master's log lines that mention `word`: each must be one of the master's own lines
/// (`context`), never a line that starts with text a peer sent.
fn assert_no_forged_lines(log: &str, word: &str, context: &[&str]) {
    for line in log.lines().filter(|l| l.contains(word)) {
        assert!(
            context.iter().any(|c| line.contains(c)),
            "a log line starts with peer text (forged): {line:?}\nlog:\n{log}"
        );
    }
    for bad in ['\r', '\u{1b}', '\0', '\u{202e}'] {
        assert!(
            !log.contains(bad),
            "the master's log holds a raw {bad:?} from a peer:\n{log}"
        );
    }
}

#[test]
fn hostnames_with_control_or_bidi_characters_are_refused_invalid() {
    let master = Master::start();
    let cases = [
        ("newline", "web-1\nINFO forged hostname line"),
        ("carriage return", "web-1\rforged"),
        ("escape", "web-1\u{1b}[2Jforged"),
        ("nul", "web-1\0forged"),
        ("bidi override", "evil\u{202e}moc.elgoog"),
        ("space", "two words"),
        ("markup", "<img src=x onerror=alert(1)>"),
    ];
    for (case, hostname) in cases {
        let mut p = Peer::connect(master.listen);
        let answer = p.handshake(&test_hello(ID, hostname, 1), TOKEN);
        let Some(MasterMessage::Refused(r)) = answer else {
            panic!("{case}: expected refused, got {answer:?}");
        };
        assert_eq!(r.code, "invalid", "{case}: {r:?}");
        assert!(r.reason.contains("hostname"), "{case}: {r:?}");
        // The refusal is logged naming the peer and the field.
        let peer = p.name();
        wait_for(Duration::from_secs(3), &format!("{case} logged"), || {
            master.log_text().lines().find(|l| {
                l.contains("refused connection")
                    && l.contains(&format!("peer={peer} "))
                    && l.contains("hostname")
            })?;
            Some(())
        });
    }
    assert_eq!(
        master.hosts().unwrap().len(),
        0,
        "no refused hello makes a host"
    );
    // Allowed characters still work.
    let mut ok = welcomed(&master, &test_hello(ID, "Web_01.example-x", 1));
    assert_eq!(ack_of(&mut ok, &AgentMessage::Sample(test_sample(1))), 1);
    assert_no_forged_lines(&master.log_text(), "forged", &["refused connection"]);
}

#[test]
fn hostile_text_in_free_fields_appears_escaped_in_the_master_log() {
    let master = Master::start();
    let mut hello = test_hello(ID, "hostile-facts", 1);
    hello.agent_version = "0.9\nERROR forged agent_version line".into();
    hello.host.os = "Debian\r\nWARN forged os line".into();
    hello.host.kernel = "6.1\u{1b}[31mforged-kernel".into();
    hello.host.cpu_model = "Xeon\u{202e}forged-cpu".into();
    let mut p = welcomed(&master, &hello);
    assert_eq!(ack_of(&mut p, &AgentMessage::Sample(test_sample(1))), 1);
    p.send(&AgentMessage::Goodbye(Goodbye {
        last_seq: 1,
        reason: "bye\n2026-01-01T00:00:00Z  INFO forged goodbye line\0".into(),
    }));
    wait_for(Duration::from_secs(5), "status stopped", || {
        master
            .host("hostile-facts")
            .filter(|h| h["status"] == "stopped")
    });
    let log = wait_for(Duration::from_secs(5), "the goodbye logged", || {
        let log = master.log_text();
        log.contains("agent disconnected").then_some(log)
    });
    eprintln!("{log}");
    for escaped in [
        "agent_version=0.9\\nERROR forged agent_version line",
        "os=Debian\\r\\nWARN forged os line",
        "kernel=6.1\\u{1b}[31mforged-kernel",
        "cpu_model=Xeon\\u{202e}forged-cpu",
        "reason=bye\\n2026-01-01T00:00:00Z  INFO forged goodbye line\\0",
    ] {
        assert!(log.contains(escaped), "missing {escaped:?} in:\n{log}");
    }
    assert_no_forged_lines(&log, "forged", &["agent connected", "agent said goodbye"]);
}

#[test]
fn figures_that_contradict_each_other_are_refused_naming_the_field() {
    let master = Master::start();
    let fs = |total, available, free| Filesystem {
        mount: "/".into(),
        fs_type: "ext4".into(),
        total_bytes: total,
        available_bytes: available,
        free_bytes: free,
    };
    type Edit = Box<dyn Fn(&mut Sample)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "mem_used_bytes",
            Box::new(|s| s.mem_used_bytes = s.mem_total_bytes + 1),
        ),
        (
            "mem_available_bytes",
            Box::new(|s| s.mem_available_bytes = u64::MAX),
        ),
        (
            "swap_used_bytes",
            Box::new(|s| {
                s.swap_total_bytes = 10;
                s.swap_used_bytes = 11;
            }),
        ),
        (
            "filesystems.available_bytes",
            Box::new(move |s| s.filesystems = vec![fs(100, 101, None)]),
        ),
        (
            "filesystems.free_bytes",
            Box::new(move |s| s.filesystems = vec![fs(100, 10, Some(101))]),
        ),
        (
            "filesystems.available_bytes",
            Box::new(move |s| s.filesystems = vec![fs(100, 50, Some(40))]),
        ),
    ];
    for (i, (field, edit)) in cases.iter().enumerate() {
        let hostname = format!("contradicts-{i}");
        let id = format!("{:032x}", 0xc0de_0000 + i);
        let mut p = welcomed(&master, &test_hello(&id, &hostname, 1));
        let mut s = test_sample(1);
        edit(&mut s);
        let r = refused_after(&mut p, &AgentMessage::Sample(s.clone()));
        assert_eq!(r.code, "invalid", "{field}: {r:?}");
        assert!(r.reason.contains(field), "{field}: {r:?}");
        // The same in a replay batch.
        let mut p = welcomed(&master, &test_hello(&id, &hostname, 1));
        let r = refused_after(&mut p, &AgentMessage::Batch(Batch { samples: vec![s] }));
        assert_eq!(r.code, "invalid", "{field} in a batch: {r:?}");
        assert!(r.reason.contains(field), "{field} in a batch: {r:?}");
        let host = master.host(&hostname).expect("the host was welcomed");
        assert_eq!(u64_field(&host, "samples_received"), 0, "{host}");
    }
}

#[test]
fn an_unordered_batch_is_refused_and_no_sample_is_silently_lost() {
    let master = Master::start();
    let hostname = "unordered-batch";
    let mut p = welcomed(&master, &test_hello(ID, hostname, 7));
    let batch = |seqs: &[u64]| {
        AgentMessage::Batch(Batch {
            samples: seqs.iter().map(|&s| test_sample(s)).collect(),
        })
    };
    for seqs in [&[2u64, 1][..], &[1, 1], &[1, 3, 2]] {
        let r = refused_after(&mut p, &batch(seqs));
        assert_eq!(r.code, "invalid", "{seqs:?}: {r:?}");
        assert!(r.reason.contains("ascending"), "{seqs:?}: {r:?}");
        p = welcomed(&master, &test_hello(ID, hostname, 7));
    }
    let host = master.host(hostname).unwrap();
    assert_eq!(
        u64_field(&host, "samples_received"),
        0,
        "nothing stored: {host}"
    );
    // The agent's retry in order is stored whole: every sample accounted for exactly once.
    assert_eq!(ack_of(&mut p, &batch(&[1, 2, 3])), 3);
    assert_eq!(ack_of(&mut p, &AgentMessage::Sample(test_sample(4))), 4);
    let host = wait_for(Duration::from_secs(3), "4 samples", || {
        master.host(hostname).filter(|h| h["samples_received"] == 4)
    });
    assert_eq!(assert_accounted(&host), 4);
    assert_sequence_complete(&host);
}

#[test]
fn a_goodbye_reason_longer_than_the_text_limit_is_refused() {
    let master = Master::start();
    let mut p = welcomed(&master, &test_hello(ID, "long-goodbye", 1));
    assert_eq!(ack_of(&mut p, &AgentMessage::Sample(test_sample(1))), 1);
    let r = refused_after(
        &mut p,
        &AgentMessage::Goodbye(Goodbye {
            last_seq: 1,
            reason: "x".repeat(limits::MAX_TEXT_BYTES + 1),
        }),
    );
    assert_eq!(r.code, "invalid", "{r:?}");
    assert!(r.reason.contains("reason"), "{r:?}");
    let host = master.host("long-goodbye").unwrap();
    assert_ne!(
        host["status"], "stopped",
        "a refused goodbye stops nothing: {host}"
    );
    // At the limit it is a goodbye.
    let mut p = welcomed(&master, &test_hello(ID, "long-goodbye", 1));
    p.send(&AgentMessage::Goodbye(Goodbye {
        last_seq: 1,
        reason: "y".repeat(limits::MAX_TEXT_BYTES),
    }));
    wait_for(Duration::from_secs(3), "status stopped", || {
        master
            .host("long-goodbye")
            .filter(|h| h["status"] == "stopped")
    });
}

/// statvfs of `mount` as df reads it: (total, available, free) bytes.
fn statvfs_bytes(mount: &str) -> (u64, u64, u64) {
    let st = nix::sys::statvfs::statvfs(Path::new(mount)).expect("statvfs");
    let frsize = st.fragment_size();
    (
        st.blocks() * frsize,
        st.blocks_available() * frsize,
        st.blocks_free() * frsize,
    )
}

/// A number with at most 3 decimals in its JSON text.
fn at_most_3_decimals(v: &Value) -> bool {
    let text = v.to_string();
    text.split_once('.').is_none_or(|(_, d)| d.len() <= 3)
}

#[test]
fn filesystems_match_statvfs_and_used_is_as_df_computes_it() {
    let master = Master::start();
    let _agent = Agent::start(&master, "df-check", "1s");
    let host = wait_for(Duration::from_secs(15), "the agent's filesystems", || {
        master
            .host("df-check")
            .filter(|h| !h["fs_fullest"].is_null())
    });
    let id = host["id"].as_str().unwrap().to_string();
    let detail = master.host_detail(&id).unwrap();
    let list = detail["sample"]["filesystems"].as_array().unwrap().clone();
    assert!(!list.is_empty(), "{detail}");
    let mut fullest: Option<(f64, String)> = None;
    for f in &list {
        let mount = f["mount"].as_str().unwrap();
        let (total, available, free) = (
            u64_field(f, "total_bytes"),
            u64_field(f, "available_bytes"),
            u64_field(f, "free_bytes"),
        );
        let (s_total, s_available, s_free) = statvfs_bytes(mount);
        // The agent's reading is up to 5 s older than ours: allow 1 % of the size, at least
        // 64 MiB, for files written meanwhile.
        let slack = (s_total / 100).max(64 << 20);
        assert_eq!(total, s_total, "{mount}: size as statvfs has it: {f}");
        assert!(
            available.abs_diff(s_available) <= slack,
            "{mount}: available {available} vs statvfs {s_available}"
        );
        assert!(
            free.abs_diff(s_free) <= slack,
            "{mount}: free {free} vs statvfs {s_free}"
        );
        // df: used = blocks - free; use% = used / (used + available).
        let used = u64_field(f, "used_bytes");
        assert_eq!(used, total - free, "{mount}: used is total - free: {f}");
        let df_used = s_total - s_free;
        assert!(
            used.abs_diff(df_used) <= slack,
            "{mount}: used {used} vs df {df_used}"
        );
        let ratio = f["used_ratio"].as_f64().unwrap();
        let df_ratio = df_used as f64 / (df_used + s_available) as f64;
        assert!(
            (ratio - df_ratio).abs() <= 0.011,
            "{mount}: {ratio} vs df {df_ratio}"
        );
        let exact = used as f64 / (used + available) as f64;
        assert!(
            (ratio - exact).abs() <= 0.0005 + 1e-9,
            "{mount}: {ratio} vs {exact}"
        );
        assert!(at_most_3_decimals(&f["used_ratio"]), "{f}");
        if fullest.as_ref().is_none_or(|(r, _)| exact > *r) {
            fullest = Some((exact, mount.to_string()));
        }
    }
    let fs = &host["fs_fullest"];
    let (exact, mount) = fullest.unwrap();
    assert_eq!(fs["mount"], mount.as_str(), "{fs}");
    assert!(at_most_3_decimals(&fs["used_ratio"]), "3 decimals: {fs}");
    assert!(
        (fs["used_ratio"].as_f64().unwrap() - exact).abs() <= 0.0005 + 1e-9,
        "{fs}"
    );
    assert_eq!(
        u64_field(fs, "used_bytes"),
        u64_field(fs, "total_bytes") - statvfs_free_of(&list, &mount),
        "{fs}"
    );
}

fn statvfs_free_of(list: &[Value], mount: &str) -> u64 {
    let f = list.iter().find(|f| f["mount"] == mount).unwrap();
    u64_field(f, "free_bytes")
}

#[test]
fn a_sample_without_free_bytes_falls_back_to_total_minus_available() {
    let master = Master::start();
    let mut p = welcomed(&master, &test_hello(ID, "old-agent-fs", 1));
    let mut s = test_sample(1);
    // A 0.1.0 agent: no `fr` key. 1000 bytes, 300 available: used 700, 70 %.
    s.filesystems = vec![Filesystem {
        mount: "/".into(),
        fs_type: "ext4".into(),
        total_bytes: 1000,
        available_bytes: 300,
        free_bytes: None,
    }];
    assert_eq!(ack_of(&mut p, &AgentMessage::Sample(s.clone())), 1);
    // 3000 bytes, 1000 free, 777 available: df shows used 2000 of 2777, 0.72020...
    s.seq = 2;
    s.filesystems.push(Filesystem {
        mount: "/data".into(),
        fs_type: "xfs".into(),
        total_bytes: 3000,
        available_bytes: 777,
        free_bytes: Some(1000),
    });
    assert_eq!(ack_of(&mut p, &AgentMessage::Sample(s)), 2);
    let host = wait_for(Duration::from_secs(3), "sample 2", || {
        master.host("old-agent-fs").filter(|h| h["last_seq"] == 2)
    });
    let fs = &host["fs_fullest"];
    assert_eq!(fs["mount"], "/data", "{fs}");
    assert_eq!(fs["used_bytes"], 2000, "{fs}");
    assert_eq!(fs["used_ratio"].to_string(), "0.72", "{fs}");
    let detail = master.host_detail(host["id"].as_str().unwrap()).unwrap();
    let old = &detail["sample"]["filesystems"][0];
    assert_eq!(old["used_bytes"], 700, "{old}");
    assert_eq!(old["used_ratio"].to_string(), "0.7", "{old}");
    assert!(old.get("free_bytes").is_none(), "{old}");
}

/// Seconds since boot as the kernel counts them.
fn proc_uptime() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// The agent's latest uptime against /proc/uptime at the time the master received it.
fn uptime_error(master: &Master, id: &str) -> (f64, Value) {
    let detail = master.host_detail(id).unwrap();
    let age_s = unix_ms().saturating_sub(u64_field(&detail, "last_seen_ms")) as f64 / 1000.0;
    let expected = proc_uptime() - age_s;
    let reported = u64_field(&detail["sample"], "uptime_s") as f64;
    (reported - expected, detail)
}

#[test]
fn agent_uptime_follows_the_boot_clock_after_a_wall_clock_step() {
    let Some(lib) = libfaketime().filter(|_| is_dynamic(&bin("sentinel-agent"))) else {
        skip_unless_ci(
            "libfaketime missing or sentinel-agent is static (LD_PRELOAD cannot step its clock)",
        );
        return;
    };
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let offset_file = dir.path().join("faketime");
    std::fs::write(&offset_file, "+0\n").unwrap();
    let opts = AgentOpts {
        env: vec![
            ("LD_PRELOAD".into(), lib.display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                offset_file.display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            // Only the wall clock steps: the agent's timers (CLOCK_MONOTONIC) stay true.
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ("DONT_FAKE_MONOTONIC".into(), "1".into()),
        ],
        ..AgentOpts::default()
    };
    let _agent = Agent::start_opts(
        master.listen,
        &master.token_file,
        "uptime-step",
        "1s",
        &opts,
    );
    let host = wait_for(Duration::from_secs(15), "the agent's samples", || {
        master
            .host("uptime-step")
            .filter(|h| u64_field(h, "last_seq") >= 2)
    });
    let id = host["id"].as_str().unwrap().to_string();
    let (before, detail) = uptime_error(&master, &id);
    assert!(
        before.abs() <= 2.0,
        "before the step: {before} s off: {detail}"
    );
    std::fs::write(&offset_file, "+1h\n").unwrap();
    let stepped_after = unix_ms() + 3_000_000;
    let detail = wait_for(Duration::from_secs(15), "a sample after the step", || {
        master
            .host_detail(&id)
            .filter(|d| u64_field(&d["sample"], "ts_ms") > stepped_after)
    });
    eprintln!("after the step: {}", detail["sample"]);
    let (after, detail) = uptime_error(&master, &id);
    assert!(
        after.abs() <= 2.0,
        "after a +1 h step: uptime {after} s off /proc/uptime: {detail}"
    );
    // The boot time is the agent's wall clock minus its uptime, as the kernel's btime.
    let s = &detail["sample"];
    let clock_s = u64_field(s, "ts_ms") / 1000;
    let boot = u64_field(s, "boot_time_s") + u64_field(s, "uptime_s");
    assert!(
        boot.abs_diff(clock_s) <= 2,
        "boot_time_s + uptime_s = {boot}, clock {clock_s}: {s}"
    );
}

#[test]
fn a_hostile_refusal_reason_appears_escaped_in_the_agent_log() {
    use std::io::{Read, Write};
    // A fake master: challenge, read the hello, refuse with a reason that tries to forge lines.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), TOKEN).unwrap();
    let agent = Agent::start_to(addr, token.path(), "refused-agent", "1s");
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut frame = Vec::new();
    encode_frame(
        &MasterMessage::Challenge(Challenge {
            version: PROTOCOL_VERSION,
            nonce: vec![7; 32],
        }),
        &mut frame,
    )
    .unwrap();
    conn.write_all(&frame).unwrap();
    let mut prefix = [0u8; 4];
    conn.read_exact(&mut prefix).unwrap();
    let mut hello = vec![0u8; u32::from_be_bytes(prefix) as usize];
    conn.read_exact(&mut hello).unwrap();
    frame.clear();
    encode_frame(
        &MasterMessage::Refused(Refused {
            code: "auth\u{1b}[2J".into(),
            reason: "no\n2026-01-01T00:00:00Z ERROR forged agent line\r\u{202e}".into(),
        }),
        &mut frame,
    )
    .unwrap();
    conn.write_all(&frame).unwrap();
    drop(conn);
    let log = wait_for(Duration::from_secs(10), "the agent's refusal line", || {
        let log = agent.log_text();
        log.contains("The master refused this agent.")
            .then_some(log)
    });
    eprintln!("{log}");
    assert!(
        log.contains("reason=no\\n2026-01-01T00:00:00Z ERROR forged agent line\\r\\u{202e}"),
        "{log}"
    );
    assert!(log.contains("code=auth\\u{1b}[2J"), "{log}");
    assert_no_forged_lines(&log, "forged", &["The master refused this agent."]);
}
