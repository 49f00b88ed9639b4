//! The bridge's main loop: reads frames, answers control messages, routes input to channels,
//! and writes everything the channels produce to one bounded output queue.
//!
//! Each channel is a task. Its input is queued in order (data, `done`, `options`, and the
//! peer's `ping`s, which the channel answers once it has consumed what came before), so
//! messages for a channel wait until the channel reads them, after it is ready. Its output goes
//! through one queue of [`OUT_QUEUE`] frames: a slow reader makes channels wait instead of
//! making the bridge grow.

use std::collections::HashMap;
use std::pin::Pin;

use ferry_protocol::control::{self, Message};
use ferry_protocol::{problem, Frame, FrameCodec, FrameError};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

pub use crate::channel::Channel;
use crate::channel::{Inbound, Input};
use crate::fdio::{Fd, Transport};
use crate::interact::InteractCodec;
use crate::output::Out;

/// Frames queued for output at most; past this, whoever sends waits for the writer.
const OUT_QUEUE: usize = 64;

/// How long the bridge keeps trying to write what is queued once it is shutting down.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The router's side of an open channel.
struct Open {
    serial: u64,
    host: String,
    group: String,
    /// The channel ends its own process on `kill` (and then reports how it ended).
    handles_kill: bool,
    inbound: mpsc::UnboundedSender<Inbound>,
    pongs: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Open {
    fn send(&self, input: Inbound) {
        // The task may have ended already; its close is on its way.
        let _ = self.inbound.send(input);
    }

    /// Stop the task and wait until it is gone (its `Drop`s have run).
    async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A channel's task ended: the router removes it and sends its `close`.
struct Finished {
    id: String,
    serial: u64,
    close: Message,
}

/// How the session starts.
struct Start {
    /// Behave as if the peer had sent `init` with this host.
    assume_init: Option<String>,
}

/// Run the bridge on one transport (Cockpit frames) until the peer goes away.
///
/// Sends the bridge's `init` first. A `ferry-hop` request as the peer's first message makes
/// this bridge start the route's next hop and relay to it instead (see `replicate`). Returns an error for a broken transport or protocol; for a
/// protocol error the peer has then been sent a `close` with `problem: "protocol-error"`.
/// Every channel's task (and child process) is gone when this returns.
pub async fn run<R, W>(input: R, output: W) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
    W: Transport,
{
    let mut output = output;
    // The `init` goes first, before anything is read: a launcher waits for it.
    output
        .write_all(&crate::init_message().into_frame().to_bytes())
        .await?;
    output.flush().await?;
    let mut frames = FramedRead::new(input, FrameCodec::new());
    let first = frames.next().await;
    if let Some(Ok(frame)) = &first {
        // Before any `init`, a launcher may ask this bridge to start the route's next hop.
        if crate::replicate::is_request(frame) {
            let request = frame.parse_control()?;
            return crate::replicate::serve(request, frames, output).await;
        }
    }
    let frames: Frames<'_> = match first {
        Some(first) => Box::pin(futures_util::stream::iter([first]).chain(frames)),
        None => Box::pin(futures_util::stream::empty()),
    };
    let pipe = output.pipe();
    serve(
        frames,
        Writer::Frames(Box::new(output), pipe),
        Start { assume_init: None },
    )
    .await
}

/// Run the bridge in the `--interact` form: messages `CHANNEL\nPAYLOAD` separated by
/// `\nBOUNDARY\n` in both directions, as if the peer had sent `init` with host `localhost`.
pub async fn run_interact<R, W>(input: R, output: W, boundary: &str) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    serve(
        Box::pin(FramedRead::new(input, InteractCodec::new(boundary))),
        Writer::Sink(Box::pin(FramedWrite::new(
            output,
            InteractCodec::new(boundary),
        ))),
        Start {
            assume_init: Some("localhost".into()),
        },
    )
    .await
}

