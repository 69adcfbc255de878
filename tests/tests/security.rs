//! Security properties of a real master and agent (docs/RELIABILITY.md, "Hostile input"):
//! the packaged config requires the fleet token, a captured handshake cannot be replayed, and
//! no secret reaches a log even at debug level. (Security headers: http_hostile.rs.)

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sentinel_protocol::*;
use sentinel_tests::*;

/// A process this test started, killed by PID on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_packaged_config_refuses_to_start_without_its_fleet_token() {
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/master/master.toml");
    let text = fs::read_to_string(&packaged).unwrap();
    let token_file = text
        .lines()
        .find_map(|l| l.strip_prefix("token_file = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("the packaged master.toml sets token_file (the fleet token is required)");
    assert_eq!(token_file, "/etc/sentinel/fleet-token");
    if Path::new(&token_file).exists() {
        eprintln!("skipped: {token_file} exists on this machine");
        return;
    }
    // The packaged file as is; only the addresses, segment and state are moved aside.
    let dir = tempfile::tempdir().unwrap();
    let shm = format!("sentinel-sec-{}", std::process::id());
    let addr_file = dir.path().join("addr");
    let out = Command::new(bin("sentinel-master"))
        .arg("--config")
        .arg(&packaged)
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--shm-name", &shm])
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--addr-file")
        .arg(&addr_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(!out.status.success(), "started without its token");
    assert!(
        stderr.contains("cannot read /etc/sentinel/fleet-token"),
        "the error names the missing token file: {stderr}"
    );
    assert!(
        !addr_file.exists() && !stderr.contains("sentinel-master listening"),
        "nothing listens for agents: {stderr}"
    );
    assert!(
        !Path::new("/dev/shm").join(&shm).exists(),
        "no segment left"
    );
}

/// Forwards one connection from `listener` to `upstream`, recording what the client sent.
fn recording_proxy(listener: TcpListener, upstream: SocketAddr) -> Arc<Mutex<Vec<u8>>> {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut server = TcpStream::connect(upstream).unwrap();
        let (mut client_r, mut server_w) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = client_r.read(&mut buf) {
                if n == 0 || server_w.write_all(&buf[..n]).is_err() {
                    break;
                }
                record.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = server_w.shutdown(Shutdown::Write);
        });
        let _ = std::io::copy(&mut server, &mut client);
    });
    sent
}

#[test]
fn a_captured_hello_replayed_on_a_new_connection_is_refused() {
    let master = Master::start();
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let via = proxy.local_addr().unwrap();
    let sent = recording_proxy(proxy, master.listen);
    let _agent = Agent::start_to(via, &master.token_file, "captured", "200ms");
    let host = wait_for(
        Duration::from_secs(5),
        "the agent streaming through the proxy",
        || {
            let h = master.host("captured")?;
            (h["last_seq"].as_u64()? >= 3).then_some(h)
        },
    );
    // The first frame the agent sent is its hello, with a proof over the nonce of that
    // connection.
    let captured = sent.lock().unwrap().clone();
    let (body, n) = split_frame(&captured)
        .unwrap()
        .expect("a whole first frame");
    let Ok(AgentMessage::Hello(hello)) = decode_body::<AgentMessage>(body) else {
        panic!("the first frame is not a hello");
    };
    assert_eq!(hello.agent_id, host["id"].as_str().unwrap());
    // Replayed alone, and with everything the agent sent after it: refused, nothing stored.
    for (case, bytes) in [("hello", &captured[..n]), ("whole stream", &captured[..])] {
        let mut p = Peer::connect(master.listen);
        p.challenge();
        p.send_raw(bytes);
        let r = p.refusal();
        assert_eq!(
            r.as_ref().map(|r| r.code.as_str()),
            Some("auth"),
            "{case}: {r:?}"
        );
        let peer = p.name();
        wait_for(
            Duration::from_secs(3),
            "the refusal logged with the peer",
            || {
                master
                    .log_text()
                    .lines()
                    .find(|l| l.contains(&format!("peer={peer} ")) && l.contains("code=\"auth\""))
                    .map(|l| eprintln!("{case}: {l}"))
            },
        );
    }
    // The real agent kept its connection (a replay never takes over its slot).
    let h = master.host("captured").unwrap();
    assert_eq!(u64_field(&h, "reconnects"), 0, "{h}");
    assert_eq!(h["connected"], true, "{h}");
    assert_eq!(master.hosts().unwrap().len(), 1);
    println!(
        "hostile-suite: H21 replayed handshake: hostile inputs refused=2 real-agent reconnects=0"
    );
}

