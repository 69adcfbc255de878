//! `cargo xtask dist`: static musl binaries for x86_64 and aarch64, a .deb (cargo-deb) and
//! an .rpm (cargo-generate-rpm) of each binary for each architecture, and SHA256SUMS.
//!
//! Packaging metadata lives in `[package.metadata.deb]` / `[package.metadata.generate-rpm]`
//! of agent/Cargo.toml and master/Cargo.toml; the files they ship are in packaging/.

use crate::tools;
use crate::util::{self, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The two deployables: (Cargo package = binary = Debian/RPM package name, crate dir).
pub const PACKAGES: [(&str, &str); 2] =
    [("sentinel-agent", "agent"), ("sentinel-master", "master")];

/// One target architecture under its three names.
#[derive(Clone, Copy)]
pub struct Arch {
    pub triple: &'static str,
    pub deb: &'static str,
    pub rpm: &'static str,
}

pub const ARCHES: [Arch; 2] = [
    Arch {
        triple: "x86_64-unknown-linux-musl",
        deb: "amd64",
        rpm: "x86_64",
    },
    Arch {
        triple: "aarch64-unknown-linux-musl",
        deb: "arm64",
        rpm: "aarch64",
    },
];

/// Debian revision and RPM release of every package we build.
const REVISION: &str = "1";

pub fn bin_name(package: &str, arch: Arch) -> String {
    format!("{package}-{}", arch.triple)
}
pub fn deb_name(package: &str, version: &str, arch: Arch) -> String {
    format!("{package}_{version}-{REVISION}_{}.deb", arch.deb)
}
pub fn rpm_name(package: &str, version: &str, arch: Arch) -> String {
    format!("{package}-{version}-{REVISION}.{}.rpm", arch.rpm)
}
pub fn built_binary(package: &str, arch: Arch) -> PathBuf {
    util::root()
        .join("target")
        .join(arch.triple)
        .join("release")
        .join(package)
}

pub struct Options {
    /// Package version; default: the workspace version.
    pub version: String,
    /// Where the artifacts go; default target/dist.
    pub out: PathBuf,
    /// Package binaries that are already built (e.g. by `cross`).
    pub no_build: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut version = std::env::var("SENTINEL_VERSION")
            .ok()
            .filter(|v| !v.is_empty());
        let mut out = util::root().join("target/dist");
        let mut no_build = false;
        let mut i = 0;
        while i < args.len() {
            match args[i].as_str() {
                "--version" => version = Some(util::take_value(args, &mut i, "--version")?),
                "--out" => out = PathBuf::from(util::take_value(args, &mut i, "--out")?),
                "--no-build" => no_build = true,
                other => return Err(format!("dist: unknown option `{other}`")),
            }
            i += 1;
        }
        let version = match version {
            Some(v) => v,
            None => util::workspace_version()?,
        };
        util::validate_version(&version)?;
        Ok(Options {
            version,
            out,
            no_build,
        })
    }
}

