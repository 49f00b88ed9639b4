//! Where the test bed lives and which test users it has.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Every test user's name starts with this.
pub const USER_PREFIX: &str = "ferry-";

/// What the test users' login scripts print on stdout. It must never reach a ferry user.
pub const NOISE: &str = "ferry-testbed login script noise";

const DEFAULT_BASE: &str = "/var/lib/ferry-testbed";

/// The base directory of the machine-wide test bed: `$FERRY_TESTBED_DIR` or
/// `/var/lib/ferry-testbed`.
pub fn base_dir() -> PathBuf {
    match std::env::var_os("FERRY_TESTBED_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_BASE),
    }
}

/// The aarch64 busybox root: `chroot <this> /bin/sh -c 'uname -m'` prints `aarch64` once qemu-user
/// is registered with binfmt_misc.
pub fn aarch64_root() -> PathBuf {
    base_dir().join("aarch64")
}

/// The busybox `ash` login shell: a symlink named `ash` to busybox, so that busybox runs as ash.
pub fn ash_shell() -> PathBuf {
    base_dir().join("bin/ash")
}

/// How a test user's home directory is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HomeKind {
    /// An ordinary home owned by the user.
    Normal,
    /// Owned by root, mode 0555: the user can write nothing there.
    ReadOnly,
    /// A tmpfs mounted `noexec` (mounted at test time by [`ensure_noexec_home`], since mounts do
    /// not survive a reboot).
    Noexec,
}

/// One test user.
#[derive(Clone, Debug)]
pub struct UserSpec {
    /// The ssh config alias (`bash`, `ash`, `rohome`, ...); the user is `ferry-<short>`.
    pub short: &'static str,
    /// The login shell.
    pub shell: PathBuf,
    pub home_kind: HomeKind,
    /// Login scripts (path relative to the home, content) that print [`NOISE`] on stdout.
    pub noise: Vec<(&'static str, String)>,
    /// The GECOS field of its `/etc/passwd` entry (empty for none).
    pub gecos: &'static str,
    /// Supplementary groups (besides the user's own primary group), in this order.
    pub groups: &'static [&'static str],
}

impl UserSpec {
    /// The user name: `ferry-<short>`.
    pub fn name(&self) -> String {
        format!("{USER_PREFIX}{}", self.short)
    }

    /// The user's uid, when the user exists.
    pub fn uid(&self) -> Option<u32> {
        passwd(&self.name()).map(|p| p.uid)
    }

    /// The home directory: `/home/ferry-<short>`.
    pub fn home(&self) -> PathBuf {
        PathBuf::from("/home").join(self.name())
    }
}

fn sh_noise(file: &str) -> String {
    format!("echo '{NOISE} ({file})'\n")
}

