//! Per-agent identity (PROTOCOL.md section 3): a fleet-token holder who read a host's id, run
//! and hostname from the open API cannot speak for it, the pin survives restarts, a cloned
//! machine is reported instead of fighting over the slot, and a restarted agent is welcomed.

use std::time::Duration;

use sentinel_protocol::{AgentMessage, MasterMessage};
use sentinel_tests::*;
use serde_json::Value;

const INTERVAL: &str = "200ms";
const WAIT: Duration = Duration::from_secs(15);

/// `sentinel_collector_refusals_total{code="CODE"}` from /metrics.
fn refusals(master: &Master, code: &str) -> u64 {
    let (status, text) = master.get("/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200);
    let series = format!("sentinel_collector_refusals_total{{code=\"{code}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("/metrics has no {series}"))
        .trim()
        .parse()
        .unwrap()
}

/// The host once it is connected and pinned with at least `seq` samples.
fn streaming(master: &Master, hostname: &str, seq: u64) -> Value {
    wait_for(WAIT, &format!("{hostname} streaming pinned"), || {
        master.host(hostname).filter(|h| {
            h["connected"] == true && h["identity"] == "pinned" && u64_field(h, "last_seq") >= seq
        })
    })
}

/// The fields of a host object that only a new handshake changes: a forger must move none.
const IDENTITY_FIELDS: [&str; 14] = [
    "id",
    "hostname",
    "address",
    "connected",
    "first_seen_ms",
    "interval_ms",
    "agent_version",
    "run_id",
    "reconnects",
    "duplicates",
    "samples_missing",
    "samples_before_start",
    "identity",
    "key_sha256",
];

fn assert_undisturbed(before: &Value, after: &Value) {
    for f in IDENTITY_FIELDS {
        assert_eq!(
            before[f], after[f],
            "field {f} moved: before {before}, after {after}"
        );
    }
    assert_sequence_complete(after);
    assert_eq!(u64_field(after, "duplicates"), 0, "{after}");
}

fn expect_refused(answer: Option<MasterMessage>, code: &str, peer: &str) {
    match answer {
        Some(MasterMessage::Refused(r)) => {
            assert_eq!(r.code, code, "{r:?}");
            assert!(
                r.reason.contains(peer),
                "the reason names the peer {peer}: {r:?}"
            );
        }
        other => panic!("expected a refusal {code}, got {other:?}"),
    }
}

#[test]
fn a_token_holder_with_another_key_or_none_cannot_touch_a_connected_host() {
    let master = Master::start();
    let agent = Agent::start(&master, "web-1", INTERVAL);
    let before = streaming(&master, "web-1", 5);
    let id = before["id"].as_str().unwrap().to_string();
    let run = u64_field(&before, "run_id");
    let seq = u64_field(&before, "last_seq");
    let refused_before = refusals(&master, "identity");

    // What the open API shows is all a forger needs besides the token: same id, run and
    // hostname, with another key, with none, and with another run.
    let cases: [(u64, Option<u8>); 4] = [
        (run, Some(7)),
        (run, None),
        (run + 1, Some(7)),
        (run + 1, None),
    ];
    for (forged_run, key) in cases {
        let mut p = Peer::connect(master.listen);
        let hello = test_hello(&id, "web-1", forged_run);
        let answer = match key {
            Some(seed) => p.handshake_with_key(&hello, TOKEN, &forged_key(seed)),
            None => p.handshake(&hello, TOKEN),
        };
        expect_refused(answer, "identity", &p.name());
        // A sample far ahead after the refusal goes nowhere: the master closed.
        p.send(&AgentMessage::Sample(test_sample(u64::MAX / 2)));
        assert!(
            p.read().is_none(),
            "the master closed the forger's connection"
        );
    }

    // The real agent keeps streaming on its connection; nothing the table holds moved.
    let after = wait_for(WAIT, "the agent's samples after the forgeries", || {
        master
            .host("web-1")
            .filter(|h| u64_field(h, "last_seq") >= seq + 10)
    });
    assert_undisturbed(&before, &after);
    assert_eq!(
        refusals(&master, "identity"),
        refused_before + cases.len() as u64,
        "every forgery is counted under code identity"
    );
    let log = agent.log_text();
    assert!(
        !log.contains("refused") && !log.contains("Lost the connection"),
        "the real agent saw nothing: {log}"
    );
    assert_eq!(log.matches("Connected to the master.").count(), 1, "{log}");
}

#[test]
fn a_hello_without_a_key_is_unpinned_unless_require_agent_keys() {
    let master = Master::start();
    let id = "00000000000000000000000000000a01";
    let mut p = Peer::connect(master.listen);
    assert!(matches!(
        p.handshake(&test_hello(id, "old-agent", 1), TOKEN),
        Some(MasterMessage::Welcome(_))
    ));
    p.send(&AgentMessage::Sample(test_sample(1)));
    assert!(matches!(p.read(), Some(MasterMessage::Ack(a)) if a.seq == 1));
    let host = wait_for(WAIT, "the 0.1.0-style host", || master.host("old-agent"));
    assert_eq!(host["identity"], "unpinned", "{host}");
    assert_eq!(host["key_sha256"], Value::Null, "{host}");
    drop(p);

    let strict = Master::start_with(&["--require-agent-keys"]);
    let mut p = Peer::connect(strict.listen);
    let name = p.name();
    expect_refused(
        p.handshake(&test_hello(id, "old-agent", 1), TOKEN),
        "identity",
        &name,
    );
    assert_eq!(refusals(&strict, "identity"), 1);
    // A keyed agent is welcomed there and pinned.
    let _agent = Agent::start(&strict, "new-agent", INTERVAL);
    streaming(&strict, "new-agent", 2);
    assert!(
        strict.host("old-agent").is_none(),
        "the refused hello made no host"
    );
}

#[test]
fn the_pin_survives_a_collector_kill_and_a_master_restart() {
    let mut master = Master::start_with(&["--snapshot-interval", "1s"]);
    let _agent = Agent::start(&master, "web-1", INTERVAL);
    let host = streaming(&master, "web-1", 3);
    let id = host["id"].as_str().unwrap().to_string();
    let key = host["key_sha256"].clone();
    assert!(key.is_string(), "{host}");
    let forge = |master: &Master| {
        let mut p = Peer::connect(master.listen);
        let name = p.name();
        expect_refused(
            p.handshake_with_key(&test_hello(&id, "web-1", 1), TOKEN, &forged_key(9)),
            "identity",
            &name,
        );
    };

    let collector = master.collector_pid().expect("collector pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(collector as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(WAIT, "a new collector", || {
        master.collector_pid().filter(|&p| p != collector)
    });
    forge(&master);
    let host = streaming(&master, "web-1", u64_field(&host, "last_seq") + 1);
    assert_eq!(host["key_sha256"], key, "the pin survived the collector");

    master.terminate();
    master.respawn();
    let restored = master
        .host("web-1")
        .expect("the host restored from the snapshot");
    assert_eq!(
        restored["key_sha256"], key,
        "the pin survived the master restart"
    );
    forge(&master);
    let host = streaming(&master, "web-1", u64_field(&host, "last_seq") + 1);
    assert_eq!(host["key_sha256"], key);
}

#[test]
fn a_cloned_identity_is_reported_and_the_accounting_does_not_flip_flop() {
    let master = Master::start();
    let first = Agent::start(&master, "web-1", INTERVAL);
    let before = streaming(&master, "web-1", 3);
    // A copy of the machine: same state directory (id and key), same hostname.
    let _clone = Agent::start_with_state_of(&master, "web-1", INTERVAL, &first);
    let cloned = wait_for(WAIT, "the host reported cloned", || {
        master.host("web-1").filter(|h| h["identity"] == "cloned")
    });
    assert!(cloned["cloned_address"].is_string(), "{cloned}");
    assert_ne!(cloned["cloned_address"], before["address"], "{cloned}");
    assert!(cloned["cloned_ms"].is_u64(), "{cloned}");
    // For a while longer the clone keeps trying; the first machine keeps the slot.
    let seq = u64_field(&cloned, "last_seq");
    let after = wait_for(WAIT, "more samples of the first machine", || {
        master
            .host("web-1")
            .filter(|h| u64_field(h, "last_seq") >= seq + 15)
    });
    for f in [
        "run_id",
        "address",
        "reconnects",
        "first_seen_ms",
        "key_sha256",
    ] {
        assert_eq!(before[f], after[f], "field {f} flipped: {after}");
    }
    assert_eq!(after["identity"], "cloned");
    assert_sequence_complete(&after);
    assert_eq!(u64_field(&after, "duplicates"), 0, "{after}");
    let log = master.log_text();
    assert!(
        log.contains("cloned identity") && log.contains(before["address"].as_str().unwrap()),
        "the master logs the clone with both addresses: {log}"
    );
}

#[test]
fn a_restarted_agent_with_its_key_is_welcomed_as_a_new_run() {
    let master = Master::start();
    let mut first = Agent::start(&master, "web-1", INTERVAL);
    let before = streaming(&master, "web-1", 3);
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.wait_exit(Duration::from_secs(10));
    let _again = Agent::start_with_state_of(&master, "web-1", INTERVAL, &first);
    let after = wait_for(WAIT, "the restarted agent's new run", || {
        master.host("web-1").filter(|h| {
            h["connected"] == true
                && h["run_id"] != before["run_id"]
                && u64_field(h, "last_seq") >= 3
        })
    });
    assert_eq!(after["identity"], "pinned", "{after}");
    assert_eq!(after["key_sha256"], before["key_sha256"]);
    assert_eq!(after["id"], before["id"]);
    assert_eq!(
        u64_field(&after, "reconnects"),
        u64_field(&before, "reconnects") + 1
    );
    assert_eq!(refusals(&master, "identity"), 0);
}

#[test]
fn forgetting_a_key_lets_a_reinstalled_host_in() {
    const API_TOKEN: &str = "identity-operator-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("api-token");
    std::fs::write(&token, format!("{API_TOKEN}\n")).unwrap();
    let master = Master::start_configured(&format!("api_token_file = {token:?}\n"), dir);
    let mut first = Agent::start(&master, "web-1", INTERVAL);
    let before = streaming(&master, "web-1", 3);
    let id = before["id"].as_str().unwrap().to_owned();
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.wait_exit(Duration::from_secs(10));
    // Reinstalled: the same agent id (machine-id and hostname), but the key is gone.
    std::fs::remove_file(first.state_dir().join("agent-key")).unwrap();
    let _again = Agent::start_with_state_of(&master, "web-1", INTERVAL, &first);
    wait_for(WAIT, "the new key refused", || {
        (refusals(&master, "identity") >= 1).then_some(())
    });
    let refused = master.host("web-1").unwrap();
    assert_eq!(refused["key_sha256"], before["key_sha256"], "{refused}");
    assert_eq!(refused["connected"], false, "{refused}");

    let path = format!("/api/v1/hosts/{id}/key");
    let (status, _, _) = http_call(master.http, "DELETE", &path, "").unwrap();
    assert_eq!(status, 401, "anonymous may not forget a key");
    let auth = format!("Authorization: Bearer {API_TOKEN}\r\n");
    let (status, _, body) = http_call(master.http, "DELETE", &path, &auth).unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["key_forgotten"], id.as_str(), "{answer}");
    assert_eq!(answer["key_sha256"], before["key_sha256"], "{answer}");

    let after = wait_for(
        Duration::from_secs(40),
        "the reinstalled host pinned anew",
        || {
            master.host("web-1").filter(|h| {
                h["connected"] == true
                    && h["identity"] == "pinned"
                    && h["key_sha256"] != before["key_sha256"]
            })
        },
    );
    assert_eq!(after["id"], before["id"]);
    assert_eq!(
        after["first_seen_ms"], before["first_seen_ms"],
        "the host kept its slot"
    );
    assert_eq!(
        master.log_lines_with(&["operator write", "action=\"forget_key\"", &id, "status=200"]),
        1
    );
    // The subcommand reaches the same route: a key of an unknown host is a 404.
    let out = master.operator_command("forget-key", &"f".repeat(32));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    let out = master.operator_command("forget-key", &id);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("key_forgotten"));
}
