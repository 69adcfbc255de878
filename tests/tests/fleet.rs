//! A master and three agents on loopback: the fleet appears, the master's process shape is
//! exactly supervisor + collector + http, and SIGTERM leaves nothing behind.

use std::time::{Duration, Instant};

use sentinel_tests::*;

#[test]
fn three_agents_are_up_within_3s_with_real_memory_cpu_and_load() {
    let master = Master::start();
    let started = Instant::now();
    let _agents: Vec<Agent> = ["alpha", "bravo", "charlie"]
        .iter()
        .map(|h| Agent::start(&master, h, "1s"))
        .collect();

    // A host is up from its handshake on; its first sample follows a moment later, so wait
    // for that too before looking at the figures (polling between the two failed 1 run in 3).
    let hosts = wait_for(Duration::from_secs(3), "3 hosts up with a sample", || {
        let hosts = master.hosts()?;
        (hosts.len() == 3
            && hosts
                .iter()
                .all(|h| h["status"] == "up" && h["samples_received"].as_u64() >= Some(1)))
        .then_some(hosts)
    });
    eprintln!("all 3 hosts up after {:?}", started.elapsed());

    let mut names: Vec<&str> = hosts
        .iter()
        .map(|h| h["hostname"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);
    let mem_total = mem_total_bytes();
    let cores = online_cpus() as f64;
    for h in &hosts {
        assert_eq!(
            u64_field(h, "mem_total_bytes"),
            mem_total,
            "MemTotal of {h}"
        );
        let avail = u64_field(h, "mem_available_bytes");
        assert!(
            avail > 0 && avail <= mem_total,
            "mem_available_bytes plausible: {h}"
        );
        let cpu = h["cpu_percent"].as_f64().expect("cpu_percent");
        assert!((0.0..=100.0).contains(&cpu), "cpu_percent plausible: {h}");
        let load1 = h["load1"].as_f64().expect("load1");
        assert!(load1 >= 0.0 && load1 < 50.0 * cores, "load1 plausible: {h}");
        assert!(u64_field(h, "samples_received") >= 1);
        assert!(
            h["id"].as_str().is_some_and(|id| id.len() == 32),
            "id is the agent id: {h}"
        );
        assert!(u64_field(h, "last_seen_ms") > 0);
    }
    let ids: std::collections::HashSet<&str> =
        hosts.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "distinct hostnames give distinct identities");

    // The per-host view carries the full latest sample and its history.
    let id = hosts[0]["id"].as_str().unwrap();
    let detail = wait_for(Duration::from_secs(5), "host detail with history", || {
        let d = master.host_detail(id)?;
        (!d["history"]["points"].as_array()?.is_empty()).then_some(d)
    });
    assert_eq!(u64_field(&detail["sample"], "mem_total_bytes"), mem_total);
    assert!(detail["sample"]["cpu_cores_percent"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));

    // The dashboard page is served.
    let (status, body) = http_get(master.http, "/", Duration::from_secs(2)).unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("<html")
            || body.contains("<!doctype html")
            || body.contains("<!DOCTYPE html")
    );
}

#[test]
fn master_is_three_processes_with_a_segment_and_sigterm_leaves_nothing() {
    let mut master = Master::start();
    let exe = bin("sentinel-master");
    let pids = wait_for(
        Duration::from_secs(5),
        "supervisor + collector + http",
        || {
            let pids = process_tree_running(master.pid(), &exe);
            (pids.len() == 3).then_some(pids)
        },
    );
    assert!(pids.contains(&master.pid()));
    let health = master.wait_healthy(Duration::from_secs(5));
    let roles = [
        u64_field(&health, "supervisor_pid"),
        u64_field(&health, "collector_pid"),
        u64_field(&health, "http_pid"),
    ];
    let mut role_pids: Vec<u32> = roles.iter().map(|&p| p as u32).collect();
    role_pids.sort();
    assert_eq!(role_pids, pids, "/healthz names the three processes");
    for pid in &pids[..] {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .replace('\0', " ");
        if *pid != master.pid() {
            assert!(
                cmdline.contains("--role"),
                "a child shows its role in ps: {cmdline}"
            );
        }
    }
    assert!(
        master.segment_path().exists(),
        "segment {} exists",
        master.segment_path().display()
    );

    // Hold the process tree still (no accidental restarts) and stop it.
    let status = master.terminate();
    assert!(
        status.success(),
        "supervisor exits 0 on SIGTERM: {status:?}"
    );
    wait_for(Duration::from_secs(5), "all master processes gone", || {
        pids.iter().all(|&p| !process_alive(p)).then_some(())
    });
    assert!(
        !master.segment_path().exists(),
        "segment unlinked after SIGTERM"
    );
}
