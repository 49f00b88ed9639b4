//! When ferry ends and what it leaves behind: signals, a stdin still open, a session held open
//! by a background job, and `--stats` on every exit.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_testbed::{require, Component, Sshd};

use crate::harness::Test;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferry-it-")
        .tempdir()
        .expect("temporary directory")
}

/// Processes whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(text) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// Within 5 s, nothing lives in `runtime` and no process mentions it.
fn assert_nothing_left(runtime: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let files: Vec<_> = fs::read_dir(runtime)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        let procs = processes_mentioning(&runtime.display().to_string());
        if files.is_empty() && procs.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("left behind: files {files:?}, processes {procs:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn killed_by(signal: i32) {
    require!(Component::Sshd);
    let runtime = tempdir();
    let mut ferry = Test::new()
        .env("XDG_RUNTIME_DIR", runtime.path())
        .arg("run")
        .arg("--stats")
        .ssh_config()
        .args(["ssh:bash", "--", "sh", "-c", "echo started; exec sleep 60"])
        .status(128 + signal)
        .spawn();
    ferry.wait_stdout("started");
    ferry.signal(signal);
    let output = ferry.finish();
    output.stats();
    assert_nothing_left(runtime.path());
}

#[test]
fn sigterm_leaves_no_master_or_control_directory() {
    killed_by(libc::SIGTERM);
}

#[test]
fn sigint_leaves_no_master_or_control_directory() {
    killed_by(libc::SIGINT);
}

#[test]
fn sighup_leaves_no_master_or_control_directory() {
    killed_by(libc::SIGHUP);
}

#[test]
fn sigterm_on_a_local_route_ends_the_command_too() {
    // A command line no other process has.
    let sleep = format!("300.{}", std::process::id());
    let mut ferry = Test::new()
        .args(["run", "local", "--", "sh", "-c"])
        .arg(format!("echo started; exec sleep {sleep}"))
        .status(128 + libc::SIGTERM)
        .spawn();
    ferry.wait_stdout("started");
    ferry.signal(libc::SIGTERM);
    ferry.finish();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(&format!("sleep {sleep}")).is_empty() {
        if Instant::now() > deadline {
            panic!("the command outlived ferry: sleep {sleep}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_normal_end_leaves_no_master_or_control_directory() {
    require!(Component::Sshd);
    let runtime = tempdir();
    Test::new()
        .env("XDG_RUNTIME_DIR", runtime.path())
        .arg("run")
        .ssh_config()
        .args(["ssh:bash", "--", "true"])
        .run();
    assert_nothing_left(runtime.path());
}

#[test]
fn run_returns_when_the_command_ends_with_stdin_still_open() {
    require!(Component::Sshd);
    for route in [vec!["local"], vec!["ssh:bash"]] {
        let started = Instant::now();
        let output = Test::new()
            .arg("run")
            .ssh_config()
            .args(&route)
            .args(["--", "echo", "done"])
            .stdout("done\n")
            .timeout(Duration::from_secs(20))
            .spawn()
            .finish_with_stdin_open();
        if started.elapsed() > Duration::from_secs(10) {
            output.fail("took too long with stdin open");
        }
    }
}

#[test]
fn run_returns_when_a_background_job_holds_the_session() {
    require!(Component::Sshd);
    // As `sleep 60 &` in a .bashrc: the job holds the session's stdout and stderr.
    let sshd = Sshd::start_with(r#"ForceCommand sleep 61 & eval "$SSH_ORIGINAL_COMMAND""#)
        .expect("start a dedicated sshd");
    let started = Instant::now();
    let output = Test::new()
        .arg("run")
        .arg("--ssh-config")
        .arg(sshd.client_config())
        .args(["ssh:bash", "--", "sh", "-c", "echo done; exit 3"])
        .stdout("done\n")
        .status(3)
        .timeout(Duration::from_secs(30))
        .run();
    let took = started.elapsed();
    // The background job would outlive the test otherwise.
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-u", "ferry-bash", "-x", "-f", "sleep 61"])
        .status();
    if took > Duration::from_secs(10) {
        output.fail(&format!(
            "took {took:?}: ferry waited for the background job"
        ));
    }
}

#[test]
fn stats_are_printed_on_failures_too() {
    // A command line ferry does not understand.
    let output = Test::new()
        .args(["run", "--stats", "local"])
        .status(2)
        .run();
    let stats = output.stats();
    if stats.sent_bytes != 0 {
        output.fail("nothing was sent");
    }
    // Before anything was sent: a hop program that does not exist.
    let output = Test::new()
        .args([
            "run",
            "--stats",
            "exec:/nonexistent/ferry-no-such-program",
            "--",
            "true",
        ])
        .status(207)
        .run();
    let stats = output.stats();
    if stats.sent_bytes != 0 || stats.cached {
        output.fail("nothing was sent");
    }
    // After the image was sent: a remote whose `sha256sum` disagrees with everything.
    let dir = tempdir();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let sum = bin.join("sha256sum");
    fs::write(&sum, "#!/bin/sh\necho 0000  \"$1\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&sum, fs::Permissions::from_mode(0o755)).unwrap();
    // In a namespace whose fallback directories are empty: a cached image there would be
    // found (and, to this sha256sum, tampered with) before anything is sent.
    require!(Component::Unshare);
    let hop = format!(
        "{} env PATH={}:/usr/bin:/bin",
        crate::bootstrap::isolating_hop(dir.path()),
        bin.display()
    );
    let output = Test::new()
        .args(["connect", "--stats", &hop])
        .status(206)
        .run();
    let stats = output.stats();
    if stats.sent_bytes < 10_000 {
        output.fail("the image was sent, and the stats must count it");
    }
}
