//! `stream`: a spawned process with pipes.

use std::process::Stdio;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::channel::{Channel, ChannelError, ChannelResult, Input};

pub async fn run(ch: &mut Channel) -> ChannelResult {
    let argv: Vec<String> = match ch.open.get("spawn") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| ChannelError::new("protocol-error").message("spawn must be strings"))?,
        _ => {
            return Err(ChannelError::new(ferry_protocol::problem::NOT_SUPPORTED)
                .message("stream needs \"spawn\""))
        }
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(ChannelError::new("protocol-error").message("spawn is empty"));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = ch.open.str("directory") {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| ChannelError::from_io(&e))?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut extra = Map::new();
    if let Some(pid) = child.id() {
        extra.insert("pid".into(), pid.into());
    }
    ch.ready(extra).await;

    let mut buf = vec![0u8; 64 * 1024];
    let mut out_open = true;
    let mut in_open = true;
    while out_open {
        tokio::select! {
            n = stdout.read(&mut buf) => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => {
                    if !ch.send_data(Bytes::copy_from_slice(&buf[..n])).await {
                        return Ok(Map::new());
                    }
                }
            },
            input = ch.recv(), if in_open => match input {
                Some(Input::Data(data)) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(Input::Done) => stdin = None,
                Some(_) => {}
                None => in_open = false,
            },
        }
    }
    ch.done().await;
    let status = child.wait().await.map_err(|e| ChannelError::from_io(&e))?;
    let mut close = Map::new();
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        close.insert("exit-status".into(), code.into());
    } else if let Some(sig) = status.signal() {
        close.insert("exit-signal".into(), signal_name(sig).into());
    }
    Ok(close)
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "HUP",
        libc::SIGINT => "INT",
        libc::SIGQUIT => "QUIT",
        libc::SIGKILL => "KILL",
        libc::SIGPIPE => "PIPE",
        libc::SIGTERM => "TERM",
        libc::SIGSEGV => "SEGV",
        libc::SIGABRT => "ABRT",
        _ => return sig.to_string(),
    };
    name.to_owned()
}
