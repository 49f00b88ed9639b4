//! The privileged bridge: channels opened with `"superuser": "require"` or `"try"` go to a root
//! copy of this bridge, started by self-replication through sudo (see `replicate`).
//!
//! Behaviour follows Cockpit's Python bridge (`SuperuserRoutingRule`): a session that is
//! already root handles such channels itself; otherwise they are forwarded whole (the `open`
//! with its `superuser` field, and everything after it) to the root copy, which is root and so
//! handles them itself. While the copy is starting, their frames wait; nothing else does. If
//! it cannot start, `require` channels close with `access-denied` and `try` channels run here.
//! The copy is started when the client's `init` asks for it (`superuser: {"id": ...}`), by the
//! internal bus's `/superuser` object (`Start`, the front end's "Limited access" switch), or at
//! the first such channel unless the `init` said `superuser: false` (this last one is ferry's
//! own: without a prompt, through `sudo -n`). `superuser-init-done` is sent once the attempt an
//! `init` asked for has ended, whatever its outcome.
//!
//! The `/superuser` object (`cockpit.Superuser`, served by `dbus::internal`) reads and drives
//! this module through a process-wide hub: `Bridges` (`["sudo"]` when sudo is installed, the
//! name Cockpit's shell manifest gives it), `Current` (`"root"` in a root session, else
//! `"init"` while an attempt runs, the bridge's name while the copy runs, `"none"`), `Methods`
//! (`{}`: no bridge has a label), `Start(name)` (returns once the copy said `init`; errors as
//! 337 names them: `cockpit.Superuser.Error` with sudo's own words, `...Error.Cancelled` when
//! `Stop` ends the attempt), `Stop()` (its channels close with `terminated`). Every change of
//! `Current` is announced with `PropertiesChanged` before the reply of the call that caused it.
//!
//! A `Start` runs `sudo -k -A` as Cockpit's shell manifest does (where `sudo -A --help`
//! succeeds; else `sudo -n`), with this bridge's own image as askpass (`crate::askpass`): sudo's
//! prompt becomes the `Prompt` signal (`""`, prompt, `""`, `false`, what sudo said before it) and
//! `Answer(reply)` goes to sudo. One prompt per attempt: a further one (sudo's "Sorry, try
//! again.") is refused, so a wrong password fails `Start` with sudo's own words ("1 incorrect
//! password attempt") after exactly one try. A person has [`PROMPT_TIMEOUT`] to answer.
//! The login-time attempt of an `init` runs the same way, but its one prompt goes to the client
//! as one `authorize` with the challenge `plain1:HEXUSER` (cookies `"0"`, `"1"`, ...), whose
//! `response` is the login password (empty: none), as 337's `AuthorizeResponder` asks it.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ferry_protocol::control::{self, Message};
use ferry_protocol::{problem, Frame, FrameCodec};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
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

/// A D-Bus error: its name and message.
pub(crate) type BusError = (String, String);

/// The outcome of a `Start` or `Stop` call on `/superuser`.
pub(crate) type BusResult = Result<(), BusError>;

fn bus_error(name: &str, text: impl Into<String>) -> BusError {
    (name.to_owned(), text.into())
}

const ERROR: &str = "cockpit.Superuser.Error";

/// Where the outcome of a `Start` or `Stop` goes (the internal bus connection's reply).
pub(crate) type BusReply = Box<dyn FnOnce(BusResult) + Send>;

/// A call on the `/superuser` object that the router's [`Superuser`] answers.
pub(crate) enum BusRequest {
    Start(String, BusReply),
    Stop(BusReply),
    Answer(String),
}

/// What happened to the root copy (each start is an attempt, numbered: events of an attempt
/// that was stopped are dropped), or what the internal bus asks.
pub(crate) enum Event {
    Started(u64, mpsc::UnboundedSender<Frame>),
    /// It could not start: sudo's words (or ours).
    Failed(u64, String),
    /// The root copy closed this channel.
    Closed(String),
    Ended(u64),
    /// sudo asks for a password (through its askpass).
    Ask(u64, crate::askpass::Ask),
    Bus(BusRequest),
}

/// Who answers sudo's prompt during an attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Responder {
    /// Nobody: sudo may not ask (`sudo -n`).
    Nobody,
    /// The front end, through the `Prompt` signal and `Answer`.
    Bus,
    /// The client of the session, with one `authorize` (challenge `plain1:HEXUSER`) whose
    /// answer is the login password: the login-time attempt of an `init`, as 337's
    /// `AuthorizeResponder`.
    Authorize,
}

