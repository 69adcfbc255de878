//! A mixed-version fleet: release 0.1.0 (commit 280edf3) and the binaries under test, both
//! ways, a master upgraded from 0.1.0 on its snapshot (and after a 0.1.0 crash), and a
//! rollback to 0.1.0. Every
//! sample each agent produced is accounted for: its goodbye's `last_seq` is the table's, and
//! `samples_received == last_seq` with nothing missing, dropped or counted before the start.
//!
//! Needs `SENTINEL_COMPAT_BIN_DIR` (the ci step `compat` sets it from `cargo xtask
//! compat-bins`); without it every test prints SKIPPED and passes. Run one at a time.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use sentinel_tests::compat::*;
use sentinel_tests::{u64_field, wait_for};

/// 200 ms: several samples per second, so a restart falls in the middle of a stream.
const INTERVAL: &str = "200ms";
/// Samples each agent streams before the step under test (4 s at 200 ms).
const WARM_SEQ: u64 = 20;
/// Scenarios in this file, for the TOTAL line printed when the last one passes.
const SCENARIOS: u64 = 5;

static TALLY: Mutex<Tally> = Mutex::new(Tally {
    scenarios: 0,
    accounted: 0,
    lost: 0,
});

/// Holes the new master counted after a 0.1.0 crash (scenario 4; 0 when it imaged the segment).
static CRASH_HOLES: Mutex<u64> = Mutex::new(0);

/// Adds one scenario's hosts to the suite's totals and prints its line (and the TOTAL line when
/// every scenario has passed). `lost` = samples an agent produced that the table does not
/// hold; `holes` = of those, the ones the table counts as `samples_missing`.
fn record(name: &str, hosts: &[(Value, u64)]) {
    let accounted: u64 = hosts
        .iter()
        .map(|(h, _)| u64_field(h, "samples_received"))
        .sum();
    let lost: u64 = hosts
        .iter()
        .map(|(h, goodbye)| goodbye.saturating_sub(u64_field(h, "samples_received")))
        .sum();
    Tally {
        scenarios: 1,
        accounted,
        lost,
    }
    .print(name);
    let mut t = TALLY.lock().unwrap();
    t.scenarios += 1;
    t.accounted += accounted;
    t.lost += lost;
    if t.scenarios == SCENARIOS {
        println!(
            "compat-suite TOTAL: scenarios={} samples accounted={} samples lost={} \
             (of which counted as samples_missing after a 0.1.0 crash: {})",
            t.scenarios,
            t.accounted,
            t.lost,
            CRASH_HOLES.lock().unwrap()
        );
    }
}

/// Stops every agent (goodbye), waits until `master` shows each `stopped` at its goodbye's
/// `last_seq`, and returns (host, goodbye last_seq) pairs.
fn stop_all(master: &VersionedMaster, agents: &mut [VersionedAgent]) -> Vec<(Value, u64)> {
    let goodbyes: Vec<(String, u64)> = agents
        .iter_mut()
        .map(|a| (a.hostname.clone(), a.stop_with_goodbye()))
        .collect();
    let hosts = wait_for(
        Duration::from_secs(10),
        "every host stopped at its goodbye's last_seq",
        || {
            let hosts = master.hosts()?;
            let all = goodbyes.iter().all(|(name, seq)| {
                hosts.iter().any(|h| {
                    h["hostname"] == name.as_str()
                        && h["status"] == "stopped"
                        && h["last_seq"].as_u64() >= Some(*seq)
                })
            });
            all.then_some(hosts)
        },
    );
    assert_eq!(
        hosts.len(),
        goodbyes.len(),
        "one host per agent, none duplicated: {hosts:?}"
    );
    goodbyes
        .iter()
        .map(|(name, seq)| (by_name(&hosts, name).clone(), *seq))
        .collect()
}

fn start_agents(
    bins: &Bins,
    master: &VersionedMaster,
    home: &MasterHome,
    names: &[&str],
) -> Vec<VersionedAgent> {
    names
        .iter()
        .map(|n| VersionedAgent::start(bins, master.listen, &home.token_file, n, INTERVAL))
        .collect()
}

