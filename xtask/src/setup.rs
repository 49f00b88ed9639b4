//! `cargo xtask setup`: make a Debian 12 machine ready for the whole test suite.
//!
//! Idempotent and quick when everything is there: each part is checked before anything is
//! installed, and `apt-get update` runs at most once, only when something has to be downloaded.
//! As root it installs and creates what is missing; otherwise it lists what is missing and how to
//! get it. Where things go is described in the `ferry-testbed` crate (`/var/lib/ferry-testbed`
//! unless `FERRY_TESTBED_DIR` says otherwise).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
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
    // Hops: doas, containers (runc: crun cannot run here; docker.io brings dockerd and
    // containerd), flatpak-spawn on a session bus.
    "opendoas",
    "podman",
    "runc",
    "docker.io",
    "flatpak",
    "flatpak-xdg-utils",
    "dbus",
    // Runs Cockpit 337's Python bridge, which is unpacked rather than installed.
    "python3",
    // dbus-json3: Python's Gio for the test service, systemd-hostnamed.
    "python3-gi",
    // The web console in a real browser: Chromium, driven by Playwright in a venv.
    "chromium",
    "python3-venv",
    "systemd",
];

/// The Playwright release the browser tests are written against.
const PLAYWRIGHT: &str = "1.65.2";

