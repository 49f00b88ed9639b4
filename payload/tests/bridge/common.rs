//! Drives the built `ferry-bridge` binary: writes frames to its stdin, reads frames from its
//! stdout on a thread, and hands them to the test with a timeout.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The bridge under test: `FERRY_BRIDGE_BIN` if set (e.g. a payload build for another
/// architecture, run through qemu-user), else the one cargo built for these tests.
pub fn bin() -> String {
    std::env::var("FERRY_BRIDGE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry-bridge").into())
}

/// One frame read from the bridge.
#[derive(Debug, Clone)]
pub enum Out {
    Control(Value),
    Data(String, Vec<u8>),
}

impl Out {
    pub fn command(&self) -> Option<&str> {
        match self {
            Out::Control(v) => v["command"].as_str(),
            Out::Data(..) => None,
        }
    }

    pub fn channel(&self) -> Option<&str> {
        match self {
            Out::Control(v) => v["channel"].as_str(),
            Out::Data(ch, _) => Some(ch),
        }
    }
}

pub fn frame(channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(channel.len() + 1 + payload.len());
    body.extend_from_slice(channel.as_bytes());
    body.push(b'\n');
    body.extend_from_slice(payload);
    let mut out = format!("{}\n", body.len()).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Read one frame; `None` at the end of the stream.
pub fn read_frame(r: &mut impl Read) -> Option<(String, Vec<u8>)> {
    let mut size = Vec::new();
    let mut byte = [0u8];
    loop {
        if r.read(&mut byte).ok()? == 0 {
            return None;
        }
        if byte[0] == b'\n' {
            break;
        }
        size.push(byte[0]);
    }
    let size: usize = std::str::from_utf8(&size).ok()?.parse().ok()?;
    let mut body = vec![0u8; size];
    r.read_exact(&mut body).ok()?;
    let nl = body.iter().position(|&b| b == b'\n')?;
    let payload = body.split_off(nl + 1);
    body.truncate(nl);
    Some((String::from_utf8(body).ok()?, payload))
}

pub struct Bridge {
    pub child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Out>,
    /// The bridge's `init`.
    pub init: Value,
}

impl Bridge {
    /// Start the bridge, read its `init`, and send ours.
    pub fn start() -> Bridge {
        let mut b = Bridge::spawn(Stdio::null());
        b.control(json!({"command": "init", "version": 1, "host": "localhost"}));
        b
    }

    /// Start the bridge with extra environment variables, read its `init`, and send ours.
    pub fn start_env(env: &[(&str, String)]) -> Bridge {
        let mut b = Bridge::spawn_env(Stdio::null(), env);
        b.control(json!({"command": "init", "version": 1, "host": "localhost"}));
        b
    }

    /// Start the bridge with its stderr going to `stderr`; read its `init`, send nothing.
    pub fn spawn(stderr: Stdio) -> Bridge {
        Bridge::spawn_env(stderr, &[])
    }

    /// [`Bridge::spawn`] with extra environment variables.
    pub fn spawn_env(stderr: Stdio, env: &[(&str, String)]) -> Bridge {
        let mut child = Command::new(bin())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start ferry-bridge");
        let stdin = child.stdin.take();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            while let Some((ch, payload)) = read_frame(&mut stdout) {
                let out = if ch.is_empty() {
                    Out::Control(serde_json::from_slice(&payload).expect("control is JSON"))
                } else {
                    Out::Data(ch, payload)
                };
                if tx.send(out).is_err() {
                    break;
                }
            }
        });
        let mut b = Bridge {
            child,
            stdin,
            frames: rx,
            init: Value::Null,
        };
        let init = b.recv();
        assert_eq!(init.command(), Some("init"), "{init:?}");
        if let Out::Control(v) = init {
            b.init = v;
        }
        b
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(bytes).expect("write to the bridge");
        stdin.flush().unwrap();
    }

    /// Like `write`, but the bridge may already have gone.
    pub fn try_write(&mut self, bytes: &[u8]) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        stdin.write_all(bytes).is_ok() && stdin.flush().is_ok()
    }

    pub fn control(&mut self, message: Value) {
        self.write(&frame("", message.to_string().as_bytes()));
    }

    pub fn data(&mut self, channel: &str, payload: &[u8]) {
        self.write(&frame(channel, payload));
    }

    pub fn open(&mut self, channel: &str, mut options: Value) {
        options["command"] = "open".into();
        options["channel"] = channel.into();
        self.control(options);
    }

    /// Take the bridge's stdin, to write from another thread.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin is open")
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next frame; panics after [`TIMEOUT`].
    pub fn recv(&self) -> Out {
        self.recv_timeout(TIMEOUT).expect("a frame from the bridge")
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Option<Out> {
        match self.frames.recv_timeout(timeout) {
            Ok(out) => Some(out),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Frames until the bridge's output ends.
    pub fn rest(&self) -> Vec<Out> {
        let mut all = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while let Some(out) = self.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            all.push(out);
        }
        all
    }

    /// Read until the control message `command` for `channel` (any channel for `None`);
    /// returns it and the data of `channel` seen on the way.
    pub fn until(&self, command: &str, channel: Option<&str>) -> (Value, Vec<u8>) {
        let mut data = Vec::new();
        loop {
            match self.recv() {
                Out::Control(v)
                    if v["command"] == command
                        && channel.is_none_or(|c| v["channel"].as_str() == Some(c)) =>
                {
                    return (v, data);
                }
                Out::Data(ch, d) if Some(ch.as_str()) == channel => data.extend_from_slice(&d),
                _ => {}
            }
        }
    }

    /// Read until `channel` closes; returns the `close` and all data of the channel.
    pub fn until_close(&self, channel: &str) -> (Value, Vec<u8>) {
        self.until("close", Some(channel))
    }

    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the bridge did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Is there a live (not zombie) process with this pid?
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the command name in parentheses.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Wait until `pid` is gone; `false` if it is still alive after a few seconds.
pub fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
