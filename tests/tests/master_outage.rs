//! The master stopped for 30 s and started again: agents spool, reconnect and replay, and the
//! new master's history has every sample from before the stop to now, with no gap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use sentinel_tests::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn agents_replay_a_30s_master_outage_without_a_sequence_gap() {
    let mut master = Master::start();
    let mut agents: Vec<Agent> = ["r1", "r2"]
        .iter()
        .map(|h| Agent::start(&master, h, "1s"))
        .collect();
    wait_for(Duration::from_secs(5), "2 hosts streaming", || {
        let hosts = master.hosts()?;
        (hosts.len() == 2 && hosts.iter().all(|h| h["last_seq"].as_u64() >= Some(3))).then_some(())
    });

    let stopped_at_ms = now_ms();
    // The scenario is a 30 s outage; the pause is the scenario, not a guess at timing.
    master.restart_after(Duration::from_secs(30));
    let restarted_at_ms = now_ms();

    // Agents reconnect (backoff capped at 1 s in these tests) and replay what they spooled.
    let hosts = wait_for(
        Duration::from_secs(20),
        "both hosts replayed past the outage",
        || {
            let hosts = master.hosts()?;
            let caught_up = hosts.len() == 2
                && hosts
                    .iter()
                    .all(|h| h["status"] == "up" && h["last_seq"].as_u64() >= Some(35));
            caught_up.then_some(hosts)
        },
    );
    for h in &hosts {
        let id = h["id"].as_str().unwrap();
        let detail = master.host_detail(id).expect("host detail");
        assert!(
            u64_field(h, "samples_replayed") >= 25,
            "the outage was replayed in batches: {h}"
        );
        assert_eq!(u64_field(h, "samples_missing"), 0, "no gap: {h}");
        assert_eq!(
            u64_field(h, "samples_dropped"),
            0,
            "spool held the outage: {h}"
        );
        // The new table holds a contiguous run of sequence numbers ending at last_seq...
        let last = u64_field(h, "last_seq");
        let received = u64_field(h, "samples_received");
        let first = last + 1 - received;
        // ...and the history, keyed by the agent's sample time, covers the outage without holes.
        let points = detail["history"]["points"]
            .as_array()
            .expect("history points");
        let ts: Vec<u64> = points
            .iter()
            .map(|p| p["ts_ms"].as_u64().unwrap())
            .collect();
        assert_eq!(
            ts.len() as u64,
            received,
            "one history point per stored sample"
        );
        // The old master acknowledged everything up to the stop, so the new one starts with the
        // first sample taken after it (or earlier, if an ack was lost): within one interval.
        assert!(
            ts[0] <= stopped_at_ms + 1_200,
            "history of {} starts {} ms after the stop (first seq {first}): samples lost",
            h["hostname"],
            ts[0].saturating_sub(stopped_at_ms)
        );
        assert!(*ts.last().unwrap() >= restarted_at_ms);
        for w in ts.windows(2) {
            assert!(
                w[1] > w[0] && w[1] - w[0] < 1_600,
                "hole in {}'s history: {} -> {}",
                h["hostname"],
                w[0],
                w[1]
            );
        }
    }

    for a in &agents {
        a.signal(Signal::SIGTERM);
    }
    for a in &mut agents {
        a.wait_exit(Duration::from_secs(5));
    }
}
