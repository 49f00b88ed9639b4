//! What a test needs, and what happens when it is missing.

use std::fmt;
use std::fs;
use std::path::Path;

use crate::layout::{self, passwd, HomeKind};

/// A real component a test depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// Running as root (mounts, chroot, other users).
    Root,
    /// OpenSSH server and client, running as root, and every test user.
    Sshd,
    /// The test user with this short name (`bash`, `ash`, `rohome`, ...), with its login shell.
    User(&'static str),
    /// The aarch64 busybox root, qemu-user registered with binfmt_misc, and root for `chroot`.
    Aarch64,
    /// The `noexec` tmpfs at `ferry-noexec`'s home (mounted on demand when root).
    NoexecHome,
    /// Perl (Debian's perl-base, always present on Debian).
    Perl,
    /// Cockpit's own bridge, `cockpit-bridge`.
    CockpitBridge,
    /// Cockpit 337's Python bridge, unpacked under the base directory (see
    /// [`cockpit337_bridge_command`](crate::cockpit337_bridge_command)).
    Cockpit337,
    /// `unshare` from util-linux, with root, for private mount namespaces.
    Unshare,
    /// sudo with the test bed's rules ([`crate::sudoers`]), and root to use it as anyone.
    Sudo,
    /// doas (Debian's opendoas) with the test bed's rules ([`crate::doas_conf`]).
    Doas,
    /// podman with runc, root, and the test containers ([`crate::ensure_containers`]).
    Podman,
    /// docker (Debian's docker.io), root, the test bed's daemon and its test containers
    /// ([`crate::ensure`]).
    Docker,
    /// `dbus-daemon`, `flatpak-session-helper` and `flatpak-spawn` (see [`crate::SessionBus`]).
    FlatpakSpawn,
    /// `dbus-daemon`, Python's Gio bindings (the test service) and `systemd-hostnamed`.
    DBus,
    /// Debian's Chromium and Playwright in the test bed's venv.
    Browser,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Component::Root => f.write_str("root"),
            Component::Sshd => f.write_str("sshd"),
            Component::User(short) => write!(f, "test user {}{short}", layout::USER_PREFIX),
            Component::Aarch64 => f.write_str("aarch64 chroot"),
            Component::NoexecHome => f.write_str("noexec home"),
            Component::Perl => f.write_str("perl"),
            Component::CockpitBridge => f.write_str("cockpit-bridge"),
            Component::Cockpit337 => f.write_str("Cockpit 337"),
            Component::Unshare => f.write_str("unshare"),
            Component::Sudo => f.write_str("sudo with the test bed's rules"),
            Component::Doas => f.write_str("doas with the test bed's rules"),
            Component::Podman => f.write_str("podman and the test containers"),
            Component::Docker => f.write_str("docker, its daemon and the test containers"),
            Component::FlatpakSpawn => f.write_str("flatpak-spawn and a session bus"),
            Component::DBus => f.write_str("dbus-daemon, python3-gi and systemd-hostnamed"),
            Component::Browser => f.write_str("Chromium and Playwright"),
        }
    }
}

/// Is this a CI run (`CI` set and not empty)?
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Is this process root?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn executable(path: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        _ => Err(format!("{path} is missing")),
    }
}

fn root() -> Result<(), String> {
    if is_root() {
        Ok(())
    } else {
        Err("this needs root".into())
    }
}

fn user(short: &str) -> Result<(), String> {
    let spec = layout::user(short);
    let name = spec.name();
    let pw = passwd(&name).ok_or_else(|| format!("user {name} does not exist"))?;
    if pw.shell != spec.shell {
        return Err(format!(
            "user {name} has login shell {}, not {}",
            pw.shell.display(),
            spec.shell.display()
        ));
    }
    if pw.home != spec.home() {
        return Err(format!("user {name} has home {}", pw.home.display()));
    }
    if pw.gecos != spec.gecos {
        return Err(format!("user {name} has GECOS field {:?}", pw.gecos));
    }
    let groups = fs::read_to_string("/etc/group").unwrap_or_default();
    for g in spec.groups {
        let member = groups.lines().any(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() == 4 && f[0] == *g && f[3].split(',').any(|m| m == name)
        });
        if !member {
            return Err(format!("user {name} is not in group {g}"));
        }
    }
    executable(&spec.shell.to_string_lossy())?;
    if spec.home_kind == HomeKind::ReadOnly {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = fs::metadata(spec.home()).map_err(|e| format!("{}: {e}", spec.home().display()))?;
        if m.uid() != 0 || m.permissions().mode() & 0o222 != 0 {
            return Err(format!(
                "{} is not owned by root with mode 0555",
                spec.home().display()
            ));
        }
    }
    Ok(())
}

