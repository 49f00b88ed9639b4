//! The interface between the router and the channel types.
//!
//! Every payload type is one `async fn run(ch: &mut Channel) -> ChannelResult` in its own
//! module. The router spawns it as a task when an `open` arrives, and turns its result into
//! the channel's `close`. A `close` or `kill` from the peer (or the end of the transport) aborts
//! the task: cleanup happens in `Drop` (child processes are killed with their process group).
//!
//! [`Channel`] applies the protocol's per-channel rules transparently:
//! - `send_data` checks UTF-8 on text channels (a code point may straddle two calls), counts
//!   bytes for flow control (`ping` every 16 KiB, waits while 2 MiB are unanswered), and waits
//!   while the output queue is full;
//! - `recv` answers the peer's channel `ping`s with `pong` once the data before them has been
//!   consumed, and sends `ack` for each data frame when the peer asked for `send-acks`.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ferry_protocol::control::{self, Message};
use ferry_protocol::{problem, Frame};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::flow::SendWindow;
use crate::output::{Out, Splice};
use crate::utf8::Utf8Check;

/// After queueing a data frame at least this large, a channel lets the writer run.
const YIELD_AFTER: usize = 16 * 1024;

/// What the peer sends to an open channel.
#[derive(Debug)]
pub enum Input {
    /// A data frame.
    Data(Bytes),
    /// The peer sent `done`: it will send no more data.
    Done,
    /// The peer sent `options` (e.g. a pty resize).
    Options(Message),
    /// Any other channel-level control message the router does not handle itself.
    Control(Message),
}

/// What the router queues for a channel: input, or a `ping` to answer in order.
#[derive(Debug)]
pub(crate) enum Inbound {
    Input(Input),
    Ping(Message),
}

/// How a channel ends with a problem: becomes `close` with `problem`, `message` and `extra`.
#[derive(Debug, Clone)]
pub struct ChannelError {
    pub problem: String,
    pub message: Option<String>,
    pub extra: Map<String, Value>,
}

impl ChannelError {
    pub fn new(problem: &str) -> Self {
        ChannelError {
            problem: problem.to_owned(),
            message: None,
            extra: Map::new(),
        }
    }

    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Map an I/O error to its Cockpit problem (`not-found`, `access-denied`, ...).
    pub fn from_io(err: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let problem = match err.kind() {
            NotFound | ConnectionRefused => problem::NOT_FOUND,
            PermissionDenied => problem::ACCESS_DENIED,
            _ if err.raw_os_error() == Some(libc::ENOTDIR) => problem::NOT_DIRECTORY,
            _ => problem::INTERNAL_ERROR,
        };
        ChannelError::new(problem).message(err.to_string())
    }
}

/// A channel's result: `Ok(extra)` closes without a problem, adding `extra` to the `close`.
pub type ChannelResult = Result<Map<String, Value>, ChannelError>;

/// An open channel, as its payload task sees it.
pub struct Channel {
    /// The channel id.
    pub id: String,
    /// The `open` message, with every option the peer gave.
    pub open: Message,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    out: mpsc::Sender<Out>,
    /// The output is a pipe that may take data spliced from other pipes.
    pub(crate) splice_out: bool,
    /// Present with `"flow-control": true`.
    window: Option<SendWindow>,
    /// The highest `sequence` the peer answered with `pong`, written by the router.
    pongs: watch::Receiver<u64>,
    /// Present on text channels (no `"binary": "raw"`).
    text: Option<Utf8Check>,
    send_acks: bool,
    /// Size of the data frame `recv` returned last, to acknowledge on the next `recv`.
    unacked: Option<usize>,
    /// Control replies (`pong`, `ack`) waiting for room in the output queue.
    owed: VecDeque<Frame>,
    /// Set when the channel broke a rule (invalid UTF-8): overrides its result.
    failed: Option<ChannelError>,
    /// The id as a JSON string, once a ping needed it.
    quoted_id: Option<String>,
    /// `ready` has been sent.
    readied: bool,
}

/// Decimal digits of `n`, without allocating.
fn itoa(mut n: u64) -> Digits {
    let mut d = Digits([0; 20], 20);
    loop {
        d.1 -= 1;
        d.0[d.1] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return d;
        }
    }
}

struct Digits([u8; 20], usize);

impl Digits {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[self.1..]).unwrap_or("0")
    }
}

