//! A file or directory monitor with the event semantics of the reference bridge's (GIO's
//! inotify backend), used by `fswatch1` and `fslist1`:
//!
//! - a directory monitor watches the directory; a file monitor watches the file's parent and
//!   only reports events that name the file (including a rename from or to its name);
//! - the first `changed` of a file is sent at once, further ones at most every 800 ms, and the
//!   last one before `done-hint`;
//! - a created file gets `done-hint` when it is closed after writing, at once when it is not a
//!   fresh regular file (a directory, a hard link, ...), or 2 s after its last change;
//! - a move within the directory is `deleted` (old name), `created` and `done-hint` (new name);
//!   a move in is `created` + `done-hint`, a move out is `deleted`;
//! - when the watched directory is deleted or moved away, the monitor looks for it again every
//!   4 s, and reports `created` + `done-hint` for the watched name when it is back.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::fsutil;
use super::inotify::{Inotify, RawEvent};

const RATE_LIMIT: Duration = Duration::from_millis(800);
const VIRTUAL_CHANGES_DONE_DELAY: Duration = Duration::from_secs(2);
const MISSING_SCAN: Duration = Duration::from_secs(4);
const MOVE_PAIR_DELAY: Duration = Duration::from_millis(10);

const DIR_MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE
    | libc::IN_CREATE
    | libc::IN_DELETE_SELF
    | libc::IN_UNMOUNT
    | libc::IN_MOVE_SELF
    | libc::IN_CLOSE_WRITE
    | libc::IN_ONLYDIR;

/// What happened, in the words of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Changed,
    DoneHint,
    Deleted,
    Created,
    AttributeChanged,
    Unmounted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Changed => "changed",
            Kind::DoneHint => "done-hint",
            Kind::Deleted => "deleted",
            Kind::Created => "created",
            Kind::AttributeChanged => "attribute-changed",
            Kind::Unmounted => "unmounted",
        }
    }
}

/// One reported event: what happened to which path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub path: String,
}

/// Events as GIO's monitor source receives them from its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Created,
    Changed,
    DoneHint,
    MovedIn,
    MovedOut,
    Renamed,
    Deleted,
    AttributeChanged,
    Unmounted,
}

struct Pending {
    child: Option<String>,
    last_emission: Instant,
    dirty: bool,
}

impl Pending {
    fn ready_time(&self) -> Instant {
        if self.dirty {
            self.last_emission + RATE_LIMIT
        } else {
            self.last_emission + VIRTUAL_CHANGES_DONE_DELAY
        }
    }
}

/// Watches one file or directory.
pub struct Monitor {
    ino: Inotify,
    dirname: String,
    /// Set for a file monitor: the name of the file in `dirname`.
    basename: Option<String>,
    wd: Option<i32>,
    next_scan: Option<Instant>,
    pending: Vec<Pending>,
    queue: VecDeque<Event>,
    /// An unpaired `IN_MOVED_FROM` waiting briefly for its `IN_MOVED_TO`.
    held: Option<(RawEvent, Instant)>,
}

enum Wake {
    Events(io::Result<Vec<RawEvent>>),
    Timer,
}

impl Monitor {
    /// A monitor for `path` (canonicalized): a directory monitor when it is a directory now,
    /// a file monitor otherwise.
    pub fn new(path: &str) -> io::Result<Self> {
        let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
        if is_dir {
            Self::directory(path)
        } else {
            Self::file(path)
        }
    }

    /// A directory monitor for `path`.
    pub fn directory(path: &str) -> io::Result<Self> {
        Self::start(fsutil::canonical_path(path), None)
    }

    /// A file monitor for `path`.
    pub fn file(path: &str) -> io::Result<Self> {
        let path = fsutil::canonical_path(path);
        let (dir, base) = match path.rfind('/') {
            Some(0) if path.len() > 1 => ("/".to_owned(), path[1..].to_owned()),
            Some(at) if at + 1 < path.len() => (path[..at].to_owned(), path[at + 1..].to_owned()),
            _ => (path.clone(), path.clone()),
        };
        Self::start(dir, Some(base))
    }

    fn start(dirname: String, basename: Option<String>) -> io::Result<Self> {
        let mut monitor = Monitor {
            ino: Inotify::new()?,
            dirname,
            basename,
            wd: None,
            next_scan: None,
            pending: Vec::new(),
            queue: VecDeque::new(),
            held: None,
        };
        match monitor.ino.add_watch(Path::new(&monitor.dirname), DIR_MASK) {
            Ok(wd) => monitor.wd = Some(wd),
            Err(_) => monitor.next_scan = Some(Instant::now() + MISSING_SCAN),
        }
        Ok(monitor)
    }

