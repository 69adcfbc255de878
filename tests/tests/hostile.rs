//! Hostile peers are refused with a logged reason naming them, while a real agent keeps
//! streaming: wrong token, unknown version, oversized frame, random bytes, truncated frame,
//! and invalid values after a good handshake.

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

    // Unknown protocol version: the refusal says which version the master speaks.
    let mut c = Peer::connect(master.listen);
    let r = refused_hello(&mut c, 99, TOKEN);
    assert_eq!(r.code, "version", "{r:?}");
    assert!(
        r.reason.contains("99") && r.reason.contains('1'),
        "reason names both versions: {r:?}"
    );
    assert_logged(&master, "unknown version", &c.name(), &["version"]);

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

    // Random bytes.
    let mut c = Peer::connect(master.listen);
    c.challenge();
    let noise: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
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
