//! Passing frames between the bridge's peer and the bridge of the next hop, unchanged.
//!
//! The relay reads whole frames in both directions (so that it can speak up at a frame
//! boundary) and keeps the ids of the channels that are open through it. When the next hop
//! ends, each of those channels is closed with `terminated`, and then the transport.

use std::cell::RefCell;
use std::collections::BTreeSet;

use ferry_protocol::control::{self, Message};
use ferry_protocol::{problem, Frame, FrameCodec, FrameError};
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};

/// How long the next hop may take to end once its input is closed.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Which direction a frame travels.
#[derive(Clone, Copy)]
enum Way {
    Down,
    Up,
}

/// Relay until either side ends. `up_in`/`up_out` are this bridge's own transport,
/// `down_in`/`down_out` the next hop's stdout and stdin.
pub(crate) async fn run<R, W, DR, DW>(
    up_in: FramedRead<R, FrameCodec>,
    up_out: W,
    down_in: DR,
    down_out: DW,
) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    DR: AsyncRead + Unpin,
    DW: AsyncWrite + Unpin,
{
    let open = RefCell::new(BTreeSet::new());
    let mut up_sink = FramedWrite::new(up_out, FrameCodec::new());
    let down_sink = FramedWrite::new(down_out, FrameCodec::new());
    let mut down_frames = FramedRead::new(down_in, FrameCodec::new());

    let (result, next_hop_ended) = {
        let downward = async {
            let mut sink = down_sink;
            let result = forward(up_in, &mut sink, &open, Way::Down).await;
            // The peer is gone (or broke the protocol): the next hop's input ends (closing
            // the pipe takes dropping it), and the next hop follows.
            drop(sink);
            result
        };
        let upward = forward(&mut down_frames, &mut up_sink, &open, Way::Up);
        tokio::pin!(downward, upward);
        tokio::select! {
            r = &mut upward => (r, true),
            r = &mut downward => match tokio::time::timeout(DRAIN, &mut upward).await {
                // The next hop said its last words after its input ended: pass them on.
                Ok(up) => (r.and(up), false),
                Err(_) => (r, false),
            },
        }
    };
    if next_hop_ended {
        let ids = std::mem::take(&mut *open.borrow_mut());
        let why = "the next hop of the route ended";
        for id in ids {
            let close = control::close(&id, Some(problem::TERMINATED)).with("message", why);
            if up_sink.send(close.into_frame()).await.is_err() {
                break;
            }
        }
        let close = Message::new("close")
            .with("problem", problem::TERMINATED)
            .with("message", why);
        let _ = up_sink.send(close.into_frame()).await;
    }
    result
}

/// Copy frames from `from` to `to`, flushing whenever nothing more is ready, and note opened
/// and closed channels in `open`. Ends at the end of `from`.
async fn forward<S, K>(
    mut from: S,
    to: &mut K,
    open: &RefCell<BTreeSet<String>>,
    way: Way,
) -> Result<(), FrameError>
where
    S: Stream<Item = Result<Frame, FrameError>> + Unpin,
    K: Sink<Frame, Error = FrameError> + Unpin,
{
    while let Some(frame) = from.next().await {
        let frame = frame?;
        note(&frame, open, way);
        to.feed(frame).await?;
        // Take whatever else is ready before paying for a flush.
        while let Some(Some(frame)) = from.next().now_or_never() {
            let frame = frame?;
            note(&frame, open, way);
            to.feed(frame).await?;
        }
        to.flush().await?;
    }
    to.flush().await
}

/// Track the channels that are open through the relay.
fn note(frame: &Frame, open: &RefCell<BTreeSet<String>>, way: Way) {
    if !frame.is_control() {
        return;
    }
    let Ok(msg) = frame.parse_control() else {
        return;
    };
    let Some(id) = msg.channel() else {
        return;
    };
    match (msg.command.as_str(), way) {
        ("open", Way::Down) => {
            open.borrow_mut().insert(id.to_owned());
        }
        ("close", _) => {
            open.borrow_mut().remove(id);
        }
        _ => {}
    }
}
