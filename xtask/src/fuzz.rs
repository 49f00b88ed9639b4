//! `cargo xtask fuzz [--seconds N] [TARGET...]`: run the fuzz targets in `fuzz/` for a bounded
//! time each (default 30 s), failing on the first crash.
//!
//! cargo-fuzz is installed when missing (`cargo install cargo-fuzz --locked`). It passes
//! unstable `-Z` flags to rustc (sanitizers, coverage instrumentation); on a stable toolchain
//! `RUSTC_BOOTSTRAP=1` lets rustc accept them. Each target starts from its seeds in
//! `fuzz/corpus/TARGET/` (kept in the repository) and writes what it finds to a corpus under the
//! target directory, so the work tree stays clean. A crashing input is saved under
//! `fuzz/artifacts/TARGET/`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{cargo, run as run_command, workspace_root};

/// Every target in `fuzz/fuzz_targets/`.
const TARGETS: &[&str] = &["frame_decoder", "bridge_session"];

const DEFAULT_SECONDS: u64 = 30;

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let n = args.next().context("--seconds needs a number")?;
                seconds = n
                    .parse()
                    .with_context(|| format!("--seconds: {n:?} is not a number"))?;
            }
            t if TARGETS.contains(&t) => targets.push(t),
            other => bail!(
                "usage: cargo xtask fuzz [--seconds N] [TARGET...]; unknown argument {other:?} \
                 (targets: {})",
                TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    ensure_cargo_fuzz()?;

    let target_dir = target_dir();
    for target in targets {
        let seeds = workspace_root().join("fuzz/corpus").join(target);
        let corpus = target_dir.join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let mut command = fuzz_command();
        command
            .args(["run", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // One input taking this long is a hang, and a failure.
            .arg("-timeout=20")
            .arg("-rss_limit_mb=4096")
            .arg("-print_final_stats=1");
        run_command(&mut command).with_context(|| {
            format!("fuzz target {target} failed (the crashing input is under fuzz/artifacts/{target}/)")
        })?;
    }
    Ok(())
}

/// `cargo fuzz ...` as this workspace runs it: on the stable toolchain, with its own target dir.
fn fuzz_command() -> Command {
    let mut command = cargo();
    command
        .arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir());
    command
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_relative() {
                workspace_root().join(d)
            } else {
                d
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn ensure_cargo_fuzz() -> Result<()> {
    let works = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz");
    run_command(cargo().args(["install", "cargo-fuzz", "--locked"]))
}
