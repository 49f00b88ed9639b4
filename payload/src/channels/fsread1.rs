//! `fsread1`: sends the content of a regular file, then `done`, and closes with the file's
//! transaction `tag`.
//!
//! As the reference bridges do: a missing file closes at once with `tag: "-"` (no `ready`; a
//! `done` first, as Cockpit 337 says it);
//! `max_read_size` smaller than the file closes with `too-large`; something that is not a
//! regular file is an `internal-error`; a file changed while it was read closes with
//! `change-conflict`. `ready` carries `size-hint`, the file's size. Text channels get invalid
//! UTF-8 and NUL bytes replaced with U+FFFD.
//!
//! No `open`, `stat` or read of the file runs on the bridge's own thread: each runs in a
//! worker thread ([`fsutil::blocking`]) while the other channels carry on, so a FIFO without a
//! writer, a hung network file system or a `/proc` file that waits for events never freezes
//! the bridge (both reference bridges freeze there). The file is opened with `O_NONBLOCK`, so
//! opening a FIFO or a device returns at once (and is then refused as not a regular file).
//! Closing the channel drops the wait; the end of the bridge's input ends the bridge without
//! waiting for a worker.
//!
//! `max_read_size` is compared with the file's `st_size`, as both references do: a `/proc`
//! file says 0 and is sent whole, however long it is (see `DIFFERENCES.md`, `proc-size`).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use serde_json::{Map, Value};

use super::fsutil::{self, TextSanitizer};
use crate::channel::{Channel, ChannelError, ChannelResult, Input, ReadBuffer};
use ferry_protocol::problem;

/// Largest data frame this channel sends: with flow control, which bounds what is in flight,
/// and without (the output queue, a number of frames, does).
const BLOCK: usize = 256 * 1024;
const BLOCK_UNCONTROLLED: usize = 64 * 1024;

pub async fn run(ch: &mut Channel) -> ChannelResult {
    let path = match ch.open.get("path") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(protocol_error("invalid \"path\" option for fsread channel")),
    };
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Err(protocol_error("missing \"path\" option for fsread channel"));
    };
    let max_read_size = match ch.open.get("max_read_size") {
        None => None,
        // Like the reference, a fractional number is truncated.
        Some(v) => Some(
            v.as_i64()
                .or_else(|| v.as_f64().map(|f| f as i64))
                .ok_or_else(|| {
                    protocol_error("invalid \"max_read_size\" option for fsread channel")
                })?,
        ),
    };

    let opened = {
        let path = path.clone();
        fsutil::blocking(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .map_err(|e| (e, "couldn't open"))?;
            let meta = file.metadata().map_err(|e| (e, "couldn't stat"))?;
            Ok::<_, (io::Error, &str)>((Arc::new(file), meta))
        })
        .await
    };
    let (file, meta) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err((e, "couldn't open"))) => {
            if e.raw_os_error() == Some(libc::ENOENT) {
                // A missing file is an empty answer: `done`, then the `close` with tag "-",
                // as Cockpit 337 says it.
                ch.done().await;
            }
            return open_error(&path, &e);
        }
        Ok(Err((e, what))) => return Err(internal(&path, what, &e)),
        Err(e) => return Err(internal(&path, "couldn't open", &e)),
    };
    if !meta.is_file() {
        return Err(ChannelError::new(problem::INTERNAL_ERROR)
            .message(format!("{path}: not a readable file")));
    }
    if let Some(max) = max_read_size {
        if i64::try_from(meta.size()).unwrap_or(i64::MAX) > max {
            return Err(ChannelError::new(problem::TOO_LARGE));
        }
    }
    let start_tag = fsutil::tag_from_meta(&meta);

    let mut ready = Map::new();
    ready.insert("size-hint".into(), meta.size().into());
    ch.ready(ready).await;

    // Each block is read in a worker and goes out before the next is read. Binary data goes
    // out in the buffer it was read into, without a copy.
    let mut text = (!ch.binary()).then(TextSanitizer::new);
    let block = if ch.flow_controlled() {
        BLOCK
    } else {
        BLOCK_UNCONTROLLED
    };
    let mut buf = ReadBuffer::new();
    loop {
        // Never past the flow-control window: the channel stops right at it.
        let want = block.min(ch.window_room()).max(1);
        let buf = buf.prepare(want);
        let mut owned = std::mem::take(buf);
        let reader = file.clone();
        let (back, n) = fsutil::blocking(move || {
            let n = read_into(&reader, &mut owned, want);
            (owned, n)
        })
        .await
        .map_err(|e| internal(&path, "couldn't read", &e))?;
        *buf = back;
        let n = n.map_err(|e| internal(&path, "couldn't read", &e))?;
        if n == 0 {
            break;
        }
        let data = match &mut text {
            Some(t) => Bytes::from(t.push(&buf[..n])),
            None => buf.split().freeze(),
        };
        if !data.is_empty() && !ch.send_data(data).await {
            return Ok(Map::new());
        }
        check_input(ch)?;
    }
    if let Some(t) = &mut text {
        let rest = t.finish();
        if !rest.is_empty() && !ch.send_data(Bytes::from(rest)).await {
            return Ok(Map::new());
        }
    }
    ch.done().await;

    let end_tag = fsutil::blocking(move || file.metadata().ok().map(|m| fsutil::tag_from_meta(&m)))
        .await
        .ok()
        .flatten();
    if end_tag.as_deref() != Some(start_tag.as_str()) {
        return Err(ChannelError::new(problem::CHANGE_CONFLICT));
    }
    let mut close = Map::new();
    close.insert("tag".into(), start_tag.into());
    Ok(close)
}

