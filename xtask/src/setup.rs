//! `cargo xtask setup`: make a Debian 12 machine ready for the whole test suite.
//!
//! Idempotent and quick when everything is there: each part is checked before anything is
//! installed, and `apt-get update` runs at most once, only when something has to be downloaded.
//! As root it installs and creates what is missing; otherwise it lists what is missing and how to
//! get it. Where things go is described in the `ferry-testbed` crate (`/var/lib/ferry-testbed`
//! unless `FERRY_TESTBED_DIR` says otherwise).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_testbed::{HomeKind, UserSpec};

use crate::util::{capture, have, run as run_command, stdout_of};

/// Debian packages the tests need (installed with `--no-install-recommends`).
const PACKAGES: &[&str] = &[
    "openssh-server",
    "openssh-client",
    "bash",
    "dash",
    "zsh",
    "fish",
    "tcsh",
    "busybox",
    "sudo",
    "qemu-user-static",
    "shellcheck",
    "cockpit-bridge",
    "cockpit-ws",
    "cockpit-system",
    "dbus",
    "python3-gi",
    "systemd",
];

const RUST_TARGETS: &[&str] = &["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];
/// rust-src lets build.rs rebuild std for the bridge, which halves its size.
const RUST_COMPONENTS: &[&str] = &["clippy", "rustfmt", "rust-src"];

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
const BINFMT_CONF: &str = "/usr/lib/binfmt.d/qemu-aarch64.conf";
const HOST_BUSYBOX: &str = "/bin/busybox";

/// Something missing that this run could not fix, and how to get it.
struct Missing {
    what: String,
    how: String,
}

struct Setup {
    root: bool,
    apt_updated: bool,
    missing: Vec<Missing>,
}

/// `cargo xtask setup`: fails when anything is still missing at the end.
pub fn run() -> Result<()> {
    let missing = ensure()?;
    if missing > 0 {
        bail!("{missing} component(s) of the test bed are missing (see above)");
    }
    Ok(())
}

/// Install and prepare what can be, print what cannot; returns how many things are missing.
pub fn ensure() -> Result<usize> {
    let start = Instant::now();
    let mut setup = Setup {
        root: ferry_testbed::is_root(),
        apt_updated: false,
        missing: Vec::new(),
    };
    setup.foreign_arch()?;
    setup.packages()?;
    setup.rust()?;
    setup.binfmt()?;
    setup.aarch64_root()?;
    setup.ash_shell()?;
    setup.users()?;
    for m in &setup.missing {
        eprintln!("setup: MISSING {}\n         get it with: {}", m.what, m.how);
    }
    println!(
        "setup: {} ({:.1}s)",
        if setup.missing.is_empty() {
            "the test bed is ready"
        } else {
            "the test bed is INCOMPLETE"
        },
        start.elapsed().as_secs_f64()
    );
    Ok(setup.missing.len())
}

impl Setup {
    fn missing(&mut self, what: impl Into<String>, how: impl Into<String>) {
        self.missing.push(Missing {
            what: what.into(),
            how: how.into(),
        });
    }

    fn apt_update(&mut self) -> Result<()> {
        if !self.apt_updated {
            println!("setup: apt-get update");
            run_command(apt("update").arg("-q"))?;
            self.apt_updated = true;
        }
        Ok(())
    }

    /// arm64 packages are needed for the aarch64 root: add the architecture before the one
    /// `apt-get update`, so that one update brings both lists.
    fn foreign_arch(&mut self) -> Result<()> {
        if !self.root || aarch64_root_complete() {
            return Ok(());
        }
        let foreign = stdout_of(Command::new("dpkg").arg("--print-foreign-architectures"))?;
        if !foreign.lines().any(|l| l.trim() == "arm64") {
            println!("setup: dpkg --add-architecture arm64");
            run_command(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        }
        Ok(())
    }

    fn packages(&mut self) -> Result<()> {
        let missing = missing_packages(PACKAGES)?;
        if missing.is_empty() {
            return Ok(());
        }
        let list = missing.join(" ");
        if !self.root {
            self.missing(
                format!("Debian packages: {list}"),
                format!(
                    "sudo apt-get install --no-install-recommends {list} (or `cargo xtask setup` as root)"
                ),
            );
            return Ok(());
        }
        println!("setup: installing {list}");
        self.apt_update()?;
        run_command(
            apt("install")
                .args(["-y", "-q", "--no-install-recommends"])
                .args(&missing),
        )
    }

    fn rust(&mut self) -> Result<()> {
        if !have("rustup") {
            self.missing(
                "rustup (needed for the musl targets, clippy and rustfmt)",
                "install rustup, then `rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl`",
            );
            return Ok(());
        }
        let installed = stdout_of(Command::new("rustup").args(["target", "list", "--installed"]))?;
        let targets: Vec<&str> = RUST_TARGETS
            .iter()
            .copied()
            .filter(|t| !installed.lines().any(|l| l.trim() == *t))
            .collect();
        if !targets.is_empty() {
            println!("setup: rustup target add {}", targets.join(" "));
            run_command(
                Command::new("rustup")
                    .args(["target", "add"])
                    .args(&targets),
            )?;
        }
        let installed =
            stdout_of(Command::new("rustup").args(["component", "list", "--installed"]))?;
        let components: Vec<&str> = RUST_COMPONENTS
            .iter()
            .copied()
            .filter(|c| {
                !installed
                    .lines()
                    .any(|l| l == *c || l.starts_with(&format!("{c}-")))
            })
            .collect();
        if !components.is_empty() {
            println!("setup: rustup component add {}", components.join(" "));
            run_command(
                Command::new("rustup")
                    .args(["component", "add"])
                    .args(&components),
            )?;
        }
        Ok(())
    }

    fn binfmt(&mut self) -> Result<()> {
        let entry = Path::new(BINFMT_DIR).join("qemu-aarch64");
        if entry.exists() {
            let state = fs::read_to_string(&entry).unwrap_or_default();
            if state.lines().next() == Some("enabled") {
                return Ok(());
            }
            if self.root {
                println!("setup: enabling the qemu-aarch64 binfmt entry");
                return fs::write(&entry, "1").context("enable qemu-aarch64 in binfmt_misc");
            }
        }
        let how = format!(
            "as root: mount -t binfmt_misc binfmt_misc {BINFMT_DIR} (if {BINFMT_DIR}/register is \
             missing); cat {BINFMT_CONF} > {BINFMT_DIR}/register"
        );
        if !self.root {
            self.missing("qemu-aarch64 registered with binfmt_misc", how);
            return Ok(());
        }
        if !Path::new(BINFMT_CONF).exists() {
            // Only when qemu-user-static could not be installed (reported above).
            self.missing("qemu-aarch64 registered with binfmt_misc", how);
            return Ok(());
        }
        let register = Path::new(BINFMT_DIR).join("register");
        if !register.exists() {
            println!("setup: mounting binfmt_misc");
            run_command(Command::new("mount").args([
                "-t",
                "binfmt_misc",
                "binfmt_misc",
                BINFMT_DIR,
            ]))?;
        }
        if !entry.exists() {
            println!("setup: registering qemu-aarch64 with binfmt_misc");
            let conf = fs::read(BINFMT_CONF).with_context(|| format!("read {BINFMT_CONF}"))?;
            fs::write(&register, conf).context("write the binfmt_misc register")?;
        }
        Ok(())
    }

    fn aarch64_root(&mut self) -> Result<()> {
        let root = ferry_testbed::aarch64_root();
        if aarch64_root_complete() {
            return Ok(());
        }
        if !self.root {
            self.missing(
                format!("the aarch64 busybox root at {}", root.display()),
                "`cargo xtask setup` as root",
            );
            return Ok(());
        }
        println!(
            "setup: making the aarch64 busybox root at {}",
            root.display()
        );
        let download = tempdir_in_base("download")?;
        let mut get = apt("download");
        get.arg("busybox-static:arm64").current_dir(&download);
        let first = capture(&mut get)?;
        if !first.status.success() {
            if self.apt_updated {
                bail!(
                    "apt-get download busybox-static:arm64 failed: {}",
                    String::from_utf8_lossy(&first.stderr).trim()
                );
            }
            // The arm64 package lists may be missing or stale.
            self.apt_update()?;
            run_command(&mut get)?;
        }
        let deb = fs::read_dir(&download)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download left no .deb")?;

        let staging = root.with_extension("new");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        run_command(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        fs::remove_dir_all(&download)?;
        let bin = staging.join("bin");
        if !bin.join("busybox").is_file() {
            let usr_bin = staging.join("usr/bin/busybox");
            if !usr_bin.is_file() {
                bail!("busybox-static:arm64 has no bin/busybox");
            }
            fs::create_dir_all(&bin)?;
            fs::rename(&usr_bin, bin.join("busybox"))?;
        }
        // qemu-user directly: this works before binfmt_misc is set up too.
        let list = stdout_of(
            Command::new("qemu-aarch64-static")
                .arg(bin.join("busybox"))
                .arg("--list"),
        )?;
        for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
            let link = bin.join(applet);
            if applet != "busybox" && fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink("busybox", &link)?;
            }
        }
        for (dir, mode) in [
            ("tmp", 0o1777),
            ("root", 0o700),
            ("etc", 0o755),
            ("dev", 0o755),
            ("proc", 0o555),
            ("usr/bin", 0o755),
        ] {
            let path = staging.join(dir);
            fs::create_dir_all(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
        fs::write(
            staging.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n",
        )?;
        fs::write(staging.join("etc/group"), "root:x:0:\n")?;
        for (name, minor) in [("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)] {
            let path = staging.join("dev").join(name);
            run_command(Command::new("mknod").args(["-m", "666"]).arg(&path).args([
                "c",
                "1",
                &minor.to_string(),
            ]))?;
        }
        let _ = fs::remove_dir_all(&root);
        fs::rename(&staging, &root)?;
        Ok(())
    }

    fn ash_shell(&mut self) -> Result<()> {
        let ash = ferry_testbed::ash_shell();
        if fs::read_link(&ash).is_ok_and(|t| t == Path::new(HOST_BUSYBOX)) {
            return Ok(());
        }
        if !self.root {
            self.missing(
                format!("{} (a symlink to {HOST_BUSYBOX})", ash.display()),
                "`cargo xtask setup` as root",
            );
            return Ok(());
        }
        if !Path::new(HOST_BUSYBOX).exists() {
            // Only when busybox could not be installed (reported above).
            return Ok(());
        }
        println!("setup: {} -> {HOST_BUSYBOX}", ash.display());
        if let Some(parent) = ash.parent() {
            fs::create_dir_all(parent)?;
            // The base and bin directories must be reachable for every user.
            for dir in [parent, parent.parent().unwrap_or(parent)] {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
            }
        }
        let _ = fs::remove_file(&ash);
        std::os::unix::fs::symlink(HOST_BUSYBOX, &ash)?;
        Ok(())
    }

    fn users(&mut self) -> Result<()> {
        let shells = fs::read_to_string("/etc/shells").unwrap_or_default();
        let mut new_shells = String::new();
        for user in ferry_testbed::users() {
            let shell = user.shell.to_string_lossy().into_owned();
            if !shells.lines().any(|l| l.trim() == shell) && !new_shells.contains(&shell) {
                new_shells.push_str(&shell);
                new_shells.push('\n');
            }
        }
        if !new_shells.is_empty() {
            if self.root {
                println!("setup: adding to /etc/shells: {}", new_shells.trim());
                let mut all = shells;
                if !all.is_empty() && !all.ends_with('\n') {
                    all.push('\n');
                }
                all.push_str(&new_shells);
                fs::write("/etc/shells", all)?;
            } else {
                self.missing(
                    format!("/etc/shells entries: {}", new_shells.trim()),
                    "`cargo xtask setup` as root",
                );
            }
        }
        for user in ferry_testbed::users() {
            self.user(&user)
                .with_context(|| format!("set up user {}", user.name()))?;
        }
        Ok(())
    }

    fn user(&mut self, spec: &UserSpec) -> Result<()> {
        let name = spec.name();
        let home = spec.home();
        let shell = spec.shell.to_string_lossy().into_owned();
        let entry = passwd_entry(&name);
        let needs_fix = match &entry {
            None => true,
            Some(f) => f[6] != shell || Path::new(&f[5]) != home || locked(&name),
        };
        let home_ok = match spec.home_kind {
            HomeKind::Normal => fs::metadata(&home).is_ok_and(|m| m.is_dir()),
            HomeKind::ReadOnly => fs::metadata(&home)
                .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o7777 == 0o555),
            HomeKind::Noexec => home.is_dir(),
        };
        let noise_ok = spec.home_kind == HomeKind::Noexec
            || spec.noise.iter().all(|(rel, content)| {
                fs::read_to_string(home.join(rel)).ok().as_deref() == Some(content.as_str())
            });
        if !needs_fix && home_ok && noise_ok {
            if spec.home_kind == HomeKind::Noexec && self.root {
                ferry_testbed::ensure_noexec_home()
                    .with_context(|| format!("mount the noexec home {}", home.display()))?;
            }
            return Ok(());
        }
        if !self.root {
            self.missing(
                format!(
                    "test user {name} (login shell {shell}, home {})",
                    home.display()
                ),
                "`cargo xtask setup` as root",
            );
            return Ok(());
        }
        println!(
            "setup: user {name} (shell {shell}, home {})",
            home.display()
        );
        match entry {
            None => {
                let mut add = Command::new("useradd");
                add.args(["-U", "-d"]).arg(&home).args(["-s", &shell]);
                add.arg(if spec.home_kind == HomeKind::Normal {
                    "-m"
                } else {
                    "-M"
                });
                run_command(add.arg(&name))?;
            }
            Some(_) => {
                run_command(
                    Command::new("usermod")
                        .arg("-s")
                        .arg(&shell)
                        .arg("-d")
                        .arg(&home)
                        .arg(&name),
                )?;
            }
        }
        // sshd without PAM refuses every login to an account whose password is locked ("!").
        if locked(&name) {
            run_command(Command::new("usermod").args(["-p", "*", &name]))?;
        }
        let pw = passwd_entry(&name).context("the user is still missing")?;
        let uid: u32 = pw[2].parse()?;
        let gid: u32 = pw[3].parse()?;
        fs::create_dir_all(&home)?;
        match spec.home_kind {
            HomeKind::Normal => {
                std::os::unix::fs::chown(&home, Some(uid), Some(gid))?;
                fs::set_permissions(&home, fs::Permissions::from_mode(0o755))?;
                ferry_testbed::write_noise(spec, uid, gid)?;
            }
            HomeKind::ReadOnly => {
                std::os::unix::fs::chown(&home, Some(0), Some(0))?;
                ferry_testbed::write_noise(spec, 0, 0)?;
                fs::set_permissions(&home, fs::Permissions::from_mode(0o555))?;
            }
            HomeKind::Noexec => {
                if !ferry_testbed::noexec_home_mounted() {
                    std::os::unix::fs::chown(&home, Some(uid), Some(gid))?;
                }
                ferry_testbed::ensure_noexec_home()
                    .with_context(|| format!("mount the noexec home {}", home.display()))?;
            }
        }
        Ok(())
    }
}

fn aarch64_root_complete() -> bool {
    let root = ferry_testbed::aarch64_root();
    root.join("bin/busybox").is_file()
        && root.join("bin/sh").exists()
        && root.join("dev/null").exists()
}

/// `apt-get SUBCOMMAND`, non-interactive.
fn apt(subcommand: &str) -> Command {
    let mut command = Command::new("apt-get");
    command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg(subcommand);
    command
}

/// Which of `packages` are not installed.
fn missing_packages<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    if !have("dpkg-query") {
        bail!("dpkg-query is missing: `cargo xtask setup` knows Debian only");
    }
    // Unknown packages make dpkg-query exit 1: read what it printed whatever the status.
    let output = capture(
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Package}\t${db:Status-Abbrev}\n"])
            .args(packages),
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(packages
        .iter()
        .copied()
        .filter(|p| {
            !text.lines().any(|l| {
                let mut f = l.split('\t');
                f.next() == Some(*p) && f.next().is_some_and(|s| s.starts_with("ii"))
            })
        })
        .collect())
}

fn passwd_entry(name: &str) -> Option<Vec<String>> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines()
        .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
        .find(|f| f.len() == 7 && f[0] == name)
}

/// Is the account's password locked (`!` in `/etc/shadow`)? Unreadable shadow: assume not.
fn locked(name: &str) -> bool {
    let Ok(text) = fs::read_to_string("/etc/shadow") else {
        return false;
    };
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .is_some_and(|f| f.get(1).is_some_and(|p| p.starts_with('!')))
}

/// A fresh directory under the test bed's base directory (removed by the caller).
fn tempdir_in_base(what: &str) -> Result<std::path::PathBuf> {
    let base = ferry_testbed::base_dir();
    fs::create_dir_all(&base)?;
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755))?;
    let dir = base.join(format!(".{what}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    // apt-get download drops privileges to _apt when it can: let it write here.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
    Ok(dir)
}
