//! `cargo xtask check-packages`: asserts that the deployables in target/dist are what
//! issue 3 promises. Each check prints PASS/FAIL with its evidence; the run ends with
//! "N passed, N failed" and exits non-zero when anything failed.

use crate::debroot;
use crate::dist::{self, Arch, ARCHES, PACKAGES};
use crate::syscalls::{self, Traced, UnitFilter};
use crate::tools;
use crate::util::{self, Result};
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian packages the checks use (installed when missing).
pub const APT_PACKAGES: &[&str] = &[
    "file",
    "lintian",
    "rpmlint",
    "rpm",
    "debootstrap",
    "zstd",
    "qemu-user-static",
    "systemd",
    "man-db",
    "strace",
];

/// Exposure budgets of `systemd-analyze security` (issue 3).
const EXPOSURE_BUDGET: [(&str, f64); 2] = [("sentinel-agent", 2.0), ("sentinel-master", 3.0)];

/// Size budget per binary (issue 3), in bytes: agent <= 2 MB, master <= 4 MB (decimal).
fn size_budget(package: &str) -> u64 {
    if package == "sentinel-agent" {
        2_000_000
    } else {
        4_000_000
    }
}

/// How long a binary under qemu-user may take to answer; emulation is slow on 2 cores.
const QEMU_DEADLINE: Duration = Duration::from_secs(60);

pub struct Options {
    pub out: PathBuf,
    pub skip_install: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut out = util::root().join("target/dist");
        let mut skip_install = false;
        let mut i = 0;
        while i < args.len() {
            match args[i].as_str() {
                "--out" => out = PathBuf::from(util::take_value(args, &mut i, "--out")?),
                "--skip-install" => skip_install = true,
                other => return Err(format!("check-packages: unknown option `{other}`")),
            }
            i += 1;
        }
        Ok(Options { out, skip_install })
    }
}

/// Outcome of the checks so far.
#[derive(Default)]
struct Report {
    passed: usize,
    failed: Vec<String>,
}

impl Report {
    fn check(&mut self, name: &str, f: impl FnOnce() -> Result<String>) -> bool {
        let started = Instant::now();
        let result = f();
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(evidence) => {
                self.passed += 1;
                println!("PASS {name} ({secs:.1} s): {evidence}");
                true
            }
            Err(error) => {
                self.failed.push(name.to_string());
                println!("FAIL {name} ({secs:.1} s): {error}");
                false
            }
        }
    }

    fn skip(&mut self, name: &str, why: &str) {
        self.failed.push(name.to_string());
        println!("FAIL {name}: not run, {why}");
    }
}

pub fn run(options: &Options) -> Result {
    let started = Instant::now();
    tools::ensure_apt(APT_PACKAGES)?;
    let work = util::root().join("target/check");
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut report = Report::default();
    // Everything below reads a verified copy, so a `cargo xtask dist` running meanwhile in
    // the same tree cannot hand a check a half-written package.
    let snapshot = work.join("dist");
    if !report.check(
        "SHA256SUMS verifies (checked copy in target/check/dist)",
        || snapshot_dist(&options.out, &snapshot),
    ) {
        println!("0 passed, 1 failed");
        return Err(format!(
            "{} does not hold a complete dist (run `cargo xtask dist`)",
            options.out.display()
        ));
    }
    let out = snapshot.as_path();
    let version = dist_version(out)?;
    println!(
        "check-packages: version {version} from {}",
        options.out.display()
    );

    for arch in ARCHES {
        for (package, _) in PACKAGES {
            let bin = out.join(dist::bin_name(package, arch));
            report.check(&format!("static {}", bin_file(&bin)), || {
                static_binary(&bin)
            });
            report.check(&format!("size budget {}", bin_file(&bin)), || {
                let size = fs::metadata(&bin).map_err(|e| e.to_string())?.len();
                let budget = size_budget(package);
                if size <= budget {
                    Ok(format!("{size} bytes <= {budget}"))
                } else {
                    Err(format!("{size} bytes > budget {budget}"))
                }
            });
        }
    }
    report.check(
        "aarch64 agent --once --format json under qemu-aarch64-static",
        || agent_once_aarch64(out, &work),
    );
    report.check(
        "aarch64 master answers /healthz under qemu-aarch64-static",
        || master_healthz_aarch64(out, &work),
    );
    for arch in ARCHES {
        for (package, _) in PACKAGES {
            let deb = out.join(dist::deb_name(package, &version, arch));
            report.check(
                &format!("deb fields and contents {}", bin_file(&deb)),
                || deb_fields(&deb, package, &version, arch),
            );
            let rpm = out.join(dist::rpm_name(package, &version, arch));
            report.check(
                &format!("rpm fields and contents {}", bin_file(&rpm)),
                || rpm_fields(&rpm, package, &version, arch),
            );
        }
    }
    report.check("lintian: no errors or warnings", || lintian(out, &version));
    report.check(
        "rpmlint -c packaging/rpmlint.toml: 0 errors, 0 warnings",
        || rpmlint(out, &version),
    );
    for (package, budget) in EXPOSURE_BUDGET {
        let deb = out.join(dist::deb_name(package, &version, ARCHES[0]));
        report.check(
            &format!("systemd-analyze verify {package}.service prints nothing"),
            || unit_verify(&deb, package, &work),
        );
        report.check(
            &format!("systemd-analyze security {package}.service < {budget}"),
            || unit_security(package, budget),
        );
    }

    report.check(
        "syscalls and socket families used fit both units' filters (strace)",
        || syscall_fit(out),
    );

    if options.skip_install {
        println!("check-packages: install checks skipped (--skip-install)");
    } else {
        install_checks(&mut report, out, &version, &work);
    }

    println!(
        "check-packages: {:.1} s; failed: {}",
        started.elapsed().as_secs_f64(),
        if report.failed.is_empty() {
            "none".to_string()
        } else {
            report.failed.join("; ")
        }
    );
    println!("{} passed, {} failed", report.passed, report.failed.len());
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} packaging check(s) failed", report.failed.len()))
    }
}

