//! The reference bridges: Debian 12's `cockpit-bridge` 287 (the last C bridge, installed as a
//! package) and Cockpit 337's Python bridge (bookworm-backports, unpacked beside it).
//!
//! Installing 337 would replace 287, so `cargo xtask setup` fetches its debs with
//! `apt-get download` and unpacks them with `dpkg-deb -x` into [`cockpit337_root`]. Its bridge
//! then runs from there with `PYTHONPATH` pointing at the unpacked Python package; see
//! [`cockpit337_bridge_command`].

use std::path::PathBuf;
use std::process::Command;

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

/// The Python of the test bed's Playwright venv (made by `cargo xtask setup`).
pub fn playwright_python() -> PathBuf {
    base_dir().join("playwright/bin/python")
}

/// Debian's Chromium, the browser of the browser tests.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Cockpit 337's web server, `cockpit-ws`, on a loopback port, with a login command of the
/// caller's choosing (`[Ssh-Login] Command`), killed on drop.
///
/// As Debian runs it, it runs as an unprivileged user (`ferry-bash`: as root, root's own ssh keys
/// would log in whatever password is typed), and in a mount namespace of its own where 337's
/// `/usr/share/cockpit` is bind-mounted over 287's (cockpit-ws reads its login page from that
/// compiled-in path). Its configuration allows plain HTTP, `LoginTo` and unknown hosts.
pub struct CockpitWs {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl CockpitWs {
    /// Start it with `[Ssh-Login] Command = PROGRAM ARGS...`; `program` is copied into a
    /// directory the server's user can read, so that any checkout works. Waits (at most 30 s)
    /// until it accepts connections.
    ///
    /// # Errors
    /// When it cannot be started or does not listen in time (with its log).
    pub fn start(program: &std::path::Path, args: &[&str]) -> Result<CockpitWs, String> {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("ferry-cockpit-ws-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let d = dir.path();
        let io = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| format!("{what}: {e}")
        };
        std::fs::create_dir_all(d.join("cockpit")).map_err(io("mkdir"))?;
        let login = d.join(program.file_name().unwrap_or_default());
        std::fs::copy(program, &login).map_err(io("copy the login command"))?;
        let mut command = login.display().to_string();
        for a in args {
            command.push(' ');
            command.push_str(a);
        }
        std::fs::write(
            d.join("cockpit/cockpit.conf"),
            format!(
                "[WebService]\nAllowUnencrypted = true\nLoginTo = true\n\n\
                 [Ssh-Login]\nCommand = {command}\nconnectToUnknownHosts = true\n"
            ),
        )
        .map_err(io("write cockpit.conf"))?;
        for p in [
            d.to_owned(),
            d.join("cockpit"),
            d.join("cockpit/cockpit.conf"),
            login,
        ] {
            let mode = if p.is_dir() || p.extension().is_none() {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(io("chmod"))?;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("port"))?;
        let port = listener.local_addr().map_err(io("port"))?.port();
        drop(listener);
        let root = cockpit337_root();
        let user = crate::layout::user("bash").name();
        let script = format!(
            "mount --bind {root}/usr/share/cockpit /usr/share/cockpit && \
             exec setpriv --reuid={user} --regid={user} --init-groups \
             env HOME=/home/{user} XDG_CONFIG_DIRS={dir} XDG_DATA_DIRS={root}/usr/share \
             {root}/usr/lib/cockpit/cockpit-ws --no-tls -p {port} -a 127.0.0.1",
            root = root.display(),
            dir = d.display(),
        );
        let log = std::fs::File::create(d.join("ws.log")).map_err(io("log"))?;
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(io("log"))?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(io("start cockpit-ws"))?;
        let mut ws = CockpitWs {
            child,
            port,
            _dir: dir,
        };
        let started = std::time::Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(ws);
            }
            if let Ok(Some(status)) = ws.child.try_wait() {
                return Err(format!("cockpit-ws ended ({status}): {}", ws.log()));
            }
            if started.elapsed() > std::time::Duration::from_secs(30) {
                return Err(format!(
                    "cockpit-ws does not listen after 30 s: {}",
                    ws.log()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The loopback port it serves on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it (and the login commands it ran) printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("ws.log")).unwrap_or_default()
    }
}

impl Drop for CockpitWs {
    fn drop(&mut self) {
        // Its process group: unshare, cockpit-ws and the sessions it started.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory effects; the group is ours.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}
