//! The bootstrap: local, ssh: and exec: hops, cache, verification, errors.
//!
//! Everything runs against real components from `ferry-testbed`: the loopback sshd and its test
//! users (one per login shell, each with a login script that prints noise on stdout), the aarch64
//! busybox root under qemu-user, a read-only and a noexec home, private mount namespaces.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferry_testbed::{require, Component, NOISE};

use serde_json::json;

use crate::harness::{frame, Output, Test};

pub(crate) const HOST_ARCH: &str = std::env::consts::ARCH;

/// Files in `dir` named like a cached image (64 lower-case hex digits).
pub(crate) fn cached_images(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.len() == 64
                    && n.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
        })
        .collect()
}

/// A fresh temporary directory.
pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferry-it-")
        .tempdir()
        .expect("temporary directory")
}

/// Write an executable shell script.
pub(crate) fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// stderr must end with ferry's one error line, `ferry: ...`, mentioning each of `words`; it is
/// the only line from ferry (a hop program's own complaint may come before it).
pub(crate) fn assert_one_error_line(output: &Output, words: &[&str]) {
    let stderr = output.stderr_str();
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ferry: "))
        .collect();
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    if ours.len() != 1 || last != Some(ours[0]) {
        output.fail("stderr must end with exactly one `ferry: ...` line");
    }
    for word in words {
        if !ours[0].contains(word) {
            output.fail(&format!("the error line does not mention {word:?}"));
        }
    }
}

/// A script for an `exec:` hop that runs the rest of its arguments where this user's fallback
/// cache directories are empty (in the mount namespace of `unshare --mount`): the loader looks for
/// a cached image there too, and other runs as the same user may have left one.
pub(crate) fn isolating_hop(dir: &Path) -> String {
    let isolate = dir.join("isolate");
    script(
        &isolate,
        r#"u=$(id -u)
for d in /dev/shm /var/tmp "/tmp/ferry-$u"; do
    if [ -d "$d" ]; then mount -t tmpfs ferry-empty "$d" || exit 99; fi
done
unset XDG_RUNTIME_DIR
exec "$@""#,
    );
    format!("exec:unshare --mount {}", isolate.display())
}

// ---------------------------------------------------------------------------------------------
// run local

#[test]
fn run_local_uname() {
    Test::new()
        .args(["run", "local", "--", "uname", "-m"])
        .stdout(format!("{HOST_ARCH}\n"))
        .stderr("")
        .run();
}

#[test]
fn run_local_relays_stdin_byte_for_byte() {
    // Every byte value, NULs included, and more than any single buffer.
    let input: Vec<u8> = (0..(1 << 20) + 7)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    Test::new()
        .args(["run", "local", "--", "cat"])
        .stdin(&input)
        .stdout(&input)
        .run();
}

#[test]
fn run_local_passes_arguments_exactly() {
    Test::new()
        .args([
            "run", "local", "--", "printf", "%s|", "a b", "$HOME", "it's", "", "*", "\\n", "é",
        ])
        .stdout("a b|$HOME|it's||*|\\n|é|")
        .run();
}

#[test]
fn run_local_exit_status() {
    Test::new()
        .args(["run", "local", "--", "sh", "-c", "exit 42"])
        .status(42)
        .stdout("")
        .run();
}

#[test]
fn run_local_relays_stderr_apart_from_stdout() {
    Test::new()
        .args([
            "run",
            "local",
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 3",
        ])
        .status(3)
        .stdout("to-stdout\n")
        .stderr("to-stderr\n")
        .run();
}

#[test]
fn run_local_signal_exit_is_128_plus_signal() {
    Test::new()
        .args(["run", "local", "--", "sh", "-c", "kill -TERM $$"])
        .status(128 + libc::SIGTERM)
        .run();
    Test::new()
        .args(["run", "local", "--", "sh", "-c", "kill -KILL $$"])
        .status(128 + libc::SIGKILL)
        .run();
}

#[test]
fn run_local_command_not_found_is_127() {
    Test::new()
        .args(["run", "local", "--", "/nonexistent/ferry-no-such-command"])
        .status(127)
        .run();
}

#[test]
fn run_without_command_is_a_usage_error() {
    Test::new().args(["run", "local"]).status(2).run();
    Test::new()
        .args(["run", "nowhere:x", "--", "true"])
        .status(2)
        .run();
}

