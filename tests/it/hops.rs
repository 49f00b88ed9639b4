//! Routes of several legs, and the hops that switch user or enter a container.
//!
//! A leg is a door hop (ssh, sudo, su, doas, podman, docker, flatpak-host) with the `exec:` and
//! `local` hops after it. ferry starts the first leg and sends the image over it; each further
//! leg is started by the bridge before it, with that bridge's own image (self-replication).

use std::fs;

use ferry_testbed::{require, Component};
use serde_json::{json, Value};

use crate::bootstrap::{cached_images, tee_hop, tempdir};
use crate::harness::{Output, Test};

/// The `--stats` line as JSON.
fn stats(output: &Output) -> Value {
    let text = output.stderr_str();
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("ferry: stats ")) else {
        output.fail("stderr has no `ferry: stats` line")
    };
    serde_json::from_str(line).unwrap_or_else(|e| output.fail(&format!("stats: {e}")))
}

/// The size of one image as ferry sends it (zstd), from `ferry payloads`.
fn image_size(arch: &str) -> u64 {
    let list = Test::new().args(["payloads"]).run().stdout_str();
    list.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&arch))
        .and_then(|w| w.get(3)?.parse().ok())
        .unwrap_or_else(|| panic!("`ferry payloads` has no {arch} row:\n{list}"))
}

// ---------------------------------------------------------------------------------------------
// Self-replication

#[test]
fn the_first_bridge_starts_the_second_leg() {
    require!(Component::Sudo);
    let output = Test::new()
        .args(["run", "--stats", "sudo", "sudo:ferry-bash", "--"])
        .args(["sh", "-c", "id -un; cat"])
        .stdin("through two bridges\n")
        .stdout("ferry-bash\nthrough two bridges\n")
        .run();
    let legs = stats(&output)["legs"].clone();
    let [leg] = legs.as_array().map(Vec::as_slice).unwrap_or_default() else {
        output.fail(&format!("expected one leg after the first: {legs}"));
    };
    if leg["leg"] != "sudo:ferry-bash" || leg["arch"] != std::env::consts::ARCH {
        output.fail(&format!("unexpected leg: {leg}"));
    }
}

#[test]
fn a_warm_first_leg_carries_no_image_to_a_cold_second_leg() {
    require!(Component::Unshare);
    require!(Component::Sudo);
    let dir = tempdir();
    let log = dir.path().join("stdin.log");
    // Everything written to the first leg's loader and bridge is appended to `log`.
    let tee = tee_hop(dir.path(), &log);
    let tee = tee.strip_prefix("exec:").expect("an exec hop");
    let first = format!("exec:{tee}");
    // Warm the first leg (root's cache: sudo drops XDG_CACHE_HOME).
    let warmup = Test::new()
        .args(["run", "--stats", "sudo", &first, "--", "true"])
        .run();
    let logged = || fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let before = logged();
    // The second leg's user starts cold: only this test logs in as ferry-cold.
    let cold = ferry_testbed::user("cold");
    let cold_cache = cold.home().join(".cache/ferry");
    let _ = fs::remove_dir_all(&cold_cache);

    let output = Test::new()
        .args([
            "run",
            "--stats",
            "sudo",
            &first,
            "sudo:ferry-cold",
            "--",
            "id",
            "-un",
        ])
        .stdout("ferry-cold\n")
        .run();
    let crossed = logged() - before;
    if crossed == 0 {
        output.fail("nothing crossed the first hop: the count is broken");
    }
    let stats = stats(&output);
    let leg = &stats["legs"][0];
    if stats["cached"] != true || stats["payload_bytes"] != 0 {
        output.fail(&format!("the first leg must be warm: {stats}"));
    }
    let raw = leg["payload_bytes"].as_u64().unwrap_or(0);
    if leg["cached"] != false || raw < 100_000 {
        output.fail(&format!(
            "the second leg must be cold and get an image: {stats}"
        ));
    }
    if cached_images(&cold_cache).is_empty() {
        output.fail("no image was cached for ferry-cold");
    }
    // One image as ferry sends it (compressed), from the cold start of the warm-up or earlier.
    let one_image = image_size(std::env::consts::ARCH);
    if crossed * 10 > one_image {
        output.fail(&format!(
            "{crossed} bytes crossed the first hop: more than 0.1x one image ({one_image} bytes); \
             warm-up stats: {}",
            warmup.stderr_str()
        ));
    }
}