fn bin_file(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Copies the artifacts listed in `out`/SHA256SUMS to `snapshot` and verifies them there.
fn snapshot_dist(out: &Path, snapshot: &Path) -> Result<String> {
    let _ = fs::remove_dir_all(snapshot);
    fs::create_dir_all(snapshot).map_err(|e| e.to_string())?;
    let sums = fs::read_to_string(out.join("SHA256SUMS"))
        .map_err(|e| format!("{}/SHA256SUMS: {e}", out.display()))?;
    let mut count = 0;
    for line in sums.lines() {
        let name = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| format!("bad SHA256SUMS line: {line}"))?;
        let name = name.trim_start_matches('*');
        fs::copy(out.join(name), snapshot.join(name)).map_err(|e| format!("{name}: {e}"))?;
        count += 1;
    }
    fs::write(snapshot.join("SHA256SUMS"), &sums).map_err(|e| e.to_string())?;
    util::capture(
        Command::new("sha256sum")
            .args(["--check", "--strict", "--quiet", "SHA256SUMS"])
            .current_dir(snapshot),
    )?;
    if count != 12 {
        return Err(format!(
            "SHA256SUMS lists {count} files, expected 4 binaries + 4 .deb + 4 .rpm"
        ));
    }
    Ok(format!("{count} files"))
}

/// The version of the packages in `out`, read from the amd64 agent .deb.
fn dist_version(out: &Path) -> Result<String> {
    let suffix = format!("_{}.deb", ARCHES[0].deb);
    let entries = fs::read_dir(out)
        .map_err(|e| format!("{}: {e} (run `cargo xtask dist` first)", out.display()))?;
    let deb = entries
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = bin_file(p);
            name.starts_with("sentinel-agent_") && name.ends_with(&suffix)
        })
        .ok_or_else(|| {
            format!(
                "no sentinel-agent_*{suffix} in {} (run `cargo xtask dist` first)",
                out.display()
            )
        })?;
    let full = util::stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"))?;
    let full = full.trim();
    Ok(full
        .rsplit_once('-')
        .map_or(full, |(upstream, _)| upstream)
        .to_string())
}

// ---- binaries ------------------------------------------------------------------------

fn static_binary(bin: &Path) -> Result<String> {
    let desc = util::stdout(Command::new("file").arg("-b").arg(bin))?;
    let desc = desc.trim();
    let is_static = desc.contains("statically linked") || desc.contains("static-pie linked");
    if is_static && !desc.contains("dynamically linked") && !desc.contains("interpreter") {
        let size = fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
        Ok(format!("{size} bytes; {desc}"))
    } else {
        Err(format!("file says: {desc}"))
    }
}

fn qemu() -> Result<PathBuf> {
    let path = PathBuf::from("/usr/bin/qemu-aarch64-static");
    if path.is_file() {
        Ok(path)
    } else {
        Err("qemu-aarch64-static not found (apt-get install qemu-user-static)".into())
    }
}

fn agent_once_aarch64(out: &Path, work: &Path) -> Result<String> {
    let bin = out.join(dist::bin_name("sentinel-agent", ARCHES[1]));
    // Its own state dir, so the check never writes the host's /var/lib/sentinel.
    let state = work.join("agent-once-state");
    fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let child = Command::new(qemu()?)
        .arg(&bin)
        .args(["--once", "--format", "json", "--state-dir"])
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu: {e}"))?;
    let (status, stdout, stderr) = util::wait_with_deadline(child, QEMU_DEADLINE)?;
    if !status.success() {
        return Err(format!("exit {status}; stderr: {}", stderr.trim()));
    }
    let sample: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("stdout is not one JSON object ({e}): {stdout}"))?;
    let mem_total = sample["mem_total_bytes"].as_u64().unwrap_or(0);
    if mem_total == 0 {
        return Err(format!("mem_total_bytes is not > 0 in {stdout}"));
    }
    let arch = sample["host"]["arch"].as_str().unwrap_or("?");
    Ok(format!(
        "mem_total_bytes={mem_total} host.arch={arch} hostname={} ({} bytes of JSON)",
        sample["hostname"],
        stdout.trim().len()
    ))
}

/// The master re-executes its own (aarch64) binary for its two children, which the kernel
/// can only run through binfmt_misc. binfmt_misc is namespaced per user namespace on this
/// kernel, so qemu is registered inside a private user+mount namespace: nothing changes
/// on the host. The registration string is Debian's qemu-aarch64 one with the static
/// interpreter and the F flag (interpreter opened at registration time).
const BINFMT_AARCH64: &str = r":qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F";