#[test]
fn release_agents_stream_to_the_new_master_with_every_sample_accounted() {
    let Some(old) = Bins::release_or_skip("release_agents_stream_to_the_new_master") else {
        return;
    };
    let home = MasterHome::new();
    let master = VersionedMaster::start(&Bins::current(), &home);
    let names = ["old-agent-1", "old-agent-2"];
    let mut agents = start_agents(&old, &master, &home, &names);
    wait_streaming(&master, &names, WARM_SEQ, Duration::from_secs(20));

    let hosts = stop_all(&master, &mut agents);
    record("0.1.0 agents -> new master", &hosts);
    for (h, goodbye) in &hosts {
        assert_eq!(
            h["agent_version"], "0.1.0",
            "the agent's hello says 0.1.0: {h}"
        );
        assert_unpinned_if_shown(h);
        // A 0.1.0 hello has no labels: an empty object, never a missing key.
        assert_eq!(h["labels"], Value::Object(Default::default()), "{h}");
        assert_run_complete(h, *goodbye);
        assert_eq!(u64_field(h, "reconnects"), 0, "one connection: {h}");
    }
}

#[test]
fn new_agents_stream_to_the_release_master_with_every_sample_accounted() {
    let Some(old) = Bins::release_or_skip("new_agents_stream_to_the_release_master") else {
        return;
    };
    let home = MasterHome::new();
    let master = VersionedMaster::start(&old, &home);
    let names = ["new-agent-1", "new-agent-2"];
    let new = Bins::current();
    // With labels: the optional hello key the 0.1.0 master must ignore (PROTOCOL.md 1.2).
    let mut agents: Vec<VersionedAgent> = names
        .iter()
        .map(|n| {
            VersionedAgent::start_with_config(
                &new,
                master.listen,
                &home.token_file,
                n,
                INTERVAL,
                "labels = { role = \"compat\", dc = \"eu1\" }\n",
            )
        })
        .collect();
    wait_streaming(&master, &names, WARM_SEQ, Duration::from_secs(20));

    let hosts = stop_all(&master, &mut agents);
    record("new agents -> 0.1.0 master", &hosts);
    for (h, goodbye) in &hosts {
        assert_run_complete(h, *goodbye);
        assert_eq!(u64_field(h, "reconnects"), 0, "one connection: {h}");
    }
    let log = master.log_text();
    assert!(
        !log.contains("refus"),
        "the 0.1.0 master refused something from the new agents:\n{log}"
    );
}

/// What must survive a master upgrade for one host.
fn identity(h: &Value) -> (Value, Value, Value, Value) {
    (
        h["id"].clone(),
        h["hostname"].clone(),
        h["run_id"].clone(),
        h["first_seen_ms"].clone(),
    )
}

/// Each host of `before` is in `after` with its identity, run and first_seen, and counters
/// that did not go backwards.
fn assert_hosts_kept(before: &[Value], after: &[Value], what: &str) {
    assert_eq!(
        before.len(),
        after.len(),
        "{what}: host count changed: {before:?} -> {after:?}"
    );
    for b in before {
        let a = by_name(after, b["hostname"].as_str().unwrap());
        assert_eq!(identity(b), identity(a), "{what}: host changed: {b} -> {a}");
        for key in ["samples_received", "last_seq"] {
            assert!(
                u64_field(a, key) >= u64_field(b, key),
                "{what}: {key} went backwards: {b} -> {a}"
            );
        }
        assert_eq!(u64_field(a, "samples_before_start"), 0, "{what}: {a}");
        assert_eq!(u64_field(a, "samples_missing"), 0, "{what}: {a}");
    }
}

