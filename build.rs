//! Builds the bridge (`payload/`) for every shipped target, compresses each image with zstd,
//! hashes it with sha256, and leaves them in `$OUT_DIR/payloads` for `include_dir!`:
//!
//! - `<arch>.zst`: the zstd-compressed static executable;
//! - `index`: one line per image, `arch target raw_size sha256`.
//!
//! A target whose standard library is not installed is left out with a warning that names the
//! command adding it. The host's own architecture is always present: without its musl target,
//! the host's gnu target is linked statically instead, so `ferry run local` works on any machine.
//!
//! The script runs again when the toolchain's installed targets or components change, so either
//! order of building ferry and adding targets ends with every image the toolchain can build.
//!
//! With the `rust-src` component installed, the standard library is rebuilt for the payload with
//! `panic=immediate-abort` (the bridge never panics on input, and this drops the unwinding and
//! backtrace machinery): the image shrinks by about half. That needs unstable flags, enabled
//! with `RUSTC_BOOTSTRAP` for this inner build only; without `rust-src`, or if that build fails,
//! the ordinary build is used and a warning says so. `FERRY_PAYLOAD_BUILD_STD=0` turns it off.

use std::env;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// (arch as the loader reports it, musl target).
const TARGETS: [(&str, &str); 2] = [
    ("x86_64", "x86_64-unknown-linux-musl"),
    ("aarch64", "aarch64-unknown-linux-musl"),
];

const PROFILE: &str = "payload";

fn main() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("payloads");
    for path in [
        "payload",
        "protocol",
        "stage1",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=FERRY_PAYLOAD_TARGETS");
    println!("cargo:rerun-if-env-changed=FERRY_PAYLOAD_BUILD_STD");

    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).expect("create payload dir");
    let sysroot = rustc_sysroot();
    // Which images can be built depends on the toolchain's installed targets and components:
    // run again when they change (`rustup target add`, `rustup component add rust-src`), or a
    // ferry built before they were installed would go on lacking images. rustup rewrites
    // `lib/rustlib/components` on every such change; without rustup, watch the directory.
    let rustlib = sysroot.join("lib/rustlib");
    let components = rustlib.join("components");
    let watched = if components.is_file() {
        components
    } else {
        rustlib
    };
    println!("cargo:rerun-if-changed={}", watched.display());
    let host_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let wanted = env::var("FERRY_PAYLOAD_TARGETS").ok();
    let build_std = env::var("FERRY_PAYLOAD_BUILD_STD").map_or(true, |v| v != "0");
    let rust_src = sysroot.join("lib/rustlib/src/rust/library/std").is_dir();
    if build_std && !rust_src {
        println!(
            "cargo:warning=ferry: the bridge is built with the prebuilt standard library; \
             `rustup component add rust-src` makes it about half as large"
        );
    }

    let mut index = String::new();
    for (arch, musl) in TARGETS {
        if let Some(w) = &wanted {
            if !w.split(',').any(|t| t == arch || t == musl) && arch != host_arch {
                continue;
            }
        }
        let (target, static_gnu) = if has_std(&sysroot, musl) {
            (musl.to_owned(), false)
        } else if arch == host_arch {
            let gnu = format!("{arch}-unknown-linux-gnu");
            println!(
                "cargo:warning=ferry: {musl} is not installed; the {arch} bridge is linked statically \
                 from {gnu} instead (`rustup target add {musl}` for the smaller musl build)"
            );
            (gnu, true)
        } else {
            println!(
                "cargo:warning=ferry: no {arch} bridge: {musl} is not installed \
                 (add it with `rustup target add {musl}`)"
            );
            continue;
        };
        let exe = if build_std && rust_src && !static_gnu {
            build_payload(&root, &target, Flavour::MinimalStd).unwrap_or_else(|| {
                println!(
                    "cargo:warning=ferry: rebuilding std for {target} failed; \
                     using the prebuilt standard library"
                );
                build_payload(&root, &target, Flavour::Plain)
                    .unwrap_or_else(|| fail(&format!("building the bridge for {target} failed")))
            })
        } else {
            let flavour = if static_gnu {
                Flavour::StaticGnu
            } else {
                Flavour::Plain
            };
            build_payload(&root, &target, flavour)
                .unwrap_or_else(|| fail(&format!("building the bridge for {target} failed")))
        };
        let raw = fs::read(&exe).unwrap_or_else(|e| fail(&format!("read {}: {e}", exe.display())));
        let sha = hex(&Sha256::digest(&raw));
        let zst = zstd::bulk::compress(&raw, 19).unwrap_or_else(|e| fail(&format!("zstd: {e}")));
        fs::write(out.join(format!("{arch}.zst")), &zst).expect("write image");
        index.push_str(&format!("{arch} {target} {} {sha}\n", raw.len()));
    }
    let mut f = fs::File::create(out.join("index")).expect("write index");
    f.write_all(index.as_bytes()).expect("write index");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// The prebuilt standard library of a musl target.
    Plain,
    /// std rebuilt with `panic=immediate-abort` and its `optimize_for_size` feature.
    MinimalStd,
    /// The host's glibc target, linked statically (when its musl target is missing).
    StaticGnu,
}

