//! Using a booted bridge: `run` (one command through a `stream` channel) and `connect`
//! (hand the protocol stream to the caller, byte for byte).

use bytes::Bytes;
use ferry_protocol::control::{self, Message};
use ferry_protocol::{Frame, FrameCodec};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::boot::{ended_early, GRACE};
use crate::{LaunchError, Session};

/// What a run cost, for `--stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub payload_bytes: u64,
    pub sent_bytes: u64,
    pub cached: bool,
    /// The legs after the first (started by the bridges, not by ferry).
    pub legs: Vec<crate::LegStats>,
}

impl Stats {
    pub fn to_json(&self) -> String {
        json!({
            "payload_bytes": self.payload_bytes,
            "sent_bytes": self.sent_bytes,
            "cached": self.cached,
            "legs": self.legs.iter().map(|l| json!({
                "leg": l.leg,
                "arch": l.arch,
                "cached": l.cached,
                "payload_bytes": l.payload_bytes,
            })).collect::<Vec<_>>(),
        })
        .to_string()
    }
}

/// The channel `run` uses for its command.
const CHANNEL: &str = "1";

/// Run `command` at the far end and relay stdin, stdout and stderr.
///
/// Returns the exit status ferry should exit with: the command's own, or 128+N for signal N.
pub async fn run(session: Session, command: &[String]) -> Result<(i32, Stats), LaunchError> {
    let Session {
        writer,
        reader,
        child,
        booted: _,
        meter,
    } = session;
    let mut frames = FramedRead::new(reader, FrameCodec::new());
    let mut sink = FramedWrite::new(writer, FrameCodec::new());

    // The bridge speaks first.
    let init = match frames.next().await {
        Some(Ok(frame)) if frame.is_control() => frame
            .parse_control()
            .map_err(|e| LaunchError::Protocol(e.to_string()))?,
        Some(Ok(_)) => return Err(LaunchError::Protocol("bridge sent data before init".into())),
        Some(Err(e)) => return Err(LaunchError::Protocol(e.to_string())),
        None => return Err(ended_early(child.finish(GRACE).await)),
    };
    if init.command != "init" {
        return Err(LaunchError::Protocol(format!(
            "bridge began with {:?} instead of init",
            init.command
        )));
    }
    if let Some(problem) = init.problem() {
        return Err(LaunchError::Terminated(format!(
            "the bridge could not start: {problem}: {}",
            init.str("message").unwrap_or("")
        )));
    }

    let open = control::open(CHANNEL, "stream")
        .with("spawn", json!(command))
        // stderr live through the bridge's own stderr, not collected into the `close`.
        .with("err", "inherit")
        .with("binary", "raw");
    for frame in [
        control::init().with("host", "localhost").into_frame(),
        open.into_frame(),
    ] {
        sink.send(frame)
            .await
            .map_err(|e| LaunchError::Terminated(format!("lost the bridge: {e}")))?;
    }

    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdin_open = true;
    let code = loop {
        tokio::select! {
            n = stdin.read(&mut buf), if stdin_open => {
                let frame = match n {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        control::done(CHANNEL).into_frame()
                    }
                    Ok(n) => Frame::new(CHANNEL, Bytes::copy_from_slice(&buf[..n])),
                };
                if sink.send(frame).await.is_err() {
                    stdin_open = false;
                }
            }
            frame = frames.next() => {
                let frame = match frame {
                    Some(Ok(f)) => f,
                    Some(Err(e)) => return Err(LaunchError::Protocol(e.to_string())),
                    None => return Err(LaunchError::Terminated(
                        "the bridge ended before the command finished".into())),
                };
                if frame.channel == CHANNEL {
                    if stdout.write_all(&frame.payload).await.is_err() {
                        // Our reader went away: stop the command as a pipeline would.
                        let _ = sink.send(control::close(CHANNEL, None).into_frame()).await;
                    }
                    let _ = stdout.flush().await;
                    continue;
                }
                if !frame.is_control() {
                    continue;
                }
                let msg = frame.parse_control().map_err(|e| LaunchError::Protocol(e.to_string()))?;
                match (msg.command.as_str(), msg.channel()) {
                    ("close", Some(CHANNEL)) => break exit_code(&msg, command),
                    ("close", None) => {
                        return Err(LaunchError::Protocol(format!(
                            "the bridge closed the connection: {}",
                            msg.problem().unwrap_or("no reason given")
                        )))
                    }
                    ("ping", _) => {
                        let _ = sink.send(msg.into_pong().into_frame()).await;
                    }
                    _ => {}
                }
            }
        }
    };
    let _ = stdout.flush().await;
    // End of our input: the bridge exits, and so does the route, unless something there holds
    // it open (a background job of a login script): then it is ended, as `ssh` would.
    let mut writer = sink.into_inner();
    let _ = writer.shutdown().await;
    drop(writer);
    drop(frames);
    let _ = child.finish(GRACE).await;
    Ok((code, meter.stats()))
}

fn exit_code(close: &Message, command: &[String]) -> i32 {
    if let Some(code) = close.i64("exit-status") {
        return code as i32;
    }
    if let Some(signal) = close.str("exit-signal") {
        return 128 + ferry_protocol::signal::number(signal).unwrap_or(0);
    }
    let program = command.first().map(String::as_str).unwrap_or("");
    match close.problem() {
        None => 0,
        Some(problem) => {
            let detail = close.str("message").unwrap_or(problem);
            let (what, code) = match problem {
                "not-found" => ("command not found on the remote", 127),
                "access-denied" => ("permission denied on the remote", 126),
                _ => ("could not run on the remote", 1),
            };
            eprintln!("ferry: {program}: {what} ({detail})");
            code
        }
    }
}

/// Hand the bridge's protocol stream to our stdin and stdout until either side ends.
///
/// Nothing is read from our stdin until the bridge has spoken (the handshake is lockstep),
/// except by the prompt relay while ssh connects: `pending` is what it read that was not an
/// answer, and it reaches the bridge first.
pub async fn connect(session: Session, pending: Vec<u8>) -> Result<(i32, Stats), LaunchError> {
    let Session {
        mut writer,
        mut reader,
        child,
        booted: _,
        meter,
    } = session;
    let first = reader
        .fill_buf()
        .await
        .map_err(|e| LaunchError::Terminated(format!("lost the bridge: {e}")))?;
    if first.is_empty() {
        return Err(ended_early(child.finish(GRACE).await));
    }
    let upstream = tokio::spawn(async move {
        if writer.write_all(&pending).await.is_err() {
            return;
        }
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut writer).await;
        let _ = writer.shutdown().await;
    });
    let mut stdout = tokio::io::stdout();
    let _ = tokio::io::copy(&mut reader, &mut stdout).await;
    let _ = stdout.flush().await;
    upstream.abort();
    let code = match child.finish(GRACE).await {
        crate::transport::Ended::Code(c) => c,
        _ => 0,
    };
    Ok((code, meter.stats()))
}
