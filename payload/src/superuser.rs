//! The privileged bridge: channels opened with `"superuser": "require"` or `"try"` go to a root
//! copy of this bridge, started by self-replication through `sudo -n` (see `replicate`).
//!
//! Behaviour follows Cockpit's Python bridge (`SuperuserRoutingRule`): a session that is
//! already root handles such channels itself; otherwise they are forwarded whole (the `open`
//! with its `superuser` field, and everything after it) to the root copy, which is root and so
//! handles them itself. While the copy is starting, their frames wait; nothing else does. If
//! it cannot start, `require` channels close with `access-denied` and `try` channels run here.
//! The copy is started when the client's `init` asks for it (`superuser: {"id": ...}`), or at
//! the first such channel unless the `init` said `superuser: false`. `superuser-init-done` is
//! sent once the attempt an `init` asked for has ended, whatever its outcome.

use std::collections::HashSet;
use std::time::Duration;

use ferry_protocol::control::{self, Message};
use ferry_protocol::{problem, Frame, FrameCodec};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::output::Out;

/// How long the root copy may take to say `init` once its loader has run it.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What an `open` asks for in its `superuser` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Require,
    Try,
}

/// The `superuser` mode of an `open`, if it asks for one.
pub(crate) fn mode(open: &Message) -> Option<Mode> {
    match open.str("superuser") {
        Some("require") => Some(Mode::Require),
        Some("try") => Some(Mode::Try),
        _ => None,
    }
}

/// Is this session root already (then `superuser` is ignored)?
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What happened to the root copy.
pub(crate) enum Event {
    Started(mpsc::UnboundedSender<Frame>),
    Failed(String),
    /// The root copy closed this channel.
    Closed(String),
    Ended,
}

enum State {
    /// Not started; it will be at the first channel that asks.
    Idle,
    /// The client's `init` said `superuser: false`.
    Disabled,
    Starting,
    Running(mpsc::UnboundedSender<Frame>),
    /// It could not start, or it ended: no root copy for this session.
    Gone,
}

/// What the router does with an `open` that asks for `superuser`.
pub(crate) enum Route {
    /// Forwarded (or waiting to be): nothing to do.
    Forwarded,
    /// Run it here.
    Local,
    /// Close it with `access-denied` and this message.
    Deny(String),
}

/// A channel waiting for the root copy to start.
struct Waiting {
    id: String,
    open: Message,
    mode: Mode,
}

