//! `fsreplace1`: replaces a file's content atomically.
//!
//! At `open` the expected `tag` (if given) is checked (`change-conflict` when the file changed;
//! `-` means "must not exist") and a temporary file is created next to the target; then the
//! channel is `ready`. Data frames are written to the temporary file. On `done` it is synced,
//! the tag is checked again, the optional `attrs` (`mode`, `user`, `group`) are applied, and
//! it is renamed over the target; the `close` carries the new `tag`. A `done` without any data
//! frame deletes the file instead (`tag: "-"`); one empty data frame makes an empty file. If
//! the channel is closed before `done`, the temporary file is removed and the target is left
//! alone.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::fsutil;
use crate::channel::{Channel, ChannelError, ChannelResult, Input};
use ferry_protocol::problem;

/// Ownership and permissions to give the new file.
#[derive(Debug, Default, PartialEq, Eq)]
struct Attrs {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// The temporary file; removed when dropped unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file = None;
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub async fn run(ch: &mut Channel) -> ChannelResult {
    let path = match ch.open.get("path") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(protocol_error(
                "invalid \"path\" option for fsreplace1 channel",
            ))
        }
    };
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Err(protocol_error(
            "missing \"path\" option for fsreplace1 channel",
        ));
    };
    let expected_tag = match ch.open.get("tag") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(protocol_error(
                "invalid \"tag\" option for fsreplace1 channel",
            ))
        }
    };
    let attrs = parse_attrs(ch.open.get("attrs"))?;

    if let Some(tag) = &expected_tag {
        if fsutil::tag_for_path(Path::new(&path)).as_deref() != Some(tag.as_str()) {
            return Err(ChannelError::new(problem::CHANGE_CONFLICT));
        }
    }

    let mut temp = create_temp(&path)?;
    ch.ready(Map::new()).await;

    let mut got_content = false;
    loop {
        match ch.recv().await {
            Some(Input::Data(data)) => {
                got_content = true;
                if let Some(file) = temp.file.as_mut() {
                    file.write_all(&data)
                        .map_err(|e| errno_error(&path, "couldn't write", &e))?;
                }
            }
            Some(Input::Done) => break,
            Some(_) => {}
            // Closed by the peer before `done`: `temp` goes away with us.
            None => return Ok(Map::new()),
        }
    }

    if let Some(file) = temp.file.take() {
        file.sync_all()
            .map_err(|e| errno_error(&path, "couldn't sync", &e))?;
    }
    if let Some(tag) = &expected_tag {
        if fsutil::tag_for_path(Path::new(&path)).as_deref() != Some(tag.as_str()) {
            return Err(ChannelError::new(problem::CHANGE_CONFLICT));
        }
    }

    let mut close = Map::new();
    if !got_content {
        close.insert("tag".into(), "-".into());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(with_extra(errno_error(&path, "couldn't unlink", &e), close)),
        }
        return Ok(close);
    }

    apply_attrs(&temp.path, &attrs)
        .map_err(|e| errno_error(&path, "couldn't set attributes", &e))?;
    let new_tag = std::fs::metadata(&temp.path)
        .map(|m| fsutil::tag_from_meta(&m))
        .map_err(|e| errno_error(&path, "couldn't stat", &e))?;
    close.insert("tag".into(), new_tag.into());
    std::fs::rename(&temp.path, &path)
        .map_err(|e| with_extra(errno_error(&path, "couldn't rename", &e), close.clone()))?;
    temp.keep = true;
    Ok(close)
}

/// `attrs`: an object with `mode` (a number), `user` and `group` (a name or a number).
fn parse_attrs(value: Option<&Value>) -> Result<Attrs, ChannelError> {
    let obj = match value {
        None | Some(Value::Null) => return Ok(Attrs::default()),
        Some(Value::Object(obj)) => obj,
        Some(_) => return Err(protocol_error("\"attrs\" must be an object")),
    };
    let unsupported: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "mode" | "user" | "group"))
        .collect();
    if !unsupported.is_empty() {
        return Err(protocol_error(&format!(
            "\"attrs\" contains unsupported key(s) {unsupported:?}"
        )));
    }
    let mode =
        match obj.get("mode") {
            None => None,
            Some(v) => Some(v.as_u64().filter(|m| *m <= 0o7777).ok_or_else(|| {
                protocol_error("\"attrs\": \"mode\" must be a number up to 0o7777")
            })? as u32),
        };
    let uid = match obj.get("user") {
        None => None,
        Some(Value::String(name)) => Some(
            fsutil::user_id(name)
                .ok_or_else(|| protocol_error(&format!("\"attrs\": unknown user {name:?}")))?,
        ),
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| protocol_error("\"attrs\": \"user\" must be a name or a number"))?,
        ),
    };
    let gid = match obj.get("group") {
        None => None,
        Some(Value::String(name)) => Some(
            fsutil::group_id(name)
                .ok_or_else(|| protocol_error(&format!("\"attrs\": unknown group {name:?}")))?,
        ),
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| protocol_error("\"attrs\": \"group\" must be a name or a number"))?,
        ),
    };
    Ok(Attrs { mode, uid, gid })
}

