//! ferry-bridge: the Cockpit-protocol bridge that ferry ships to every machine it reaches.
//!
//! It reads frames on its input and writes frames on its output. It is statically linked, pure
//! Rust, and never panics on input: every bad frame becomes a `protocol-error`.
//!
//! The binary (`main.rs`) is a thin wrapper: [`run`] drives one transport, and the
//! `--interact` mode uses the same router with a different framing.

pub mod channel;
mod channels;
mod router;

use ferry_protocol::control::{self, Message};

pub use router::run;

/// The bridge's own `init`: version, capabilities and os-release.
pub fn init_message() -> Message {
    control::init()
        .with(
            "capabilities",
            serde_json::json!({ "explicit-superuser": true }),
        )
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
