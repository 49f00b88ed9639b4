//! `fsinfo`: reports attributes of a file (and optionally of the entries of a directory) as
//! JSON messages, following changes with `watch`, as Cockpit's Python bridge does.
//!
//! Options, as Cockpit 337's bridge reads them: `path` (absolute), `attrs` (a list of `type`,
//! `tag`, `mode`, `size`, `uid`, `gid`, `mtime`, `user`, `group`, `target`, plus two that are
//! not attributes: `entries`, report the directory's entries under `entries`, and `targets`,
//! report the attributes of link targets under `targets`), `fnmatch` (which entries to report:
//! default `*` with `entries` and none without), `follow` (default true) and `watch` (default
//! false). (The older `targets: "stat"` option means nothing to 337 and is ignored here too.)
//! An attribute the bridge does not know closes the channel with `not-supported`, naming it:
//! 337 would report it as `null`, which a merge patch drops, so it would vanish silently.
//!
//! The first message is `{"info": {...}}` or `{"error": {"problem", "message", "errno"}}`;
//! with `watch`, later messages are JSON merge patches against everything sent before
//! (`null` removes a key; attributes that did not change are left out). When the watched
//! object is replaced, a message with `"partial": true` clears the old state first. Without
//! `watch` the channel sends `done` after the first message and closes.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::fsutil::{self, NameCache};
use super::inotify::Inotify;
use crate::channel::{Channel, ChannelError, ChannelResult, Input};
use ferry_protocol::problem;

/// Updates are collected for this long before they are sent.
const UPDATE_DELAY: Duration = Duration::from_millis(100);
/// How often the path is looked up again while its directory cannot be watched.
const POLL: Duration = Duration::from_secs(1);

const SELF_MASK: u32 = libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MODIFY
    | libc::IN_MOVE_SELF
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO;
const PARENT_MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ATTRIB;

/// The attributes of a file that `attrs` may ask for (Cockpit 337's set).
const KNOWN_ATTRS: &[&str] = &[
    "type", "tag", "mode", "size", "uid", "gid", "mtime", "user", "group", "target",
];

struct Options {
    path: String,
    attrs: Vec<String>,
    fnmatch: String,
    targets: bool,
    follow: bool,
    watch: bool,
}

fn json_error(message: String) -> ChannelError {
    ChannelError::new(problem::PROTOCOL_ERROR).message(message)
}

fn get_str(
    open: &Map<String, Value>,
    key: &str,
    default: Option<&str>,
) -> Result<String, ChannelError> {
    match (open.get(key), default) {
        (Some(Value::String(s)), _) => Ok(s.clone()),
        (Some(_), _) => Err(json_error(format!("attribute '{key}': must have type str"))),
        (None, Some(d)) => Ok(d.to_owned()),
        (None, None) => Err(json_error(format!("attribute '{key}' required"))),
    }
}

fn get_bool(open: &Map<String, Value>, key: &str, default: bool) -> Result<bool, ChannelError> {
    match open.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(json_error(format!(
            "attribute '{key}': must have type bool"
        ))),
    }
}

fn parse_options(open: &Map<String, Value>) -> Result<Options, ChannelError> {
    let path = get_str(open, "path", None)?;
    if !path.starts_with('/') {
        return Err(json_error("\"path\" must be an absolute path".into()));
    }
    let attrs = match open.get("attrs") {
        None => return Err(json_error("attribute 'attrs' required".into())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| json_error("attribute 'attrs' elements: must have type str".into()))?,
        Some(_) => return Err(json_error("attribute 'attrs': must have type list".into())),
    };
    let entries = attrs.iter().any(|a| a == "entries");
    let targets = attrs.iter().any(|a| a == "targets");
    let attrs: Vec<String> = attrs
        .into_iter()
        .filter(|a| a != "entries" && a != "targets")
        .collect();
    let unknown: Vec<&str> = attrs
        .iter()
        .map(String::as_str)
        .filter(|a| !KNOWN_ATTRS.contains(a))
        .collect();
    if !unknown.is_empty() {
        return Err(ChannelError::new(problem::NOT_SUPPORTED)
            .message(format!("fsinfo: unknown attribute(s) {unknown:?}")));
    }
    let fnmatch = get_str(open, "fnmatch", Some(if entries { "*" } else { "" }))?;
    let follow = get_bool(open, "follow", true)?;
    let watch = get_bool(open, "watch", false)?;
    if watch && !follow {
        return Err(json_error(
            "\"watch: true\" and \"follow: false\" are (currently) incompatible".into(),
        ));
    }
    if targets && !follow {
        return Err(json_error(
            "`targets: \"stat\"` and `follow: false` are (currently) incompatible".into(),
        ));
    }
    Ok(Options {
        path,
        attrs,
        fnmatch,
        targets,
        follow,
        watch,
    })
}

