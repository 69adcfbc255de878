//! The supervisor: binds both listeners, creates the table, runs the collector and the http
//! process as children (its own binary with `--role`), restarts a child that dies, and on
//! SIGTERM/SIGINT stops both and removes the segment.
//!
//! It is deliberately single-threaded and synchronous: PR_SET_PDEATHSIG fires when the
//! *thread* that forked a child exits, so every child is forked from the main thread.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{Config, Role};
use crate::segment::{boot_ms, Segment};
use crate::snapshot::Snapshots;

/// Environment variable carrying the inherited listening socket's fd number to a child.
pub const LISTEN_FD_ENV: &str = "SENTINEL_LISTEN_FD";
/// Environment variable carrying the supervisor's pid, checked by the child at start.
pub const SUPERVISOR_PID_ENV: &str = "SENTINEL_SUPERVISOR_PID";

/// A child that ran at least this long before dying is restarted quickly.
const HEALTHY_RUN: Duration = Duration::from_secs(1);
/// Restart delay after a healthy run (or after an external SIGKILL/SIGTERM).
const QUICK_RESTART: Duration = Duration::from_millis(100);
/// Cap of the exponential backoff for a child that keeps crashing on start.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long children get to exit after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A collector whose heartbeat is this old is considered hung and killed.
const HUNG_COLLECTOR: Duration = Duration::from_secs(10);
/// Main-loop tick: reaping, restarts and signals are noticed within this.
const TICK: Duration = Duration::from_millis(20);

static SIGNALLED: AtomicI32 = AtomicI32::new(0);
/// False until the supervisor is about to create the segment: before that nothing needs
/// cleaning up, so a signal ends the process at once (whatever start-up step it is waiting
/// in, e.g. reading a token file that is a FIFO). From then on a signal only sets
/// [`SIGNALLED`] and every start-up step checks it.
static NEEDS_CLEANUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
    if !NEEDS_CLEANUP.load(Ordering::SeqCst) {
        const MSG: &[u8] = b"sentinel-master: stopped by a signal during start-up\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(0);
        }
    }
}

/// True once SIGTERM or SIGINT arrived: start-up steps that can take long (the snapshot
/// read, the wait for a dead master's children) give up when it is.
pub fn stopping() -> bool {
    SIGNALLED.load(Ordering::SeqCst) != 0
}

fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

struct Child {
    role: Role,
    listener: TcpListener,
    pid: Option<i32>,
    started: Instant,
    next_start: Instant,
    backoff: Duration,
}

pub fn run(config: Config) -> anyhow::Result<()> {
    install_signal_handlers();
    raise_nofile_limit();
    let token = config.token()?;
    if token.is_empty() {
        tracing::warn!("no token_file configured: agents authenticate with the empty token; anyone who can reach the listener can report hosts");
    }
    let agents = bind(&config.listen, "listen")?;
    let http = bind(&config.http, "http")?;
    // Created once and kept open for the supervisor's life: every collector and http process
    // (restarts included) gets the same channel (control.rs says why it cannot wedge).
    let control = crate::control::Pair::new().context("cannot create the control channel")?;
    NEEDS_CLEANUP.store(true, Ordering::SeqCst);
    let (segment, salvaged) =
        Segment::create(&config.shm_name, config.capacity, config.history_points)?;
    // Before any child runs: nobody else has the new table yet.
    let mut snapshots = Snapshots::new(
        &config.state_dir,
        &config.shm_name,
        config.snapshot_interval,
    );
    snapshots.restore(segment.table(), salvaged);
    if stopping() {
        // No child ran: the snapshot file on disk is still the freshest state (a salvaged
        // image was saved as it before the restore), so it is not overwritten.
        tracing::info!("stop requested during start-up; removing the segment");
        drop(segment); // unlinks /dev/shm/NAME
        return Ok(());
    }
    let (agent_addr, http_addr) = (agents.local_addr()?, http.local_addr()?);
    tracing::info!(
        agent_addr = %agent_addr,
        http_addr = %http_addr,
        segment = %format!("/dev/shm/{}", config.shm_name),
        capacity = config.capacity,
        history_points = config.history_points,
        "sentinel-master listening"
    );
    if let Some(path) = &config.addr_file {
        write_addr_file(path, agent_addr, http_addr)?;
    }
    let now = Instant::now();
    let mut children = [
        Child {
            role: Role::Collector,
            listener: agents,
            pid: None,
            started: now,
            next_start: now,
            backoff: QUICK_RESTART,
        },
        Child {
            role: Role::Http,
            listener: http,
            pid: None,
            started: now,
            next_start: now,
            backoff: QUICK_RESTART,
        },
    ];
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();

    loop {
        let sig = SIGNALLED.load(Ordering::SeqCst);
        if sig != 0 {
            tracing::info!(signal = sig, "stopping: terminating children");
            stop_children(&mut children);
            // The children are gone: this is the table's final state.
            let _ = snapshots.write(segment.table(), "shutdown");
            drop(segment); // unlinks /dev/shm/NAME
            if let Some(path) = &config.addr_file {
                // Nothing listens there any more.
                let _ = std::fs::remove_file(path);
            }
            tracing::info!("stopped");
            return Ok(());
        }
        for child in children.iter_mut() {
            reap(child, &segment);
            if child.pid.is_none() && Instant::now() >= child.next_start {
                if let Err(e) = start(child, &segment, &control, &exe, &args) {
                    tracing::error!(role = ?child.role, error = %format!("{e:#}"), "cannot start child; retrying");
                    child.next_start = Instant::now() + MAX_BACKOFF;
                }
            }
        }
        watchdog(&children[0], &segment);
        snapshots.tick(segment.table());
        std::thread::sleep(TICK);
    }
}

