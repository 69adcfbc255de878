//! The real agent binary against a tiny fake master built from the protocol crate, over a
//! real socket on 127.0.0.1: handshake, samples, acks, replay after reconnect, goodbye.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sentinel_protocol::{
    decode_body, encode_frame, verify_proof, AgentMessage, Challenge, Hello, MasterMessage,
    Refused, Sample, Welcome, PROTOCOL_VERSION,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const TOKEN: &str = "fleet-secret";
/// Generous bound for anything the agent should do "soon"; tests wait for conditions.
const DEADLINE: Duration = Duration::from_secs(15);

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "sentinel-agent-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent process; killed (by its own pid) if a test fails midway.
struct AgentProc {
    child: Child,
    dir: Dir,
}

impl AgentProc {
    fn start(master: &str, hostname: &str) -> AgentProc {
        Self::start_with(master, hostname, &[])
    }

    fn start_with(master: &str, hostname: &str, extra: &[&str]) -> AgentProc {
        let dir = Dir::new(hostname);
        let token = dir.0.join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let log = std::fs::File::create(dir.0.join("stderr.log")).unwrap();
        // An explicit config that does not exist is an error, so give it an empty one.
        std::fs::write(dir.0.join("none.toml"), "").unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sentinel-agent"))
            .args([
                "--master",
                master,
                "--interval",
                "100ms",
                "--hostname",
                hostname,
                "--reconnect-max",
                "500ms",
            ])
            .arg("--token-file")
            .arg(&token)
            .arg("--state-dir")
            .arg(dir.0.join("state"))
            .arg("--config")
            .arg(dir.0.join("none.toml"))
            .args(extra)
            .env("SENTINEL_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        AgentProc { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stderr.log")).unwrap_or_default()
    }

    /// Waits until the agent's log contains `needle`.
    fn wait_log(&self, needle: &str) {
        let end = Instant::now() + DEADLINE;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < end,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < end,
                "agent did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct FakeMaster {
    listener: TcpListener,
}

struct MasterConn {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    hello: Hello,
    nonce: Vec<u8>,
}

