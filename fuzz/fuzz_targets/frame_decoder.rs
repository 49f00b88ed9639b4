//! The frame decoder on arbitrary bytes, fed in arbitrary pieces, and every control payload
//! through `control::Message::parse`. Nothing may panic; the decoder must never return a frame
//! larger than its limit, and must make progress or ask for more input.

#![no_main]

use bytes::BytesMut;
use ferry_protocol::control::Message;
use ferry_protocol::{FrameCodec, MAX_FRAME_SIZE};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how the input is split into reads (1..=256 bytes each), so that
    // partial size lines and partial frames are exercised too.
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(split) + 1;
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.channel.len() + 1 + frame.payload.len() <= MAX_FRAME_SIZE);
                    assert!(!frame.channel.contains('\n'));
                    if frame.is_control() {
                        if let Ok(msg) = Message::parse(&frame.payload) {
                            // What parses must survive a round trip through JSON.
                            let again = Message::parse(&msg.clone().into_frame().payload)
                                .expect("a parsed message serialises to a parsable one");
                            assert_eq!(again, msg);
                        }
                    }
                }
                Ok(None) => break,
                // A stream error ends the stream; the session is over.
                Err(_) => return,
            }
            assert!(
                buf.len() < before,
                "decoder returned a frame without consuming input"
            );
        }
    }
    // Whatever is left must not decode at end of input without error or a frame.
    let _ = codec.decode_eof(&mut buf);
    // And control payloads on their own: every input is also tried as one.
    let _ = Message::parse(data);
});
