//! Containers for the hop tests, podman's and docker's, run from a local busybox root (no image
//! registry is needed): `ferry-running` runs, `ferry-stopped` exists but does not.
//!
//! crun cannot run in every sandbox, so podman's containers are created with `--runtime runc`,
//! and all with small ulimits (the defaults may be above the machine's hard limits). Their root
//! is made by `cargo xtask setup` (see [`container_root`]); the containers themselves, and the
//! test bed's own docker daemon ([`DOCKER_HOST`]), are started at test time by [`ensure`], since
//! they do not survive a reboot.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::layout::base_dir;

/// The running container.
pub const RUNNING_CONTAINER: &str = "ferry-running";
/// The container that exists but is not running.
pub const STOPPED_CONTAINER: &str = "ferry-stopped";

/// Where the test bed's docker daemon listens: hand it to docker as `DOCKER_HOST`. It is the
/// test bed's own daemon (data under `<base>/docker`, no network, vfs storage), so it neither
/// needs nor touches a docker the machine may run.
pub const DOCKER_HOST: &str = "unix:///run/ferry-testbed/docker.sock";

/// The docker image made from [`container_root`].
const DOCKER_IMAGE: &str = "ferry-busybox";

/// How long the docker daemon may take to answer once started.
const DOCKERD_START: Duration = Duration::from_secs(60);

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

/// A container engine the tests drive through its command-line tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// `podman`, with runc and `--rootfs`.
    Podman,
    /// `docker` (Debian's docker.io), talking to the test bed's daemon at [`DOCKER_HOST`].
    Docker,
}

impl Engine {
    /// The tool's name, as in a `podman:` or `docker:` hop.
    pub fn program(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        }
    }

    fn command(self) -> Command {
        let mut cmd = Command::new(self.program());
        if self == Engine::Docker {
            cmd.env("DOCKER_HOST", DOCKER_HOST);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run(self, args: &[&str]) -> io::Result<std::process::Output> {
        self.command().args(args).output()
    }

    /// Run, and fail with the tool's own words.
    fn must(self, args: &[&str]) -> io::Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{} {}: {}",
                self.program(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Is the container there, and is it running? `None` when it does not exist.
    ///
    /// A container whose process was killed behind the engine's back (its monitor went with
    /// the process tree that started it) still reads as running; it is removed here, so that
    /// it is made again.
    fn state(self, name: &str) -> io::Result<Option<bool>> {
        let format = "{{.State.Running}} {{.State.Pid}}";
        let out = self.run(&["container", "inspect", "-f", format, name])?;
        if !out.status.success() {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        let running = words.next() == Some("true");
        let pid = words.next().unwrap_or("0");
        if running && !Path::new("/proc").join(pid).exists() {
            self.must(&["rm", "-f", name])?;
            return Ok(None);
        }
        Ok(Some(running))
    }

    /// What `run` and `create` take before the command: the engine's own options, then the
    /// root (podman) or the image made from it (docker).
    fn create_args(self, root: &str) -> Vec<String> {
        let mut v: Vec<String> = match self {
            Engine::Podman => vec!["--runtime".into(), "runc".into()],
            Engine::Docker => vec!["--network".into(), "none".into()],
        };
        v.extend(
            [
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1000:1000",
            ]
            .map(String::from),
        );
        match self {
            Engine::Podman => v.extend(["--rootfs".into(), root.to_owned()]),
            Engine::Docker => v.push(DOCKER_IMAGE.into()),
        }
        v
    }
}

static LOCK: Mutex<()> = Mutex::new(());

/// Make [`RUNNING_CONTAINER`] run and [`STOPPED_CONTAINER`] exist, stopped, for podman.
/// Needs root.
pub fn ensure_containers() -> io::Result<()> {
    ensure(Engine::Podman)
}

/// Make [`RUNNING_CONTAINER`] run and [`STOPPED_CONTAINER`] exist, stopped, for `engine`
/// (for docker, after starting the test bed's daemon and importing [`container_root`] as an
/// image). Needs root.
pub fn ensure(engine: Engine) -> io::Result<()> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = container_root();
    if engine == Engine::Docker {
        start_dockerd()?;
        import_image(&root)?;
    }
    let root = root.to_string_lossy();
    for (name, running) in [(RUNNING_CONTAINER, true), (STOPPED_CONTAINER, false)] {
        let now = engine.state(name)?;
        if now == Some(running) {
            continue;
        }
        match now {
            Some(false) => engine.must(&["start", name])?,
            Some(true) => engine.must(&["stop", "-t", "0", name])?,
            None => {
                let mut args = vec![if running { "run" } else { "create" }];
                if running {
                    args.push("-d");
                }
                args.extend(["--name", name]);
                let rest = engine.create_args(&root);
                args.extend(rest.iter().map(String::as_str));
                args.extend(["/bin/sleep", "100000000"]);
                engine.must(&args)?
            }
        };
    }
    Ok(())
}

/// Start the test bed's docker daemon unless it answers already; wait until it does.
fn start_dockerd() -> io::Result<()> {
    if Engine::Docker.run(&["version"])?.status.success() {
        return Ok(());
    }
    let run = Path::new("/run/ferry-testbed");
    std::fs::create_dir_all(run)?;
    let data = base_dir().join("docker");
    let log = std::fs::File::create(base_dir().join("dockerd.log"))?;
    let socket = DOCKER_HOST.trim_start_matches("unix://");
    let _ = std::fs::remove_file(socket);
    let mut dockerd = Command::new("dockerd");
    dockerd
        .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
        .args(["--storage-driver=vfs", "-H", DOCKER_HOST])
        .arg("--data-root")
        .arg(&data)
        .arg("--exec-root")
        .arg(run.join("docker"))
        .arg("--pidfile")
        .arg(run.join("docker.pid"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own session: the test's signals are not its.
        .process_group(0);
    let mut child = dockerd.spawn()?;
    let started = Instant::now();
    loop {
        if Engine::Docker.run(&["version"])?.status.success() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "dockerd ended ({status}); see {}",
                base_dir().join("dockerd.log").display()
            )));
        }
        if started.elapsed() > DOCKERD_START {
            let _ = child.kill();
            return Err(io::Error::other(format!(
                "dockerd did not answer within {DOCKERD_START:?}; see {}",
                base_dir().join("dockerd.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Import `root` as [`DOCKER_IMAGE`], labelled with the root directory's inode: the set-up
/// makes the root anew (a new directory) when it changes, and then the image and its
/// containers are made again.
fn import_image(root: &Path) -> io::Result<()> {
    let stamp = std::fs::metadata(root)?.ino().to_string();
    let label = Engine::Docker.run(&[
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"ferry.root\"}}",
        DOCKER_IMAGE,
    ])?;
    if label.status.success() && String::from_utf8_lossy(&label.stdout).trim() == stamp {
        return Ok(());
    }
    for name in [RUNNING_CONTAINER, STOPPED_CONTAINER] {
        let _ = Engine::Docker.run(&["rm", "-f", name]);
    }
    let mut import = Engine::Docker.command();
    import
        .args([
            "import",
            "--change",
            &format!("LABEL ferry.root={stamp}"),
            "-",
        ])
        .arg(DOCKER_IMAGE)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = import.spawn()?;
    let stdin = child.stdin.take().expect("piped");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(stdin)
        .status()?;
    let status = child.wait()?;
    if !tar.success() || !status.success() {
        return Err(io::Error::other(format!(
            "docker import of {} failed (tar {tar}, docker {status})",
            root.display()
        )));
    }
    Ok(())
}