impl FakeMaster {
    async fn bind() -> FakeMaster {
        FakeMaster {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn addr(&self) -> String {
        self.listener.local_addr().unwrap().to_string()
    }

    /// Accepts one agent and runs the handshake up to (not including) the answer.
    async fn accept_hello(&self) -> MasterConn {
        self.accept_hello_within(DEADLINE).await
    }

    async fn accept_hello_within(&self, deadline: Duration) -> MasterConn {
        let (stream, _) = tokio::time::timeout(deadline, self.listener.accept())
            .await
            .expect("agent connects")
            .unwrap();
        let mut framed = Framed::new(stream, sentinel_protocol::frame::codec());
        let nonce: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        send(
            &mut framed,
            &MasterMessage::Challenge(Challenge {
                version: PROTOCOL_VERSION,
                nonce: nonce.clone(),
            }),
        )
        .await;
        let AgentMessage::Hello(hello) = recv(&mut framed).await.expect("hello") else {
            panic!("first frame is not hello")
        };
        MasterConn {
            framed,
            hello,
            nonce,
        }
    }

    async fn accept(&self, last_seq: u64) -> MasterConn {
        self.accept_within(DEADLINE, last_seq).await
    }

    async fn accept_within(&self, deadline: Duration, last_seq: u64) -> MasterConn {
        let mut conn = self.accept_hello_within(deadline).await;
        assert!(
            conn.proof_ok(),
            "the agent's proof verifies with the fleet token"
        );
        conn.answer(&MasterMessage::Welcome(Welcome {
            last_seq,
            clock_ms: 0,
        }))
        .await;
        conn
    }
}

async fn send(framed: &mut Framed<TcpStream, LengthDelimitedCodec>, msg: &MasterMessage) {
    let mut buf = Vec::new();
    encode_frame(msg, &mut buf).unwrap();
    framed
        .send(bytes::Bytes::from(buf).slice(4..))
        .await
        .unwrap();
}

async fn recv(framed: &mut Framed<TcpStream, LengthDelimitedCodec>) -> Option<AgentMessage> {
    let body = tokio::time::timeout(DEADLINE, framed.next())
        .await
        .expect("agent sends in time")?
        .ok()?;
    Some(decode_body(&body).expect("agent frames decode"))
}

impl MasterConn {
    fn proof_ok(&self) -> bool {
        let nonce: [u8; 32] = self.nonce.as_slice().try_into().unwrap();
        verify_proof(
            TOKEN.as_bytes(),
            &nonce,
            &self.hello.agent_id,
            &self.hello.proof,
        )
    }

    async fn answer(&mut self, msg: &MasterMessage) {
        send(&mut self.framed, msg).await;
    }

    async fn ack(&mut self, seq: u64) {
        self.answer(&MasterMessage::Ack(sentinel_protocol::Ack { seq }))
            .await;
    }

    /// Samples from the next `sample` or `batch` frame, and whether it was a batch.
    async fn samples(&mut self) -> (Vec<Sample>, bool) {
        match recv(&mut self.framed).await.expect("connection open") {
            AgentMessage::Sample(s) => (vec![s], false),
            AgentMessage::Batch(b) => {
                b.validate().unwrap();
                (b.samples, true)
            }
            other => panic!("expected samples, got {other:?}"),
        }
    }

    /// Reads frames until a sample with seq >= `upto` has arrived; returns every seq seen.
    async fn seqs_until(&mut self, upto: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        while seen.last().is_none_or(|&s| s < upto) {
            let (samples, _) = self.samples().await;
            for s in samples {
                s.validate().unwrap();
                seen.push(s.seq);
            }
        }
        seen
    }
}

fn assert_contiguous(seqs: &[u64], first: u64) {
    let want: Vec<u64> = (first..first + seqs.len() as u64).collect();
    assert_eq!(
        seqs,
        want.as_slice(),
        "samples arrive in order, without gaps or duplicates"
    );
}

#[tokio::test]
async fn handshake_proves_the_token_and_samples_flow() {
    let master = FakeMaster::bind().await;
    let agent = AgentProc::start(&master.addr(), "ship-flow");
    let mut conn = master.accept(0).await;

    let h = &conn.hello;
    h.validate().unwrap();
    assert_eq!(h.version, PROTOCOL_VERSION);
    assert_eq!(h.hostname, "ship-flow");
    assert_eq!(h.interval_ms, 100);
    assert_eq!(h.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(h.host.cpu_count > 0);
    let nonce: [u8; 32] = conn.nonce.as_slice().try_into().unwrap();
    assert!(
        !verify_proof(b"another-token", &nonce, &h.agent_id, &h.proof),
        "the proof is bound to the token"
    );
    let persisted = std::fs::read_to_string(agent.dir.0.join("state/agent-id")).unwrap();
    assert_eq!(
        persisted.trim(),
        h.agent_id,
        "the id in hello is the persisted one"
    );

    let (first, _) = conn.samples().await;
    assert_eq!(first[0].seq, 1, "a run starts at seq 1");
    assert!(first[0].mem_total_bytes > 0 && first[0].ts_ms > 0);
    let mut seqs: Vec<u64> = first.iter().map(|s| s.seq).collect();
    seqs.extend(conn.seqs_until(5).await);
    assert_contiguous(&seqs, 1);
    // Once caught up, each fresh sample travels alone in a `sample` frame.
    let (next, batch) = conn.samples().await;
    assert_eq!((next.len(), batch), (1, false));
}

#[tokio::test]
async fn acked_samples_are_trimmed_and_the_rest_replayed_in_order_after_reconnect() {
    let master = FakeMaster::bind().await;
    let _agent = AgentProc::start(&master.addr(), "ship-replay");

    let mut conn = master.accept(0).await;
    let run_id = conn.hello.run_id;
    let seen = conn.seqs_until(3).await;
    conn.ack(3).await;
    let more = conn.seqs_until(seen.last().unwrap() + 3).await;
    let max_seen = *more.last().unwrap();
    drop(conn); // the master goes away without acking more

    // The master lost everything unacked (last_seq 0): the agent replays from 4, in order,
    // having kept sampling meanwhile.
    let mut conn = master.accept(0).await;
    assert_eq!(conn.hello.run_id, run_id, "same process, same run");
    let (first, batch) = conn.samples().await;
    assert!(batch, "a backlog is replayed as a batch");
    assert_eq!(
        first[0].seq, 4,
        "samples acked before the break are not resent"
    );
    let mut seqs: Vec<u64> = first.iter().map(|s| s.seq).collect();
    seqs.extend(conn.seqs_until(max_seen + 3).await);
    assert_contiguous(&seqs, 4);
    let held = *seqs.last().unwrap();
    drop(conn);

    // A master that holds everything up to `held` gets only what came after.
    let mut conn = master.accept(held).await;
    let seqs = conn.seqs_until(held + 3).await;
    assert_contiguous(&seqs, held + 1);
}

#[tokio::test]
async fn sigterm_sends_goodbye_with_the_last_seq_and_exits_zero() {
    let master = FakeMaster::bind().await;
    let mut agent = AgentProc::start(&master.addr(), "ship-goodbye");
    let mut conn = master.accept(0).await;
    let seen = conn.seqs_until(2).await;
    conn.ack(*seen.last().unwrap()).await;

    agent.signal("TERM");
    let mut last_sample = *seen.last().unwrap();
    let goodbye = loop {
        match recv(&mut conn.framed).await.expect("goodbye before close") {
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
    assert!(
        recv(&mut conn.framed).await.is_none(),
        "the agent closes after goodbye"
    );
    let status = agent.wait_exit();
    assert!(status.success(), "{status:?}; log:\n{}", agent.log());
}

#[tokio::test]
async fn a_refusal_is_logged_with_its_reason_and_the_agent_retries() {
    let master = FakeMaster::bind().await;
    let agent = AgentProc::start(&master.addr(), "ship-refused");
    let mut conn = master.accept_hello().await;
    let refused = Refused {
        code: "auth".into(),
        reason: "the proof does not match the fleet token".into(),
    };
    conn.answer(&MasterMessage::Refused(refused)).await;
    drop(conn);

    let mut conn = master.accept(0).await;
    let seqs = conn.seqs_until(2).await;
    assert_eq!(seqs[0], 1, "nothing was acked, so everything is sent");
    let log = agent.log();
    assert!(
        log.contains("ERROR")
            && log.contains("the proof does not match the fleet token")
            && log.contains("code=auth"),
        "{log}"
    );
}

#[test]
fn once_prints_one_real_sample_as_json_without_a_master() {
    let dir = Dir::new("once");
    let out = Command::new(env!("CARGO_BIN_EXE_sentinel-agent"))
        .args([
            "--once",
            "--format",
            "json",
            "--hostname",
            "once-host",
            "--config",
        ])
        .arg(dir.0.join("agent.toml"))
        .arg("--state-dir")
        .arg(&dir.0)
        .output()
        .unwrap();
    // An explicit config file that does not exist is an error...
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("agent.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(dir.0.join("agent.toml"), "interval = \"2s\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sentinel-agent"))
        .args([
            "--once",
            "--format",
            "json",
            "--hostname",
            "once-host",
            "--config",
        ])
        .arg(dir.0.join("agent.toml"))
        .arg("--state-dir")
        .arg(dir.0.join("state"))
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
        !dir.0.join("state/agent-id").exists(),
        "--once leaves no trace on the host"
    );
    assert!(v["host"]["cpu_count"].as_u64().unwrap() > 0);
    for key in ["os", "kernel", "arch", "cpu_model"] {
        assert!(v["host"][key].is_string(), "host.{key}");
    }
}

#[test]
fn a_wrong_config_fails_at_start_naming_file_and_key() {
    let dir = Dir::new("badconfig");
    let path = dir.0.join("agent.toml");
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
        let out = Command::new(env!("CARGO_BIN_EXE_sentinel-agent"))
            .arg("--config")
            .arg(&path)
            .arg("--state-dir")
            .arg(&dir.0)
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
    let out = Command::new(env!("CARGO_BIN_EXE_sentinel-agent"))
        .args([
            "--master",
            "127.0.0.1:1",
            "--token-file",
            "/nonexistent/token",
            "--config",
        ])
        .arg(dir.0.join("missing-is-fine-only-for-default.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
}

/// An address on which nothing listens (yet).
async fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn a_down_master_is_logged_once_and_sigterm_still_exits_zero() {
    let addr = free_addr().await;
    let mut agent = AgentProc::start(&addr, "ship-down");
    agent.wait_log("Cannot reach the master");
    // Enough samples for several reconnect attempts (250ms, 500ms cap).
    agent.wait_log("seq=15 ");
    let log = agent.log();
    let attempts = log.matches("Connecting to the master.").count();
    assert!(attempts >= 3, "{log}");
    assert_eq!(
        log.matches("WARN").count(),
        1,
        "one line per 30 s, not per attempt:\n{log}"
    );
    agent.signal("TERM");
    assert!(agent.wait_exit().success());
    assert!(agent.log().contains("not connected, so no goodbye"));
}

#[tokio::test]
async fn a_full_spool_drops_the_oldest_and_reports_the_count() {
    let addr = free_addr().await;
    let agent = AgentProc::start_with(&addr, "ship-drop", &["--spool-samples", "3"]);
    agent.wait_log("seq=8 ");
    let master = FakeMaster {
        listener: TcpListener::bind(&addr).await.unwrap(),
    };
    let mut conn = master.accept(0).await;
    let (first, _) = conn.samples().await;
    let s = &first[0];
    assert!(s.seq >= 6, "only the newest 3 (or so) are kept: {}", s.seq);
    let mut samples = first.clone();
    while samples.last().unwrap().seq < s.seq + 5 {
        samples.extend(conn.samples().await.0);
    }
    let seqs: Vec<u64> = samples.iter().map(|s| s.seq).collect();
    assert_contiguous(&seqs, s.seq);
    // `dropped` is cumulative: it never decreases, and once the spool drains it counts
    // exactly the samples before the first one kept.
    assert!(samples.windows(2).all(|w| w[0].dropped <= w[1].dropped));
    assert_eq!(samples.last().unwrap().dropped, s.seq - 1, "{samples:?}");
}

#[tokio::test]
async fn a_master_that_stops_acking_is_abandoned_after_the_idle_timeout() {
    let master = FakeMaster::bind().await;
    let agent = AgentProc::start(&master.addr(), "ship-noack");
    let mut silent = master.accept(0).await;
    let seen = silent.seqs_until(2).await;
    assert_eq!(seen[0], 1);
    // Never ack; keep the socket open. The agent gives up after the idle timeout (15 s at
    // 100 ms) and reconnects, replaying everything unacked from seq 1.
    let limit = sentinel_protocol::limits::idle_timeout(100);
    let mut conn = master.accept_within(limit + DEADLINE, 0).await;
    assert!(agent.log().contains("has not acknowledged anything"));
    let (first, _) = conn.samples().await;
    assert_eq!(first[0].seq, 1, "nothing was acked, so nothing was trimmed");
    drop(silent);
}

#[tokio::test]
async fn a_flapping_master_does_not_flood_the_log() {
    let master = FakeMaster::bind().await;
    let agent = AgentProc::start(&master.addr(), "ship-flap");
    // Welcome, then drop at once: the backoff resets after every handshake, so the agent
    // comes straight back; the log must not say so every time.
    for _ in 0..6 {
        let conn = master.accept(0).await;
        drop(conn);
    }
    let mut conn = master.accept(0).await;
    let seqs = conn.seqs_until(3).await;
    assert_eq!(seqs[0], 1, "nothing was acked, so everything is sent");
    let log = agent.log();
    let warns = log.lines().filter(|l| l.contains(" WARN ")).count();
    assert_eq!(warns, 1, "{log}");
    assert_eq!(
        log.matches("Lost the connection to the master again")
            .count(),
        5,
        "suppressed disconnects are still at debug: {log}"
    );
}
