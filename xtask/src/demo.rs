//! `cargo xtask demo`: the README's first command. Builds Sentinel, starts a master and an
//! agent for this machine under target/demo, prints the dashboard URL, and stops both on
//! Ctrl-C (or, with `--check`, as soon as this host shows `up`, for a smoke test).

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Options {
    listen: String,
    http: String,
    check: bool,
    release: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        listen: "127.0.0.1:7410".into(),
        http: "127.0.0.1:7411".into(),
        check: false,
        release: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => o.listen = it.next().ok_or("--listen needs ADDR")?.clone(),
            "--http" => o.http = it.next().ok_or("--http needs ADDR")?.clone(),
            "--check" => o.check = true,
            "--debug" => o.release = false,
            "-h" | "--help" => {
                println!(
                    "cargo xtask demo [--listen ADDR] [--http ADDR] [--check] [--debug]\n\
                     Builds and starts a master and an agent for this machine; Ctrl-C stops them.\n\
                     --http 0.0.0.0:7411 makes the dashboard reachable from other machines;\n\
                     port 0 lets the kernel pick free ports (the URLs printed are the real ones).\n\
                     --check exits 0 once this host is `up` (smoke test); --debug skips the release build."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(o)
}

/// Kills a child we started on drop, so an early error leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SIGTERM: the master unlinks its segment, the agent says goodbye.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.0.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The body of a 200 answer to `GET path`, else None.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    match crate::util::http_get(addr, path, Duration::from_secs(2)) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    crate::util::wait_until(timeout, || Ok(ok())).map_err(|e| {
        // CI shows only what was printed: the last lines of both logs say why.
        let dir = crate::util::root().join("target/demo");
        let mut msg = format!("waiting for {what}: {e}");
        for log in ["master.log", "agent.log"] {
            let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            msg.push_str(&format!("\n--- last lines of target/demo/{log}:"));
            for l in &lines[lines.len().saturating_sub(8)..] {
                msg.push('\n');
                msg.push_str(l);
            }
        }
        msg.into()
    })
}

/// Where this machine reaches a listener bound to `addr` (0.0.0.0 is every local address).
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

fn spawn(bin: &Path, args: &[&str], log: &Path) -> Result<Guard> {
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        // Own process group: Ctrl-C reaches only xtask, which stops the children in order.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    Ok(Guard(child))
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let root = crate::util::root();
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .current_dir(&root)
        .args(["build", "-p", "sentinel-master", "-p", "sentinel-agent"]);
    if o.release {
        build.arg("--release");
    }
    if !build.status()?.success() {
        return Err("cargo build failed".into());
    }
    let bins = root
        .join("target")
        .join(if o.release { "release" } else { "debug" });
    let dir: PathBuf = root.join("target/demo");
    std::fs::create_dir_all(dir.join("agent-state"))?;
    std::fs::create_dir_all(dir.join("master-state"))?;
    let token = dir.join("fleet-token");
    if !token.exists() {
        let mut bytes = [0u8; 24];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        std::fs::write(
            &token,
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        )?;
    }
    // Empty config files: defaults plus the flags below, whatever /etc/sentinel holds.
    for f in ["master.toml", "agent.toml"] {
        std::fs::write(dir.join(f), "")?;
    }
    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    // The master reports what it bound (port 0 included: `--listen 127.0.0.1:0`).
    let addr_file = dir.join("master.addr");
    let _ = std::fs::remove_file(&addr_file);

    let mut master = spawn(
        &bins.join("sentinel-master"),
        &[
            "--config",
            &d("master.toml"),
            "--listen",
            &o.listen,
            "--http",
            &o.http,
            "--token-file",
            &d("fleet-token"),
            "--shm-name",
            "sentinel-demo",
            // The snapshot (and the agent key it pins) belongs to this checkout, like the
            // agent's state: a second clone's demo on the same machine has another agent key,
            // and /var/lib/sentinel would pin the first one (refused `identity`).
            "--state-dir",
            &d("master-state"),
            "--addr-file",
            &d("master.addr"),
        ],
        &dir.join("master.log"),
    )?;
    let (agents, http) =
        crate::util::read_addr_file(&addr_file, &mut master.0, Duration::from_secs(15))
            .map_err(|e| format!("{e} (see target/demo/master.log)"))?;
    let probe = loopback_if_unspecified(http);
    wait_for(
        "the master's /healthz (see target/demo/master.log)",
        Duration::from_secs(15),
        || http_get(probe, "/healthz").is_some(),
    )?;
    let agent_target = loopback_if_unspecified(agents).to_string();
    let _agent = spawn(
        &bins.join("sentinel-agent"),
        &[
            "--config",
            &d("agent.toml"),
            "--master",
            &agent_target,
            "--token-file",
            &d("fleet-token"),
            "--state-dir",
            &d("agent-state"),
        ],
        &dir.join("agent.log"),
    )?;
    wait_for(
        "this host to show up (see target/demo/agent.log)",
        Duration::from_secs(15),
        || http_get(probe, "/api/v1/hosts").is_some_and(|t| t.contains("\"status\":\"up\"")),
    )?;

    println!("Sentinel is running: master and one agent for this machine.");
    println!("Dashboard: http://{probe}/");
    println!("API:       http://{probe}/api/v1/hosts");
    println!("Logs:      {}/master.log, agent.log", dir.display());
    if o.check {
        return Ok(());
    }
    println!("Press Ctrl-C to stop.");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("Stopping.");
    Ok(())
}
