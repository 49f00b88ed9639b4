//! Self-replication: the bridge starts the next hop of a route.
//!
//! The launcher sends an image over the first hop only. When a route has more hops, it sends
//! the bridge at the end of the first one a `ferry-hop` request (see `ferry_protocol::hop`)
//! as the first message, before any `init`. That bridge runs the next hop's command (an argv,
//! no shell) with the same stage1 loader, answers its handshake with `ferry_stage1::send`,
//! sends its own executable ([`image::SelfImage`]) if the far side has no verified copy
//! cached, reports the outcome, and from then on relays frames unchanged ([`relay`]). The
//! launcher repeats this for every further hop, through the relays, so each bridge only ever
//! starts the hop right after it.

mod image;
mod relay;

pub(crate) use image::own_image;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_protocol::control::Message;
use ferry_protocol::hop::{reason, HOP};
use ferry_protocol::{problem, Frame, FrameCodec, FrameError};
use ferry_stage1::{Invocation, Stage1Error};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio_util::codec::FramedRead;

use image::SelfImage;

/// How long the next hop's loader may take to run a bridge (start-up, probing, the image).
const HANDSHAKE: Duration = Duration::from_secs(60);

/// How much of the next hop's stderr is kept for a failure report (its last bytes).
const STDERR_TAIL: usize = 4096;

/// Is this frame a `ferry-hop` request?
pub(crate) fn is_request(frame: &Frame) -> bool {
    // Cheap test first: this runs on the first frame of every session.
    frame.is_control()
        && frame
            .payload
            .windows(HOP.len())
            .any(|w| w == HOP.as_bytes())
        && frame.parse_control().is_ok_and(|m| m.command == HOP)
}

/// What a `ferry-hop` request asks for.
struct Request {
    argv: Vec<String>,
    invocation: Invocation,
}

impl Request {
    fn parse(msg: &Message) -> Result<Request, String> {
        let argv: Vec<String> = msg
            .get("argv")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(str::to_owned))
                    .collect()
            })
            .filter(|a: &Vec<String>| !a.is_empty())
            .ok_or("\"argv\" must be a non-empty list of strings")?;
        if msg.get("argv").and_then(|v| v.as_array()).map(Vec::len) != Some(argv.len()) {
            return Err("\"argv\" must be a non-empty list of strings".into());
        }
        let nonce = msg
            .str("nonce")
            .filter(|n| !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or("\"nonce\" must be hex digits")?
            .to_owned();
        let images: Vec<(String, String)> = msg
            .get("images")
            .and_then(|v| v.as_object())
            .ok_or("\"images\" must be an object of arch: sha256")?
            .iter()
            .filter_map(|(arch, sha)| Some((arch.clone(), sha.as_str()?.to_owned())))
            .collect();
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if images.is_empty() || !images.iter().all(|(a, s)| plain(a) && plain(s)) {
            return Err("\"images\" must be an object of arch: sha256".into());
        }
        Ok(Request {
            argv,
            invocation: Invocation { nonce, images },
        })
    }
}

/// A failed hop, as reported upstream.
fn failure(reason: &str, problem: &str, message: impl Into<String>) -> Message {
    Message::new(HOP)
        .with("problem", problem)
        .with("reason", reason)
        .with("message", message.into())
}

/// Write one frame to the peer, now.
async fn say<W: AsyncWrite + Unpin>(output: &mut W, msg: Message) -> Result<(), FrameError> {
    output.write_all(&msg.into_frame().to_bytes()).await?;
    output.flush().await?;
    Ok(())
}

/// A bridge started on the next hop: its frames come next on `reader`.
pub(crate) struct Started {
    pub child: tokio::process::Child,
    pub reader: BufReader<tokio::process::ChildStdout>,
    pub writer: tokio::process::ChildStdin,
    pub booted: ferry_stage1::Booted,
}

/// Run `argv` (no shell), drive its loader with `invocation`, and send this bridge's own image
/// if the far side asks for it. On failure, the `ferry-hop` reply that says why (with the
/// hop's exit status and the end of its stderr).
pub(crate) async fn start(argv: &[String], invocation: &Invocation) -> Result<Started, Message> {
    let Some((program, args)) = argv.split_first() else {
        return Err(failure(
            reason::PROTOCOL,
            problem::PROTOCOL_ERROR,
            "empty argv",
        ));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            crate::process::restore_fd_limit_in_child();
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Err(failure(
                reason::SPAWN,
                problem::NO_COCKPIT,
                format!("{program}: {e}"),
            )
            .with("not-found", e.kind() == std::io::ErrorKind::NotFound));
        }
    };
    let (Some(mut writer), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(failure(
            reason::SPAWN,
            problem::INTERNAL_ERROR,
            "no pipes to the hop",
        ));
    };
    let tail = Arc::new(Mutex::new(Vec::new()));
    let stderr_done = tokio::spawn(pass_stderr(stderr, tail.clone()));
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let source = SelfImage {
        offered: invocation.images.clone(),
    };
    let sent = tokio::time::timeout(
        HANDSHAKE,
        ferry_stage1::send(
            invocation,
            &mut reader,
            &mut writer,
            &source,
            &mut |_, _| {},
        ),
    )
    .await;
    match sent {
        Ok(Ok(booted)) => Ok(Started {
            child,
            reader,
            writer,
            booted,
        }),
        Ok(Err(err)) => {
            let mut msg = stage1_failure(err);
            drop(writer);
            drop(reader);
            // The hop's own words and status say why it ended (not allowed, no such user, ...).
            if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(5), child.wait()).await
            {
                for (k, v) in crate::process::exit_fields(status) {
                    msg = msg.with(&k, v);
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), stderr_done).await;
            let text = String::from_utf8_lossy(&tail.lock().unwrap_or_else(|e| e.into_inner()))
                .into_owned();
            Err(msg.with("stderr", text))
        }
        Err(_) => Err(failure(
            reason::TIMEOUT,
            problem::TIMEOUT,
            format!("the loader on the next hop did not answer within {HANDSHAKE:?}"),
        )),
    }
}