#[test]
fn when_the_next_leg_ends_its_channels_close_with_terminated() {
    require!(Component::Sudo);
    let mut ferry = Test::new()
        .args(["connect", "sudo", "sudo:ferry-bash"])
        .any_status()
        .spawn();
    let (before, init) = ferry.recv_control();
    assert!(before.is_empty(), "frames before init: {before:?}");
    assert_eq!(init["command"], "init", "{init}");
    ferry.send_control(&json!({"command": "init", "version": 1, "host": "localhost"}));
    ferry.send_control(&json!({"command": "open", "channel": "a", "payload": "echo"}));
    let (_, ready) = ferry.recv_control();
    assert_eq!(ready["command"], "ready", "{ready}");
    // A process of the last bridge kills that bridge.
    ferry.send_control(&json!({
        "command": "open", "channel": "b", "payload": "stream",
        "spawn": ["sh", "-c", "kill -KILL $PPID"],
    }));
    let mut closed = Vec::new();
    let transport = loop {
        let (_, msg) = ferry.recv_control();
        if msg["command"] != "close" {
            continue;
        }
        if msg.get("channel").is_none() {
            break msg;
        }
        closed.push(msg);
    };
    assert_eq!(transport["problem"], "terminated", "{transport}");
    for id in ["a", "b"] {
        let close = closed
            .iter()
            .find(|m| m["channel"] == id)
            .unwrap_or_else(|| panic!("no close for channel {id}: {closed:?}"));
        assert_eq!(close["problem"], "terminated", "{close}");
    }
    ferry.finish();
}

// ---------------------------------------------------------------------------------------------
// Hop kinds that work

/// `ferry run HOPS... -- COMMAND...` prints `stdout` and exits 0.
fn runs(hops: &[&str], command: &[&str], stdout: &str) -> Output {
    let mut test = Test::new().arg("run");
    if hops.iter().any(|h| h.starts_with("ssh:")) {
        test = test.ssh_config();
    }
    if !hops.contains(&"--stats") {
        test = test.stderr_lacks("ferry:");
    }
    test.args(hops).arg("--").args(command).stdout(stdout).run()
}

#[test]
fn sudo_through_ssh_becomes_root() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    runs(&["ssh:sudoer", "sudo"], &["id", "-u"], "0\n");
    runs(
        &["ssh:sudoer", "sudo:ferry-dash"],
        &["id", "-un"],
        "ferry-dash\n",
    );
}

#[test]
fn sudo_as_a_user_locally() {
    require!(Component::Sudo);
    runs(&["sudo:ferry-dash"], &["id", "-un"], "ferry-dash\n");
}

#[test]
fn su_becomes_the_user_through_their_login_shell() {
    require!(Component::Sudo);
    // ferry-fish's login shell is fish: the loader survives it.
    require!(Component::User("fish"));
    runs(&["su:ferry-fish"], &["id", "-un"], "ferry-fish\n");
    runs(&["sudo", "su:ferry-dash"], &["id", "-un"], "ferry-dash\n");
}

#[test]
fn doas_through_ssh_becomes_root() {
    require!(Component::Sshd);
    require!(Component::Doas);
    runs(&["ssh:sudoer", "doas"], &["id", "-u"], "0\n");
    runs(&["doas:ferry-dash"], &["id", "-un"], "ferry-dash\n");
}

/// `ENGINE:ferry-running[:USER]` reaches the running container as root, as a user with a home,
/// as one without, and as a uid the container's passwd does not know (the loader's ladder).
fn enters_a_running_container(engine: &str, env: &[(&str, &str)]) {
    let inside = ["sh", "-c", "id -u; grep -c ^nohome: /etc/passwd"];
    for (user, uid) in [
        ("", "0"),
        (":app", "1000"),
        (":nohome", "1001"),
        (":4242", "4242"),
    ] {
        let mut test = Test::new().arg("run").stderr_lacks("ferry:");
        for (k, v) in env {
            test = test.env(k, v);
        }
        test.arg(format!("{engine}:ferry-running{user}"))
            .arg("--")
            .args(inside)
            .stdout(format!("{uid}\n1\n"))
            .run();
    }
}