/// How long a person may take to answer sudo's prompt (and the root copy to start after it).
const PROMPT_TIMEOUT: Duration = Duration::from_secs(300);

/// A signal of the `/superuser` object, for every internal bus connection.
#[derive(Clone, Debug)]
pub(crate) enum Signal {
    /// `Current` changed to this.
    Current(String),
    /// `Prompt(message, prompt, default, echo, error)`: `prompt` and `error` (what sudo said
    /// before it asked), as 337 sends them.
    Prompt { prompt: String, error: String },
}

/// Shared between the router's [`Superuser`] and the internal bus connections.
struct Hub {
    events: mpsc::UnboundedSender<Event>,
    /// The internal bus connections, for signals.
    subscribers: Vec<mpsc::UnboundedSender<Signal>>,
    current: String,
}

impl Hub {
    fn signal(&mut self, signal: &Signal) {
        self.subscribers.retain(|s| s.send(signal.clone()).is_ok());
    }
}

static HUB: Mutex<Option<Hub>> = Mutex::new(None);

fn hub<T>(f: impl FnOnce(&mut Option<Hub>) -> T) -> T {
    f(&mut HUB.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The privileged bridges this machine offers: `sudo` when it is installed (named as
/// Cockpit's shell manifest names it: the basename of its `spawn[0]`).
pub(crate) fn bridges() -> &'static [String] {
    static BRIDGES: OnceLock<Vec<String>> = OnceLock::new();
    BRIDGES.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        let found = std::env::split_paths(&path).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join("sudo"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
        if found {
            vec!["sudo".to_owned()]
        } else {
            Vec::new()
        }
    })
}

/// The `Current` property of `/superuser`.
pub(crate) fn current() -> String {
    hub(|h| h.as_ref().map(|h| h.current.clone()))
        .unwrap_or_else(|| if is_root() { "root" } else { "none" }.to_owned())
}

/// The signals of `/superuser` from now on (`None` outside a session).
pub(crate) fn subscribe() -> Option<mpsc::UnboundedReceiver<Signal>> {
    hub(|h| {
        h.as_mut().map(|h| {
            let (tx, rx) = mpsc::unbounded_channel();
            h.subscribers.push(tx);
            rx
        })
    })
}

/// `Start(name)` or `Stop()`: the reply is given once the router has acted on it, after the
/// signals it causes were sent to every subscriber.
pub(crate) fn request(request: BusRequest) {
    let sent = hub(|h| match h {
        Some(h) => h.events.send(Event::Bus(request)).map_err(|e| e.0),
        None => Err(Event::Bus(request)),
    });
    if let Err(Event::Bus(BusRequest::Start(_, reply) | BusRequest::Stop(reply))) = sent {
        reply(Err(bus_error(
            ERROR,
            "no privileged bridge in this session",
        )));
    }
}

/// `Answer(reply)`: the reply to the pending prompt, if there is one.
pub(crate) fn answer(reply: String) {
    hub(|h| {
        if let Some(h) = h {
            let _ = h.events.send(Event::Bus(BusRequest::Answer(reply)));
        }
    });
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
    /// The number of the current (or last) attempt.
    attempt: u64,
    /// The bridge being started or running (`sudo`).
    name: String,
    /// A `Start` call waiting for the attempt to end.
    start_reply: Option<BusReply>,
    responder: Responder,
    /// The attempt's one prompt was asked already: any further one is refused.
    prompted: bool,
    /// The prompt waiting for `Answer` (or for the client's `authorize` with this cookie).
    pending_prompt: Option<oneshot::Sender<Option<String>>>,
    pending_cookie: Option<String>,
    /// The cookie of the next `authorize` request (`"0"`, `"1"`, ..., as 337 counts them).
    next_cookie: u64,
    /// `Current` as last announced.
    announced: String,
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
        hub(|h| {
            if h.as_ref()
                .is_some_and(|h| h.events.same_channel(&self.events.0))
            {
                *h = None;
            }
        });
    }
}

impl Superuser {
    pub(crate) fn new(out: mpsc::Sender<Out>) -> Self {
        let events = mpsc::unbounded_channel();
        let announced = if is_root() { "root" } else { "none" }.to_owned();
        hub(|h| {
            *h = Some(Hub {
                events: events.0.clone(),
                subscribers: Vec::new(),
                current: announced.clone(),
            })
        });
        Superuser {
            state: State::Idle,
            attempt: 0,
            name: String::new(),
            start_reply: None,
            responder: Responder::Nobody,
            prompted: false,
            pending_prompt: None,
            pending_cookie: None,
            next_cookie: 0,
            announced,
            routed: HashSet::new(),
            waiting: Vec::new(),
            held: Vec::new(),
            init_done_pending: false,
            events,
            out,
            task: None,
        }
    }

