//! A whole bridge session, `ferry_bridge::run`, on arbitrary input held in memory, with its
//! output discarded. Nothing may panic, and the session must end soon after its input does.
//!
//! The bridge would do what the input asks, so inputs that open a channel able to change the
//! machine or reach out (run a process, write a file, connect a socket, read a file that never
//! ends) are skipped: the harness decodes the input with the bridge's own codec first and lets
//! through only sessions whose channels are in [`SAFE_PAYLOADS`].

#![no_main]

use std::time::Duration;

use bytes::BytesMut;
use ferry_protocol::control::Message;
use ferry_protocol::FrameCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Payload types that only look (or echo) and end when the session does.
const SAFE_PAYLOADS: &[&str] = &[
    "echo", "null", "info", "fsinfo", "fslist1", "fswatch1", "metrics1",
];

/// How long one session may run after its input has ended.
const LIMIT: Duration = Duration::from_secs(2);

/// Whether every `open` in `data` (as the bridge will decode it) is for a safe payload type.
fn safe(data: &[u8]) -> bool {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(data);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) if frame.is_control() => {
                let Ok(msg) = Message::parse(&frame.payload) else {
                    // The bridge ends the session here.
                    return true;
                };
                // A payload that is missing or not a string is refused by the bridge.
                let payload = msg.get("payload").and_then(|p| p.as_str());
                if msg.command == "open" && payload.is_some_and(|p| !SAFE_PAYLOADS.contains(&p)) {
                    return false;
                }
            }
            Ok(Some(_)) => {}
            // End of input or a stream error: the bridge reads no further.
            Ok(None) | Err(_) => return true,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if !safe(data) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let input = data.to_vec();
    let finished = runtime.block_on(async move {
        let session = ferry_bridge::run(std::io::Cursor::new(input), tokio::io::sink());
        tokio::time::timeout(LIMIT, session).await.is_ok()
    });
    assert!(
        finished,
        "the session did not end within {LIMIT:?} of the end of its input"
    );
});