/// A read buffer whose reads come out as `Bytes` without a copy, and whose memory is used
/// again once those have been written out (a channel lets the writer run after each large
/// frame, so that is usually before the next read).
///
/// Two allocations take turns: a read goes into whichever has room or is no longer referenced
/// by a frame waiting for output; only when neither is free is one replaced by a fresh one
/// (the old one is freed with its last frame). At most two reads' worth stays allocated.
#[derive(Default)]
pub struct ReadBuffer {
    bufs: [BytesMut; 2],
    current: usize,
}

impl ReadBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty buffer with room for at least `want` bytes; read into it, then `split()` it
    /// and `freeze()` what was read.
    pub fn prepare(&mut self, want: usize) -> &mut BytesMut {
        for _ in 0..2 {
            let buf = &mut self.bufs[self.current];
            buf.clear();
            if buf.capacity() >= want || buf.try_reclaim(want) {
                return &mut self.bufs[self.current];
            }
            self.current ^= 1;
        }
        let buf = &mut self.bufs[self.current];
        *buf = BytesMut::with_capacity(want.max(ALLOC_MIN));
        buf
    }
}

/// The smallest allocation of a [`ReadBuffer`].
const ALLOC_MIN: usize = 16 * 1024;

/// `{"command":"ping","channel":ID,"sequence":N}` with `ID` already a JSON string: formatted
/// directly, as one goes out for every 16 KiB of a busy channel.
fn ping_frame(quoted_id: &str, sequence: u64) -> Frame {
    let mut text = String::with_capacity(48 + quoted_id.len());
    text.push_str("{\"command\":\"ping\",\"channel\":");
    text.push_str(quoted_id);
    text.push_str(",\"sequence\":");
    text.push_str(itoa(sequence).as_str());
    text.push('}');
    Frame::new("", text)
}

impl Channel {
    pub(crate) fn new(
        id: String,
        open: Message,
        inbound: mpsc::UnboundedReceiver<Inbound>,
        out: mpsc::Sender<Out>,
        pongs: watch::Receiver<u64>,
    ) -> Self {
        let window = (open.bool("flow-control") == Some(true)).then(SendWindow::new);
        let text = (open.str("binary") != Some("raw")).then(Utf8Check::new);
        let send_acks = open.str("send-acks") == Some("bytes");
        Channel {
            id,
            open,
            inbound,
            out,
            splice_out: false,
            window,
            pongs,
            text,
            send_acks,
            unacked: None,
            owed: VecDeque::new(),
            failed: None,
            quoted_id: None,
            readied: false,
        }
    }

    /// `"binary": "raw"` was asked for.
    pub fn binary(&self) -> bool {
        self.open.str("binary") == Some("raw")
    }

    /// Tell the peer the channel is ready, with extra fields (e.g. `pid`).
    ///
    /// Said once: a second call sends nothing.
    pub async fn ready(&mut self, extra: Map<String, Value>) {
        if std::mem::replace(&mut self.readied, true) {
            return;
        }
        let mut m = control::ready(&self.id);
        m.fields.extend(extra);
        self.send_control(m).await;
    }

    /// Send `value` as JSON data before the channel's `ready`: only for the message that
    /// Cockpit's bridges send first on a dbus-json3 channel with a `name`, its `{"owner": ...}`
    /// (Cockpit 337, `channels/dbus.py`). Returns `false` as [`Channel::send_data`] does.
    pub async fn send_json_before_ready(&mut self, value: &Value) -> bool {
        let readied = std::mem::replace(&mut self.readied, true);
        let sent = self.send_json(value).await;
        self.readied = readied;
        sent
    }

    /// Send a data frame. Returns `false` when the channel should stop: the output is gone, or
    /// the data broke a rule (invalid UTF-8 on a text channel; the channel then closes with
    /// `protocol-error` whatever it returns).
    ///
    /// Waits while the output queue is full, and on flow-controlled channels while 2 MiB are
    /// unanswered. Not cancel-safe: do not use it as a `select!` branch.
    ///
    /// Data never goes out before the channel's `ready` (as in Cockpit 337): a channel that has
    /// not said `ready` yet says it now.
    pub async fn send_data(&mut self, data: Bytes) -> bool {
        if self.failed.is_some() {
            return false;
        }
        if !self.readied {
            self.ready(Map::new()).await;
        }
        let was_empty = data.is_empty();
        let data = match &mut self.text {
            None => data,
            Some(check) => match check.push(data) {
                Ok(data) => data,
                Err(e) => {
                    self.fail(ChannelError::new(problem::PROTOCOL_ERROR).message(e.to_string()));
                    return false;
                }
            },
        };
        if data.is_empty() && !was_empty {
            // Only part of a code point so far.
            return true;
        }
        let len = data.len();
        if self
            .out
            .send(Frame::new(self.id.clone(), data).into())
            .await
            .is_err()
        {
            return false;
        }
        if len >= YIELD_AFTER {
            // Let the writer take it now: it goes out while it is still in the cache, and
            // the buffer it was read into is free again for the next read.
            tokio::task::yield_now().await;
        }
        self.count_sent(len).await
    }

