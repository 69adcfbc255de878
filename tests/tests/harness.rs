//! The harness itself: masters on port 0 with the bound addresses read back, restarts on
//! the same ports, a master that fails to start, and replayable random faults.

use std::time::{Duration, Instant};

use sentinel_tests::*;

fn addr_file_of(m: &Master) -> std::path::PathBuf {
    m.dir.path().join("addr")
}

#[test]
fn masters_bind_port_0_report_their_ports_and_keep_them_across_restarts() {
    let mut a = Master::start();
    let b = Master::start();
    for m in [&a, &b] {
        assert!(
            m.listen.port() != 0 && m.http.port() != 0,
            "ports read back"
        );
        assert_eq!(
            parse_addr_file(&std::fs::read_to_string(addr_file_of(m)).unwrap()),
            Some((m.listen, m.http)),
            "the address file names what the harness uses"
        );
        assert!(m.log_lines_with(&["sentinel-master listening", &m.listen.to_string()]) == 1);
    }
    let ports = [a.listen, a.http, b.listen, b.http];
    let mut unique = ports.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "every listener its own port: {ports:?}");

    // A planned restart and a SIGKILLed supervisor: the new one binds the same ports.
    let (listen, http) = (a.listen, a.http);
    a.restart_after(Duration::ZERO);
    assert_eq!((a.listen, a.http), (listen, http));
    a.kill_supervisor();
    a.respawn();
    assert_eq!((a.listen, a.http), (listen, http));
    assert_eq!(
        parse_addr_file(&std::fs::read_to_string(addr_file_of(&a)).unwrap()),
        Some((listen, http))
    );
    // A clean stop removes the file: nothing listens there any more.
    assert!(a.terminate().success());
    assert!(!addr_file_of(&a).exists());
}

#[test]
fn a_master_that_refuses_to_start_reports_no_addresses_and_is_not_waited_for() {
    let started = Instant::now();
    let mut m = Master::start_configured("capacity = 0\n", tempfile::tempdir().unwrap());
    assert!(
        started.elapsed() < ADDR_FILE_WAIT,
        "the harness noticed the exit instead of waiting out the deadline"
    );
    assert_eq!((m.listen.port(), m.http.port()), (0, 0));
    assert!(!addr_file_of(&m).exists());
    let status = wait_for(Duration::from_secs(5), "the master's exit", || {
        m.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(78), "EX_CONFIG: {}", m.log_text());
}

#[test]
fn the_address_file_parser_wants_both_lines() {
    let both = "agents=127.0.0.1:41234\nhttp=127.0.0.1:41235\n";
    assert_eq!(
        parse_addr_file(both),
        Some((
            "127.0.0.1:41234".parse().unwrap(),
            "127.0.0.1:41235".parse().unwrap()
        ))
    );
    assert_eq!(parse_addr_file("agents=127.0.0.1:41234\n"), None);
    assert_eq!(parse_addr_file("agents=x\nhttp=127.0.0.1:1\n"), None);
    assert_eq!(parse_addr_file(""), None);
}

#[test]
fn a_random_fault_replays_from_the_seed_it_printed() {
    // (Run with --test-threads 1, as CI does: this test sets the environment.)
    std::env::set_var(SEED_ENV, "1234");
    let first: Vec<u64> = {
        let mut rng = test_rng("replay");
        (0..8).map(|_| rng.u64(..)).collect()
    };
    let again: Vec<u64> = {
        let mut rng = test_rng("replay");
        (0..8).map(|_| rng.u64(..)).collect()
    };
    std::env::remove_var(SEED_ENV);
    assert_eq!(first, again, "the same seed, the same faults");
    let other: Vec<u64> = {
        let mut rng = test_rng("fresh");
        (0..8).map(|_| rng.u64(..)).collect()
    };
    assert_ne!(first, other, "without the variable, a fresh seed");
}
