//! Packages served from the machine ferry runs on, for a remote that has none (a host with
//! nothing but `sh`): as Cockpit's own launcher does (`beiboot.py`: `report-exists`, then a
//! `PackagesChannel` served locally), the web console's files then come from here while
//! everything else runs on the remote.
//!
//! ferry runs its own bridge for this machine's architecture locally (the embedded image,
//! unpacked into a private directory) and routes between the client and the two bridges,
//! frame by frame: an `open` of `http-stream1` with `internal: "packages"` goes to the local
//! bridge, with every later frame of that channel; everything else goes to the remote bridge.
//! The remote bridge's `init` gets the local bridge's `packages`. Channel-less control
//! messages of the local bridge (its `init`, pongs) are not the client's business and are
//! dropped.

use std::collections::HashSet;
use std::process::Stdio;

use bytes::BytesMut;
use ferry_protocol::control::Message;
use ferry_protocol::{Frame, FrameCodec};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::{Images, LaunchError, Session};

/// Where the packages channel is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PackagesFrom {
    /// The remote's own packages, or this machine's when the remote has none.
    #[default]
    Auto,
    /// Always this machine's.
    Local,
    /// Always the remote's.
    Remote,
}

impl std::str::FromStr for PackagesFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PackagesFrom::Auto),
            "local" => Ok(PackagesFrom::Local),
            "remote" => Ok(PackagesFrom::Remote),
            other => Err(format!("{other:?}: use auto, local or remote")),
        }
    }
}

/// Is this `open` one for the local bridge?
fn is_packages_open(msg: &Message) -> bool {
    msg.command == "open"
        && msg.str("payload") == Some("http-stream1")
        && msg.str("internal") == Some("packages")
}

/// Does the remote bridge's `init` list no packages?
fn has_no_packages(init: &Message) -> bool {
    match init.get("packages") {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Object(m)) => m.is_empty(),
        Some(_) => false,
    }
}

/// A bridge running on this machine, from the embedded image for its architecture.
struct LocalBridge {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl LocalBridge {
    fn start(images: &Images) -> Result<LocalBridge, LaunchError> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            LaunchError::Internal(format!("local bridge for packages: {what}: {e}"))
        };
        let arch = std::env::consts::ARCH;
        let image = images
            .get(arch)
            .ok_or_else(|| internal("no image", &arch))?;
        let raw = image.raw().map_err(|e| internal("unpack", &e))?;
        // A directory only this user can reach: nothing unverified, nothing another user
        // can swap.
        let dir = tempfile::Builder::new()
            .prefix("ferry-packages-")
            .tempdir()
            .map_err(|e| internal("directory", &e))?;
        let exe = dir.path().join("ferry-bridge");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o700)
                .open(&exe)
                .map_err(|e| internal("write", &e))?;
            std::io::Write::write_all(&mut f, &raw).map_err(|e| internal("write", &e))?;
        }
        let child = tokio::process::Command::new(&exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| internal("start", &e))?;
        Ok(LocalBridge { child, _dir: dir })
    }
}