fn master_healthz_aarch64(out: &Path, work: &Path) -> Result<String> {
    let bin = out.join(dist::bin_name("sentinel-master", ARCHES[1]));
    qemu()?;
    let shm = format!("sentinel-check-{}", std::process::id());
    let addr_file = work.join("qemu-master.addr");
    let _ = fs::remove_file(&addr_file);
    let empty_config = work.join("qemu-master.toml");
    fs::write(&empty_config, "").map_err(|e| e.to_string())?;
    let log_path = work.join("master-qemu.log");
    let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut child = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
        ])
        .arg(
            "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && \
             printf '%s' \"$SENTINEL_BINFMT\" > /proc/sys/fs/binfmt_misc/register && exec \"$@\"",
        )
        .arg("sh")
        .arg(&bin)
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--addr-file")
        .arg(&addr_file)
        .args(["--shm-name", &shm])
        // Its own (empty) config and state: nothing of the host's /etc or /var/lib.
        .arg("--config")
        .arg(&empty_config)
        .arg("--state-dir")
        .arg(work.join("qemu-master-state"))
        .env("SENTINEL_BINFMT", BINFMT_AARCH64)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start unshare: {e}"))?;
    // unshare and sh both exec, so this PID is the supervisor's.
    let pid = child.id();
    let deadline = Instant::now() + QEMU_DEADLINE;
    let http = util::read_addr_file(&addr_file, &mut child, QEMU_DEADLINE).map(|(_, h)| h.port());
    let answer = loop {
        let http = match http {
            Ok(port) => port,
            Err(ref e) => break Err(e.clone()),
        };
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("master exited early: {status}"));
        }
        match http_get(http, "/healthz") {
            Ok((200, body)) => break Ok(body),
            Ok((code, body)) if Instant::now() >= deadline => {
                break Err(format!("HTTP {code}: {body}"))
            }
            Err(e) if Instant::now() >= deadline => {
                break Err(format!("no answer within {QEMU_DEADLINE:?}: {e}"))
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    let stopped = stop(&mut child, pid);
    let _ = fs::remove_file(Path::new("/dev/shm").join(&shm));
    let log_tail = || {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    let body =
        answer.map_err(|e| format!("{e}\nmaster log ({}):\n{}", log_path.display(), log_tail()))?;
    let health: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| format!("/healthz body is not JSON ({e}): {body}"))?;
    if health["status"] != "ok" {
        return Err(format!("/healthz status is not ok: {body}"));
    }
    for field in ["supervisor_pid", "collector_pid", "http_pid"] {
        if health[field].as_u64().unwrap_or(0) == 0 {
            return Err(format!("/healthz has no {field}: {body}"));
        }
    }
    stopped?;
    Ok(format!("HTTP 200 {body}; stopped pid {pid} with SIGTERM"))
}

/// `GET path` on 127.0.0.1:`port`: (status code, body).
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    util::http_get(
        (Ipv4Addr::LOCALHOST, port).into(),
        path,
        Duration::from_secs(5),
    )
}

/// SIGTERM to the process we started, by PID; SIGKILL if it is still there after 15 s.
fn stop(child: &mut std::process::Child, pid: u32) -> Result {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("pid {pid} ignored SIGTERM for 15 s; killed"))
}

// ---- package metadata and lint ---------------------------------------------------------

fn deb_fields(deb: &Path, package: &str, version: &str, arch: Arch) -> Result<String> {
    let field = |name: &str| -> Result<String> {
        Ok(
            util::stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))?
                .trim()
                .to_string(),
        )
    };
    let (got_arch, got_pkg, got_ver) =
        (field("Architecture")?, field("Package")?, field("Version")?);
    if got_arch != arch.deb || got_pkg != package || got_ver != format!("{version}-1") {
        return Err(format!("Package={got_pkg} Version={got_ver} Architecture={got_arch}, expected {package} {version}-1 {}", arch.deb));
    }
    let listing = util::stdout(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    let conf = role_of(package);
    let expected = [
        format!("./usr/bin/{package}"),
        format!("./usr/lib/systemd/system/{package}.service"),
        format!("./etc/sentinel/{conf}.toml"),
        format!("./usr/share/man/man8/{package}.8.gz"),
        format!("./usr/share/doc/{package}/copyright"),
        format!("./usr/share/doc/{package}/changelog.Debian.gz"),
    ];
    for path in &expected {
        if !listing.lines().any(|l| l.ends_with(path.as_str())) {
            return Err(format!("{path} missing from the package"));
        }
    }
    let ctl = tempdir(&format!("ctl-{package}-{}", arch.deb))?;
    util::capture(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctl))?;
    let conffiles = fs::read_to_string(ctl.join("conffiles")).unwrap_or_default();
    if !conffiles
        .lines()
        .any(|l| l.trim() == format!("/etc/sentinel/{conf}.toml"))
    {
        return Err(format!(
            "conffiles does not list /etc/sentinel/{conf}.toml: {conffiles:?}"
        ));
    }
    // The install behaviour documented in docs/OPERATIONS.md: both units enabled; the master
    // started on install and restarted on upgrade; the agent only try-restarted on upgrade.
    let postinst = fs::read_to_string(ctl.join("postinst")).unwrap_or_default();
    let enables = postinst.contains(&format!("deb-systemd-helper enable {package}.service"));
    let starts = postinst.contains(&format!("deb-systemd-invoke $_dh_action {package}.service"));
    let try_restarts =
        postinst.contains(&format!("deb-systemd-invoke try-restart {package}.service"));
    let behaviour = match (package, enables, starts, try_restarts) {
        ("sentinel-master", true, true, false) => "enable + start, restart on upgrade",
        ("sentinel-agent", true, false, true) => "enable only, try-restart on upgrade",
        _ => {
            return Err(format!(
                "postinst: enable={enables} start={starts} try-restart={try_restarts}, not the documented behaviour"
            ))
        }
    };
    if !postinst.contains("adduser --system") {
        return Err("postinst does not create the sentinel user".into());
    }
    Ok(format!(
        "Architecture={got_arch} Version={got_ver}; conffile /etc/sentinel/{conf}.toml; {} files; postinst: {behaviour}",
        expected.len()
    ))
}

fn rpm_fields(rpm: &Path, package: &str, version: &str, arch: Arch) -> Result<String> {
    let got = util::stdout(
        Command::new("rpm")
            .args(["-qp", "--qf", "%{NAME} %{VERSION}-%{RELEASE} %{ARCH}"])
            .arg(rpm),
    )?;
    let want = format!("{package} {version}-1 {}", arch.rpm);
    if got.trim() != want {
        return Err(format!(
            "NAME VERSION-RELEASE ARCH = `{}`, expected `{want}`",
            got.trim()
        ));
    }
    let files = util::stdout(
        Command::new("rpm")
            .args(["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"])
            .arg(rpm),
    )?;
    let conf = format!("/etc/sentinel/{}.toml", role_of(package));
    let flags = files
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{conf} ")))
        .ok_or_else(|| format!("{conf} missing from the package"))?;
    if !(flags.contains('c') && flags.contains('n')) {
        return Err(format!(
            "{conf} is not %config(noreplace) (flags `{flags}`)"
        ));
    }
    for path in [
        format!("/usr/bin/{package}"),
        format!("/usr/lib/systemd/system/{package}.service"),
        format!("/usr/share/man/man8/{package}.8.gz"),
    ] {
        if !files.lines().any(|l| l.starts_with(&format!("{path} "))) {
            return Err(format!("{path} missing from the package"));
        }
    }
    let scripts = util::stdout(Command::new("rpm").args(["-qp", "--scripts"]).arg(rpm))?;
    if !scripts.contains("useradd") {
        return Err("no %pre scriptlet creating the sentinel user".into());
    }
    Ok(format!(
        "{want}; {conf} %config(noreplace); scriptlets present"
    ))
}

