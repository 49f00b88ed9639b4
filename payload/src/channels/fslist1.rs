//! `fslist1`: lists a directory as `present` messages, then (with `watch`, the default)
//! follows its changes like `fswatch1`.
//!
//! Each entry is `{"event":"present","path":NAME,"type":...,"owner":...,"group":...,
//! "size":...,"modified":...}` in directory order; type, owner, size and time follow symbolic
//! links (a dangling link is reported as itself). `ready` comes after the listing; without
//! `watch` the channel then sends `done` and closes.

use std::io;
use std::os::unix::fs::MetadataExt;

use serde_json::{Map, Value};

use super::fsutil::{self, JsonObject, NameCache};
use super::gmonitor::Monitor;
use crate::channel::{Channel, ChannelError, ChannelResult};
use ferry_protocol::problem;

pub async fn run(ch: &mut Channel) -> ChannelResult {
    let path = match ch.open.get("path") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ChannelError::new(problem::PROTOCOL_ERROR)
                .message("invalid \"path\" option for fslist1 channel"))
        }
    };
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Err(ChannelError::new(problem::PROTOCOL_ERROR)
            .message("missing \"path\" option for fslist1 channel"));
    };
    let watch = match ch.open.get("watch") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ChannelError::new(problem::PROTOCOL_ERROR)
                .message("invalid \"watch\" option for fslist1 channel"))
        }
    };

    // The monitor starts before the listing, so that no change falls between the two.
    let mut monitor = if watch {
        Some(Monitor::directory(&path).map_err(|e| {
            ChannelError::new(problem::INTERNAL_ERROR)
                .message(format!("{path}: couldn't monitor directory: {e}"))
        })?)
    } else {
        None
    };

    let entries = std::fs::read_dir(&path).map_err(|e| list_error(&path, &e))?;
    let mut names = NameCache::default();
    for entry in entries {
        let entry = entry.map_err(|e| {
            ChannelError::new(problem::INTERNAL_ERROR).message(fsutil::error_text(&e))
        })?;
        let full = entry.path();
        let Ok(meta) = std::fs::metadata(&full).or_else(|_| std::fs::symlink_metadata(&full))
        else {
            continue;
        };
        let name = entry.file_name();
        let msg = entry_message(&name.to_string_lossy(), &meta, &mut names);
        if !ch.send_data(msg).await {
            return Ok(Map::new());
        }
    }
    ch.ready(Map::new()).await;

    match &mut monitor {
        None => {
            ch.done().await;
            Ok(Map::new())
        }
        Some(monitor) => {
            super::fswatch1::watch(
                ch,
                monitor,
                "Received unexpected message in fslist1 channel",
            )
            .await
        }
    }
}

fn list_error(path: &str, err: &io::Error) -> ChannelError {
    let p = match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => problem::ACCESS_DENIED,
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => problem::NOT_FOUND,
        _ => problem::INTERNAL_ERROR,
    };
    ChannelError::new(p).message(format!(
        "Error opening directory '{path}': {}",
        fsutil::error_text(err)
    ))
}

/// One `present` message.
fn entry_message(name: &str, meta: &std::fs::Metadata, names: &mut NameCache) -> bytes::Bytes {
    let owner = names
        .user(meta.uid())
        .unwrap_or_else(|| meta.uid().to_string());
    let group = names
        .group(meta.gid())
        .unwrap_or_else(|| meta.gid().to_string());
    JsonObject::new()
        .str("event", "present")
        .str("path", name)
        .str("type", fsutil::type_name(meta))
        .str("owner", &owner)
        .str("group", &group)
        .field("size", &Value::from(meta.size()))
        .field("modified", &Value::from(meta.mtime()))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_fields_in_order() {
        let dir = std::env::temp_dir();
        let meta = std::fs::metadata(&dir).unwrap();
        let mut names = NameCache::default();
        let msg = entry_message("tmp", &meta, &mut names);
        let v: Value = serde_json::from_slice(&msg).unwrap();
        assert_eq!(v["event"], "present");
        assert_eq!(v["type"], "directory");
        assert_eq!(v["size"], meta.size());
        assert_eq!(v["modified"], meta.mtime());
        let text = std::str::from_utf8(&msg).unwrap();
        let order = [
            "event", "path", "type", "owner", "group", "size", "modified",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn errors_map_like_the_reference() {
        let e = list_error("/x", &io::Error::from_raw_os_error(libc::ENOTDIR));
        assert_eq!(e.problem, problem::NOT_FOUND);
        assert_eq!(
            e.message.as_deref(),
            Some("Error opening directory '/x': Not a directory")
        );
        let e = list_error("/x", &io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.problem, problem::ACCESS_DENIED);
        let e = list_error("/x", &io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.problem, problem::INTERNAL_ERROR);
    }
}
