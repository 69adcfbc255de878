//! The master's wall clock stepped +1 h and then -1 h while agents stream (libfaketime, its
//! offset read from a file changed mid-run): the supervisor must not take the step for a hung
//! collector (its watchdog and /healthz judge the heartbeat on CLOCK_BOOTTIME), so no child
//! restarts and no sample is lost.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sentinel_tests::*;
use serde_json::Value;

fn real_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn pids(master: &Master) -> (u64, u64) {
    let h = master.wait_healthy(Duration::from_secs(5));
    (u64_field(&h, "collector_pid"), u64_field(&h, "http_pid"))
}

fn seqs(master: &Master) -> Vec<u64> {
    ["step-a", "step-b"]
        .iter()
        .map(|n| {
            master
                .host(n)
                .map(|h| u64_field(&h, "last_seq"))
                .unwrap_or(0)
        })
        .collect()
}

/// Waits until both hosts stored `more` samples past `from` whose receive time (the master's
/// wall clock) is `offset_ms` off the real clock (within 10 min): the step reached the collector.
fn wait_stepped(master: &Master, from: &[u64], more: u64, offset_ms: i64, what: &str) {
    wait_for(Duration::from_secs(20), what, || {
        let hosts = master.hosts()?;
        let ok = ["step-a", "step-b"].iter().zip(from).all(|(n, &f)| {
            hosts.iter().any(|h: &Value| {
                h["hostname"] == *n
                    && u64_field(h, "last_seq") >= f + more
                    && (u64_field(h, "last_seen_ms") as i64 - real_now_ms() - offset_ms).abs()
                        < 600_000
            })
        });
        ok.then_some(())
    });
}

#[test]
fn wall_clock_steps_restart_no_child_and_lose_no_sample() {
    let Some(lib) = libfaketime().filter(|_| is_dynamic(&bin("sentinel-master"))) else {
        skip_unless_ci(
            "libfaketime missing or sentinel-master is static (LD_PRELOAD cannot step its clock)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let offset_file = dir.path().join("faketime");
    std::fs::write(&offset_file, "+0\n").unwrap();
    // The supervisor re-executes itself for its children: they inherit this environment.
    // Only the master gets it (removed again before any agent starts).
    let vars = [
        ("LD_PRELOAD", lib.display().to_string()),
        ("FAKETIME_TIMESTAMP_FILE", offset_file.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".into()),
        // The wall clock steps; CLOCK_MONOTONIC and CLOCK_BOOTTIME stay true (checked with a
        // C probe under libfaketime 0.9.10: without this, both step with the wall clock).
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
    ];
    for (k, v) in &vars {
        std::env::set_var(k, v);
    }
    let master = Master::start();
    for (k, _) in &vars {
        std::env::remove_var(k);
    }
    let supervisor = master.pid();
    let before = pids(&master);
    let _a = Agent::start(&master, "step-a", "200ms");
    let _b = Agent::start(&master, "step-b", "200ms");
    // The watchdog judges a collector only after it ran 10 s: stream 12 s first.
    wait_stepped(&master, &[0, 0], 60, 0, "both agents streaming for 12 s");

    // Watch the hosts' status through both steps: it must stay `up` (asserted at the end).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, http) = (stop.clone(), master.http);
        std::thread::spawn(move || {
            let (mut polls, mut not_up) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(v) = http_json(http, "/api/v1/hosts") {
                    polls += 1;
                    for h in v["hosts"].as_array().into_iter().flatten() {
                        if h["status"] != "up" {
                            not_up.push(format!("{} {}", h["hostname"], h["status"]));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (polls, not_up)
        })
    };
    std::fs::write(&offset_file, "+1h\n").unwrap();
    let from = seqs(&master);
    wait_stepped(&master, &from, 5, 3_600_000, "samples received at +1 h");
    // The old watchdog fired within one 20 ms tick of the step; give it a few seconds.
    let from = seqs(&master);
    wait_stepped(
        &master,
        &from,
        15,
        3_600_000,
        "3 more seconds of samples at +1 h",
    );
    assert_eq!(
        pids(&master),
        before,
        "a child restarted after the +1 h step"
    );

    std::fs::write(&offset_file, "-1h\n").unwrap();
    let from = seqs(&master);
    wait_stepped(&master, &from, 5, -3_600_000, "samples received at -1 h");
    let from = seqs(&master);
    wait_stepped(
        &master,
        &from,
        15,
        -3_600_000,
        "3 more seconds of samples at -1 h",
    );
    assert_eq!(
        pids(&master),
        before,
        "a child restarted after the -1 h step"
    );
    assert_eq!(master.pid(), supervisor);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (polls, not_up) = watcher.join().unwrap();
    // Host status is judged on the boot clock (the record's `last_seen_boot_ms`): no poll
    // through either step may see a host other than `up`.
    eprintln!(
        "clock step: {} of {polls} polls saw a host not up: {:?}",
        not_up.len(),
        not_up.iter().take(5).collect::<Vec<_>>()
    );
    assert!(polls > 50, "the watcher polled {polls} times");
    assert!(
        not_up.is_empty(),
        "{} of {polls} polls saw a host not up: {:?}",
        not_up.len(),
        not_up.iter().take(10).collect::<Vec<_>>()
    );
    let metrics = master.get("/metrics", Duration::from_secs(5)).unwrap().1;
    assert!(
        metrics.contains("\nsentinel_master_collector_restarts_total 0\n"),
        "the collector restarted: {}",
        metrics
            .lines()
            .find(|l| l.starts_with("sentinel_master_collector_restarts_total"))
            .unwrap_or("-")
    );
    for name in ["step-a", "step-b"] {
        let host = master.host(name).unwrap();
        assert_eq!(host["status"], "up", "{host}");
        assert_accounted(&host);
    }
    assert_eq!(
        master.log_lines_with(&["heartbeat stopped"]),
        0,
        "{}",
        master.log_text()
    );
}
