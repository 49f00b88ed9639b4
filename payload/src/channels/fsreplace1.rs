//! `fsreplace1`: replaces a file's content atomically.
//!
//! At `open` the expected `tag` (if given) is checked (`change-conflict` when the file changed;
//! `-` means "must not exist") and a temporary file is created next to the target; then the
//! channel is `ready`. Data frames are written to the temporary file. On `done` it is synced,
//! the tag is checked again, its owner, group and mode are set, and it is renamed over the
//! target; the `close` carries the new `tag`.
//!
//! Owner, group and mode, as Cockpit 337 sets them: the optional `attrs` (`mode`, `user`,
//! `group`) first; otherwise, when a `tag` names the file being replaced, that file's owner,
//! group and mode (a `nobody:nogroup 0640` file stays so when root replaces it); otherwise
//! (no tag, or `-`) the bridge's own user and `0666` less the umask. The temporary file is
//! created `0600` and only gets its final mode just before the rename, so it is never more
//! readable than the file it replaces. A `done` without any data
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
        ch.done().await;
        return Ok(close);
    }

    // The file this one replaces, when the tag said which (its tag was checked above).
    let replaced = match expected_tag.as_deref() {
        Some(tag) if tag != "-" => {
            Some(std::fs::metadata(&path).map_err(|e| errno_error(&path, "couldn't stat", &e))?)
        }
        _ => None,
    };
    let attrs = final_attrs(attrs, replaced.as_ref());
    apply_attrs(&temp.path, &attrs)
        .map_err(|e| errno_error(&path, "couldn't set attributes", &e))?;
    let new_tag = std::fs::metadata(&temp.path)
        .map(|m| fsutil::tag_from_meta(&m))
        .map_err(|e| errno_error(&path, "couldn't stat", &e))?;
    close.insert("tag".into(), new_tag.into());
    std::fs::rename(&temp.path, &path)
        .map_err(|e| with_extra(errno_error(&path, "couldn't rename", &e), close.clone()))?;
    temp.keep = true;
    // Like Cockpit 337: `done` once the file is in place, then the `close` with its tag.
    ch.done().await;
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

/// What the new file gets: `attrs` where given, else the replaced file's owner, group and
/// mode, else (a new file) `0666` less the umask and the bridge's own user.
fn final_attrs(attrs: Attrs, replaced: Option<&std::fs::Metadata>) -> Attrs {
    use std::os::unix::fs::MetadataExt;
    let mode = attrs.mode.unwrap_or_else(|| match replaced {
        Some(m) => m.mode() & 0o7777,
        None => 0o666 & !umask(),
    });
    Attrs {
        mode: Some(mode),
        uid: attrs.uid.or(replaced.map(MetadataExt::uid)),
        gid: attrs.gid.or(replaced.map(MetadataExt::gid)),
    }
}

/// The process's umask, from `/proc/self/status` (reading it with `umask(2)` would change it
/// for a moment, for every thread); `0o022` where that cannot be read.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

fn apply_attrs(path: &Path, attrs: &Attrs) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if attrs.uid.is_some() || attrs.gid.is_some() {
        // Only what changes: a user may not "change" a group to one it is not in, even to
        // the group the file already has.
        let now = std::fs::metadata(path)?;
        let uid = attrs.uid.filter(|u| *u != now.uid());
        let gid = attrs.gid.filter(|g| *g != now.gid());
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(path, uid, gid)?;
        }
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
            // Never more readable than the file it replaces: its final mode comes last.
            .mode(0o600)
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
    fn final_attrs_come_from_attrs_then_the_replaced_file_then_the_umask() {
        let dir = std::env::temp_dir().join(format!("ferry-fsreplace-a-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let meta = std::fs::metadata(&f).unwrap();
        let kept = final_attrs(Attrs::default(), Some(&meta));
        assert_eq!(kept.mode, Some(0o640));
        assert_eq!((kept.uid, kept.gid), (Some(meta.uid()), Some(meta.gid())));
        let given = final_attrs(
            Attrs {
                mode: Some(0o600),
                uid: Some(0),
                gid: None,
            },
            Some(&meta),
        );
        assert_eq!(given.mode, Some(0o600));
        assert_eq!((given.uid, given.gid), (Some(0), Some(meta.gid())));
        let new = final_attrs(Attrs::default(), None);
        assert_eq!(new.mode, Some(0o666 & !umask()));
        assert_eq!((new.uid, new.gid), (None, None));
        // The temporary file starts private.
        let t = create_temp(&f.to_string_lossy()).unwrap();
        assert_eq!(mode_of(&t.path).unwrap(), 0o600);
        drop(t);
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
