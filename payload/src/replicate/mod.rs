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
use ferry_protocol::hop::{reason, HOP, IMAGE_CHANNEL};
use ferry_protocol::{problem, Frame, FrameCodec, FrameError};
use ferry_stage1::{Codec, Invocation, Stage1Error};
use futures_util::StreamExt;
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
    /// An image for another architecture follows as data frames on `IMAGE_CHANNEL`:
    /// `(arch, codec, size)`.
    image: Option<(String, Codec, usize)>,
}

/// The largest image accepted from upstream.
const MAX_IMAGE: usize = 64 * 1024 * 1024;

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
        let image = match msg.get("image") {
            None => None,
            Some(v) => {
                let arch = v.get("arch").and_then(|a| a.as_str());
                let size = v.get("size").and_then(|s| s.as_u64());
                let codec = match v.get("codec").and_then(|c| c.as_str()) {
                    None | Some("raw") => Some(Codec::Raw),
                    Some("zstd") => Some(Codec::Zstd),
                    Some("gzip") => Some(Codec::Gzip),
                    Some(_) => None,
                };
                match (arch, codec, size) {
                    (Some(a), Some(c), Some(n))
                        if plain(a)
                            && (n as usize) <= MAX_IMAGE
                            && images.iter().any(|(x, _)| x == a) =>
                    {
                        Some((a.to_owned(), c, n as usize))
                    }
                    _ => {
                        return Err(
                            "\"image\" must be {arch, codec, size} of an offered image".into()
                        )
                    }
                }
            }
        };
        Ok(Request {
            argv,
            invocation: Invocation {
                nonce,
                images,
                timeout: ferry_stage1::DEFAULT_TIMEOUT,
            },
            image,
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
pub(crate) async fn start(
    argv: &[String],
    invocation: &Invocation,
    other: Option<(String, Codec, Vec<u8>)>,
) -> Result<Started, Message> {
    start_with(argv, &[], None, HANDSHAKE, invocation, other).await
}

/// [`start`] with extra environment variables, `stderr` as the hop's stderr instead of a
/// pipe that is passed on (then the failure report has no `stderr`: its reader has it), and
/// another bound on the whole handshake.
pub(crate) async fn start_with(
    argv: &[String],
    env: &[(&str, &std::ffi::OsStr)],
    stderr: Option<std::os::fd::OwnedFd>,
    handshake: Duration,
    invocation: &Invocation,
    other: Option<(String, Codec, Vec<u8>)>,
) -> Result<Started, Message> {
    let Some((program, args)) = argv.split_first() else {
        return Err(failure(
            reason::PROTOCOL,
            problem::PROTOCOL_ERROR,
            "empty argv",
        ));
    };
    let mut command = Command::new(program);
    let stderr = match stderr {
        Some(fd) => std::process::Stdio::from(fd),
        None => std::process::Stdio::piped(),
    };
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
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
    let (Some(mut writer), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(failure(
            reason::SPAWN,
            problem::INTERNAL_ERROR,
            "no pipes to the hop",
        ));
    };
    let tail = Arc::new(Mutex::new(Vec::new()));
    let stderr_done = child
        .stderr
        .take()
        .map(|stderr| tokio::spawn(pass_stderr(stderr, tail.clone())));
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let source = SelfImage {
        offered: invocation.images.clone(),
        other,
    };
    let sent = tokio::time::timeout(
        handshake,
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
            if let Some(done) = stderr_done {
                let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
            }
            let text = String::from_utf8_lossy(&tail.lock().unwrap_or_else(|e| e.into_inner()))
                .into_owned();
            Err(msg.with("stderr", text))
        }
        Err(_) => Err(failure(
            reason::TIMEOUT,
            problem::TIMEOUT,
            format!("the loader on the next hop did not answer within {handshake:?}"),
        )),
    }
}

/// Serve a `ferry-hop` request: start the next hop, report, relay. Returns when either side
/// has ended. After a failed hop (reported to the peer) the next request is served, if the peer
/// sends one (with an image for another architecture, say); anything else ends it.
pub(crate) async fn serve<R, W>(
    mut request: Message,
    mut upstream: FramedRead<R, FrameCodec>,
    mut output: W,
) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        match attempt(&request, &mut upstream).await {
            Ok(Started {
                mut child,
                reader,
                writer,
                booted,
            }) => {
                let ready = Message::new(HOP)
                    .with("arch", booted.arch)
                    .with("cached", booted.cached)
                    .with("payload-bytes", booted.payload_bytes)
                    .with("dir", booted.dir);
                say(&mut output, ready).await?;
                let result = relay::run(upstream, output, reader, writer).await;
                // Whatever is left of the hop goes with us (kill_on_drop); give it a moment
                // to end itself.
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                return result;
            }
            Err(msg) => say(&mut output, msg).await?,
        }
        match upstream.next().await {
            Some(Ok(frame)) if is_request(&frame) => request = frame.parse_control()?,
            _ => return Ok(()),
        }
    }
}

