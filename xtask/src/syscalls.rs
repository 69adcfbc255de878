//! Do the binaries fit their units' seccomp and socket filters? Runs the x86_64 master and
//! agent under `strace -f` doing real work (agent streaming to master; /healthz, /metrics,
//! the API and a table snapshot) and compares every syscall and every `socket(2)` family
//! they used with the unit's `SystemCallFilter=` and `RestrictAddressFamilies=` lines,
//! expanded with `systemd-analyze syscall-filter`. A new syscall outside the filter would
//! otherwise only show up as EPERM on a production host.

use crate::util::{self, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a unit allows, from its own lines.
pub struct UnitFilter {
    allow: BTreeSet<String>,
    deny: BTreeSet<String>,
    families: BTreeSet<String>,
}

impl UnitFilter {
    pub fn from_unit(unit: &Path, groups: &BTreeMap<String, Vec<String>>) -> Result<Self> {
        let text = fs::read_to_string(unit).map_err(|e| format!("{}: {e}", unit.display()))?;
        let mut allow = BTreeSet::new();
        let mut deny = BTreeSet::new();
        let mut families = BTreeSet::new();
        for line in text.lines() {
            if let Some(list) = line.strip_prefix("SystemCallFilter=") {
                let (target, list) = match list.strip_prefix('~') {
                    Some(rest) => (&mut deny, rest),
                    None => (&mut allow, list),
                };
                for item in list.split_whitespace() {
                    target.extend(expand(item, groups));
                }
            } else if let Some(list) = line.strip_prefix("RestrictAddressFamilies=") {
                families.extend(list.split_whitespace().map(str::to_string));
            }
        }
        if allow.is_empty() || families.is_empty() {
            return Err(format!(
                "{}: no SystemCallFilter= allow list or RestrictAddressFamilies=",
                unit.display()
            ));
        }
        Ok(UnitFilter {
            allow,
            deny,
            families,
        })
    }

    /// Problems with what a trace used; empty when it fits.
    pub fn violations(&self, used: &Trace) -> Vec<String> {
        let mut problems = Vec::new();
        for call in &used.syscalls {
            if !self.allow.contains(call) || self.deny.contains(call) {
                problems.push(format!("syscall {call} is not allowed"));
            }
        }
        for family in &used.families {
            if !self.families.contains(family) {
                problems.push(format!("socket({family}) is not allowed"));
            }
        }
        problems
    }
}

/// `systemd-analyze syscall-filter`: group name -> members (syscalls or nested groups).
pub fn syscall_groups() -> Result<BTreeMap<String, Vec<String>>> {
    let text =
        util::stdout(Command::new("systemd-analyze").args(["syscall-filter", "--no-pager"]))?;
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            let name = item
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            groups.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if let Some(group) = &current {
            if let Some(word) = item.split_whitespace().next() {
                groups
                    .entry(group.clone())
                    .or_default()
                    .push(word.to_string());
            }
        }
    }
    if !groups.contains_key("@system-service") {
        return Err("systemd-analyze syscall-filter lists no @system-service".into());
    }
    Ok(groups)
}

fn expand(item: &str, groups: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    match groups.get(item) {
        Some(members) => members.iter().flat_map(|m| expand(m, groups)).collect(),
        None => BTreeSet::from([item.to_string()]),
    }
}

/// What one traced run used.
#[derive(Default)]
pub struct Trace {
    pub syscalls: BTreeSet<String>,
    pub families: BTreeSet<String>,
}

/// Parses `strace -f` output: lines `PID name(args...) = ...`.
pub fn parse_trace(text: &str) -> Trace {
    let mut trace = Trace::default();
    for line in text.lines() {
        let rest = line
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        trace.syscalls.insert(name.to_string());
        if name == "socket" {
            if let Some(family) = args.split(',').next() {
                trace.families.insert(family.trim().to_string());
            }
        }
    }
    trace
}

/// A process under `strace -f -o file`, and the traced program's PID (strace's child).
pub struct Traced {
    strace: Child,
    /// The traced program's PID, verified by its /proc/PID/exe.
    pub pid: u32,
    program: std::path::PathBuf,
}

impl Traced {
    pub fn start(trace_file: &Path, log: &Path, program: &Path, args: &[&str]) -> Result<Self> {
        let log = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let strace = Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(trace_file)
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start strace: {e}"))?;
        let program =
            fs::canonicalize(program).map_err(|e| format!("{}: {e}", program.display()))?;
        let pid = traced_child(strace.id(), &program)?;
        Ok(Traced {
            strace,
            pid,
            program,
        })
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.strace.try_wait(), Ok(Some(_)))
    }

    /// strace itself (it exits with the traced program), e.g. to notice an early exit.
    pub fn child(&mut self) -> &mut Child {
        &mut self.strace
    }

    /// Signals the traced program, after checking that the PID still runs it.
    fn signal(&self, signal: &str) {
        let exe = fs::read_link(format!("/proc/{}/exe", self.pid));
        if exe.is_ok_and(|exe| exe == self.program) {
            let _ = Command::new("kill")
                .args([signal, &self.pid.to_string()])
                .status();
        }
    }

    /// SIGTERM to the traced program (strace exits with it); SIGKILL after 15 s.
    pub fn stop(mut self) -> Result {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.exited() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.signal("-KILL");
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.strace.kill();
        let _ = self.strace.wait();
        Err(format!("pid {} ignored SIGTERM for 15 s; killed", self.pid))
    }
}

/// The PID of the traced program: the child of strace that runs `program` (strace also
/// forks short-lived children of its own at start to probe ptrace features).
fn traced_child(strace_pid: u32, program: &Path) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == *program) {
                return Ok(pid);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "strace (pid {strace_pid}) did not start {}",
                program.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strace_lines_and_socket_families() {
        let text = "123 openat(AT_FDCWD, \"/proc/stat\", O_RDONLY) = 3\n\
                    123 socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_IP) = 4\n\
                    124 socketpair(AF_UNIX, SOCK_STREAM, 0, [5, 6]) = 0\n\
                    124 <... epoll_pwait resumed>[], 1024, 10, NULL, 8) = 0\n\
                    124 +++ exited with 0 +++\n";
        let trace = parse_trace(text);
        assert_eq!(
            trace.syscalls,
            BTreeSet::from(["openat".into(), "socket".into(), "socketpair".into()])
        );
        assert_eq!(trace.families, BTreeSet::from(["AF_INET".to_string()]));
    }

    #[test]
    fn unit_filter_denies_after_allowing() {
        let groups = BTreeMap::from([
            (
                "@system-service".to_string(),
                vec!["@basic".to_string(), "setrlimit".to_string()],
            ),
            (
                "@basic".to_string(),
                vec!["read".to_string(), "write".to_string()],
            ),
            ("@resources".to_string(), vec!["setrlimit".to_string()]),
        ]);
        let dir = std::env::temp_dir().join(format!("xtask-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let unit = dir.join("t.service");
        fs::write(&unit, "[Service]\nSystemCallFilter=@system-service\nSystemCallFilter=~@resources\nRestrictAddressFamilies=AF_INET AF_INET6\n").unwrap();
        let filter = UnitFilter::from_unit(&unit, &groups).unwrap();
        let used = parse_trace(
            "1 read(3) = 1\n1 setrlimit(x) = 0\n1 socket(AF_NETLINK, SOCK_RAW, 0) = 3\n",
        );
        let problems = filter.violations(&used);
        assert_eq!(problems.len(), 3, "{problems:?}"); // setrlimit denied, socket not listed, AF_NETLINK
        let _ = fs::remove_dir_all(&dir);
    }
}