#[test]
fn no_secret_is_ever_logged_even_at_debug_level() {
    // A master and an agent at debug level, a session, refused peers (wrong token, replay),
    // a goodbye; then neither log may contain the token in any common encoding.
    let dir = tempfile::tempdir().unwrap();
    let token = format!("s3cr3t-{:016x}", fastrand::u64(..));
    let token_file = dir.path().join("fleet-token");
    fs::write(&token_file, format!("{token}\n")).unwrap();
    let config = dir.path().join("empty.toml");
    fs::write(&config, "").unwrap();
    let shm_name = format!("sentinel-sec-{}-debug", std::process::id());
    let log = dir.path().join("master.log");
    let addr_file = dir.path().join("addr");
    let child = Command::new(bin("sentinel-master"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--addr-file")
        .arg(&addr_file)
        .arg("--token-file")
        .arg(&token_file)
        .args(["--shm-name", &shm_name])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("SENTINEL_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Owned by the harness's Master from here on: its Drop kills the tree and the segment.
    let mut master = Master {
        child,
        listen: ANY_LOOPBACK,
        http: ANY_LOOPBACK,
        shm_name,
        dir: tempfile::tempdir().unwrap(),
        log,
        token_file: token_file.clone(),
        extra_args: vec![],
        netns: None,
        config: String::new(),
    };
    (master.listen, master.http) = read_addr_file(&addr_file, &mut master.child, ADDR_FILE_WAIT)
        .expect("the master reports its bound addresses");
    let listen = master.listen;
    master.wait_healthy(Duration::from_secs(10));
    let agent_log = dir.path().join("agent.log");
    let agent_dir = dir.path().join("agent");
    fs::create_dir(&agent_dir).unwrap();
    let mut agent = Guard(
        Command::new(bin("sentinel-agent"))
            .arg("--config")
            .arg(&config)
            .args([
                "--master",
                &listen.to_string(),
                "--hostname",
                "quiet",
                "--interval",
                "200ms",
            ])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--state-dir")
            .arg(&agent_dir)
            .env("SENTINEL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(Duration::from_secs(5), "agent streaming", || {
        (master.host("quiet")?["last_seq"].as_u64()? >= 3).then_some(())
    });
    let mut p = Peer::connect(listen);
    p.handshake(
        &test_hello("0123456789abcdef0123456789abcdef", "wrong", 1),
        "not-the-token",
    );
    p.refusal();
    let mut p = Peer::connect(listen);
    assert!(matches!(
        p.handshake(
            &test_hello("0123456789abcdef0123456789abcdee", "good", 1),
            &token
        ),
        Some(MasterMessage::Welcome(_))
    ));
    p.send(&AgentMessage::Sample(test_sample(1)));
    p.read();
    drop(p);
    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGTERM).unwrap();
    wait_for(Duration::from_secs(5), "the agent to stop", || {
        agent.0.try_wait().unwrap()
    });
    let master_log = master.log_text();
    let agent_text = fs::read_to_string(&agent_log).unwrap();
    // (The master has no debug-level lines of its own today; the agent has.)
    assert!(master_log.lines().count() > 5, "master log:\n{master_log}");
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    let bytes_debug = format!("{:?}", token.as_bytes());
    for (who, text) in [("master", &master_log), ("agent", &agent_text)] {
        for (form, secret) in [
            ("plain", &token),
            ("hex", &hex),
            ("byte list", &bytes_debug),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "the {who} log contains the token ({form})"
            );
        }
    }
    eprintln!(
        "checked {} master and {} agent log lines at debug level: no token",
        master_log.lines().count(),
        agent_text.lines().count()
    );
}
