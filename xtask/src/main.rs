//! `cargo xtask COMMAND`: ferry's build chores.
//!
//! - `setup`: make this machine (Debian 12, root) ready for the whole test suite;
//! - `test`: setup, then fmt, clippy, shellcheck and `cargo test --workspace` (what CI runs);
//! - `bench [NAME...]`: build ferry in release mode and run `ferry-bench NAME...`.

mod bench;
mod fuzz;
mod images;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <setup|test|bench [NAME...]>

  setup   install and prepare everything the test suite needs (idempotent; root for the parts
          that change the system, otherwise it says what is missing)
  test    setup, cargo fmt --check, clippy -D warnings, shellcheck, cargo test --workspace
  bench   build ferry (release) and run the named benchmarks, e.g. `cargo xtask bench bootstrap`
  images  check that ferry carries every image the toolchain can build, in either build order
          (part of `test`)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "setup" => setup::run(),
        "test" => test::run(),
        "bench" => bench::run(rest),
        "images" => images::check(),
        // Further commands (e.g. `fuzz`) are dispatched here, one line each.
        "fuzz" => fuzz::run(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("xtask: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