fn role_of(package: &str) -> &str {
    package.trim_start_matches("sentinel-")
}

fn lintian(out: &Path, version: &str) -> Result<String> {
    let debs: Vec<PathBuf> = ARCHES
        .iter()
        .flat_map(|a| {
            PACKAGES
                .iter()
                .map(move |(p, _)| out.join(dist::deb_name(p, version, *a)))
        })
        .collect();
    let output = util::output(
        Command::new("lintian")
            .args(["--fail-on", "error,warning"])
            .args(&debs),
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    if output.status.success() && bad.is_empty() {
        Ok(format!(
            "{} packages clean (overrides: packaging/lintian/)",
            debs.len()
        ))
    } else {
        Err(format!("lintian {}:\n{}", output.status, text.trim_end()))
    }
}

fn rpmlint(out: &Path, version: &str) -> Result<String> {
    let rpms: Vec<PathBuf> = ARCHES
        .iter()
        .flat_map(|a| {
            PACKAGES
                .iter()
                .map(move |(p, _)| out.join(dist::rpm_name(p, version, *a)))
        })
        .collect();
    let config = util::root().join("packaging/rpmlint.toml");
    let output = util::output(Command::new("rpmlint").arg("-c").arg(&config).args(&rpms))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let summary = text
        .lines()
        .find(|l| l.contains("packages and") && l.contains("checked"))
        .unwrap_or("");
    if output.status.success() && summary.contains(" 0 errors, 0 warnings") {
        Ok(summary.trim().to_string())
    } else {
        Err(format!("rpmlint {}:\n{}", output.status, text.trim_end()))
    }
}

// ---- systemd units ---------------------------------------------------------------------

/// Host units the packaged units refer to (After=/Wants=/WantedBy=) and their own deps.
const HOST_UNITS: &[&str] = &[
    "network-online.target",
    "network.target",
    "multi-user.target",
    "basic.target",
    "sysinit.target",
    "shutdown.target",
    "sockets.target",
    "paths.target",
    "timers.target",
    "slices.target",
];

/// `systemd-analyze verify` on the unit as installed: the unpacked package plus the host
/// units it names, with MANPATH pointing at the package so Documentation=man: is checked.
/// verify exits 0 on many problems and only prints them, so any output is a failure.
fn unit_verify(deb: &Path, package: &str, work: &Path) -> Result<String> {
    let root = work.join(format!("verify-{package}"));
    let _ = fs::remove_dir_all(&root);
    util::capture(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    let units = root.join("usr/lib/systemd/system");
    for unit in HOST_UNITS {
        let host = Path::new("/usr/lib/systemd/system").join(unit);
        if host.is_file() {
            fs::copy(&host, units.join(unit)).map_err(|e| format!("{}: {e}", host.display()))?;
        }
    }
    let output = util::output(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(format!("{package}.service"))
            .env("MANPATH", root.join("usr/share/man"))
            .env("SYSTEMD_LOG_COLOR", "0"),
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && text.trim().is_empty() {
        Ok("no output, exit 0 (ExecStart binary, man page and referenced units resolved)".into())
    } else {
        Err(format!("{}:\n{}", output.status, text.trim_end()))
    }
}

fn unit_security(package: &str, budget: f64) -> Result<String> {
    let unit = util::root().join(format!("packaging/{}/{package}.service", role_of(package)));
    let output = util::output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit)
            .env("SYSTEMD_COLORS", "0"),
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")
                .map(|(_, rest)| rest)
        })
        .and_then(|rest| rest.split_once(": ").map(|(_, s)| s))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no exposure level in output:\n{text}"))?;
    if score < budget {
        Ok(format!("exposure {score}"))
    } else {
        Err(format!("exposure {score} >= budget {budget}"))
    }
}

