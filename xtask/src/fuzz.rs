//! `cargo xtask fuzz [--seconds N] [TARGET...]`: run the fuzz targets in `fuzz/` for a bounded
//! time each (default 30 s), failing on the first crash.
//!
//! The targets are cargo-fuzz targets (`cargo fuzz run TARGET` works too), but this task builds
//! them itself with the same coverage instrumentation, so nothing needs installing: libFuzzer
//! comes with `libfuzzer-sys`. The instrumentation needs unstable rustc options; on a stable
//! toolchain `RUSTC_BOOTSTRAP=1` lets rustc accept them. `--sanitizer address` adds
//! AddressSanitizer (slower to build; the default is none). Each target starts from its seeds in
//! `fuzz/corpus/TARGET/` (kept in the repository) and writes what it finds to a corpus under the
//! target directory, so the work tree stays clean. A crashing input is saved under
//! `fuzz/artifacts/TARGET/`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{cargo, run as run_command, workspace_root};

/// Every target in `fuzz/fuzz_targets/`.
const TARGETS: &[&str] = &[
    "frame_decoder",
    "bridge_session",
    "dbus_message",
    "dbus_json",
];

const DEFAULT_SECONDS: u64 = 30;

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut sanitizer = false;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sanitizer" => {
                sanitizer = match args.next().map(String::as_str) {
                    Some("address") => true,
                    Some("none") => false,
                    other => bail!("--sanitizer takes address or none, not {other:?}"),
                };
            }
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
    let target_dir = target_dir();
    eprintln!("xtask: building the fuzz targets");
    run_command(&mut build_command(&targets, sanitizer))?;
    let bin_dir = target_dir.join(HOST).join("release");
    for target in targets {
        let seeds = workspace_root().join("fuzz/corpus").join(target);
        let corpus = target_dir.join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let artifacts = workspace_root().join("fuzz/artifacts").join(target);
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("cannot create {}", artifacts.display()))?;
        let mut command = Command::new(bin_dir.join(target));
        command
            // New inputs go to the first directory; the seeds in the repository are only read.
            .arg(&corpus)
            .arg(&seeds)
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(format!("-max_total_time={seconds}"))
            // One input taking this long is a hang, and a failure.
            .arg("-timeout=20")
            .arg("-rss_limit_mb=4096")
            .arg("-print_final_stats=1");
        // libFuzzer reports every new input: keep that in a log, and show its verdict.
        let log_path = target_dir.join("fuzz-logs").join(format!("{target}.log"));
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot write {}", log_path.display()))?;
        command.stdout(log.try_clone()?).stderr(log);
        let status = command
            .status()
            .with_context(|| format!("cannot run the fuzz target {target}"))?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if !status.success() {
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("  {line}");
            }
            bail!(
                "fuzz target {target} failed ({status}); the crashing input is under \
                 fuzz/artifacts/{target}/, the whole log in {}",
                log_path.display()
            );
        }
        for line in lines
            .iter()
            .filter(|l| l.starts_with("Done ") || l.starts_with("stat::"))
        {
            eprintln!("  {line}");
        }
    }
    Ok(())
}

/// The host triple: naming it makes the instrumentation flags apply to the targets only, not to
/// build scripts and proc macros.
const HOST: &str = "x86_64-unknown-linux-gnu";

/// `cargo build` of the fuzz targets with the instrumentation cargo-fuzz uses.
fn build_command(targets: &[&str], sanitizer: bool) -> Command {
    let mut flags = vec![
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ];
    if sanitizer {
        flags.push("-Zsanitizer=address");
    }
    let mut command = cargo();
    command
        .current_dir(workspace_root().join("fuzz"))
        .args(["build", "--release", "--target", HOST])
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env_remove("RUSTFLAGS");
    for target in targets {
        command.args(["--bin", target]);
    }
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
