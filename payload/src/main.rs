//! ferry-bridge: the Cockpit-protocol bridge that ferry ships to every machine it reaches.
//!
//! It reads frames on stdin and writes frames on stdout. It is statically linked, pure Rust,
//! and never panics on input: every bad frame becomes a `protocol-error`.

mod channel;
mod channels;
mod router;

use ferry_protocol::control::{self, Message};

const USAGE: &str = "\
Usage: ferry-bridge [--interact=BOUNDARY] [--version] [--help]

Speaks the Cockpit protocol on stdin and stdout.

Options:
  --interact=BOUNDARY  read and write messages as CHANNEL\\nPAYLOAD separated by
                       \\nBOUNDARY\\n, for a person to type (control channel: empty line)
  --version            print the version and exit
  --help               print this help and exit
";

/// The bridge's own `init`: version, capabilities and os-release.
pub(crate) fn init_message() -> Message {
    control::init()
        .with("capabilities", serde_json::json!({ "explicit-superuser": true }))
        .with("os-release", serde_json::Value::Object(os_release()))
}

fn os_release() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| {
            let v = v.trim().trim_matches('"').trim_matches('\'');
            (k.trim().to_owned(), serde_json::Value::String(v.to_owned()))
        })
        .collect()
}

fn main() -> std::process::ExitCode {
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--version" => {
                println!("ferry-bridge {}", env!("CARGO_PKG_VERSION"));
                return std::process::ExitCode::SUCCESS;
            }
            "--help" => {
                print!("{USAGE}");
                return std::process::ExitCode::SUCCESS;
            }
            other => {
                eprintln!("ferry-bridge: unknown option {other:?}; see --help");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry-bridge: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(router::run(tokio::io::stdin(), tokio::io::stdout())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-bridge: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
