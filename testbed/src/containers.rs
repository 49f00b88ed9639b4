//! Podman containers for the hop tests, run from a local busybox root (no image registry is
//! needed): `ferry-running` runs, `ferry-stopped` exists but does not.
//!
//! crun cannot run in every sandbox, so the containers are created with `--runtime runc`, and
//! with small ulimits (the defaults may be above the machine's hard limits). Their root is made
//! by `cargo xtask setup` (see [`container_root`]); the containers themselves are created at
//! test time by [`ensure_containers`], since they do not survive a reboot.

use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::layout::base_dir;

/// The running container.
pub const RUNNING_CONTAINER: &str = "ferry-running";
/// The container that exists but is not running.
pub const STOPPED_CONTAINER: &str = "ferry-stopped";

/// The containers' root: a busybox-static userland for this machine's architecture, with
/// users `root`, `app` (uid 1000, home `/home/app`) and `nohome` (uid 1001, home
/// `/nonexistent`).
pub fn container_root() -> PathBuf {
    base_dir().join("container-root")
}

/// `/etc/passwd` of [`container_root`].
pub const CONTAINER_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
     app:x:1000:1000:app:/home/app:/bin/sh\n\
     nohome:x:1001:1001::/nonexistent:/bin/sh\n";

/// `/etc/group` of [`container_root`].
pub const CONTAINER_GROUP: &str = "root:x:0:\napp:x:1000:\nnohome:x:1001:\n";

static LOCK: Mutex<()> = Mutex::new(());

fn podman(args: &[&str]) -> io::Result<std::process::Output> {
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// Is the container there, and is it running? `None` when it does not exist.
///
/// A container whose process was killed behind podman's back (its monitor went with the
/// process tree that started it) still reads as running; it is removed here, so that it is
/// made again.
fn state(name: &str) -> io::Result<Option<bool>> {
    let out = podman(&[
        "container",
        "inspect",
        "-f",
        "{{.State.Running}} {{.State.Pid}}",
        name,
    ])?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let running = words.next() == Some("true");
    let pid = words.next().unwrap_or("0");
    if running && !std::path::Path::new("/proc").join(pid).exists() {
        let out = podman(&["rm", "-f", "-t", "0", name])?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "podman rm -f {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        return Ok(None);
    }
    Ok(Some(running))
}

/// Make [`RUNNING_CONTAINER`] run and [`STOPPED_CONTAINER`] exist, stopped. Needs root.
pub fn ensure_containers() -> io::Result<()> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = container_root();
    let root = root.to_string_lossy();
    for (name, running) in [(RUNNING_CONTAINER, true), (STOPPED_CONTAINER, false)] {
        let now = state(name)?;
        if now == Some(running) {
            continue;
        }
        let verb = match (now, running) {
            (Some(false), true) => vec!["start", name],
            (Some(true), false) => vec!["stop", "-t", "0", name],
            (None, _) => vec![
                if running { "run" } else { "create" },
                "--runtime",
                "runc",
                "--name",
                name,
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1000:1000",
                "--rootfs",
                &root,
                "/bin/sleep",
                "100000000",
            ],
            (Some(_), _) => unreachable!("handled above"),
        };
        let mut args = verb.clone();
        if now.is_none() && running {
            args.insert(1, "-d");
        }
        let out = podman(&args)?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "podman {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}