/// The x86_64 master and agent at work under strace, checked against their units' filters.
fn syscall_fit(out: &Path) -> Result<String> {
    let groups = syscalls::syscall_groups()?;
    let dir = tempdir("strace")?;
    let master_bin = out.join(dist::bin_name("sentinel-master", ARCHES[0]));
    let agent_bin = out.join(dist::bin_name("sentinel-agent", ARCHES[0]));
    let shm = format!("sentinel-check-strace-{}", std::process::id());
    let addr_file = dir.join("master.addr");
    let addr_arg = addr_file.to_string_lossy().into_owned();
    let master_state = dir.join("master-state");
    let agent_state = dir.join("agent-state");
    let master_trace = dir.join("master.trace");
    let agent_trace = dir.join("agent.trace");
    let mut master = Traced::start(
        &master_trace,
        &dir.join("master.log"),
        &master_bin,
        &[
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--addr-file",
            &addr_arg,
            "--shm-name",
            &shm,
            "--state-dir",
            &master_state.to_string_lossy(),
            "--snapshot-interval",
            "1s",
        ],
    )?;
    let exercised = (|| -> Result {
        let (listen, http) =
            util::read_addr_file(&addr_file, master.child(), Duration::from_secs(20))?;
        let (listen, http) = (listen.to_string(), http.port());
        util::wait_until(Duration::from_secs(20), || {
            if master.exited() {
                return Err("master exited early".to_string());
            }
            Ok(matches!(http_get(http, "/healthz"), Ok((200, _))))
        })?;
        let mut agent = Traced::start(
            &agent_trace,
            &dir.join("agent.log"),
            &agent_bin,
            &[
                "--master",
                &listen,
                "--state-dir",
                &agent_state.to_string_lossy(),
                "--interval",
                "200ms",
            ],
        )?;
        let streamed = util::wait_until(Duration::from_secs(20), || {
            if agent.exited() {
                return Err("agent exited early".to_string());
            }
            let Ok((200, body)) = http_get(http, "/api/v1/hosts") else {
                return Ok(false);
            };
            let hosts: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            Ok(hosts["hosts"][0]["samples_received"].as_u64().unwrap_or(0) >= 5)
        });
        // Every kind of HTTP work, and one snapshot interval, while the agent streams.
        let (_, body) = http_get(http, "/api/v1/hosts")?;
        let hosts: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(id) = hosts["hosts"][0]["id"].as_str() {
            http_get(http, &format!("/api/v1/hosts/{id}"))?;
        }
        for path in ["/metrics", "/", "/healthz"] {
            http_get(http, path)?;
        }
        http_peek(http, "/api/v1/events")?;
        std::thread::sleep(Duration::from_millis(1200));
        let stopped = agent.stop();
        streamed?;
        stopped
    })();
    let master_stopped = master.stop();
    let _ = fs::remove_file(Path::new("/dev/shm").join(&shm));
    exercised.map_err(|e| format!("{e} (traces and logs in {})", dir.display()))?;
    master_stopped?;

    let mut summary = Vec::new();
    let mut problems = Vec::new();
    for (package, trace_file) in [
        ("sentinel-master", &master_trace),
        ("sentinel-agent", &agent_trace),
    ] {
        let unit = util::root().join(format!("packaging/{}/{package}.service", role_of(package)));
        let filter = UnitFilter::from_unit(&unit, &groups)?;
        let trace =
            syscalls::parse_trace(&fs::read_to_string(trace_file).map_err(|e| e.to_string())?);
        if trace.syscalls.len() < 20 {
            return Err(format!(
                "{package}: only {} syscalls traced; did it run?",
                trace.syscalls.len()
            ));
        }
        problems.extend(
            filter
                .violations(&trace)
                .into_iter()
                .map(|p| format!("{package}: {p}")),
        );
        summary.push(format!(
            "{package} {} syscalls, socket() families {:?}",
            trace.syscalls.len(),
            trace.families
        ));
    }
    if problems.is_empty() {
        Ok(summary.join("; "))
    } else {
        Err(problems.join("; "))
    }
}

/// Opens a streaming response (SSE), reads its first bytes, and hangs up.
fn http_peek(port: u16, path: &str) -> Result {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = stream
        .read(&mut buf)
        .map_err(|e| format!("GET {path}: {e}"))?;
    if buf[..n].starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "GET {path}: {}",
            String::from_utf8_lossy(&buf[..n])
        ))
    }
}

fn tempdir(name: &str) -> Result<PathBuf> {
    let dir = util::root().join("target/check/tmp").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

// ---- install, upgrade, remove, purge ---------------------------------------------------

/// Version of the "newer build" used for upgrade tests: sorts after `version` for dpkg and rpm.
fn upgrade_version(version: &str) -> String {
    format!("{version}+ci1")
}

/// A line an operator adds to a conffile; it must survive upgrades.
const EDIT: &str = "master = \"edited-by-check.invalid:7410\"";

fn install_checks(report: &mut Report, out: &Path, version: &str, work: &Path) {
    let amd64 = ARCHES[0];
    let newer = upgrade_version(version);
    let upgrade_dir = work.join("upgrade-dist");
    let mut ready = report.check(
        &format!("newer build {newer} of the amd64 packages"),
        || build_upgrade_packages(&upgrade_dir, version, &newer, amd64),
    );
    let debian = work.join("debian-root");
    ready &= report.check("debootstrap'ed Debian root (cached tarball)", || {
        let t = Instant::now();
        debroot::extract(&debian)?;
        Ok(format!(
            "{} extracted in {:.1} s",
            debroot::tarball()?.display(),
            t.elapsed().as_secs_f64()
        ))
    });
    let steps: [(&str, &dyn Fn() -> Result<String>); 5] = [
        (
            "dpkg -i amd64 .debs: user, enabled units, conffiles, fleet token",
            &|| deb_install(&debian, out, version, amd64),
        ),
        (
            "installed binaries run as sentinel with the packaged config",
            &|| run_as_service_user(&debian, work),
        ),
        ("dpkg -i newer build keeps the edited conffile", &|| {
            deb_upgrade(&debian, &upgrade_dir, &newer, amd64)
        }),
        ("dpkg -r keeps config", &|| deb_remove(&debian)),
        ("dpkg --purge removes config and state", &|| {
            deb_purge(&debian)
        }),
    ];
    run_steps(report, ready, &steps);

    let rpm_root = work.join("rpm-root");
    let ready = ready
        && report.check("Debian root for rpm --root", || {
            debroot::extract(&rpm_root)?;
            Ok(rpm_root.display().to_string())
        });
    let steps: [(&str, &dyn Fn() -> Result<String>); 2] = [
        (
            "rpm --root -i x86_64 .rpms: scriptlets create user and token",
            &|| rpm_install(&rpm_root, out, version, amd64),
        ),
        (
            "rpm --root -U newer build keeps the edited %config(noreplace)",
            &|| rpm_upgrade(&rpm_root, &upgrade_dir, &newer, amd64),
        ),
    ];
    run_steps(report, ready, &steps);
}

/// Runs dependent steps in order; after a failure the rest are reported as not run.
fn run_steps(report: &mut Report, ready: bool, steps: &[(&str, &dyn Fn() -> Result<String>)]) {
    let mut ok = ready;
    for (name, step) in steps {
        if ok {
            ok = report.check(name, step);
        } else {
            report.skip(name, "an earlier step failed");
        }
    }
}

fn build_upgrade_packages(dir: &Path, current: &str, version: &str, arch: Arch) -> Result<String> {
    // dpkg -i would also "upgrade" to an older version (a downgrade, with a warning only).
    let newer = util::output(Command::new("dpkg").args([
        "--compare-versions",
        &format!("{version}-1"),
        "gt",
        &format!("{current}-1"),
    ]))?;
    if !newer.status.success() {
        return Err(format!(
            "{version}-1 does not sort after {current}-1 for dpkg"
        ));
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    dist::compress_man_pages()?;
    let mut made = Vec::new();
    for (package, crate_dir) in PACKAGES {
        made.push(bin_file(&dist::deb(package, arch, version, dir)?));
        made.push(bin_file(&dist::rpm(
            package, crate_dir, arch, version, dir,
        )?));
    }
    Ok(made.join(", "))
}

/// Copies packages into the root's /tmp and returns their paths inside the root.
fn stage(root: &Path, files: &[PathBuf]) -> Result<Vec<String>> {
    let mut inside = Vec::new();
    for file in files {
        let name = bin_file(file);
        fs::copy(file, root.join("tmp").join(&name))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        inside.push(format!("/tmp/{name}"));
    }
    Ok(inside)
}

fn in_root(root: &Path, args: &[&str]) -> Result<String> {
    util::capture(&mut debroot::chroot(root, args))
}

fn user_exists(root: &Path) -> Result<String> {
    let passwd = fs::read_to_string(root.join("etc/passwd")).map_err(|e| e.to_string())?;
    let line = passwd
        .lines()
        .find(|l| l.starts_with("sentinel:"))
        .ok_or("no sentinel user in /etc/passwd")?;
    let group = fs::read_to_string(root.join("etc/group")).map_err(|e| e.to_string())?;
    if !group.lines().any(|l| l.starts_with("sentinel:")) {
        return Err("no sentinel group in /etc/group".into());
    }
    Ok(line.to_string())
}

fn gid_of(root: &Path, name: &str) -> Result<u32> {
    let group = fs::read_to_string(root.join("etc/group")).map_err(|e| e.to_string())?;
    group
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name))
                .then(|| f.get(2).and_then(|g| g.parse().ok()))
                .flatten()
        })
        .ok_or_else(|| format!("group {name} not found"))
}

