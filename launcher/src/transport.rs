//! Starting the first process of a route and holding on to it.

use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::hop::{Hop, Launch};
use crate::ssh::{Destination, Master};
use crate::LaunchError;

/// A running route: the pipe pair of the command at its far end.
pub struct Transport {
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub child: Child,
}

/// The route's first process (and its ssh master, if any). Dropping it ends both: the process
/// gets SIGTERM, so that a bridge (or a hop program such as `sudo`, which relays it) can end
/// what it started; the master is killed.
///
/// With `keep_stderr` at the start, the last words of a local first process's stderr are kept
/// (see [`crate::stderr`]).
pub struct Child {
    process: tokio::process::Child,
    master: Option<Master>,
    tail: Option<crate::stderr::Tail>,
}

/// How the route's first process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(i32),
    Unknown,
}

impl Transport {
    /// Start `launch`. Errors are reported as what a user can fix: unknown host, refused key,
    /// missing program.
    ///
    /// With `keep_stderr`, a local first process's stderr is passed on through a pipe and its
    /// last bytes are kept, so that a hop's own words can name its failure.
    ///
    /// An ssh connection must be up within `opts.timeout`, not counting the time a person
    /// takes to answer a prompt.
    pub async fn start(
        launch: Launch,
        opts: &crate::BootOptions,
        keep_stderr: bool,
    ) -> Result<Transport, LaunchError> {
        match launch {
            Launch::Command(argv) => start_local(argv, keep_stderr),
            Launch::Ssh { hop, command_line } => start_ssh(&hop, &command_line, opts).await,
        }
    }
}

impl Child {
    /// What is kept of the first process's stderr (complete once [`Child::wait`] returned).
    pub fn stderr_tail(&self) -> Option<crate::stderr::Tail> {
        self.tail.clone()
    }

    /// Wait for the route's first process to end, then close its ssh master.
    pub async fn wait(mut self) -> Ended {
        let status = self.process.wait().await.ok();
        self.close().await;
        if let Some(tail) = self.tail.take() {
            tail.finish().await;
        }
        ended(status)
    }

    /// Wait at most `grace` for the route to end by itself, then end it: what is left once the
    /// bridge has said all it had to (a background job of a login script can hold an ssh session
    /// open for good, as it would hold `ssh host command`).
    pub async fn finish(mut self, grace: Duration) -> Ended {
        let status = match tokio::time::timeout(grace, self.process.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                tracing::debug!("the route did not end by itself; ending it");
                let _ = self.process.start_kill();
                let _ = self.process.wait().await;
                None
            }
        };
        self.close().await;
        ended(status)
    }

    /// End the route now.
    pub async fn kill(mut self) {
        let _ = self.process.start_kill();
        let _ = self.process.wait().await;
        self.close().await;
    }

    async fn close(&mut self) {
        if let Some(master) = self.master.take() {
            master.close().await;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            if let Some(pid) = self.process.id() {
                // SAFETY: kill has no memory-safety preconditions; pid is our own running child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
        }
    }
}

fn ended(status: Option<std::process::ExitStatus>) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Ended::Code(c),
            (None, Some(sig)) => Ended::Signal(sig),
            _ => Ended::Unknown,
        },
        None => Ended::Unknown,
    }
}

fn start_local(argv: Vec<String>, keep_stderr: bool) -> Result<Transport, LaunchError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LaunchError::Internal("empty command".into()))?;
    tracing::debug!(program, "starting the route locally");
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    spawn(command, None, keep_stderr).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LaunchError::NoShell(format!(
            "{program}: program not found on this machine; check the first hop"
        )),
        std::io::ErrorKind::PermissionDenied => LaunchError::NoShell(format!(
            "{program}: permission denied on this machine; check the first hop"
        )),
        _ => LaunchError::Internal(format!("cannot start {program}: {e}")),
    })
}

fn spawn(
    mut command: tokio::process::Command,
    master: Option<Master>,
    keep_stderr: bool,
) -> std::io::Result<Transport> {
    let mut process = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if keep_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()?;
    let stdin = process.stdin.take().expect("stdin is piped");
    let stdout = process.stdout.take().expect("stdout is piped");
    let tail = process.stderr.take().map(crate::stderr::Tail::pass_on);
    Ok(Transport {
        stdin: Box::pin(stdin),
        stdout: Box::pin(stdout),
        child: Child {
            process,
            master,
            tail,
        },
    })
}

async fn start_ssh(
    hop: &Hop,
    command_line: &str,
    opts: &crate::BootOptions,
) -> Result<Transport, LaunchError> {
    let Hop::Ssh { user, host, port } = hop else {
        return Err(LaunchError::Internal("not an ssh hop".into()));
    };
    let dest = hop.ssh_destination().unwrap_or_default();
    // The command that checks and accepts the host key by hand: the same configuration file,
    // port and destination as ferry's own ssh.
    let mut suggest = String::from("ssh");
    if let Some(cfg) = &opts.ssh_config {
        suggest.push_str(&format!(" -F {}", shell_words::quote(cfg)));
    }
    if let Some(p) = port {
        suggest.push_str(&format!(" -p {p}"));
    }
    suggest.push(' ');
    suggest.push_str(&shell_words::quote(&dest));
    tracing::debug!(%hop, "connecting with OpenSSH");
    let master = Master::connect(
        Destination::new(host, user.as_deref(), *port, opts.ssh_config.as_deref())
            .with_options(&opts.ssh_options),
        &suggest,
        opts.prompts.clone(),
        opts.timeout,
    )
    .await?;
    let command = master.command(command_line);
    spawn(command, Some(master), false)
        .map_err(|e| LaunchError::Internal(format!("cannot start ssh: {e}")))
}
