//! The host side of the handshake: start the route, drive the loader, hand over a bridge.

use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use ferry_stage1::{Booted, Invocation, Stage1Error};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use crate::chain::LegStats;
use crate::transport::{Child, Ended, Transport};
use crate::{Hop, Images, LaunchError, Route};

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
    /// The legs after the first, each started by the bridge before it (see [`Route::legs`]).
    pub legs: Vec<LegStats>,
}

/// Start `route` and boot a bridge at its end.
///
/// The launcher starts the route's first leg and sends the image over it; every further leg
/// is started by the bridge at the end of the leg before it, with its own image.
pub async fn boot(
    route: &Route,
    images: &Images,
    opts: &BootOptions,
) -> Result<Session, LaunchError> {
    let legs = route.legs();
    let (first, rest) = legs.split_first().expect("a route has a first leg");
    let mut session = boot_first(first, images, opts).await?;
    for leg in rest {
        match crate::chain::extend(&mut session, leg, images).await {
            Ok(stats) => session.legs.push(stats),
            Err(err) => {
                let Session { child, .. } = session;
                // Let the route end on its own (its last words reach stderr), but not forever.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
                return Err(err);
            }
        }
    }
    Ok(session)
}

/// Start the first leg and boot a bridge at its end, sending the image it needs.
async fn boot_first(
    route: &Route,
    images: &Images,
    opts: &BootOptions,
) -> Result<Session, LaunchError> {
    let invocation = Invocation::new(images.offers());
    let launch = route.launch(invocation.argv());
    // A local door hop (sudo, podman, ...) explains its failures on stderr: keep its words.
    let keep_stderr = route.door().is_some_and(|d| !matches!(d, Hop::Ssh { .. }));
    let Transport {
        stdin,
        stdout,
        child,
    } = Transport::start(launch, opts.ssh_config.as_deref(), keep_stderr).await?;
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
                legs: Vec::new(),
            })
        }
        Err(err) => {
            drop(writer);
            drop(reader);
            Err(stage1_error(err, images, child, route).await)
        }
    }
}

async fn stage1_error(
    err: Stage1Error,
    images: &Images,
    child: Child,
    route: &Route,
) -> LaunchError {
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
        e @ (Stage1Error::Corrupt(_) | Stage1Error::Tampered(_) | Stage1Error::NoSha256Tool) => {
            LaunchError::Verification(format!("{e}; run again to send a fresh copy"))
        }
        Stage1Error::Protocol(what) => LaunchError::Protocol(format!("loader said {what:?}")),
        Stage1Error::Closed { .. } | Stage1Error::Io(_) => {
            let tail = child.stderr_tail();
            let ended = child.wait().await;
            // The hop's own words name the cause (not allowed, no such user, ...) when they can.
            tail.and_then(|tail| route.door()?.failure(&tail.text(), ended))
                .unwrap_or_else(|| ended_early(ended))
        }
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