/// Build the bridge; `None` if cargo failed (its errors are on stderr).
fn build_payload(root: &Path, target: &str, flavour: Flavour) -> Option<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = payload_target_dir().join(match flavour {
        Flavour::MinimalStd => "min",
        Flavour::Plain | Flavour::StaticGnu => "std",
    });
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--quiet",
            "--package",
            "ferry-bridge",
            "--bin",
            "ferry-bridge",
        ])
        .args(["--profile", PROFILE, "--target", target])
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's settings are not the payload's.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS");
    // A static executable needs no relocations: skip static-pie. The bridge aborts on a panic
    // and never unwinds or prints a backtrace, so its code needs no unwind tables (a sixth of
    // the image). The musl targets link with rust-lld (`.cargo/config.toml`), which folds
    // identical functions (`--icf=all`: many generic instances compile to the same code):
    // with the switch of x86_64 from GNU ld, 1.2 KB of the compressed image on x86_64
    // (343,757 -> 342,595 bytes) and 1.6 KB on aarch64 (352,424 -> 350,855). Nothing in the
    // bridge tells functions apart by address.
    let rustflags: &[&str] = match flavour {
        Flavour::Plain => &[
            "-Crelocation-model=static",
            "-Cforce-unwind-tables=no",
            "-Clink-arg=--icf=all",
        ],
        Flavour::MinimalStd => &[
            "-Crelocation-model=static",
            "-Cforce-unwind-tables=no",
            "-Clink-arg=--icf=all",
            "-Zunstable-options",
            "-Cpanic=immediate-abort",
        ],
        Flavour::StaticGnu => &["-Ctarget-feature=+crt-static"],
    };
    let mut rustflags = rustflags.to_vec();
    if target.starts_with("aarch64") && flavour != Flavour::StaticGnu {
        // LLVM's machine outliner, on by default for AArch64 at opt-level z, moves repeated
        // instruction sequences into shared functions. The raw image is smaller with it
        // (601,992 bytes against 643,720) but compresses far worse: 350,855 bytes of zstd
        // against 335,594 without it. x86_64 leaves the outliner off.
        rustflags.push("-Cllvm-args=-enable-machine-outliner=never");
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"));
    if flavour == Flavour::MinimalStd {
        // optimize_for_size: std's smaller algorithms (sorting, formatting); 5 KB of the
        // compressed image.
        cmd.env("RUSTC_BOOTSTRAP", "1").args([
            "-Zbuild-std=std,panic_abort",
            "-Zbuild-std-features=optimize_for_size",
        ]);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run cargo for the payload: {e}")));
    status
        .success()
        .then(|| target_dir.join(target).join(PROFILE).join("ferry-bridge"))
}

/// `<target-dir>/payloads`: shared by every profile of the outer build, so the payload is built
/// once however ferry itself is built (test, clippy, release).
fn payload_target_dir() -> PathBuf {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    out.ancestors()
        .find(|p| p.join("CACHEDIR.TAG").is_file())
        .map(|t| t.join("payloads"))
        .unwrap_or_else(|| out.join("payload-target"))
}

fn rustc_sysroot() -> PathBuf {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run rustc: {e}")));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn has_std(sysroot: &Path, target: &str) -> bool {
    sysroot
        .join("lib/rustlib")
        .join(target)
        .join("lib")
        .is_dir()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
