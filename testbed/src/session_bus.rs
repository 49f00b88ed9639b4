//! A private D-Bus session bus with `flatpak-session-helper` on it: what `flatpak-spawn --host`
//! talks to, outside a Flatpak sandbox.

use std::io::{self, BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// flatpak's session helper (Debian's `flatpak`).
pub const FLATPAK_SESSION_HELPER: &str = "/usr/libexec/flatpak-session-helper";
/// `flatpak-spawn` (Debian's `flatpak-xdg-utils`), which is not on `PATH` outside a sandbox.
pub const FLATPAK_SPAWN: &str = "/usr/libexec/flatpak-xdg-utils/flatpak-spawn";

/// A running session bus and session helper, both killed on drop.
pub struct SessionBus {
    address: String,
    daemon: Child,
    helper: Child,
}

impl SessionBus {
    /// Start `dbus-daemon --session` and the session helper on it; returns once the helper
    /// owns its name (`org.freedesktop.Flatpak`), or fails after 10 s.
    pub fn with_flatpak_helper() -> io::Result<SessionBus> {
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut address = String::new();
        let stdout = daemon.stdout.take().expect("piped stdout");
        BufReader::new(stdout).read_line(&mut address)?;
        let address = address.trim().to_owned();
        if address.is_empty() {
            let _ = daemon.kill();
            let _ = daemon.wait();
            return Err(io::Error::other("dbus-daemon printed no address"));
        }
        let helper = match Command::new(FLATPAK_SESSION_HELPER)
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(helper) => helper,
            Err(e) => {
                let _ = daemon.kill();
                let _ = daemon.wait();
                return Err(e);
            }
        };
        let bus = SessionBus {
            address,
            daemon,
            helper,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bus.has_owner("org.freedesktop.Flatpak") {
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "flatpak-session-helper did not appear on the bus",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bus)
    }

    /// The bus address, for `DBUS_SESSION_BUS_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn has_owner(&self, name: &str) -> bool {
        Command::new("dbus-send")
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                &format!("string:{name}"),
            ])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        for child in [&mut self.helper, &mut self.daemon] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