fn apply_attrs(path: &Path, attrs: &Attrs) -> io::Result<()> {
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::chown(path, attrs.uid, attrs.gid)?;
    }
    // After chown, which may clear the set-id bits.
    if let Some(mode) = attrs.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Create `PATH.ferry-tmp.N` next to the target, for the first free N.
fn create_temp(path: &str) -> Result<TempFile, ChannelError> {
    let mut last = io::Error::from_raw_os_error(libc::EEXIST);
    for i in 1..10000 {
        let candidate = PathBuf::from(format!("{path}.ferry-tmp.{i}"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&candidate)
        {
            Ok(file) => {
                return Ok(TempFile {
                    path: candidate,
                    file: Some(file),
                    keep: false,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(errno_error(path, "couldn't open unique file", &e)),
        }
    }
    Err(errno_error(path, "couldn't open unique file", &last))
}

/// `access-denied` for permission errors (no message), `internal-error` with a message else.
fn errno_error(path: &str, what: &str, err: &io::Error) -> ChannelError {
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => ChannelError::new(problem::ACCESS_DENIED),
        _ => ChannelError::new(problem::INTERNAL_ERROR)
            .message(format!("{path}: {what}: {}", fsutil::error_text(err))),
    }
}

fn protocol_error(message: &str) -> ChannelError {
    ChannelError::new(problem::PROTOCOL_ERROR).message(message)
}

/// The reference bridge's `close` carries the `tag` even when the last step failed.
fn with_extra(mut err: ChannelError, extra: Map<String, Value>) -> ChannelError {
    err.extra.extend(extra);
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::MetadataExt;

    fn mode_of(path: &Path) -> io::Result<u32> {
        Ok(std::fs::metadata(path)?.mode() & 0o7777)
    }

    #[test]
    fn attrs_parse() {
        assert_eq!(parse_attrs(None).unwrap(), Attrs::default());
        let a = parse_attrs(Some(&json!({"mode": 0o600, "user": "root", "group": 0}))).unwrap();
        assert_eq!(
            a,
            Attrs {
                mode: Some(0o600),
                uid: Some(0),
                gid: Some(0)
            }
        );
        let e = parse_attrs(Some(&json!({"owner": "x"}))).unwrap_err();
        assert_eq!(e.problem, problem::PROTOCOL_ERROR);
        assert!(e.message.unwrap().contains("owner"));
        assert!(parse_attrs(Some(&json!({"user": "no-such-user-ferry"}))).is_err());
        assert!(parse_attrs(Some(&json!({"mode": "0644"}))).is_err());
        assert!(parse_attrs(Some(&json!({"mode": 0o17777}))).is_err());
        assert!(parse_attrs(Some(&json!([1]))).is_err());
    }

    #[test]
    fn temp_file_is_removed_unless_kept() {
        let dir = std::env::temp_dir().join(format!("ferry-fsreplace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("t").to_string_lossy().into_owned();
        let first = create_temp(&target).unwrap();
        assert!(first.path.ends_with("t.ferry-tmp.1"));
        let second = create_temp(&target).unwrap();
        assert!(second.path.ends_with("t.ferry-tmp.2"));
        let (p1, p2) = (first.path.clone(), second.path.clone());
        drop(first);
        assert!(!p1.exists());
        let mut kept = second;
        kept.keep = true;
        drop(kept);
        assert!(p2.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn attrs_apply_mode() {
        let dir = std::env::temp_dir().join(format!("ferry-fsreplace-m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"x").unwrap();
        apply_attrs(
            &f,
            &Attrs {
                mode: Some(0o640),
                ..Attrs::default()
            },
        )
        .unwrap();
        assert_eq!(mode_of(&f).unwrap(), 0o640);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_directory_is_internal_error_with_message() {
        let e = create_temp("/nonexistent-ferry/x").err().unwrap();
        assert_eq!(e.problem, problem::INTERNAL_ERROR);
        assert_eq!(
            e.message.as_deref(),
            Some("/nonexistent-ferry/x: couldn't open unique file: No such file or directory")
        );
    }
}