/// One `ferry-hop` request: receive the image it announces, if any, and start the hop.
async fn attempt<R: AsyncRead + Unpin>(
    request: &Message,
    upstream: &mut FramedRead<R, FrameCodec>,
) -> Result<Started, Message> {
    let request = Request::parse(request)
        .map_err(|why| failure(reason::PROTOCOL, problem::PROTOCOL_ERROR, why))?;
    let other = match &request.image {
        None => None,
        Some((arch, codec, size)) => Some((
            arch.clone(),
            *codec,
            receive_image(upstream, arch, *codec, *size, &request).await?,
        )),
    };
    start(&request.argv, &request.invocation, other).await
}

/// Read an image of `size` bytes from data frames on `IMAGE_CHANNEL`. A raw one is checked
/// against the sha256 offered for `arch` here; an encoded one by the far side's loader, after
/// decoding (as every image is).
async fn receive_image<R: AsyncRead + Unpin>(
    upstream: &mut FramedRead<R, FrameCodec>,
    arch: &str,
    codec: Codec,
    size: usize,
    request: &Request,
) -> Result<Vec<u8>, Message> {
    let bad = |why: String| failure(reason::PROTOCOL, problem::PROTOCOL_ERROR, why);
    let mut image = Vec::with_capacity(size);
    while image.len() < size {
        match upstream.next().await {
            Some(Ok(frame)) if frame.channel == IMAGE_CHANNEL => {
                if image.len() + frame.payload.len() > size {
                    return Err(bad("the image is longer than announced".into()));
                }
                image.extend_from_slice(&frame.payload);
            }
            _ => return Err(bad("the image did not arrive".into())),
        }
    }
    let wanted = request
        .invocation
        .images
        .iter()
        .find(|(a, _)| a == arch)
        .map(|(_, sha)| sha.as_str());
    if codec == Codec::Raw && Some(image::sha256_hex(&image).as_str()) != wanted {
        return Err(failure(
            reason::CORRUPT,
            problem::INTERNAL_ERROR,
            format!("the {arch} image from upstream does not match its sha256"),
        ));
    }
    Ok(image)
}

/// Map a loader failure to a failed `ferry-hop` reply.
fn stage1_failure(err: Stage1Error) -> Message {
    let text = err.to_string();
    let (why, problem, detail) = match err {
        Stage1Error::UnsupportedArch(arch) => (reason::ARCH, problem::NO_COCKPIT, arch),
        Stage1Error::NoDirectory(tried) => (reason::DIR, problem::NO_COCKPIT, tried),
        Stage1Error::Corrupt(what) => (reason::CORRUPT, problem::INTERNAL_ERROR, what),
        Stage1Error::Tampered(what) => (reason::TAMPERED, problem::INTERNAL_ERROR, what),
        Stage1Error::MissingTool(tool) => (reason::TOOL, problem::NO_COCKPIT, tool),
        Stage1Error::NoSpace(dir) => (reason::SPACE, problem::NO_COCKPIT, dir),
        Stage1Error::ReadFailed(what) => (reason::CLOSED, problem::TERMINATED, what),
        Stage1Error::Timeout { .. } => (reason::TIMEOUT, problem::TIMEOUT, String::new()),
        Stage1Error::Protocol(said) => (reason::PROTOCOL, problem::PROTOCOL_ERROR, said),
        Stage1Error::Io(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            let text = e.to_string();
            let (arch, decoders) = text.split_once(' ').unwrap_or((&text, ""));
            return failure(
                reason::ARCH,
                problem::NO_COCKPIT,
                format!(
                    "the next hop is {arch}, and this bridge is {}",
                    std::env::consts::ARCH
                ),
            )
            .with("detail", arch)
            .with("decoders", decoders)
            .with("need-image", true);
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