    /// `Current`, from the state.
    fn current(&self) -> String {
        if is_root() {
            return "root".into();
        }
        match self.state {
            State::Starting => "init".into(),
            State::Running(_) => self.name.clone(),
            _ => "none".into(),
        }
    }

    /// Announce `Current` if it changed.
    fn announce(&mut self) {
        let now = self.current();
        if now != self.announced {
            self.announced.clone_from(&now);
            hub(|h| {
                if let Some(h) = h {
                    h.current.clone_from(&now);
                    h.signal(&Signal::Current(now));
                }
            });
        }
    }

    /// Answer the waiting `Start` call, after announcing what changed.
    fn reply_start(&mut self, result: BusResult) {
        self.announce();
        if let Some(reply) = self.start_reply.take() {
            reply(result);
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
        if !wanted || is_root() || bridges().is_empty() {
            if !wanted {
                self.state = State::Disabled;
            }
            return Some(Message::new("superuser-init-done"));
        }
        self.init_done_pending = true;
        self.start(Responder::Authorize);
        None
    }

    /// The client's `authorize` answering ours: its `response` is the password (none when it
    /// is empty or missing, as 337 reads it).
    pub(crate) fn authorize(&mut self, msg: &Message) {
        if self.pending_cookie.is_none() || msg.str("cookie") != self.pending_cookie.as_deref() {
            return;
        }
        self.pending_cookie = None;
        if let Some(tx) = self.pending_prompt.take() {
            let response = msg.str("response").filter(|r| !r.is_empty());
            let _ = tx.send(response.map(str::to_owned));
        }
    }

    /// Start an attempt (the state is not `Starting` or `Running`); `responder` answers sudo's
    /// one prompt.
    fn start(&mut self, responder: Responder) {
        self.attempt += 1;
        self.responder = responder;
        self.prompted = false;
        self.pending_prompt = None;
        self.pending_cookie = None;
        self.name = bridges().first().cloned().unwrap_or_else(|| "sudo".into());
        self.state = State::Starting;
        self.task = Some(tokio::spawn(run_peer(
            self.out.clone(),
            self.events.0.clone(),
            self.attempt,
            responder != Responder::Nobody,
        )));
        self.announce();
    }

    /// `Start(name)` on `/superuser`, as 337's `SuperuserRoutingRule.go`.
    fn bus_start(&mut self, name: &str, reply: BusReply) {
        if self.current() != "none" {
            reply(Err(bus_error(ERROR, "Superuser bridge already running")));
            return;
        }
        if !(name == "any" && !bridges().is_empty() || bridges().iter().any(|b| b == name)) {
            reply(Err(bus_error(
                ERROR,
                format!("Unknown superuser bridge type \"{name}\""),
            )));
            return;
        }
        self.start_reply = Some(reply);
        self.start(Responder::Bus);
    }

    /// `Stop()` on `/superuser`: end the attempt (its `Start` fails with `Cancelled`, as in
    /// 337) or the root copy. Either way no copy starts by itself afterwards.
    fn bus_stop(&mut self, reply: BusReply) -> (Vec<(String, Message)>, Vec<Frame>, Vec<Message>) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.pending_prompt = None;
        self.pending_cookie = None;
        let result = match self.state {
            State::Starting => self.failed(
                "the attempt was stopped".into(),
                Some(bus_error(
                    &format!("{ERROR}.Cancelled"),
                    "Operation aborted",
                )),
            ),
            State::Running(_) => (Vec::new(), Vec::new(), self.ended()),
            _ => Default::default(),
        };
        self.state = State::Disabled;
        self.announce();
        reply(Ok(()));
        result
    }