    /// The next event. Cancel-safe.
    pub async fn next(&mut self) -> io::Result<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(event);
            }
            let deadline = self.deadline();
            let wake = tokio::select! {
                r = self.ino.read() => Wake::Events(r),
                _ = sleep_until_opt(deadline) => Wake::Timer,
            };
            match wake {
                Wake::Events(events) => {
                    let now = Instant::now();
                    self.process(events?, now);
                }
                Wake::Timer => self.timers(Instant::now()),
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let pending = self.pending.iter().map(Pending::ready_time);
        let others = [self.next_scan, self.held.as_ref().map(|(_, t)| *t)];
        pending.chain(others.into_iter().flatten()).min()
    }

    fn timers(&mut self, now: Instant) {
        if let Some((event, at)) = self.held.take() {
            if at <= now {
                self.dispatch_unpaired(event, now);
            } else {
                self.held = Some((event, at));
            }
        }
        if self.next_scan.is_some_and(|t| t <= now) {
            self.scan_missing(now);
        }
        // Pending changes that are due, oldest first.
        loop {
            let due = self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, p)| p.ready_time() <= now)
                .min_by_key(|(_, p)| p.ready_time())
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            if self.pending[i].dirty {
                let child = self.pending[i].child.clone();
                self.queue_event(Kind::Changed, child.as_deref());
                self.pending[i].last_emission = now;
                self.pending[i].dirty = false;
            } else {
                let change = self.pending.remove(i);
                self.queue_event(Kind::DoneHint, change.child.as_deref());
            }
        }
    }

    fn scan_missing(&mut self, now: Instant) {
        match self.ino.add_watch(Path::new(&self.dirname), DIR_MASK) {
            Ok(wd) => {
                self.wd = Some(wd);
                self.next_scan = None;
                let base = self.basename.clone();
                self.handle(Source::Created, base.as_deref(), None, now);
                self.handle(Source::DoneHint, base.as_deref(), None, now);
            }
            Err(_) => self.next_scan = Some(now + MISSING_SCAN),
        }
    }

    /// Handle a batch of kernel events, pairing renames.
    fn process(&mut self, mut events: Vec<RawEvent>, now: Instant) {
        if let Some((held, _)) = self.held.take() {
            events.insert(0, held);
        }
        let mut used = vec![false; events.len()];
        for i in 0..events.len() {
            if used[i] {
                continue;
            }
            let event = &events[i];
            if event.mask & libc::IN_MOVED_FROM != 0 {
                let pair = (i + 1..events.len()).find(|&j| {
                    !used[j]
                        && events[j].mask & libc::IN_MOVED_TO != 0
                        && events[j].cookie == event.cookie
                });
                match pair {
                    Some(j) => {
                        used[j] = true;
                        let (from, to) = (events[i].clone(), events[j].clone());
                        self.dispatch_rename(from, to, now);
                    }
                    None if i + 1 == events.len() => {
                        self.held = Some((events[i].clone(), now + MOVE_PAIR_DELAY));
                    }
                    None => self.dispatch_unpaired(events[i].clone(), now),
                }
            } else {
                self.dispatch_unpaired(events[i].clone(), now);
            }
        }
    }

    fn is_ours(&self, event: &RawEvent) -> bool {
        self.wd == Some(event.wd)
    }

    fn dispatch_rename(&mut self, from: RawEvent, to: RawEvent, now: Instant) {
        if !self.is_ours(&from) {
            return;
        }
        let old = name_of(&from);
        let new = name_of(&to);
        self.handle(Source::Renamed, old.as_deref(), new.as_deref(), now);
    }

    fn dispatch_unpaired(&mut self, event: RawEvent, now: Instant) {
        if !self.is_ours(&event) {
            return;
        }
        let mask = event.mask;
        if mask & libc::IN_IGNORED != 0 {
            self.go_missing(now);
            return;
        }
        let child = name_of(&event);
        let source = match mask & !libc::IN_ISDIR {
            libc::IN_MODIFY => Some(Source::Changed),
            libc::IN_CLOSE_WRITE => Some(Source::DoneHint),
            libc::IN_ATTRIB => Some(Source::AttributeChanged),
            libc::IN_MOVE_SELF | libc::IN_DELETE | libc::IN_DELETE_SELF => Some(Source::Deleted),
            libc::IN_CREATE => Some(Source::Created),
            libc::IN_MOVED_FROM => Some(Source::MovedOut),
            libc::IN_MOVED_TO => Some(Source::MovedIn),
            libc::IN_UNMOUNT => Some(Source::Unmounted),
            _ => None,
        };
        if let Some(source) = source {
            self.handle(source, child.as_deref(), None, now);
        }
        if mask & libc::IN_CREATE != 0 {
            // Not the result of creat() (a directory, a link, ...): no close will follow.
            let full = match &child {
                Some(c) => fsutil::join(&self.dirname, c),
                None => self.dirname.clone(),
            };
            let fresh_file = std::fs::metadata(&full).is_ok_and(|m| m.is_file() && m.nlink() == 1);
            if !fresh_file {
                self.handle(Source::DoneHint, child.as_deref(), None, now);
            }
        }
        if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_UNMOUNT) != 0 {
            self.go_missing(now);
        }
    }

    fn go_missing(&mut self, now: Instant) {
        if let Some(wd) = self.wd.take() {
            self.ino.rm_watch(wd);
        }
        if self.next_scan.is_none() {
            self.next_scan = Some(now + MISSING_SCAN);
        }
    }

    /// GIO's monitor source: filter, rate-limit and pair up events.
    fn handle(
        &mut self,
        source: Source,
        child: Option<&str>,
        rename_to: Option<&str>,
        now: Instant,
    ) {
        if let Some(base) = &self.basename {
            if child != Some(base.as_str()) && rename_to != Some(base.as_str()) {
                return;
            }
        }
        match source {
            Source::Created => {
                self.changes_done(child);
                self.queue_event(Kind::Created, child);
                self.add_pending(child, now);
            }
            Source::Changed => match self.find_pending(child) {
                None => {
                    self.queue_event(Kind::Changed, child);
                    self.add_pending(child, now);
                }
                Some(i) => self.pending[i].dirty = true,
            },
            Source::DoneHint => self.changes_done(child),
            Source::MovedIn => self.synthetic_created(child),
            Source::MovedOut | Source::Deleted => self.send_event(Kind::Deleted, child),
            Source::Renamed => {
                self.send_event(Kind::Deleted, child);
                self.synthetic_created(rename_to);
            }
            Source::AttributeChanged => self.send_event(Kind::AttributeChanged, child),
            Source::Unmounted => self.send_event(Kind::Unmounted, child),
        }
    }

    fn find_pending(&self, child: Option<&str>) -> Option<usize> {
        self.pending
            .iter()
            .position(|p| p.child.as_deref() == child)
    }

    fn add_pending(&mut self, child: Option<&str>, now: Instant) {
        self.pending.push(Pending {
            child: child.map(str::to_owned),
            last_emission: now,
            dirty: false,
        });
    }

    fn changes_done(&mut self, child: Option<&str>) {
        if let Some(i) = self.find_pending(child) {
            let change = self.pending.remove(i);
            if change.dirty {
                self.queue_event(Kind::Changed, child);
            }
            self.queue_event(Kind::DoneHint, child);
        }
    }

    fn send_event(&mut self, kind: Kind, child: Option<&str>) {
        self.changes_done(child);
        self.queue_event(kind, child);
    }

    fn synthetic_created(&mut self, child: Option<&str>) {
        self.changes_done(child);
        self.queue_event(Kind::Created, child);
        self.queue_event(Kind::DoneHint, child);
    }

    fn queue_event(&mut self, kind: Kind, child: Option<&str>) {
        let path = match child {
            Some(c) => fsutil::join(&self.dirname, c),
            None => self.dirname.clone(),
        };
        self.queue.push_back(Event { kind, path });
    }
}

