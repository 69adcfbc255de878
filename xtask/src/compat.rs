//! The 0.1.0 binaries the mixed-version tests run against (tests/tests/compat.rs).
//!
//! CI runs in a fresh clone every time, so the binaries are kept outside it, in
//! `${SENTINEL_CACHE_DIR:-/var/cache/sentinel-ci}/sentinel-0.1.0-280edf3/bin/` (for a user
//! other than root the default is `${XDG_CACHE_HOME:-~/.cache}/sentinel-ci`). When they are
//! missing, the release commit's tree is extracted with `git archive` into a temporary
//! directory of the cache and built there (debug, `--locked`, its own target directory);
//! the finished `bin/` directory is then renamed into place, so a cache entry is either
//! complete or absent, never half-written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{self, Result};

/// The commit of release 0.1.0 (what a mixed fleet still runs).
pub const RELEASE_COMMIT: &str = "280edf3";
/// The version those binaries report (`--version`), checked after the build.
pub const RELEASE_VERSION: &str = "0.1.0";
/// The environment variable that tells tests/tests/compat.rs where the 0.1.0 binaries are.
pub const BIN_DIR_ENV: &str = "SENTINEL_COMPAT_BIN_DIR";
const BINARIES: [&str; 2] = ["sentinel-agent", "sentinel-master"];

/// The cache root: `SENTINEL_CACHE_DIR`; else /var/cache/sentinel-ci for root (CI runs as
/// root), `${XDG_CACHE_HOME:-~/.cache}/sentinel-ci` for anyone else.
pub fn cache_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if let Some(dir) = std::env::var_os("SENTINEL_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let user_cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match user_cache {
        Some(dir) if !root => dir.join("sentinel-ci"),
        _ => PathBuf::from("/var/cache/sentinel-ci"),
    }
}

fn entry_dir() -> PathBuf {
    cache_dir().join(format!("sentinel-{RELEASE_VERSION}-{RELEASE_COMMIT}"))
}

fn complete(bin: &Path) -> bool {
    BINARIES.iter().all(|b| bin.join(b).is_file())
}

/// Returns the directory holding the 0.1.0 `sentinel-agent` and `sentinel-master`, building
/// them from [`RELEASE_COMMIT`] first when the cache does not have them.
pub fn release_bins() -> Result<PathBuf> {
    let entry = entry_dir();
    let bin = entry.join("bin");
    remove_abandoned_scratch(&cache_dir());
    if complete(&bin) {
        eprintln!(
            "compat: using the cached {RELEASE_VERSION} binaries in {}",
            bin.display()
        );
        return Ok(bin);
    }
    let root = util::root();
    let has_commit = Command::new("git")
        .args(["cat-file", "-e", &format!("{RELEASE_COMMIT}^{{commit}}")])
        .current_dir(&root)
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run git: {e}"))?
        .success();
    if !has_commit {
        return Err(format!(
            "commit {RELEASE_COMMIT} (release {RELEASE_VERSION}) is not in the clone at {}: \
             the compat step needs full history (e.g. `git fetch --unshallow`), or a cache \
             holding {}/{{sentinel-agent,sentinel-master}}",
            root.display(),
            bin.display()
        ));
    }
    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    // One scratch directory per run, named by its pid: concurrent runs never share one.
    let scratch = cache.join(format!(".build-{RELEASE_COMMIT}-{}", std::process::id()));
    let result = build_into(&root, &scratch, &entry);
    let _ = fs::remove_dir_all(&scratch);
    result?;
    Ok(bin)
}

/// Removes the scratch directories of builds whose process is gone (an interrupted run leaves
/// its sources and a ~1 GB target directory behind).
fn remove_abandoned_scratch(cache: &Path) {
    let prefix = format!(".build-{RELEASE_COMMIT}-");
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            eprintln!(
                "compat: removing an abandoned build in {}",
                e.path().display()
            );
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn build_into(root: &Path, scratch: &Path, entry: &Path) -> Result {
    let src = scratch.join("src");
    let target = scratch.join("target");
    fs::create_dir_all(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    eprintln!(
        "compat: building the {RELEASE_VERSION} binaries from {RELEASE_COMMIT} in {}",
        scratch.display()
    );
    let archive = scratch.join("src.tar");
    util::run(
        Command::new("git")
            .args(["archive", "--format=tar", "-o"])
            .arg(&archive)
            .arg(RELEASE_COMMIT)
            .current_dir(root),
    )?;
    util::run(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&src),
    )?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    util::run(
        Command::new(cargo)
            .args(["build", "--locked", "--bins"])
            .args(["-p", "sentinel-agent", "-p", "sentinel-master"])
            .env("CARGO_TARGET_DIR", &target)
            // The release's own .cargo/config.toml applies; nothing of this clone's build leaks in.
            .env_remove("RUSTFLAGS")
            .current_dir(&src),
    )?;
    let staged = scratch.join("entry");
    let staged_bin = staged.join("bin");
    fs::create_dir_all(&staged_bin).map_err(|e| format!("{}: {e}", staged_bin.display()))?;
    for b in BINARIES {
        let from = target.join("debug").join(b);
        fs::copy(&from, staged_bin.join(b)).map_err(|e| format!("{}: {e}", from.display()))?;
        let version = util::stdout(Command::new(staged_bin.join(b)).arg("--version"))?;
        if !version.contains(RELEASE_VERSION) {
            return Err(format!(
                "{b} built from {RELEASE_COMMIT} reports `{}`, not {RELEASE_VERSION}",
                version.trim()
            ));
        }
    }
    fs::write(
        staged.join("COMMIT"),
        format!("{RELEASE_COMMIT} {RELEASE_VERSION}\n"),
    )
    .map_err(|e| e.to_string())?;
    // Another run on this machine may have finished first: its entry is as good as ours and
    // may be in use, so it is kept. Only an incomplete entry is replaced.
    if complete(&entry.join("bin")) {
        return Ok(());
    }
    if entry.exists() {
        fs::remove_dir_all(entry).map_err(|e| format!("{}: {e}", entry.display()))?;
    }
    if let Err(e) = fs::rename(&staged, entry) {
        if !complete(&entry.join("bin")) {
            return Err(format!("{}: {e}", entry.display()));
        }
    }
    eprintln!(
        "compat: cached the {RELEASE_VERSION} binaries in {}",
        entry.display()
    );
    Ok(())
}
