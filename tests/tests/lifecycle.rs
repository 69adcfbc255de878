//! Host lifecycle (issue 12 part 2): removal frees a slot, expiry, the bound on new
//! identities per address, the operator-only write endpoints, and the control channel under
//! child kills. Real masters, agents and raw peers through the shared harness.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sentinel_protocol::{AgentMessage, MasterMessage};
use sentinel_tests::*;
use serde_json::Value;

const API_TOKEN: &str = "lifecycle-operator-token-0123456789";
const WAIT: Duration = Duration::from_secs(15);

fn id(n: u32) -> String {
    format!("{n:032x}")
}

/// A master with `extra` in its master.toml and the operator API token configured.
fn master_with(extra: &str) -> Master {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("api-token");
    std::fs::write(&token, format!("{API_TOKEN}\n")).unwrap();
    let config = format!(
        "api_token_file = {:?}\n{extra}",
        token.display().to_string()
    );
    let m = Master::start_configured(&config, dir);
    m.wait_healthy(WAIT);
    m
}

/// A raw peer that says hello as `agent_id` and, if welcomed, stores sample 1.
fn host_from(m: &Master, source: IpAddr, agent_id: &str, hostname: &str) -> (Peer, MasterMessage) {
    let mut p = Peer::connect_from(m.listen, source);
    let answer = p
        .handshake(&test_hello(agent_id, hostname, 1), TOKEN)
        .expect("an answer to the hello");
    if matches!(answer, MasterMessage::Welcome(_)) {
        assert!(p.send(&AgentMessage::Sample(test_sample(1))));
        assert!(matches!(p.read(), Some(MasterMessage::Ack(_))));
    }
    (p, answer)
}

fn host(m: &Master, agent_id: &str, hostname: &str) -> Peer {
    let (p, answer) = host_from(m, IpAddr::V4(Ipv4Addr::LOCALHOST), agent_id, hostname);
    assert!(
        matches!(answer, MasterMessage::Welcome(_)),
        "{hostname} welcomed, got {answer:?}"
    );
    p
}

