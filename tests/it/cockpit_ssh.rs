//! `ferry cockpit-ssh`, driven as cockpit-ws 337 drives its login command: the `*` challenge
//! answered with the login page's Basic credentials (and the known hosts the browser keeps),
//! the host-key question as an `X-Conversation` with the fingerprint, the accepted key handed
//! back in `x-login-data`, then the bridge. The host is the test bed's sshd, reached as a
//! browser would name it (`ferry-pw@127.0.0.1:PORT`), with a password and no key.

use base64::Engine as _;
use serde_json::json;

use ferry_testbed::{require, Component, Sshd, PASSWORD};

use crate::harness::{Running, Test};

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn destination() -> String {
    format!("ferry-pw@127.0.0.1:{}", Sshd::shared().port())
}

/// Start `ferry cockpit-ssh` for the shared sshd and answer its `*` challenge with `basic`
/// (`USER:PASSWORD\0KNOWN_HOSTS`).
fn login(basic: &str, status: i32) -> Running {
    let mut ferry = Test::new()
        .args(["cockpit-ssh", &destination()])
        // No known hosts but the browser's: the key is unknown unless the browser knows it.
        .env("COCKPIT_SSH_KNOWN_HOSTS_FILE", "/dev/null")
        .status(status)
        .spawn();
    let (_, star) = ferry.recv_control();
    assert_eq!(star["command"], "authorize", "{star}");
    assert_eq!(star["challenge"], "*", "{star}");
    ferry.send_control(&json!({
        "command": "authorize", "cookie": star["cookie"],
        "response": format!("Basic {}", b64(basic)),
    }));
    ferry
}

/// Answer the host-key question with `yes`, checking it is asked as the login page expects.
fn accept_host_key(ferry: &mut Running) {
    let (_, question) = ferry.recv_control();
    assert_eq!(question["command"], "authorize", "{question}");
    let challenge = question["challenge"].as_str().unwrap();
    assert!(challenge.starts_with("X-Conversation "), "{question}");
    assert!(
        question["host-key"]
            .as_str()
            .is_some_and(|k| k.ends_with(" login-data")),
        "{question}"
    );
    assert!(
        question["default"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{question}"
    );
    let prefix: Vec<&str> = challenge.splitn(3, ' ').take(2).collect();
    ferry.send_control(&json!({
        "command": "authorize", "cookie": question["cookie"],
        "response": format!("{} {}", prefix.join(" "), b64("yes")),
    }));
}

/// The bridge's `init` came: run `id -un` through it.
fn id_un(ferry: &mut Running) -> String {
    ferry.send_control(&json!({"command": "init", "version": 1, "host": "localhost"}));
    ferry.stream_output("1", &["id", "-un"])
}

#[test]
fn a_password_login_accepts_the_host_key_and_returns_it() {
    require!(Component::Sshd);
    require!(Component::User("pw"));
    let mut ferry = login(&format!("ferry-pw:{PASSWORD}\0"), 0);
    accept_host_key(&mut ferry);
    let (_, data) = ferry.recv_control();
    assert_eq!(data["challenge"], "x-login-data", "{data}");
    let known = data["login-data"]["known-hosts"]
        .as_str()
        .unwrap()
        .to_owned();
    // One line for the server's key (hashed or not, as the ssh configuration says).
    assert_eq!(known.lines().count(), 1, "{data}");
    assert!(known.contains(" ssh-ed25519 "), "{data}");
    let (_, init) = ferry.recv_control();
    assert_eq!(init["command"], "init", "{init}");
    assert!(init.get("problem").is_none(), "{init}");
    assert_eq!(id_un(&mut ferry), "ferry-pw\n");
    ferry.finish();

    // The browser sends the key back next time: no question.
    let mut ferry = login(&format!("ferry-pw:{PASSWORD}\0{known}"), 0);
    let (_, data) = ferry.recv_control();
    assert_eq!(data["challenge"], "x-login-data", "{data}");
    let (_, init) = ferry.recv_control();
    assert!(init.get("problem").is_none(), "{init}");
    assert_eq!(id_un(&mut ferry), "ferry-pw\n");
    ferry.finish();
}

#[test]
fn a_wrong_password_is_authentication_failed_with_the_accepted_key() {
    require!(Component::Sshd);
    require!(Component::User("pw"));
    // A wrong password: see `password_logins`.
    let _one = crate::harness::password_logins();
    let mut ferry = login("ferry-pw:not-the-password\0", 202);
    accept_host_key(&mut ferry);
    let (_, init) = ferry.recv_control();
    assert_eq!(init["command"], "init", "{init}");
    assert_eq!(init["problem"], "authentication-failed", "{init}");
    assert!(
        init["known-hosts"]
            .as_str()
            .is_some_and(|k| k.contains(" ssh-")),
        "{init}"
    );
    ferry.finish();
}

#[test]
fn a_changed_host_key_is_refused() {
    require!(Component::Sshd);
    require!(Component::User("pw"));
    // A key for this host and port that is not the server's.
    let other =
        std::fs::read_to_string(format!("{}.pub", Sshd::shared().client_key().display())).unwrap();
    let key: Vec<&str> = other.split_whitespace().take(2).collect();
    let port = Sshd::shared().port();
    let known = format!("[127.0.0.1]:{port} {}\n", key.join(" "));
    let mut ferry = login(&format!("ferry-pw:{PASSWORD}\0{known}"), 203);
    let (_, init) = ferry.recv_control();
    assert_eq!(init["problem"], "invalid-hostkey", "{init}");
    ferry.finish();
}

#[test]
fn the_destination_is_never_an_option() {
    // Nothing is asked and nothing runs: the destination is refused first.
    for dest in ["-oProxyCommand=touch /tmp/ferry-pwned", "web1 sudo"] {
        let output = Test::new().args(["cockpit-ssh", dest]).status(201).run();
        let messages = output.control_messages();
        if messages.len() != 1 || messages[0]["problem"] != "unknown-host" {
            output.fail("expected only an init with problem unknown-host");
        }
    }
    assert!(!std::path::Path::new("/tmp/ferry-pwned").exists());
}
