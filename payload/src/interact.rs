//! `--interact=BOUNDARY`: the protocol in a form a person can type.
//!
//! Each message is `CHANNEL\nPAYLOAD` (an empty first line is the control channel) followed by
//! `\nBOUNDARY\n`, in both directions. A message that is not followed by a boundary when the
//! input ends is ignored, as the reference bridge does.

use bytes::{Buf, BufMut, BytesMut};
use ferry_protocol::{Frame, FrameError, MAX_FRAME_SIZE};
use tokio_util::codec::{Decoder, Encoder};

/// Decoder and encoder for the `--interact` form.
#[derive(Debug, Clone)]
pub struct InteractCodec {
    /// `\nBOUNDARY\n`
    delimiter: Vec<u8>,
    /// How far the input was already searched for the delimiter.
    scanned: usize,
}

impl InteractCodec {
    pub fn new(boundary: &str) -> Self {
        let mut delimiter = Vec::with_capacity(boundary.len() + 2);
        delimiter.push(b'\n');
        delimiter.extend_from_slice(boundary.as_bytes());
        delimiter.push(b'\n');
        InteractCodec {
            delimiter,
            scanned: 0,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Decoder for InteractCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            // Resume the search where it stopped, allowing for a delimiter that straddles.
            let start = self.scanned.saturating_sub(self.delimiter.len() - 1);
            let Some(at) = find(&src[start..], &self.delimiter).map(|i| i + start) else {
                self.scanned = src.len();
                if src.len() > MAX_FRAME_SIZE {
                    return Err(FrameError::TooLarge(src.len()));
                }
                return Ok(None);
            };
            self.scanned = 0;
            let mut message = src.split_to(at);
            src.advance(self.delimiter.len());
            if message.is_empty() {
                continue;
            }
            if message.len() > MAX_FRAME_SIZE {
                return Err(FrameError::TooLarge(message.len()));
            }
            let nl = message
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(message.len());
            let channel = std::str::from_utf8(&message[..nl])
                .map_err(|_| FrameError::ChannelNotUtf8)?
                .to_owned();
            message.advance((nl + 1).min(message.len()));
            return Ok(Some(Frame {
                channel,
                payload: message.freeze(),
            }));
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let frame = self.decode(src)?;
        if frame.is_none() {
            // An unterminated last message is dropped.
            src.clear();
            self.scanned = 0;
        }
        Ok(frame)
    }
}

impl Encoder<Frame> for InteractCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.reserve(frame.channel.len() + frame.payload.len() + self.delimiter.len() + 1);
        dst.put_slice(frame.channel.as_bytes());
        dst.put_u8(b'\n');
        dst.put_slice(&frame.payload);
        dst.put_slice(&self.delimiter);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut InteractCodec, input: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn splits_messages_on_the_boundary() {
        let mut c = InteractCodec::new("---");
        let input = b"\n{\"command\":\"open\",\"channel\":\"a\",\"payload\":\"echo\"}\n---\na\nhello\nworld\n---\n";
        let frames = decode_all(&mut c, input);
        assert_eq!(frames.len(), 2);
        assert!(frames[0].is_control());
        assert_eq!(
            &frames[0].payload[..],
            br#"{"command":"open","channel":"a","payload":"echo"}"#
        );
        assert_eq!(frames[1], Frame::new("a", "hello\nworld"));
    }

    #[test]
    fn unterminated_and_empty_messages_are_dropped() {
        let mut c = InteractCodec::new("---");
        let frames = decode_all(&mut c, b"\n---\nb\nx\n---\n\n{\"command\":\"ping\"}\n");
        assert_eq!(frames, vec![Frame::new("b", "x")]);
        // A channel line alone is a message with an empty payload.
        let frames = decode_all(&mut c, b"zz\n---\n");
        assert_eq!(frames, vec![Frame::new("zz", "")]);
    }

    #[test]
    fn byte_at_a_time_with_a_lookalike_boundary() {
        let mut c = InteractCodec::new("BOUND");
        let input = b"a\nBOUN\nBOUNDX\nBOUND\nb\n\n---\n\nBOUND\n";
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in input {
            buf.put_u8(*b);
            while let Some(f) = c.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(
            out,
            vec![Frame::new("a", "BOUN\nBOUNDX"), Frame::new("b", "\n---\n")]
        );
    }

    #[test]
    fn encodes_in_the_same_form() {
        let mut c = InteractCodec::new("---");
        let mut buf = BytesMut::new();
        c.encode(Frame::new("", "{\"command\":\"pong\"}"), &mut buf)
            .unwrap();
        c.encode(Frame::new("a", "hi\n"), &mut buf).unwrap();
        assert_eq!(&buf[..], b"\n{\"command\":\"pong\"}\n---\na\nhi\n\n---\n");
        // What it writes, it reads back.
        let frames = decode_all(&mut InteractCodec::new("---"), &buf);
        assert_eq!(frames[1], Frame::new("a", "hi\n"));
    }
}
