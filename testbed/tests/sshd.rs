//! The test bed itself: the loopback sshd and its client config reach every test user, and the
//! error hosts fail the way their names say.

use std::process::{Command, Output};

use ferry_testbed::{require, Component, Sshd, NOISE};

fn ssh(sshd: &Sshd, host: &str, command: &str) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(sshd.client_config())
        .arg(host)
        .arg(command)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ssh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_test_user_logs_in_with_its_shell() {
    require!(Component::Sshd);
    let sshd = Sshd::shared();
    for user in ferry_testbed::users() {
        if user.short == "noexec" && !require(Component::NoexecHome) {
            continue;
        }
        // `id -un` and the shell's own name, whatever the login scripts print around them.
        let out = ssh(sshd, user.short, "id -un; echo marker-$HOME");
        assert!(
            out.status.success(),
            "ssh {}: {}\n{}\nsshd log:\n{}",
            user.short,
            out.status,
            text(&out.stderr),
            sshd.log()
        );
        let stdout = text(&out.stdout);
        let expected = format!("{}\nmarker-{}\n", user.name(), user.home().display());
        assert!(
            stdout.ends_with(&expected),
            "ssh {}: stdout {stdout:?} does not end with {expected:?}",
            user.short
        );
    }
}

#[test]
fn login_scripts_are_noisy() {
    require!(Component::Sshd);
    let sshd = Sshd::shared();
    // Shells that read a script even for `ssh host command`: the noise must be real.
    for short in ["bash", "zsh", "fish", "tcsh"] {
        let out = ssh(sshd, short, "true");
        assert!(out.status.success(), "ssh {short}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(NOISE),
            "ssh {short}: the login script printed nothing: {:?}",
            text(&out.stdout)
        );
    }
}

#[test]
fn ash_user_runs_busybox_ash() {
    require!(Component::Sshd);
    let out = ssh(Sshd::shared(), "ash", "readlink /proc/$$/exe; echo $0");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].ends_with("/busybox") && lines[1] == "ash",
        "{stdout:?}"
    );
}

#[test]
fn error_hosts_fail_as_named() {
    require!(Component::Sshd);
    let sshd = Sshd::shared();
    for (host, expected) in [
        ("refused", "Permission denied (publickey)"),
        ("unknown-hostkey", "Host key verification failed"),
        ("changed-hostkey", "REMOTE HOST IDENTIFICATION HAS CHANGED"),
        ("closed", "Connection refused"),
    ] {
        let out = ssh(sshd, host, "true");
        assert_eq!(
            out.status.code(),
            Some(255),
            "ssh {host}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(expected),
            "ssh {host}: stderr {:?} lacks {expected:?}",
            text(&out.stderr)
        );
    }
}

#[test]
fn aarch64_root_runs_under_qemu() {
    require!(Component::Aarch64);
    let out = Command::new("chroot")
        .arg(ferry_testbed::aarch64_root())
        .args(["/bin/sh", "-c", "uname -m"])
        .output()
        .expect("run chroot");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "aarch64\n");
}

#[test]
fn noexec_home_is_noexec() {
    require!(Component::NoexecHome);
    let home = ferry_testbed::user("noexec").home();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(&*home.to_string_lossy()))
        .expect("the noexec home is mounted");
    assert!(line.contains("noexec"), "{line}");
}