#[test]
fn podman_enters_a_running_container_as_any_user() {
    require!(Component::Podman);
    enters_a_running_container("podman", &[]);
}

#[test]
fn docker_enters_a_running_container_as_any_user() {
    require!(Component::Docker);
    enters_a_running_container("docker", &[("DOCKER_HOST", ferry_testbed::DOCKER_HOST)]);
}

#[test]
fn ssh_sudo_podman_reaches_a_container_as_root() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    require!(Component::Podman);
    let output = runs(
        &["--stats", "ssh:sudoer", "sudo", "podman:ferry-running"],
        &["sh", "-c", "id -u; grep -c ^nohome: /etc/passwd"],
        "0\n1\n",
    );
    let legs: Vec<String> = stats(&output)["legs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["leg"].as_str().unwrap_or("").to_owned())
        .collect();
    if legs != ["sudo", "podman:ferry-running"] {
        output.fail(&format!("legs started by bridges: {legs:?}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Hop failures: distinct, in the tool's own words

/// `ferry run HOPS -- true` fails with `status` and one error line quoting `words`; `ferry
/// connect HOPS` reports `problem` in an `init`.
fn fails(hops: &[&str], status: i32, problem: &str, words: &[&str]) {
    fails_in(&[], hops, status, problem, words);
}

/// [`fails`], with these environment variables set for ferry.
fn fails_in(env: &[(&str, &str)], hops: &[&str], status: i32, problem: &str, words: &[&str]) {
    let with_ssh = |mut test: Test| {
        for (k, v) in env {
            test = test.env(k, v);
        }
        if hops.iter().any(|h| h.starts_with("ssh:")) {
            test.ssh_config()
        } else {
            test
        }
    };
    let output = with_ssh(Test::new().arg("run"))
        .args(hops)
        .args(["--", "true"])
        .status(status)
        .stdout("")
        .run();
    crate::bootstrap::assert_one_error_line(&output, words);
    let output = with_ssh(Test::new().arg("connect"))
        .args(hops)
        .status(status)
        .run();
    let messages = output.control_messages();
    let init = output.init();
    if init["problem"] != problem || messages.len() != 1 {
        output.fail(&format!("expected only an init with problem {problem:?}"));
    }
}

#[test]
fn sudo_needing_a_password_fails_202() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    fails(
        &["ssh:pw", "sudo"],
        202,
        "authentication-failed",
        &["sudo", "a password is required"],
    );
}

#[test]
fn sudo_not_allowed_by_sudoers_fails_212() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    fails(
        &["ssh:limited", "sudo"],
        212,
        "access-denied",
        &["is not allowed to execute"],
    );
}

#[test]
fn sudo_requiretty_fails_212() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    fails(
        &["ssh:tty", "sudo"],
        212,
        "access-denied",
        &["you must have a tty"],
    );
}

#[test]
fn unknown_users_fail_213() {
    require!(Component::Sudo);
    fails(
        &["sudo:ferry-no-such-user"],
        213,
        "not-found",
        &["unknown user"],
    );
    // The same, reported by the bridge that started the leg.
    fails(
        &["sudo", "sudo:ferry-no-such-user"],
        213,
        "not-found",
        &["unknown user"],
    );
    fails(
        &["su:ferry-no-such-user"],
        213,
        "not-found",
        &["does not exist"],
    );
}

#[test]
fn doas_not_permitted_fails_212() {
    require!(Component::Sshd);
    require!(Component::Doas);
    fails(
        &["ssh:dash", "doas"],
        212,
        "access-denied",
        &["Operation not permitted"],
    );
}

/// A stopped container, a missing one and a missing user fail with their own status and the
/// engine's own words; `stopped` is what the engine says of a stopped container.
fn container_failures_are_named_by(engine: &str, env: &[(&str, &str)], stopped: &str) {
    fails_in(
        env,
        &[&format!("{engine}:ferry-stopped")],
        201,
        "no-host",
        &[stopped, &format!("{engine} start ferry-stopped")],
    );
    fails_in(
        env,
        &[&format!("{engine}:ferry-no-such-container")],
        201,
        "unknown-host",
        &["no such container"],
    );
    fails_in(
        env,
        &[&format!("{engine}:ferry-running:ferry-no-such-user")],
        213,
        "not-found",
        &["unable to find user"],
    );
}

#[test]
fn container_failures_are_named() {
    require!(Component::Podman);
    container_failures_are_named_by("podman", &[], "not running");
}

#[test]
fn docker_container_failures_are_named() {
    require!(Component::Docker);
    let env = [("DOCKER_HOST", ferry_testbed::DOCKER_HOST)];
    container_failures_are_named_by("docker", &env, "is not running");
}

#[test]
fn flatpak_host_reaches_the_host_through_the_session_helper() {
    require!(Component::FlatpakSpawn);
    let bus = ferry_testbed::SessionBus::with_flatpak_helper().expect("a session bus");
    Test::new()
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .args(["run", "flatpak-host", "--", "sh", "-c", "id -un; cat"])
        .stdin("through flatpak-spawn\n")
        .stdout("root\nthrough flatpak-spawn\n")
        .run();
    // Without a session bus there is no way to the host, and flatpak-spawn says so.
    let output = Test::new()
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DISPLAY")
        .args(["run", "flatpak-host", "--", "true"])
        .status(212)
        .run();
    crate::bootstrap::assert_one_error_line(&output, &["flatpak-host", "bus"]);
}

// ---------------------------------------------------------------------------------------------
// The privileged bridge: `superuser` channels go to a root copy started through sudo

/// `ferry connect HOPS`, past the bridge's `init` and ours (with `init_extra` fields).
pub(crate) fn conversation(hops: &[&str], init_extra: Value) -> crate::harness::Running {
    let mut ferry = Test::new()
        .arg("connect")
        .ssh_config()
        .args(hops)
        .any_status()
        .spawn();
    let (_, init) = ferry.recv_control();
    assert_eq!(init["command"], "init", "{init}");
    assert!(init.get("problem").is_none(), "{init}");
    let mut ours = json!({"command": "init", "version": 1, "host": "localhost"});
    for (k, v) in init_extra.as_object().into_iter().flatten() {
        ours[k] = v.clone();
    }
    ferry.send_control(&ours);
    ferry
}

/// Open a stream channel running `id -u` with this `superuser` value; its output, or the
/// `close` problem when there is none.
pub(crate) fn id_u(ferry: &mut crate::harness::Running, channel: &str, superuser: &str) -> String {
    ferry.send_control(&json!({
        "command": "open", "channel": channel, "payload": "stream",
        "spawn": ["id", "-u"], "superuser": superuser,
    }));
    let mut out = String::new();
    loop {
        let (id, payload) = ferry.recv();
        if id == channel {
            out.push_str(&String::from_utf8_lossy(&payload));
            continue;
        }
        if !id.is_empty() {
            continue;
        }
        let msg: Value = serde_json::from_slice(&payload).unwrap();
        if msg["command"] == "close" && msg["channel"] == channel {
            return match msg["problem"].as_str() {
                Some(problem) if out.is_empty() => format!("problem:{problem}"),
                _ => out.trim().to_owned(),
            };
        }
    }
}

#[test]
fn superuser_require_runs_as_root_through_sudo() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    let uid = ferry_testbed::user("sudoer").uid().unwrap().to_string();
    let mut ferry = conversation(&["ssh:sudoer"], json!({}));
    // Another channel is served while the root copy starts.
    ferry.send_control(&json!({"command": "open", "channel": "e", "payload": "echo"}));
    assert_eq!(id_u(&mut ferry, "r1", "require"), "0");
    assert_eq!(id_u(&mut ferry, "r2", "try"), "0");
    assert_eq!(id_u(&mut ferry, "u", "none"), uid);
    // `kill` reaches the root copy's processes too.
    ferry.send_control(&json!({
        "command": "open", "channel": "k", "payload": "stream",
        "spawn": ["sleep", "100"], "superuser": "require",
    }));
    loop {
        let (_, msg) = ferry.recv_control();
        if msg["command"] == "ready" && msg["channel"] == "k" {
            break;
        }
    }
    ferry.send_control(&json!({"command": "kill"}));
    loop {
        let (_, msg) = ferry.recv_control();
        if msg["command"] == "close" && msg["channel"] == "k" {
            assert_eq!(msg["exit-signal"], "TERM", "{msg}");
            break;
        }
    }
    ferry.finish();
}

