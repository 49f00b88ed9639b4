//! The host side of the handshake: start the route, drive the loader, hand over a bridge.

use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use ferry_stage1::{Booted, Invocation, Stage1Error};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use crate::transport::{Child, Ended, Transport};
use crate::{Images, LaunchError, Route};

/// Options that apply to every route.
#[derive(Clone, Debug, Default)]
pub struct BootOptions {
    /// An ssh config file for the first ssh hop (`ssh -F`).
    pub ssh_config: Option<String>,
    /// Draw a progress bar while an image is sent (only ever on a terminal).
    pub progress: bool,
}

/// A bridge that has just been started: its frames come next on `reader`.
pub struct Session {
    pub writer: Pin<Box<dyn AsyncWrite + Send>>,
    pub reader: BufReader<Pin<Box<dyn AsyncRead + Send>>>,
    pub child: Child,
    pub booted: Booted,
    /// Bytes written to the route so far (handshake, image and frames).
    pub sent: Arc<AtomicU64>,
}

/// Start `route` and boot a bridge at its end.
pub async fn boot(
    route: &Route,
    images: &Images,
    opts: &BootOptions,
) -> Result<Session, LaunchError> {
    let invocation = Invocation::new(images.offers());
    let launch = route.launch(invocation.argv());
    let Transport {
        stdin,
        stdout,
        child,
    } = Transport::start(launch, opts.ssh_config.as_deref()).await?;
    let sent = Arc::new(AtomicU64::new(0));
    let mut writer: Pin<Box<dyn AsyncWrite + Send>> = Box::pin(Counting {
        inner: stdin,
        count: sent.clone(),
    });
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);

    let bar = (opts.progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "ferry: sending bridge {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let result =
        ferry_stage1::send(&invocation, &mut reader, &mut writer, images, &mut progress).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(booted) => {
            tracing::info!(
                arch = %booted.arch,
                cached = booted.cached,
                dir = %booted.dir,
                payload_bytes = booted.payload_bytes,
                "bridge starting"
            );
            Ok(Session {
                writer,
                reader,
                child,
                booted,
                sent,
            })
        }
        Err(err) => {
            drop(writer);
            drop(reader);
            Err(stage1_error(err, images, child).await)
        }
    }
}

async fn stage1_error(err: Stage1Error, images: &Images, child: Child) -> LaunchError {
    match err {
        Stage1Error::UnsupportedArch(arch) => {
            let known = ["x86_64", "aarch64"];
            let hint = if let Some(target) = known.iter().find(|a| **a == arch) {
                format!(
                    "rebuild ferry after `rustup target add {target}-unknown-linux-musl` to carry one"
                )
            } else {
                "ferry builds bridges for x86_64 and aarch64 Linux".to_owned()
            };
            LaunchError::UnsupportedArch {
                arch,
                available: images.arches().join(", "),
                hint,
            }
        }
        Stage1Error::NoDirectory(tried) => LaunchError::NoDirectory { tried },
        e @ Stage1Error::MissingTool(_) => LaunchError::MissingTool(e.to_string()),
        Stage1Error::NoSpace(dir) => LaunchError::NoSpace { dir },
        e @ Stage1Error::ReadFailed(_) => LaunchError::Terminated(e.to_string()),
        e @ (Stage1Error::Corrupt(_) | Stage1Error::Tampered(_)) => {
            LaunchError::Verification(format!("{e}; run again to send a fresh copy"))
        }
        Stage1Error::Protocol(what) => LaunchError::Protocol(format!("loader said {what:?}")),
        Stage1Error::Closed { .. } | Stage1Error::Io(_) => ended_early(child.wait().await),
    }
}

/// The route ended before a bridge ran: say why, as well as the exit status tells.
pub(crate) fn ended_early(ended: Ended) -> LaunchError {
    match ended {
        Ended::Code(127) => LaunchError::NoShell(
            "the remote has no `sh`, or a hop's program was not found there (exit status 127)"
                .into(),
        ),
        Ended::Code(126) => LaunchError::NoShell(
            "a program on the route could not be executed (exit status 126)".into(),
        ),
        Ended::Code(255) => LaunchError::Terminated(
            "ssh failed on the way (exit status 255); see its message above".into(),
        ),
        Ended::Code(c) => LaunchError::Terminated(format!(
            "the route ended before the bridge started (exit status {c})"
        )),
        Ended::Signal(s) => LaunchError::Terminated(format!(
            "the route was killed by signal {s} before the bridge started"
        )),
        Ended::Unknown => {
            LaunchError::Terminated("the route ended before the bridge started".into())
        }
    }
}

/// Counts what is written through it.
struct Counting {
    inner: Pin<Box<dyn AsyncWrite + Send>>,
    count: Arc<AtomicU64>,
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = self.inner.as_mut().poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.count.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }
}
