//! Small helpers: running commands with readable errors, paths, versions.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root: xtask's manifest dir is `<root>/xtask`.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Human-readable form of a command, for messages.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdout/stderr; error if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result {
    eprintln!("+ {}", show(cmd));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", show(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {status}", show(cmd)))
    }
}

/// Runs a command with its output going to `log`; on failure the error shows the log's tail.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result {
    let file = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let file2 = file.try_clone().map_err(|e| e.to_string())?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .status()
        .map_err(|e| format!("cannot run `{}`: {e}", show(cmd)))?;
    if status.success() {
        return Ok(());
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    Err(format!(
        "`{}` failed: {status}; end of {}:\n{tail}",
        show(cmd),
        log.display()
    ))
}

/// Runs a command and captures its output, whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", show(cmd)))
}

/// Runs a command, captures stdout+stderr, and fails (showing both) on a non-zero exit.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "`{}` failed: {}\n{}",
            show(cmd),
            out.status,
            text.trim_end()
        ))
    }
}

/// Stdout of a command that must succeed.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed: {}\n{}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// Whether a program can be started at all (`prog args...` exits 0).
pub fn works(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits for a child with a deadline, collecting its stdout; kills it when time is up.
pub fn wait_with_deadline(
    mut child: Child,
    limit: Duration,
) -> Result<(std::process::ExitStatus, String, String)> {
    let deadline = Instant::now() + limit;
    // Read pipes in threads so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "timed out after {limit:?} (pid {} killed)",
                child.id()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok((
        status,
        out_thread.join().unwrap_or_default(),
        err_thread.join().unwrap_or_default(),
    ))
}

/// `version = "x.y.z"` of `[workspace.package]` in the root Cargo.toml.
pub fn workspace_version() -> Result<String> {
    let path = root().join("Cargo.toml");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut in_section = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
        } else if in_section {
            if let Some(value) = line.strip_prefix("version") {
                let value = value.trim_start().trim_start_matches('=').trim();
                return Ok(value.trim_matches('"').to_string());
            }
        }
    }
    Err(format!(
        "{}: no version in [workspace.package]",
        path.display()
    ))
}

/// A version usable both as a Debian upstream version and an RPM version.
pub fn validate_version(v: &str) -> Result {
    let ok = !v.is_empty()
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "version `{v}`: use digits, letters, '.', '+' or '~' (no '-'), starting with a digit"
        ))
    }
}

/// Takes the value following `flag` out of an argument list.
pub fn take_value(args: &[String], i: &mut usize, flag: &str) -> Result<String> {
    *i += 1;
    args.get(*i)
        .cloned()
        .ok_or_else(|| format!("{flag} needs a value"))
}

/// Raw stdout of a command that must succeed.
pub fn stdout_bytes(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("`{}` failed: {}", show(cmd), out.status))
    }
}

/// Waits until a master started with `--addr-file path` wrote the addresses it bound
/// (`agents=ADDR` and `http=ADDR` lines, docs/CONTRACT.md), so that it can listen on port 0
/// instead of on a port picked by binding and releasing it (a race). Errs if `child` exits
/// first or nothing comes within `limit`.
pub fn read_addr_file(
    path: &Path,
    child: &mut Child,
    limit: Duration,
) -> Result<(std::net::SocketAddr, std::net::SocketAddr)> {
    let deadline = Instant::now() + limit;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.trim().parse().ok())
        };
        if let (Some(agents), Some(http)) = (field("agents"), field("http")) {
            return Ok((agents, http));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the master exited before it listened: {status}"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the master wrote no addresses to {} within {limit:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` over HTTP/1.0 (the server answers without chunking and closes): (status code,
/// body). The one HTTP client of xtask (demo, package checks).
pub fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("GET {path}: connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:.200}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .to_string();
    Ok((code, body))
}

/// Polls `ready` every 100 ms until it says true, errs, or `limit` passes. The one wait of
/// xtask.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result {
    let deadline = Instant::now() + limit;
    loop {
        if ready()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::validate_version;

    #[test]
    fn versions_usable_by_dpkg_and_rpm() {
        for ok in ["0.1.0", "0.1.1", "1.2.3+ci1", "2.0.0~rc1", "10"] {
            assert!(validate_version(ok).is_ok(), "{ok}");
        }
        for bad in ["", "v0.1.0", "0.1.0-1", "0.1 0", "0.1.0/1", "-1"] {
            assert!(validate_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_address_file_is_read_once_both_lines_are_there_and_an_exit_is_an_error() {
        let dir = std::env::temp_dir().join(format!("xtask-addr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("addr");
        let mut running = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&path, "agents=127.0.0.1:41234\nhttp=127.0.0.1:41235\n").unwrap();
        let got = super::read_addr_file(&path, &mut running, std::time::Duration::from_secs(5));
        let _ = running.kill();
        let _ = running.wait();
        assert_eq!(
            got,
            Ok((
                "127.0.0.1:41234".parse().unwrap(),
                "127.0.0.1:41235".parse().unwrap()
            ))
        );
        std::fs::remove_file(&path).unwrap();
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        let err = super::read_addr_file(&path, &mut exited, std::time::Duration::from_secs(5))
            .unwrap_err();
        assert!(err.contains("exited before it listened"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
