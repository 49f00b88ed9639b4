//! The `Test` builder and helpers shared by every integration test.
//!
//! ```ignore
//! let output = Test::new()
//!     .args(["run", "local", "--", "uname", "-m"])
//!     .stdout("x86_64\n")
//!     .status(0)
//!     .run();
//! ```
//!
//! `run` starts the `ferry` binary built for these tests, in a process group of its own, feeds it
//! the given stdin (then closes it), and fails the test with everything it printed when it does
//! not finish within the timeout, or when an expectation is not met. Unless told otherwise each
//! test gets a fresh `XDG_CACHE_HOME`, so the local remote (`local`, `exec:` hops) starts cold.
#![allow(dead_code)] // Not every test binary module uses every helper.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The `ferry` binary under test.
/// Password logins as `ferry-pw` to the shared sshd, one test at a time: the prompt tests
/// count the failed ones in sshd's log, so a test that logs in with a wrong password holds
/// this too.
pub fn password_logins() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// What to do with `XDG_CACHE_HOME`.
enum CacheHome {
    /// A fresh temporary directory, kept in the [`Output`].
    Fresh,
    /// This directory (e.g. shared by a cold and a warm run).
    At(PathBuf),
    /// Whatever the test process has.
    Inherit,
}

enum Expect {
    Exactly(Vec<u8>),
    Contains(Vec<String>),
}

/// A run of `ferry` and what it must do.
pub struct Test {
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    stdin: Vec<u8>,
    cache_home: CacheHome,
    current_dir: Option<PathBuf>,
    stdout: Option<Vec<u8>>,
    stdout_contains: Vec<String>,
    stdout_lacks: Vec<String>,
    stderr: Option<Vec<u8>>,
    stderr_contains: Vec<String>,
    stderr_lacks: Vec<String>,
    status: Option<i32>,
    timeout: Duration,
}

impl Default for Test {
    fn default() -> Self {
        Test::new()
    }
}

