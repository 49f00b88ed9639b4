//! ferry-bridge: the Cockpit-protocol bridge that ferry ships to every machine it reaches.
//!
//! It reads frames on its input and writes frames on its output. It is statically linked, pure
//! Rust, and never panics on input: every bad frame becomes a `protocol-error`.
//!
//! The binary (`main.rs`) is a thin wrapper: [`run`] drives one transport, and
//! [`run_interact`] the `--interact` form of the same protocol.

pub mod askpass;
pub mod channel;
mod channels;
pub mod dbus;
mod fdio;
pub mod flow;
pub mod interact;
#[cfg(all(target_os = "linux", target_env = "musl"))]
mod musl;
mod output;
pub mod packages;
mod process;
mod pty;
mod replicate;
mod router;
mod superuser;
pub mod utf8;

use ferry_protocol::control::{self, Message};

pub use fdio::{stdin, stdout, Fd, Transport};
pub use router::{run, run_interact};

/// The bridge's own `init`: version, capabilities, os-release and the names of the
/// packages it serves (`{"name": null, ...}`, as Cockpit 337 sends them).
pub fn init_message() -> Message {
    control::init()
        .with(
            "capabilities",
            serde_json::json!({ "explicit-superuser": true }),
        )
        .with("os-release", serde_json::Value::Object(os_release()))
        .with("packages", packages::current().init_field())
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

/// Set `HOME`, `SHELL` and `USER` from the password database entry of the user the bridge runs
/// as, as Cockpit's Python bridge does when it starts: the processes the bridge starts, and its
/// internal `/environment` object, see the user's own values whatever the way in passed on
/// (sudo, for one, may keep the caller's `HOME`). Call it before any thread starts. Unchanged
/// when the user has no entry.
pub fn user_environment() {
    if let Some(user) = dbus::internal::User::current() {
        std::env::set_var("HOME", &user.home);
        std::env::set_var("SHELL", &user.shell);
        std::env::set_var("USER", &user.name);
    }
}

/// Raise the soft limit of open files (up to the hard limit, at most 65536): every channel
/// with a child process or a socket needs a few descriptors, and a thousand channels at once
/// must work. Child processes get the original limit back.
pub fn raise_fd_limit() {
    process::raise_fd_limit();
}