/// Raises the soft limit on open files to the hard limit; both children inherit it. Every agent
/// connection (and every slowloris socket, until the handshake timeout closes it) holds a file
/// descriptor, and systemd's default soft limit (1024) is far below `max_connections`.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on this process with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open files limit");
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), soft = old, hard = lim.rlim_max, "cannot raise the open files limit");
            return;
        }
    }
    tracing::info!(
        limit = lim.rlim_cur,
        "open files limit (soft raised to hard; bounds concurrent connections)"
    );
}

/// Accept backlog of both listeners (the kernel caps it at net.core.somaxconn). std listens
/// with 128: a burst of connections (a fleet reconnecting after a master restart, or a flood)
/// overflows that, and the SYNs the kernel drops are retried only after 1 s, 3 s, 7 s...
const LISTEN_BACKLOG: libc::c_int = 4096;

fn bind(addr: &str, key: &str) -> anyhow::Result<TcpListener> {
    // std sets SO_REUSEADDR, so a restarted master can rebind while old connections linger.
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (key `{key}`)"))?;
    // SAFETY: listen() again on our own listening socket only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), addr, "cannot raise the listen backlog");
    }
    Ok(listener)
}

/// Writes the bound addresses for whoever started this master on port 0 (`--addr-file`):
/// `agents=ADDR` and `http=ADDR` lines, through a temp file and a rename, so a reader never
/// sees half a file.
fn write_addr_file(
    path: &std::path::Path,
    agents: std::net::SocketAddr,
    http: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, format!("agents={agents}\nhttp={http}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write the address file {}", path.display()))?;
    tracing::info!(path = %path.display(), "listening addresses written");
    Ok(())
}

fn role_arg(role: Role) -> &'static str {
    match role {
        Role::Collector => "collector",
        Role::Http => "http",
    }
}

fn start(
    child: &mut Child,
    segment: &Segment,
    control: &crate::control::Pair,
    exe: &std::path::Path,
    args: &[std::ffi::OsString],
) -> anyhow::Result<()> {
    let table = segment.table();
    let header = table.header();
    if child.role == Role::Collector {
        // The previous collector is reaped: nobody holds the lock or writes a slot now.
        table
            .reinit_lock()
            .context("cannot re-initialise the table lock")?;
        for (slot, applied) in table.repair() {
            tracing::warn!(
                slot,
                journal_applied = applied,
                "repaired a slot a dead collector left mid-write"
            );
        }
        header.generation.fetch_add(1, Ordering::AcqRel);
    }
    let fd = child.listener.as_raw_fd();
    let control_fd = match child.role {
        Role::Collector => control.collector_fd(),
        Role::Http => control.http_fd(),
    };
    let parent = std::process::id() as i32;
    let mut cmd = Command::new(exe);
    cmd.arg("--role").arg(role_arg(child.role)).args(args);
    cmd.env(LISTEN_FD_ENV, fd.to_string())
        .env(SUPERVISOR_PID_ENV, parent.to_string())
        .env(crate::control::CONTROL_FD_ENV, control_fd.to_string());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(0); // the supervisor died before prctl took effect
            }
            // Let exactly this listener (and the control end below) survive exec.
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // And this child's end of the control channel.
            if libc::fcntl(control_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = cmd
        .spawn()
        .with_context(|| format!("cannot spawn {}", exe.display()))?;
    let pid = spawned.id() as i32;
    // The Child handle is not needed: we reap with waitpid ourselves.
    std::mem::forget(spawned);
    child.pid = Some(pid);
    child.started = Instant::now();
    match child.role {
        Role::Collector => header.collector_pid.store(pid as u64, Ordering::Release),
        Role::Http => header.http_pid.store(pid as u64, Ordering::Release),
    }
    tracing::info!(role = role_arg(child.role), pid, "child started");
    Ok(())
}