fn refused_code(answer: &MasterMessage) -> &str {
    match answer {
        MasterMessage::Refused(r) => &r.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn delete(m: &Master, agent_id: &str, headers: &str) -> (u16, String) {
    let (status, _, body) = http_call(
        m.http,
        "DELETE",
        &format!("/api/v1/hosts/{agent_id}"),
        headers,
    )
    .unwrap();
    (status, body)
}

fn bearer() -> String {
    format!("Authorization: Bearer {API_TOKEN}\r\n")
}

fn ids(m: &Master) -> Vec<String> {
    m.hosts()
        .unwrap_or_default()
        .iter()
        .map(|h| h["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn metric(m: &Master, line_start: &str) -> Option<u64> {
    let (_, body) = m.get("/metrics", Duration::from_secs(5)).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

#[test]
fn removing_a_host_frees_its_slot_and_it_stays_gone_across_a_restart() {
    let mut m = master_with("capacity = 4\n");
    let events = EventStream::open(&m, "");
    let mut peers: Vec<Peer> = (1..=4)
        .map(|n| host(&m, &id(n), &format!("host-{n}")))
        .collect();
    wait_for(WAIT, "4 hosts listed", || {
        (ids(&m).len() == 4).then_some(())
    });
    wait_for(WAIT, "the snapshot event", || {
        events.row_ids().contains(&id(2)).then_some(())
    });

    // The table is full: a new host is refused busy, counted; a known one still gets in.
    let (_, answer) = host_from(&m, IpAddr::V4(Ipv4Addr::LOCALHOST), &id(5), "host-5");
    assert_eq!(refused_code(&answer), "busy");
    assert_eq!(metric(&m, "sentinel_master_table_full_total "), Some(1));
    assert_eq!(
        m.log_lines_with(&["the host table is full", &id(5), "refused_total=1"]),
        1
    );
    drop(peers.remove(0));
    let mut again = Peer::connect(m.listen);
    let welcome = again.handshake(&test_hello(&id(1), "host-1", 2), TOKEN);
    assert!(
        matches!(welcome, Some(MasterMessage::Welcome(_))),
        "a known host is welcomed in a full table: {welcome:?}"
    );

    // Remove host-2 (connected) with the operator token.
    let (status, body) = delete(&m, &id(2), &bearer());
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["hostname"].as_str(), v["was_connected"].as_bool()),
        (Some("host-2"), Some(true))
    );
    assert!(!ids(&m).contains(&id(2)), "gone from /api/v1/hosts");
    let (_, metrics) = m.get("/metrics", Duration::from_secs(5)).unwrap();
    assert!(!metrics.contains(&id(2)), "gone from /metrics");
    assert_eq!(metric(&m, "sentinel_master_hosts_removed_total "), Some(1));
    assert_eq!(metric(&m, "sentinel_master_hosts "), Some(3));
    let deadline = Instant::now() + WAIT;
    loop {
        let all = events.all();
        let seen = all
            .iter()
            .any(|(name, d)| name == "removed" && d.to_string().contains(&id(2)));
        if seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no removed event for host-2 in the stream: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its connection is closed on its next frame, without a refusal.
    let removed_peer = &mut peers[0];
    removed_peer.send(&AgentMessage::Sample(test_sample(2)));
    assert!(
        removed_peer.read().is_none(),
        "the removed host's connection is closed"
    );
    assert!(m
        .log_text()
        .contains("removed a host on an operator's request"));

    // The freed slot takes a new host.
    let _five = host(&m, &id(5), "host-5");
    wait_for(WAIT, "host-5 listed", || {
        ids(&m).contains(&id(5)).then_some(())
    });
    assert_eq!(ids(&m).len(), 4);
    assert_eq!(delete(&m, &id(2), &bearer()).0, 404, "already gone");

    // Across a master restart (final snapshot, restore) it stays gone.
    drop(peers);
    drop(again);
    m.restart_after(Duration::ZERO);
    let after = ids(&m);
    assert!(
        !after.contains(&id(2)),
        "restored a removed host: {after:?}"
    );
    for n in [1, 3, 4, 5] {
        assert!(
            after.contains(&id(n)),
            "host {n} lost across the restart: {after:?}"
        );
    }
}

#[test]
fn expiry_removes_a_long_down_host_and_counts_it() {
    let m = master_with("host_expiry = \"2s\"\n");
    let mut doomed = Agent::start(&m, "doomed", "200ms");
    let _alive = Agent::start(&m, "alive", "200ms");
    let doomed_id = wait_for(WAIT, "both agents up", || {
        let d = m.host("doomed")?;
        (d["status"] == "up" && m.host("alive")?["status"] == "up")
            .then(|| d["id"].as_str().unwrap().to_string())
    });
    doomed.signal(Signal::SIGKILL);
    doomed.wait_exit(WAIT);
    let killed = Instant::now();
    wait_for(WAIT, "the killed agent's host to expire", || {
        (!ids(&m).contains(&doomed_id)).then_some(())
    });
    assert!(
        killed.elapsed() >= Duration::from_millis(1700),
        "expired before host_expiry: {:?}",
        killed.elapsed()
    );
    assert_eq!(metric(&m, "sentinel_master_hosts_expired_total "), Some(1));
    assert!(m.host("alive").is_some(), "a connected host never expires");
    assert_eq!(
        m.log_lines_with(&["expired a host", &doomed_id, "host_expiry=2s"]),
        1,
        "{}",
        m.log_text()
    );
}

#[test]
fn a_flood_of_new_identities_from_one_address_cannot_lock_a_new_host_out() {
    let m = master_with("new_hosts_per_minute = 5\ncapacity = 64\n");
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut held = Vec::new();
    let mut refused = 0;
    for n in 0..20 {
        let (p, answer) = host_from(&m, local, &id(100 + n), &format!("flood-{n}"));
        match answer {
            MasterMessage::Welcome(_) => held.push(p),
            other => {
                assert_eq!(refused_code(&other), "throttled");
                refused += 1;
            }
        }
    }
    assert_eq!((held.len(), refused), (5, 15));
    assert_eq!(
        metric(&m, "sentinel_collector_refusals_total{code=\"throttled\"} "),
        Some(15)
    );
    assert!(m
        .log_text()
        .contains("too many new host identities from 127.0.0.1"));
    // A new host from another address gets in.
    let (_real, answer) = host_from(&m, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), &id(1), "real");
    assert!(matches!(answer, MasterMessage::Welcome(_)), "{answer:?}");
    // A known host from the flooded address is never throttled.
    drop(held.remove(0));
    let (_back, answer) = host_from(&m, local, &id(100), "flood-0");
    assert!(matches!(answer, MasterMessage::Welcome(_)), "{answer:?}");
}

#[test]
fn write_endpoints_do_not_exist_without_an_operator_credential() {
    let m = Master::start();
    let _h = host(&m, &id(1), "h1");
    let (status, _) = delete(&m, &id(1), &bearer());
    assert_eq!(status, 405);
    let session = m.json("/api/v1/session").unwrap();
    assert_eq!(session["writes_enabled"], false);
    assert!(ids(&m).contains(&id(1)));
}

#[test]
fn write_endpoints_refuse_everyone_but_the_operator() {
    use base64::prelude::{Engine, BASE64_STANDARD};
    // sha256("viewpass") and sha256("opspass").
    let sha = |s: &str| {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(s.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    };
    let m = master_with(&format!(
        "http_basic_auth_user = \"viewer\"\nhttp_basic_auth_sha256 = \"{}\"\nhttp_operator_user = \"ops\"\nhttp_operator_sha256 = \"{}\"\n",
        sha("viewpass"),
        sha("opspass")
    ));
    let basic = |u: &str, p: &str| {
        format!(
            "Authorization: Basic {}\r\n",
            BASE64_STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let (viewer, operator) = (basic("viewer", "viewpass"), basic("ops", "opspass"));
    let _hosts: Vec<Peer> = (1..=3)
        .map(|n| host(&m, &id(n), &format!("h{n}")))
        .collect();
    let list = |auth: &str| http_call(m.http, "GET", "/api/v1/hosts", auth).unwrap();
    wait_for(WAIT, "3 hosts", || {
        (list(&viewer).2.matches("\"id\"").count() == 3).then_some(())
    });

    let cases: [(&str, String, u16); 7] = [
        ("anonymous", String::new(), 401),
        ("viewer", viewer.clone(), 403),
        (
            "wrong token",
            "Authorization: Bearer not-the-token-at-all\r\n".into(),
            401,
        ),
        ("wrong password", basic("ops", "viewpass"), 401),
        (
            "cross-origin",
            format!("{operator}Origin: http://evil.example\r\n"),
            403,
        ),
        (
            "cross-site fetch",
            format!("{operator}Sec-Fetch-Site: cross-site\r\n"),
            403,
        ),
        (
            "cross-origin token",
            format!("{}Origin: http://evil.example\r\n", bearer()),
            403,
        ),
    ];
    for (who, headers, want) in &cases {
        let (status, body) = delete(&m, &id(1), headers);
        assert_eq!(status, *want, "{who}: {body}");
    }
    assert_eq!(list(&viewer).0, 200, "the viewer still reads");
    assert_eq!(list("").0, 401, "anonymous reads need the viewer");
    assert!(
        list(&viewer).2.contains(&id(1)),
        "no refused request removed anything"
    );
    assert!(
        m.log_lines_with(&[
            "refused an operator write",
            "user=\"viewer\"",
            "peer=127.0.0.1"
        ]) >= 1
    );

    // The operator, from the dashboard's own origin.
    let same = format!(
        "{operator}Origin: http://{}\r\nSec-Fetch-Site: same-origin\r\n",
        m.http
    );
    let (status, body) = delete(&m, &id(1), &same);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        m.log_lines_with(&[
            "operator write",
            "user=\"ops\"",
            "action=\"remove_host\"",
            &id(1),
            "host=\"h1\"",
            "peer=127.0.0.1",
            "status=200"
        ]),
        1,
        "{}",
        m.log_text()
    );
    let session: Value = serde_json::from_str(
        &http_call(m.http, "GET", "/api/v1/session", &operator)
            .unwrap()
            .2,
    )
    .unwrap();
    assert_eq!(
        (session["user"].as_str(), session["may_write"].as_bool()),
        (Some("ops"), Some(true))
    );

    // The token, through `sentinel-master remove-host`.
    let out = m.operator_command("remove-host", &id(2));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"hostname\":\"h2\""));
    assert_eq!(
        m.log_lines_with(&["operator write", "user=\"token\"", &id(2), "status=200"]),
        1
    );
    let out = m.operator_command("remove-host", &id(2));
    assert!(!out.status.success(), "removing it again fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let left = list(&viewer).2;
    assert!(!left.contains(&id(1)) && !left.contains(&id(2)) && left.contains(&id(3)));
}

#[test]
fn the_control_channel_survives_collector_and_http_kills() {
    let m = master_with("");
    let _hosts: Vec<Peer> = (1..=3)
        .map(|n| host(&m, &id(n), &format!("h{n}")))
        .collect();
    wait_for(WAIT, "3 hosts", || (ids(&m).len() == 3).then_some(()));

    // The collector is dead and not yet restarted (the supervisor is stopped): a removal
    // gets a clear error within the control timeout, and is never carried out later.
    let collector = m.collector_pid().unwrap();
    let supervisor = Pid::from_raw(m.pid() as i32);
    kill(supervisor, Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(collector as i32), Signal::SIGKILL).unwrap();
    let asked = Instant::now();
    let (status, body) = delete(&m, &id(1), &bearer());
    let took = asked.elapsed();
    kill(supervisor, Signal::SIGCONT).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("collector"), "{body}");
    assert!(took < Duration::from_secs(4), "answered in {took:?}");
    wait_for(WAIT, "a new collector", || {
        m.collector_pid().filter(|&p| p != collector && p != 0)
    });
    m.wait_healthy(WAIT);
    wait_for(WAIT, "the hosts to reconnect or stay listed", || {
        (ids(&m).len() == 3).then_some(())
    });
    assert!(
        ids(&m).contains(&id(1)),
        "a removal that failed must not happen later"
    );
    let (status, body) = delete(&m, &id(1), &bearer());
    assert_eq!(status, 200, "after the collector restart: {body}");

    // The http process dies: its successor has the same channel.
    let http_pid = m.json("/healthz").unwrap()["http_pid"].as_u64().unwrap();
    kill(Pid::from_raw(http_pid as i32), Signal::SIGKILL).unwrap();
    wait_for(WAIT, "a new http process", || {
        let h = m.json("/healthz")?;
        (h["http_pid"].as_u64()? != http_pid).then_some(())
    });
    let (status, body) = delete(&m, &id(2), &bearer());
    assert_eq!(status, 200, "after the http restart: {body}");
    assert_eq!(ids(&m), vec![id(3)]);
}

#[test]
fn removal_keeps_accounting_of_the_other_hosts_intact() {
    // A real agent keeps streaming while a neighbour is removed: nothing of its is lost.
    let m = master_with("");
    let agent = Agent::start(&m, "steady", "100ms");
    let _gone = host(&m, &id(9), "gone");
    wait_for(WAIT, "steady up", || {
        (m.host("steady")?["status"] == "up").then_some(())
    });
    assert_eq!(delete(&m, &id(9), &bearer()).0, 200);
    let before = u64_field(&m.host("steady").unwrap(), "samples_received");
    wait_for(WAIT, "steady keeps streaming", || {
        (u64_field(&m.host("steady")?, "samples_received") > before + 5).then_some(())
    });
    assert_accounted(&m.host("steady").unwrap());
    drop(agent);
}
