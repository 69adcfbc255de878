//! 1,000 event-stream clients connecting at once to a master holding 4,096 hosts must not
//! delay GET /api/v1/hosts beyond 1 s (each new stream used to render its own snapshot of
//! the whole fleet on the http process's two workers).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sentinel_tests::*;

const HOSTS: usize = 4096;
const CLIENTS: usize = 1000;
const BUDGET: Duration = Duration::from_secs(1);

#[test]
fn a_burst_of_1000_event_streams_does_not_delay_the_hosts_api_beyond_1_s_at_4096_hosts() {
    raise_nofile_limit();
    // 4,096 simulated agents from one address: no bound on new identities per peer.
    let master = Master::start_with(&["--new-hosts-per-minute", "0"]);
    let _load = Loadgen::start(
        &master,
        &[
            "--agents",
            &HOSTS.to_string(),
            "--interval",
            "1s",
            "--duration",
            "1h",
            "--id-base",
            "9000",
        ],
    );
    wait_for(Duration::from_secs(40), "4,096 hosts in the table", || {
        let h = master.json("/healthz")?;
        (u64_field(&h, "hosts") as usize >= HOSTS).then_some(())
    });

    // The prober: GET /api/v1/hosts back to back, every latency recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<(Duration, Duration)>::new()));
    let started = Instant::now();
    let prober = {
        let (stop, latencies, http) = (stop.clone(), latencies.clone(), master.http);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = http_get(http, "/api/v1/hosts", Duration::from_secs(10));
                let took = t.elapsed();
                // A timeout counts as its 10 s; a wrong answer fails the test.
                if let Ok((status, body)) = &r {
                    assert!(
                        *status == 200 && body.len() > HOSTS * 100,
                        "GET /api/v1/hosts: {status}, {} bytes",
                        body.len()
                    );
                }
                latencies.lock().unwrap().push((t - started, took));
            }
        })
    };
    // A few probes before the burst: the baseline.
    wait_for(Duration::from_secs(20), "3 probes before the burst", || {
        (latencies.lock().unwrap().len() >= 3).then_some(())
    });
    let burst_at = started.elapsed();

    // The burst: 1,000 clients, each on its own thread, connect at once and read until their
    // snapshot event starts (then hang up, so the test holds no backlog).
    let gate = Arc::new(std::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (gate, http) = (gate.clone(), master.http);
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || -> Result<usize, String> {
                    gate.wait();
                    let mut c = TcpStream::connect(http).map_err(|e| format!("{i}: {e}"))?;
                    c.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: burst\r\n\r\n")
                        .map_err(|e| format!("{i}: {e}"))?;
                    c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
                    let mut buf = vec![0u8; 64 * 1024];
                    let (mut tail, mut total, mut in_snapshot) = (Vec::new(), 0usize, false);
                    loop {
                        let n = c
                            .read(&mut buf)
                            .map_err(|e| format!("stream {i}: {e} after {total} bytes"))?;
                        if n == 0 {
                            return Err(format!("stream {i} closed after {total} bytes"));
                        }
                        total += n;
                        tail.extend_from_slice(&buf[..n]);
                        if !in_snapshot {
                            if let Some(p) = tail.windows(15).position(|w| w == b"event: snapshot")
                            {
                                in_snapshot = true;
                                tail.drain(..p + 15);
                            }
                        }
                        // Its snapshot started: this client hangs up (1,000 whole snapshots
                        // of 4,096 hosts are ~5 GB, more than this test can read in time).
                        if in_snapshot {
                            return Ok(total);
                        }
                        if tail.len() > 64 {
                            tail.drain(..tail.len() - 64);
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    let mut bytes = 0;
    for c in clients {
        bytes += c.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    let served = started.elapsed() - burst_at;
    // Keep probing a little past the last snapshot.
    let until = started.elapsed() + Duration::from_secs(2);
    wait_for(Duration::from_secs(10), "probes after the burst", || {
        latencies
            .lock()
            .unwrap()
            .last()
            .is_some_and(|(at, _)| *at >= until)
            .then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    let all = latencies.lock().unwrap().clone();
    let during: Vec<Duration> = all
        .iter()
        .filter(|(at, took)| *at + *took >= burst_at)
        .map(|(_, took)| *took)
        .collect();
    let worst = during.iter().max().copied().unwrap_or_default();
    let before_worst = all
        .iter()
        .filter(|(at, took)| *at + *took < burst_at)
        .map(|(_, t)| *t)
        .max()
        .unwrap_or_default();
    eprintln!(
        "sse burst: {CLIENTS} streams read {} MB of snapshots in {served:?}; \
         /api/v1/hosts worst {worst:?} over {} probes during/after the burst (before: worst {before_worst:?})",
        bytes / 1_000_000,
        during.len()
    );
    assert!(
        during.len() >= 3,
        "too few probes during the burst: {}",
        during.len()
    );
    assert!(
        worst < BUDGET,
        "GET /api/v1/hosts took {worst:?} during the burst (budget {BUDGET:?}); latencies: {during:?}"
    );
}
