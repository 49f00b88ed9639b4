//! Self-replication, the launcher's side: every leg after the first is started by the bridge
//! at the end of the leg before it (see `ferry_protocol::hop` for the exchange).
//!
//! The launcher reads that bridge's `init`, sends it a `ferry-hop` request with the next leg's
//! complete argv (composed here, so the bridge needs to know nothing about hops), and reads the
//! outcome. On success the bridge relays from then on, and the next frame is the new bridge's
//! `init`: the loop goes on with it, and the client finally sees only the last bridge.

use std::time::Duration;

use ferry_protocol::control::Message;
use ferry_protocol::hop::{reason, HOP, IMAGE_CHANNEL};
use ferry_stage1::Invocation;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::transport::Ended;
use crate::{Images, LaunchError, Route, Session};

/// How long a bridge may take to answer (its own limit for the next hop's loader is 60 s).
const ANSWER: Duration = Duration::from_secs(90);

/// The largest control message read here (an `init` with its os-release, a hop's reply).
const MAX_CONTROL: usize = 1024 * 1024;

/// What starting one leg cost, for `--stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegStats {
    /// The leg as given (`sudo`, `podman:db`, ...).
    pub leg: String,
    pub arch: String,
    /// The far side ran a cached image; nothing was sent.
    pub cached: bool,
    /// Image bytes the bridge before it sent.
    pub payload_bytes: u64,
}

/// Start `leg` from the bridge at the end of `session`; afterwards `session` reads from the
/// new bridge (its `init` comes next).
pub(crate) async fn extend(
    session: &mut Session,
    leg: &Route,
    images: &Images,
) -> Result<LegStats, LaunchError> {
    let shown = leg.to_string();
    let init = read_control(&mut session.reader, &shown).await?;
    if init.command != "init" {
        return Err(LaunchError::Protocol(format!(
            "the bridge before {shown} began with {:?} instead of init",
            init.command
        )));
    }
    if let Some(problem) = init.problem() {
        return Err(LaunchError::Terminated(format!(
            "the bridge before {shown} could not start: {problem}: {}",
            init.str("message").unwrap_or("")
        )));
    }
    let mut reply = request(session, leg, images, None).await?;
    // The far side needs another architecture than the bridge's own: send that image along
    // (raw, as data frames) and ask again.
    if reply.bool("need-image") == Some(true) {
        let arch = reply.str("detail").unwrap_or("").to_owned();
        let decoders = reply.str("decoders").unwrap_or("").to_owned();
        if let Some(image) = images.get(&arch) {
            tracing::debug!(leg = %shown, arch, "sending the bridge an image for the next leg");
            reply = request(session, leg, images, Some((image, &decoders))).await?;
        }
    }
    if reply.problem().is_some() {
        return Err(failure(leg, &reply, images));
    }
    let stats = LegStats {
        leg: shown,
        arch: reply.str("arch").unwrap_or("").to_owned(),
        cached: reply.bool("cached").unwrap_or(false),
        payload_bytes: reply.u64("payload-bytes").unwrap_or(0),
    };
    tracing::info!(
        leg = %stats.leg,
        arch = %stats.arch,
        cached = stats.cached,
        payload_bytes = stats.payload_bytes,
        "bridge starting on the next leg"
    );
    Ok(stats)
}

/// Send one `ferry-hop` request for `leg` (with an image for a far side of another
/// architecture than the bridge's, encoded for the far side's `decoders`, e.g. `zstd,gzip`) and
/// read the reply.
async fn request(
    session: &mut Session,
    leg: &Route,
    images: &Images,
    image: Option<(&crate::Image, &str)>,
) -> Result<Message, LaunchError> {
    let shown = leg.to_string();
    let invocation = Invocation::new(images.offers());
    let argv = leg
        .launch(invocation.argv())
        .map_err(|e| LaunchError::BadRoute(e.to_string()))?
        .into_argv();
    let offered: serde_json::Map<String, serde_json::Value> = invocation
        .images
        .iter()
        .map(|(arch, sha)| (arch.clone(), sha.clone().into()))
        .collect();
    let mut request = Message::new(HOP)
        .with("argv", argv)
        .with("nonce", invocation.nonce.clone())
        .with("images", offered);
    let raw = match image {
        Some((image, decoders)) => {
            let (codec, bytes) = encode(image, decoders)
                .map_err(|e| LaunchError::Internal(format!("the {} image: {e}", image.arch)))?;
            request = request.with(
                "image",
                serde_json::json!({"arch": image.arch, "codec": codec, "size": bytes.len()}),
            );
            bytes
        }
        None => Vec::new(),
    };
    tracing::debug!(leg = %shown, "asking the bridge to start the next leg");
    let sent = async {
        session
            .writer
            .write_all(&request.into_frame().to_bytes())
            .await?;
        for chunk in raw.chunks(64 * 1024) {
            let frame =
                ferry_protocol::Frame::new(IMAGE_CHANNEL, bytes::Bytes::copy_from_slice(chunk));
            session.writer.write_all(&frame.to_bytes()).await?;
        }
        session.writer.flush().await
    }
    .await;
    if let Err(e) = sent {
        return Err(LaunchError::Terminated(format!(
            "lost the bridge before {shown}: {e}"
        )));
    }
    let reply = read_control(&mut session.reader, &shown).await?;
    if reply.command != HOP {
        return Err(LaunchError::Protocol(format!(
            "the bridge before {shown} answered {:?} to ferry-hop",
            reply.command
        )));
    }
    Ok(reply)
}

