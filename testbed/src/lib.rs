//! Real test components for ferry's integration tests and benchmarks.
//!
//! Nothing here is a mock. The machine is prepared once by `cargo xtask setup` (packages, test
//! users, an aarch64 busybox root, qemu-user binfmt); this crate knows where everything is, starts
//! what has to run at test time (a loopback `sshd`, the noexec home mount), and tells a test what is
//! missing through [`require`]:
//!
//! - in CI (`CI` set), a missing component is a loud failure naming it and `cargo xtask setup`;
//! - elsewhere, the test prints `skipped: <why>` to stderr and returns early.
//!
//! Fixed places (override the base directory with `FERRY_TESTBED_DIR`):
//!
//! | what | where |
//! | --- | --- |
//! | base directory | `/var/lib/ferry-testbed` |
//! | aarch64 busybox root | `<base>/aarch64` |
//! | busybox `ash` login shell | `<base>/bin/ash` (symlink to busybox) |
//! | Cockpit 337 (bridge, cockpit-ws, cockpit-system), unpacked | `<base>/cockpit-337` |
//! | Playwright, for the browser tests | `<base>/playwright` (a venv) |
//! | test users | `ferry-bash`, `ferry-dash`, `ferry-zsh`, `ferry-fish`, `ferry-tcsh`, `ferry-ash`, `ferry-rohome`, `ferry-noexec`, `ferry-sudoer`, `ferry-tty`, `ferry-pw`, `ferry-limited`, `ferry-cold`, `ferry-gecos` (full name and supplementary groups) |
//! | podman and docker containers' busybox root | `<base>/container-root` |
//! | the test bed's docker daemon: data, log, socket | `<base>/docker`, `<base>/dockerd.log`, `/run/ferry-testbed/docker.sock` |
//! | sudo and doas rules | `/etc/sudoers.d/ferry-testbed`, `/etc/doas.conf` |

mod cockpit;
mod containers;
mod dbus;
mod layout;
mod privilege;
mod require;
mod session_bus;
mod sshd;

pub use cockpit::{
    cockpit337_bridge_command, cockpit337_complete, cockpit337_pythonpath, cockpit337_root,
    playwright_python, CockpitWs, CHROMIUM, COCKPIT_287_BRIDGE, COCKPIT_337_PACKAGES,
    COCKPIT_337_VERSION, PYTHON3,
};
pub use containers::{
    container_root, ensure, ensure_containers, Engine, CONTAINER_GROUP, CONTAINER_PASSWD,
    DOCKER_HOST, RUNNING_CONTAINER, STOPPED_CONTAINER,
};
pub use dbus::{TestBuses, HOSTNAMED, TEST_NAME};
pub use layout::{
    aarch64_root, ash_shell, base_dir, ensure_noexec_home, noexec_home_mounted, user, users,
    write_noise, HomeKind, UserSpec, NOISE, USER_PREFIX,
};
pub use privilege::{doas_conf, sudoers, DOAS_CONF, PASSWORD, PASSWORD_USERS, SUDOERS_FILE};
pub use require::{in_ci, is_root, require, Component};
pub use session_bus::{SessionBus, FLATPAK_SESSION_HELPER, FLATPAK_SPAWN};
pub use sshd::{Sshd, SshdError, HOST_KEY_ALIAS};

/// Return from the calling test (a function returning `()`) when `component` is missing.
///
/// In CI a missing component panics instead; see [`require`].
#[macro_export]
macro_rules! require {
    ($component:expr) => {
        if !$crate::require($component) {
            return;
        }
    };
}
