//! Installs what the pipeline needs when it is missing, and reuses it when present:
//! rustup targets, cargo subcommands, Debian packages.

use crate::util::{self, Result};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

pub const TARGETS: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

/// `rustup target add` for the musl targets that are not installed yet.
pub fn ensure_rust_targets() -> Result {
    let installed = util::stdout(Command::new("rustup").args(["target", "list", "--installed"]))?;
    let missing: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    util::run(
        Command::new("rustup")
            .args(["target", "add"])
            .args(&missing),
    )
}

/// `cargo install --locked <krate>` unless `cargo <subcommand> --version` already works.
/// (cargo-deb takes ~65 s to build here, cargo-generate-rpm ~2-4 min.)
pub fn ensure_cargo_tool(subcommand: &str, krate: &str) -> Result {
    if util::works("cargo", &[subcommand, "--version"]) {
        return Ok(());
    }
    util::run(Command::new("cargo").args(["install", "--locked", krate]))
}

/// The C toolchain ring (rustls' crypto) needs for the musl targets: `clang`, which
/// cross-compiles C and assembly for both architectures by `--target` alone, and `llvm-ar`
/// (Debian `llvm`) to archive the objects (.cargo/config.toml `[env]` names both). Reused
/// when both commands already work (any distribution); else installed from Debian.
pub fn ensure_c_toolchain() -> Result {
    if util::works("clang", &["--version"]) && util::works("llvm-ar", &["--version"]) {
        return Ok(());
    }
    ensure_apt(&["clang", "llvm"])
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// `apt-get install` the Debian packages that are not installed yet.
pub fn ensure_apt(packages: &[&str]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        util::run(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
}