#[test]
fn superuser_without_a_root_copy() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    // ferry-pw's sudo needs a password: there is no root copy.
    let uid = ferry_testbed::user("pw").uid().unwrap().to_string();
    let mut ferry = conversation(&["ssh:pw"], json!({}));
    assert_eq!(id_u(&mut ferry, "r", "require"), "problem:access-denied");
    assert_eq!(id_u(&mut ferry, "t", "try"), uid);
    ferry.finish();
}

#[test]
fn superuser_init_done_follows_every_outcome() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    for (host, superuser, root) in [
        ("ssh:sudoer", json!({"id": "sudo"}), true),
        ("ssh:pw", json!({"id": "any"}), false),
        ("ssh:sudoer", json!(false), false),
    ] {
        let mut ferry = conversation(&[host], json!({ "superuser": superuser }));
        let (_, mut done) = ferry.recv_control();
        if done["command"] == "authorize" {
            // ferry-pw's sudo asks for the login password: the client has none.
            let cookie = done["cookie"].clone();
            ferry.send_control(&json!({"command": "authorize", "cookie": cookie, "response": ""}));
            done = ferry.recv_control().1;
        }
        assert_eq!(
            done["command"], "superuser-init-done",
            "{host} {superuser}: {done}"
        );
        let got = id_u(&mut ferry, "r", "require");
        assert_eq!(got == "0", root, "{host} {superuser}: {got}");
        ferry.finish();
    }
}