fn cstring(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `stat` relative to `dir` (`""`: `dir` itself).
fn stat_at(dir: RawFd, name: &str, follow: bool) -> io::Result<libc::stat> {
    let cname = cstring(name)?;
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else if follow {
        0
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: an all-zero `stat` is a valid value for fstatat to fill in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `cname` is NUL-terminated and `st` is valid for writes.
    if unsafe { libc::fstatat(dir, cname.as_ptr(), &mut st, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn readlink_at(dir: RawFd, name: &str) -> io::Result<String> {
    let cname = cstring(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `cname` is NUL-terminated and `buf` is valid for writes of its length.
    let n = unsafe { libc::readlinkat(dir, cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// An `O_PATH` descriptor for `path`: it opens nothing for reading, so a FIFO without a writer,
/// a device or a file the user may not read cannot block or refuse it.
///
/// Called with `open(2)` directly: `OpenOptions::custom_flags` masks out the access-mode bits,
/// and on musl `O_ACCMODE` includes `O_PATH` (its `O_SEARCH`), so the flag would be dropped and
/// the file opened for reading.
fn open_path(path: &str, follow: bool) -> io::Result<File> {
    use std::os::fd::FromRawFd;
    let mut flags = libc::O_PATH | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let c_path = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c_path is a valid NUL-terminated string; the descriptor returned is ours alone.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn errno_of(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(libc::EIO)
}

/// The short type name of a `st_mode`.
fn type_of(mode: u32) -> Option<&'static str> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => "reg",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "lnk",
        libc::S_IFCHR => "chr",
        libc::S_IFBLK => "blk",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "sock",
        _ => return None,
    })
}

/// Python's `fnmatch`, with the empty pattern matching nothing but the empty name.
fn interesting(pattern: &str, name: &str) -> bool {
    name.is_empty() || fsutil::fnmatch(pattern, name)
}

/// Apply `patch` to `current` (RFC 7396) and return `patch` without what changes nothing.
///
/// A removed key stays in `current` as `null`, which means the same as absent (this spares
/// the payload the code for removing from a map).
fn merge_and_filter(
    current: &mut Map<String, Value>,
    patch: Map<String, Value>,
) -> Map<String, Value> {
    let mut kept = Map::new();
    for (key, patch_value) in patch {
        match patch_value {
            Value::Object(sub) => {
                let current_is_object = matches!(current.get(&key), Some(Value::Object(_)));
                if !current_is_object {
                    current.insert(key.clone(), Value::Object(Map::new()));
                }
                let Some(Value::Object(cur)) = current.get_mut(&key) else {
                    continue;
                };
                let sub = merge_and_filter(cur, sub);
                if !current_is_object || !sub.is_empty() {
                    kept.insert(key, Value::Object(sub));
                }
            }
            patch_value => {
                if current.get(&key).unwrap_or(&Value::Null) != &patch_value {
                    current.insert(key.clone(), patch_value.clone());
                    kept.insert(key, patch_value);
                }
            }
        }
    }
    kept
}

/// The keys of `map` that are present (not `null`).
fn present(map: &Map<String, Value>) -> impl Iterator<Item = &String> {
    map.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k)
}

/// A set of names, kept small: a sorted vector.
#[derive(Default)]
struct Names(Vec<String>);

impl Names {
    fn new() -> Self {
        Names(Vec::new())
    }

    fn from(names: &[&str]) -> Self {
        let mut set = Names::new();
        for name in names {
            set.insert(name);
        }
        set
    }

    fn insert(&mut self, name: &str) {
        if let Err(at) = self.0.binary_search_by(|n| n.as_str().cmp(name)) {
            self.0.insert(at, name.to_owned());
        }
    }

    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.0.retain(|n| keep(n));
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }
}

struct State {
    opts: Options,
    effective_fnmatch: String,
    current: Map<String, Value>,
    names: NameCache,
    /// The object reported on (an `O_PATH` descriptor).
    fd: Option<File>,
    /// Names with changes to report, once the update delay has passed.
    pending: Option<(Instant, Names)>,
}

impl State {
    fn getattrs(&mut self, dir: RawFd, name: &str, follow: bool) -> Value {
        let st = match stat_at(dir, name, follow) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Value::Null,
            Err(_) => {
                let mut all_null = Map::new();
                for attr in &self.opts.attrs {
                    all_null.insert(attr.clone(), Value::Null);
                }
                return Value::Object(all_null);
            }
        };
        let mut result = Map::new();
        for attr in self.opts.attrs.clone() {
            let value = match attr.as_str() {
                "type" => type_of(st.st_mode).map_or(Value::Null, Value::from),
                "tag" => Value::from(fsutil::format_tag(st.st_ino, st.st_mtime, st.st_mtime_nsec)),
                "mode" => Value::from(st.st_mode & 0o7777),
                "size" => Value::from(st.st_size),
                "uid" => Value::from(st.st_uid),
                "gid" => Value::from(st.st_gid),
                "mtime" => Value::from(st.st_mtime as f64 + st.st_mtime_nsec as f64 * 1e-9),
                "user" => self
                    .names
                    .user(st.st_uid)
                    .map_or(Value::from(st.st_uid), Value::from),
                "group" => self
                    .names
                    .group(st.st_gid)
                    .map_or(Value::from(st.st_gid), Value::from),
                _ => Value::Null,
            };
            result.insert(attr, value);
        }
        if result.contains_key("target") && st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            if let Ok(target) = readlink_at(dir, name) {
                result.insert("target".into(), Value::from(target));
            }
        }
        Value::Object(result)
    }

    /// The attributes of `updates` (names in the directory; `""` is the object itself).
    fn process_update(&mut self, updates: &Names, reset: bool) -> Option<Vec<Value>> {
        let dir = self.fd.as_ref()?.as_raw_fd();
        let mut entries = Map::new();
        let mut info = Map::new();
        for name in updates.iter() {
            let attrs = self.getattrs(dir, name, false);
            if name.is_empty() {
                if let Value::Object(obj) = attrs {
                    info = obj;
                }
            } else {
                entries.insert(name.clone(), attrs);
            }
        }
        let mut targets = Map::new();
        if self.opts.targets {
            let mut names = Names::new();
            for target in entries
                .values()
                .filter_map(|e| e.get("target").and_then(Value::as_str))
            {
                names.insert(target);
            }
            for name in names.0 {
                if name.contains('/') || !interesting(&self.effective_fnmatch, &name) {
                    let attrs = self.getattrs(dir, &name, true);
                    targets.insert(name, attrs);
                }
            }
        }
        if !self.effective_fnmatch.is_empty() {
            info.insert("entries".into(), Value::Object(entries));
        }
        if self.opts.targets {
            info.insert("targets".into(), Value::Object(targets));
        }
        let mut update = Map::new();
        update.insert("info".into(), Value::Object(info));
        Some(self.send_update(update, reset))
    }

    /// Merge `updates` into the state; returns the messages to send, in order.
    fn send_update(&mut self, mut updates: Map<String, Value>, reset: bool) -> Vec<Value> {
        let mut out = Vec::new();
        let mut first = Map::new();
        if reset {
            let overlap = present(&self.current).any(|k| updates.contains_key(k));
            if overlap {
                for key in present(&self.current) {
                    first.insert(key.clone(), Value::Null);
                }
                first.insert("partial".into(), Value::Bool(true));
                self.current = Map::new();
                self.current.insert("partial".into(), Value::Bool(true));
                updates.insert("partial".into(), Value::Null);
            } else {
                for key in present(&self.current) {
                    updates.insert(key.clone(), Value::Null);
                }
            }
        }
        if !first.is_empty() {
            out.push(Value::Object(first));
        }
        let updates = merge_and_filter(&mut self.current, updates);
        if !updates.is_empty() {
            out.push(Value::Object(updates));
        }
        out
    }

    fn report_error(&mut self, errno: i32) -> Vec<Value> {
        let problem = match errno {
            libc::ENOENT => problem::NOT_FOUND,
            libc::EPERM | libc::EACCES => problem::ACCESS_DENIED,
            libc::ENOTDIR => problem::NOT_DIRECTORY,
            _ => problem::INTERNAL_ERROR,
        };
        let mut error = Map::new();
        error.insert("problem".into(), Value::from(problem));
        error.insert("message".into(), Value::from(fsutil::strerror(errno)));
        error.insert("errno".into(), Value::from(fsutil::errno_name(errno)));
        let mut update = Map::new();
        update.insert("error".into(), Value::Object(error));
        self.send_update(update, true)
    }

    fn report_initial_state(&mut self, fd: File) -> Vec<Value> {
        if self.opts.watch && self.opts.path.ends_with('/') {
            let is_dir = stat_at(fd.as_raw_fd(), "", false)
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            if !is_dir {
                return self.report_error(libc::ENOTDIR);
            }
        }
        let mut names = Names::from(&[""]);
        self.effective_fnmatch = String::new();
        if !self.opts.fnmatch.is_empty() {
            // If the listing fails, entries are not reported from then on.
            if let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
                for entry in entries.flatten() {
                    names.insert(&String::from_utf8_lossy(entry.file_name().as_bytes()));
                }
                self.effective_fnmatch = self.opts.fnmatch.clone();
            }
        }
        let pattern = self.effective_fnmatch.clone();
        names.retain(|n| interesting(&pattern, n));
        self.fd = Some(fd);
        self.process_update(&names, true).unwrap_or_default()
    }

    fn schedule_update(&mut self, name: &str) {
        if !interesting(&self.effective_fnmatch, name) {
            return;
        }
        let (_, set) = self
            .pending
            .get_or_insert_with(|| (Instant::now() + UPDATE_DELAY, Names::new()));
        set.insert(name);
    }
}

/// Send the messages `send_update` produced, in order.
async fn send_all(ch: &mut Channel, messages: Vec<Value>) -> bool {
    for message in messages {
        if !ch.send_json(&message).await {
            return false;
        }
    }
    true
}

/// Identity of a file: device and inode.
fn identity(file: &File) -> Option<(u64, u64)> {
    let st = stat_at(file.as_raw_fd(), "", false).ok()?;
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// The path's dirname and basename.
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => ("/".into(), trimmed[1..].into()),
        Some(at) => (trimmed[..at].into(), trimmed[at + 1..].into()),
        None => ("/".into(), trimmed.into()),
    }
}

pub async fn run(ch: &mut Channel) -> ChannelResult {
    let opts = parse_options(&ch.open.fields)?;
    let mut state = State {
        opts,
        effective_fnmatch: String::new(),
        current: Map::new(),
        names: NameCache::default(),
        fd: None,
        pending: None,
    };
    ch.ready(Map::new()).await;

    if !state.opts.watch {
        let messages = match open_path(&state.opts.path, state.opts.follow) {
            Ok(fd) => state.report_initial_state(fd),
            Err(e) => state.report_error(errno_of(&e)),
        };
        if send_all(ch, messages).await {
            ch.done().await;
        }
        return Ok(Map::new());
    }

    let mut ino = Inotify::new()
        .map_err(|e| ChannelError::new(problem::INTERNAL_ERROR).message(fsutil::error_text(&e)))?;
    let (dirname, basename) = split_path(&state.opts.path);
    let path = state.opts.path.clone();
    let mut parent_wd = ino.add_watch(Path::new(&dirname), PARENT_MASK).ok();
    let mut self_wd: Option<i32> = None;
    let mut current_id: Result<(u64, u64), i32> = Err(0);
    let mut next_poll: Option<Instant> = None;
    let mut recheck = true;

    loop {
        if recheck {
            recheck = false;
            let opened = open_path(&path, true);
            let id = match &opened {
                Ok(f) => identity(f).ok_or(libc::EIO),
                Err(e) => Err(errno_of(e)),
            };
            if id != current_id {
                current_id = id;
                if let Some(wd) = self_wd.take() {
                    ino.rm_watch(wd);
                }
                if let Some((_, set)) = &mut state.pending {
                    set.clear();
                }
                let messages = match opened {
                    Ok(fd) => {
                        self_wd = ino.add_watch(Path::new(&path), SELF_MASK).ok();
                        state.report_initial_state(fd)
                    }
                    Err(e) => state.report_error(errno_of(&e)),
                };
                if !send_all(ch, messages).await {
                    return Ok(Map::new());
                }
            }
            if parent_wd.is_none() {
                parent_wd = ino.add_watch(Path::new(&dirname), PARENT_MASK).ok();
            }
            next_poll = parent_wd.is_none().then(|| Instant::now() + POLL);
        }

        let update_at = state.pending.as_ref().map(|(t, _)| *t);
        let deadline = [update_at, next_poll].into_iter().flatten().min();
        tokio::select! {
            events = ino.read() => {
                let events = events.map_err(|e| {
                    ChannelError::new(problem::INTERNAL_ERROR).message(fsutil::error_text(&e))
                })?;
                for event in events {
                    let name = event
                        .name
                        .as_ref()
                        .map(|n| String::from_utf8_lossy(n).into_owned());
                    if Some(event.wd) == self_wd {
                        if event.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
                            recheck = true;
                            continue;
                        }
                        let name = name.clone().unwrap_or_default();
                        state.schedule_update(&name);
                        if !name.is_empty() {
                            // Entries changing change the directory's mtime.
                            state.schedule_update("");
                        }
                    }
                    if Some(event.wd) == parent_wd {
                        if event.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
                            parent_wd = None;
                            recheck = true;
                        } else if name.as_deref() == Some(basename.as_str()) {
                            recheck = true;
                        }
                    }
                }
            }
            _ = sleep_until_opt(deadline) => {
                let now = Instant::now();
                if next_poll.is_some_and(|t| t <= now) {
                    recheck = true;
                }
                if update_at.is_some_and(|t| t <= now) {
                    if let Some((_, names)) = state.pending.take() {
                        if !names.is_empty() {
                            let messages = state.process_update(&names, false).unwrap_or_default();
                            if !send_all(ch, messages).await {
                                return Ok(Map::new());
                            }
                        }
                    }
                }
            }
            input = ch.recv() => match input {
                Some(Input::Data(_)) => {
                    return Err(ChannelError::new(problem::PROTOCOL_ERROR)
                        .message("received unexpected data"));
                }
                Some(_) => {}
                None => return Ok(Map::new()),
            },
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn merge_patch_filters_no_ops() {
        let mut current = map(json!({"info": {"size": 1, "mode": 420}}));
        let patch = map(json!({"info": {"size": 2, "mode": 420, "gone": null}}));
        let patch = merge_and_filter(&mut current, patch);
        assert_eq!(Value::Object(patch), json!({"info": {"size": 2}}));
        assert_eq!(
            Value::Object(current.clone()),
            json!({"info": {"size": 2, "mode": 420}})
        );

        let patch = merge_and_filter(&mut current, map(json!({"info": {"size": 2}})));
        assert!(patch.is_empty());

        let patch = map(json!({"info": null, "error": {"problem": "not-found"}}));
        let patch = merge_and_filter(&mut current, patch);
        assert_eq!(
            Value::Object(patch),
            json!({"info": null, "error": {"problem": "not-found"}})
        );
        assert_eq!(present(&current).collect::<Vec<_>>(), ["error"]);
        // Removed and absent are the same.
        let patch = merge_and_filter(&mut current, map(json!({"info": null})));
        assert!(patch.is_empty());
    }

    #[test]
    fn first_report_drops_nulls() {
        let mut current = Map::new();
        let patch = map(json!({"info": {"type": "reg", "target": null}}));
        let patch = merge_and_filter(&mut current, patch);
        assert_eq!(Value::Object(patch), json!({"info": {"type": "reg"}}));
    }

    #[test]
    fn options_like_the_python_bridge() {
        let err = |v: Value| parse_options(&map(v)).err().unwrap().message.unwrap();
        assert_eq!(err(json!({"attrs": []})), "attribute 'path' required");
        assert_eq!(
            err(json!({"path": "x", "attrs": []})),
            "\"path\" must be an absolute path"
        );
        assert_eq!(err(json!({"path": "/"})), "attribute 'attrs' required");
        assert_eq!(
            err(json!({"path": "/", "attrs": [1]})),
            "attribute 'attrs' elements: must have type str"
        );
        assert_eq!(
            err(json!({"path": "/", "attrs": [], "watch": true, "follow": false})),
            "\"watch: true\" and \"follow: false\" are (currently) incompatible"
        );
        // The current form: `entries` and `targets` in `attrs`.
        let o = parse_options(&map(
            json!({"path": "/", "attrs": ["type", "entries", "targets"]}),
        ))
        .unwrap();
        assert!(o.targets && o.follow && !o.watch);
        assert_eq!(o.attrs, ["type"]);
        assert_eq!(o.fnmatch, "*");
        // The older form: `fnmatch` gives entries; `targets: "stat"` means nothing to 337.
        let o = parse_options(&map(
            json!({"path": "/", "attrs": ["type"], "fnmatch": "*.txt", "targets": "stat"}),
        ))
        .unwrap();
        assert!(!o.targets);
        assert_eq!(o.fnmatch, "*.txt");
        // An attribute the bridge does not know is refused, naming it.
        let e = parse_options(&map(json!({"path": "/", "attrs": ["type", "colour"]})))
            .err()
            .unwrap();
        assert_eq!(e.problem, problem::NOT_SUPPORTED);
        assert!(e.message.unwrap().contains("colour"));
    }

    fn state(attrs: &[&str], fnmatch: &str, watch: bool) -> State {
        State {
            opts: Options {
                path: String::new(),
                attrs: attrs.iter().map(|s| s.to_string()).collect(),
                fnmatch: fnmatch.into(),
                targets: false,
                follow: true,
                watch,
            },
            effective_fnmatch: String::new(),
            current: Map::new(),
            names: NameCache::default(),
            fd: None,
            pending: None,
        }
    }

    #[test]
    fn reports_a_directory_with_entries() {
        let dir = std::env::temp_dir().join(format!("ferry-fsinfo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), b"hello").unwrap();
        std::fs::write(dir.join("b.log"), b"x").unwrap();
        std::os::unix::fs::symlink("a.txt", dir.join("l.txt")).unwrap();
        let mut s = state(&["type", "size", "target", "user"], "*.txt", false);
        let fd = open_path(dir.to_str().unwrap(), true).unwrap();
        let out = s.report_initial_state(fd);
        assert_eq!(out.len(), 1);
        let msg = &out[0];
        assert_eq!(msg["info"]["type"], "dir");
        assert_eq!(msg["info"]["user"], "root");
        assert!(msg["info"].get("target").is_none());
        let entries = &msg["info"]["entries"];
        assert_eq!(
            entries["a.txt"],
            json!({"type": "reg", "size": 5, "user": "root"})
        );
        assert_eq!(entries["l.txt"]["type"], "lnk");
        assert_eq!(entries["l.txt"]["target"], "a.txt");
        assert!(entries.get("b.log").is_none());

        // A change to one entry sends only what changed.
        std::fs::write(dir.join("a.txt"), b"hello world").unwrap();
        let out = s.process_update(&Names::from(&["a.txt"]), false).unwrap();
        assert_eq!(out, [json!({"info": {"entries": {"a.txt": {"size": 11}}}})]);
        // A deleted entry is removed.
        std::fs::remove_file(dir.join("a.txt")).unwrap();
        let out = s.process_update(&Names::from(&["a.txt"]), false).unwrap();
        assert_eq!(out, [json!({"info": {"entries": {"a.txt": null}}})]);

        // Replacing the object with an error clears the info.
        let out = s.report_error(libc::ENOENT);
        assert_eq!(
            out,
            [
                json!({"error": {"problem": "not-found", "message": "No such file or directory",
                              "errno": "ENOENT"}, "info": null})
            ]
        );
        // And a new object after an info sends a partial reset first.
        let fd = open_path(dir.to_str().unwrap(), true).unwrap();
        s.report_initial_state(fd);
        let fd = open_path(dir.to_str().unwrap(), true).unwrap();
        let out = s.report_initial_state(fd);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], json!({"info": null, "partial": true}));
        assert_eq!(out[1]["partial"], Value::Null);
        assert_eq!(out[1]["info"]["type"], "dir");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_follow_reports_the_link() {
        let dir = std::env::temp_dir().join(format!("ferry-fsinfo-l-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("l");
        std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
        let mut s = state(&["type", "target"], "", false);
        let fd = open_path(link.to_str().unwrap(), false).unwrap();
        let out = s.report_initial_state(fd);
        assert_eq!(
            out,
            [json!({"info": {"type": "lnk", "target": "/nonexistent"}})]
        );
        assert_eq!(
            open_path(link.to_str().unwrap(), true)
                .err()
                .and_then(|e| e.raw_os_error()),
            Some(libc::ENOENT)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn path_splitting() {
        assert_eq!(split_path("/a/b"), ("/a".into(), "b".into()));
        assert_eq!(split_path("/a/"), ("/".into(), "a".into()));
        assert_eq!(split_path("/a"), ("/".into(), "a".into()));
    }
}