/// Serve a `ferry-hop` request: start the next hop, report, relay. Returns when either side
/// has ended; a failed hop has been reported to the peer by then.
pub(crate) async fn serve<R, W>(
    request: Message,
    upstream: FramedRead<R, FrameCodec>,
    mut output: W,
) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let request = match Request::parse(&request) {
        Ok(r) => r,
        Err(why) => {
            let msg = failure(reason::PROTOCOL, problem::PROTOCOL_ERROR, why);
            return say(&mut output, msg).await;
        }
    };
    let Started {
        mut child,
        reader,
        writer,
        booted,
    } = match start(&request.argv, &request.invocation).await {
        Ok(started) => started,
        Err(msg) => return say(&mut output, msg).await,
    };
    let ready = Message::new(HOP)
        .with("arch", booted.arch)
        .with("cached", booted.cached)
        .with("payload-bytes", booted.payload_bytes)
        .with("dir", booted.dir);
    say(&mut output, ready).await?;
    let result = relay::run(upstream, output, reader, writer).await;
    // Whatever is left of the hop goes with us (kill_on_drop); give it a moment to end itself.
    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    result
}

/// Map a loader failure to a failed `ferry-hop` reply.
fn stage1_failure(err: Stage1Error) -> Message {
    let text = err.to_string();
    let (why, problem, detail) = match err {
        Stage1Error::UnsupportedArch(arch) => (reason::ARCH, problem::NO_COCKPIT, arch),
        Stage1Error::NoDirectory(tried) => (reason::DIR, problem::NO_COCKPIT, tried),
        Stage1Error::Corrupt(what) => (reason::CORRUPT, problem::INTERNAL_ERROR, what),
        Stage1Error::Tampered(what) => (reason::TAMPERED, problem::INTERNAL_ERROR, what),
        Stage1Error::NoSha256Tool => (reason::NOSUM, problem::NO_COCKPIT, String::new()),
        Stage1Error::Protocol(said) => (reason::PROTOCOL, problem::PROTOCOL_ERROR, said),
        Stage1Error::Io(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            (reason::ARCH, problem::NO_COCKPIT, e.to_string())
        }
        Stage1Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            (reason::SELF_IMAGE, problem::INTERNAL_ERROR, e.to_string())
        }
        Stage1Error::Closed { .. } | Stage1Error::Io(_) => {
            (reason::CLOSED, problem::TERMINATED, String::new())
        }
    };
    failure(why, problem, text).with("detail", detail)
}

/// Pass the hop's stderr on to ours, keeping its last [`STDERR_TAIL`] bytes.
async fn pass_stderr<E: AsyncRead + Unpin>(mut stderr: E, tail: Arc<Mutex<Vec<u8>>>) {
    let mut ours = tokio::io::stderr();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        {
            let mut kept = tail.lock().unwrap_or_else(|e| e.into_inner());
            kept.extend_from_slice(&buf[..n]);
            let excess = kept.len().saturating_sub(STDERR_TAIL);
            kept.drain(..excess);
        }
        let _ = ours.write_all(&buf[..n]).await;
        let _ = ours.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(json: serde_json::Value) -> Message {
        Message::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn parses_a_request() {
        let r = Request::parse(&msg(serde_json::json!({
            "command": HOP, "argv": ["sudo", "-n", "sh"], "nonce": "00ff",
            "images": {"x86_64": "ab12"}
        })))
        .unwrap();
        assert_eq!(r.argv, ["sudo", "-n", "sh"]);
        assert_eq!(r.invocation.nonce, "00ff");
        assert_eq!(r.invocation.images, [("x86_64".into(), "ab12".into())]);
    }

    #[test]
    fn refuses_malformed_requests() {
        for bad in [
            serde_json::json!({"command": HOP, "argv": [], "nonce": "00", "images": {"a": "b"}}),
            serde_json::json!({"command": HOP, "argv": ["x", 1], "nonce": "00", "images": {"a": "b"}}),
            serde_json::json!({"command": HOP, "argv": ["x"], "nonce": "0 0", "images": {"a": "b"}}),
            serde_json::json!({"command": HOP, "argv": ["x"], "nonce": "00", "images": {}}),
            serde_json::json!({"command": HOP, "argv": ["x"], "nonce": "00", "images": {"a": "b c"}}),
        ] {
            assert!(Request::parse(&msg(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn recognises_requests() {
        let hop = Message::new(HOP).into_frame();
        assert!(is_request(&hop));
        assert!(!is_request(&Message::new("init").into_frame()));
        assert!(!is_request(&Frame::new(
            "1",
            bytes::Bytes::from_static(b"ferry-hop")
        )));
    }
}
