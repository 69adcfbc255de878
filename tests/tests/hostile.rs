//! Hostile peers are refused with a logged reason naming them, while a real agent keeps
//! streaming: wrong token, unknown version, oversized frame, random bytes, truncated frame,
//! invalid values after a good handshake, a conflicting identity, a full collector. Each one
//! moves exactly the collector counters in /metrics it should (refusals by code, decode
//! errors, accepted connections, handshakes), and the counters survive restarts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sentinel_protocol::*;
use sentinel_tests::*;

const AGENT_ID: &str = "00112233445566778899aabbccddeeff";

/// A hello from `intruder` with protocol `version`, proved with `token`.
fn hello(peer: &mut Peer, version: u16, token: &str) -> Option<MasterMessage> {
    let hello = Hello {
        version,
        ..test_hello(AGENT_ID, "intruder", 7)
    };
    peer.handshake(&hello, token)
}

/// The `refused` the master answered a hello with.
fn refused_hello(peer: &mut Peer, version: u16, token: &str) -> Refused {
    match hello(peer, version, token) {
        Some(MasterMessage::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Waits for a log line of the master that names `peer` and one of `words`.
fn assert_logged(master: &Master, case: &str, peer: &str, words: &[&str]) {
    let line = wait_for(
        Duration::from_secs(3),
        &format!("a log line about {case} naming {peer}"),
        || {
            let log = master.log_text();
            log.lines()
                .find(|l| l.contains(peer) && words.iter().any(|w| l.to_lowercase().contains(w)))
                .map(String::from)
        },
    );
    eprintln!("{case}: {line}");
}

/// Every `sentinel_collector_*` series of /metrics (name with labels -> value).
fn collector_counters(master: &Master) -> Option<BTreeMap<String, u64>> {
    let (code, body) = master.get("/metrics", Duration::from_secs(2)).ok()?;
    (code == 200).then_some(())?;
    body.lines()
        .filter(|l| l.starts_with("sentinel_collector_"))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The series name of the refusals with `code`.
fn refused(code: &str) -> String {
    format!("sentinel_collector_refusals_total{{code=\"{code}\"}}")
}
const ACCEPTED: &str = "sentinel_collector_connections_accepted_total";
const HANDSHAKES: &str = "sentinel_collector_handshakes_total";
const DECODE_ERRORS: &str = "sentinel_collector_decode_errors_total";

/// Waits until the collector counters are `before` plus `delta` exactly (every other series
/// unchanged); returns them.
fn assert_counted(
    master: &Master,
    case: &str,
    before: &BTreeMap<String, u64>,
    delta: &[(&str, u64)],
) -> BTreeMap<String, u64> {
    let mut want = before.clone();
    for (k, d) in delta {
        *want
            .get_mut(*k)
            .unwrap_or_else(|| panic!("{case}: /metrics has no series {k}")) += d;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = collector_counters(master).unwrap_or_default();
        if now == want {
            eprintln!("{case}: counted {delta:?}");
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{case}: collector counters\n  want {want:?}\n  have {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hostile_peers_are_refused_with_a_logged_reason_while_agents_keep_streaming() {
    let master = Master::start();
    let mut agent = Agent::start(&master, "honest", "200ms");
    let seq_of = |m: &Master| m.host("honest").and_then(|h| h["last_seq"].as_u64());
    wait_for(Duration::from_secs(5), "honest agent streaming", || {
        (seq_of(&master)? >= 2).then_some(())
    });
    let started = Instant::now();
    let seq_before = seq_of(&master).unwrap();
    // The honest agent's connection and handshake are counted; nothing was refused.
    let counters = collector_counters(&master).expect("/metrics");
    assert_eq!(counters[ACCEPTED], 1, "{counters:?}");
    assert_eq!(counters[HANDSHAKES], 1, "{counters:?}");
    for (k, v) in &counters {
        if k.starts_with("sentinel_collector_refusals_total") || k == DECODE_ERRORS {
            assert_eq!(*v, 0, "{k} before any hostile peer");
        }
    }
    for code in ["invalid", "auth", "version", "busy", "conflict"] {
        assert!(
            counters.contains_key(&refused(code)),
            "{code}: {counters:?}"
        );
    }

    // Wrong token.
    let mut c = Peer::connect(master.listen);
    let r = refused_hello(&mut c, PROTOCOL_VERSION, "not-the-fleet-token");
    assert_eq!(r.code, "auth", "{r:?}");
    assert_logged(
        &master,
        "wrong token",
        &c.name(),
        &["auth", "proof", "token"],
    );
    let counters = assert_counted(
        &master,
        "wrong token",
        &counters,
        &[(ACCEPTED, 1), (&refused("auth"), 1)],
    );

    // Unknown protocol version: the refusal says which version the master speaks.
    let mut c = Peer::connect(master.listen);
    let r = refused_hello(&mut c, 99, TOKEN);
    assert_eq!(r.code, "version", "{r:?}");
    assert!(
        r.reason.contains("99") && r.reason.contains('1'),
        "reason names both versions: {r:?}"
    );
    assert_logged(&master, "unknown version", &c.name(), &["version"]);
    let counters = assert_counted(
        &master,
        "unknown version",
        &counters,
        &[(ACCEPTED, 1), (&refused("version"), 1)],
    );

    // A 4 GiB length prefix: closed without the master trying to buffer it.
    let mut c = Peer::connect(master.listen);
    c.challenge();
    c.send_raw(&u32::MAX.to_be_bytes());
    c.refusal();
    assert_logged(
        &master,
        "oversized frame",
        &c.name(),
        &["frame", "large", "length", "limit"],
    );
    let invalid = refused("invalid");
    let decode_refusal = [(ACCEPTED, 1), (invalid.as_str(), 1), (DECODE_ERRORS, 1)];
    let counters = assert_counted(&master, "oversized frame", &counters, &decode_refusal);

    // Random bytes.
    let mut c = Peer::connect(master.listen);
    c.challenge();
    let mut rng = test_rng("random bytes");
    let noise: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    c.send_raw(&noise);
    c.refusal();
    assert_logged(
        &master,
        "random bytes",
        &c.name(),
        &[
            "frame", "decode", "invalid", "cbor", "large", "length", "limit",
        ],
    );
    let counters = assert_counted(&master, "random bytes", &counters, &decode_refusal);

    // A well-formed frame whose body is not CBOR for any agent message.
    let mut c = Peer::connect(master.listen);
    c.challenge();
    c.send_body(b"\xa1\x61kxnot a message");
    c.refusal();
    let counters = assert_counted(&master, "not a message", &counters, &decode_refusal);

    // A truncated frame: the prefix promises 1000 bytes, 10 arrive, then the peer hangs up.
    let mut c = Peer::connect(master.listen);
    c.challenge();
    c.send_raw(&1000u32.to_be_bytes());
    c.send_raw(&[0xa1; 10]);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    c.refusal();
    assert_logged(
        &master,
        "truncated frame",
        &c.name(),
        &["truncat", "eof", "closed", "incomplete", "frame"],
    );
    let counters = assert_counted(&master, "truncated frame", &counters, &decode_refusal);

    // A good handshake, then a sample with NaN CPU: refused as invalid.
    let mut c = Peer::connect(master.listen);
    let answer = hello(&mut c, PROTOCOL_VERSION, TOKEN);
    assert!(
        matches!(answer, Some(MasterMessage::Welcome(_))),
        "the right token is welcomed: {answer:?}"
    );
    c.send(&AgentMessage::Sample(Sample {
        seq: 1,
        cpu_percent: f32::NAN,
        ..Sample::default()
    }));
    let r = c.refusal().expect("a refused message for NaN");
    assert_eq!(r.code, "invalid", "{r:?}");
    assert_logged(
        &master,
        "NaN sample",
        &c.name(),
        &["invalid", "cpu_percent"],
    );
    // It decoded: a refusal for its value, not a decode error.
    let counters = assert_counted(
        &master,
        "NaN sample",
        &counters,
        &[(ACCEPTED, 1), (HANDSHAKES, 1), (&refused("invalid"), 1)],
    );

    // Another host claiming the welcomed peer's agent id (other hostname and run) while it is
    // connected: refused `conflict`.
    let mut first = Peer::connect(master.listen);
    let answer = first.handshake(&test_hello(AGENT_ID, "first", 1), TOKEN);
    assert!(
        matches!(answer, Some(MasterMessage::Welcome(_))),
        "{answer:?}"
    );
    let mut c = Peer::connect(master.listen);
    let answer = c.handshake(&test_hello(AGENT_ID, "impostor", 2), TOKEN);
    assert!(
        matches!(&answer, Some(MasterMessage::Refused(r)) if r.code == "conflict"),
        "{answer:?}"
    );
    assert_logged(&master, "conflicting identity", &c.name(), &["conflict"]);
    assert_counted(
        &master,
        "conflicting identity",
        &counters,
        &[(ACCEPTED, 2), (HANDSHAKES, 1), (&refused("conflict"), 1)],
    );
    drop(first);

    // The honest agent kept streaming the whole time, without a gap.
    let expected = seq_before + (started.elapsed().as_millis() as u64 / 200) / 2;
    wait_for(
        Duration::from_secs(3),
        "honest agent still streaming",
        || (seq_of(&master)? >= expected).then_some(()),
    );
    let honest = master.host("honest").unwrap();
    assert_eq!(honest["status"], "up");
    assert_eq!(
        u64_field(&honest, "reconnects"),
        0,
        "the honest agent was never disconnected"
    );
    agent.signal(Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(5));
    let honest = wait_for(Duration::from_secs(3), "honest stopped", || {
        let h = master.host("honest")?;
        (h["status"] == "stopped").then_some(h)
    });
    assert_sequence_complete(&honest);
}

#[test]
fn a_full_collector_refuses_busy_and_the_counters_survive_collector_and_master_restarts() {
    let mut master = Master::start_with(&["--max-connections", "1"]);
    let before = collector_counters(&master).expect("/metrics");
    // One peer in its handshake holds the only connection; the next one is refused `busy`
    // before any challenge.
    let mut holder = Peer::connect(master.listen);
    holder.challenge();
    let mut c = Peer::connect(master.listen);
    let r = c
        .refusal()
        .expect("a refused for the connection over the limit");
    assert_eq!(r.code, "busy", "{r:?}");
    assert_logged(&master, "over max_connections", &c.name(), &["busy"]);
    let counted = assert_counted(
        &master,
        "over max_connections",
        &before,
        &[(ACCEPTED, 2), (&refused("busy"), 1)],
    );
    drop(holder);
    // The holder's hang-up inside the handshake is no refusal (nothing to refuse it for).
    let counted = assert_counted(&master, "holder hung up", &counted, &[]);

    // The counters live in the table header: a new collector keeps them...
    let collector = master.collector_pid().expect("collector pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(collector as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "a new collector", || {
        master.collector_pid().filter(|&p| p != collector)
    });
    assert_counted(&master, "after a collector SIGKILL", &counted, &[]);
    // ...a new supervisor restores them from the stale segment's image...
    master.kill_supervisor();
    master.respawn();
    assert_counted(&master, "after a supervisor SIGKILL", &counted, &[]);
    // ...and from the snapshot written at a planned stop.
    master.restart_after(Duration::ZERO);
    assert_counted(&master, "after a master restart", &counted, &[]);
}