#[test]
fn a_release_master_upgraded_on_its_snapshot_keeps_every_host_and_sample() {
    let Some(old) = Bins::release_or_skip("a_release_master_upgraded_on_its_snapshot") else {
        return;
    };
    let new = Bins::current();
    let home = MasterHome::new();
    let mut master = VersionedMaster::start(&old, &home);
    // The fleet mid-upgrade: a 0.1.0 agent and a new one.
    let mut agents = start_agents(&old, &master, &home, &["fleet-old"]);
    agents.extend(start_agents(&new, &master, &home, &["fleet-new"]));
    let names = ["fleet-old", "fleet-new"];
    let before = wait_streaming(&master, &names, WARM_SEQ, Duration::from_secs(20));

    // SIGTERM: the 0.1.0 master writes its final snapshot and removes its segment.
    let status = master.terminate();
    assert!(status.success(), "0.1.0 master exit: {status}");
    assert!(
        home.snapshot_path().is_file(),
        "no snapshot at {}",
        home.snapshot_path().display()
    );
    assert!(!home.segment_path().exists(), "segment left after SIGTERM");
    let (listen, http) = (master.listen, master.http);
    drop(master);

    // The new master on the same state dir, segment name and ports (the agents spool meanwhile).
    let master = VersionedMaster::start_on(&new, &home, listen, http);
    let restored = master.hosts().expect("hosts after the upgrade");
    assert_hosts_kept(&before, &restored, "restored from the 0.1.0 snapshot");
    let log = master.log_text();
    assert!(
        log.contains("restored the table"),
        "the new master did not restore the 0.1.0 snapshot:\n{log}"
    );

    let resumed = names.map(|n| u64_field(by_name(&restored, n), "last_seq") + WARM_SEQ);
    wait_for(
        Duration::from_secs(20),
        "both agents reconnected and streaming past the upgrade",
        || {
            let hosts = master.hosts()?;
            names
                .iter()
                .zip(resumed)
                .all(|(n, seq)| {
                    hosts.iter().any(|h| {
                        h["hostname"] == *n
                            && h["connected"] == true
                            && h["last_seq"].as_u64() >= Some(seq)
                    })
                })
                .then_some(())
        },
    );

    let hosts = stop_all(&master, &mut agents);
    record("0.1.0 master -> new master (snapshot)", &hosts);
    let after: Vec<Value> = hosts.iter().map(|(h, _)| h.clone()).collect();
    assert_hosts_kept(&before, &after, "after the upgrade");
    for (h, goodbye) in &hosts {
        assert_run_complete(h, *goodbye);
        assert!(u64_field(h, "reconnects") >= 1, "reconnected once: {h}");
    }
    assert_unpinned_if_shown(by_name(&after, "fleet-old"));
}

#[test]
fn a_new_master_after_a_release_master_crash_images_its_segment_and_keeps_every_sample() {
    let Some(old) = Bins::release_or_skip("a_new_master_after_a_release_master_crash") else {
        return;
    };
    let new = Bins::current();
    let home = MasterHome::new();
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    // 1 s snapshots bound what the periodic snapshot can miss (see the hole bound below).
    let flags = ["--snapshot-interval", "1s"];
    let mut master = VersionedMaster::start_with(&old, &home, any, any, &flags);
    let names = ["crash-1", "crash-2"];
    let mut agents = start_agents(&old, &master, &home, &names);
    let before = wait_streaming(&master, &names, WARM_SEQ, Duration::from_secs(20));
    // At least one periodic snapshot holds both hosts.
    wait_for(Duration::from_secs(5), "a periodic snapshot", || {
        home.snapshot_path().is_file().then_some(())
    });

    master.kill();
    assert!(
        home.segment_path().exists(),
        "SIGKILL left no stale segment at {}",
        home.segment_path().display()
    );
    let (listen, http) = (master.listen, master.http);
    drop(master);

    let master = VersionedMaster::start_with(&new, &home, listen, http, &flags);
    let log = master.log_text();
    // `restored the table from="the stale segment"` or `from=<the snapshot file>`.
    let restored_line = log
        .lines()
        .find(|l| l.contains("restored the table"))
        .unwrap_or_else(|| panic!("the new master restored nothing after the 0.1.0 crash:\n{log}"));
    let imaged = restored_line.contains("stale segment");
    // The new master reads a 0.1.0 (layout 2) segment with its own slot geometry
    // (master/src/table/older.rs): the stale segment, not the older snapshot file.
    assert!(
        imaged && log.contains("layout=2"),
        "the new master imaged the 0.1.0 segment: {restored_line}\n{log}"
    );
    let restored = master.hosts().expect("hosts after the crash");
    assert_eq!(restored.len(), before.len(), "hosts lost: {restored:?}");
    for b in &before {
        let a = by_name(&restored, b["hostname"].as_str().unwrap());
        assert_eq!(identity(b), identity(a), "host changed: {b} -> {a}");
    }

    let resumed = names.map(|n| u64_field(by_name(&restored, n), "last_seq") + WARM_SEQ);
    wait_for(
        Duration::from_secs(20),
        "both agents reconnected and streaming past the crash",
        || {
            let hosts = master.hosts()?;
            names
                .iter()
                .zip(resumed)
                .all(|(n, seq)| {
                    hosts.iter().any(|h| {
                        h["hostname"] == *n
                            && h["connected"] == true
                            && h["last_seq"].as_u64() >= Some(seq)
                    })
                })
                .then_some(())
        },
    );

    let hosts = stop_all(&master, &mut agents);
    let holes: u64 = hosts
        .iter()
        .map(|(h, _)| u64_field(h, "samples_missing"))
        .sum();
    *CRASH_HOLES.lock().unwrap() += holes;
    println!(
        "compat-suite 0.1.0 crash -> new master: restored from {}, counted holes={holes}",
        if imaged {
            "the stale segment"
        } else {
            "the snapshot file"
        }
    );
    record("0.1.0 crash -> new master", &hosts);
    for (h, goodbye) in &hosts {
        let name = &h["hostname"];
        assert_eq!(h["status"], "stopped", "{name}: {h}");
        // Nothing uncounted: every sample is received, dropped, or a counted hole.
        let last = assert_accounted_with_holes(h);
        assert_eq!(last, *goodbye, "{name}: goodbye {goodbye} != last_seq: {h}");
        assert_eq!(u64_field(h, "samples_before_start"), 0, "{name}: {h}");
        assert_eq!(u64_field(h, "samples_dropped"), 0, "{name}: {h}");
        assert_eq!(
            u64_field(h, "samples_missing"),
            0,
            "{name}: the stale segment holds every acked sample: {h}"
        );
    }
}

