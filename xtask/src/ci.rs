//! `cargo xtask ci`: the README's test command, and what CI runs (`.ci/run`).
//!
//! Installs what the tests need when it is missing (each step installs its own: rustup
//! components and targets, cargo tools, Debian and PyPI/npm packages) and reuses what is
//! present, then runs every suite. Every step runs even when an earlier one failed, so one run
//! shows every failure; the summary at the end lists each step with its time and the command
//! exits non-zero if any step failed. Steps that need root say SKIPPED when not run as root.

use std::process::Command;
use std::time::Instant;

use crate::util::{self, Result};
use crate::{checks, compat, demo, dist};

/// Every step, in order: fast static checks first, then tests from the smallest scope up.
const STEPS: &[(&str, &str)] = &[
    ("fmt", "cargo fmt --check"),
    (
        "clippy",
        "cargo clippy --workspace --all-targets -D warnings",
    ),
    ("build", "cargo build --workspace --bins"),
    (
        "unit",
        "unit and crate integration tests (cargo test --workspace, e2e crate excluded)",
    ),
    (
        "e2e",
        "end-to-end tests: real master and agents on loopback (tests/tests)",
    ),
    (
        "compat",
        "mixed-version fleet: the 0.1.0 agent and master (built from 280edf3, cached) against the new ones (tests/tests/compat.rs)",
    ),
    (
        "demo",
        "the README's first command, as a smoke test (cargo xtask demo --check)",
    ),
    (
        "dist",
        "static musl builds for x86_64 and aarch64, .deb, .rpm (cargo xtask dist)",
    ),
    (
        "packages",
        "package checks: static, qemu, lintian, rpmlint, systemd-analyze, install/upgrade/purge",
    ),
    (
        "rollout",
        "booted systemd hosts + Ansible (tests/e2e/run.sh)",
    ),
    (
        "prometheus",
        "promtool, a real Prometheus scraping /metrics, remote_write across an outage, PromQL by host label (tests/prometheus/run.sh)",
    ),
    (
        "browser",
        "headless Chromium: the dashboard, hostile hostnames, viewer and operator, identities, labels, 5,000 and 10,000 hosts (tests/browser/run.sh all)",
    ),
    (
        "fuzz",
        "cargo-fuzz targets for a bounded time (fuzz/run.sh)",
    ),
];

enum Outcome {
    Passed,
    Skipped(String),
    Failed(String),
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn is_root() -> bool {
    util::stdout(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0")
}

/// Runs a suite's own entry script (it installs what it needs and says SKIPPED itself).
fn script(path: &str, args: &[&str]) -> Result<Outcome> {
    let root = util::root();
    if !root.join(path).exists() {
        return Ok(Outcome::Failed(format!("{path} is missing")));
    }
    util::run(
        Command::new("bash")
            .arg(root.join(path))
            .args(args)
            .current_dir(&root),
    )?;
    Ok(Outcome::Passed)
}

fn step(name: &str) -> Result<Outcome> {
    let root = util::root();
    let in_root = |mut c: Command| {
        c.current_dir(&root);
        c
    };
    match name {
        "fmt" => {
            let _ =
                util::run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]));
            util::run(in_root(cargo()).args(["fmt", "--all", "--", "--check"]))?;
        }
        "clippy" => util::run(in_root(cargo()).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?,
        "build" => util::run(in_root(cargo()).args(["build", "--workspace", "--bins"]))?,
        "unit" => util::run(in_root(cargo()).args([
            "test",
            "--workspace",
            "--exclude",
            "sentinel-tests",
        ]))?,
        // One test at a time: each starts its own master and agents and some assert timings.
        // Without the 0.1.0 binaries the compat tests say SKIPPED here: they run once, below.
        "e2e" => util::run(
            in_root(cargo())
                .args(["test", "-p", "sentinel-tests", "--", "--test-threads", "1"])
                .env_remove(compat::BIN_DIR_ENV),
        )?,
        "compat" => {
            let bins = compat::release_bins()?;
            // The new side: the debug binaries the test harness runs (warm after `build`).
            util::run(in_root(cargo()).args([
                "build",
                "--bins",
                "-p",
                "sentinel-agent",
                "-p",
                "sentinel-master",
            ]))?;
            util::run(
                in_root(cargo())
                    .args(["test", "-p", "sentinel-tests", "--test", "compat"])
                    .args(["--", "--test-threads", "1", "--nocapture"])
                    .env(compat::BIN_DIR_ENV, &bins),
            )?;
        }
        "demo" => {
            let args: Vec<String> = [
                "--debug",
                "--check",
                // Port 0: the master binds free ports and the demo reads them back.
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            demo::run(&args).map_err(|e| e.to_string())?;
        }
        "dist" => {
            dist::run(&dist::Options::parse(&[])?)?;
        }
        "packages" => {
            if !is_root() {
                return Ok(Outcome::Skipped("package install checks need root".into()));
            }
            let out = dist::Options::parse(&[])?.out;
            checks::run(&checks::Options {
                out,
                skip_install: false,
            })?;
        }
        "rollout" => return script("tests/e2e/run.sh", &[]),
        "prometheus" => return script("tests/prometheus/run.sh", &[]),
        "browser" => return script("tests/browser/run.sh", &["all"]),
        "fuzz" => return script("fuzz/run.sh", &[]),
        other => return Err(format!("unknown step `{other}`")),
    }
    Ok(Outcome::Passed)
}

fn parse_list(args: &[String], flag: &str) -> Result<Option<Vec<String>>> {
    let Some(i) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    let list = args
        .get(i + 1)
        .ok_or(format!("{flag} needs a comma-separated list of steps"))?;
    let steps: Vec<String> = list.split(',').map(str::to_owned).collect();
    for s in &steps {
        if !STEPS.iter().any(|(n, _)| n == s) {
            return Err(format!("{flag}: unknown step `{s}`"));
        }
    }
    Ok(Some(steps))
}

pub fn run(args: &[String]) -> Result {
    let only = parse_list(args, "--only")?;
    let skip = parse_list(args, "--skip")?.unwrap_or_default();
    let started = Instant::now();
    let mut results = Vec::new();
    for (name, what) in STEPS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|s| s == name))
            || skip.iter().any(|s| s == name)
        {
            continue;
        }
        eprintln!("\n==== ci step `{name}`: {what}");
        let t = Instant::now();
        let outcome = step(name).unwrap_or_else(Outcome::Failed);
        if let Outcome::Failed(e) = &outcome {
            eprintln!("==== ci step `{name}` FAILED: {e}");
        }
        results.push((*name, outcome, t.elapsed()));
    }
    eprintln!(
        "\n==== ci summary ({:.0} s in all)",
        started.elapsed().as_secs_f64()
    );
    let mut failed = 0;
    for (name, outcome, took) in &results {
        let secs = took.as_secs_f64();
        match outcome {
            Outcome::Passed => eprintln!("PASS     {name:<9} {secs:>6.0} s"),
            Outcome::Skipped(why) => eprintln!("SKIPPED  {name:<9} {secs:>6.0} s  {why}"),
            Outcome::Failed(e) => {
                failed += 1;
                let first = e.lines().next().unwrap_or_default();
                eprintln!("FAIL     {name:<9} {secs:>6.0} s  {first}");
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} step(s) failed"));
    }
    Ok(())
}
