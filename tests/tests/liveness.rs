//! Liveness comes from the master's receive time: a SIGKILLed agent goes `stale` then `down`;
//! an agent stopped with SIGTERM says goodbye and goes `stopped` at once.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sentinel_tests::*;

#[test]
fn sigkilled_agent_goes_stale_then_down_and_sigtermed_agent_goes_stopped() {
    let master = Master::start();
    // 200 ms cadence: stale after 3 intervals (0.6 s), down after 10 (2 s).
    let mut killed = Agent::start(&master, "killed", "200ms");
    let mut stopped = Agent::start(&master, "stopped", "200ms");
    let _witness = Agent::start(&master, "witness", "200ms");
    wait_for(Duration::from_secs(5), "3 hosts up and streaming", || {
        let hosts = master.hosts()?;
        let streaming =
            |h: &serde_json::Value| h["status"] == "up" && h["last_seq"].as_u64() >= Some(2);
        (hosts.len() == 3 && hosts.iter().all(streaming)).then_some(())
    });

    killed.signal(Signal::SIGKILL);
    stopped.signal(Signal::SIGTERM);
    let t0 = Instant::now();
    let exit = stopped.wait_exit(Duration::from_secs(5));
    assert!(exit.success(), "agent exits 0 on SIGTERM: {exit:?}");
    killed.wait_exit(Duration::from_secs(5));

    wait_for(Duration::from_secs(2), "SIGTERMed agent `stopped`", || {
        (master.host("stopped")?["status"] == "stopped").then_some(())
    });
    let stale_at = wait_for(Duration::from_secs(3), "SIGKILLed agent `stale`", || {
        (master.host("killed")?["status"] == "stale").then(|| t0.elapsed())
    });
    let down_at = wait_for(Duration::from_secs(5), "SIGKILLed agent `down`", || {
        (master.host("killed")?["status"] == "down").then(|| t0.elapsed())
    });
    eprintln!("stale after {stale_at:?}, down after {down_at:?}");
    assert!(down_at > stale_at);
    // The stopped host stays stopped (not stale/down) and the witness stays up throughout.
    assert_eq!(master.host("stopped").unwrap()["status"], "stopped");
    assert_eq!(master.host("witness").unwrap()["status"], "up");
    // A goodbye arrives after every sample on its connection: the stopped run is complete.
    assert_sequence_complete(&master.host("stopped").unwrap());
}