/// Read at most `want` bytes from `file` into the spare capacity of `buf`.
fn read_into(file: &std::fs::File, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let want = want.min(spare.len());
    let n = loop {
        // SAFETY: read() writes at most `want` bytes into spare capacity that `buf` owns.
        let n = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: read() initialised the first n bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Data sent to this channel is a protocol error (checked between blocks, without waiting).
fn check_input(ch: &mut Channel) -> Result<(), ChannelError> {
    while let Some(input) = ch.recv().now_or_never() {
        match input {
            Some(Input::Data(_)) => {
                return Err(protocol_error(
                    "received unexpected message in fsread channel",
                ))
            }
            Some(_) => {}
            None => break,
        }
    }
    Ok(())
}

fn open_error(path: &str, err: &io::Error) -> ChannelResult {
    match err.raw_os_error() {
        Some(libc::ENOENT) => {
            let mut close = Map::new();
            close.insert("tag".into(), "-".into());
            Ok(close)
        }
        Some(libc::EACCES) | Some(libc::EPERM) => Err(ChannelError::new(problem::ACCESS_DENIED)),
        _ => Err(internal(path, "couldn't open", err)),
    }
}

fn internal(path: &str, what: &str, err: &io::Error) -> ChannelError {
    ChannelError::new(problem::INTERNAL_ERROR)
        .message(format!("{path}: {what}: {}", fsutil::error_text(err)))
}

fn protocol_error(message: &str) -> ChannelError {
    ChannelError::new(problem::PROTOCOL_ERROR).message(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_closes_with_dash_tag() {
        let r = open_error("/x", &io::Error::from_raw_os_error(libc::ENOENT)).unwrap();
        assert_eq!(r.get("tag"), Some(&Value::from("-")));
    }

    #[test]
    fn open_errors_map_like_the_reference() {
        let e = open_error("/x", &io::Error::from_raw_os_error(libc::EACCES)).unwrap_err();
        assert_eq!(e.problem, problem::ACCESS_DENIED);
        assert_eq!(e.message, None);
        let e = open_error("/x/y", &io::Error::from_raw_os_error(libc::ENOTDIR)).unwrap_err();
        assert_eq!(e.problem, problem::INTERNAL_ERROR);
        assert_eq!(
            e.message.as_deref(),
            Some("/x/y: couldn't open: Not a directory")
        );
    }
}
