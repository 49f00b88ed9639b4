//! `cargo xtask test`: everything CI checks, in order, each step named and timed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::util::{cargo, run as run_command, workspace_root};

enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

struct Step {
    name: &'static str,
    outcome: Outcome,
    took: Duration,
}

/// Run one step: print its name, then its result and duration.
fn step(steps: &mut Vec<Step>, name: &'static str, f: impl FnOnce() -> Result<Option<String>>) {
    println!("\n==> {name}");
    let start = Instant::now();
    let outcome = match f() {
        Ok(None) => Outcome::Passed,
        Ok(Some(why)) => Outcome::Skipped(why),
        Err(e) => Outcome::Failed(format!("{e:#}")),
    };
    let took = start.elapsed();
    let verdict = match &outcome {
        Outcome::Passed => "ok".to_string(),
        Outcome::Failed(why) => format!("FAILED: {why}"),
        Outcome::Skipped(why) => format!("skipped: {why}"),
    };
    println!("==> {name}: {verdict} ({:.1}s)", took.as_secs_f64());
    steps.push(Step {
        name,
        outcome,
        took,
    });
}

pub fn run() -> Result<()> {
    let ci = ferry_testbed::in_ci();
    let mut steps = Vec::new();

    // Setup first: the root package's build script needs the musl targets it installs.
    let totals = std::cell::Cell::new(Counts::default());
    step(&mut steps, "setup", || {
        let missing = crate::setup::ensure()?;
        if missing > 0 {
            if ci {
                bail!("{missing} component(s) missing; CI needs all of them");
            }
            return Ok(Some(format!(
                "{missing} component(s) missing: the tests that need them will skip"
            )));
        }
        Ok(None)
    });
    if matches!(steps[0].outcome, Outcome::Failed(_)) {
        return summary(&steps);
    }

    step(&mut steps, "cargo fmt --check", || {
        run_command(cargo().args(["fmt", "--all", "--", "--check"]))?;
        Ok(None)
    });
    step(&mut steps, "cargo clippy", || {
        run_command(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        Ok(None)
    });
    step(&mut steps, "shellcheck stage1", || {
        let script = workspace_root().join("stage1/stage1.sh");
        if !script.exists() {
            return Ok(Some(format!("{} does not exist", rel(&script))));
        }
        // No shebang (it runs as `sh -c SCRIPT`): tell shellcheck it is POSIX sh.
        run_command(
            Command::new("shellcheck")
                .current_dir(workspace_root())
                .args(["--shell=sh"])
                .arg(rel(&script)),
        )?;
        Ok(None)
    });

    step(&mut steps, "fuzz (30 s a target)", || {
        crate::fuzz::run(&[])?;
        Ok(None)
    });

    step(&mut steps, "images follow the toolchain", || {
        crate::images::check()?;
        Ok(None)
    });

    // Further checks go here, before the test suite.

    step(&mut steps, "cargo test", || {
        // `CI` is inherited as it is: the tests fail, rather than skip, on a missing component.
        let (counts, status) = cargo_test(cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
        totals.set(counts);
        if !status.success() {
            bail!("cargo test failed: {status}");
        }
        Ok(None)
    });
    let result = summary(&steps);
    let t = totals.get();
    // One plain line with the whole suite's count, after everything else.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        t.passed, t.failed, t.ignored
    );
    result
}

/// What `cargo test` reported, added up over every test binary.
#[derive(Clone, Copy, Default)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Run `cargo test`, passing its output through and adding up its `test result:` lines.
fn cargo_test(command: &mut Command) -> Result<(Counts, std::process::ExitStatus)> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = command.stdout(std::process::Stdio::piped()).spawn()?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let _ = writeln!(out, "{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            // "ok. 5 passed; 0 failed; 1 ignored; ..."
            let words: Vec<&str> = rest.split_whitespace().collect();
            for pair in words.windows(2) {
                let n: u64 = pair[0].parse().unwrap_or(0);
                match pair[1].trim_end_matches(';') {
                    "passed" => counts.passed += n,
                    "failed" => counts.failed += n,
                    "ignored" => counts.ignored += n,
                    _ => {}
                }
            }
        }
    }
    drop(out);
    Ok((counts, child.wait()?))
}

fn rel(path: &Path) -> String {
    let root = workspace_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn summary(steps: &[Step]) -> Result<()> {
    println!("\n==> summary");
    let mut failed = Vec::new();
    for s in steps {
        let verdict = match &s.outcome {
            Outcome::Passed => "ok",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => {
                failed.push(s.name);
                "FAILED"
            }
        };
        println!(
            "    {:<20} {:<8} {:>7.1}s",
            s.name,
            verdict,
            s.took.as_secs_f64()
        );
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}