pub fn run(options: &Options) -> Result<Vec<PathBuf>> {
    let started = Instant::now();
    tools::ensure_rust_targets()?;
    tools::ensure_cargo_tool("deb", "cargo-deb")?;
    tools::ensure_cargo_tool("generate-rpm", "cargo-generate-rpm")?;
    if !options.no_build {
        tools::ensure_c_toolchain()?;
        build()?;
    }
    let built = started.elapsed();
    compress_man_pages()?;
    fs::create_dir_all(&options.out).map_err(|e| format!("{}: {e}", options.out.display()))?;
    clean(&options.out)?;

    let mut artifacts = Vec::new();
    for arch in ARCHES {
        for (package, _) in PACKAGES {
            let src = built_binary(package, arch);
            let dst = options.out.join(bin_name(package, arch));
            fs::copy(&src, &dst).map_err(|e| format!("{}: {e} (built?)", src.display()))?;
            artifacts.push(dst);
        }
    }
    for arch in ARCHES {
        for (package, dir) in PACKAGES {
            artifacts.push(deb(package, arch, &options.version, &options.out)?);
            artifacts.push(rpm(package, dir, arch, &options.version, &options.out)?);
        }
    }
    write_sha256sums(&options.out, &artifacts)?;

    println!(
        "dist: version {} in {}",
        options.version,
        options.out.display()
    );
    for path in &artifacts {
        let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!(
            "  {:>10}  {}",
            size,
            path.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    println!(
        "dist: done in {:.1} s (build {:.1} s)",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
    Ok(artifacts)
}

/// One cargo invocation per binary, for both targets (release profile from the root
/// Cargo.toml; linker from .cargo/config.toml). Separately, because cargo unifies the
/// features of shared dependencies across the packages of one build: built with the master,
/// the agent got the master's clap, tokio and rustls (TLS 1.2) features, 35 KB and more
/// that it never uses, against a 2 MB budget.
fn build() -> Result {
    for (package, _) in PACKAGES {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(util::root())
            .args(["build", "--release", "--locked"]);
        for arch in ARCHES {
            cmd.args(["--target", arch.triple]);
        }
        cmd.args(["-p", package]);
        util::run(&mut cmd)?;
    }
    Ok(())
}

/// cargo-deb compresses man pages itself; cargo-generate-rpm ships files as they are, so
/// the RPM assets point at target/packaging/*.8.gz made here (gzip -n: reproducible).
pub fn compress_man_pages() -> Result {
    let dir = util::root().join("target/packaging");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (package, crate_dir) in PACKAGES {
        let page = util::root().join(format!("packaging/{crate_dir}/{package}.8"));
        let gz = util::stdout_bytes(Command::new("gzip").args(["-9", "-n", "-c"]).arg(&page))?;
        let dst = dir.join(format!("{package}.8.gz"));
        fs::write(&dst, gz).map_err(|e| format!("{}: {e}", dst.display()))?;
    }
    Ok(())
}

/// Removes artifacts of an earlier run so that the directory holds one version only.
fn clean(out: &Path) -> Result {
    let entries = fs::read_dir(out).map_err(|e| format!("{}: {e}", out.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("sentinel-") || name == "SHA256SUMS" {
            fs::remove_file(entry.path()).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(())
}

/// `cargo deb --no-build`: Architecture comes from --target; the version override
/// replaces the Cargo.toml version for this package only.
pub fn deb(package: &str, arch: Arch, version: &str, out: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(util::root())
        .args([
            "deb",
            "-p",
            package,
            "--target",
            arch.triple,
            "--no-build",
            "--no-strip",
            "-o",
        ])
        .arg(out)
        .args(["--deb-version", &format!("{version}-{REVISION}")]);
    util::capture(&mut cmd)?;
    let path = out.join(deb_name(package, version, arch));
    exists(path)
}

/// `cargo generate-rpm`: the arch comes from --target, the version from --set-metadata.
pub fn rpm(
    package: &str,
    crate_dir: &str,
    arch: Arch,
    version: &str,
    out: &Path,
) -> Result<PathBuf> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(util::root())
        .args([
            "generate-rpm",
            "-p",
            crate_dir,
            "--target",
            arch.triple,
            "-o",
        ])
        .arg(out)
        .args(["--set-metadata", &format!("version = \"{version}\"")])
        .args(["--set-metadata", &format!("release = \"{REVISION}\"")]);
    util::capture(&mut cmd)?;
    let path = out.join(rpm_name(package, version, arch));
    exists(path)
}

fn exists(path: PathBuf) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("expected {} was not produced", path.display()))
    }
}

fn write_sha256sums(out: &Path, artifacts: &[PathBuf]) -> Result {
    let mut cmd = Command::new("sha256sum");
    cmd.current_dir(out);
    for path in artifacts {
        cmd.arg(path.file_name().unwrap_or_default());
    }
    let sums = util::stdout(&mut cmd)?;
    fs::write(out.join("SHA256SUMS"), sums).map_err(|e| format!("SHA256SUMS: {e}"))
}
