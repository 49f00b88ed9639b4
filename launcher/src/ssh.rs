//! System OpenSSH for an ssh hop that starts on this machine: a master connection ferry owns,
//! and the route's command run through it.
//!
//! - The user's ssh configuration applies as it is (host key policy, known hosts, ProxyJump,
//!   agents). What ssh asks while the master connects (passwords, an unknown host key) goes
//!   through ferry's [prompt relay](crate::prompt), with one password attempt
//!   (`NumberOfPasswordPrompts=1`); the sessions over the master ask nothing (`BatchMode=yes`).
//!   ferry also adds what makes its own command run as given, with no terminal: `-T`,
//!   `RequestTTY=no`, `RemoteCommand=none` ([`SESSION_OPTIONS`]). `--ssh-config FILE` reaches
//!   every ssh ferry starts here.
//! - The master runs in the foreground as ferry's child (`ControlPersist=no`, never `-f`), in a
//!   private control directory (mode 0700). It ends with ferry: [`Master`]'s drop kills it and
//!   removes the directory, and it gets SIGTERM if ferry itself is killed (`PR_SET_PDEATHSIG`).

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use crate::prompt::{Answerer, Relay};
use crate::LaunchError;

/// Options that make an ssh run the given command exactly, without a terminal, whatever the
/// user's configuration says (`RemoteCommand`, `RequestTTY force`). `IgnoreUnknown` keeps
/// OpenSSH older than 7.6, which has no `RemoteCommand`, working.
pub const SESSION_OPTIONS: [&str; 7] = [
    "-T",
    "-o",
    "IgnoreUnknown=RemoteCommand",
    "-o",
    "RemoteCommand=none",
    "-o",
    "RequestTTY=no",
];

/// The most time the answers to ssh's prompts may take in all, on top of the connect
/// timeout: a prompt nobody answers must not hold the connection for ever.
pub const PROMPT_LIMIT: Duration = Duration::from_secs(300);

/// How to reach one host: what every ssh run for it gets besides its own options.
#[derive(Clone, Debug)]
pub struct Destination {
    /// `-F FILE`, `-p PORT`, `-l USER` as given.
    args: Vec<OsString>,
    host: String,
}

impl Destination {
    pub fn new(
        host: &str,
        user: Option<&str>,
        port: Option<u16>,
        config: Option<&str>,
    ) -> Destination {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(cfg) = config {
            args.extend(["-F".into(), cfg.into()]);
        }
        if let Some(p) = port {
            args.extend(["-p".into(), p.to_string().into()]);
        }
        if let Some(u) = user {
            args.extend(["-l".into(), u.into()]);
        }
        Destination {
            args,
            host: host.to_owned(),
        }
    }

    /// More options for every ssh run for this host (they come before `-p`, `-l` and the host,
    /// so a `-l` here wins over the destination's user, as in ssh).
    pub fn with_options(mut self, options: &[OsString]) -> Destination {
        let mut args = options.to_vec();
        args.append(&mut self.args);
        self.args = args;
        self
    }
}

/// A master connection owned by this process: killed, and its control directory removed, on
/// drop.
pub struct Master {
    child: tokio::process::Child,
    dir: PathBuf,
    dest: Destination,
}

impl Master {
    /// Connect, and return once the master accepts sessions. `suggest` is the ssh command a user
    /// would type to reach the host (for the error messages). What ssh asks on the way goes to
    /// `answerer` through the [prompt relay](crate::prompt). The connection must be up within
    /// `timeout`, not counting the time a person takes to answer.
    pub async fn connect(
        dest: Destination,
        suggest: &str,
        answerer: Answerer,
        timeout: Duration,
    ) -> Result<Master, LaunchError> {
        let dir = control_dir().map_err(|e| {
            LaunchError::Internal(format!("cannot create a directory for the ssh master: {e}"))
        })?;
        let relay = Relay::start(&dir, answerer).map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            LaunchError::Internal(format!("cannot start the prompt relay: {e}"))
        })?;
        let log = dir.join("log");
        let mut command = tokio::process::Command::new("ssh");
        command
            .arg("-M")
            .arg("-N")
            .arg("-S")
            .arg(dir.join("m"))
            .arg("-E")
            .arg(&log)
            .args(["-o", "ControlPersist=no"])
            .args(["-o", "NumberOfPasswordPrompts=1"])
            .args(SESSION_OPTIONS)
            .args(&dest.args)
            .arg("--")
            .arg(&dest.host)
            .envs(relay.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(LaunchError::NoShell(format!(
                    "ssh: cannot run it on this machine ({e}); install OpenSSH's client"
                )));
            }
        };
        let mut master = Master { child, dir, dest };
        let socket = master.socket();
        let mut deadline = Instant::now() + timeout;
        let mut last = Instant::now();
        let mut asked = Duration::ZERO;
        loop {
            if let Some(status) = master.child.try_wait().ok().flatten() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                tracing::debug!(%status, %text, "ssh master failed");
                if let Some(prompt) = relay.declined() {
                    return Err(LaunchError::PromptUnanswered {
                        host: master.dest.host.clone(),
                        prompt,
                    });
                }
                return Err(LaunchError::from_ssh(&master.dest.host, suggest, &text));
            }
            if socket.exists() {
                return Ok(master);
            }
            let now = Instant::now();
            if relay.asking() && asked < PROMPT_LIMIT {
                deadline += now - last;
                asked += now - last;
            }
            last = now;
            if now > deadline {
                return Err(LaunchError::Timeout {
                    what: format!(
                        "could not connect within {} s (--connect-timeout)",
                        timeout.as_secs()
                    ),
                    said: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("m")
    }

    /// Run `command_line` on the host through the master, with stdin and stdout piped.
    pub fn command(&self, command_line: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ssh");
        command
            .arg("-S")
            .arg(self.socket())
            .args(["-o", "ControlMaster=no", "-o", "BatchMode=yes"])
            .args(SESSION_OPTIONS)
            .args(&self.dest.args)
            .arg("--")
            .arg(&self.dest.host)
            .arg(command_line);
        die_with_parent(&mut command);
        command
    }

    /// Stop the master and wait for it (its control directory goes with [`Drop`]).
    pub async fn close(mut self) {
        // SIGTERM lets ssh close the connection cleanly and remove its socket.
        if let Some(pid) = self.child.id() {
            // SAFETY: kill has no memory-safety preconditions; pid is our own child.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `PR_SET_PDEATHSIG`: the child gets SIGTERM when ferry ends, even by SIGKILL.
fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: prctl is async-signal-safe and the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A new private directory (mode 0700) for the control socket: under `$XDG_RUNTIME_DIR` when
/// that is a directory, else the temporary directory. Short, for the socket path limit.
fn control_dir() -> std::io::Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let mut last = None;
    for attempt in 0..16u32 {
        let dir = base.join(format!(
            ".ferry-ssh-{}-{:x}",
            std::process::id(),
            random_word() ^ u64::from(attempt)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
}

fn random_word() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish() & 0xffff_ffff
}