fn name_of(event: &RawEvent) -> Option<String> {
    event
        .name
        .as_ref()
        .map(|n| String::from_utf8_lossy(n).into_owned())
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The JSON message for `event`, as `fswatch1` and `fslist1` send it: `event`, `path`,
/// `tag` (now), and for `created` the `type` of what was created (not following links).
pub fn event_message(event: &Event) -> bytes::Bytes {
    let path = Path::new(&event.path);
    let mut msg = fsutil::JsonObject::new()
        .str("event", event.kind.as_str())
        .str("path", &event.path)
        .field("tag", &fsutil::tag_value(path));
    if event.kind == Kind::Created {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            msg = msg.str("type", fsutil::type_name(&meta));
        }
    }
    msg.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scratch(name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("ferry-gmon-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.to_string_lossy().into_owned()
    }

    /// Collect events until none arrives for `quiet`.
    async fn collect(m: &mut Monitor, quiet: Duration) -> Vec<(Kind, String)> {
        let mut out = Vec::new();
        while let Ok(Ok(e)) = tokio::time::timeout(quiet, m.next()).await {
            out.push((e.kind, e.path));
        }
        out
    }

    #[tokio::test]
    async fn write_new_file_is_created_changed_done() {
        let dir = scratch("write");
        let mut m = Monitor::directory(&dir).unwrap();
        let f = format!("{dir}/new");
        std::fs::write(&f, b"hello").unwrap();
        let got = collect(&mut m, Duration::from_millis(300)).await;
        assert_eq!(
            got,
            vec![
                (Kind::Created, f.clone()),
                (Kind::Changed, f.clone()),
                (Kind::DoneHint, f.clone()),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn mkdir_gets_done_hint_at_once_and_rename_is_delete_create() {
        let dir = scratch("mkdir");
        let mut m = Monitor::directory(&dir).unwrap();
        std::fs::create_dir(format!("{dir}/d")).unwrap();
        std::fs::rename(format!("{dir}/d"), format!("{dir}/e")).unwrap();
        let got = collect(&mut m, Duration::from_millis(300)).await;
        assert_eq!(
            got,
            vec![
                (Kind::Created, format!("{dir}/d")),
                (Kind::DoneHint, format!("{dir}/d")),
                (Kind::Deleted, format!("{dir}/d")),
                (Kind::Created, format!("{dir}/e")),
                (Kind::DoneHint, format!("{dir}/e")),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn file_monitor_filters_other_names_but_sees_renames_onto_it() {
        let dir = scratch("file");
        let f = format!("{dir}/f");
        std::fs::write(&f, b"a").unwrap();
        let mut m = Monitor::new(&f).unwrap();
        std::fs::write(format!("{dir}/other"), b"x").unwrap();
        std::fs::write(format!("{dir}/tmp"), b"b").unwrap();
        std::fs::rename(format!("{dir}/tmp"), &f).unwrap();
        std::fs::remove_file(&f).unwrap();
        let got = collect(&mut m, Duration::from_millis(300)).await;
        assert_eq!(
            got,
            vec![
                (Kind::Deleted, format!("{dir}/tmp")),
                (Kind::Created, f.clone()),
                (Kind::DoneHint, f.clone()),
                (Kind::Deleted, f.clone()),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn changes_are_rate_limited() {
        use std::io::Write;
        let dir = scratch("rate");
        let f = format!("{dir}/f");
        std::fs::write(&f, b"a").unwrap();
        let mut m = Monitor::directory(&dir).unwrap();
        let mut file = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        file.write_all(b"1").unwrap();
        let first = m.next().await.unwrap();
        assert_eq!(
            first,
            Event {
                kind: Kind::Changed,
                path: f.clone()
            }
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        file.write_all(b"2").unwrap();
        // The second change is held back until 800 ms after the first.
        let start = Instant::now();
        let second = m.next().await.unwrap();
        assert_eq!(second.kind, Kind::Changed);
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        file.write_all(b"3").unwrap();
        drop(file);
        let got = collect(&mut m, Duration::from_millis(300)).await;
        assert_eq!(
            got,
            vec![(Kind::Changed, f.clone()), (Kind::DoneHint, f.clone())]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn symlink_gets_virtual_done_hint_after_two_seconds() {
        let dir = scratch("link");
        std::fs::write(format!("{dir}/x"), b"a").unwrap();
        let mut m = Monitor::directory(&dir).unwrap();
        let l = format!("{dir}/l");
        std::os::unix::fs::symlink("x", &l).unwrap();
        let start = Instant::now();
        let got = collect(&mut m, Duration::from_millis(2500)).await;
        assert_eq!(
            got,
            vec![(Kind::Created, l.clone()), (Kind::DoneHint, l.clone())]
        );
        assert!(start.elapsed() >= Duration::from_secs(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn deleted_directory_is_reported_and_found_again() {
        let dir = scratch("gone");
        let mut m = Monitor::directory(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        let got = collect(&mut m, Duration::from_millis(300)).await;
        assert_eq!(got, vec![(Kind::Deleted, dir.clone())]);
        std::fs::create_dir(&dir).unwrap();
        let got = collect(&mut m, Duration::from_millis(4500)).await;
        assert_eq!(
            got,
            vec![(Kind::Created, dir.clone()), (Kind::DoneHint, dir.clone())]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn event_message_fields() {
        let dir = scratch("msg");
        let f = format!("{dir}/f");
        std::fs::write(&f, b"a").unwrap();
        let meta = std::fs::metadata(&f).unwrap();
        let msg = event_message(&Event {
            kind: Kind::Created,
            path: f.clone(),
        });
        let expected = format!(
            r#"{{"event":"created","path":"{f}","tag":"{}","type":"file"}}"#,
            fsutil::tag_from_meta(&meta)
        );
        assert_eq!(std::str::from_utf8(&msg).unwrap(), expected);
        let msg = event_message(&Event {
            kind: Kind::Deleted,
            path: format!("{dir}/none"),
        });
        assert_eq!(
            std::str::from_utf8(&msg).unwrap(),
            format!(r#"{{"event":"deleted","path":"{dir}/none","tag":"-"}}"#)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
