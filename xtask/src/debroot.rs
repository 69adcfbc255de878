//! A debootstrap'ed Debian root for install tests, cached as a tarball so reruns take
//! seconds (debootstrap ~40-90 s, extraction ~3 s). Commands run in it through `chroot`
//! inside a private mount namespace, so nothing stays mounted when they end.

use crate::tools;
use crate::util::{self, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian release of the test root; override with SENTINEL_TEST_SUITE.
const DEFAULT_SUITE: &str = "bookworm";
/// What the packages need at install time beyond minbase: adduser (Depends), systemd
/// (deb-systemd-helper, the unit directories). Bump CACHE_REV when this changes.
const INCLUDE: &str = "adduser,systemd";
const CACHE_REV: u32 = 1;

/// Where the tarball is kept: SENTINEL_TEST_CACHE, else /var/cache/sentinel-test (outside
/// target/ so that a fresh CI clone on the same machine reuses it).
fn cache_dir() -> PathBuf {
    std::env::var_os("SENTINEL_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sentinel-test"))
}

fn suite() -> String {
    std::env::var("SENTINEL_TEST_SUITE").unwrap_or_else(|_| DEFAULT_SUITE.to_string())
}

/// The cached tarball, created with debootstrap when missing.
pub fn tarball() -> Result<PathBuf> {
    let suite = suite();
    let dir = cache_dir();
    let tar = dir.join(format!("debian-{suite}-minbase-r{CACHE_REV}.tar.zst"));
    if tar.is_file() {
        return Ok(tar);
    }
    tools::ensure_apt(&["debootstrap", "zstd"])?;
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let build = dir.join(format!("build-{suite}"));
    let _ = fs::remove_dir_all(&build);
    let mirror = mirror()?;
    let log = dir.join(format!("debootstrap-{suite}.log"));
    eprintln!("debootstrap {suite} from {mirror} (log: {})", log.display());
    util::run_logged(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}"), &suite])
            .arg(&build)
            .arg(&mirror),
        &log,
    )?;
    let partial = tar.with_extension("partial");
    util::run(
        Command::new("tar")
            .arg("-C")
            .arg(&build)
            .args(["--numeric-owner", "--zstd", "-cf"])
            .arg(&partial)
            .arg("."),
    )?;
    fs::rename(&partial, &tar).map_err(|e| format!("{}: {e}", tar.display()))?;
    let _ = fs::remove_dir_all(&build);
    Ok(tar)
}

/// A fresh copy of the cached root at `dest`.
pub fn extract(dest: &Path) -> Result {
    let tar = tarball()?;
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    util::run(
        Command::new("tar")
            .arg("-C")
            .arg(dest)
            .args(["--numeric-owner", "--zstd", "-xf"])
            .arg(&tar),
    )
}

/// `chroot root args...` with /proc and a private /dev/shm mounted, in a private mount
/// namespace. unshare, sh and chroot all exec: the child's PID is the command's PID.
pub fn chroot(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            r#"R="$1"; shift; mkdir -p "$R/dev/shm" && mount -t proc proc "$R/proc" &&
               mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm" && exec chroot "$R" "$@""#,
        )
        .arg("sh")
        .arg(root)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    cmd
}

/// The Debian mirror apt already uses (SENTINEL_DEBIAN_MIRROR overrides).
fn mirror() -> Result<String> {
    if let Ok(m) = std::env::var("SENTINEL_DEBIAN_MIRROR") {
        return Ok(m);
    }
    let suite = suite();
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "sources"))
        {
            let text = fs::read_to_string(path).unwrap_or_default();
            if let Some(uri) = mirror_from_deb822(&text, &suite) {
                return Ok(uri);
            }
        }
    }
    let text = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    mirror_from_one_line(&text, &suite)
        .ok_or_else(|| format!("no apt source for `{suite}` found; set SENTINEL_DEBIAN_MIRROR"))
}

/// deb822 sources: the first `URIs:` of a stanza whose `Suites:` names the suite itself
/// (not `<suite>-security` or `-updates`).
fn mirror_from_deb822(text: &str, suite: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) else {
            continue;
        };
        if suites.split_whitespace().any(|s| s == suite) {
            if let Some(uri) = uris.split_whitespace().next() {
                return Some(uri.to_string());
            }
        }
    }
    None
}

/// One-line sources: `deb [options] URI SUITE COMPONENTS...`.
fn mirror_from_one_line(text: &str, suite: &str) -> Option<String> {
    for line in text.lines() {
        let mut line = line.trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        line = rest.trim_start();
        if line.starts_with('[') {
            line = line.split_once(']').map_or("", |(_, r)| r.trim_start());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 2 && words[1] == suite {
            return Some(words[0].to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_suite_stanza_not_security_or_updates() {
        let text = "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n\
                    Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            mirror_from_deb822(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_from_deb822(text, "trixie"), None);
    }

    #[test]
    fn one_line_sources_with_and_without_options() {
        let text = "# comment\ndeb-src http://src.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://opt.example/debian bookworm main\n\
                    deb http://plain.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_one_line(text, "bookworm").as_deref(),
            Some("http://opt.example/debian")
        );
        assert_eq!(
            mirror_from_one_line("deb http://plain.example/debian bookworm main", "bookworm")
                .as_deref(),
            Some("http://plain.example/debian")
        );
        assert_eq!(mirror_from_one_line(text, "trixie"), None);
    }
}