    /// An `open` with a `superuser` mode, in a session that is not root.
    pub(crate) fn open(&mut self, id: &str, open: &Message, frame: Frame, mode: Mode) -> Route {
        if matches!(self.state, State::Idle) && !bridges().is_empty() {
            self.start(Responder::Nobody);
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
        let current = |me: &Self, attempt: u64| attempt == me.attempt && me.task.is_some();
        match event {
            Event::Started(attempt, tx) if current(self, attempt) => {
                let mut say = Vec::new();
                for frame in self.held.drain(..) {
                    let _ = tx.send(frame);
                }
                self.waiting.clear();
                self.state = State::Running(tx);
                self.reply_start(Ok(()));
                if std::mem::take(&mut self.init_done_pending) {
                    say.push(Message::new("superuser-init-done"));
                }
                (Vec::new(), Vec::new(), say)
            }
            Event::Failed(attempt, why) if current(self, attempt) => {
                self.task = None;
                let error = bus_error(ERROR, why.clone());
                self.failed(why, Some(error))
            }
            Event::Closed(id) => {
                self.routed.remove(&id);
                Default::default()
            }
            Event::Ended(attempt) if current(self, attempt) => {
                self.task = None;
                let say = self.ended();
                self.state = State::Gone;
                self.announce();
                (Vec::new(), Vec::new(), say)
            }
            Event::Bus(BusRequest::Start(name, reply)) => {
                self.bus_start(&name, reply);
                Default::default()
            }
            Event::Bus(BusRequest::Stop(reply)) => self.bus_stop(reply),
            Event::Bus(BusRequest::Answer(reply)) => {
                if let Some(tx) = self.pending_prompt.take() {
                    let _ = tx.send(Some(reply));
                }
                Default::default()
            }
            Event::Ask(attempt, ask) => (Vec::new(), Vec::new(), self.ask(attempt, ask)),
            // An attempt that was stopped meanwhile.
            Event::Started(..) | Event::Failed(..) | Event::Ended(_) => Default::default(),
        }
    }

    /// sudo asks for the password: one prompt per attempt goes to its responder, as 337's
    /// `SuperuserRoutingRule.do_askpass` sends it (`Prompt("", prompt, "", false, error)`).
    /// Any further prompt (sudo's "Sorry, try again.") is refused: one try, never a second.
    fn ask(&mut self, attempt: u64, ask: crate::askpass::Ask) -> Vec<Message> {
        let live = attempt == self.attempt && matches!(self.state, State::Starting);
        if !live || std::mem::replace(&mut self.prompted, true) {
            let _ = ask.reply.send(None);
            return Vec::new();
        }
        match self.responder {
            Responder::Authorize => {
                let cookie = self.next_cookie.to_string();
                self.next_cookie += 1;
                self.pending_prompt = Some(ask.reply);
                self.pending_cookie = Some(cookie.clone());
                let hexuser: String = user_name().bytes().map(|b| format!("{b:02x}")).collect();
                return vec![Message::new("authorize")
                    .with("challenge", format!("plain1:{hexuser}"))
                    .with("cookie", cookie)];
            }
            Responder::Nobody => {
                let _ = ask.reply.send(None);
            }
            Responder::Bus => {
                self.pending_prompt = Some(ask.reply);
                hub(|h| {
                    if let Some(h) = h {
                        h.signal(&Signal::Prompt {
                            prompt: ask.prompt,
                            error: ask.error,
                        });
                    }
                });
            }
        }
        Vec::new()
    }

    /// The attempt failed (or was stopped): `require` channels that waited are denied, `try`
    /// ones run here; the `Start` call, if any, gets `error`.
    fn failed(
        &mut self,
        why: String,
        error: Option<BusError>,
    ) -> (Vec<(String, Message)>, Vec<Frame>, Vec<Message>) {
        let mut local = Vec::new();
        let mut replay = Vec::new();
        let mut say = Vec::new();
        let line = why
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("sudo failed")
            .trim()
            .to_owned();
        log_no_root_copy(&line);
        self.state = State::Gone;
        self.pending_prompt = None;
        self.pending_cookie = None;
        let held = std::mem::take(&mut self.held);
        for w in self.waiting.drain(..) {
            self.routed.remove(&w.id);
            match w.mode {
                Mode::Require => say.push(
                    control::close(&w.id, Some(problem::ACCESS_DENIED))
                        .with("message", line.clone()),
                ),
                Mode::Try => local.push((w.id, w.open)),
            }
        }
        // Frames after a `try` channel's `open` are delivered here, in order.
        let local_ids: HashSet<&str> = local.iter().map(|(id, _)| id.as_str()).collect();
        for frame in held {
            let id = frame_channel(&frame);
            let is_open =
                frame.is_control() && frame.parse_control().is_ok_and(|m| m.command == "open");
            if local_ids.contains(id.as_str()) && !is_open {
                replay.push(frame);
            }
        }
        if let Some(error) = error {
            self.reply_start(Err(error));
        }
        self.announce();
        if std::mem::take(&mut self.init_done_pending) {
            say.push(Message::new("superuser-init-done"));
        }
        (local, replay, say)
    }

    /// The root copy is gone: every channel routed to it closes with `terminated`.
    fn ended(&mut self) -> Vec<Message> {
        let mut ids: Vec<String> = self.routed.drain().collect();
        ids.sort();
        ids.into_iter()
            .map(|id| {
                control::close(&id, Some(problem::TERMINATED))
                    .with("message", "the privileged bridge ended")
            })
            .collect()
    }
}

/// The user's name, as Python's `getpass.getuser()` finds it (which 337 puts in `plain1:`):
/// `LOGNAME`, `USER`, `LNAME`, `USERNAME`, then the password database.
fn user_name() -> String {
    for var in ["LOGNAME", "USER", "LNAME", "USERNAME"] {
        if let Some(name) = std::env::var(var).ok().filter(|n| !n.is_empty()) {
            return name;
        }
    }
    // SAFETY: getpwuid_r writes into the buffers given; pw_name points into `buf`, which
    // outlives its use here.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut result = std::ptr::null_mut();
        libc::getpwuid_r(
            libc::getuid(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if result.is_null() || pw.pw_name.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(pw.pw_name)
            .to_string_lossy()
            .into_owned()
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

/// Start the root copy through sudo and pump frames until it ends. `interactive`: sudo may
/// ask for a password (through its askpass, when it has one and this bridge's file is there),
/// as Cockpit's shell manifest runs it (`sudo -k -A`); else it may not (`sudo -n`).
async fn run_peer(
    out: mpsc::Sender<Out>,
    events: mpsc::UnboundedSender<Event>,
    attempt: u64,
    interactive: bool,
) {
    let failed = |why: String| {
        let _ = events.send(Event::Failed(attempt, why));
    };
    let offer = match crate::replicate::own_image() {
        Ok(offer) => offer,
        Err(e) => return failed(format!("cannot read this bridge's executable: {e}")),
    };
    let mut invocation = ferry_stage1::Invocation::new(vec![offer]);
    let askpass = match interactive && crate::askpass::sudo_has_askpass().await {
        true => {
            crate::askpass::program().and_then(|p| Some((p, crate::askpass::Agent::new().ok()?)))
        }
        false => None,
    };
    let (agent, program, stderr) = match askpass {
        Some((program, (agent, stderr))) => (Some(agent), Some(program), Some(stderr)),
        None => (None, None, None),
    };
    let mut argv: Vec<String> = match agent {
        Some(_) => ["sudo", "-k", "-A", "--"].as_slice(),
        None => ["sudo", "-n", "--"].as_slice(),
    }
    .iter()
    .map(|w| (*w).to_owned())
    .collect();
    argv.extend(invocation.argv());
    let mut env: Vec<(&str, &std::ffi::OsStr)> = Vec::new();
    let mut handshake = Duration::from_secs(60);
    if let Some(program) = &program {
        env.push(("SUDO_ASKPASS", program.as_os_str()));
        env.push((crate::askpass::ENV, "1".as_ref()));
        // The loader speaks only after the password has been answered.
        invocation.timeout = PROMPT_TIMEOUT;
        handshake = PROMPT_TIMEOUT + handshake;
    }
    let ask = |ask: crate::askpass::Ask| {
        let _ = events.send(Event::Ask(attempt, ask));
    };
    let serve_agent = async {
        match &agent {
            Some(agent) => agent.run(&ask).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(serve_agent);
    let mut agent_ended = false;
    let start = crate::replicate::start_with(&argv, &env, stderr, handshake, &invocation, None);
    tokio::pin!(start);
    let started = loop {
        tokio::select! {
            started = &mut start => break started,
            () = &mut serve_agent, if !agent_ended => agent_ended = true,
        }
    };
    let started = match started {
        Ok(started) => started,
        Err(reply) => {
            // sudo's own words since its last prompt, as 337 reports them.
            let said = match &agent {
                Some(agent) => {
                    if !agent_ended {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), &mut serve_agent).await;
                    }
                    agent.said()
                }
                None => reply.str("stderr").unwrap_or("").trim().to_owned(),
            };
            let why = if said.is_empty() {
                reply.str("message").unwrap_or("sudo failed").to_owned()
            } else {
                said
            };
            return failed(why);
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
    let _ = events.send(Event::Started(attempt, tx));
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
    // What the root copy writes to stderr is passed on while it runs.
    let stderr = async {
        if !agent_ended {
            (&mut serve_agent).await;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = downward => {},
        () = upward => {},
        () = stderr => {},
    }
    drop(child);
    let _ = events.send(Event::Ended(attempt));
}
