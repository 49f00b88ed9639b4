//! The bridge's main loop: reads frames, answers control messages, routes data to channels,
//! and writes everything the channels produce to one output.

use std::collections::HashMap;

use bytes::Bytes;
use ferry_protocol::control::{self, Message};
use ferry_protocol::{Frame, FrameCodec, FrameError};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::channel::{ChannelError, ChannelResult, Input};

/// Frames queued for output at most; past this, channels wait (the writer is slow).
const OUT_QUEUE: usize = 64;

/// An open channel, as its payload task sees it.
pub struct Channel {
    /// The channel id.
    pub id: String,
    /// The `open` message, with every option the peer gave.
    pub open: Message,
    inbound: mpsc::UnboundedReceiver<Input>,
    out: mpsc::Sender<Frame>,
}

impl Channel {
    /// `"binary": "raw"` was asked for.
    pub fn binary(&self) -> bool {
        self.open.str("binary") == Some("raw")
    }

    /// Tell the peer the channel is ready, with extra fields (e.g. `pid`).
    pub async fn ready(&mut self, extra: Map<String, Value>) {
        let mut m = control::ready(&self.id);
        m.fields.extend(extra);
        self.send_control(m).await;
    }

    /// Send a data frame. Returns `false` once the output is gone.
    pub async fn send_data(&mut self, data: Bytes) -> bool {
        self.out
            .send(Frame::new(self.id.clone(), data))
            .await
            .is_ok()
    }

    /// Send a channel-level control message (must already carry `channel`).
    pub async fn send_control(&mut self, message: Message) {
        let _ = self.out.send(message.into_frame()).await;
    }

    /// Tell the peer this side sends no more data.
    pub async fn done(&mut self) {
        self.send_control(control::done(&self.id)).await;
    }

    /// The next thing the peer sent; `None` once the channel is being torn down.
    pub async fn recv(&mut self) -> Option<Input> {
        self.inbound.recv().await
    }
}

struct Open {
    inbound: mpsc::UnboundedSender<Input>,
    task: JoinHandle<()>,
}

/// Run the bridge on one transport until the peer goes away.
///
/// Returns an error only for a broken transport or protocol; it has then already told the peer.
pub async fn run<R, W>(input: R, output: W) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(OUT_QUEUE);
    let writer = tokio::spawn(async move {
        let mut sink = FramedWrite::new(output, FrameCodec::new());
        while let Some(frame) = out_rx.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
    });

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut channels: HashMap<String, Open> = HashMap::new();
    let _ = out_tx.send(crate::init_message().into_frame()).await;

    let mut frames = FramedRead::new(input, FrameCodec::new());
    let mut got_init = false;
    let result = loop {
        let frame = tokio::select! {
            f = frames.next() => f,
            Some(id) = done_rx.recv() => { channels.remove(&id); continue; }
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => break Err(e),
            None => break Ok(()),
        };
        if !frame.is_control() {
            if !got_init {
                break Err(FrameError::BadControl("data before init".into()));
            }
            if let Some(ch) = channels.get(&frame.channel) {
                let _ = ch.inbound.send(Input::Data(frame.payload));
            }
            continue;
        }
        let msg = match frame.parse_control() {
            Ok(m) => m,
            Err(e) => break Err(e),
        };
        if !got_init {
            if msg.command != "init" {
                break Err(FrameError::BadControl("first message is not init".into()));
            }
            if msg.u64("version") != Some(1) {
                break Err(FrameError::BadControl("unsupported version".into()));
            }
            got_init = true;
            continue;
        }
        match msg.command.as_str() {
            "open" => {
                let Some(id) = msg.channel().map(str::to_owned) else {
                    break Err(FrameError::BadControl("open without channel".into()));
                };
                if channels.contains_key(&id) {
                    break Err(FrameError::BadControl(format!(
                        "channel {id} is already open"
                    )));
                }
                let (in_tx, in_rx) = mpsc::unbounded_channel();
                let mut ch = Channel {
                    id: id.clone(),
                    open: msg,
                    inbound: in_rx,
                    out: out_tx.clone(),
                };
                let done = done_tx.clone();
                let task = tokio::spawn(async move {
                    let result = crate::channels::run(&mut ch).await;
                    let _ = ch
                        .out
                        .send(close_message(&ch.id, result).into_frame())
                        .await;
                    let _ = done.send(ch.id);
                });
                channels.insert(
                    id,
                    Open {
                        inbound: in_tx,
                        task,
                    },
                );
            }
            "close" => {
                if let Some(open) = msg.channel().and_then(|id| channels.remove(id)) {
                    open.task.abort();
                }
            }
            "done" => {
                if let Some(ch) = msg.channel().and_then(|id| channels.get(id)) {
                    let _ = ch.inbound.send(Input::Done);
                }
            }
            "options" => {
                if let Some(ch) = msg.channel().and_then(|id| channels.get(id)) {
                    let _ = ch.inbound.send(Input::Options(msg));
                }
            }
            "ping" if msg.channel().is_none() => {
                let mut pong = msg.clone();
                pong.command = "pong".into();
                pong.fields.insert("command".into(), "pong".into());
                let _ = out_tx.send(pong.into_frame()).await;
            }
            _ => {
                if let Some(ch) = msg.channel().and_then(|id| channels.get(id)) {
                    let _ = ch.inbound.send(Input::Control(msg));
                }
            }
        }
    };

    for (_, open) in channels.drain() {
        open.task.abort();
    }
    if let Err(e) = &result {
        let m = Message::new("close")
            .with("problem", e.problem())
            .with("message", e.to_string());
        let _ = out_tx.send(m.into_frame()).await;
    }
    drop(out_tx);
    let _ = writer.await;
    result
}

fn close_message(id: &str, result: ChannelResult) -> Message {
    let mut m = control::close(id, None);
    match result {
        Ok(extra) => m.fields.extend(extra),
        Err(ChannelError {
            problem: p,
            message,
            extra,
        }) => {
            m.fields.extend(extra);
            m.fields.insert("problem".into(), p.into());
            if let Some(text) = message {
                m.fields.insert("message".into(), text.into());
            }
        }
    }
    m
}
