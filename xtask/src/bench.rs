//! `cargo xtask bench NAME...`: benchmarks from the `ferry-bench` crate, on a release build.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::util::{cargo, run as run_command, workspace_root};

pub fn run(args: &[String]) -> Result<()> {
    if args.is_empty() {
        bail!("usage: cargo xtask bench NAME... (e.g. `cargo xtask bench bootstrap`)");
    }
    // The benchmarks use the test bed (loopback sshd, users): make sure it is there.
    let missing = crate::setup::ensure()?;
    if missing > 0 {
        bail!("the test bed is incomplete; run `cargo xtask setup` as root");
    }
    run_command(cargo().args(["build", "--release", "--package", "ferry", "--bin", "ferry"]))?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_relative() {
                workspace_root().join(d)
            } else {
                d
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    let ferry = target_dir.join("release/ferry");
    run_command(
        cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "--package",
                "ferry-bench",
                "--",
            ])
            .args(args)
            .env("FERRY_BIN", &ferry),
    )
}
