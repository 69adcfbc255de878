//! SIGKILL of the collector while agents stream, 20 times: the HTTP side never stalls, the
//! supervisor brings the collector back within 2 s, and afterwards every agent's sequence
//! numbers are complete in the table (nothing lost, nothing counted twice).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sentinel_tests::*;

const KILLS: usize = 20;

fn last_seqs(master: &Master) -> Option<Vec<u64>> {
    Some(
        master
            .hosts()?
            .iter()
            .map(|h| h["last_seq"].as_u64().unwrap_or(0))
            .collect(),
    )
}

#[test]
fn collector_sigkilled_20_times_loses_nothing_and_http_keeps_answering() {
    let master = Master::start();
    let mut agents: Vec<Agent> = ["a1", "a2", "a3"]
        .iter()
        .map(|h| Agent::start(&master, h, "100ms"))
        .collect();
    wait_for(Duration::from_secs(5), "3 hosts up", || {
        let hosts = master.hosts()?;
        (hosts.len() == 3 && hosts.iter().all(|h| h["status"] == "up")).then_some(())
    });

    // Reader: hammers the API for the whole loop and records every request's latency.
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Arc<Mutex<Vec<String>>> = Arc::default();
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let (stop, slow, requests, http) =
            (stop.clone(), slow.clone(), requests.clone(), master.http);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for path in ["/api/v1/hosts", "/healthz"] {
                    let t = Instant::now();
                    let result = http_get(http, path, Duration::from_secs(1));
                    let took = t.elapsed();
                    requests.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok((status, _))
                            if took < Duration::from_secs(1)
                                && (status == 200 || path == "/healthz") => {}
                        other => slow
                            .lock()
                            .unwrap()
                            .push(format!("{path} took {took:?}: {other:?}")),
                    }
                }
            }
        })
    };

    let mut recoveries = Vec::new();
    let mut rng = test_rng("collector kills");
    for i in 0..KILLS {
        let old = master.collector_pid().expect("collector pid in /healthz");
        // A random moment within a few sample periods.
        std::thread::sleep(Duration::from_millis(rng.u64(0..300)));
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        let t = Instant::now();
        let new = wait_for(Duration::from_secs(5), "a new collector", || {
            let h = http_json(master.http, "/healthz")?;
            let pid = h["collector_pid"].as_u64()? as u32;
            (pid != old && h["status"] == "ok" && process_alive(pid)).then_some(pid)
        });
        let back = t.elapsed();
        recoveries.push(back);
        assert!(
            back <= Duration::from_secs(2),
            "kill {i}: collector back after {back:?} (pid {old} -> {new})"
        );
        // Every agent reconnects to the new collector and streams before the next kill.
        let before = last_seqs(&master).unwrap();
        wait_for(
            Duration::from_secs(10),
            "every agent streaming again",
            || {
                let now = last_seqs(&master)?;
                (now.len() == before.len() && now.iter().zip(&before).all(|(n, b)| n > b))
                    .then_some(())
            },
        );
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let slow = slow.lock().unwrap();
    assert!(
        slow.is_empty(),
        "HTTP requests slower than 1 s or failed during the loop: {slow:#?}"
    );
    eprintln!(
        "{} HTTP requests all under 1 s; collector recovery times: {recoveries:?}",
        requests.load(Ordering::Relaxed)
    );

    // Stop the agents cleanly: each goodbye follows all of its samples on the connection.
    for a in &agents {
        a.signal(Signal::SIGTERM);
    }
    for a in &mut agents {
        assert!(a.wait_exit(Duration::from_secs(5)).success());
    }
    let hosts = wait_for(Duration::from_secs(5), "3 hosts stopped", || {
        let hosts = master.hosts()?;
        (hosts.len() == 3 && hosts.iter().all(|h| h["status"] == "stopped")).then_some(hosts)
    });
    for h in &hosts {
        assert_sequence_complete(h);
        assert!(
            u64_field(h, "reconnects") >= KILLS as u64,
            "each kill forced a reconnect: {h}"
        );
    }
}
