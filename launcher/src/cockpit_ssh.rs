//! `ferry cockpit-ssh [USER@]HOST[:PORT]`: cockpit-ws's `[Ssh-Login] Command`, a drop-in for
//! Cockpit 337's own launcher (`cockpit.beiboot`), which needs neither Python nor Cockpit on
//! the host. The flow follows `beiboot.py` (`SshPeer.connect_from_bastion_host` and `run`):
//!
//! 1. An `authorize` with challenge `*` asks cockpit-ws for the login page's credentials: a
//!    `Basic base64(USER:PASSWORD\0KNOWN_HOSTS)` response. A non-empty user becomes ssh's `-l`;
//!    the password answers ssh's first password prompt, once (without one, ssh gets
//!    `PasswordAuthentication=no`); the known-hosts lines the browser kept become the
//!    `UserKnownHostsFile` (a private temporary file), and `COCKPIT_SSH_KNOWN_HOSTS_FILE` the
//!    `GlobalKnownHostsFile`.
//! 2. Every other prompt, an unknown host key included, goes to the login page as an
//!    `X-Conversation` (see [`crate::prompt::Conversation`]). `COCKPIT_SSH_CONNECT_TO_UNKNOWN_HOSTS`
//!    set to `1`/`yes`/`true` accepts an unknown key without asking (`accept-new`).
//! 3. Once the bridge runs, the known-hosts file (with the key the user accepted) goes back to
//!    the browser in an `authorize` with challenge `x-login-data` and `login-data`
//!    `{"known-hosts": ...}`, before the bridge's `init`. A failure is an `init` with a problem
//!    (`authentication-failed`, `unknown-hostkey`, `invalid-hostkey`, `unknown-host`, ...), with
//!    `known-hosts` when a key was accepted on the way.
//!
//! The destination comes from the browser's URL: it is only ever a destination (after `--`,
//! with `-l`/`-p`), never an option or a hop.

use std::ffi::OsString;
use std::path::PathBuf;

use base64::Engine as _;
use ferry_protocol::control::Message;

use crate::prompt::Conversation;
use crate::{Hop, LaunchError};

/// What the login page sent, and what follows from it for ssh.
#[derive(Debug)]
pub struct Login {
    /// Options for the ssh master (`-l`, known-hosts files, password policy).
    pub ssh_options: Vec<OsString>,
    known_hosts: Option<(tempfile::TempDir, PathBuf)>,
}

/// The hop for a destination from the browser's URL: `[USER@]HOST[:PORT]`, an ssh destination
/// and nothing else.
///
/// # Errors
/// `UnknownHost` for an empty host, a bad port, or a host that ssh would read as an option.
pub fn destination(dest: &str) -> Result<Hop, LaunchError> {
    let bad = |detail: &str| LaunchError::UnknownHost {
        host: dest.to_owned(),
        detail: detail.to_owned(),
    };
    if dest.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("a host name holds no spaces or control characters"));
    }
    let hop: Hop = format!("ssh:{dest}")
        .parse()
        .map_err(|e: crate::HopParseError| bad(&e.to_string()))?;
    match &hop {
        Hop::Ssh { host, .. } if !host.starts_with('-') => Ok(hop),
        _ => Err(bad("not a host name")),
    }
}

/// Ask cockpit-ws for the credentials (the `*` challenge) and prepare ssh's options.
///
/// # Errors
/// `Protocol` when cockpit-ws ends its input before it answers.
pub async fn login(conversation: &Conversation) -> Result<Login, LaunchError> {
    let cookie = conversation.cookie();
    let message = Message::new("authorize")
        .with("cookie", cookie.as_str())
        .with("challenge", "*");
    let answer = conversation
        .request(message, &cookie)
        .await
        .ok_or_else(|| LaunchError::Protocol("cockpit-ws ended before it answered".into()))?;
    let mut ssh_options: Vec<OsString> = vec![];
    let mut known_hosts = None;
    let mut password = None;
    let response = answer.str("response").unwrap_or_default();
    if let Some(basic) = response.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .map_err(|_| LaunchError::Protocol("the Basic credentials are not base64".into()))?;
        let decoded = String::from_utf8_lossy(&decoded).into_owned();
        let (user_password, hosts) = match decoded.split_once('\0') {
            Some((a, b)) => (a.to_owned(), Some(b.to_owned())),
            None => (decoded, None),
        };
        let (user, pass) = user_password
            .split_once(':')
            .unwrap_or((&user_password, ""));
        if !user.is_empty() {
            ssh_options.extend(["-l".into(), user.into()]);
        }
        password = Some(pass.to_owned());
        if let Some(hosts) = hosts {
            let dir = tempfile::Builder::new()
                .prefix("ferry-login-")
                .tempdir()
                .map_err(|e| LaunchError::Internal(format!("cannot make a directory: {e}")))?;
            let file = dir.path().join("known_hosts");
            std::fs::write(&file, hosts)
                .map_err(|e| LaunchError::Internal(format!("cannot write known hosts: {e}")))?;
            ssh_options.extend([
                "-o".into(),
                format!("UserKnownHostsFile={}", file.display()).into(),
            ]);
            known_hosts = Some((dir, file));
        }
    }
    match password {
        Some(p) => conversation.set_password(p),
        None => ssh_options.extend(["-o".into(), "PasswordAuthentication=no".into()]),
    }
    if let Some(global) = std::env::var_os("COCKPIT_SSH_KNOWN_HOSTS_FILE") {
        let mut option = OsString::from("GlobalKnownHostsFile=");
        option.push(global);
        ssh_options.extend(["-o".into(), option]);
    }
    let unknown_ok = std::env::var("COCKPIT_SSH_CONNECT_TO_UNKNOWN_HOSTS")
        .is_ok_and(|v| matches!(v.to_lowercase().as_str(), "1" | "yes" | "true"));
    if unknown_ok {
        ssh_options.extend(["-o".into(), "StrictHostKeyChecking=accept-new".into()]);
    }
    Ok(Login {
        ssh_options,
        known_hosts,
    })
}

impl Login {
    /// The known-hosts lines as they are now (with any key accepted on the way).
    pub fn known_hosts(&self) -> Option<String> {
        let (_, file) = self.known_hosts.as_ref()?;
        std::fs::read_to_string(file).ok()
    }

    /// The `authorize` that hands the known hosts back to the browser (`x-login-data`).
    pub fn login_data(&self) -> Option<Message> {
        let hosts = self.known_hosts()?;
        Some(
            Message::new("authorize")
                .with("challenge", "x-login-data")
                .with("cookie", "-")
                .with("login-data", serde_json::json!({ "known-hosts": hosts })),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_only_destinations() {
        assert!(matches!(
            destination("admin@web1:2222"),
            Ok(Hop::Ssh {
                port: Some(2222),
                ..
            })
        ));
        for bad in ["-oProxyCommand=x", "web1 sudo", "a\nb", "", "web1:port"] {
            assert!(destination(bad).is_err(), "{bad:?}");
        }
        // A host that looks like another hop is a host name all the same.
        assert!(matches!(destination("sudo"), Ok(Hop::Ssh { .. })));
    }
}
