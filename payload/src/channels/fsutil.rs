//! Small helpers shared by the file-system channels (`fsread1`, `fsreplace1`, `fslist1`,
//! `fswatch1`, `fsinfo`): transaction tags, file types, user and group names, error texts,
//! path canonicalization and shell-style name matching.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

/// Run `f` (an `open`, `stat` or read of a file, anything that may block) in a worker thread,
/// so that the bridge's other channels carry on meanwhile. A FIFO without a writer, a hung
/// network file system or a `/proc` file that waits for events would otherwise freeze the
/// whole bridge. Dropping the future (the channel was closed) leaves the worker to finish on
/// its own; the bridge does not wait for workers when it exits.
///
/// # Errors
/// Only when the worker could not run `f` to the end.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| io::Error::other("the worker thread failed"))
}

/// The transaction tag of a file: its inode and modification time, `1:INO-SEC.NSEC` (the
/// nanoseconds are not zero-padded, as the reference bridge writes them).
pub fn tag_from_meta(meta: &Metadata) -> String {
    format_tag(meta.ino(), meta.mtime(), meta.mtime_nsec())
}

pub fn format_tag(ino: u64, sec: i64, nsec: i64) -> String {
    format!("1:{ino}-{sec}.{nsec}")
}

/// The tag of whatever `path` names now (following links): `-` when nothing exists there,
/// `None` when it cannot be told (e.g. no permission).
pub fn tag_for_path(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(meta) => Some(tag_from_meta(&meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some("-".to_owned()),
        Err(_) => None,
    }
}

/// [`tag_for_path`] as JSON: a string, or `null`.
pub fn tag_value(path: &Path) -> Value {
    tag_for_path(path).map_or(Value::Null, Value::String)
}

/// The file type names of `fslist1` and `fswatch1`.
pub fn type_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "link"
    } else {
        "special"
    }
}

/// The text of an errno value, without Rust's " (os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The text of an I/O error as C's `strerror` gives it.
pub fn error_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => strerror(errno),
        None => err.to_string(),
    }
}

/// The symbolic name of an errno value (`ENOENT`, ...).
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ESTALE => "ESTALE",
        libc::EDQUOT => "EDQUOT",
        libc::ENOTCONN => "ENOTCONN",
        libc::ECONNREFUSED => "ECONNREFUSED",
        _ => return format!("E{errno}"),
    };
    name.to_owned()
}

/// Look up a line of `/etc/passwd` or `/etc/group` (`name:password:id:...`): the name for
/// an id, or the id for a name. The files are read directly (as a static binary's C library
/// would), which keeps the payload free of the C library's name-service code.
fn lookup_db(file: &str, id: Option<u32>, name: Option<&str>) -> Option<(String, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let entry_name = fields.next()?;
        let entry_id: u32 = fields.nth(1)?.parse().ok()?;
        let matches = match (id, name) {
            (Some(id), _) => entry_id == id,
            (None, Some(name)) => entry_name == name,
            (None, None) => false,
        };
        matches.then(|| (entry_name.to_owned(), entry_id))
    })
}

/// The name of user `uid`.
pub fn user_name(uid: u32) -> Option<String> {
    lookup_db("/etc/passwd", Some(uid), None).map(|(n, _)| n)
}

/// The name of group `gid`.
pub fn group_name(gid: u32) -> Option<String> {
    lookup_db("/etc/group", Some(gid), None).map(|(n, _)| n)
}

/// The uid of user `name`.
pub fn user_id(name: &str) -> Option<u32> {
    lookup_db("/etc/passwd", None, Some(name)).map(|(_, id)| id)
}

/// The gid of group `name`.
pub fn group_id(name: &str) -> Option<u32> {
    lookup_db("/etc/group", None, Some(name)).map(|(_, id)| id)
}

/// User and group names, looked up once each.
#[derive(Default)]
pub struct NameCache {
    users: std::collections::HashMap<u32, Option<String>>,
    groups: std::collections::HashMap<u32, Option<String>>,
}

impl NameCache {
    pub fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| user_name(uid))
            .clone()
    }

    pub fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| group_name(gid))
            .clone()
    }
}