#[test]
fn connect_local_sends_init_first() {
    let output = Test::new().args(["connect", "local"]).run();
    let init = output.init();
    if init.get("problem").is_some() {
        output.fail("a working connect must not report a problem");
    }
}

#[test]
fn payloads_lists_and_unpacks_every_image() {
    let list = Test::new().args(["payloads"]).run().stdout_str();
    let dir = tempdir();
    Test::new()
        .args(["payloads", "--unpack"])
        .arg(dir.path())
        .run();
    for arch in ["x86_64", "aarch64"] {
        let path = dir.path().join(arch);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(bytes.starts_with(b"\x7fELF"), "{arch}: not an ELF file");
        let sha = std::process::Command::new("sha256sum")
            .arg(&path)
            .output()
            .unwrap();
        let sha = String::from_utf8_lossy(&sha.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let row = list
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == arch))
            .unwrap_or_else(|| panic!("`ferry payloads` has no row for {arch}:\n{list}"));
        assert!(row.contains(&sha), "{arch}: sha256 {sha} not in {row:?}");
        assert!(
            row.contains(&bytes.len().to_string()),
            "{arch}: raw size {} not in {row:?}",
            bytes.len()
        );
    }
    // The unpacked host image is the bridge itself: it opens with `init`.
    let bridge = std::process::Command::new(dir.path().join(HOST_ARCH))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let frames = crate::harness::parse_frames(&bridge.stdout).expect("a frame stream");
    let (channel, payload) = frames.first().expect("the bridge sent nothing");
    assert_eq!(channel, "");
    let init: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(init["command"], "init", "{init}");
}

// ---------------------------------------------------------------------------------------------
// ssh: every login shell, with noisy login scripts

/// `ferry run ssh:<user>`: identity, stdin, exact arguments, exit status; no login noise on
/// stdout. Then `ferry connect`: `init` comes first.
fn login_shell(short: &'static str) {
    require!(Component::Sshd);
    require!(Component::User(short));
    let user = ferry_testbed::user(short);
    Test::new()
        .arg("run")
        .ssh_config()
        .args([
            &format!("ssh:{short}"),
            "--",
            "sh",
            "-c",
            r#"id -un; cat; printf '%s|' "$@"; exit 7"#,
            "sh",
            "a b",
            "$HOME",
            "it's",
            "",
        ])
        .stdin("through stdin\n")
        .stdout(format!("{}\nthrough stdin\na b|$HOME|it's||", user.name()))
        .stderr_lacks(NOISE)
        .status(7)
        .run();
    let output = Test::new()
        .arg("connect")
        .ssh_config()
        .arg(format!("ssh:{short}"))
        .run();
    let init = output.init();
    if init.get("problem").is_some() {
        output.fail("a working connect must not report a problem");
    }
}

#[test]
fn ssh_login_shell_bash() {
    login_shell("bash");
}

#[test]
fn ssh_login_shell_dash() {
    login_shell("dash");
}

#[test]
fn ssh_login_shell_zsh() {
    login_shell("zsh");
}

#[test]
fn ssh_login_shell_fish() {
    login_shell("fish");
}

#[test]
fn ssh_login_shell_tcsh() {
    login_shell("tcsh");
}

#[test]
fn ssh_login_shell_ash() {
    login_shell("ash");
}

#[test]
fn connect_relays_a_conversation_over_ssh() {
    require!(Component::Sshd);
    let mut ferry = Test::new()
        .arg("connect")
        .ssh_config()
        .arg("ssh:bash")
        .stdout_lacks(NOISE)
        .spawn();
    let (before, init) = ferry.recv_control();
    assert!(before.is_empty(), "frames before init: {before:?}");
    assert_eq!(init["command"], "init", "{init}");
    assert!(init.get("problem").is_none(), "{init}");
    ferry.send_control(&json!({"command": "init", "version": 1, "host": "localhost"}));
    ferry.send_control(&json!({"command": "open", "channel": "a", "payload": "echo"}));
    let (_, ready) = ferry.recv_control();
    assert_eq!(
        (&ready["command"], &ready["channel"]),
        (&json!("ready"), &json!("a")),
        "{ready}"
    );
    let text = "through ssh and back: w\u{f6}rld \u{2603}";
    ferry.send(&frame("a", text.as_bytes()));
    assert_eq!(ferry.recv(), ("a".to_string(), text.as_bytes().to_vec()));
    ferry.send_control(&json!({"command": "close", "channel": "a"}));
    let (_, close) = ferry.recv_control();
    assert_eq!(
        (&close["command"], &close["channel"]),
        (&json!("close"), &json!("a")),
        "{close}"
    );
    // End of stdin ends the bridge, and ferry with status 0.
    ferry.finish();
}

