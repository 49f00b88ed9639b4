//! A small asynchronous wrapper around Linux inotify (through libc, no C code of our own).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::io::unix::AsyncFd;

/// One event as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub wd: i32,
    pub mask: u32,
    pub cookie: u32,
    /// The name of the entry inside a watched directory; `None` for the watched object itself.
    pub name: Option<Vec<u8>>,
}

/// An inotify instance.
pub struct Inotify {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

/// Size of `struct inotify_event` without the name.
const HEADER: usize = 16;

impl Inotify {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call without pointers.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns the descriptor, so it stays open and the same for its
        // whole lifetime.
        let fd = unsafe { AsyncFd::register(owned) }.map_err(io::Error::from)?;
        Ok(Inotify {
            fd,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Watch `path` for the events in `mask`; returns the watch descriptor.
    pub fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `cpath` is a valid NUL-terminated string for the duration of the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), cpath.as_ptr(), mask) };
        if wd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(wd)
        }
    }

    /// Stop a watch (errors are ignored: the watch may already be gone).
    pub fn rm_watch(&self, wd: i32) {
        // SAFETY: plain system call without pointers.
        unsafe {
            libc::inotify_rm_watch(self.fd.as_raw_fd(), wd);
        }
    }

    /// Wait for events and return all that are available.
    pub async fn read(&mut self) -> io::Result<Vec<RawEvent>> {
        let Inotify { fd, buf } = self;
        loop {
            let mut guard = fd.readable().await?;
            if let Ok(result) = guard.try_io(|inner| read_into(inner.as_raw_fd(), buf)) {
                return result;
            }
        }
    }

    /// The events available now, without waiting (an empty list when there are none).
    #[cfg(test)]
    pub fn try_read(&mut self) -> io::Result<Vec<RawEvent>> {
        match read_into(self.fd.as_raw_fd(), &mut self.buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Vec::new()),
            other => other,
        }
    }
}

fn read_into(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<Vec<RawEvent>> {
    // SAFETY: `buf` is valid for writes of its whole length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(parse_events(&buf[..n as usize]))
}

/// Parse a buffer of `struct inotify_event` records; a truncated record ends the list.
pub fn parse_events(mut data: &[u8]) -> Vec<RawEvent> {
    let mut events = Vec::new();
    let word = |b: &[u8], at: usize| -> [u8; 4] { [b[at], b[at + 1], b[at + 2], b[at + 3]] };
    while data.len() >= HEADER {
        let wd = i32::from_ne_bytes(word(data, 0));
        let mask = u32::from_ne_bytes(word(data, 4));
        let cookie = u32::from_ne_bytes(word(data, 8));
        let len = u32::from_ne_bytes(word(data, 12)) as usize;
        let Some(raw_name) = data.get(HEADER..HEADER + len) else {
            break;
        };
        let end = raw_name.iter().position(|&b| b == 0).unwrap_or(len);
        let name = (end > 0).then(|| raw_name[..end].to_vec());
        events.push(RawEvent {
            wd,
            mask,
            cookie,
            name,
        });
        data = &data[HEADER + len..];
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(wd: i32, mask: u32, cookie: u32, name: &[u8], pad: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&wd.to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&cookie.to_ne_bytes());
        let len = if name.is_empty() { 0 } else { name.len() + pad };
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        if !name.is_empty() {
            v.extend_from_slice(name);
            v.resize(v.len() + pad, 0);
        }
        v
    }

    #[test]
    fn parses_records_with_and_without_names() {
        let mut buf = record(1, libc::IN_CREATE, 0, b"file", 4);
        buf.extend(record(1, libc::IN_DELETE_SELF, 0, b"", 0));
        buf.extend(record(2, libc::IN_MOVED_FROM, 7, b"x", 15));
        let events = parse_events(&buf);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].name.as_deref(), Some(&b"file"[..]));
        assert_eq!(events[0].mask, libc::IN_CREATE);
        assert_eq!(events[1].name, None);
        assert_eq!(events[2].cookie, 7);
        assert_eq!(events[2].wd, 2);
        assert_eq!(events[2].name.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn truncated_record_is_dropped() {
        let buf = record(1, libc::IN_CREATE, 0, b"file", 4);
        assert!(parse_events(&buf[..buf.len() - 1]).is_empty());
        assert!(parse_events(&buf[..10]).is_empty());
    }

    #[tokio::test]
    async fn sees_a_created_file() {
        let dir = std::env::temp_dir().join(format!("ferry-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ino = Inotify::new().unwrap();
        let wd = ino.add_watch(&dir, libc::IN_CREATE).unwrap();
        assert!(ino.try_read().unwrap().is_empty());
        std::fs::write(dir.join("a"), b"x").unwrap();
        let events = ino.read().await.unwrap();
        assert_eq!(events[0].wd, wd);
        assert_eq!(events[0].mask & libc::IN_CREATE, libc::IN_CREATE);
        assert_eq!(events[0].name.as_deref(), Some(&b"a"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