/// Frames in: one type for every transport form, so the router exists once in the binary.
type Frames<'a> = Pin<Box<dyn Stream<Item = Result<Frame, FrameError>> + 'a>>;
/// Frames out.
type FrameSink = Pin<Box<dyn Sink<Frame, Error = FrameError> + Send>>;

/// How frames go out.
enum Writer {
    /// Cockpit frames, with vectored writes (the transport proper); the output again if it is
    /// a pipe, for splicing.
    Frames(Box<dyn AsyncWrite + Unpin + Send>, Option<Fd>),
    /// Anything else, through a codec.
    Sink(FrameSink),
}

impl Writer {
    /// Channels may hand their pipes' output to the writer (see [`Out::Splice`]).
    fn can_splice(&self) -> bool {
        matches!(self, Writer::Frames(_, Some(_)))
    }
}

async fn write_out(writer: Writer, queue: mpsc::Receiver<Out>) -> Result<(), FrameError> {
    match writer {
        Writer::Frames(output, pipe) => crate::output::write_frames(output, pipe, queue).await,
        Writer::Sink(sink) => write_sink(sink, queue).await,
    }
}

/// Write frames from the queue, flushing whenever the queue runs empty.
async fn write_sink(mut sink: FrameSink, mut queue: mpsc::Receiver<Out>) -> Result<(), FrameError> {
    // Only frames: splicing is for the frame transport on a pipe.
    while let Some(out) = queue.recv().await {
        if let Out::Frame(frame) = out {
            sink.feed(frame).await?;
        }
        while let Ok(out) = queue.try_recv() {
            if let Out::Frame(frame) = out {
                sink.feed(frame).await?;
            }
        }
        sink.flush().await?;
    }
    sink.close().await
}

async fn serve(frames: Frames<'_>, writer: Writer, start: Start) -> Result<(), FrameError> {
    let (out_tx, out_rx) = mpsc::channel::<Out>(OUT_QUEUE);
    let can_splice = writer.can_splice();
    let mut writer = tokio::spawn(write_out(writer, out_rx));
    let superuser = crate::superuser::Superuser::new(out_tx.clone());
    let mut router = Router {
        out: out_tx,
        can_splice,
        channels: HashMap::new(),
        init_host: start.assume_init,
        serial: 0,
        finished: mpsc::unbounded_channel(),
        superuser,
    };
    let result = router.route(frames).await;

    for (_, open) in router.channels.drain() {
        open.abort().await;
    }
    if let Err(e) = &result {
        if !matches!(e, FrameError::Io(_)) {
            let m = Message::new("close")
                .with("problem", e.problem())
                .with("message", e.to_string());
            let _ =
                tokio::time::timeout(FLUSH_TIMEOUT, router.out.send(m.into_frame().into())).await;
        }
    }
    drop(router);
    match tokio::time::timeout(FLUSH_TIMEOUT, &mut writer).await {
        Ok(Ok(Err(e))) if result.is_ok() => return Err(e),
        Ok(_) => {}
        Err(_) => writer.abort(),
    }
    result
}

struct Router {
    out: mpsc::Sender<Out>,
    /// Channels may splice (the output is a pipe).
    can_splice: bool,
    channels: HashMap<String, Open>,
    /// The `host` of the peer's `init`; `None` until it arrived.
    init_host: Option<String>,
    serial: u64,
    finished: (
        mpsc::UnboundedSender<Finished>,
        mpsc::UnboundedReceiver<Finished>,
    ),
    /// The root copy of the bridge, for `superuser` channels.
    superuser: crate::superuser::Superuser,
}

fn bad(text: impl Into<String>) -> FrameError {
    FrameError::BadControl(text.into())
}

