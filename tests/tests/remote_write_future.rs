//! remote_write: a sample stamped far in the future (year 2100, u64::MAX) must not stop the
//! forwarding of its host; it is dropped and counted. The receiver here is a stand-in that
//! answers 204 to every request (what a receiver does with a valid one); the counters in
//! /metrics say what the forwarder sent.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use sentinel_protocol::*;
use sentinel_tests::*;

/// Answers every HTTP request with 204, reading each body by its Content-Length.
fn fake_receiver() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match c.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match c.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    if c.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn metric(m: &Master, name: &str) -> Option<u64> {
    let (_, text) = m.get("/metrics", Duration::from_secs(5)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

fn send(p: &mut Peer, s: Sample) -> u64 {
    p.send(&AgentMessage::Sample(s));
    match p.read() {
        Some(MasterMessage::Ack(a)) => a.seq,
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[test]
fn a_far_future_sample_is_dropped_and_counted_and_forwarding_goes_on() {
    let receiver = fake_receiver();
    let config = format!("[remote_write]\nurl = \"http://{receiver}/api/v1/write\"\n");
    let m = Master::start_configured(&config, tempfile::tempdir().unwrap());
    m.wait_healthy(Duration::from_secs(10));
    let mut p = Peer::connect(m.listen);
    let id = format!("{:032x}", 0xf00du128);
    match p.handshake(&test_hello(&id, "rw-future", 1), TOKEN) {
        Some(MasterMessage::Welcome(_)) => {}
        other => panic!("expected a welcome, got {other:?}"),
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let at = |seq: u64, ts_ms: u64| Sample {
        ts_ms,
        ..test_sample(seq)
    };
    for seq in 1..=3 {
        assert_eq!(send(&mut p, at(seq, now - 60_000 + seq * 1000)), seq);
    }
    // Three series per point: 9 samples.
    wait_for(
        Duration::from_secs(10),
        "the first 3 points forwarded",
        || (metric(&m, "sentinel_remote_write_samples_sent_total")? >= 9).then_some(()),
    );
    // Year 2100, then u64::MAX (-1 as the protobuf's i64).
    assert_eq!(send(&mut p, at(4, 4_102_444_800_000)), 4);
    assert_eq!(send(&mut p, at(5, u64::MAX)), 5);
    // Let the forwarder read them (counted as future, or, before the fix, sent) before the
    // next points come, so that they cannot ride in the same scan.
    wait_for(
        Duration::from_secs(10),
        "the far-future points read",
        || {
            let future = metric(&m, "sentinel_remote_write_samples_future_total").unwrap_or(0);
            let sent = metric(&m, "sentinel_remote_write_samples_sent_total")?;
            (future >= 6 || sent >= 15).then_some(())
        },
    );
    for seq in 6..=8 {
        assert_eq!(send(&mut p, at(seq, now - 60_000 + seq * 1000)), seq);
    }
    let sent = wait_for(
        Duration::from_secs(10),
        "the 3 points after them forwarded",
        || {
            let sent = metric(&m, "sentinel_remote_write_samples_sent_total")?;
            (sent >= 18).then_some(sent)
        },
    );
    assert_eq!(sent, 18, "exactly points 1-3 and 6-8, 3 series each");
    assert_eq!(
        metric(&m, "sentinel_remote_write_samples_future_total"),
        Some(6),
        "2 far-future points, 3 series each"
    );
    // A restart resumes after the saved high-water mark (point 8), not after 2100.
    drop(p);
    let mut m = m;
    m.restart_after(Duration::ZERO);
    let mut p = Peer::connect(m.listen);
    match p.handshake(&test_hello(&id, "rw-future", 2), TOKEN) {
        Some(MasterMessage::Welcome(_)) => {}
        other => panic!("expected a welcome after the restart, got {other:?}"),
    }
    for seq in 1..=2 {
        assert_eq!(send(&mut p, at(seq, now - 30_000 + seq * 1000)), seq);
    }
    wait_for(
        Duration::from_secs(10),
        "the new run's points forwarded after a restart",
        || (metric(&m, "sentinel_remote_write_samples_sent_total")? >= 6).then_some(()),
    );
    assert!(
        m.log_lines_with(&["more than 10 min ahead"]) >= 1,
        "{}",
        m.log_text()
    );
}
