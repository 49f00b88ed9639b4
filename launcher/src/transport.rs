//! Starting the first process of a route and holding on to it.

use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::hop::{Hop, Launch};
use crate::LaunchError;

/// A running route: the pipe pair of the command at its far end.
pub struct Transport {
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub child: Child,
}

/// The route's first process (and its ssh master, if any), and the last words of its stderr
/// when they are kept (see [`crate::stderr`]).
pub struct Child(Process, Option<crate::stderr::Tail>);

enum Process {
    Local(tokio::process::Child),
    Ssh {
        child: openssh::Child<Arc<openssh::Session>>,
        session: Arc<openssh::Session>,
    },
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
    pub async fn start(
        launch: Launch,
        ssh_config: Option<&str>,
        keep_stderr: bool,
    ) -> Result<Transport, LaunchError> {
        match launch {
            Launch::Command(argv) => start_local(argv, keep_stderr),
            Launch::Ssh { hop, command_line } => start_ssh(&hop, &command_line, ssh_config).await,
        }
    }
}

impl Child {
    /// What is kept of the first process's stderr (complete once [`Child::wait`] returned).
    pub fn stderr_tail(&self) -> Option<crate::stderr::Tail> {
        self.1.clone()
    }

    /// Wait for the route's first process to end, then close its ssh master.
    pub async fn wait(self) -> Ended {
        let tail = self.1;
        use std::os::unix::process::ExitStatusExt;
        let status = match self.0 {
            Process::Local(mut child) => child.wait().await.ok(),
            Process::Ssh { child, session } => {
                let status = child.wait().await.ok();
                if let Ok(session) = Arc::try_unwrap(session) {
                    let _ = session.close().await;
                }
                status
            }
        };
        if let Some(tail) = tail {
            tail.finish().await;
        }
        match status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => Ended::Code(c),
                (None, Some(sig)) => Ended::Signal(sig),
                _ => Ended::Unknown,
            },
            None => Ended::Unknown,
        }
    }
}

fn start_local(argv: Vec<String>, keep_stderr: bool) -> Result<Transport, LaunchError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LaunchError::Internal("empty command".into()))?;
    tracing::debug!(program, "starting the route locally");
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if keep_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LaunchError::NoShell(format!(
                "{program}: program not found on this machine; check the first hop"
            )),
            std::io::ErrorKind::PermissionDenied => LaunchError::NoShell(format!(
                "{program}: permission denied on this machine; check the first hop"
            )),
            _ => LaunchError::Internal(format!("cannot start {program}: {e}")),
        })?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let tail = child.stderr.take().map(crate::stderr::Tail::pass_on);
    Ok(Transport {
        stdin: Box::pin(stdin),
        stdout: Box::pin(stdout),
        child: Child(Process::Local(child), tail),
    })
}

async fn start_ssh(
    hop: &Hop,
    command_line: &str,
    ssh_config: Option<&str>,
) -> Result<Transport, LaunchError> {
    let Hop::Ssh { user, host, port } = hop else {
        return Err(LaunchError::Internal("not an ssh hop".into()));
    };
    let mut builder = openssh::SessionBuilder::default();
    builder
        .known_hosts_check(openssh::KnownHosts::Strict)
        .control_directory(control_dir())
        // If ferry dies without closing it, the master leaves soon after its last use.
        .control_persist(openssh::ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(30).expect("non-zero"),
        ));
    if let Some(u) = user {
        builder.user(u.clone());
    }
    if let Some(p) = port {
        builder.port(*p);
    }
    if let Some(cfg) = ssh_config {
        builder.config_file(cfg);
    }
    let dest = hop.ssh_destination().unwrap_or_default();
    let suggest = match port {
        Some(p) => format!("ssh -p {p} {dest}"),
        None => format!("ssh {dest}"),
    };
    tracing::debug!(%hop, "connecting with OpenSSH");
    let session = builder
        .connect(host)
        .await
        .map_err(|e| ssh_error(host, &suggest, &e))?;
    let session = Arc::new(session);
    let mut child = session
        .clone()
        .arc_raw_command(command_line)
        .stdin(openssh::Stdio::piped())
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::inherit())
        .spawn()
        .await
        .map_err(|e| ssh_error(host, &suggest, &e))?;
    let stdin = child.stdin().take().expect("stdin is piped");
    let stdout = child.stdout().take().expect("stdout is piped");
    Ok(Transport {
        stdin: Box::pin(stdin),
        stdout: Box::pin(stdout),
        child: Child(Process::Ssh { child, session }, None),
    })
}

fn ssh_error(host: &str, suggest: &str, err: &openssh::Error) -> LaunchError {
    use std::error::Error as _;
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push('\n');
        text.push_str(&s.to_string());
        source = s.source();
    }
    tracing::debug!(%text, "ssh failed");
    LaunchError::from_ssh(host, suggest, &text)
}

fn control_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}