    /// Send `len` bytes that wait in the pipe `from` as one data frame: the writer moves them
    /// into the output with `splice(2)`, without copying them through memory. Returns once
    /// they went out, like [`send_data`](Self::send_data) otherwise.
    ///
    /// Only where [`can_splice`](Self::can_splice) holds, and nothing else may read `from`
    /// meanwhile.
    pub(crate) async fn send_spliced(&mut self, from: &Arc<OwnedFd>, len: usize) -> bool {
        if self.failed.is_some() || len == 0 {
            return self.failed.is_none();
        }
        let (done, moved) = oneshot::channel();
        let splice = Splice {
            channel: self.id.clone(),
            from: from.clone(),
            len,
            done,
        };
        if self.out.send(Out::Splice(splice)).await.is_err() {
            return false;
        }
        match moved.await {
            Ok(true) => {}
            Ok(false) => {
                self.fail(
                    ChannelError::new(problem::INTERNAL_ERROR)
                        .message("output was lost on its way to the transport"),
                );
                return false;
            }
            Err(_) => return false,
        }
        self.count_sent(len).await
    }

    /// Data can go out with [`send_spliced`](Self::send_spliced): the output is a pipe, and
    /// the channel is binary (nothing to check on the way).
    pub(crate) fn can_splice(&self) -> bool {
        self.splice_out && self.text.is_none()
    }

    /// Flow control for `len` bytes just sent: a `ping` on each 16 KiB boundary, and a wait
    /// while the window is closed. `false` once the output is gone.
    async fn count_sent(&mut self, len: usize) -> bool {
        let Some(sequence) = self.window.as_mut().map(|w| w.sent(len)) else {
            return true;
        };
        if let Some(sequence) = sequence {
            let ping = self.ping(sequence);
            if self.out.send(ping.into()).await.is_err() {
                return false;
            }
        }
        let Some(window) = &mut self.window else {
            return true;
        };
        while !window.is_open() {
            window.pong(*self.pongs.borrow_and_update());
            if window.is_open() {
                break;
            }
            if self.pongs.changed().await.is_err() {
                return false;
            }
        }
        true
    }

    /// The flow-control `ping` for `sequence`.
    fn ping(&mut self, sequence: u64) -> Frame {
        let id = self
            .quoted_id
            .get_or_insert_with(|| Value::from(self.id.as_str()).to_string());
        ping_frame(id, sequence)
    }

    /// How many bytes may be sent before flow control makes [`send_data`](Self::send_data)
    /// wait (`usize::MAX` without flow control). Readers size their reads with it, so that a
    /// channel stops right at its window instead of one read past it.
    pub fn window_room(&mut self) -> usize {
        match &mut self.window {
            Some(window) => {
                window.pong(*self.pongs.borrow());
                window.room().try_into().unwrap_or(usize::MAX)
            }
            None => usize::MAX,
        }
    }

    /// Flow control is on.
    pub fn flow_controlled(&self) -> bool {
        self.window.is_some()
    }

