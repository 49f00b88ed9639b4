//! The host side of the handshake: start the route, drive the loader, hand over a bridge.

use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_stage1::{Booted, Invocation, Stage1Error};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use crate::chain::LegStats;
use crate::transport::{Child, Ended, Transport};
use crate::{Hop, Images, LaunchError, Route, Stats};

/// Options that apply to every route.
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// An ssh config file for every ssh that ferry starts on this machine (`ssh -F`).
    pub ssh_config: Option<String>,
    /// Draw a progress bar while an image is sent (only ever on a terminal).
    pub progress: bool,
    /// How long to wait for the ssh connection, and for each line of the loader (the first one
    /// comes after the remote's login scripts).
    pub timeout: Duration,
    /// Where the run's costs are counted, for `--stats` on any exit.
    pub meter: Arc<Meter>,
    /// Who answers what ssh asks (a password, an unknown host key): see [`crate::prompt`].
    pub prompts: crate::prompt::Answerer,
    /// More options for the first ssh hop's master (from a front end's login, see
    /// [`crate::cockpit_ssh`]).
    pub ssh_options: Vec<std::ffi::OsString>,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            ssh_config: None,
            progress: false,
            timeout: ferry_stage1::DEFAULT_TIMEOUT,
            meter: Arc::default(),
            prompts: crate::prompt::Answerer::Nobody,
            ssh_options: Vec::new(),
        }
    }
}

/// What a run has cost so far: bytes written to the route, image bytes, whether a cached
/// image ran. Shared with the caller, so that it can report on any exit, failures included.
#[derive(Debug, Default)]
pub struct Meter {
    sent: AtomicU64,
    payload: AtomicU64,
    cached: AtomicBool,
    legs: Mutex<Vec<LegStats>>,
}

impl Meter {
    /// The figures so far.
    pub fn stats(&self) -> Stats {
        Stats {
            payload_bytes: self.payload.load(Ordering::Relaxed),
            sent_bytes: self.sent.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
            legs: self.legs.lock().map(|l| l.clone()).unwrap_or_default(),
        }
    }

    /// Count a leg after the first, started by the bridge before it.
    pub(crate) fn add_leg(&self, leg: LegStats) {
        if let Ok(mut legs) = self.legs.lock() {
            legs.push(leg);
        }
    }
}

/// A bridge that has just been started: its frames come next on `reader`.
pub struct Session {
    pub writer: Pin<Box<dyn AsyncWrite + Send>>,
    pub reader: BufReader<Pin<Box<dyn AsyncRead + Send>>>,
    pub child: Child,
    pub booted: Booted,
    /// What was written to the route so far (handshake, image and frames).
    pub meter: Arc<Meter>,
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
            Ok(stats) => session.meter.add_leg(stats),
            Err(err) => {
                let Session { child, .. } = session;
                // Let the route end on its own (its last words reach stderr), but not forever.
                let _ = tokio::time::timeout(GRACE, child.wait()).await;
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
    let mut invocation = Invocation::new(images.offers());
    invocation.timeout = opts.timeout;
    let launch = route
        .launch(invocation.argv())
        .map_err(|e| LaunchError::BadRoute(e.to_string()))?;
    // A local door hop (sudo, podman, ...) explains its failures on stderr: keep its words.
    let keep_stderr = route.door().is_some_and(|d| !matches!(d, Hop::Ssh { .. }));
    // Bounded inside: an ssh connection by `opts.timeout`, not counting the time a person takes
    // to answer a prompt.
    let Transport {
        stdin,
        stdout,
        child,
    } = Transport::start(launch, opts, keep_stderr).await?;
    let meter = opts.meter.clone();
    let mut writer: Pin<Box<dyn AsyncWrite + Send>> = Box::pin(Counting {
        inner: stdin,
        meter: meter.clone(),
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
            meter.payload.store(booted.payload_bytes, Ordering::Relaxed);
            meter.cached.store(booted.cached, Ordering::Relaxed);
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
                meter,
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
        e @ Stage1Error::MissingTool(_) => LaunchError::MissingTool(e.to_string()),
        Stage1Error::NoSpace(dir) => LaunchError::NoSpace { dir },
        e @ Stage1Error::ReadFailed(_) => LaunchError::Terminated(e.to_string()),
        e @ (Stage1Error::Corrupt(_) | Stage1Error::Tampered(_)) => {
            LaunchError::Verification(format!("{e}; run again to send a fresh copy"))
        }
        Stage1Error::Protocol(what) => LaunchError::Protocol(format!("loader said {what:?}")),
        Stage1Error::Timeout { after, noise } => {
            child.kill().await;
            LaunchError::Timeout {
                what: format!(
                    "no answer from ferry's loader within {} s (--connect-timeout)",
                    after.as_secs()
                ),
                said: quote(&noise),
            }
        }
        Stage1Error::Closed { noise } => {
            let tail = child.stderr_tail();
            let ended = child.finish(GRACE).await;
            // The hop's own words name the cause (not allowed, no such user, ...) when they can.
            door_failure(route, tail, ended, &noise)
                .await
                .unwrap_or_else(|| with_said(ended_early(ended), &noise))
        }
        Stage1Error::Io(_) => {
            let tail = child.stderr_tail();
            let ended = child.finish(GRACE).await;
            door_failure(route, tail, ended, "")
                .await
                .unwrap_or_else(|| ended_early(ended))
        }
    }
}

/// The first leg's door hop (sudo, podman, ...) naming its failure in its own words, if it can:
/// from its stderr, and from what reached stdout before the loader spoke (`noise`; docker
/// prints its runtime's errors there).
async fn door_failure(
    route: &Route,
    tail: Option<crate::stderr::Tail>,
    ended: Ended,
    noise: &str,
) -> Option<LaunchError> {
    let mut said = String::new();
    if let Some(tail) = tail {
        tail.finish().await;
        said = tail.text();
    }
    if !noise.trim().is_empty() {
        said.push('\n');
        said.push_str(noise);
    }
    route.door()?.failure(&said, ended)
}

/// How long a route that has done its part may take to end by itself before it is ended.
pub(crate) const GRACE: Duration = Duration::from_secs(2);

/// The remote's own words, as one trimmed line for an error message: whitespace runs become one
/// space, control characters go, and only the last 300 characters are kept.
pub(crate) fn quote(noise: &str) -> String {
    const KEEP: usize = 300;
    let words: Vec<&str> = noise.split_whitespace().collect();
    let line: String = words
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let count = line.chars().count();
    if count > KEEP {
        let tail: String = line.chars().skip(count - KEEP).collect();
        format!("...{tail}")
    } else {
        line
    }
}

/// Add what the remote printed to a failure that ended the route.
pub(crate) fn with_said(err: LaunchError, noise: &str) -> LaunchError {
    let said = quote(noise);
    match err {
        LaunchError::Terminated(what) if !said.is_empty() => {
            LaunchError::Terminated(format!("{what}; the remote printed: \"{said}\""))
        }
        LaunchError::NoShell(what) if !said.is_empty() => {
            LaunchError::NoShell(format!("{what}; the remote printed: \"{said}\""))
        }
        other => other,
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
            "a hop's program failed on the way (exit status 255, as ssh and the container \
             engines end on their own errors); see its message above"
                .into(),
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
    meter: Arc<Meter>,
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = self.inner.as_mut().poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.meter.sent.fetch_add(n as u64, Ordering::Relaxed);
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
