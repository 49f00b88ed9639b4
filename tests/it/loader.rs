//! The loader on hostile and poor remotes: who owns the directories it uses, the umask the
//! bridge gets, remotes without tools, `/dev` or `/proc`, a non-blocking stdin, full disks.
//!
//! Real components only: private mount namespaces (`unshare --mount`) with their own tmpfs
//! mounts, minimal roots made of Debian's busybox and its libraries run with `chroot`, another
//! user (`nobody`) as the attacker, the loopback sshd.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferry_testbed::{require, Component};

use crate::bootstrap::{assert_one_error_line, isolating_hop, script, tempdir, HOST_ARCH};
use crate::harness::{Output, Test};

/// `nobody` on Debian: the other user, who owns what the loader must not trust.
const NOBODY: u32 = 65534;

/// The host's bridge image, unpacked: `(path, sha256 hex, raw size)`.
fn host_image(dir: &Path) -> (PathBuf, String, u64) {
    Test::new().args(["payloads", "--unpack"]).arg(dir).run();
    let path = dir.join(HOST_ARCH);
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    let sha = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let size = fs::metadata(&path).unwrap().len();
    (path, sha, size)
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every path under `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A run with `HOME` set to `home` and no `XDG_CACHE_HOME`, so the loader derives its cache from
/// the home.
fn with_home(home: impl AsRef<Path>) -> Test {
    Test::new()
        .inherit_cache_home()
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", home.as_ref())
}

/// `dir` must hold nothing after `output`'s run; `what` names it in the failure.
fn assert_left_nothing(output: &Output, dir: &Path, what: &str) {
    let left = tree(dir);
    if !left.is_empty() {
        output.fail(&format!("the run left {left:?} in {what}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Who owns the directory: only the effective user's own, never another user's home

/// A home directory that belongs to `nobody`, as root's `HOME` when sudo keeps the caller's.
fn foreign_home(dir: &Path) -> PathBuf {
    // `nobody` must reach it through the test's own directory.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.join("home");
    mkdir(&home, 0o755);
    chown(&home, NOBODY);
    home
}

#[test]
fn root_never_runs_a_cached_image_from_another_users_home() {
    require!(Component::Root);
    require!(Component::Unshare);
    let dir = tempdir();
    let (image, sha, _) = host_image(&dir.path().join("image"));
    let home = foreign_home(dir.path());
    // The other user's cache holds the genuine image: its sha256 matches, but its owner could
    // swap it between the check and the exec.
    let cache = home.join(".cache/ferry");
    mkdir(&cache, 0o700);
    fs::copy(&image, cache.join(&sha)).unwrap();
    for p in [home.join(".cache"), cache.clone(), cache.join(&sha)] {
        chown(&p, NOBODY);
    }
    let output = with_home(&home)
        .args(["run", "--stats", &isolating_hop(dir.path()), "--", "true"])
        .run();
    if output.stats().cached {
        output.fail("root ran the image cached in a directory another user owns");
    }
}

#[test]
fn root_creates_nothing_in_another_users_home() {
    require!(Component::Root);
    require!(Component::Unshare);
    let dir = tempdir();
    let home = foreign_home(dir.path());
    let output = with_home(&home)
        .args(["run", &isolating_hop(dir.path()), "--", "echo", "works"])
        .stdout("works\n")
        .run();
    assert_left_nothing(&output, &home, "another user's home");
}

/// The attacker's side of the race: `nobody` swaps a script and the genuine image in turn under
/// the image's name in its own cache, as fast as it can, while root starts ferry with that
/// user's `HOME`. The script would create `pwned`.
#[test]
fn a_swapping_attacker_never_gets_code_run_as_root() {
    require!(Component::Root);
    require!(Component::Unshare);
    let dir = tempdir();
    let (image, sha, _) = host_image(&dir.path().join("image"));
    let home = foreign_home(dir.path());
    let cache = home.join(".cache/ferry");
    mkdir(&cache, 0o700);
    let pwned = dir.path().join("pwned");
    let evil = home.join("evil");
    script(&evil, &format!("touch {}\nexec cat", pwned.display()));
    let genuine = home.join("genuine");
    fs::copy(&image, &genuine).unwrap();
    for p in [
        home.join(".cache"),
        cache.clone(),
        evil.clone(),
        genuine.clone(),
    ] {
        chown(&p, NOBODY);
    }
    let target = cache.join(&sha);
    let swapper = format!(
        "while :; do cp {e} {c}/.a; mv -f {c}/.a {t}; cp {g} {c}/.b; mv -f {c}/.b {t}; done",
        e = evil.display(),
        g = genuine.display(),
        c = cache.display(),
        t = target.display()
    );
    let mut attacker = Command::new("setpriv")
        .args([
            "--reuid",
            &NOBODY.to_string(),
            "--regid",
            &NOBODY.to_string(),
        ])
        .args(["--clear-groups", "sh", "-c", &swapper])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("setpriv runs the attacker");
    let hop = isolating_hop(dir.path());
    let mut ran = 0;
    for _ in 0..25 {
        let output = with_home(&home)
            .args(["run", &hop, "--", "true"])
            .any_status()
            .run();
        ran += usize::from(output.status.code() == Some(0));
        if pwned.exists() {
            let _ = attacker.kill();
            output.fail("the attacker's script ran as root");
        }
    }
    let _ = attacker.kill();
    let _ = attacker.wait();
    assert_eq!(
        ran, 25,
        "every run must still work, from a directory of root's own"
    );
}

/// A namespace where `/dev/shm/ferry-0` and `/tmp/ferry-0` were made in advance by `nobody`,
/// the latter holding the genuine image; `XDG_CACHE_HOME` cannot be created. The loader must
/// skip both and land in `/var/tmp/ferry-0`. The script lists the three after the run.
#[test]
fn fallback_directories_made_by_another_user_are_skipped() {
    require!(Component::Root);
    require!(Component::Unshare);
    let dir = tempdir();
    let (image, sha, _) = host_image(&dir.path().join("image"));
    let listing = dir.path().join("listing");
    let hop = dir.path().join("planted");
    script(
        &hop,
        &format!(
            r#"mount -t tmpfs ferry-shm /dev/shm && mount -t tmpfs ferry-var /var/tmp || exit 99
mkdir -p -m 700 /tmp/ferry-0 && mount -t tmpfs -o uid={NOBODY},gid={NOBODY},mode=755 ferry-tmp /tmp/ferry-0 || exit 99
mkdir /dev/shm/ferry-0 && chown {NOBODY} /dev/shm/ferry-0 || exit 99
cp {image} /tmp/ferry-0/{sha} && chown {NOBODY} /tmp/ferry-0/{sha} || exit 99
unset XDG_RUNTIME_DIR
export XDG_CACHE_HOME=/proc/ferry-none
"$@"
s=$?
ls -n /dev/shm/ferry-0 /tmp/ferry-0 /var/tmp/ferry-0 > {listing} 2>&1
exit $s"#,
            image = image.display(),
            listing = listing.display(),
        ),
    );
    let output = Test::new()
        .inherit_cache_home()
        .args(["run", "--stats"])
        .arg(format!("exec:unshare --mount {}", hop.display()))
        .args(["--", "echo", "works"])
        .stdout("works\n")
        .run();
    if output.stats().cached {
        output.fail("the image planted by another user ran");
    }
    let listing = fs::read_to_string(&listing).unwrap();
    let var_tmp = listing
        .split("/var/tmp/ferry-0:")
        .nth(1)
        .unwrap_or_default();
    if !var_tmp.contains(&sha) {
        output.fail(&format!(
            "the image did not land in /var/tmp/ferry-0:\n{listing}"
        ));
    }
}

/// A hop that runs the rest where `/dev/shm`, `/var/tmp` and `/tmp/ferry-0` are fresh tmpfs
/// mounts, `XDG_CACHE_HOME` cannot be made, and `nobody` has put a symbolic link at
/// `/dev/shm/ferry-0`, pointing at `/var/tmp/victim`, a directory of root's holding the genuine
/// image. `swap` keeps swapping the link between that directory and one of `nobody`'s, holding
/// a script under the image's name that creates `pwned`. The script lists `/var/tmp/victim`'s
/// mode and contents to `listing` after the run.
fn planted_link_hop(dir: &Path, image: &Path, sha: &str, swap: bool) -> (String, PathBuf) {
    let listing = dir.join("listing");
    let pwned = dir.join("pwned");
    let attacker = if swap {
        format!(
            r#"mkdir /tmp/ferry-0/evil && printf '#!/bin/sh\ntouch {pwned}\nexec cat\n' > /tmp/ferry-0/evil/{sha}
chmod 755 /tmp/ferry-0/evil/{sha} && chown -R {NOBODY} /tmp/ferry-0/evil || exit 99
setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups sh -c 'cd /dev/shm; while :; do ln -sfn /var/tmp/victim a; mv -fT a ferry-0; ln -sfn /tmp/ferry-0/evil b; mv -fT b ferry-0; done' &
a=$!"#,
            pwned = pwned.display()
        )
    } else {
        format!(
            "setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups ln -s /var/tmp/victim /dev/shm/ferry-0 || exit 99\na="
        )
    };
    let body = format!(
        r#"mount -t tmpfs ferry-shm /dev/shm && chmod 1777 /dev/shm || exit 99
mount -t tmpfs ferry-var /var/tmp || exit 99
mkdir -p -m 700 /tmp/ferry-0 && mount -t tmpfs ferry-tmp /tmp/ferry-0 && chmod 755 /tmp/ferry-0 || exit 99
mkdir -m 755 /var/tmp/victim && cp {image} /var/tmp/victim/{sha} || exit 99
{attacker}
unset XDG_RUNTIME_DIR
export XDG_CACHE_HOME=/proc/ferry-none
"$@"
s=$?
[ -n "$a" ] && kill $a
stat -c %a /var/tmp/victim > {listing}
ls -A /var/tmp/victim >> {listing}
exit $s"#,
        image = image.display(),
        listing = listing.display(),
    );
    let path = dir.join("planted-link");
    script(&path, &body);
    (format!("exec:unshare --mount {}", path.display()), listing)
}

/// A symbolic link that another user put where a fallback directory goes is never followed:
/// root neither changes the mode of what it points at, nor writes there, nor runs from there.
#[test]
fn a_fallback_directory_that_is_another_users_link_is_skipped() {
    require!(Component::Root);
    require!(Component::Unshare);
    let dir = tempdir();
    let (image, sha, _) = host_image(&dir.path().join("image"));
    let (hop, listing) = planted_link_hop(dir.path(), &image, &sha, false);
    let output = Test::new()
        .inherit_cache_home()
        .args(["run", "--stats", &hop, "--", "echo", "works"])
        .stdout("works\n")
        .run();
    if output.stats().cached {
        output.fail("root ran the image behind another user's link");
    }
    let listing = fs::read_to_string(&listing).unwrap();
    let mut lines = listing.lines();
    if lines.next() != Some("755") {
        output.fail(&format!("the link's target was changed:\n{listing}"));
    }
    let entries: Vec<&str> = lines.collect();
    if entries != [sha.as_str()] {
        output.fail(&format!("root wrote behind the link: {entries:?}"));
    }
}

/// The same link, swapped as fast as `nobody` can between root's genuine image and a script:
/// the script never runs as root.
#[test]
fn a_swapping_link_never_gets_code_run_as_root() {
    require!(Component::Root);
    require!(Component::Unshare);
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (image, sha, _) = host_image(&dir.path().join("image"));
    let (hop, _) = planted_link_hop(dir.path(), &image, &sha, true);
    for round in 0..15 {
        let output = Test::new()
            .inherit_cache_home()
            .args(["run", &hop, "--", "echo", "works"])
            .stdout("works\n")
            .run();
        if dir.path().join("pwned").exists() {
            output.fail(&format!("round {round}: the attacker's script ran as root"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The umask: the bridge and what it starts get the hop's own

#[test]
fn the_bridge_gets_the_umask_of_the_hop() {
    // SAFETY: umask has no preconditions; set back at once.
    let ours = unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old
    };
    Test::new()
        .args(["run", "local", "--", "sh", "-c", "umask"])
        .stdout(format!("{ours:04o}\n"))
        .run();
    Test::new()
        .args(["run", "exec:sh -c 'umask 0027; exec \"$@\"' sh"])
        .args(["--", "sh", "-c", "umask"])
        .stdout("0027\n")
        .run();
}

#[test]
fn the_bridge_gets_the_umask_of_an_ssh_login() {
    require!(Component::Sshd);
    let sshd = ferry_testbed::Sshd::shared();
    let plain = Command::new("ssh")
        .arg("-F")
        .arg(sshd.client_config())
        .args(["bash", "sh -c umask"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(plain.status.success(), "plain ssh failed: {plain:?}");
    let plain = String::from_utf8_lossy(&plain.stdout);
    let expected = plain.lines().last().expect("ssh printed the umask");
    Test::new()
        .arg("run")
        .ssh_config()
        .args(["ssh:bash", "--", "sh", "-c", "umask"])
        .stdout(format!("{expected}\n"))
        .run();
}

// ---------------------------------------------------------------------------------------------
// Minimal roots: busybox with a chosen set of applets, with or without /dev, never /proc

/// Applets a working remote has; each test leaves some out.
const APPLETS: &[&str] = &[
    "sh",
    "uname",
    "id",
    "ls",
    "dd",
    "wc",
    "sha256sum",
    "gzip",
    "chmod",
    "mkdir",
    "rm",
    "rmdir",
    "mv",
    "cat",
    "echo",
    "sleep",
    "true",
    "env",
];

#[derive(Clone, Copy, PartialEq)]
enum Dev {
    /// No `/dev` at all.
    Missing,
    /// An empty `/dev`.
    Empty,
    /// `/dev/null`, the real device.
    Null,
}

/// A root directory for `chroot` holding Debian's busybox, its libraries and `applets`; no
/// `/proc`. Returns the directory and the hop that enters it.
fn mini_root(applets: &[&str], dev: Dev) -> (tempfile::TempDir, String) {
    let dir = tempdir();
    let root = dir.path();
    let busybox = fs::canonicalize("/bin/busybox").expect("busybox is installed");
    let ldd = Command::new("ldd").arg(&busybox).output().unwrap();
    let mut files = vec![busybox.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = line.split("=>").last().unwrap_or("").trim();
        let path = path.split(" (").next().unwrap_or("");
        if path.starts_with('/') {
            files.push(PathBuf::from(path));
        }
    }
    for file in &files {
        let to = root.join(file.strip_prefix("/").unwrap());
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(file, &to).unwrap();
    }
    mkdir(&root.join("bin"), 0o755);
    fs::rename(
        root.join(busybox.strip_prefix("/").unwrap()),
        root.join("bin/busybox"),
    )
    .unwrap();
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    mkdir(&root.join("tmp"), 0o1777);
    mkdir(&root.join("root"), 0o700);
    match dev {
        Dev::Missing => {}
        Dev::Empty => mkdir(&root.join("dev"), 0o755),
        Dev::Null => {
            mkdir(&root.join("dev"), 0o755);
            let null = root.join("dev/null");
            let status = Command::new("mknod")
                .arg(&null)
                .args(["c", "1", "3"])
                .status()
                .unwrap();
            assert!(status.success(), "mknod {}", null.display());
            fs::set_permissions(&null, fs::Permissions::from_mode(0o666)).unwrap();
        }
    }
    let hop = format!("exec:chroot {}", root.display());
    (dir, hop)
}

fn without(leave_out: &[&str]) -> Vec<&'static str> {
    APPLETS
        .iter()
        .copied()
        .filter(|a| !leave_out.contains(a))
        .collect()
}

/// `ferry run HOP -- echo works` in a root without `leave_out`: it works, cold.
fn works_without(leave_out: &[&str], dev: Dev) -> (tempfile::TempDir, Output) {
    let (root, hop) = mini_root(&without(leave_out), dev);
    let output = with_home("/root")
        .args(["run", "--stats", &hop, "--", "echo", "works"])
        .stdout("works\n")
        .run();
    if output.stats().cached {
        output.fail("a fresh root cannot have a cached image");
    }
    (root, output)
}

/// In a root without `tool`, ferry fails with status 207 and a line naming `named`.
fn names_missing(tool: &[&str], named: &str) {
    require!(Component::Root);
    let (_root, hop) = mini_root(&without(tool), Dev::Null);
    let output = with_home("/root")
        .args(["run", &hop, "--", "echo", "works"])
        .status(207)
        .stdout_lacks("works")
        .run();
    assert_one_error_line(&output, &[named]);
}

#[test]
fn a_minimal_root_works() {
    require!(Component::Root);
    works_without(&[], Dev::Null);
}

#[test]
fn no_uname_is_named() {
    names_missing(&["uname"], "uname");
}

#[test]
fn no_sha256_tool_is_named() {
    names_missing(&["sha256sum"], "sha256");
}

#[test]
fn no_wc_and_no_ls_is_named() {
    names_missing(&["wc", "ls"], "wc");
}

#[test]
fn every_tool_the_transfer_needs_is_named() {
    require!(Component::Root);
    for tool in ["dd", "chmod", "mkdir", "mv", "rm"] {
        names_missing(&[tool], tool);
    }
}

/// Without `HOME` and `XDG_CACHE_HOME` there is no cache directory of the user's own: the
/// loader uses the fallback directories and makes up no path.
#[test]
fn no_home_makes_up_no_path() {
    require!(Component::Root);
    let (root, hop) = mini_root(APPLETS, Dev::Null);
    let output = Test::new()
        .inherit_cache_home()
        .env_remove("XDG_CACHE_HOME")
        .env_remove("HOME")
        .args(["run", &hop, "--", "echo", "works"])
        .stdout("works\n")
        .run();
    let mut top: Vec<String> = fs::read_dir(root.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    let expected = ["bin", "dev", "lib", "lib64", "root", "tmp", "usr"];
    let made_up: Vec<&String> = top
        .iter()
        .filter(|t| !expected.contains(&t.as_str()))
        .collect();
    if !made_up.is_empty() {
        output.fail(&format!("the loader made {made_up:?} in /"));
    }
}

#[test]
fn no_wc_is_done_without() {
    require!(Component::Root);
    works_without(&["wc"], Dev::Null);
}

/// A `dd` that knows no `iflag` (as old ones do), and no `wc`.
#[test]
fn an_old_dd_and_no_wc_still_work() {
    require!(Component::Root);
    let (root, hop) = mini_root(&without(&["dd", "wc"]), Dev::Null);
    script(
        &root.path().join("bin/dd"),
        r#"case "$*" in *iflag*) echo "dd: unknown operand $*" >&2; exit 1 ;; esac
exec /bin/busybox dd "$@""#,
    );
    with_home("/root")
        .args(["run", &hop, "--", "echo", "works"])
        .stdout("works\n")
        .run();
}

#[test]
fn no_dev_and_no_proc() {
    require!(Component::Root);
    works_without(&[], Dev::Missing);
}

#[test]
fn an_empty_dev_stays_empty() {
    require!(Component::Root);
    let (root, output) = works_without(&[], Dev::Empty);
    assert_left_nothing(&output, &root.path().join("dev"), "/dev");
}

// ---------------------------------------------------------------------------------------------
// A non-blocking stdin (some sudo configurations and wrappers hand one over)

#[test]
fn a_non_blocking_stdin_does_not_corrupt_cold_starts() {
    require!(Component::Unshare);
    require!(Component::Perl);
    let dir = tempdir();
    let nonblock = format!(
        "{} perl -MFcntl -e 'fcntl(STDIN, F_SETFL, fcntl(STDIN, F_GETFL, 0) | O_NONBLOCK) or die; exec @ARGV or die'",
        isolating_hop(dir.path())
    );
    for round in 0..10 {
        let output = Test::new()
            .args(["run", "--stats", &nonblock, "--", "echo", "works"])
            .stdout("works\n")
            .run();
        if output.stats().cached {
            output.fail(&format!("round {round}: the start was not cold"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Full disks: a probe that fails moves on; an image that does not fit is reported, and nothing
// is left behind

/// A tmpfs of `size_kb` KiB, filled up first when `fill`; unmounted on drop.
struct FullDisk {
    dir: tempfile::TempDir,
}

impl FullDisk {
    fn new(size_kb: u64, fill: bool) -> FullDisk {
        let dir = tempdir();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_kb}k"),
                "ferry-full",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount a tmpfs on {}",
            dir.path().display()
        );
        let disk = FullDisk { dir };
        if fill {
            let mut file = fs::File::create(disk.path().join("fill")).unwrap();
            let zeros = vec![0u8; 4096];
            while std::io::Write::write_all(&mut file, &zeros).is_ok() {}
        }
        disk
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A hop that runs the rest of the route with empty fallback directories (see
    /// `isolating_hop`) and `XDG_CACHE_HOME` on this disk.
    fn hop(&self, dir: &Path) -> String {
        let inner = isolating_hop(dir);
        let inner = inner.strip_prefix("exec:").unwrap();
        format!(
            "exec:env XDG_CACHE_HOME={}/cache {inner}",
            self.path().display()
        )
    }

    fn tree(&self) -> Vec<String> {
        tree(self.path())
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A cache directory where not even the probe fits: the loader moves on to the next directory,
/// under the local `sh` (dash on Debian, where a failed redirection on `:` ends the shell), and
/// removes what it created there.
#[test]
fn a_full_cache_directory_is_skipped() {
    require!(Component::Root);
    require!(Component::Unshare);
    let dir = tempdir();
    let disk = FullDisk::new(64, true);
    let output = Test::new()
        .inherit_cache_home()
        .args(["run", &disk.hop(dir.path()), "--", "echo", "works"])
        .stdout("works\n")
        .run();
    let left = disk.tree();
    if left != ["fill"] {
        output.fail(&format!("the full filesystem holds {left:?}"));
    }
}

/// An image that does not fit: status 205 and "no space", no partial file, no directory that
/// the loader created; `size_kb` decides whether the compressed image or the decoded one fails.
fn no_space(route: &[&str], size_kb: u64) {
    let dir = tempdir();
    let disk = FullDisk::new(size_kb, false);
    let output = Test::new()
        .inherit_cache_home()
        .arg("run")
        .args(route)
        .arg(disk.hop(dir.path()))
        .args(["--", "echo", "works"])
        .status(205)
        .stdout_lacks("works")
        .run();
    assert_one_error_line(&output, &["no space"]);
    assert_left_nothing(&output, disk.path(), "the full filesystem");
}

/// Raw size of the host image, in KiB.
fn image_kb() -> u64 {
    let dir = tempdir();
    host_image(dir.path()).2 / 1024
}

#[test]
fn no_space_for_the_transfer_is_reported() {
    require!(Component::Root);
    require!(Component::Unshare);
    no_space(&[], 64);
}

#[test]
fn no_space_for_the_decoded_image_is_reported() {
    require!(Component::Root);
    require!(Component::Unshare);
    // The compressed image fits (it is well under half the raw size); the decoded one does not.
    no_space(&[], image_kb() * 3 / 4);
}

#[test]
fn no_space_over_ssh_is_reported_without_hanging() {
    require!(Component::Sshd);
    require!(Component::Unshare);
    no_space(&["--ssh-config", &ssh_config(), "ssh:root"], 64);
}

fn ssh_config() -> String {
    ferry_testbed::Sshd::shared()
        .client_config()
        .display()
        .to_string()
}

#[test]
fn cache_directory_is_private() {
    // Whatever mode the cache directory had, the loader leaves it 0700 (the user's own).
    let dir = tempdir();
    let cache = dir.path().join("cache");
    mkdir(&cache.join("ferry"), 0o777);
    Test::new()
        .cache_home(&cache)
        .args(["run", "local", "--", "true"])
        .run();
    let mode = fs::metadata(cache.join("ferry")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "mode {mode:o}");
}