/// The fleet token: 64 hex digits, mode 0640, owner root, group sentinel. Returns it.
fn token_ok(root: &Path) -> Result<String> {
    let path = root.join("etc/sentinel/fleet-token");
    let meta = fs::metadata(&path).map_err(|e| format!("/etc/sentinel/fleet-token: {e}"))?;
    let mode = meta.permissions().mode() & 0o7777;
    let gid = gid_of(root, "sentinel")?;
    if mode != 0o640 || meta.uid() != 0 || meta.gid() != gid {
        return Err(format!(
            "fleet-token mode {mode:o} uid {} gid {} (want 640, 0, {gid})",
            meta.uid(),
            meta.gid()
        ));
    }
    let token = fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let token = token.trim().to_string();
    if token.len() != 64 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("fleet-token is not 64 hex digits: {token:?}"));
    }
    Ok(token)
}

fn deb_install(root: &Path, out: &Path, version: &str, arch: Arch) -> Result<String> {
    let debs: Vec<PathBuf> = PACKAGES
        .iter()
        .map(|(p, _)| out.join(dist::deb_name(p, version, arch)))
        .collect();
    let inside = stage(root, &debs)?;
    let mut args = vec!["dpkg", "-i"];
    args.extend(inside.iter().map(String::as_str));
    in_root(root, &args)?;
    let user = user_exists(root)?;
    for (package, _) in PACKAGES {
        let link = root.join(format!(
            "etc/systemd/system/multi-user.target.wants/{package}.service"
        ));
        let target = fs::read_link(&link)
            .map_err(|e| format!("{package} not enabled ({}: {e})", link.display()))?;
        if !target.ends_with(format!("{package}.service")) {
            return Err(format!("{} points at {}", link.display(), target.display()));
        }
        let conf = root.join(format!("etc/sentinel/{}.toml", role_of(package)));
        if !conf.is_file() {
            return Err(format!("{} missing", conf.display()));
        }
        let status = in_root(
            root,
            &[
                "dpkg-query",
                "-W",
                "-f",
                "${Status} ${Version}\n${Conffiles}\n",
                package,
            ],
        )?;
        if !status.contains("install ok installed")
            || !status.contains(&format!("/etc/sentinel/{}.toml", role_of(package)))
        {
            return Err(format!("dpkg-query {package}: {status}"));
        }
    }
    let master_conf =
        fs::read_to_string(root.join("etc/sentinel/master.toml")).map_err(|e| e.to_string())?;
    if !master_conf
        .lines()
        .any(|l| l.trim() == "token_file = \"/etc/sentinel/fleet-token\"")
    {
        return Err("master.toml does not set token_file = \"/etc/sentinel/fleet-token\"".into());
    }
    token_ok(root)?;
    Ok(format!("{user}; both units enabled (multi-user.target.wants); conffiles registered; fleet-token 0640 root:sentinel"))
}