    /// Send one JSON value as a data frame (for message-based payloads).
    pub async fn send_json(&mut self, value: &Value) -> bool {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.send_data(Bytes::from(bytes)).await,
            Err(_) => false,
        }
    }

    /// Send a channel-level control message (must already carry `channel`).
    pub async fn send_control(&mut self, message: Message) {
        let _ = self.out.send(message.into_frame().into()).await;
    }

    /// A text channel whose data is shown to a person (a terminal): invalid UTF-8 becomes
    /// U+FFFD instead of closing the channel with `protocol-error` (see [`Utf8Check::lossy`]).
    pub fn text_lossy(&mut self) {
        if let Some(check) = &mut self.text {
            if !check.is_lossy() {
                *check = Utf8Check::lossy();
            }
        }
    }

    /// Tell the peer this side sends no more data.
    pub async fn done(&mut self) {
        if let Some(rest) = self.text.as_mut().and_then(Utf8Check::finish_lossy) {
            self.send_data(rest).await;
        }
        if let Some(check) = &mut self.text {
            if let Err(e) = check.finish() {
                self.fail(ChannelError::new(problem::PROTOCOL_ERROR).message(e.to_string()));
            }
        }
        self.send_control(control::done(&self.id)).await;
    }

    /// The next thing the peer sent; `None` once the channel is being torn down.
    ///
    /// Cancel-safe: may be used as a `select!` branch.
    pub async fn recv(&mut self) -> Option<Input> {
        if let Some(bytes) = self.unacked.take() {
            let ack = Message::new("ack")
                .with("channel", self.id.as_str())
                .with("bytes", bytes);
            self.owed.push_back(ack.into_frame());
        }
        loop {
            if self.failed.is_some() || !self.pay_debts().await {
                return None;
            }
            match self.inbound.recv().await? {
                Inbound::Ping(ping) => self.owed.push_back(ping.into_pong().into_frame()),
                Inbound::Input(Input::Data(data)) => {
                    if self.send_acks {
                        self.unacked = Some(data.len());
                    }
                    return Some(Input::Data(data));
                }
                Inbound::Input(input) => return Some(input),
            }
        }
    }

    /// Send the owed control replies. Cancel-safe. `false` once the output is gone.
    async fn pay_debts(&mut self) -> bool {
        while !self.owed.is_empty() {
            let Ok(permit) = self.out.reserve().await else {
                return false;
            };
            if let Some(frame) = self.owed.pop_front() {
                permit.send(frame.into());
            }
        }
        true
    }

    fn fail(&mut self, error: ChannelError) {
        if self.failed.is_none() {
            self.failed = Some(error);
        }
    }

    /// The channel's task ended with `result`: settle what it owes and build its `close`.
    pub(crate) async fn finish(&mut self, result: ChannelResult) -> Message {
        if let Some(bytes) = self.unacked.take() {
            let ack = Message::new("ack")
                .with("channel", self.id.as_str())
                .with("bytes", bytes);
            self.owed.push_back(ack.into_frame());
        }
        self.pay_debts().await;
        if let Some(Err(e)) = self.text.as_mut().map(Utf8Check::finish) {
            self.fail(ChannelError::new(problem::PROTOCOL_ERROR).message(e.to_string()));
        }
        let result = match self.failed.take() {
            Some(error) => Err(error),
            None => result,
        };
        close_message(&self.id, result)
    }
}

/// The `close` for a channel that ended with `result`.
pub(crate) fn close_message(id: &str, result: ChannelResult) -> Message {
    let mut m = control::close(id, None);
    match result {
        Ok(extra) => {
            m.fields.extend(extra);
            m.fields.insert("command".into(), "close".into());
            m.fields.insert("channel".into(), id.into());
        }
        Err(ChannelError {
            problem: p,
            message,
            extra,
        }) => {
            m.fields.extend(extra);
            m.fields.insert("command".into(), "close".into());
            m.fields.insert("channel".into(), id.into());
            m.fields.insert("problem".into(), p.into());
            if let Some(text) = message {
                m.fields.insert("message".into(), text.into());
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_are_the_json_they_say() {
        for id in ["a", "4:7", "quote\"back\\slash", "ünï\u{1}"] {
            for sequence in [0, 16384, u64::MAX] {
                let quoted = Value::from(id).to_string();
                let frame = ping_frame(&quoted, sequence);
                assert!(frame.is_control());
                let v: Value = serde_json::from_slice(&frame.payload).unwrap();
                assert_eq!(
                    v,
                    serde_json::json!({"command": "ping", "channel": id, "sequence": sequence})
                );
            }
        }
    }

    #[test]
    fn read_buffers_are_used_again_once_their_frames_are_gone() {
        let mut rb = ReadBuffer::new();
        let buf = rb.prepare(64 * 1024);
        let first = buf.as_ptr();
        buf.extend_from_slice(&[1; 64 * 1024]);
        let frame = buf.split().freeze();
        // Still referenced: the next read goes elsewhere.
        let buf = rb.prepare(64 * 1024);
        let second = buf.as_ptr();
        assert_ne!(second, first);
        buf.extend_from_slice(&[2; 1000]);
        let other = buf.split().freeze();
        assert_eq!(&frame[..], &[1; 64 * 1024][..]);
        drop(frame);
        drop(other);
        // Both free again: no new allocation.
        for _ in 0..4 {
            let buf = rb.prepare(64 * 1024);
            assert!(buf.is_empty() && buf.capacity() >= 64 * 1024);
            let p = buf.as_ptr();
            assert!(p == first || p == second);
            buf.extend_from_slice(&[3; 10]);
            drop(buf.split().freeze());
        }
    }
}
