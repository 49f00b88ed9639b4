//! The user's ssh configuration is honoured (host key policy), and what in it would change the
//! command ssh runs (`RemoteCommand`, `RequestTTY force`) does not break any route.

use std::fs;
use std::path::{Path, PathBuf};

use ferry_testbed::{require, Component, Sshd};

use crate::harness::Test;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferry-it-")
        .tempdir()
        .expect("temporary directory")
}

/// A client config whose host `lab` (as `ferry-bash` on the shared sshd) has `settings`, in
/// front of the test bed's own config (first obtained value wins in ssh_config).
fn config_with_lab(dir: &Path, settings: &str) -> PathBuf {
    let sshd = Sshd::shared();
    let shared = fs::read_to_string(sshd.client_config()).unwrap();
    let config = dir.join("ssh_config");
    fs::write(
        &config,
        format!(
            "Host lab\n  HostName 127.0.0.1\n  Port {}\n  User ferry-bash\n  IdentityFile {}\n{settings}\n{shared}",
            sshd.port(),
            sshd.client_key().display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn no_host_key_checking_in_the_config_is_honoured() {
    require!(Component::Sshd);
    let dir = tempdir();
    let config = config_with_lab(
        dir.path(),
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n",
    );
    Test::new()
        .arg("run")
        .arg("--ssh-config")
        .arg(&config)
        .args(["ssh:lab", "--", "echo", "lab network"])
        .stdout("lab network\n")
        .run();
}

#[test]
fn accept_new_in_the_config_is_honoured() {
    require!(Component::Sshd);
    let dir = tempdir();
    let known = dir.path().join("known_hosts");
    fs::write(&known, "").unwrap();
    let config = config_with_lab(
        dir.path(),
        &format!(
            "  StrictHostKeyChecking accept-new\n  UserKnownHostsFile {}\n",
            known.display()
        ),
    );
    Test::new()
        .arg("run")
        .arg("--ssh-config")
        .arg(&config)
        .args(["ssh:lab", "--", "echo", "first contact"])
        .stdout("first contact\n")
        .run();
    let learned = fs::read_to_string(&known).unwrap();
    assert!(
        learned.contains("ssh-ed25519"),
        "accept-new did not record the host key: {learned:?}"
    );
}

/// `RemoteCommand` and `RequestTTY force` for the host (which is known).
fn hijack() -> String {
    let known = Sshd::shared().client_config().with_file_name("known_hosts");
    format!(
        "  UserKnownHostsFile {}\n  RemoteCommand echo hijacked by RemoteCommand\n  \
         RequestTTY force\n",
        known.display()
    )
}

#[test]
fn remote_command_and_forced_tty_do_not_break_the_first_hop() {
    require!(Component::Sshd);
    let dir = tempdir();
    let config = config_with_lab(dir.path(), &hijack());
    Test::new()
        .arg("run")
        .arg("--ssh-config")
        .arg(&config)
        .args([
            "ssh:lab",
            "--",
            "sh",
            "-c",
            "echo ok; [ -t 0 ] || echo no tty",
        ])
        .stdout("ok\nno tty\n")
        .stderr_lacks("hijacked")
        .run();
}

#[test]
fn remote_command_and_forced_tty_do_not_break_a_nested_hop() {
    require!(Component::Sshd);
    let dir = tempdir();
    let config = config_with_lab(dir.path(), &hijack());
    // The ssh that a nested hop runs finds this config as its own (as a user's ~/.ssh/config).
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let ssh = bin.join("ssh");
    fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
            config.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
    let hop = format!("exec:env PATH={}:/usr/bin:/bin", bin.display());
    Test::new()
        .args([
            "run",
            &hop,
            "ssh:lab",
            "--",
            "sh",
            "-c",
            "echo ok; [ -t 0 ] || echo no tty",
        ])
        .stdout("ok\nno tty\n")
        .stderr_lacks("hijacked")
        .run();
}
