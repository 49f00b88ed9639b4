use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The largest frame ferry accepts (channel name, newline and payload): 128 MiB.
///
/// Anything above is a protocol error rather than an allocation.
pub const MAX_FRAME_SIZE: usize = 128 * 1024 * 1024;

/// A size line longer than this many digits is a protocol error.
pub const MAX_SIZE_DIGITS: usize = 10;

/// One message: a channel id (empty for the control channel) and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub channel: String,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(channel: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Frame {
            channel: channel.into(),
            payload: payload.into(),
        }
    }

    /// A control message (channel `""`) carrying `message` serialised as JSON.
    pub fn control(message: &serde_json::Value) -> Self {
        let payload = serde_json::to_vec(message).expect("a JSON value always serialises");
        Frame::new("", payload)
    }

    pub fn is_control(&self) -> bool {
        self.channel.is_empty()
    }

    /// Parse the payload of a control frame as a JSON object with a string `command`.
    pub fn parse_control(&self) -> Result<crate::control::Message, FrameError> {
        crate::control::Message::parse(&self.payload)
    }

    /// The whole frame as it goes on the wire.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        encode(&self.channel, &self.payload, &mut buf);
        buf.freeze()
    }
}

/// Everything that can be wrong with the byte stream itself. Each is a `protocol-error`.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("size line is too long")]
    SizeTooLong,
    #[error("frame size is not an integer")]
    SizeNotInteger,
    #[error("frame of {0} bytes is larger than the maximum of {MAX_FRAME_SIZE}")]
    TooLarge(usize),
    #[error("frame has no channel line")]
    NoChannel,
    #[error("channel id is not valid UTF-8")]
    ChannelNotUtf8,
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("invalid control message: {0}")]
    BadControl(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The Cockpit `problem` code for this error.
    pub fn problem(&self) -> &'static str {
        match self {
            FrameError::Io(_) => "terminated",
            _ => crate::problem::PROTOCOL_ERROR,
        }
    }
}

/// Decoder and encoder for Cockpit frames, for use with `tokio_util::codec::Framed*`.
///
/// The decoder never allocates more than [`MAX_FRAME_SIZE`] for one frame, and only reserves
/// once the size line has been read in full.
#[derive(Debug, Default)]
pub struct FrameCodec {
    /// Size of the frame being read, once its size line has been consumed.
    pending: Option<usize>,
}

impl FrameCodec {
    pub fn new() -> Self {
        Self::default()
    }
}

fn parse_size(line: &[u8]) -> Result<usize, FrameError> {
    if line.is_empty() || !line.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::SizeNotInteger);
    }
    // At most MAX_SIZE_DIGITS digits: fits in usize on every platform ferry supports.
    let size = line
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    if size > MAX_FRAME_SIZE {
        return Err(FrameError::TooLarge(size));
    }
    Ok(size)
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let size = match self.pending {
            Some(size) => size,
            None => {
                let scan = src.len().min(MAX_SIZE_DIGITS + 1);
                match src[..scan].iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        let size = parse_size(&src[..nl])?;
                        src.advance(nl + 1);
                        self.pending = Some(size);
                        size
                    }
                    None if src.len() > MAX_SIZE_DIGITS => return Err(FrameError::SizeTooLong),
                    None => {
                        // Still waiting for the newline: reject garbage early.
                        if !src.iter().all(u8::is_ascii_digit) {
                            return Err(FrameError::SizeNotInteger);
                        }
                        return Ok(None);
                    }
                }
            }
        };
        if src.len() < size {
            src.reserve(size - src.len());
            return Ok(None);
        }
        self.pending = None;
        let mut body = src.split_to(size);
        let nl = body
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(FrameError::NoChannel)?;
        let channel = std::str::from_utf8(&body[..nl])
            .map_err(|_| FrameError::ChannelNotUtf8)?
            .to_owned();
        body.advance(nl + 1);
        Ok(Some(Frame {
            channel,
            payload: body.freeze(),
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && self.pending.is_none() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

fn encode(channel: &str, payload: &[u8], dst: &mut BytesMut) {
    let len = channel.len() + 1 + payload.len();
    let mut digits = itoa_buf(len);
    let digits = digits.as_str();
    dst.reserve(digits.len() + 1 + len);
    dst.put_slice(digits.as_bytes());
    dst.put_u8(b'\n');
    dst.put_slice(channel.as_bytes());
    dst.put_u8(b'\n');
    dst.put_slice(payload);
}

struct Digits([u8; 20], usize);

impl Digits {
    fn as_str(&mut self) -> &str {
        std::str::from_utf8(&self.0[self.1..]).expect("digits are ASCII")
    }
}

fn itoa_buf(mut n: usize) -> Digits {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits(buf, i)
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode(&frame.channel, &frame.payload, dst);
        Ok(())
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode(&frame.channel, &frame.payload, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode_eof(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let f = Frame::new("a5", "abc");
        assert_eq!(&f.to_bytes()[..], b"6\na5\nabc");
        assert_eq!(decode_all(b"6\na5\nabc").unwrap(), vec![f]);
    }

    #[test]
    fn byte_at_a_time() {
        let wire = b"6\na5\nabc3\n\n{}";
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in wire {
            buf.put_u8(*b);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out.len(), 2);
        assert!(out[1].is_control());
        assert_eq!(&out[1].payload[..], b"{}");
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(matches!(
            decode_all(b"12345678901\n"),
            Err(FrameError::SizeTooLong)
        ));
        assert!(matches!(
            decode_all(b"99999999999"),
            Err(FrameError::SizeTooLong)
        ));
        assert!(matches!(
            decode_all(b"x\n"),
            Err(FrameError::SizeNotInteger)
        ));
        assert!(matches!(decode_all(b"1x"), Err(FrameError::SizeNotInteger)));
        assert!(matches!(decode_all(b"\n"), Err(FrameError::SizeNotInteger)));
        assert!(matches!(
            decode_all(b"9999999999\n"),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(decode_all(b"3\nabc"), Err(FrameError::NoChannel)));
        assert!(matches!(decode_all(b"5\nab"), Err(FrameError::Truncated)));
    }
}