/// The installed agent and master, run inside the root as the sentinel user with the
/// packaged config files: the agent prints a sample; the master reads the generated token
/// (0640 root:sentinel) and answers /healthz on loopback.
fn run_as_service_user(root: &Path, work: &Path) -> Result<String> {
    // What systemd's StateDirectory=sentinel does before starting either unit.
    in_root(
        root,
        &[
            "install",
            "-d",
            "-o",
            "sentinel",
            "-g",
            "sentinel",
            "-m",
            "0750",
            "/var/lib/sentinel",
        ],
    )?;
    let as_sentinel = [
        "setpriv",
        "--reuid=sentinel",
        "--regid=sentinel",
        "--init-groups",
    ];
    let mut agent = as_sentinel.to_vec();
    agent.extend([
        "/usr/bin/sentinel-agent",
        "--config",
        "/etc/sentinel/agent.toml",
        "--once",
        "--format",
        "json",
    ]);
    let child = debroot::chroot(root, &agent)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the agent: {e}"))?;
    let (status, text, stderr) = util::wait_with_deadline(child, Duration::from_secs(20))?;
    let sample: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("agent --once: {e}: {text} {stderr}"))?;
    if !status.success() || sample["mem_total_bytes"].as_u64().unwrap_or(0) == 0 {
        return Err(format!("agent --once: {status} {text}"));
    }

    let shm = format!("sentinel-check-deb-{}", std::process::id());
    // Port 0 and the bound addresses read back from a file in the sentinel-owned state dir.
    let addr_in_root = format!("/var/lib/sentinel/{shm}.addr");
    let addr_file = root.join(addr_in_root.trim_start_matches('/'));
    let _ = fs::remove_file(&addr_file);
    let mut master_args = as_sentinel.to_vec();
    master_args.extend([
        "/usr/bin/sentinel-master",
        "--config",
        "/etc/sentinel/master.toml",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--addr-file",
        &addr_in_root,
        "--shm-name",
        &shm,
    ]);
    let master_log = work.join("master-in-root.log");
    let mut master = spawn_logged(debroot::chroot(root, &master_args), &master_log)?;
    let master_pid = master.id();
    let addrs = util::read_addr_file(&addr_file, &mut master, Duration::from_secs(20));
    let (listen, http) = match &addrs {
        Ok((agents, http)) => (agents.to_string(), http.port()),
        Err(_) => (String::new(), 0),
    };
    let health = match &addrs {
        Ok(_) => wait_http(
            &mut master,
            http,
            "/healthz",
            Duration::from_secs(20),
            |_| true,
        ),
        Err(e) => Err(e.clone()),
    };

    // The agent as the service runs it, plus the master address and the fleet token an
    // operator (or the Ansible role) would put into agent.toml.
    let mut agent_args = as_sentinel.to_vec();
    agent_args.extend([
        "/usr/bin/sentinel-agent",
        "--config",
        "/etc/sentinel/agent.toml",
        "--master",
        &listen,
        "--token-file",
        "/etc/sentinel/fleet-token",
        "--interval",
        "200ms",
    ]);
    let agent_log = work.join("agent-in-root.log");
    let streamed = match &health {
        Ok(_) => {
            let mut agent = spawn_logged(debroot::chroot(root, &agent_args), &agent_log)?;
            let agent_pid = agent.id();
            let hosts = wait_http(
                &mut agent,
                http,
                "/api/v1/hosts",
                Duration::from_secs(20),
                |body| {
                    serde_json::from_str::<serde_json::Value>(body)
                        .is_ok_and(|v| v["hosts"][0]["samples_received"].as_u64().unwrap_or(0) >= 3)
                },
            );
            stop(&mut agent, agent_pid).and(hosts)
        }
        Err(e) => Err(e.clone()),
    };
    let master_stopped = stop(&mut master, master_pid);
    let logs = || {
        format!(
            "master log:\n{}\nagent log:\n{}",
            fs::read_to_string(&master_log).unwrap_or_default(),
            fs::read_to_string(&agent_log).unwrap_or_default()
        )
    };
    let health = health.map_err(|e| format!("master: {e}; {}", logs()))?;
    streamed.map_err(|e| format!("agent -> master: {e}; {}", logs()))?;
    master_stopped?;
    if fs::read_to_string(&master_log)
        .unwrap_or_default()
        .contains("no token_file configured")
    {
        return Err(format!("master ran without the fleet token; {}", logs()));
    }

    let snapshot = root.join(format!("var/lib/sentinel/{shm}.snapshot"));
    if !snapshot.is_file() {
        return Err(format!(
            "no table snapshot {} after SIGTERM; {}",
            snapshot.display(),
            logs()
        ));
    }
    let sentinel_uid = user_exists(root)?
        .split(':')
        .nth(2)
        .and_then(|u| u.parse::<u32>().ok())
        .ok_or("cannot read the sentinel uid")?;
    for file in [root.join("var/lib/sentinel/agent-id"), snapshot] {
        let owner = fs::metadata(&file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .uid();
        if owner != sentinel_uid {
            return Err(format!(
                "{} owned by uid {owner}, not sentinel ({sentinel_uid})",
                file.display()
            ));
        }
    }
    Ok(format!(
        "agent --once mem_total_bytes={}; master (master.toml, fleet-token) /healthz {health}; \
         agent streamed to it with the token; agent-id and table snapshot written by sentinel in /var/lib/sentinel",
        sample["mem_total_bytes"]
    ))
}

/// Starts a command with stdout and stderr going to `log`.
fn spawn_logged(mut cmd: Command, log: &Path) -> Result<std::process::Child> {
    let file = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let file2 = file.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", util::show(&cmd)))
}

