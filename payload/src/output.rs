//! The writer task of the frame transport: takes frames off the output queue and writes them
//! with vectored writes, several frames per call, without copying data payloads.
//!
//! Each round takes what is queued (up to [`BATCH`] frames), formats the size lines and
//! channel ids (and small payloads, such as control messages) into one scratch buffer, and
//! writes those pieces and the large payloads in place with `writev` until all went out. Only
//! then are the frames dropped, which lets the channels reuse their read buffers.
//!
//! A [`Splice`] ends a round: its size line and channel id go out with the round, then its
//! payload moves from the channel's pipe into the output pipe with `splice(2)`.

use std::io::IoSlice;
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use ferry_protocol::{Frame, FrameError};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::fdio::Fd;

/// What goes into the output queue.
#[derive(Debug)]
pub(crate) enum Out {
    Frame(Frame),
    Splice(Splice),
}

impl From<Frame> for Out {
    fn from(frame: Frame) -> Self {
        Out::Frame(frame)
    }
}

/// A data frame whose payload is `len` bytes waiting in the pipe `from`.
#[derive(Debug)]
pub(crate) struct Splice {
    pub channel: String,
    pub from: Arc<OwnedFd>,
    pub len: usize,
    /// Told whether the payload went out as it was (`false`: the pipe ran dry and the frame
    /// was filled up with zeros).
    pub done: oneshot::Sender<bool>,
}

/// Frames written per round at most.
const BATCH: usize = 64;

/// A round takes no more frames once it holds this many bytes: frames taken off the queue
/// make room for others, so this bounds what the writer adds to the queue's memory.
const ROUND_BYTES: usize = 1024 * 1024;

/// Payloads up to this size are copied next to their header rather than written in place.
const SMALL: usize = 1024;

/// One piece of a round: bytes of the scratch buffer, or the payload of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Scratch(Range<usize>),
    Payload(usize),
}

/// A round of frames being written.
#[derive(Default)]
struct Round {
    frames: Vec<Frame>,
    scratch: Vec<u8>,
    pieces: Vec<Piece>,
    /// Bytes of the round already written.
    written: usize,
    /// Bytes of the round.
    total: usize,
}

impl Round {
    /// The size line and channel id of a frame with `len` bytes of payload.
    fn push_header(&mut self, channel: &str, len: usize) {
        let start = self.scratch.len();
        push_decimal(&mut self.scratch, channel.len() + 1 + len);
        self.scratch.push(b'\n');
        self.scratch.extend_from_slice(channel.as_bytes());
        self.scratch.push(b'\n');
        self.push_scratch(start);
    }

    /// Scratch bytes from `start` on are the next piece.
    fn push_scratch(&mut self, start: usize) {
        let end = self.scratch.len();
        self.total += end - start;
        // Scratch bytes right after scratch bytes extend the previous piece.
        match self.pieces.last_mut() {
            Some(Piece::Scratch(r)) if r.end == start => r.end = end,
            _ => self.pieces.push(Piece::Scratch(start..end)),
        }
    }

    fn push(&mut self, frame: Frame) {
        let start = self.scratch.len();
        let len = frame.channel.len() + 1 + frame.payload.len();
        push_decimal(&mut self.scratch, len);
        self.scratch.push(b'\n');
        self.scratch.extend_from_slice(frame.channel.as_bytes());
        self.scratch.push(b'\n');
        let large = frame.payload.len() > SMALL;
        if !large {
            self.scratch.extend_from_slice(&frame.payload);
        }
        self.push_scratch(start);
        if large {
            self.total += frame.payload.len();
            self.pieces.push(Piece::Payload(self.frames.len()));
        }
        self.frames.push(frame);
    }

    fn bytes(&self, piece: &Piece) -> &[u8] {
        match piece {
            Piece::Scratch(r) => &self.scratch[r.clone()],
            Piece::Payload(i) => &self.frames[*i].payload,
        }
    }

