//! The reference bridges: Debian 12's `cockpit-bridge` 287 (the last C bridge, installed as a
//! package) and Cockpit 337's Python bridge (bookworm-backports, unpacked beside it).
//!
//! Installing 337 would replace 287, so `cargo xtask setup` fetches its debs with
//! `apt-get download` and unpacks them with `dpkg-deb -x` into [`cockpit337_root`]. Its bridge
//! then runs from there with `PYTHONPATH` pointing at the unpacked Python package; see
//! [`cockpit337_bridge_command`].

use std::path::PathBuf;

use crate::layout::base_dir;

/// The C bridge of Debian 12 (Cockpit 287), installed by the `cockpit-bridge` package.
pub const COCKPIT_287_BRIDGE: &str = "/usr/bin/cockpit-bridge";

/// The Debian version of Cockpit 337 in bookworm-backports.
pub const COCKPIT_337_VERSION: &str = "337-1~bpo12+1";

/// The Debian packages of Cockpit 337 that are unpacked into [`cockpit337_root`].
pub const COCKPIT_337_PACKAGES: &[&str] = &["cockpit-bridge", "cockpit-ws", "cockpit-system"];

/// The Python that runs Cockpit 337's bridge (Debian's `python3`, which Cockpit 337 supports).
pub const PYTHON3: &str = "/usr/bin/python3";

/// Where Cockpit 337's debs are unpacked: `<base>/cockpit-337` (its `usr/lib/cockpit`,
/// `usr/share/cockpit`, `usr/lib/python3/dist-packages/cockpit`, ...).
pub fn cockpit337_root() -> PathBuf {
    base_dir().join("cockpit-337")
}

/// The directory to put on `PYTHONPATH` for Cockpit 337's `cockpit` Python package.
pub fn cockpit337_pythonpath() -> PathBuf {
    cockpit337_root().join("usr/lib/python3/dist-packages")
}

/// The command that runs Cockpit 337's bridge on stdin/stdout, as a program and its arguments
/// (it sets `PYTHONPATH` through `env`, so it works after `Command::env_clear` and can be given
/// to anything that takes a bridge command, such as `cockpit-ws --local-session`):
/// `/usr/bin/env PYTHONPATH=<root>/usr/lib/python3/dist-packages /usr/bin/python3 -m cockpit.bridge`.
pub fn cockpit337_bridge_command() -> Vec<String> {
    vec![
        "/usr/bin/env".to_owned(),
        format!("PYTHONPATH={}", cockpit337_pythonpath().display()),
        PYTHON3.to_owned(),
        "-m".to_owned(),
        "cockpit.bridge".to_owned(),
    ]
}

/// Is Cockpit 337 unpacked completely (its bridge and its cockpit-ws)?
pub fn cockpit337_complete() -> bool {
    let root = cockpit337_root();
    cockpit337_pythonpath().join("cockpit/bridge.py").is_file()
        && root.join("usr/lib/cockpit/cockpit-ws").is_file()
        && root.join("usr/share/cockpit/shell").is_dir()
}