/// `image` encoded for a loader with these `decoders` (`zstd,gzip`, ...): zstd as embedded,
/// else gzip, else raw.
fn encode(image: &crate::Image, decoders: &str) -> std::io::Result<(&'static str, Vec<u8>)> {
    let has = |tool: &str| decoders.split(',').any(|d| d == tool);
    if has("zstd") {
        return Ok(("zstd", image.zstd.to_vec()));
    }
    let raw = image.raw()?;
    if has("gzip") {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        gz.write_all(&raw)?;
        return Ok(("gzip", gz.finish()?));
    }
    Ok(("raw", raw))
}

/// The failure a bridge reported for `leg`, named as well as the hop's own words allow.
fn failure(leg: &Route, reply: &Message, images: &Images) -> LaunchError {
    let shown = leg.to_string();
    let message = reply.str("message").unwrap_or("").to_owned();
    let detail = reply.str("detail").unwrap_or("").to_owned();
    match reply.str("reason").unwrap_or("") {
        reason::ARCH => LaunchError::UnsupportedArch {
            arch: detail,
            available: images.arches().join(", "),
            hint: "a bridge starts the next hop with its own image only".into(),
        },
        reason::DIR => LaunchError::NoDirectory { tried: detail },
        reason::TOOL => LaunchError::MissingTool(format!("{shown}: {message}")),
        reason::SPACE => LaunchError::NoSpace { dir: detail },
        reason::CORRUPT | reason::TAMPERED | reason::SELF_IMAGE => {
            LaunchError::Verification(format!("{shown}: {message}"))
        }
        reason::PROTOCOL => LaunchError::Protocol(format!("{shown}: {message}")),
        reason::SPAWN if reply.bool("not-found") == Some(true) => LaunchError::NoShell(format!(
            "{message}: program not found on the machine before {shown}"
        )),
        reason::SPAWN => LaunchError::NoShell(format!("{shown}: cannot start: {message}")),
        reason::TIMEOUT => LaunchError::Terminated(format!("{shown}: {message}")),
        _ => {
            let ended = match (reply.i64("exit-status"), reply.str("exit-signal")) {
                (Some(code), _) => Ended::Code(code as i32),
                (None, Some(sig)) => {
                    Ended::Signal(ferry_protocol::signal::number(sig).unwrap_or(0))
                }
                _ => Ended::Unknown,
            };
            let stderr = reply.str("stderr").unwrap_or("");
            leg.door()
                .and_then(|door| door.failure(stderr, ended))
                .unwrap_or_else(|| ended_before_bridge(&shown, stderr, ended))
        }
    }
}

/// A leg ended before its bridge ran, for a reason ferry cannot name: say what it said.
pub(crate) fn ended_before_bridge(shown: &str, stderr: &str, ended: Ended) -> LaunchError {
    let status = match ended {
        Ended::Code(c) => format!("exit status {c}"),
        Ended::Signal(s) => format!("signal {s}"),
        Ended::Unknown => "no status".into(),
    };
    let said = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    match ended {
        Ended::Code(127) => LaunchError::NoShell(format!(
            "{shown}: no `sh` there, or a program of the hop was not found ({status}){said}"
        )),
        _ => LaunchError::Terminated(format!(
            "{shown} ended before its bridge started ({status}){said}"
        )),
    }
}

/// Read one control message from the bridge, within [`ANSWER`].
async fn read_control<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    shown: &str,
) -> Result<Message, LaunchError> {
    let read = async {
        let mut size_line = Vec::new();
        let n = (&mut *reader)
            .take(12)
            .read_until(b'\n', &mut size_line)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        let size: usize = std::str::from_utf8(&size_line)
            .ok()
            .and_then(|s| s.trim_end().parse().ok())
            .filter(|s| *s <= MAX_CONTROL)
            .ok_or_else(|| std::io::Error::other("bad frame size"))?;
        let mut frame = vec![0u8; size];
        reader.read_exact(&mut frame).await?;
        Ok::<_, std::io::Error>(Some(frame))
    };
    let frame = match tokio::time::timeout(ANSWER, read).await {
        Err(_) => {
            return Err(LaunchError::Terminated(format!(
                "the bridge before {shown} did not answer within {ANSWER:?}"
            )))
        }
        Ok(Err(e)) => {
            return Err(LaunchError::Terminated(format!(
                "lost the bridge before {shown}: {e}"
            )))
        }
        Ok(Ok(None)) => {
            return Err(LaunchError::Terminated(format!(
                "the route ended before {shown} started"
            )))
        }
        Ok(Ok(Some(frame))) => frame,
    };
    let Some(payload) = frame.strip_prefix(b"\n") else {
        return Err(LaunchError::Protocol(format!(
            "the bridge before {shown} sent data instead of a control message"
        )));
    };
    Message::parse(payload).map_err(|e| LaunchError::Protocol(e.to_string()))
}
