//! The real agent binary against the harness's fake master ([`FakeMaster`], the protocol
//! crate's frames over a real socket on 127.0.0.1): handshake, samples, acks, replay after a
//! reconnect, goodbye, refusals, a down master, a full spool, a silent and a flapping master.
//! (Moved from agent/tests/ship.rs onto the one harness.)

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;
use sentinel_protocol::{verify_proof, AgentMessage, MasterMessage, Refused, Sample};
use sentinel_tests::*;

/// A token file with [`TOKEN`], in a directory that lives as long as the test.
fn token_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    (dir, path)
}

/// An agent at 100 ms with a 500 ms reconnect cap and a debug log.
fn start_agent(
    master: std::net::SocketAddr,
    token: &Path,
    hostname: &str,
    extra: &[&str],
) -> Agent {
    let mut args = vec!["--reconnect-max".to_string(), "500ms".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Agent::start_opts(
        master,
        token,
        hostname,
        "100ms",
        &AgentOpts {
            args,
            env: vec![("SENTINEL_LOG".into(), "debug".into())],
            ..AgentOpts::default()
        },
    )
}

fn assert_contiguous(seqs: &[u64], first: u64) {
    let want: Vec<u64> = (first..first + seqs.len() as u64).collect();
    assert_eq!(
        seqs,
        want.as_slice(),
        "samples arrive in order, without gaps or duplicates"
    );
}

#[test]
fn handshake_proves_the_token_and_samples_flow() {
    let (_t, token) = token_file();
    let master = FakeMaster::bind();
    let agent = start_agent(master.addr(), &token, "ship-flow", &[]);
    let mut conn = master.accept(0);

    let h = &conn.hello;
    h.validate().unwrap();
    assert_eq!(h.version, sentinel_protocol::PROTOCOL_VERSION);
    assert_eq!(h.hostname, "ship-flow");
    assert_eq!(h.interval_ms, 100);
    assert_eq!(h.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(h.host.cpu_count > 0);
    assert!(
        !verify_proof(b"another-token", &conn.nonce, &h.agent_id, &h.proof),
        "the proof is bound to the token"
    );
    // The harness keeps the agent's log in its --state-dir.
    let state_dir = agent.log.parent().unwrap();
    let persisted = std::fs::read_to_string(state_dir.join("agent-id")).unwrap();
    assert_eq!(
        persisted.trim(),
        h.agent_id,
        "the id in hello is the persisted one"
    );

    let (first, _) = conn.samples();
    assert_eq!(first[0].seq, 1, "a run starts at seq 1");
    assert!(first[0].mem_total_bytes > 0 && first[0].ts_ms > 0);
    let mut seqs: Vec<u64> = first.iter().map(|s| s.seq).collect();
    seqs.extend(conn.seqs_until(5));
    assert_contiguous(&seqs, 1);
    // Once caught up, each fresh sample travels alone in a `sample` frame.
    let (next, batch) = conn.samples();
    assert_eq!((next.len(), batch), (1, false));
}

#[test]
fn acked_samples_are_trimmed_and_the_rest_replayed_in_order_after_reconnect() {
    let (_t, token) = token_file();
    let master = FakeMaster::bind();
    let _agent = start_agent(master.addr(), &token, "ship-replay", &[]);

    let mut conn = master.accept(0);
    let run_id = conn.hello.run_id;
    let seen = conn.seqs_until(3);
    conn.ack(3);
    let more = conn.seqs_until(seen.last().unwrap() + 3);
    let max_seen = *more.last().unwrap();
    drop(conn); // the master goes away without acking more

    // The master lost everything unacked (last_seq 0): the agent replays from 4, in order,
    // having kept sampling meanwhile.
    let mut conn = master.accept(0);
    assert_eq!(conn.hello.run_id, run_id, "same process, same run");
    let (first, batch) = conn.samples();
    assert!(batch, "a backlog is replayed as a batch");
    assert_eq!(
        first[0].seq, 4,
        "samples acked before the break are not resent"
    );
    let mut seqs: Vec<u64> = first.iter().map(|s| s.seq).collect();
    seqs.extend(conn.seqs_until(max_seen + 3));
    assert_contiguous(&seqs, 4);
    let held = *seqs.last().unwrap();
    drop(conn);

    // A master that holds everything up to `held` gets only what came after.
    let mut conn = master.accept(held);
    let seqs = conn.seqs_until(held + 3);
    assert_contiguous(&seqs, held + 1);
}

#[test]
fn sigterm_sends_goodbye_with_the_last_seq_and_exits_zero() {
    let (_t, token) = token_file();
    let master = FakeMaster::bind();
    let mut agent = start_agent(master.addr(), &token, "ship-goodbye", &[]);
    let mut conn = master.accept(0);
    let seen = conn.seqs_until(2);
    conn.ack(*seen.last().unwrap());

    agent.signal(Signal::SIGTERM);
    let mut last_sample = *seen.last().unwrap();
    let goodbye = loop {
        match conn.recv().expect("goodbye before close") {
            AgentMessage::Sample(s) => last_sample = s.seq,
            AgentMessage::Batch(b) => last_sample = b.samples.last().unwrap().seq,
            AgentMessage::Goodbye(g) => break g,
            AgentMessage::Hello(_) => panic!("second hello"),
        }
    };
    assert_eq!(goodbye.reason, "sigterm");
    assert_eq!(
        goodbye.last_seq, last_sample,
        "every produced sample is sent before the goodbye"
    );
    assert!(conn.recv().is_none(), "the agent closes after goodbye");
    let status = agent.wait_exit(AGENT_DEADLINE);
    assert!(status.success(), "{status:?}; log:\n{}", agent.log_text());
}

#[test]
fn a_refusal_is_logged_with_its_reason_and_the_agent_retries() {
    let (_t, token) = token_file();
    let master = FakeMaster::bind();
    let agent = start_agent(master.addr(), &token, "ship-refused", &[]);
    let mut conn = master.accept_hello();
    let refused = Refused {
        code: "auth".into(),
        reason: "the proof does not match the fleet token".into(),
    };
    conn.answer(&MasterMessage::Refused(refused));
    drop(conn);

    let mut conn = master.accept(0);
    let seqs = conn.seqs_until(2);
    assert_eq!(seqs[0], 1, "nothing was acked, so everything is sent");
    let log = agent.log_text();
    assert!(
        log.contains("ERROR")
            && log.contains("the proof does not match the fleet token")
            && log.contains("code=auth"),
        "{log}"
    );
}

#[test]
fn once_prints_one_real_sample_as_json_without_a_master() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let out = Command::new(bin("sentinel-agent"))
        .args([
            "--once",
            "--format",
            "json",
            "--hostname",
            "once-host",
            "--config",
        ])
        .arg(dir.join("agent.toml"))
        .arg("--state-dir")
        .arg(dir)
        .output()
        .unwrap();
    // An explicit config file that does not exist is an error...
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("agent.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(dir.join("agent.toml"), "interval = \"2s\"\n").unwrap();
    let out = Command::new(bin("sentinel-agent"))
        .args([
            "--once",
            "--format",
            "json",
            "--hostname",
            "once-host",
            "--config",
        ])
        .arg(dir.join("agent.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sample: Sample = serde_json::from_value(v.clone()).expect("every Sample field, same names");
    sample.validate().unwrap();
    assert!(sample.mem_total_bytes > 0 && sample.processes > 0);
    assert_eq!(v["hostname"], "once-host");
    assert_eq!(v["agent_id"].as_str().unwrap().len(), 32);
    assert!(
        !dir.join("state/agent-id").exists(),
        "--once leaves no trace on the host"
    );
    assert!(v["host"]["cpu_count"].as_u64().unwrap() > 0);
    for key in ["os", "kernel", "arch", "cpu_model"] {
        assert!(v["host"][key].is_string(), "host.{key}");
    }
}

#[test]
fn a_wrong_config_fails_at_start_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let path = dir.join("agent.toml");
    let cases: &[(&str, &str)] = &[
        ("master = \"127.0.0.1:1\"\nintreval = \"1s\"\n", "intreval"),
        (
            "master = \"127.0.0.1:1\"\ninterval = \"soon\"\n",
            "interval",
        ),
        (
            "master = \"127.0.0.1:1\"\ninterval = \"10ms\"\n",
            "interval",
        ),
    ];
    for (text, key) in cases {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin("sentinel-agent"))
            .arg("--config")
            .arg(&path)
            .arg("--state-dir")
            .arg(dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(78),
            "EX_CONFIG, so systemd does not restart it: {text}: {err}"
        );
        assert!(err.contains(key), "{text}: {err}");
        if !text.contains("10ms") {
            assert!(err.contains(&*path.to_string_lossy()), "{err}");
        }
    }
    // A token file given explicitly must exist.
    let out = Command::new(bin("sentinel-agent"))
        .args([
            "--master",
            "127.0.0.1:1",
            "--token-file",
            "/nonexistent/token",
            "--config",
        ])
        .arg(dir.join("missing-is-fine-only-for-default.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
}

#[test]
fn a_down_master_is_logged_once_and_sigterm_still_exits_zero() {
    let (_t, token) = token_file();
    // Bound, never listening: every connection is refused, and no other process gets the port.
    let down = ReservedPort::new();
    let mut agent = start_agent(down.addr(), &token, "ship-down", &[]);
    agent.wait_log("Cannot reach the master", AGENT_DEADLINE);
    // Enough samples for several reconnect attempts (250ms, 500ms cap).
    agent.wait_log("seq=15 ", AGENT_DEADLINE);
    let log = agent.log_text();
    let attempts = log.matches("Connecting to the master.").count();
    assert!(attempts >= 3, "{log}");
    assert_eq!(
        log.matches("WARN").count(),
        1,
        "one line per 30 s, not per attempt:\n{log}"
    );
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(AGENT_DEADLINE).success());
    assert!(agent.log_text().contains("not connected, so no goodbye"));
}

#[test]
fn a_full_spool_drops_the_oldest_and_reports_the_count() {
    let (_t, token) = token_file();
    let port = ReservedPort::new();
    let agent = start_agent(port.addr(), &token, "ship-drop", &["--spool-samples", "3"]);
    agent.wait_log("seq=8 ", AGENT_DEADLINE);
    // The master comes up on the address the agent has been trying.
    let master = port.listen();
    let mut conn = master.accept(0);
    let (first, _) = conn.samples();
    let s = &first[0];
    assert!(s.seq >= 6, "only the newest 3 (or so) are kept: {}", s.seq);
    let mut samples = first.clone();
    while samples.last().unwrap().seq < s.seq + 5 {
        samples.extend(conn.samples().0);
    }
    let seqs: Vec<u64> = samples.iter().map(|s| s.seq).collect();
    assert_contiguous(&seqs, s.seq);
    // `dropped` is cumulative: it never decreases, and once the spool drains it counts
    // exactly the samples before the first one kept.
    assert!(samples.windows(2).all(|w| w[0].dropped <= w[1].dropped));
    assert_eq!(samples.last().unwrap().dropped, s.seq - 1, "{samples:?}");
}

#[test]
fn a_master_that_stops_acking_is_abandoned_after_the_idle_timeout() {
    let (_t, token) = token_file();
    let master = FakeMaster::bind();
    let agent = start_agent(master.addr(), &token, "ship-noack", &[]);
    let mut silent = master.accept(0);
    let seen = silent.seqs_until(2);
    assert_eq!(seen[0], 1);
    // Never ack; keep the socket open. The agent gives up after the idle timeout (15 s at
    // 100 ms) and reconnects, replaying everything unacked from seq 1.
    let limit = sentinel_protocol::limits::idle_timeout(100);
    let mut conn = master.accept_within(limit + AGENT_DEADLINE, 0);
    assert!(agent.log_text().contains("has not acknowledged anything"));
    let (first, _) = conn.samples();
    assert_eq!(first[0].seq, 1, "nothing was acked, so nothing was trimmed");
    drop(silent);
}

#[test]
fn a_flapping_master_does_not_flood_the_log() {
    let (_t, token) = token_file();
    let master = FakeMaster::bind();
    let agent = start_agent(master.addr(), &token, "ship-flap", &[]);
    // Welcome, then drop at once: the backoff resets after every handshake, so the agent
    // comes straight back; the log must not say so every time.
    for _ in 0..6 {
        let conn = master.accept(0);
        drop(conn);
    }
    let mut conn = master.accept(0);
    let seqs = conn.seqs_until(3);
    assert_eq!(seqs[0], 1, "nothing was acked, so everything is sent");
    let log = agent.log_text();
    let warns = log.lines().filter(|l| l.contains(" WARN ")).count();
    assert_eq!(warns, 1, "{log}");
    assert_eq!(
        log.matches("Lost the connection to the master again")
            .count(),
        5,
        "suppressed disconnects are still at debug: {log}"
    );
}