impl Router {
    async fn route(&mut self, mut frames: Frames<'_>) -> Result<(), FrameError> {
        loop {
            tokio::select! {
                biased;
                Some(done) = self.finished.1.recv() => self.finished(done).await?,
                Some(event) = self.superuser.next_event() => self.superuser_event(event).await?,
                frame = frames.next() => match frame {
                    Some(Ok(frame)) => self.frame(frame).await?,
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
                _ = self.out.closed() => {
                    return Err(FrameError::Io(std::io::ErrorKind::BrokenPipe.into()));
                }
            }
        }
    }

    /// Queue a frame for output; an error once the writer is gone.
    async fn send(&self, message: Message) -> Result<(), FrameError> {
        self.out
            .send(message.into_frame().into())
            .await
            .map_err(|_| FrameError::Io(std::io::ErrorKind::BrokenPipe.into()))
    }

    async fn finished(&mut self, done: Finished) -> Result<(), FrameError> {
        // A channel closed by the peer or killed meanwhile was already answered.
        if self.channels.get(&done.id).map(|o| o.serial) != Some(done.serial) {
            return Ok(());
        }
        if let Some(open) = self.channels.remove(&done.id) {
            open.abort().await;
        }
        self.send(done.close).await
    }

    async fn frame(&mut self, frame: Frame) -> Result<(), FrameError> {
        if !frame.is_control() {
            if self.init_host.is_none() {
                return Err(bad("data before init"));
            }
            if self.superuser.routes(&frame.channel) {
                self.superuser.forward(frame);
                return Ok(());
            }
            if let Some(open) = self.channels.get(&frame.channel) {
                open.send(Inbound::Input(Input::Data(frame.payload)));
            }
            return Ok(());
        }
        let msg = frame.parse_control()?;
        let channel = match msg.get("channel") {
            None => None,
            Some(serde_json::Value::String(id)) if !id.is_empty() => Some(id.clone()),
            Some(_) => return Err(bad("invalid \"channel\" field")),
        };
        if self.init_host.is_none() && msg.command != "init" {
            return Err(bad("the first message is not init"));
        }
        if let Some(id) = &channel {
            if self.superuser.routes(id) {
                if msg.command == "open" {
                    return Err(bad(format!("channel {id} is already open")));
                }
                self.superuser.forward(frame);
                return Ok(());
            }
            if let Some(mode) = crate::superuser::mode(&msg).filter(|_| msg.command == "open") {
                if !crate::superuser::is_root() {
                    if self.channels.contains_key(id) {
                        return Err(bad(format!("channel {id} is already open")));
                    }
                    use crate::superuser::Route;
                    match self.superuser.open(id, &msg, frame, mode) {
                        Route::Forwarded => return Ok(()),
                        Route::Local => {}
                        Route::Deny(why) => {
                            let close = control::close(id, Some(problem::ACCESS_DENIED))
                                .with("message", why);
                            return self.send(close).await;
                        }
                    }
                }
            }
        }
        match channel {
            Some(id) => self.channel_control(id, msg).await,
            None => self.transport_control(msg).await,
        }
    }

    async fn transport_control(&mut self, msg: Message) -> Result<(), FrameError> {
        match msg.command.as_str() {
            "init" => {
                let version = msg.get("version").and_then(serde_json::Value::as_i64);
                if version != Some(1) {
                    return Err(bad("unsupported version of the protocol"));
                }
                let Some(host) = msg.str("host") else {
                    return Err(bad("init without \"host\""));
                };
                self.init_host = Some(host.to_owned());
                if let Some(done) = self.superuser.init(&msg) {
                    self.send(done).await?;
                }
            }
            "ping" => {
                self.send(msg.into_pong()).await?;
            }
            "authorize" => self.superuser.authorize(&msg),
            "kill" => {
                self.superuser.kill(&msg);
                self.kill(msg.str("host"), msg.str("group")).await?;
            }
            "open" | "close" | "done" | "options" | "ready" => {
                return Err(bad(format!("{} without \"channel\"", msg.command)));
            }
            // Unknown messages are ignored (`logout`, `hint`, ...).
            _ => {}
        }
        Ok(())
    }

    async fn channel_control(&mut self, id: String, msg: Message) -> Result<(), FrameError> {
        match msg.command.as_str() {
            "open" => return self.open(id, msg),
            "close" => {
                if let Some(open) = self.channels.remove(&id) {
                    open.abort().await;
                    self.send(control::close(&id, None)).await?;
                }
            }
            "pong" => {
                if let (Some(open), Some(seq)) = (self.channels.get(&id), msg.u64("sequence")) {
                    open.pongs.send_if_modified(|acked| {
                        let newer = seq > *acked;
                        *acked = (*acked).max(seq);
                        newer
                    });
                }
            }
            _ => {
                let Some(open) = self.channels.get(&id) else {
                    // Closed or never opened: dropped.
                    return Ok(());
                };
                let input = match msg.command.as_str() {
                    "ping" => Inbound::Ping(msg),
                    "done" => Inbound::Input(Input::Done),
                    "options" => Inbound::Input(Input::Options(msg)),
                    // The peer's `ready` means nothing to the bridge.
                    "ready" => return Ok(()),
                    _ => Inbound::Input(Input::Control(msg)),
                };
                open.send(input);
            }
        }
        Ok(())
    }

    fn open(&mut self, id: String, msg: Message) -> Result<(), FrameError> {
        if self.channels.contains_key(&id) {
            return Err(bad(format!("channel {id} is already open")));
        }
        let host = msg
            .str("host")
            .or(self.init_host.as_deref())
            .unwrap_or("localhost")
            .to_owned();
        let group = msg.str("group").unwrap_or("default").to_owned();
        let handles_kill = msg.str("payload") == Some("stream") && msg.get("spawn").is_some();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (pong_tx, pong_rx) = watch::channel(0);
        let mut ch = Channel::new(id.clone(), msg, in_rx, self.out.clone(), pong_rx);
        ch.splice_out = self.can_splice;
        self.serial += 1;
        let serial = self.serial;
        let finished = self.finished.0.clone();
        let task = tokio::spawn(async move {
            let result = crate::channels::run(&mut ch).await;
            let close = ch.finish(result).await;
            let _ = finished.send(Finished {
                id: ch.id,
                serial,
                close,
            });
        });
        self.channels.insert(
            id,
            Open {
                serial,
                host,
                group,
                handles_kill,
                inbound: in_tx,
                pongs: pong_tx,
                task,
            },
        );
        Ok(())
    }

    /// Act on what happened to the root copy: say what it says, run `try` channels here when
    /// there is no root copy, with the frames that waited for them.
    async fn superuser_event(&mut self, event: crate::superuser::Event) -> Result<(), FrameError> {
        let (local, replay, say) = self.superuser.event(event);
        for msg in say {
            self.send(msg).await?;
        }
        for (id, open) in local {
            self.open(id, open)?;
        }
        for frame in replay {
            self.frame(frame).await?;
        }
        Ok(())
    }

    /// `kill`: close every channel of `host` and `group` (both optional) with `terminated`.
    async fn kill(&mut self, host: Option<&str>, group: Option<&str>) -> Result<(), FrameError> {
        let mut ids: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, o)| host.is_none_or(|h| h == o.host))
            .filter(|(_, o)| group.is_none_or(|g| g == o.group))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        for id in ids {
            if self.channels.get(&id).is_some_and(|o| o.handles_kill) {
                // A process is sent SIGTERM and the channel closes once it has ended, saying how.
                if let Some(open) = self.channels.get(&id) {
                    open.send(Inbound::Input(Input::Control(Message::new("kill"))));
                }
            } else if let Some(open) = self.channels.remove(&id) {
                open.abort().await;
                self.send(control::close(&id, Some(problem::TERMINATED)))
                    .await?;
            }
        }
        Ok(())
    }
}