// ---------------------------------------------------------------------------------------------
// aarch64 under qemu-user

#[test]
fn aarch64_chroot_runs_the_aarch64_bridge() {
    require!(Component::Aarch64);
    let root = ferry_testbed::aarch64_root();
    let cache = tempdir();
    // The chroot sees the same XDG_CACHE_HOME path inside itself: remove what lands there.
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(root.join(cache.path().strip_prefix("/").unwrap()));
    let hop = format!("exec:chroot {}", root.display());
    Test::new()
        .cache_home(cache.path())
        .args(["run", &hop, "--", "uname", "-m"])
        .stdout("aarch64\n")
        .run();
    Test::new()
        .cache_home(cache.path())
        .args(["run", &hop, "--", "cat"])
        .stdin("through the aarch64 bridge\n")
        .stdout("through the aarch64 bridge\n")
        .run();
}

// ---------------------------------------------------------------------------------------------
// The cache: a warm start sends no image

/// `exec:` hop that appends every byte reaching the remote's stdin to `log`, where no cached
/// image is found but in `XDG_CACHE_HOME`.
pub(crate) fn tee_hop(dir: &Path, log: &Path) -> String {
    format!(
        r#"{} sh -c 'tee -a "$0" | "$@"' {}"#,
        isolating_hop(dir),
        log.display()
    )
}