/// An apt source for bookworm-backports, which carries Cockpit 337: the same archive (URIs)
/// and key as the machine's own bookworm source. Its packages have priority 100, so nothing
/// installed is upgraded from it.
const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/ferry-bookworm-backports.sources";

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
    setup.backports()?;
    setup.packages()?;
    setup.rust()?;
    setup.binfmt()?;
    setup.aarch64_root()?;
    setup.cockpit337()?;
    setup.ash_shell()?;
    setup.users()?;
    setup.privilege_rules()?;
    setup.password()?;
    setup.container_root()?;
    setup.playwright()?;
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

    /// Cockpit 337 comes from bookworm-backports: add that suite before the one
    /// `apt-get update` (only when Cockpit 337 still has to be fetched).
    fn backports(&mut self) -> Result<()> {
        if !self.root || ferry_testbed::cockpit337_complete() {
            return Ok(());
        }
        if !backports_configured() {
            let Some(text) = backports_source() else {
                self.missing(
                    "an apt source for bookworm-backports (for Cockpit 337)",
                    format!(
                        "no bookworm source to copy was found in apt's sources: write \
                         {BACKPORTS_SOURCES} with `Suites: bookworm-backports` by hand"
                    ),
                );
                return Ok(());
            };
            println!("setup: adding bookworm-backports to apt's sources ({BACKPORTS_SOURCES})");
            fs::write(BACKPORTS_SOURCES, text)
                .with_context(|| format!("write {BACKPORTS_SOURCES}"))?;
            // Lists fetched before this source existed do not have Cockpit 337.
            self.apt_updated = false;
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
        let staging = self.unpack_deb("busybox-static:arm64", "download", &root)?;
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
        busybox_root(
            &staging,
            &list,
            &[
                ("tmp", 0o1777),
                ("root", 0o700),
                ("etc", 0o755),
                ("dev", 0o755),
                ("proc", 0o555),
                ("usr/bin", 0o755),
            ],
        )?;
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

    /// Cockpit 337 (bridge, cockpit-ws, cockpit-system), unpacked beside the installed 287:
    /// `apt-get download` of the exact version, then `dpkg-deb -x` of each deb into one
    /// directory, made under a temporary name and renamed when complete.
    fn cockpit337(&mut self) -> Result<()> {
        let root = ferry_testbed::cockpit337_root();
        if ferry_testbed::cockpit337_complete() {
            return Ok(());
        }
        if !self.root {
            self.missing(
                format!("Cockpit 337 unpacked at {}", root.display()),
                "`cargo xtask setup` as root",
            );
            return Ok(());
        }
        println!("setup: unpacking Cockpit 337 at {}", root.display());
        let version = ferry_testbed::COCKPIT_337_VERSION;
        let download = tempdir_in_base("download-cockpit")?;
        let wanted: Vec<String> = ferry_testbed::COCKPIT_337_PACKAGES
            .iter()
            .map(|p| format!("{p}={version}"))
            .collect();
        self.apt_download(&wanted, &download)?;
        let debs: Vec<_> = fs::read_dir(&download)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        if debs.len() != ferry_testbed::COCKPIT_337_PACKAGES.len() {
            bail!(
                "apt-get download of Cockpit {version} left {} debs",
                debs.len()
            );
        }
        let staging = root.with_extension("new");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        for deb in &debs {
            run_command(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&staging))?;
        }
        fs::remove_dir_all(&download)?;
        // Readable by every user (cockpit-ws runs unprivileged).
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))?;
        let _ = fs::remove_dir_all(&root);
        fs::rename(&staging, &root)?;
        if !ferry_testbed::cockpit337_complete() {
            bail!("Cockpit {version} at {} is incomplete", root.display());
        }
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
            Some(f) => {
                f[6] != shell
                    || Path::new(&f[5]) != home
                    || f[4] != spec.gecos
                    || !in_groups(&name, spec.groups)
                    || locked(&name)
            }
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
                add.args(["-c", spec.gecos]);
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
                        .arg("-c")
                        .arg(spec.gecos)
                        .arg(&name),
                )?;
            }
        }
        if !spec.groups.is_empty() && !in_groups(&name, spec.groups) {
            run_command(
                Command::new("usermod")
                    .args(["-a", "-G", &spec.groups.join(",")])
                    .arg(&name),
            )?;
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

impl Setup {
    /// The sudoers drop-in and doas.conf of the hop tests (see `ferry_testbed::sudoers`).
    /// Playwright in a venv of the test bed ([`ferry_testbed::playwright_python`]), for the
    /// browser tests; it drives Debian's Chromium, so no browser is downloaded.
    fn playwright(&mut self) -> Result<()> {
        let python = ferry_testbed::playwright_python();
        let ready = Command::new(&python)
            .args(["-c", "import playwright.sync_api"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        if !self.root {
            self.missing(
                format!("Playwright in {}", python.display()),
                "`cargo xtask setup` as root",
            );
            return Ok(());
        }
        let venv = ferry_testbed::base_dir().join("playwright");
        println!("setup: Playwright {PLAYWRIGHT} in {}", venv.display());
        let _ = fs::remove_dir_all(&venv);
        run_command(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run_command(
            Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .arg(format!("playwright=={PLAYWRIGHT}")),
        )?;
        Ok(())
    }

    /// The password ([`ferry_testbed::PASSWORD`]) of the users that have one
    /// ([`ferry_testbed::PASSWORD_USERS`]), given to `chpasswd` on its stdin and checked with
    /// Python's `crypt` (on stdin too) so that it is set only once.
    fn password(&mut self) -> Result<()> {
        for short in ferry_testbed::PASSWORD_USERS {
            self.password_of(&ferry_testbed::user(short).name())?;
        }
        Ok(())
    }

    fn password_of(&mut self, name: &str) -> Result<()> {
        let name = name.to_owned();
        let hash = fs::read_to_string("/etc/shadow")
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .and_then(|f| f.get(1).cloned())
            .unwrap_or_default();
        if hash.starts_with('$') {
            let check = "import crypt, sys; h = sys.argv[1]; \
                         sys.exit(crypt.crypt(sys.stdin.read(), h) != h)";
            let mut python = Command::new("python3")
                .args(["-W", "ignore", "-c", check, &hash])
                .stdin(std::process::Stdio::piped())
                .spawn()?;
            python
                .stdin
                .take()
                .context("python3's stdin")?
                .write_all(ferry_testbed::PASSWORD.as_bytes())?;
            if python.wait()?.success() {
                return Ok(());
            }
        }
        if !self.root {
            self.missing(
                format!("the password of {name}"),
                "`cargo xtask setup` as root",
            );
            return Ok(());
        }
        println!("setup: setting the password of {name}");
        let mut chpasswd = Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        chpasswd
            .stdin
            .take()
            .context("chpasswd's stdin")?
            .write_all(format!("{name}:{}\n", ferry_testbed::PASSWORD).as_bytes())?;
        anyhow::ensure!(chpasswd.wait()?.success(), "chpasswd failed");
        Ok(())
    }

    fn privilege_rules(&mut self) -> Result<()> {
        for (path, content, mode) in [
            (ferry_testbed::SUDOERS_FILE, ferry_testbed::sudoers(), 0o440),
            (ferry_testbed::DOAS_CONF, ferry_testbed::doas_conf(), 0o400),
        ] {
            if fs::read_to_string(path).ok().as_deref() == Some(content.as_str()) {
                continue;
            }
            if !self.root {
                self.missing(path, "`cargo xtask setup` as root");
                continue;
            }
            println!("setup: writing {path}");
            let staging = format!("{path}.ferry-new");
            fs::write(&staging, &content)?;
            fs::set_permissions(&staging, fs::Permissions::from_mode(mode))?;
            if path == ferry_testbed::SUDOERS_FILE {
                // A broken sudoers file locks everyone out of sudo: check it first.
                run_command(Command::new("visudo").args(["-c", "-q", "-f", &staging]))?;
            }
            fs::rename(&staging, path)?;
        }
        Ok(())
    }
}

impl Setup {
    /// The podman test containers' root: busybox-static for this machine, its applets, and a
    /// passwd with `root`, `app` and `nohome` (see `ferry_testbed::container_root`).
    fn container_root(&mut self) -> Result<()> {
        let root = ferry_testbed::container_root();
        // ferry-ash's login shell, at its own path inside: the root doubles as the
        // ChrootDirectory of a host with nothing but sh.
        let ash = ferry_testbed::ash_shell();
        let ash_inside = ash.strip_prefix("/").unwrap_or(&ash).to_owned();
        if root.join("bin/sh").exists()
            && fs::symlink_metadata(root.join(&ash_inside)).is_ok()
            && fs::read_to_string(root.join("etc/passwd")).ok().as_deref()
                == Some(ferry_testbed::CONTAINER_PASSWD)
        {
            return Ok(());
        }
        if !self.root {
            self.missing(
                format!("the container root at {}", root.display()),
                "`cargo xtask setup` as root",
            );
            return Ok(());
        }
        println!("setup: making the container root at {}", root.display());
        let staging = self.unpack_deb("busybox-static", "download-container", &root)?;
        let bin = staging.join("bin");
        let list = stdout_of(Command::new(bin.join("busybox")).arg("--list"))?;
        busybox_root(
            &staging,
            &list,
            &[
                ("tmp", 0o1777),
                ("root", 0o700),
                ("etc", 0o755),
                ("home/app", 0o755),
                ("proc", 0o555),
                ("dev", 0o755),
                ("sys", 0o555),
            ],
        )?;
        std::os::unix::fs::chown(staging.join("home/app"), Some(1000), Some(1000))?;
        if let Some(dir) = staging.join(&ash_inside).parent() {
            fs::create_dir_all(dir)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", staging.join(&ash_inside))?;
        fs::write(staging.join("etc/passwd"), ferry_testbed::CONTAINER_PASSWD)?;
        fs::write(staging.join("etc/group"), ferry_testbed::CONTAINER_GROUP)?;
        // Containers made from an older root would keep it busy: they are made again.
        for name in [
            ferry_testbed::RUNNING_CONTAINER,
            ferry_testbed::STOPPED_CONTAINER,
        ] {
            let _ = capture(Command::new("podman").args(["rm", "-f", "-t", "0", name]));
        }
        let _ = fs::remove_dir_all(&root);
        fs::rename(&staging, &root)?;
        Ok(())
    }
}

impl Setup {
    /// `apt-get download PACKAGES` into `dir`, updating apt's lists once if it fails (they may
    /// be missing or stale: backports, a foreign architecture).
    fn apt_download(&mut self, packages: &[String], dir: &Path) -> Result<()> {
        let mut get = apt("download");
        get.args(packages).current_dir(dir);
        let first = capture(&mut get)?;
        if !first.status.success() {
            if self.apt_updated {
                bail!(
                    "apt-get download {} failed: {}",
                    packages.join(" "),
                    String::from_utf8_lossy(&first.stderr).trim()
                );
            }
            self.apt_update()?;
            run_command(&mut get)?;
        }
        Ok(())
    }

    /// Download the Debian package `package` into the base directory's `download` folder and
    /// unpack it into a fresh `root.new` (returned), updating apt's lists once if the download
    /// fails (they may be missing or stale, for a foreign architecture too).
    fn unpack_deb(&mut self, package: &str, download: &str, root: &Path) -> Result<PathBuf> {
        let download = tempdir_in_base(download)?;
        self.apt_download(&[package.to_owned()], &download)?;
        let deb = fs::read_dir(&download)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download left no .deb")?;
        let staging = root.with_extension("new");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        run_command(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        fs::remove_dir_all(&download)?;
        Ok(staging)
    }
}

/// Make `root` a busybox root: every applet that `busybox --list` printed (`list`) linked to
/// `bin/busybox`, and the directories `dirs` with their modes.
fn busybox_root(root: &Path, list: &str, dirs: &[(&str, u32)]) -> Result<()> {
    let bin = root.join("bin");
    for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let link = bin.join(applet);
        if applet != "busybox" && fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    for (dir, mode) in dirs {
        let path = root.join(dir);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))?;
    }
    Ok(())
}

/// The text of apt's sources: `sources.list` and every `.list` and `.sources` file.
fn apt_sources() -> Vec<String> {
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|x| x == "sources" || x == "list")
            {
                texts.push(fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    texts
}

/// A deb822 source for bookworm-backports with the URIs and key of the machine's bookworm
/// source (a deb822 stanza or a one-line `deb URI bookworm ...`), or `None` without one.
fn backports_source() -> Option<String> {
    let stanza = |uris: &str, signed_by: Option<&str>| {
        let mut text =
            format!("Types: deb\nURIs: {uris}\nSuites: bookworm-backports\nComponents: main\n");
        if let Some(key) = signed_by {
            text.push_str(&format!("Signed-By: {key}\n"));
        }
        text
    };
    for text in apt_sources() {
        for block in text.split("\n\n") {
            let field = |name: &str| {
                block.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
                })
            };
            let is_bookworm =
                field("Suites").is_some_and(|s| s.split_whitespace().any(|w| w == "bookworm"));
            let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|w| w == "deb"));
            if is_bookworm && is_deb {
                if let Some(uris) = field("URIs") {
                    return Some(stanza(&uris, field("Signed-By").as_deref()));
                }
            }
        }
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            // deb [OPTIONS] URI bookworm COMPONENTS...
            let words: Vec<&str> = words.into_iter().filter(|w| !w.starts_with('[')).collect();
            if let ["deb", uri, "bookworm", ..] = words.as_slice() {
                return Some(stanza(uri, None));
            }
        }
    }
    None
}

/// Does some apt source already name bookworm-backports?
fn backports_configured() -> bool {
    apt_sources().iter().flat_map(|t| t.lines()).any(|l| {
        let l = l.trim();
        !l.starts_with('#') && l.split_whitespace().any(|w| w == "bookworm-backports")
    })
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

/// Is `name` a member of every one of `groups` (as listed in `/etc/group`)?
fn in_groups(name: &str, groups: &[&str]) -> bool {
    let text = fs::read_to_string("/etc/group").unwrap_or_default();
    groups.iter().all(|g| {
        text.lines().any(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() == 4 && f[0] == *g && f[3].split(',').any(|m| m == name)
        })
    })
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
