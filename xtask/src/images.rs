//! `cargo xtask test`'s check that ferry carries every image the toolchain can build, whatever
//! the order in which ferry was built and the toolchain's targets were installed.
//!
//! README's two commands, run in that order on a fresh machine, first build ferry without the
//! musl targets and `rust-src`, then install them (`setup`). A clean clone in CI always installs
//! first, so it would never see a ferry that lacks an image. This check reproduces the other
//! order's essential step: it changes the toolchain's record of its installed components the way
//! rustup does (a new modification time on `lib/rustlib/components`), and requires the next build
//! of ferry to run its build script again; then every installed musl target must have its image.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::util::{capture, cargo, stdout_of, workspace_root};

/// (arch as `ferry payloads` lists it, musl target).
const TARGETS: [(&str, &str); 2] = [
    ("x86_64", "x86_64-unknown-linux-musl"),
    ("aarch64", "aarch64-unknown-linux-musl"),
];

pub fn check() -> Result<()> {
    let sysroot = PathBuf::from(
        stdout_of(std::process::Command::new("rustc").args(["--print", "sysroot"]))?.trim(),
    );
    let rustlib = sysroot.join("lib/rustlib");
    let components = rustlib.join("components");

    build_ferry()?;
    if components.is_file() {
        // What `rustup target add` does to it: a new modification time (contents untouched).
        let file = std::fs::File::options()
            .append(true)
            .open(&components)
            .with_context(|| format!("cannot open {}", components.display()))?;
        file.set_modified(std::time::SystemTime::now())
            .with_context(|| format!("cannot touch {}", components.display()))?;
        drop(file);
        if !build_ferry()? {
            bail!(
                "ferry's build script did not run again after the toolchain's components changed \
                 ({}): a ferry built before `rustup target add` would lack that target's image",
                components.display()
            );
        }
    } else {
        println!(
            "no {}: not a rustup toolchain, order check skipped",
            components.display()
        );
    }

    let exe = target_dir().join("debug/ferry");
    let listed = stdout_of(std::process::Command::new(&exe).arg("payloads"))?;
    let mut missing = Vec::new();
    for (arch, target) in TARGETS {
        let installed = rustlib.join(target).join("lib").is_dir();
        let carried = listed
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(arch));
        println!("{arch}: target {target} installed: {installed}; image carried: {carried}");
        if installed && !carried {
            missing.push(arch);
        }
    }
    if !missing.is_empty() {
        bail!(
            "ferry lacks the image for {} although the toolchain can build it",
            missing.join(", ")
        );
    }
    Ok(())
}

/// `cargo build -p ferry`; whether ferry's build script ran.
fn build_ferry() -> Result<bool> {
    let output = capture(cargo().args(["build", "-v", "-p", "ferry", "--bin", "ferry"]))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("cargo build -p ferry failed:\n{stderr}");
    }
    Ok(stderr.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("Running") && l.contains("/build/ferry-") && l.contains("build-script-build")
    }))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}
