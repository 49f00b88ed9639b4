//! The handshake against what remotes print and do before the loader speaks: output of any
//! length without a newline, a loader that never starts, a route that ends with its own words.

use std::fs;
use std::time::{Duration, Instant};

use ferry_testbed::{require, Component, Sshd};

use crate::harness::Test;

/// A fresh temporary directory.
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferry-it-")
        .tempdir()
        .expect("temporary directory")
}

/// Noise lengths around every buffer boundary on the way (pipe pages, ferry's read buffer and
/// its former 64 KiB line cap): the marker (23 bytes) straddles each of them.
fn noise_lengths() -> Vec<usize> {
    let mut lengths = vec![0, 1, 22, 23, 24];
    for boundary in [4096usize, 8192, 16384, 32768, 65536, 131072, 262144] {
        for back in [24usize, 23, 22, 12, 2, 1] {
            lengths.push(boundary - back);
        }
        lengths.extend([boundary, boundary + 1]);
    }
    // The range reported to hang or fail.
    lengths.extend(65505..=65540);
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

/// An `exec:` hop printing `n` bytes without a newline before the loader runs.
fn noisy_hop(n: usize) -> String {
    format!(r#"exec:sh -c 'head -c "$0" /dev/zero | tr "\0" x; exec "$@"' {n}"#)
}

#[test]
fn marker_is_found_after_noise_of_any_length() {
    let cache = tempdir();
    for n in noise_lengths() {
        Test::new()
            .cache_home(cache.path())
            .args(["run", &noisy_hop(n), "--", "echo", "ok"])
            .stdout("ok\n")
            .timeout(Duration::from_secs(20))
            .run();
    }
}

/// A dedicated sshd whose every session first runs `prelude`, then the command ssh was given
/// (through the login shell, `bash`, as usual).
fn sshd_with_prelude(prelude: &str) -> Sshd {
    let force = format!(r#"ForceCommand {prelude}; eval "$SSH_ORIGINAL_COMMAND""#);
    Sshd::start_with(&force).expect("start a dedicated sshd")
}

#[test]
fn marker_is_found_after_noise_over_ssh() {
    require!(Component::Sshd);
    let dir = tempdir();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let size = dir.path().join("size");
    let sshd = sshd_with_prelude(&format!(
        r#"head -c "$(cat {})" /dev/zero | tr "\0" x"#,
        size.display()
    ));
    let config = sshd.client_config();
    for n in [
        0usize, 65512, 65513, 65514, 65535, 65536, 65537, 131077, 200_000,
    ] {
        fs::write(&size, n.to_string()).unwrap();
        Test::new()
            .arg("run")
            .arg("--ssh-config")
            .arg(&config)
            .args(["ssh:bash", "--", "echo", "ok"])
            .stdout("ok\n")
            .timeout(Duration::from_secs(30))
            .run();
    }
}

/// Processes below `root` (from /proc), with their command lines.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut table = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        let cmdline = fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        table.push((pid, ppid, cmdline));
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(table.iter().filter(|t| t.1 == parent).map(|t| t.0));
        i += 1;
    }
    table
        .into_iter()
        .filter(|t| t.0 != root && found.contains(&t.0))
        .map(|t| (t.0, t.2))
        .collect()
}

/// Wait up to 10 s for every session of `sshd` to be gone.
fn assert_no_session_left(sshd: &Sshd) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = descendants(sshd.pid());
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("sessions left behind on the remote: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_loader_that_never_starts_times_out_quoting_the_remote() {
    require!(Component::Sshd);
    // The remote's own program takes the session (authorized_keys `command=`, ForceCommand):
    // it greets and then reads stdin for ever.
    let sshd = Sshd::start_with(r#"ForceCommand echo "welcome to the jail"; exec cat"#)
        .expect("start a dedicated sshd");
    let started = Instant::now();
    let output = Test::new()
        .arg("run")
        .arg("--ssh-config")
        .arg(sshd.client_config())
        .args(["--connect-timeout", "2", "ssh:bash", "--", "true"])
        .status(211)
        .stdout("")
        .stderr_contains("within 2 s")
        .stderr_contains("the remote printed: \"")
        .stderr_contains("welcome to the jail\"")
        .timeout(Duration::from_secs(30))
        .run();
    if started.elapsed() > Duration::from_secs(15) {
        output.fail("the timeout of 2 s was not kept");
    }
    assert_no_session_left(&sshd);
    // The same failure in protocol mode: an init with the `timeout` problem.
    let output = Test::new()
        .arg("connect")
        .arg("--ssh-config")
        .arg(sshd.client_config())
        .args(["--connect-timeout", "1", "ssh:bash"])
        .status(211)
        .timeout(Duration::from_secs(30))
        .run();
    let init = output.init();
    if init["problem"] != "timeout" {
        output.fail(&format!("expected problem timeout: {init}"));
    }
    assert_no_session_left(&sshd);
}

#[test]
fn a_local_route_that_never_starts_the_loader_times_out() {
    let started = Instant::now();
    let output = Test::new()
        .args([
            "run",
            "--connect-timeout",
            "1",
            "exec:sh -c 'echo \"  stuck   here \"; exec sleep 600'",
            "--",
            "true",
        ])
        .status(211)
        .stderr_contains("the remote printed: \"stuck here\"")
        .timeout(Duration::from_secs(30))
        .run();
    if started.elapsed() > Duration::from_secs(10) {
        output.fail("the timeout of 1 s was not kept");
    }
}

#[test]
fn a_route_that_ends_early_quotes_the_remote() {
    require!(Component::Sshd);
    for (force, said) in [
        (
            "ForceCommand internal-sftp",
            "This service allows sftp connections only.",
        ),
        (
            r#"ForceCommand echo "restricted account"; exit 1"#,
            "restricted account",
        ),
    ] {
        let sshd = Sshd::start_with(force).expect("start a dedicated sshd");
        Test::new()
            .arg("run")
            .arg("--ssh-config")
            .arg(sshd.client_config())
            .args(["ssh:bash", "--", "true"])
            .status(208)
            .stdout("")
            .stderr_contains("the remote printed: \"")
            .stderr_contains(format!("{said}\""))
            .timeout(Duration::from_secs(30))
            .run();
    }
}

#[test]
fn connect_timeout_must_be_a_number_of_seconds() {
    for bad in ["0", "-1", "soon"] {
        Test::new()
            .args(["run", "--connect-timeout", bad, "local", "--", "true"])
            .status(2)
            .run();
    }
}
