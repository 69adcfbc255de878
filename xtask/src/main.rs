//! `cargo xtask <command>`: project automation that needs nothing but cargo.
//!
//! - `dist`            static musl binaries (x86_64, aarch64), .deb, .rpm and SHA256SUMS in target/dist/
//! - `check-packages`  assert the deployables are static, run, lint clean and install (CI)
//! - `demo`            build and start a master and an agent for this machine (README)
//! - `compat-bins`     build (once, cached) the 0.1.0 binaries the mixed-version tests use
//! - `ci`              everything CI runs (see ci.rs)

mod checks;
mod ci;
mod compat;
mod debroot;
mod demo;
mod dist;
mod syscalls;
mod tools;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  dist [--version V] [--out DIR] [--no-build]
        build sentinel-agent and sentinel-master for x86_64/aarch64 musl and package them
        (.deb, .rpm, SHA256SUMS) into DIR (default target/dist). --version (or env
        SENTINEL_VERSION) overrides the package version without editing Cargo.toml.
        --no-build packages binaries already in target/<triple>/release (e.g. built by cross).
        Earlier sentinel-* artifacts and SHA256SUMS in DIR are removed first.
  check-packages [--out DIR] [--skip-install]
        assert the packages in DIR: static binaries, aarch64 runs under qemu, Architecture
        fields, lintian, rpmlint, systemd-analyze, install/upgrade/purge in a Debian root,
        rpm --root install. --skip-install skips the Debian-root and rpm-root steps.
  demo [--listen ADDR] [--http ADDR] [--check] [--debug]
        build Sentinel, start a master and an agent for this machine, print the dashboard
        URL; Ctrl-C stops both. --check exits once this host is up (smoke test).
  compat-bins
        print the directory of the 0.1.0 sentinel-agent and sentinel-master, built from
        280edf3 into ${SENTINEL_CACHE_DIR:-/var/cache/sentinel-ci} (not root:
        ~/.cache/sentinel-ci) when missing; run the mixed-version tests with
        SENTINEL_COMPAT_BIN_DIR=<that directory>.
  ci [--only STEP,...] [--skip STEP,...]
        install what the tests need and run every test (the README's test command; CI runs
        it). Steps: fmt clippy build unit e2e compat demo dist packages rollout prometheus
        browser fuzz.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "dist" => dist::Options::parse(rest).and_then(|o| dist::run(&o).map(|_| ())),
        "check-packages" => checks::Options::parse(rest).and_then(|o| checks::run(&o)),
        "ci" => ci::run(rest),
        "compat-bins" => compat::release_bins().map(|dir| println!("{}", dir.display())),
        "demo" => demo::run(rest).map_err(|e| e.to_string()),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask {command}: error: {error}");
            ExitCode::FAILURE
        }
    }
}