/// Notices a dead child and schedules its restart.
fn reap(child: &mut Child, segment: &Segment) {
    let Some(pid) = child.pid else { return };
    let mut status = 0;
    // SAFETY: plain waitpid on our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r != pid {
        return;
    }
    child.pid = None;
    let header = segment.table().header();
    match child.role {
        Role::Collector => header.collector_pid.store(0, Ordering::Release),
        Role::Http => header.http_pid.store(0, Ordering::Release),
    }
    let ran = child.started.elapsed();
    let killed_from_outside = libc::WIFSIGNALED(status)
        && matches!(libc::WTERMSIG(status), libc::SIGKILL | libc::SIGTERM);
    // An external kill is not a crash loop: restart quickly however short the run was, so an
    // operator (or a test) killing the collector repeatedly never waits for a backoff.
    child.backoff = if ran >= HEALTHY_RUN || killed_from_outside {
        QUICK_RESTART
    } else {
        (child.backoff * 2).min(MAX_BACKOFF)
    };
    child.next_start = Instant::now() + child.backoff;
    let how = if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    };
    tracing::warn!(
        role = role_arg(child.role),
        pid,
        how = %how,
        ran_ms = ran.as_millis() as u64,
        restart_in_ms = child.backoff.as_millis() as u64,
        "child died; restarting"
    );
}

/// Kills a collector whose heartbeat stopped although the process lives (e.g. a wedged runtime).
fn watchdog(collector: &Child, segment: &Segment) {
    let Some(pid) = collector.pid else { return };
    if collector.started.elapsed() < HUNG_COLLECTOR {
        return;
    }
    let beat = segment
        .table()
        .header()
        .collector_heartbeat_boot_ms
        .load(Ordering::Acquire);
    if boot_ms().saturating_sub(beat) > HUNG_COLLECTOR.as_millis() as u64 {
        tracing::error!(pid, "collector heartbeat stopped; killing it");
        // SAFETY: signal to our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn stop_children(children: &mut [Child]) {
    for c in children.iter() {
        if let Some(pid) = c.pid {
            // SAFETY: signal to our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while children.iter().any(|c| c.pid.is_some()) {
        for c in children.iter_mut() {
            if let Some(pid) = c.pid {
                let mut status = 0;
                // SAFETY: waitpid on our own child.
                if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                    c.pid = None;
                } else if Instant::now() >= deadline {
                    tracing::warn!(pid, "child did not stop in time; killing it");
                    // SAFETY: as above; then a blocking wait for that one child.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, &mut status, 0);
                    }
                    c.pid = None;
                }
            }
        }
        std::thread::sleep(TICK);
    }
}

/// In a child: the inherited listener, and a check that the supervisor that started us is
/// still our parent (PR_SET_PDEATHSIG was set before exec).
pub fn inherited_listener() -> anyhow::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    if let Ok(ppid) = std::env::var(SUPERVISOR_PID_ENV) {
        // SAFETY: trivial libc call.
        if ppid.parse::<i32>().ok() != Some(unsafe { libc::getppid() }) {
            anyhow::bail!("the supervisor (pid {ppid}) is gone; exiting");
        }
    }
    let fd: i32 = std::env::var(LISTEN_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .context("this role is started by the supervisor (no inherited listener; run sentinel-master without --role)")?;
    // SAFETY: the supervisor passed this fd number for a listening TCP socket, once.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    // SAFETY: keep it out of anything we might exec.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    listener.set_nonblocking(true)?;
    Ok(listener)
}