/// Hand the protocol to our stdin and stdout like [`crate::connect`], serving the packages
/// channel from this machine when `from` says so (for `Auto`: when the remote's `init` lists
/// no packages). `pending` is what the client sent before (see [`crate::prompt`]).
///
/// # Errors
/// As [`crate::connect`]; `Internal` when the local bridge cannot start.
pub async fn connect(
    session: Session,
    pending: Vec<u8>,
    images: &Images,
    from: PackagesFrom,
) -> Result<(i32, crate::Stats), LaunchError> {
    let Session {
        writer,
        reader,
        child,
        booted,
        meter,
    } = session;
    let mut remote_in = FramedRead::new(reader, FrameCodec::new());
    // The remote bridge speaks first: its `init` decides.
    let first = match remote_in.next().await {
        Some(Ok(frame)) => frame,
        Some(Err(e)) => return Err(LaunchError::Protocol(e.to_string())),
        None => {
            return Err(crate::boot::ended_early(
                child.finish(crate::boot::GRACE).await,
            ))
        }
    };
    let init = first.parse_control().ok().filter(|m| m.command == "init");
    let local = match (&init, from) {
        (_, PackagesFrom::Remote) | (None, _) => false,
        // A bridge that could not start gets nothing routed to it.
        (Some(init), _) if init.problem().is_some() => false,
        (Some(_), PackagesFrom::Local) => true,
        (Some(init), PackagesFrom::Auto) => has_no_packages(init),
    };
    if !local {
        // Nothing to route: hand the stream over byte for byte, the init first.
        let parts = remote_in.into_parts();
        let mut head = BytesMut::from(&first.to_bytes()[..]);
        head.extend_from_slice(&parts.read_buf);
        let replay = std::io::Cursor::new(head.freeze()).chain(parts.io);
        let session = Session {
            writer,
            reader: tokio::io::BufReader::new(Box::pin(replay)),
            child,
            booted,
            meter,
        };
        return crate::connect(session, pending).await;
    }
    let mut bridge = LocalBridge::start(images)?;
    let mut local_out =
        FramedWrite::new(bridge.child.stdin.take().expect("piped"), FrameCodec::new());
    let mut local_in = FramedRead::new(
        bridge.child.stdout.take().expect("piped"),
        FrameCodec::new(),
    );
    let lost = |e: &dyn std::fmt::Display| {
        LaunchError::Internal(format!("local bridge for packages: {e}"))
    };
    local_out
        .send(
            ferry_protocol::control::init()
                .with("host", "localhost")
                .into_frame(),
        )
        .await
        .map_err(|e| lost(&e))?;
    let mut local_out = Some(local_out);
    let local_init = match local_in.next().await {
        Some(Ok(f)) => f.parse_control().map_err(|e| lost(&e))?,
        _ => return Err(lost(&"it ended before its init")),
    };
    let mut init = init.expect("checked above");
    if let Some(packages) = local_init.get("packages") {
        init = init.with("packages", packages.clone());
    }

    // One writer for our stdout: frames from both bridges, whole.
    let (to_client, mut client_rx) = mpsc::channel::<Frame>(64);
    let writer_task = tokio::spawn(async move {
        let mut out = FramedWrite::new(tokio::io::stdout(), FrameCodec::new());
        while let Some(frame) = client_rx.recv().await {
            if out.send(frame).await.is_err() {
                break;
            }
        }
        let _ = out.get_mut().flush().await;
    });
    to_client.send(init.into_frame()).await.ok();

    let mut remote_out = Some(FramedWrite::new(writer, FrameCodec::new()));
    // What the client sent before the bridge ran comes first.
    let client = std::io::Cursor::new(pending).chain(tokio::io::stdin());
    let mut client_in = FramedRead::new(client, FrameCodec::new());
    let mut routed: HashSet<String> = HashSet::new();
    let mut client_open = true;
    loop {
        tokio::select! {
            frame = client_in.next(), if client_open => {
                let (Some(local), Some(remote)) = (local_out.as_mut(), remote_out.as_mut()) else {
                    continue;
                };
                if frame.is_none() {
                    // The client is done: so are both bridges' inputs (dropping a child's
                    // stdin is what closes it).
                    client_open = false;
                    let _ = remote.get_mut().shutdown().await;
                    remote_out = None;
                    local_out = None;
                    continue;
                }
                route_client(frame, &mut routed, local, remote).await;
            }
            frame = remote_in.next() => match frame {
                Some(Ok(frame)) => {
                    if to_client.send(frame).await.is_err() { break; }
                }
                _ => break,
            },
            frame = local_in.next() => match frame {
                Some(Ok(frame)) => {
                    if frame.is_control() {
                        let msg = frame.parse_control().ok();
                        let channel = msg.as_ref().and_then(|m| m.str("channel")).map(str::to_owned);
                        match channel {
                            // Its own init and pongs are not the client's business.
                            None => continue,
                            Some(c) => {
                                if msg.as_ref().is_some_and(|m| m.command == "close") {
                                    routed.remove(&c);
                                }
                            }
                        }
                    }
                    if to_client.send(frame).await.is_err() { break; }
                }
                _ => break,
            },
        }
    }
    drop(to_client);
    let _ = writer_task.await;
    let code = match child.finish(crate::boot::GRACE).await {
        crate::transport::Ended::Code(c) => c,
        _ => 0,
    };
    Ok((code, meter.stats()))
}

/// Send one frame from the client to the bridge it belongs to.
async fn route_client<L, R>(
    frame: Option<Result<Frame, ferry_protocol::FrameError>>,
    routed: &mut HashSet<String>,
    local: &mut FramedWrite<L, FrameCodec>,
    remote: &mut FramedWrite<R, FrameCodec>,
) where
    L: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncWrite + Unpin,
{
    let Some(Ok(frame)) = frame else { return };
    let to_local = if frame.is_control() {
        match frame.parse_control() {
            Ok(msg) => match msg.str("channel") {
                Some(c) if is_packages_open(&msg) => {
                    routed.insert(c.to_owned());
                    true
                }
                Some(c) => {
                    let here = routed.contains(c);
                    if here && msg.command == "close" {
                        routed.remove(c);
                    }
                    here
                }
                None => false,
            },
            Err(_) => false,
        }
    } else {
        routed.contains(&frame.channel)
    };
    if to_local {
        let _ = local.send(frame).await;
    } else {
        let _ = remote.send(frame).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_packages_channel_is_local() {
        let open = |payload: &str, internal: Option<&str>| {
            let mut m = Message::new("open")
                .with("channel", "1")
                .with("payload", payload);
            if let Some(i) = internal {
                m = m.with("internal", i);
            }
            m
        };
        assert!(is_packages_open(&open("http-stream1", Some("packages"))));
        assert!(!is_packages_open(&open("http-stream1", None)));
        assert!(!is_packages_open(&open("http-stream2", Some("packages"))));
        assert!(!is_packages_open(&open("stream", None)));
    }

    #[test]
    fn an_init_without_packages_has_none() {
        assert!(has_no_packages(&Message::new("init")));
        assert!(has_no_packages(
            &Message::new("init").with("packages", serde_json::json!({}))
        ));
        assert!(!has_no_packages(
            &Message::new("init").with("packages", serde_json::json!({"shell": null}))
        ));
    }
}