/// A rules file must hold exactly the test bed's rules.
fn rules(path: &str, content: &str) -> Result<(), String> {
    match fs::read_to_string(path) {
        Ok(text) if text == content => Ok(()),
        Ok(_) => Err(format!("{path} does not hold the test bed's rules")),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

impl Component {
    /// `Ok` when the component is there, else what is missing.
    pub fn check(self) -> Result<(), String> {
        match self {
            Component::Root => root(),
            Component::Sshd => {
                executable("/usr/sbin/sshd")?;
                executable("/usr/bin/ssh")?;
                executable("/usr/bin/ssh-keygen")?;
                root()?;
                layout::users().iter().try_for_each(|u| user(u.short))
            }
            Component::User(short) => user(short),
            Component::Aarch64 => {
                root()?;
                if !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
                    return Err("qemu-aarch64 is not registered with binfmt_misc".into());
                }
                let busybox = layout::aarch64_root().join("bin/busybox");
                let sh = layout::aarch64_root().join("bin/sh");
                if !busybox.is_file() || !sh.exists() {
                    return Err(format!(
                        "the aarch64 root {} is missing or incomplete",
                        layout::aarch64_root().display()
                    ));
                }
                Ok(())
            }
            Component::NoexecHome => {
                user("noexec")?;
                if layout::noexec_home_mounted() {
                    return Ok(());
                }
                root()?;
                layout::ensure_noexec_home().map_err(|e| format!("cannot mount it: {e}"))
            }
            Component::Perl => executable("/usr/bin/perl"),
            Component::CockpitBridge => executable(crate::COCKPIT_287_BRIDGE),
            Component::Cockpit337 => {
                executable(crate::PYTHON3)?;
                if crate::cockpit337_complete() {
                    Ok(())
                } else {
                    Err(format!(
                        "Cockpit 337 is not unpacked at {}",
                        crate::cockpit337_root().display()
                    ))
                }
            }
            Component::Unshare => {
                executable("/usr/bin/unshare")?;
                root()
            }
            Component::Sudo => {
                executable("/usr/bin/sudo")?;
                root()?;
                rules(crate::SUDOERS_FILE, &crate::sudoers())?;
                ["sudoer", "tty", "pw", "limited", "cold"]
                    .iter()
                    .try_for_each(|u| user(u))
            }
            Component::Doas => {
                executable("/usr/bin/doas")?;
                root()?;
                rules(crate::DOAS_CONF, &crate::doas_conf())?;
                user("sudoer")
            }
            Component::Podman => {
                executable("/usr/bin/podman")?;
                executable("/usr/sbin/runc")?;
                root()?;
                let sh = crate::container_root().join("bin/sh");
                if !sh.exists() {
                    return Err(format!("the container root {} is missing", sh.display()));
                }
                crate::ensure_containers().map_err(|e| format!("cannot start them: {e}"))
            }
            Component::Docker => {
                executable("/usr/bin/docker")?;
                executable("/usr/sbin/dockerd")?;
                root()?;
                let sh = crate::container_root().join("bin/sh");
                if !sh.exists() {
                    return Err(format!("the container root {} is missing", sh.display()));
                }
                crate::ensure(crate::Engine::Docker).map_err(|e| format!("cannot start them: {e}"))
            }
            Component::FlatpakSpawn => {
                executable("/usr/bin/dbus-daemon")?;
                executable("/usr/bin/dbus-send")?;
                executable(crate::FLATPAK_SESSION_HELPER)?;
                executable(crate::FLATPAK_SPAWN)
            }
            Component::Browser => {
                executable(crate::CHROMIUM)?;
                let python = crate::playwright_python();
                let ok = std::process::Command::new(&python)
                    .args(["-c", "import playwright.sync_api"])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    Ok(())
                } else {
                    Err(format!("Playwright is missing in {}", python.display()))
                }
            }
            Component::DBus => {
                executable("/usr/bin/dbus-daemon")?;
                executable(crate::dbus::HOSTNAMED)?;
                let gi = std::process::Command::new("/usr/bin/python3")
                    .args(["-c", "from gi.repository import Gio"])
                    .stderr(std::process::Stdio::null())
                    .status();
                match gi {
                    Ok(s) if s.success() => Ok(()),
                    _ => Err("python3-gi is missing".into()),
                }
            }
        }
    }
}

/// Is `component` there? In CI a missing component panics, naming it and `cargo xtask setup`;
/// elsewhere this prints `skipped: <why>` to stderr and returns `false`, and the test returns
/// early (see the [`require!`](crate::require!) macro).
pub fn require(component: Component) -> bool {
    match component.check() {
        Ok(()) => true,
        Err(why) => {
            if in_ci() {
                panic!(
                    "\n\n*** MISSING TEST COMPONENT: {component}: {why}.\n*** CI must have every \
                     component: run `cargo xtask setup` (as root) on this machine.\n\n"
                );
            }
            eprintln!(
                "skipped: {component} is not available: {why} (run `cargo xtask setup` as root)"
            );
            false
        }
    }
}
