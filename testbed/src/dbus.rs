//! Private D-Bus buses for tests: a "system" and a "session" `dbus-daemon`, each started with
//! `dbus-daemon --nofork --print-address --config-file FILE` (an allow-all policy and a service
//! directory), and handed to bridges through `DBUS_SYSTEM_BUS_ADDRESS` and
//! `DBUS_SESSION_BUS_ADDRESS`.
//!
//! Both buses can activate `org.ferry.Test` (`data/dbus-test-service.py`, a Gio service with
//! methods for every type, changing properties, signals and an ObjectManager); the system bus
//! also activates the real `systemd-hostnamed` as `org.freedesktop.hostname1`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The test service's script.
const TEST_SERVICE: &str = include_str!("../data/dbus-test-service.py");
/// Where Debian keeps systemd-hostnamed.
pub const HOSTNAMED: &str = "/lib/systemd/systemd-hostnamed";
/// The test service's bus name.
pub const TEST_NAME: &str = "org.ferry.Test";

/// A running pair of private buses; dropping it stops both daemons.
pub struct TestBuses {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
    /// The address of the bus that plays the system bus.
    pub system: String,
    /// The address of the bus that plays the session bus.
    pub session: String,
}

fn config(dir: &Path, socket: &str, services: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}/{socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="*"/>
  </policy>
</busconfig>
"#,
        dir.display(),
        services.display()
    )
}

impl TestBuses {
    /// Start both buses and wait until they listen.
    pub fn start() -> std::io::Result<TestBuses> {
        let dir = tempfile::Builder::new().prefix("ferry-dbus").tempdir()?;
        let script = dir.path().join("dbus-test-service.py");
        std::fs::write(&script, TEST_SERVICE)?;
        let system = format!("unix:path={}/system.sock", dir.path().display());
        let session = format!("unix:path={}/session.sock", dir.path().display());
        let mut buses = TestBuses {
            daemons: Vec::new(),
            system: system.clone(),
            session: session.clone(),
            dir,
        };
        for kind in ["system", "session"] {
            let services = buses.dir.path().join(format!("{kind}-services"));
            std::fs::create_dir(&services)?;
            std::fs::write(
                services.join(format!("{TEST_NAME}.service")),
                format!(
                    "[D-BUS Service]\nName={TEST_NAME}\nExec=/usr/bin/python3 {}\n",
                    script.display()
                ),
            )?;
            if kind == "system" {
                std::fs::write(
                    services.join("org.freedesktop.hostname1.service"),
                    format!("[D-BUS Service]\nName=org.freedesktop.hostname1\nExec={HOSTNAMED}\n"),
                )?;
            }
            let conf = buses.dir.path().join(format!("{kind}.conf"));
            std::fs::write(
                &conf,
                config(buses.dir.path(), &format!("{kind}.sock"), &services),
            )?;
            let mut child = Command::new("dbus-daemon")
                .args(["--nofork", "--print-address", "--config-file"])
                .arg(&conf)
                .env("DBUS_SYSTEM_BUS_ADDRESS", &system)
                .env("DBUS_SESSION_BUS_ADDRESS", &session)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let stdout = child.stdout.take();
            buses.daemons.push(child);
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                if let Some(out) = stdout {
                    let _ = BufReader::new(out).read_line(&mut line);
                }
                let _ = tx.send(line);
            });
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.starts_with("unix:") => {}
                _ => {
                    return Err(std::io::Error::other(format!(
                        "dbus-daemon for the {kind} bus did not start"
                    )))
                }
            }
        }
        Ok(buses)
    }

    /// The environment that points a bridge at these buses.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("DBUS_SYSTEM_BUS_ADDRESS", self.system.clone()),
            ("DBUS_SESSION_BUS_ADDRESS", self.session.clone()),
        ]
    }
}

impl Drop for TestBuses {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}
