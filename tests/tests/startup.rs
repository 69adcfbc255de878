//! Start-up of the master against a snapshot path that is not a regular file, and SIGTERM at
//! any moment of start-up.

use std::ffi::CString;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sentinel_tests::*;

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc_mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

/// A master that ran once (so its state directory exists), stopped.
fn stopped_master() -> Master {
    let mut m = Master::start();
    m.terminate();
    m
}

#[test]
fn a_fifo_at_the_snapshot_path_is_refused_and_the_master_starts_empty() {
    let mut m = stopped_master();
    let snap = m.snapshot_path();
    mkfifo(&snap);
    // Before the fix the start blocked forever opening the FIFO: never healthy.
    m.respawn();
    assert_eq!(m.hosts().unwrap().len(), 0);
    assert_eq!(
        m.log_lines_with(&["refusing the table snapshot", "not a regular file (a FIFO)"]),
        1,
        "{}",
        m.log_text()
    );
    let rejected = snap.with_extension("snapshot.rejected");
    let kind = std::fs::symlink_metadata(&rejected)
        .unwrap_or_else(|e| panic!("{} not kept: {e}", rejected.display()))
        .file_type();
    assert!(kind.is_fifo(), "{kind:?}");
    // The master works: an agent streams to it.
    let _a = Agent::start(&m, "after-fifo", "200ms");
    wait_for(Duration::from_secs(10), "the agent's host", || {
        m.host("after-fifo")
    });
}

#[test]
fn sigterm_at_any_moment_of_start_up_exits_promptly_and_leaves_no_segment() {
    let mut m = stopped_master();
    let snap = m.snapshot_path();
    // Delays after spawning: before the signal handlers, while the token is read and the
    // ports bound, while the segment is created, while the snapshot (a FIFO: the step that
    // used to block) is read, and after the children started.
    for delay_ms in [0u64, 1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 150, 300] {
        mkfifo(&snap);
        m.respawn_no_wait();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let sent = Instant::now();
        let _ = kill(Pid::from_raw(m.pid() as i32), Signal::SIGTERM);
        let exited = wait_for(
            Duration::from_secs(10),
            &format!("the master SIGTERMed {delay_ms} ms into its start to exit"),
            || m.child.try_wait().unwrap(),
        );
        let took = sent.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "SIGTERM {delay_ms} ms into the start: exit took {took:?}\n{}",
            m.log_text()
        );
        assert!(
            exited.success() || exited.code().is_none(),
            "{exited:?}\n{}",
            m.log_text()
        );
        assert!(
            !m.segment_path().exists(),
            "SIGTERM {delay_ms} ms into the start left {} behind\n{}",
            m.segment_path().display(),
            m.log_text()
        );
        eprintln!("SIGTERM {delay_ms} ms into the start: exited in {took:?} ({exited:?})");
    }
}