impl Test {
    /// A run expecting exit status 0 (change with [`Test::status`] or [`Test::any_status`]).
    pub fn new() -> Test {
        Test {
            args: Vec::new(),
            env: Vec::new(),
            stdin: Vec::new(),
            cache_home: CacheHome::Fresh,
            current_dir: None,
            stdout: None,
            stdout_contains: Vec::new(),
            stdout_lacks: Vec::new(),
            stderr: None,
            stderr_contains: Vec::new(),
            stderr_lacks: Vec::new(),
            status: Some(0),
            timeout: Duration::from_secs(60),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Test {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// `--ssh-config FILE` for the shared loopback sshd (call after the subcommand).
    pub fn ssh_config(self) -> Test {
        let config = ferry_testbed::Sshd::shared().client_config();
        self.arg("--ssh-config").arg(config)
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Test {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Test {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    pub fn stdin(mut self, stdin: impl AsRef<[u8]>) -> Test {
        self.stdin = stdin.as_ref().to_vec();
        self
    }

    /// Use this directory as `XDG_CACHE_HOME` instead of a fresh one.
    pub fn cache_home(mut self, dir: impl Into<PathBuf>) -> Test {
        self.cache_home = CacheHome::At(dir.into());
        self
    }

    /// Leave `XDG_CACHE_HOME` as the test process has it.
    pub fn inherit_cache_home(mut self) -> Test {
        self.cache_home = CacheHome::Inherit;
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Test {
        self.current_dir = Some(dir.into());
        self
    }

    /// stdout must be exactly this.
    pub fn stdout(mut self, stdout: impl AsRef<[u8]>) -> Test {
        self.stdout = Some(stdout.as_ref().to_vec());
        self
    }

    pub fn stdout_contains(mut self, text: impl Into<String>) -> Test {
        self.stdout_contains.push(text.into());
        self
    }

    pub fn stdout_lacks(mut self, text: impl Into<String>) -> Test {
        self.stdout_lacks.push(text.into());
        self
    }

    /// stderr must be exactly this.
    pub fn stderr(mut self, stderr: impl AsRef<[u8]>) -> Test {
        self.stderr = Some(stderr.as_ref().to_vec());
        self
    }

    pub fn stderr_contains(mut self, text: impl Into<String>) -> Test {
        self.stderr_contains.push(text.into());
        self
    }

    pub fn stderr_lacks(mut self, text: impl Into<String>) -> Test {
        self.stderr_lacks.push(text.into());
        self
    }

    /// The exit status `ferry` must end with (default 0).
    pub fn status(mut self, code: i32) -> Test {
        self.status = Some(code);
        self
    }

    /// Accept any exit status (the caller looks at [`Output::status`] itself).
    pub fn any_status(mut self) -> Test {
        self.status = None;
        self
    }

    /// How long `ferry` may take (default 60 s); longer is a failure.
    pub fn timeout(mut self, timeout: Duration) -> Test {
        self.timeout = timeout;
        self
    }

    /// Run `ferry` and check every expectation; panics with the whole output on a failure.
    pub fn run(mut self) -> Output {
        let stdin = std::mem::take(&mut self.stdin);
        let mut running = self.spawn();
        let mut child_stdin = running.stdin.take().expect("piped stdin");
        // A broken pipe only means that ferry did not read everything: the test decides.
        std::thread::spawn(move || {
            let _ = child_stdin.write_all(&stdin);
        });
        running.finish()
    }

    /// Start `ferry` for a conversation (see [`Running`]); stdin given with [`Test::stdin`] is
    /// written first. The timeout counts from now.
    pub fn spawn(mut self) -> Running {
        let (cache_dir, cache_path) = match &self.cache_home {
            CacheHome::Fresh => {
                let dir = tempfile::Builder::new()
                    .prefix("ferry-it-cache-")
                    .tempdir()
                    .expect("temporary XDG_CACHE_HOME");
                let path = dir.path().to_owned();
                (Some(dir), Some(path))
            }
            CacheHome::At(path) => (None, Some(path.clone())),
            CacheHome::Inherit => (None, None),
        };
        let mut command = Command::new(ferry_bin());
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A session of its own: a process group to signal, and no controlling terminal, so
        // that ferry never asks on the terminal of whoever runs the tests.
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if let Some(path) = &cache_path {
            command.env("XDG_CACHE_HOME", path);
        }
        for (key, value) in &self.env {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        let shown = self.show();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{shown}: cannot start: {e}"));
        let stdout = Pipe::read(child.stdout.take().expect("piped stdout"));
        let stderr = Pipe::read(child.stderr.take().expect("piped stderr"));
        let mut stdin = child.stdin.take();
        let initial = std::mem::take(&mut self.stdin);
        if !initial.is_empty() {
            if let Some(pipe) = stdin.as_mut() {
                let _ = pipe.write_all(&initial);
            }
        }
        Running {
            deadline: Instant::now() + self.timeout,
            test: self,
            shown,
            child,
            stdin,
            stdout,
            stderr,
            cursor: 0,
            cache_dir,
            cache_path,
        }
    }

    fn show(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                let a = a.to_string_lossy();
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
                    format!("'{}'", a.replace('\'', r"'\''"))
                } else {
                    a.into_owned()
                }
            })
            .collect();
        format!("ferry {}", args.join(" "))
    }

    fn check(&self, output: &Output) {
        if let Some(code) = self.status {
            if output.status.code() != Some(code) {
                output.fail(&format!(
                    "exit status: expected {code}, got {}",
                    describe(output.status)
                ));
            }
        }
        for (name, actual, exact, contains, lacks) in [
            (
                "stdout",
                &output.stdout,
                &self.stdout,
                &self.stdout_contains,
                &self.stdout_lacks,
            ),
            (
                "stderr",
                &output.stderr,
                &self.stderr,
                &self.stderr_contains,
                &self.stderr_lacks,
            ),
        ] {
            let text = String::from_utf8_lossy(actual);
            if let Some(exact) = exact {
                if actual != exact {
                    output.fail(&format!(
                        "{name}: expected exactly\n{}",
                        String::from_utf8_lossy(exact)
                    ));
                }
            }
            for want in contains {
                if !text.contains(want.as_str()) {
                    output.fail(&format!("{name}: expected to contain {want:?}"));
                }
            }
            for unwanted in lacks {
                if text.contains(unwanted.as_str()) {
                    output.fail(&format!("{name}: must not contain {unwanted:?}"));
                }
            }
        }
    }
}

/// What a run of `ferry` did.
pub struct Output {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    cache_dir: Option<tempfile::TempDir>,
    cache_path: Option<PathBuf>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The `XDG_CACHE_HOME` the run had (fresh unless the test chose one).
    pub fn cache_home(&self) -> &Path {
        self.cache_path
            .as_deref()
            .expect("this run inherited XDG_CACHE_HOME")
    }

    /// Keep the fresh `XDG_CACHE_HOME` beyond this `Output` (for a second run).
    pub fn keep_cache_home(&mut self) -> tempfile::TempDir {
        self.cache_dir.take().expect("this run had no fresh cache")
    }

    /// The control messages on stdout (for `ferry connect`).
    pub fn control_messages(&self) -> Vec<serde_json::Value> {
        match parse_frames(&self.stdout) {
            Ok(frames) => frames
                .into_iter()
                .filter(|(channel, _)| channel.is_empty())
                .map(|(_, payload)| {
                    serde_json::from_slice(&payload).unwrap_or_else(|e| {
                        self.fail(&format!(
                            "control payload is not JSON ({e}): {}",
                            String::from_utf8_lossy(&payload)
                        ))
                    })
                })
                .collect(),
            Err(e) => self.fail(&format!("stdout is not a frame stream: {e}")),
        }
    }

    /// The first frame on stdout, which must be a control `init` message.
    pub fn init(&self) -> serde_json::Value {
        let messages = self.control_messages();
        let Some(first) = messages.into_iter().next() else {
            self.fail("stdout has no control message")
        };
        if first["command"] != "init" {
            self.fail(&format!("the first control message is not init: {first}"));
        }
        first
    }

    /// The `ferry: stats {...}` line of `--stats`.
    pub fn stats(&self) -> Stats {
        let text = self.stderr_str();
        let Some(json) = text.lines().find_map(|l| l.strip_prefix("ferry: stats ")) else {
            self.fail("stderr has no `ferry: stats` line")
        };
        let value: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| self.fail(&format!("stats line is not JSON: {e}")));
        let (Some(payload_bytes), Some(sent_bytes), Some(cached)) = (
            value["payload_bytes"].as_u64(),
            value["sent_bytes"].as_u64(),
            value["cached"].as_bool(),
        ) else {
            self.fail(&format!("stats line lacks a field: {value}"))
        };
        Stats {
            payload_bytes,
            sent_bytes,
            cached,
        }
    }

    /// Fail the test with this message and everything the run printed.
    pub fn fail(&self, message: &str) -> ! {
        panic!(
            "\n{}\n{message}\n--- exit status: {}\n--- stdout:\n{}\n--- stderr:\n{}\n---\n",
            self.command,
            describe(self.status),
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// What `--stats` reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub payload_bytes: u64,
    pub sent_bytes: u64,
    pub cached: bool,
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Split a Cockpit frame stream (`LEN\nCHANNEL\nPAYLOAD`...) into (channel, payload).
pub fn parse_frames(mut bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        match next_frame(bytes)? {
            Some((channel, payload, used)) => {
                frames.push((channel, payload));
                bytes = &bytes[used..];
            }
            None => return Err(format!("a frame is cut off: {} bytes left", bytes.len())),
        }
    }
    Ok(frames)
}

/// A whole frame as it goes on the wire.
pub fn frame(channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n{channel}\n", channel.len() + 1 + payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A control frame carrying `message`.
pub fn control(message: &serde_json::Value) -> Vec<u8> {
    frame("", message.to_string().as_bytes())
}

/// Everything read so far from one of ferry's output pipes, and whether it has ended.
#[derive(Clone)]
struct Pipe(Arc<(Mutex<PipeState>, Condvar)>);

/// The bytes read so far, and whether the pipe has ended.
type PipeState = (Vec<u8>, bool);

impl Pipe {
    fn read(mut source: impl Read + Send + 'static) -> Pipe {
        let pipe = Pipe(Arc::new((Mutex::new((Vec::new(), false)), Condvar::new())));
        let sink = pipe.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 16384];
            loop {
                let n = source.read(&mut chunk).unwrap_or(0);
                let (lock, changed) = &*sink.0;
                let mut state = lock.lock().unwrap();
                if n == 0 {
                    state.1 = true;
                    changed.notify_all();
                    break;
                }
                state.0.extend_from_slice(&chunk[..n]);
                changed.notify_all();
            }
        });
        pipe
    }

    fn bytes(&self) -> Vec<u8> {
        self.0 .0.lock().unwrap().0.clone()
    }

    fn ended(&self) -> bool {
        self.0 .0.lock().unwrap().1
    }

    /// Wait until `ready` says yes about (bytes, ended), or until `deadline`.
    fn wait_for<T>(
        &self,
        deadline: Instant,
        mut ready: impl FnMut(&[u8], bool) -> Option<T>,
    ) -> Option<T> {
        let (lock, changed) = &*self.0;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(value) = ready(&state.0, state.1) {
                return Some(value);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

/// A running `ferry`, for a conversation: send bytes, receive frames, then [`Running::finish`].
/// Every wait is bounded by the test's timeout; running past it fails the test with the output so
/// far.
pub struct Running {
    test: Test,
    shown: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Pipe,
    stderr: Pipe,
    /// How much of stdout [`Running::recv`] has consumed.
    cursor: usize,
    deadline: Instant,
    cache_dir: Option<tempfile::TempDir>,
    cache_path: Option<PathBuf>,
}

impl Running {
    /// Write to ferry's stdin.
    pub fn send(&mut self, bytes: &[u8]) {
        let result = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(bytes).and_then(|()| stdin.flush()),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.abort(&format!("cannot write to ferry's stdin: {e}"));
        }
    }

    /// Send a control message.
    pub fn send_control(&mut self, message: &serde_json::Value) {
        self.send(&control(message));
    }

    /// Close ferry's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next whole frame on stdout: (channel, payload).
    pub fn recv(&mut self) -> (String, Vec<u8>) {
        let cursor = self.cursor;
        let found = self.stdout.wait_for(self.deadline, |bytes, ended| {
            match next_frame(&bytes[cursor..]) {
                Ok(Some((channel, payload, used))) => Some(Ok((channel, payload, used))),
                Ok(None) if ended => Some(Err("stdout ended".to_string())),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            }
        });
        match found {
            Some(Ok((channel, payload, used))) => {
                self.cursor += used;
                (channel, payload)
            }
            Some(Err(e)) => self.abort(&format!("waiting for a frame: {e}")),
            None => self.abort(&format!(
                "no frame within the timeout of {:?}",
                self.test.timeout
            )),
        }
    }

    /// Open a `stream` channel `channel` running `argv` at the far end (after both `init`s)
    /// and return what it printed once it closes.
    pub fn stream_output(&mut self, channel: &str, argv: &[&str]) -> String {
        self.send_control(&serde_json::json!({
            "command": "open", "channel": channel, "payload": "stream", "spawn": argv,
        }));
        let mut out = Vec::new();
        loop {
            let (ch, payload) = self.recv();
            if ch == channel {
                out.extend(payload);
            } else if ch.is_empty() {
                let msg: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                if msg["command"] == "close" && msg["channel"] == channel {
                    return String::from_utf8_lossy(&out).into_owned();
                }
            }
        }
    }

    /// The next control message (frames on other channels before it are returned too, in order).
    pub fn recv_control(&mut self) -> (Vec<(String, Vec<u8>)>, serde_json::Value) {
        let mut skipped = Vec::new();
        loop {
            let (channel, payload) = self.recv();
            if channel.is_empty() {
                match serde_json::from_slice(&payload) {
                    Ok(message) => return (skipped, message),
                    Err(e) => self.abort(&format!("control payload is not JSON: {e}")),
                }
            }
            skipped.push((channel, payload));
        }
    }

    /// ferry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until ferry's stdout holds `text` (within the test's timeout).
    pub fn wait_stdout(&mut self, text: &str) {
        let found = self.stdout.wait_for(self.deadline, |bytes, ended| {
            if String::from_utf8_lossy(bytes).contains(text) {
                Some(true)
            } else {
                ended.then_some(false)
            }
        });
        if found != Some(true) {
            self.abort(&format!("stdout never showed {text:?}"));
        }
    }

    /// Send `signal` to ferry alone (not to its process group).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; this is ferry's own pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Wait for ferry to exit with its stdin still open (as a terminal would leave it), and
    /// check the expectations of the [`Test`].
    pub fn finish_with_stdin_open(self) -> Output {
        self.wait_exit()
    }

    /// Close stdin, wait for ferry to exit, and check the expectations of the [`Test`].
    pub fn finish(mut self) -> Output {
        self.stdin = None;
        self.wait_exit()
    }

    fn wait_exit(mut self) -> Output {
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < self.deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => self.abort(&format!(
                    "did not finish within {:?}; output so far below",
                    self.test.timeout
                )),
                Err(e) => self.abort(&format!("cannot wait for ferry: {e}")),
            }
        };
        // ferry has exited; whatever it started must let go of its output soon.
        let grace = Instant::now() + Duration::from_secs(10);
        let closed = self
            .stdout
            .wait_for(grace, |_, ended| ended.then_some(()))
            .and_then(|()| self.stderr.wait_for(grace, |_, ended| ended.then_some(())));
        let output = self.output(status);
        if closed.is_none() {
            self.kill_group();
            output.fail("exited, but something it started still holds stdout or stderr open");
        }
        self.test.check(&output);
        output
    }

    fn output(&mut self, status: ExitStatus) -> Output {
        Output {
            command: self.shown.clone(),
            status,
            stdout: self.stdout.bytes(),
            stderr: self.stderr.bytes(),
            cache_dir: self.cache_dir.take(),
            cache_path: self.cache_path.clone(),
        }
    }

    /// Kill ferry's process group and every process descended from ferry (some, like the command
    /// a bridge runs, live in process groups of their own).
    fn kill_group(&self) {
        let pid = self.child.id() as libc::pid_t;
        let mut victims = descendants(pid);
        victims.push(-pid);
        for victim in victims {
            // SAFETY: kill has no memory-safety preconditions; these are ferry's own processes.
            unsafe {
                libc::kill(victim, libc::SIGKILL);
            }
        }
    }

    /// Kill ferry and everything it started, then fail with the output so far.
    fn abort(&mut self, message: &str) -> ! {
        self.kill_group();
        let status = self.child.wait().expect("wait for the killed ferry");
        // Give the readers a moment to collect what was in the pipes.
        let soon = Instant::now() + Duration::from_millis(500);
        let _ = self.stdout.wait_for(soon, |_, ended| ended.then_some(()));
        let _ = self.stderr.wait_for(soon, |_, ended| ended.then_some(()));
        self.output(status).fail(message)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that panicked mid-conversation must not leave ferry behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

/// Every process below `root`, from /proc (parent pids).
fn descendants(root: libc::pid_t) -> Vec<libc::pid_t> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<libc::pid_t>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The first whole frame of `bytes`: (channel, payload, bytes used), or `None` if incomplete.
fn next_frame(bytes: &[u8]) -> Result<Option<(String, Vec<u8>, usize)>, String> {
    let Some(newline) = bytes.iter().position(|b| *b == b'\n') else {
        return if bytes.len() > 10 {
            Err(format!(
                "bad size line {:?}",
                String::from_utf8_lossy(bytes)
            ))
        } else {
            Ok(None)
        };
    };
    let size: usize = std::str::from_utf8(&bytes[..newline])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "bad size line {:?}",
                String::from_utf8_lossy(&bytes[..newline])
            )
        })?;
    let rest = &bytes[newline + 1..];
    if rest.len() < size {
        return Ok(None);
    }
    let frame = &rest[..size];
    let channel_end = frame
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("a frame without a channel line")?;
    let channel = String::from_utf8(frame[..channel_end].to_vec())
        .map_err(|_| "a channel that is not UTF-8")?;
    Ok(Some((
        channel,
        frame[channel_end + 1..].to_vec(),
        newline + 1 + size,
    )))
}