/// The router's view of the root copy.
pub(crate) struct Superuser {
    state: State,
    /// Channels routed to the root copy (also those waiting for it).
    routed: HashSet<String>,
    waiting: Vec<Waiting>,
    /// Frames for waiting channels, in order (their `open` first).
    held: Vec<Frame>,
    /// An `init` asked for the root copy: say `superuser-init-done` when the attempt ends.
    init_done_pending: bool,
    events: (mpsc::UnboundedSender<Event>, mpsc::UnboundedReceiver<Event>),
    out: mpsc::Sender<Out>,
    /// The task that starts the root copy and then carries its frames.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Superuser {
    fn drop(&mut self) {
        // The root copy goes with the session (its process is killed when the task is gone).
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Superuser {
    pub(crate) fn new(out: mpsc::Sender<Out>) -> Self {
        Superuser {
            state: State::Idle,
            routed: HashSet::new(),
            waiting: Vec::new(),
            held: Vec::new(),
            init_done_pending: false,
            events: mpsc::unbounded_channel(),
            out,
            task: None,
        }
    }

    /// The next event about the root copy.
    pub(crate) async fn next_event(&mut self) -> Option<Event> {
        self.events.1.recv().await
    }

    /// Is this channel routed to the root copy?
    pub(crate) fn routes(&self, id: &str) -> bool {
        self.routed.contains(id)
    }

    /// The client's `init`: its `superuser` field says whether to start the root copy now
    /// (`{"id": ...}`, `"any"`), never (`false`), or at the first channel that asks (absent).
    /// Returns `superuser-init-done` when it is to be sent at once.
    pub(crate) fn init(&mut self, init: &Message) -> Option<Message> {
        let field = init.get("superuser")?;
        let wanted = match field {
            serde_json::Value::Bool(false) => false,
            serde_json::Value::Object(o) => o
                .get("id")
                .and_then(|v| v.as_str())
                .is_none_or(|id| id == "sudo" || id == "any"),
            serde_json::Value::String(s) => s == "any" || s == "sudo",
            _ => false,
        };
        if !wanted || is_root() {
            if !wanted {
                self.state = State::Disabled;
            }
            return Some(Message::new("superuser-init-done"));
        }
        self.init_done_pending = true;
        self.start();
        None
    }

    fn start(&mut self) {
        if matches!(self.state, State::Idle) {
            self.state = State::Starting;
            self.task = Some(tokio::spawn(run_peer(
                self.out.clone(),
                self.events.0.clone(),
            )));
        }
    }

    /// An `open` with a `superuser` mode, in a session that is not root.
    pub(crate) fn open(&mut self, id: &str, open: &Message, frame: Frame, mode: Mode) -> Route {
        if matches!(self.state, State::Idle) {
            self.start();
        }
        match &self.state {
            State::Running(tx) => {
                self.routed.insert(id.to_owned());
                let _ = tx.send(frame);
                Route::Forwarded
            }
            State::Starting => {
                self.routed.insert(id.to_owned());
                self.held.push(frame);
                self.waiting.push(Waiting {
                    id: id.to_owned(),
                    open: open.clone(),
                    mode,
                });
                Route::Forwarded
            }
            State::Idle | State::Disabled | State::Gone => match mode {
                Mode::Try => Route::Local,
                Mode::Require => Route::Deny("no administrative access in this session".into()),
            },
        }
    }

    /// A frame for a routed channel.
    pub(crate) fn forward(&mut self, frame: Frame) {
        match &self.state {
            State::Running(tx) => {
                let _ = tx.send(frame);
            }
            _ => self.held.push(frame),
        }
    }

    /// `kill` goes to the root copy too.
    pub(crate) fn kill(&mut self, msg: &Message) {
        if let State::Running(tx) = &self.state {
            let _ = tx.send(msg.clone().into_frame());
        }
    }

    /// Act on an event. Returns what the router must do: channels to open here (with the frames
    /// that waited for them), and messages to send.
    pub(crate) fn event(
        &mut self,
        event: Event,
    ) -> (Vec<(String, Message)>, Vec<Frame>, Vec<Message>) {
        let mut local = Vec::new();
        let mut replay = Vec::new();
        let mut say = Vec::new();
        match event {
            Event::Started(tx) => {
                for frame in self.held.drain(..) {
                    let _ = tx.send(frame);
                }
                self.waiting.clear();
                self.state = State::Running(tx);
                if std::mem::take(&mut self.init_done_pending) {
                    say.push(Message::new("superuser-init-done"));
                }
            }
            Event::Failed(why) => {
                log_no_root_copy(&why);
                self.state = State::Gone;
                let held = std::mem::take(&mut self.held);
                for w in self.waiting.drain(..) {
                    self.routed.remove(&w.id);
                    match w.mode {
                        Mode::Require => say.push(
                            control::close(&w.id, Some(problem::ACCESS_DENIED))
                                .with("message", why.clone()),
                        ),
                        Mode::Try => local.push((w.id, w.open)),
                    }
                }
                // Frames after a `try` channel's `open` are delivered here, in order.
                let local_ids: HashSet<&str> = local.iter().map(|(id, _)| id.as_str()).collect();
                for frame in held {
                    let id = frame_channel(&frame);
                    let is_open = frame.is_control()
                        && frame.parse_control().is_ok_and(|m| m.command == "open");
                    if local_ids.contains(id.as_str()) && !is_open {
                        replay.push(frame);
                    }
                }
                if std::mem::take(&mut self.init_done_pending) {
                    say.push(Message::new("superuser-init-done"));
                }
            }
            Event::Closed(id) => {
                self.routed.remove(&id);
            }
            Event::Ended => {
                self.state = State::Gone;
                let mut ids: Vec<String> = self.routed.drain().collect();
                ids.sort();
                for id in ids {
                    say.push(
                        control::close(&id, Some(problem::TERMINATED))
                            .with("message", "the privileged bridge ended"),
                    );
                }
            }
        }
        (local, replay, say)
    }
}

/// The channel a frame belongs to (for control frames, their `channel` field).
fn frame_channel(frame: &Frame) -> String {
    if !frame.is_control() {
        return frame.channel.clone();
    }
    frame
        .parse_control()
        .ok()
        .and_then(|m| m.channel().map(str::to_owned))
        .unwrap_or_default()
}

/// The bridge has no logger: why there is no root copy goes to stderr, which the launcher
/// passes on.
fn log_no_root_copy(why: &str) {
    eprintln!("ferry-bridge: no administrative access: {why}");
}

/// Start the root copy through `sudo -n` and pump frames until it ends.
async fn run_peer(out: mpsc::Sender<Out>, events: mpsc::UnboundedSender<Event>) {
    let failed = |why: String| {
        let _ = events.send(Event::Failed(why));
    };
    let offer = match crate::replicate::own_image() {
        Ok(offer) => offer,
        Err(e) => return failed(format!("cannot read this bridge's executable: {e}")),
    };
    let invocation = ferry_stage1::Invocation::new(vec![offer]);
    let mut argv: Vec<String> = ["sudo", "-n", "--"].map(String::from).to_vec();
    argv.extend(invocation.argv());
    let started = match crate::replicate::start(&argv, &invocation, None).await {
        Ok(started) => started,
        Err(reply) => {
            let stderr = reply.str("stderr").unwrap_or("").trim();
            let why = stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or_else(|| reply.str("message").unwrap_or("sudo failed"));
            return failed(why.to_owned());
        }
    };
    let crate::replicate::Started {
        child,
        reader,
        writer,
        ..
    } = started;
    let mut frames = FramedRead::new(reader, FrameCodec::new());
    match tokio::time::timeout(INIT_TIMEOUT, frames.next()).await {
        Ok(Some(Ok(frame))) if frame.is_control() => match frame.parse_control() {
            Ok(m) if m.command == "init" && m.problem().is_none() => {}
            _ => return failed("the privileged bridge did not start".into()),
        },
        _ => return failed("the privileged bridge did not say init".into()),
    }
    let mut sink = FramedWrite::new(writer, FrameCodec::new());
    let init = control::init().with("host", "localhost").into_frame();
    if sink.send(init).await.is_err() {
        return failed("lost the privileged bridge".into());
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let _ = events.send(Event::Started(tx));
    let downward = async {
        while let Some(frame) = rx.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    };
    let upward = async {
        while let Some(Ok(frame)) = frames.next().await {
            if frame.is_control() {
                match frame.parse_control() {
                    Ok(m) if m.command == "close" => match m.channel() {
                        Some(id) => {
                            let _ = events.send(Event::Closed(id.to_owned()));
                        }
                        // The root copy ends its session.
                        None => break,
                    },
                    // Only channel messages travel up; the copy's own `ping`s and the like
                    // are not the client's business.
                    Ok(m) if m.channel().is_none() => continue,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if out.send(frame.into()).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = downward => {},
        () = upward => {},
    }
    drop(child);
    let _ = events.send(Event::Ended);
}
