//! `cargo xtask ci`: what CI runs. Packaging part: build the deployables, then check them.
//! (The lead extends this with fmt, clippy, tests and the end-to-end suites.)

use crate::util::Result;
use crate::{checks, dist};

pub fn run() -> Result {
    let dist_options = dist::Options::parse(&[])?;
    dist::run(&dist_options)?;
    let check_options = checks::Options {
        out: dist_options.out,
        skip_install: false,
    };
    checks::run(&check_options)
}
