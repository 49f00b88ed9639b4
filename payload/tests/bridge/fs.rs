//! File channels: what they do to the files they touch, and that no file operation can
//! freeze the bridge.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{Bridge, Out};

/// A fresh directory, removed when dropped; reachable by every user (for `nobody`'s files).
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("ferry-bridge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Dir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .unwrap();
    u32::from_str_radix(v.trim(), 8).unwrap()
}

/// The tag fsread1 reports for `path`.
fn tag_of(b: &mut Bridge, path: &Path) -> String {
    b.open(
        "tag",
        json!({"payload": "fsread1", "path": path.to_str().unwrap()}),
    );
    let (close, _) = b.until_close("tag");
    close["tag"].as_str().unwrap().to_owned()
}

/// Replace `path` with `content`, with `tag` if given; returns the `close`. Before `done`,
/// checks that every temporary file beside the target is private.
fn replace(b: &mut Bridge, path: &Path, tag: Option<&str>, content: &[u8]) -> Value {
    let mut open = json!({"payload": "fsreplace1", "path": path.to_str().unwrap()});
    if let Some(tag) = tag {
        open["tag"] = tag.into();
    }
    b.open("r", open);
    let (ready, _) = b.until("ready", Some("r"));
    assert_eq!(ready["channel"], "r");
    b.data("r", content);
    // The data is written before the bridge answers the ping on the channel.
    b.control(json!({"command": "ping", "channel": "r", "sequence": 1}));
    b.until("pong", Some("r"));
    let dir = path.parent().unwrap();
    // Beside the target, named after it.
    let mut temps = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(".ferry-tmp.") {
            let mode = entry.metadata().unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o600, "temporary file {:?}", entry.path());
            temps += 1;
        }
    }
    assert_eq!(temps, 1, "one temporary file while writing");
    b.control(json!({"command": "done", "channel": "r"}));
    b.until_close("r").0
}

#[test]
fn fsreplace_with_a_tag_keeps_owner_group_and_mode() {
    let dir = Dir::new("fsreplace-owner");
    let file = dir.path("f");
    std::fs::write(&file, b"old\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    // As root, hand the file to nobody:nogroup (65534), as in the report.
    let owner = if is_root() {
        std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
        (65534, 65534)
    } else {
        let m = std::fs::metadata(&file).unwrap();
        (m.uid(), m.gid())
    };
    let mut b = Bridge::start();
    let tag = tag_of(&mut b, &file);
    let close = replace(&mut b, &file, Some(&tag), b"new\n");
    assert!(close.get("problem").is_none(), "{close}");
    let m = std::fs::metadata(&file).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"new\n");
    assert_eq!((m.uid(), m.gid()), owner);
    assert_eq!(m.mode() & 0o7777, 0o640);

    // Without a tag: a new file (and a replaced one) follows the umask, owned by the bridge's user.
    let fresh = dir.path("fresh");
    let close = replace(&mut b, &fresh, None, b"x");
    assert!(close.get("problem").is_none(), "{close}");
    let m = std::fs::metadata(&fresh).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o666 & !umask());
    // SAFETY: geteuid has no preconditions.
    assert_eq!(m.uid(), unsafe { libc::geteuid() });

    // `attrs` win over the replaced file's.
    let tag = tag_of(&mut b, &file);
    b.open(
        "a",
        json!({"payload": "fsreplace1", "path": file.to_str().unwrap(), "tag": tag,
               "attrs": {"mode": 0o600}}),
    );
    b.data("a", b"attrs\n");
    b.control(json!({"command": "done", "channel": "a"}));
    let (close, _) = b.until_close("a");
    assert!(close.get("problem").is_none(), "{close}");
    let m = std::fs::metadata(&file).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!((m.uid(), m.gid()), owner);
}

/// The bridge answers a ping on the control channel within a second.
fn responsive(b: &mut Bridge) -> bool {
    b.control(json!({"command": "ping"}));
    let deadline = Instant::now() + Duration::from_secs(1);
    while let Some(out) = b.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if out.command() == Some("pong") && out.channel().is_none() {
            return true;
        }
    }
    false
}

#[test]
fn fsread_of_a_fifo_without_writer_never_freezes_the_bridge() {
    let dir = Dir::new("fifo");
    let fifo = dir.path("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let mut b = Bridge::start();
    b.open(
        "f",
        json!({"payload": "fsread1", "path": fifo.to_str().unwrap()}),
    );
    // Other channels carry on meanwhile.
    b.open("e", json!({"payload": "echo"}));
    b.data("e", b"still here");
    let mut echoed = false;
    let mut closed = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(echoed && closed.is_some()) {
        match b.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Some(Out::Data(ch, d)) if ch == "e" => echoed = d == b"still here",
            Some(Out::Control(v)) if v["command"] == "close" && v["channel"] == "f" => {
                closed = Some(v)
            }
            Some(_) => {}
            None => panic!("the bridge froze: echoed {echoed}, closed {closed:?}"),
        }
    }
    // A FIFO is not a regular file: refused at once, not waited on.
    assert_eq!(closed.unwrap()["problem"], "internal-error");
    assert!(responsive(&mut b));

    // /proc files that wait for events behave the same: a closed channel ends, the bridge
    // stays responsive, and the end of the input ends the bridge.
    b.open(
        "k",
        json!({"payload": "fsread1", "path": fifo.to_str().unwrap(), "binary": "raw"}),
    );
    b.control(json!({"command": "close", "channel": "k"}));
    assert!(responsive(&mut b));
    b.close_stdin();
    assert!(b.wait().success());
}