#[test]
fn superuser_is_ignored_in_a_root_session() {
    require!(Component::Root);
    // A root session runs `superuser` channels itself.
    let mut ferry = Test::new().args(["connect", "local"]).spawn();
    let _ = ferry.recv_control();
    ferry.send_control(&json!({"command": "init", "version": 1, "host": "localhost"}));
    ferry.send_control(&json!({
        "command": "open", "channel": "r", "payload": "stream",
        "spawn": ["/usr/bin/id", "-u"], "superuser": "require",
    }));
    let (_, ready) = ferry.recv_control();
    assert_eq!(ready["command"], "ready", "{ready}");
    assert_eq!(ferry.recv(), ("r".to_owned(), b"0\n".to_vec()));
    ferry.finish();
}

#[test]
fn an_aarch64_leg_after_an_x86_64_bridge_gets_its_image_from_ferry() {
    require!(Component::Sudo);
    require!(Component::Aarch64);
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipped: this test needs an x86_64 machine");
        return;
    }
    let root = ferry_testbed::aarch64_root();
    // sudo drops XDG_CACHE_HOME: inside the chroot the image lands in root's cache there.
    let cache = root.join("root/.cache/ferry");
    let _ = fs::remove_dir_all(&cache);
    let chroot = format!("exec:chroot {}", root.display());
    // Legs: `sudo` (an x86_64 bridge), then `sudo exec:chroot ...` (aarch64).
    let output = runs(
        &["--stats", "sudo", "sudo", &chroot],
        &["uname", "-m"],
        "aarch64\n",
    );
    let first = stats(&output);
    let leg = &first["legs"][0];
    if leg["arch"] != "aarch64" || leg["cached"] != false {
        output.fail(&format!("expected a cold aarch64 leg: {first}"));
    }
    if cached_images(&cache).is_empty() {
        output.fail("no aarch64 image was cached in the chroot");
    }
    // It travelled compressed for the chroot's gzip, not as the raw executable.
    let list = Test::new().args(["payloads"]).run().stdout_str();
    let raw: u64 = list
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&"aarch64"))
        .and_then(|w| w.get(2)?.parse().ok())
        .expect("an aarch64 row in `ferry payloads`");
    let sent = leg["payload_bytes"].as_u64().unwrap_or(0);
    if sent == 0 || sent >= raw {
        output.fail(&format!("{sent} image bytes sent for a raw image of {raw}"));
    }
    // Warm now: nothing is sent.
    let output = runs(
        &["--stats", "sudo", "sudo", &chroot],
        &["uname", "-m"],
        "aarch64\n",
    );
    if stats(&output)["legs"][0]["cached"] != true {
        output.fail("the second run found no cached aarch64 image");
    }
}