/// An absolute, textually canonical form of `path`: relative paths are taken from the current
/// directory, and repeated slashes, `.` and `..` are resolved without looking at the disk.
pub fn canonical_path(path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        let cwd = std::env::current_dir()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/".to_owned());
        format!("{cwd}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut out = String::with_capacity(joined.len());
    for part in &parts {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `dir/name`, without doubling the slash after `/`.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Shell-style matching of a file name against `pattern`: `*`, `?`, `[abc]`, `[a-z]` and
/// `[!abc]`, as Python's `fnmatch` does it on POSIX (`*` also matches `/` and leading dots).
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with backtracking to the last `*`.
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = match_class(&p, pi, n[ni]) {
                        if matched {
                            pi = next;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        // An unclosed `[` is a literal.
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Match `c` against the class starting at `p[start] == '['`: `Some((matched, index after))`,
/// or `None` when the class is not closed.
fn match_class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &ch = p.get(i)?;
        if ch == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            let end = p[i + 2];
            if ch <= c && c <= end {
                matched = true;
            }
            i += 3;
        } else {
            if ch == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// Converts text-channel output to UTF-8 the way the reference bridge does: every byte that
/// is not part of a valid UTF-8 sequence, and every NUL byte, becomes U+FFFD. A sequence
/// split across two chunks is held back until the next chunk completes it.
#[derive(Default)]
pub struct TextSanitizer {
    tail: Vec<u8>,
}

const REPLACEMENT: &str = "\u{FFFD}";

impl TextSanitizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Convert the next chunk.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut input = std::mem::take(&mut self.tail);
        input.extend_from_slice(data);
        let mut out = Vec::with_capacity(input.len());
        let mut rest = &input[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    push_without_nul(&mut out, valid);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // SAFETY-free: `valid` is valid UTF-8 by construction.
                    push_without_nul(&mut out, std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(_) => {
                            out.extend_from_slice(REPLACEMENT.as_bytes());
                            rest = &after[1..];
                        }
                        None => {
                            // Incomplete sequence at the end: keep it for the next chunk.
                            self.tail = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// The stream ended: an incomplete sequence left over becomes replacement characters.
    pub fn finish(&mut self) -> Vec<u8> {
        let n = std::mem::take(&mut self.tail).len();
        REPLACEMENT.repeat(n).into_bytes()
    }
}

fn push_without_nul(out: &mut Vec<u8>, text: &str) {
    for (i, part) in text.split('\0').enumerate() {
        if i > 0 {
            out.extend_from_slice(REPLACEMENT.as_bytes());
        }
        out.extend_from_slice(part.as_bytes());
    }
}

/// A JSON object written field by field, in order (the reference bridge's field order).
pub struct JsonObject {
    buf: Vec<u8>,
}

impl JsonObject {
    pub fn new() -> Self {
        JsonObject { buf: vec![b'{'] }
    }

    /// Add a field with any JSON value.
    pub fn field(mut self, key: &str, value: &Value) -> Self {
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        // Serializing a string or a `Value` cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, key);
        self.buf.push(b':');
        let _ = serde_json::to_writer(&mut self.buf, value);
        self
    }

    /// Add a field whose value is already serialized JSON.
    pub fn raw(mut self, key: &str, json: &[u8]) -> Self {
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        let _ = serde_json::to_writer(&mut self.buf, key);
        self.buf.push(b':');
        self.buf.extend_from_slice(json);
        self
    }

    pub fn str(self, key: &str, value: &str) -> Self {
        self.field(key, &Value::String(value.to_owned()))
    }

    pub fn finish(mut self) -> bytes::Bytes {
        self.buf.push(b'}');
        bytes::Bytes::from(self.buf)
    }
}

impl Default for JsonObject {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_have_unpadded_nanoseconds() {
        assert_eq!(format_tag(12, 1700000000, 5000), "1:12-1700000000.5000");
        assert_eq!(format_tag(7, 1, 123456789), "1:7-1.123456789");
    }

    #[test]
    fn tag_of_missing_file_is_dash() {
        assert_eq!(
            tag_for_path(Path::new("/nonexistent/ferry/x")).as_deref(),
            Some("-")
        );
        let dir = std::env::temp_dir();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(tag_for_path(&dir), Some(tag_from_meta(&meta)));
        assert!(tag_from_meta(&meta).starts_with(&format!("1:{}-", meta.ino())));
    }

    #[test]
    fn error_texts_are_plain() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        assert_eq!(errno_name(libc::ENOTDIR), "ENOTDIR");
        assert_eq!(errno_name(4095), "E4095");
    }

    #[test]
    fn root_has_a_name() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(user_id("root"), Some(0));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_name(0).as_deref(), Some("root"));
        assert_eq!(user_id("no-such-user-ferry"), None);
    }

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical_path("/a//b/./c/"), "/a/b/c");
        assert_eq!(canonical_path("/a/b/../c"), "/a/c");
        assert_eq!(canonical_path("/../.."), "/");
        assert_eq!(canonical_path("/"), "/");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(canonical_path("x"), format!("{}/x", cwd.display()));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/d", "a"), "/d/a");
    }

    #[test]
    fn fnmatch_like_python() {
        assert!(fnmatch("*", "anything"));
        assert!(fnmatch("*", ".hidden"));
        assert!(fnmatch("*.txt", "a.txt"));
        assert!(!fnmatch("*.txt", "a.txt.bak"));
        assert!(fnmatch("a?c", "abc"));
        assert!(!fnmatch("a?c", "ac"));
        assert!(fnmatch("[ab]*", "bx"));
        assert!(!fnmatch("[!ab]*", "bx"));
        assert!(fnmatch("[a-c]x", "bx"));
        assert!(fnmatch("[]]", "]"));
        assert!(fnmatch("a[", "a["));
        assert!(fnmatch("*a*b*", "xxaxxbxx"));
        assert!(!fnmatch("*a*b", "xxaxxbxxc"));
        assert!(fnmatch("", ""));
        assert!(!fnmatch("", "a"));
    }

    #[test]
    fn sanitizer_replaces_each_bad_byte_and_nul() {
        let mut s = TextSanitizer::new();
        assert_eq!(
            s.push(b"a\0b\xff\xfec\n"),
            "a\u{FFFD}b\u{FFFD}\u{FFFD}c\n".as_bytes()
        );
        // A truncated sequence followed by ASCII: each byte is replaced.
        assert_eq!(s.push(b"\xe2\x82x"), "\u{FFFD}\u{FFFD}x".as_bytes());
        assert!(s.finish().is_empty());
    }

    #[test]
    fn sanitizer_joins_split_code_points() {
        let euro = "€".as_bytes();
        let mut s = TextSanitizer::new();
        assert_eq!(s.push(&euro[..1]), b"");
        assert_eq!(s.push(&euro[1..]), euro);
        assert_eq!(s.push(&euro[..2]), b"");
        assert_eq!(s.finish(), "\u{FFFD}\u{FFFD}".as_bytes());
    }

    #[test]
    fn json_object_keeps_field_order() {
        let out = JsonObject::new()
            .str("event", "created")
            .str("path", "/a \"b\"")
            .field("tag", &Value::Null)
            .finish();
        assert_eq!(
            &out[..],
            br#"{"event":"created","path":"/a \"b\"","tag":null}"#
        );
        assert_eq!(&JsonObject::new().finish()[..], b"{}");
    }
}