    /// The slices still to be written, at most `MAX_IOV`.
    fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut skip = self.written;
        let mut slices = Vec::with_capacity(self.pieces.len().min(crate::fdio::MAX_IOV));
        for piece in &self.pieces {
            let bytes = self.bytes(piece);
            if skip >= bytes.len() {
                skip -= bytes.len();
                continue;
            }
            slices.push(IoSlice::new(&bytes[skip..]));
            skip = 0;
            if slices.len() == crate::fdio::MAX_IOV {
                break;
            }
        }
        slices
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.scratch.clear();
        self.pieces.clear();
        self.written = 0;
        self.total = 0;
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Write frames from the queue until it is closed and empty; flushes whenever the queue runs
/// empty. `pipe` is the output itself when it is a pipe: only then may the queue hold
/// [`Splice`]s.
pub(crate) async fn write_frames<W>(
    mut output: W,
    pipe: Option<Fd>,
    mut queue: mpsc::Receiver<Out>,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
{
    let mut round = Round::default();
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        let mut splice = None;
        while let Some(out) = next.take() {
            match out {
                Out::Frame(frame) => round.push(frame),
                Out::Splice(s) => {
                    round.push_header(&s.channel, s.len);
                    splice = Some(s);
                    break;
                }
            }
            if round.frames.len() < BATCH && round.total < ROUND_BYTES {
                next = queue.try_recv().ok();
            }
        }
        while round.written < round.total {
            let n = output.write_vectored(&round.slices()).await?;
            if n == 0 {
                return Err(FrameError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            round.written += n;
        }
        round.clear();
        if let Some(s) = splice {
            let moved = match &pipe {
                Some(pipe) => pipe.splice_from(s.from.as_raw_fd(), s.len).await?,
                None => 0,
            };
            if moved < s.len {
                // The frame's size is out already: keep the stream in step.
                write_zeros(&mut output, s.len - moved).await?;
            }
            let _ = s.done.send(moved == s.len);
        }
        if queue.is_empty() {
            output.flush().await?;
        }
    }
    output.shutdown().await?;
    Ok(())
}

async fn write_zeros<W: AsyncWrite + Unpin>(output: &mut W, mut len: usize) -> std::io::Result<()> {
    let zeros = [0u8; 4096];
    while len > 0 {
        let n = len.min(zeros.len());
        output.write_all(&zeros[..n]).await?;
        len -= n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(frames: &[Frame]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.to_bytes().to_vec()).collect()
    }

    #[test]
    fn a_round_is_the_frames_on_the_wire() {
        let frames = vec![
            Frame::new("", "{\"command\":\"ping\"}"),
            Frame::new("a", vec![7u8; 5000]),
            Frame::new("b", "x"),
            Frame::new("c", vec![9u8; 2000]),
            Frame::new("c", ""),
        ];
        let mut round = Round::default();
        for f in &frames {
            round.push(f.clone());
        }
        // Headers and small payloads are merged: scratch, a, scratch, c, scratch.
        assert_eq!(round.pieces.len(), 5);
        let expect = wire(&frames);
        assert_eq!(round.total, expect.len());
        let all: Vec<u8> = round.slices().iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(all, expect);
        // After a partial write the rest starts where the write stopped.
        for written in [1, 30, 5030, expect.len() - 1] {
            round.written = written;
            let rest: Vec<u8> = round.slices().iter().flat_map(|s| s.to_vec()).collect();
            assert_eq!(rest, &expect[written..]);
        }
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) },
            0
        );
        // SAFETY: both are fresh descriptors nothing else owns.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[tokio::test]
    async fn spliced_payloads_go_out_in_order_between_frames() {
        use std::io::{Read, Write};

        let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let (src_r, src_w) = pipe();
        std::fs::File::from(src_w.try_clone().unwrap())
            .write_all(&payload)
            .unwrap();
        let (out_r, out_w) = pipe();
        let out = Fd::new(out_w, false).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let writer = tokio::spawn(write_frames(out.clone(), Some(out), rx));

        let from = Arc::new(src_r);
        let (done, moved) = oneshot::channel();
        let (done_dry, moved_dry) = oneshot::channel();
        tx.send(Frame::new("", "{}").into()).await.unwrap();
        let splice = |channel: &str, len, done| {
            Out::Splice(Splice {
                channel: channel.into(),
                from: from.clone(),
                len,
                done,
            })
        };
        tx.send(splice("s", payload.len(), done)).await.unwrap();
        tx.send(Frame::new("a", "x").into()).await.unwrap();
        // Nothing is left in the pipe (its writer still open): zeros keep the stream in step.
        tx.send(splice("t", 100, done_dry)).await.unwrap();
        drop(tx);
        writer.await.unwrap().unwrap();
        assert!(moved.await.unwrap());
        assert!(!moved_dry.await.unwrap());
        drop(src_w);

        let expect = wire(&[
            Frame::new("", "{}"),
            Frame::new("s", payload),
            Frame::new("a", "x"),
            Frame::new("t", vec![0u8; 100]),
        ]);
        let mut got = Vec::new();
        std::fs::File::from(out_r).read_to_end(&mut got).unwrap();
        assert_eq!(got, expect);
    }

    #[tokio::test]
    async fn writes_everything_queued() {
        let (tx, rx) = mpsc::channel(4);
        let frames: Vec<Frame> = (0..100)
            .map(|i| Frame::new(format!("c{i}"), vec![i as u8; i * 97]))
            .collect();
        let expect = wire(&frames);
        let (mut r, w) = tokio::io::duplex(1000);
        let writer = tokio::spawn(write_frames(w, None, rx));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got)
                .await
                .unwrap();
            got
        });
        for f in frames {
            tx.send(f.into()).await.unwrap();
        }
        drop(tx);
        writer.await.unwrap().unwrap();
        assert_eq!(reader.await.unwrap(), expect);
    }
}