#[test]
fn a_rollback_to_the_release_master_accounts_for_every_sample() {
    let Some(old) = Bins::release_or_skip("a_rollback_to_the_release_master") else {
        return;
    };
    let new = Bins::current();
    let home = MasterHome::new();
    let mut master = VersionedMaster::start(&new, &home);
    let mut agents = start_agents(&old, &master, &home, &["back-old"]);
    agents.extend(start_agents(&new, &master, &home, &["back-new"]));
    let names = ["back-old", "back-new"];
    let before = wait_streaming(&master, &names, WARM_SEQ, Duration::from_secs(20));

    let status = master.terminate();
    assert!(status.success(), "new master exit: {status}");
    let (listen, http) = (master.listen, master.http);
    drop(master);

    // 0.1.0 on the new master's state: it restores the snapshot if it reads that layout, else
    // refuses it (kept as *.rejected) and starts empty; either way it must start.
    let master = VersionedMaster::start_on(&old, &home, listen, http);
    let log = master.log_text();
    let refused = log.contains("refusing the table snapshot");
    assert!(
        refused || log.contains("restored the table"),
        "the 0.1.0 master neither restored nor refused the snapshot:\n{log}"
    );
    let resumed = names.map(|n| u64_field(by_name(&before, n), "last_seq") + WARM_SEQ);
    wait_for(
        Duration::from_secs(20),
        "both agents streaming to the 0.1.0 master after the rollback",
        || {
            let hosts = master.hosts()?;
            names
                .iter()
                .zip(resumed)
                .all(|(n, seq)| {
                    hosts.iter().any(|h| {
                        h["hostname"] == *n
                            && h["connected"] == true
                            && h["last_seq"].as_u64() >= Some(seq)
                    })
                })
                .then_some(())
        },
    );

    let hosts = stop_all(&master, &mut agents);
    let before_start: u64 = hosts
        .iter()
        .map(|(h, _)| u64_field(h, "samples_before_start"))
        .sum();
    println!(
        "compat-suite new master -> 0.1.0 master (rollback): snapshot {}, \
         samples_before_start={before_start}",
        if refused { "refused" } else { "restored" }
    );
    // What the 0.1.0 table does not hold but counts as held by an earlier master is not lost.
    let held: Vec<(Value, u64)> = hosts
        .iter()
        .map(|(h, g)| (h.clone(), g - u64_field(h, "samples_before_start").min(*g)))
        .collect();
    record("new master -> 0.1.0 master (rollback)", &held);
    for (h, goodbye) in &hosts {
        let name = &h["hostname"];
        assert_eq!(h["status"], "stopped", "{name}: {h}");
        let last = sentinel_tests::assert_accounted(h);
        assert_eq!(last, *goodbye, "{name}: goodbye {goodbye} != last_seq: {h}");
        assert_eq!(u64_field(h, "samples_dropped"), 0, "{name}: {h}");
        let b = by_name(&before, name.as_str().unwrap());
        if refused {
            // An empty table: the run's prefix the new master acked is before its start.
            assert!(
                u64_field(h, "samples_before_start") >= u64_field(b, "last_seq"),
                "{name}: the prefix held by the new master is not accounted: {h}"
            );
        } else {
            assert_eq!(identity(b), identity(h), "{name}: host changed: {b} -> {h}");
            assert_eq!(u64_field(h, "samples_before_start"), 0, "{name}: {h}");
        }
    }
}