#[test]
fn warm_start_sends_no_image() {
    require!(Component::Unshare);
    let dir = tempdir();
    let log = dir.path().join("stdin.log");
    let hop = tee_hop(dir.path(), &log);
    let mut cold = Test::new()
        .args(["run", "--stats", &hop, "--", "echo", "cold"])
        .stdout("cold\n")
        .run();
    let cold_stats = cold.stats();
    let cold_bytes = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    if cold_stats.cached || cold_stats.payload_bytes < 10_000 {
        cold.fail("a cold start must send the image");
    }
    if cold_bytes < cold_stats.payload_bytes || cold_stats.sent_bytes < cold_stats.payload_bytes {
        cold.fail(&format!(
            "{cold_bytes} bytes reached the remote, fewer than the {} of the image",
            cold_stats.payload_bytes
        ));
    }
    let cache = cold.keep_cache_home();
    let warm = Test::new()
        .cache_home(cache.path())
        .args(["run", "--stats", &hop, "--", "echo", "warm"])
        .stdout("warm\n")
        .run();
    let warm_stats = warm.stats();
    let warm_bytes = fs::metadata(&log).unwrap().len() - cold_bytes;
    if !warm_stats.cached || warm_stats.payload_bytes != 0 {
        warm.fail("a warm start must use the cached image");
    }
    if warm_bytes > 4096 || warm_stats.sent_bytes > 4096 {
        warm.fail(&format!(
            "a warm start sent {warm_bytes} bytes (stats: {}); no image should go",
            warm_stats.sent_bytes
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Verification: a corrupted transfer and a tampered cache are refused, and nothing runs

/// Perl (Debian's essential perl-base) as a transparent filter that inverts a few bytes of the
/// stream from offset 100000 on: past the loader's reply, inside the image.
const FLIP: &str = r#"
my ($pos, $first, $last) = (0, 100000, 100000 + 4096 * 8);
while (1) {
    my $n = sysread(STDIN, my $buf, 65536);
    last if !$n;
    for (my $at = $first; $at <= $last; $at += 4096) {
        if ($at >= $pos && $at < $pos + $n) {
            substr($buf, $at - $pos, 1) = chr(ord(substr($buf, $at - $pos, 1)) ^ 0xff);
        }
    }
    $pos += $n;
    my $off = 0;
    while ($off < $n) {
        my $w = syswrite(STDOUT, $buf, $n - $off, $off);
        die "write: $!" if !defined $w;
        $off += $w;
    }
}
"#;

fn corrupting_hop(dir: &Path) -> String {
    let flip = dir.join("flip.pl");
    fs::write(&flip, FLIP).unwrap();
    format!(r#"exec:sh -c 'perl "$0" | "$@"' {}"#, flip.display())
}

#[test]
fn corrupted_transfer_is_refused_and_nothing_runs() {
    require!(Component::Perl);
    let dir = tempdir();
    let marker = dir.path().join("marker");
    let hop = corrupting_hop(dir.path());
    let output = Test::new()
        .args(["run", &hop, "--", "touch"])
        .arg(&marker)
        .status(206)
        .run();
    assert_one_error_line(&output, &[]);
    if marker.exists() {
        output.fail("the command ran although the image was corrupted");
    }
    let images = cached_images(&output.cache_home().join("ferry"));
    if !images.is_empty() {
        output.fail(&format!("a corrupted image was cached: {images:?}"));
    }
}

#[test]
fn tampered_cache_is_refused_and_nothing_runs() {
    require!(Component::Unshare);
    let dir = tempdir();
    let marker = dir.path().join("marker");
    let hop = isolating_hop(dir.path());
    let mut first = Test::new().args(["run", &hop, "--", "true"]).run();
    let cache = first.keep_cache_home();
    let images = cached_images(&cache.path().join("ferry"));
    let [image] = images.as_slice() else {
        first.fail(&format!("expected one cached image, found {images:?}"));
    };
    let mut bytes = fs::read(image).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(image, &bytes).unwrap();

    let output = Test::new()
        .cache_home(cache.path())
        .args(["run", &hop, "--", "touch"])
        .arg(&marker)
        .status(206)
        .run();
    assert_one_error_line(&output, &[]);
    if marker.exists() {
        output.fail("the command ran from a tampered cache");
    }
    // The next run is cold again and works.
    Test::new()
        .cache_home(cache.path())
        .args(["run", &hop, "--", "touch"])
        .arg(&marker)
        .run();
    assert!(
        marker.exists(),
        "the run after a refused cache did not work"
    );
}

// ---------------------------------------------------------------------------------------------
// Homes that cannot hold an executable: the cache falls back

fn fallback_dirs(uid: u32) -> Vec<PathBuf> {
    ["/dev/shm", "/tmp", "/var/tmp"]
        .iter()
        .map(|d| PathBuf::from(format!("{d}/ferry-{uid}")))
        .collect()
}

fn falls_back(short: &'static str, component: Component) {
    require!(Component::Sshd);
    require!(component);
    let user = ferry_testbed::user(short);
    let uid = user.uid().expect("the test user exists");
    // Only this test logs in as this user: start from no cache at all.
    for dir in fallback_dirs(uid) {
        let _ = fs::remove_dir_all(dir);
    }
    let home_cache = user.home().join(".cache/ferry");
    let _ = fs::remove_dir_all(&home_cache);
    let output = Test::new()
        .arg("run")
        .ssh_config()
        .args([&format!("ssh:{short}"), "--", "echo", "works"])
        .stdout("works\n")
        .run();
    let landed: Vec<PathBuf> = fallback_dirs(uid)
        .iter()
        .flat_map(|d| cached_images(d))
        .collect();
    if landed.is_empty() {
        output.fail("no image in any fallback directory");
    }
    if !cached_images(&home_cache).is_empty() {
        output.fail("an image was cached in the home, where it cannot be used");
    }
}

#[test]
fn read_only_home_falls_back() {
    falls_back("rohome", Component::User("rohome"));
}

#[test]
fn noexec_home_falls_back() {
    falls_back("noexec", Component::NoexecHome);
}

// ---------------------------------------------------------------------------------------------
// Each failure: its exit status and one-line message in `run`, its `init` problem in `connect`

struct Failure {
    /// Extra words the message must contain.
    words: &'static [&'static str],
    status: i32,
    problem: &'static str,
}

/// `ferry run HOP -- touch MARKER` fails as described, and runs nothing; then `ferry connect
/// HOP` reports the same failure in an `init`.
fn fails(args_before_hop: &[&str], hop: &str, failure: Failure) {
    let dir = tempdir();
    let marker = dir.path().join("marker");
    let output = Test::new()
        .arg("run")
        .args(args_before_hop)
        .args([hop, "--", "touch"])
        .arg(&marker)
        .status(failure.status)
        .stdout("")
        .run();
    assert_one_error_line(&output, failure.words);
    if marker.exists() {
        output.fail("the command ran although ferry failed");
    }
    let output = Test::new()
        .arg("connect")
        .args(args_before_hop)
        .arg(hop)
        .status(failure.status)
        .run();
    let messages = output.control_messages();
    let init = output.init();
    if init["problem"] != failure.problem {
        output.fail(&format!("expected problem {:?}: {init}", failure.problem));
    }
    if init["message"].as_str().is_none_or(str::is_empty) {
        output.fail(&format!("the init has no message: {init}"));
    }
    if messages.len() != 1 {
        output.fail("nothing may follow the failed init");
    }
}

fn ssh_fails(host: &str, failure: Failure) {
    require!(Component::Sshd);
    let config = ferry_testbed::Sshd::shared().client_config();
    let config = config.to_string_lossy();
    fails(&["--ssh-config", &config], &format!("ssh:{host}"), failure);
}

#[test]
fn unknown_host_fails_201() {
    ssh_fails(
        "no-such-host.invalid",
        Failure {
            words: &["no-such-host.invalid"],
            status: 201,
            problem: "unknown-host",
        },
    );
}

#[test]
fn unreachable_host_fails_201() {
    ssh_fails(
        "closed",
        Failure {
            words: &["closed"],
            status: 201,
            problem: "no-host",
        },
    );
}

#[test]
fn refused_key_fails_202() {
    ssh_fails(
        "refused",
        Failure {
            words: &["refused"],
            status: 202,
            problem: "authentication-failed",
        },
    );
}

#[test]
fn unknown_host_key_fails_203() {
    ssh_fails(
        "unknown-hostkey",
        Failure {
            words: &["unknown-hostkey"],
            status: 203,
            problem: "unknown-hostkey",
        },
    );
    // The command it suggests for checking the key uses the same ssh configuration.
    let config = ferry_testbed::Sshd::shared().client_config();
    let output = Test::new()
        .args(["run", "--ssh-config"])
        .arg(&config)
        .args(["ssh:unknown-hostkey", "--", "true"])
        .status(203)
        .run();
    let suggested = format!("ssh -F {} unknown-hostkey", config.display());
    assert_one_error_line(&output, &[&suggested]);
}

#[test]
fn changed_host_key_fails_203() {
    ssh_fails(
        "changed-hostkey",
        Failure {
            words: &["changed-hostkey"],
            status: 203,
            problem: "invalid-hostkey",
        },
    );
}

#[test]
fn unsupported_arch_fails_204() {
    // A remote whose `uname -m` says sparc64.
    let dir = tempdir();
    script(&dir.path().join("uname"), "echo sparc64");
    let hop = format!("exec:env PATH={}:/usr/bin:/bin", dir.path().display());
    fails(
        &[],
        &hop,
        Failure {
            words: &["sparc64"],
            status: 204,
            problem: "no-cockpit",
        },
    );
}

#[test]
fn no_usable_directory_fails_205() {
    require!(Component::Unshare);
    // A private mount namespace where every candidate directory is read-only.
    let hop = r#"exec:unshare --mount sh -c 'for d in /tmp /var/tmp /dev/shm; do mount -t tmpfs -o ro ferry-ro "$d" || exit 99; done; exec env -u XDG_RUNTIME_DIR XDG_CACHE_HOME=/tmp/cache HOME=/tmp "$@"' ferry-nodir"#;
    fails(
        &[],
        hop,
        Failure {
            words: &[],
            status: 205,
            problem: "no-cockpit",
        },
    );
}

#[test]
fn corrupted_transfer_fails_206() {
    require!(Component::Perl);
    let dir = tempdir();
    let hop = corrupting_hop(dir.path());
    fails(
        &[],
        &hop,
        Failure {
            words: &[],
            status: 206,
            problem: "internal-error",
        },
    );
}

#[test]
fn no_sh_fails_207() {
    // `env` finds no `sh` on this PATH.
    let dir = tempdir();
    let hop = format!("exec:env PATH={}", dir.path().display());
    fails(
        &[],
        &hop,
        Failure {
            words: &[],
            status: 207,
            problem: "no-cockpit",
        },
    );
}

#[test]
fn missing_hop_program_fails_207() {
    fails(
        &[],
        "exec:/nonexistent/ferry-no-such-program",
        Failure {
            words: &["/nonexistent/ferry-no-such-program"],
            status: 207,
            problem: "no-cockpit",
        },
    );
}