/// Polls GET `path` on 127.0.0.1:`port` until it answers 200 with a body `accept` takes,
/// while `child` (the process being waited for) is alive.
fn wait_http(
    child: &mut std::process::Child,
    port: u16,
    path: &str,
    limit: Duration,
    accept: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early: {status}"));
        }
        let last = match http_get(port, path) {
            Ok((200, body)) if accept(&body) => return Ok(body),
            Ok((code, body)) => format!("HTTP {code}: {body:.300}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "GET {path}: not ready within {limit:?}; last: {last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn deb_upgrade(root: &Path, dir: &Path, newer: &str, arch: Arch) -> Result<String> {
    let agent_conf = root.join("etc/sentinel/agent.toml");
    let mut text = fs::read_to_string(&agent_conf).map_err(|e| e.to_string())?;
    text.push_str(&format!("{EDIT}\n"));
    fs::write(&agent_conf, &text).map_err(|e| e.to_string())?;
    let token_before = token_ok(root)?;

    let debs: Vec<PathBuf> = PACKAGES
        .iter()
        .map(|(p, _)| dir.join(dist::deb_name(p, newer, arch)))
        .collect();
    let inside = stage(root, &debs)?;
    let mut args = vec!["dpkg", "-i"];
    args.extend(inside.iter().map(String::as_str));
    in_root(root, &args)?;

    let after = fs::read_to_string(&agent_conf).map_err(|e| e.to_string())?;
    if !after.lines().any(|l| l == EDIT) {
        return Err("the edited line is gone from /etc/sentinel/agent.toml".into());
    }
    let installed = in_root(
        root,
        &["dpkg-query", "-W", "-f", "${Version}", "sentinel-agent"],
    )?;
    if installed.trim() != format!("{newer}-1") {
        return Err(format!("installed version {installed}, expected {newer}-1"));
    }
    if token_ok(root)? != token_before {
        return Err("the upgrade replaced the fleet token".into());
    }
    if root.join("etc/sentinel/agent.toml.dpkg-dist").exists()
        || root.join("etc/sentinel/agent.toml.dpkg-new").exists()
    {
        return Err("dpkg left agent.toml.dpkg-dist/.dpkg-new".into());
    }
    Ok(format!(
        "now {newer}-1; edited line kept; fleet token unchanged"
    ))
}

fn deb_remove(root: &Path) -> Result<String> {
    in_root(root, &["dpkg", "-r", "sentinel-agent", "sentinel-master"])?;
    for path in ["usr/bin/sentinel-agent", "usr/bin/sentinel-master"] {
        if root.join(path).exists() {
            return Err(format!("/{path} still there after remove"));
        }
    }
    for path in [
        "etc/sentinel/agent.toml",
        "etc/sentinel/master.toml",
        "etc/sentinel/fleet-token",
    ] {
        if !root.join(path).exists() {
            return Err(format!(
                "/{path} is gone after remove (config must stay until purge)"
            ));
        }
    }
    let agent = fs::read_to_string(root.join("etc/sentinel/agent.toml")).unwrap_or_default();
    if !agent.lines().any(|l| l == EDIT) {
        return Err("the edited line is gone after remove".into());
    }
    let state = root.join("var/lib/sentinel");
    let kept: Vec<String> = fs::read_dir(&state)
        .map_err(|e| format!("/var/lib/sentinel after remove: {e}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !kept.iter().any(|n| n == "agent-id") || !kept.iter().any(|n| n.ends_with(".snapshot")) {
        return Err(format!(
            "state not kept after remove: /var/lib/sentinel holds {kept:?}"
        ));
    }
    Ok(format!(
        "binaries gone; agent.toml (edited), master.toml, fleet-token and state ({}) kept",
        kept.join(", ")
    ))
}

fn deb_purge(root: &Path) -> Result<String> {
    in_root(
        root,
        &["dpkg", "--purge", "sentinel-agent", "sentinel-master"],
    )?;
    for path in [
        "etc/sentinel/agent.toml",
        "etc/sentinel/master.toml",
        "etc/sentinel/fleet-token",
        "etc/sentinel",
        "var/lib/sentinel",
        "etc/systemd/system/multi-user.target.wants/sentinel-agent.service",
        "etc/systemd/system/multi-user.target.wants/sentinel-master.service",
    ] {
        if root.join(path).symlink_metadata().is_ok() {
            return Err(format!("/{path} still there after purge"));
        }
    }
    Ok("conffiles, fleet-token, agent-id, table snapshot, /etc/sentinel, /var/lib/sentinel and enablement links gone".into())
}

fn rpm_cmd(root: &Path) -> Command {
    let mut cmd = Command::new("rpm");
    // --force-debian: Debian's rpm refuses to install without it; --nodeps: the root's
    // rpm database is empty (its packages are dpkg's).
    cmd.arg("--root")
        .arg(root)
        .args(["--force-debian", "--nodeps"]);
    cmd
}

fn rpm_install(root: &Path, out: &Path, version: &str, arch: Arch) -> Result<String> {
    let rpms: Vec<PathBuf> = PACKAGES
        .iter()
        .map(|(p, _)| out.join(dist::rpm_name(p, version, arch)))
        .collect();
    util::capture(rpm_cmd(root).arg("-i").args(&rpms))?;
    let user = user_exists(root)?;
    token_ok(root)?;
    let config = util::capture(Command::new("rpm").arg("--root").arg(root).args([
        "-qc",
        "sentinel-agent",
        "sentinel-master",
    ]))?;
    for conf in ["/etc/sentinel/agent.toml", "/etc/sentinel/master.toml"] {
        if !config.lines().any(|l| l.trim() == conf) || !root.join(&conf[1..]).is_file() {
            return Err(format!("{conf} not installed as config: {config}"));
        }
    }
    Ok(format!(
        "%pre ran: {user}; %post made fleet-token 0640 root:sentinel; configs in place"
    ))
}

fn rpm_upgrade(root: &Path, dir: &Path, newer: &str, arch: Arch) -> Result<String> {
    let agent_conf = root.join("etc/sentinel/agent.toml");
    let mut text = fs::read_to_string(&agent_conf).map_err(|e| e.to_string())?;
    text.push_str(&format!("{EDIT}\n"));
    fs::write(&agent_conf, &text).map_err(|e| e.to_string())?;
    let rpms: Vec<PathBuf> = PACKAGES
        .iter()
        .map(|(p, _)| dir.join(dist::rpm_name(p, newer, arch)))
        .collect();
    util::capture(rpm_cmd(root).arg("-U").args(&rpms))?;
    let after = fs::read_to_string(&agent_conf).map_err(|e| e.to_string())?;
    if !after.lines().any(|l| l == EDIT) {
        return Err("the edited line is gone from /etc/sentinel/agent.toml".into());
    }
    let q = util::capture(
        Command::new("rpm")
            .arg("--root")
            .arg(root)
            .args(["-q", "sentinel-agent"]),
    )?;
    if !q.contains(newer) {
        return Err(format!("rpm -q says {q}"));
    }
    util::capture(rpm_cmd(root).args(["-e", "sentinel-agent", "sentinel-master"]))?;
    if root.join("usr/bin/sentinel-agent").exists() {
        return Err("/usr/bin/sentinel-agent still there after rpm -e".into());
    }
    let saved = root.join("etc/sentinel/agent.toml.rpmsave");
    if !saved.is_file() {
        return Err("rpm -e did not keep the edited agent.toml as .rpmsave".into());
    }
    Ok(format!(
        "{}; edited line kept; rpm -e kept it as agent.toml.rpmsave",
        q.trim()
    ))
}