/// Every test user, one per login shell, plus the read-only and noexec homes and the users of
/// the hop tests.
pub fn users() -> Vec<UserSpec> {
    let sh_noise_files = |files: &[&'static str]| -> Vec<(&'static str, String)> {
        files.iter().map(|f| (*f, sh_noise(f))).collect()
    };
    vec![
        UserSpec {
            short: "bash",
            shell: "/bin/bash".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".bashrc", ".profile", ".bash_login"]),
            gecos: "",
            groups: &[],
        },
        UserSpec {
            short: "dash",
            shell: "/bin/dash".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".profile"]),
            gecos: "",
            groups: &[],
        },
        UserSpec {
            short: "zsh",
            shell: "/bin/zsh".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".zshenv", ".zprofile", ".zshrc", ".zlogin"]),
            gecos: "",
            groups: &[],
        },
        UserSpec {
            short: "fish",
            shell: "/usr/bin/fish".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".config/fish/config.fish"]),
            gecos: "",
            groups: &[],
        },
        UserSpec {
            short: "tcsh",
            shell: "/bin/tcsh".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".tcshrc", ".login"]),
            gecos: "",
            groups: &[],
        },
        UserSpec {
            short: "ash",
            shell: ash_shell(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".profile"]),
            gecos: "",
            groups: &[],
        },
        UserSpec {
            short: "rohome",
            shell: "/bin/bash".into(),
            home_kind: HomeKind::ReadOnly,
            noise: sh_noise_files(&[".bashrc", ".profile"]),
            gecos: "",
            groups: &[],
        },
        // For the hop tests: sudo and doas without a password, sudo with requiretty, and a
        // user only the cache-counting test logs in as (its cache starts cold).
        UserSpec {
            short: "sudoer",
            shell: "/bin/bash".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".bashrc", ".profile"]),
            gecos: "",
            groups: &[],
        },
        UserSpec {
            short: "tty",
            shell: "/bin/bash".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".bashrc", ".profile"]),
            gecos: "",
            groups: &[],
        },
        UserSpec {
            short: "pw",
            shell: "/bin/bash".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".bashrc", ".profile"]),
            gecos: "",
            groups: &[],
        },
        UserSpec {
            short: "limited",
            shell: "/bin/bash".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".bashrc", ".profile"]),
            gecos: "",
            groups: &[],
        },
        UserSpec {
            short: "cold",
            shell: "/bin/bash".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".bashrc", ".profile"]),
            gecos: "",
            groups: &[],
        },
        // For the internal bus's `/user` object: a full name with the other GECOS fields after
        // it, and several supplementary groups (groups every Debian system has).
        UserSpec {
            short: "gecos",
            shell: "/bin/bash".into(),
            home_kind: HomeKind::Normal,
            noise: sh_noise_files(&[".bashrc", ".profile"]),
            gecos: "Ferry Gecos Tester,Room 7,555-0107,555-0170",
            groups: &["users", "audio", "adm"],
        },
        UserSpec {
            short: "noexec",
            shell: "/bin/bash".into(),
            home_kind: HomeKind::Noexec,
            noise: sh_noise_files(&[".bashrc", ".profile"]),
            gecos: "",
            groups: &[],
        },
    ]
}

/// The test user with this short name (`bash`, `ash`, `rohome`, ...).
///
/// # Panics
/// When there is no such test user: that is a bug in the caller.
pub fn user(short: &str) -> UserSpec {
    users()
        .into_iter()
        .find(|u| u.short == short)
        .unwrap_or_else(|| panic!("ferry-testbed has no test user {short:?}"))
}

/// A user's entry in `/etc/passwd`.
#[derive(Clone, Debug)]
pub(crate) struct Passwd {
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

pub(crate) fn passwd(name: &str) -> Option<Passwd> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() == 7 && f[0] == name {
            Some(Passwd {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                gecos: f[4].to_owned(),
                home: f[5].into(),
                shell: f[6].into(),
            })
        } else {
            None
        }
    })
}

/// Is something mounted exactly at `path`?
fn mounted_at(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| mount_point == want)
}

/// Is the noexec tmpfs mounted at `ferry-noexec`'s home?
pub fn noexec_home_mounted() -> bool {
    mounted_at(&user("noexec").home())
}

static MOUNT_LOCK: Mutex<()> = Mutex::new(());

/// Mount a `noexec` tmpfs at `ferry-noexec`'s home (when not mounted yet) and put the user's
/// login scripts in it. Needs root.
pub fn ensure_noexec_home() -> io::Result<()> {
    let _guard = MOUNT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let spec = user("noexec");
    let home = spec.home();
    if mounted_at(&home) {
        return Ok(());
    }
    let pw = passwd(&spec.name()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no user {} (run `cargo xtask setup`)", spec.name()),
        )
    })?;
    fs::create_dir_all(&home)?;
    let options = format!(
        "noexec,nosuid,nodev,size=64m,mode=0700,uid={},gid={}",
        pw.uid, pw.gid
    );
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &options, "ferry-noexec-home"])
        .arg(&home)
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "mount -t tmpfs -o {options} ferry-noexec-home {}: {status}",
            home.display()
        )));
    }
    write_noise(&spec, pw.uid, pw.gid)
}

/// Write `spec`'s login scripts into its home, owned by `uid`:`gid`, unless they are already
/// there with the right content.
pub fn write_noise(spec: &UserSpec, uid: u32, gid: u32) -> io::Result<()> {
    let home = spec.home();
    for (rel, content) in &spec.noise {
        let path = home.join(rel);
        if fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            let mut dir = home.clone();
            fs::create_dir_all(parent)?;
            // Hand every directory made under the home to the user too.
            for part in Path::new(rel).parent().into_iter().flat_map(|p| p.iter()) {
                dir.push(part);
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
            }
        }
        fs::write(&path, content)?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
    }
    Ok(())
}
