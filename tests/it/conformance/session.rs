//! Runs one scenario against one bridge command and records what it answered.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::scenario::{DataMode, Plan, Scenario, Server, Setup, Step};
use super::servers;
use super::transcript::{Transcript, DATA_SO_FAR};

/// How long an `expect` waits unless the scenario says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the bridge may take to exit once its input is closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the reader thread saw on the bridge's stdout.
enum Out {
    Frame(String, Vec<u8>),
    Malformed(String),
    Eof,
}

/// The result of one run: the transcript and whatever the bridge wrote on stderr.
pub struct Run {
    pub transcript: Transcript,
    pub stderr: String,
}

/// Run `scenario` against `bridge` (a program and its arguments) in a fresh temporary directory.
pub fn run(scenario: &Scenario, bridge: &[String]) -> Result<Run, String> {
    let tmp = tempfile::Builder::new()
        .prefix("ferry-conformance-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    // Resolve symlinks so that paths the bridge reports match the substituted ones.
    let root = tmp
        .path()
        .canonicalize()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let root_str = root
        .to_str()
        .ok_or("temporary path is not UTF-8")?
        .to_owned();

    let mut vars = BTreeMap::from([("TMP".to_owned(), root_str.clone())]);
    let mut running = Vec::new();
    for server in &scenario.servers {
        match server {
            Server::Http => {
                let sock = root.join("http.sock");
                let (s, port) = servers::http(&sock).map_err(|e| format!("http server: {e}"))?;
                running.extend(s);
                vars.insert("HTTP_PORT".into(), port.to_string());
                vars.insert("HTTP_SOCKET".into(), sock.display().to_string());
            }
            Server::TcpEcho => {
                let (s, port) = servers::tcp_echo().map_err(|e| format!("echo server: {e}"))?;
                running.extend(s);
                vars.insert("TCP_PORT".into(), port.to_string());
            }
            Server::UnixEcho => {
                let sock = root.join("echo.sock");
                running.push(servers::unix_echo(&sock).map_err(|e| format!("echo server: {e}"))?);
                vars.insert("UNIX_SOCKET".into(), sock.display().to_string());
            }
            // Started below: the buses are not a thread of this process.
            Server::Dbus => {}
        }
    }
    let mut buses = None;
    if scenario.servers.contains(&Server::Dbus) {
        let b = ferry_testbed::TestBuses::start().map_err(|e| format!("test buses: {e}"))?;
        vars.insert("DBUS_SESSION".into(), b.session.clone());
        buses = Some(b);
    }
    let mut plan = scenario.plan(&vars).map_err(|e| e.to_string())?;
    if let Some(b) = &buses {
        plan.env
            .extend(b.env().into_iter().map(|(k, v)| (k.to_owned(), v)));
        // Without an agent socket, cockpit-bridge 287 starts an ssh-agent of its own.
        plan.env.push(("SSH_AUTH_SOCK".into(), "/dev/null".into()));
    }
    setup(&root, &plan.setup)?;

    let mut session = Session::start(bridge, &plan, &root_str)?;
    session.perform(&plan);
    let transcript = session.finish();
    drop(running);
    drop(buses);
    // Undo `chmod 000` and the like so the directory can be removed.
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("u+rwx")
        .arg(&root)
        .status();
    Ok(Run {
        transcript,
        stderr: session.stderr(),
    })
}

fn setup(root: &Path, steps: &[Setup]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let at = |p: &str| -> PathBuf { root.join(p) };
    for step in steps {
        let result = match step {
            Setup::Mkdir(p) => std::fs::create_dir_all(at(p)),
            Setup::Write(p, data) => std::fs::write(at(p), data),
            Setup::Fill(p, size) => fill(&at(p), *size),
            Setup::Chmod(mode, p) => {
                std::fs::set_permissions(at(p), std::fs::Permissions::from_mode(*mode))
            }
            Setup::Symlink(target, p) => std::os::unix::fs::symlink(target, at(p)),
        };
        result.map_err(|e| format!("setup {step:?}: {e}"))?;
    }
    Ok(())
}

/// A file of `size` bytes of a repeating, non-trivial pattern.
fn fill(path: &Path, size: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let block: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()
}

struct Session {
    child: Child,
    input: Option<Sender<Vec<u8>>>,
    output: Receiver<Out>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr_text: String,
    transcript: Transcript,
    root: String,
    modes: BTreeMap<String, DataMode>,
    /// Control messages seen, per (channel, command).
    seen: HashMap<(String, String), usize>,
    /// Control messages waited for so far, per (channel, command).
    waited: HashMap<(String, String), usize>,
    data_bytes: HashMap<String, u64>,
    data_frames: HashMap<String, u64>,
    /// (channel, id) of the JSON documents with a string `id` each channel sent.
    data_ids: std::collections::HashSet<(String, String)>,
    autopong: bool,
    eof: bool,
    exited: bool,
    timeout: Duration,
}

impl Session {
    fn start(bridge: &[String], plan: &Plan, root: &str) -> Result<Session, String> {
        let (program, args) = bridge.split_first().ok_or("empty bridge command")?;
        // As a test user: through setpriv, with the user's own groups (the runner is root).
        let user = plan.user.as_deref().map(ferry_testbed::user);
        let mut cmd = match &user {
            None => Command::new(program),
            Some(u) => {
                let name = u.name();
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &name, "--regid", &name, "--init-groups", "--"])
                    .arg(program);
                // The run's temporary directory is its working directory: make it the user's.
                std::os::unix::fs::chown(root, u.uid(), None)
                    .map_err(|e| format!("chown {root} to {name}: {e}"))?;
                c
            }
        };
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            )
            .env("LANG", "C.UTF-8")
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that everything it started can be killed at the end.
            .process_group(0);
        match &user {
            None => {
                cmd.env(
                    "HOME",
                    std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
                );
                for var in ["USER", "LOGNAME"] {
                    if let Some(v) = std::env::var_os(var) {
                        cmd.env(var, v);
                    }
                }
            }
            Some(u) => {
                cmd.env("HOME", u.home())
                    .env("USER", u.name())
                    .env("LOGNAME", u.name());
            }
        }
        for (k, v) in &plan.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;

        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let (input, input_rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for chunk in input_rx {
                if stdin.write_all(&chunk).is_err() {
                    // The bridge is gone: drain what is left so senders never block.
                    continue;
                }
            }
            // Dropping stdin here closes the bridge's input.
        });

        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let (out_tx, output) = mpsc::channel();
        std::thread::spawn(move || read_frames(&mut stdout, &out_tx));

        let mut stderr_pipe = child.stderr.take().ok_or("no stderr")?;
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut buf);
            buf
        });

        Ok(Session {
            child,
            input: Some(input),
            output,
            stderr: Some(stderr),
            stderr_text: String::new(),
            transcript: Transcript::default(),
            root: root.to_owned(),
            modes: plan.modes.clone(),
            seen: HashMap::new(),
            waited: HashMap::new(),
            data_bytes: HashMap::new(),
            data_frames: HashMap::new(),
            data_ids: std::collections::HashSet::new(),
            autopong: false,
            eof: false,
            exited: false,
            timeout: plan.timeout.unwrap_or(DEFAULT_TIMEOUT),
        })
    }

    fn send(&mut self, bytes: Vec<u8>) {
        if let Some(input) = &self.input {
            let _ = input.send(bytes);
        }
    }

    fn send_frame(&mut self, channel: &str, payload: &[u8]) {
        let mut frame = format!("{}\n{channel}\n", channel.len() + 1 + payload.len()).into_bytes();
        frame.extend_from_slice(payload);
        self.send(frame);
    }

    fn send_control(&mut self, message: &Value) {
        self.send_frame("", message.to_string().as_bytes());
    }

    /// Record one thing from the bridge.
    fn record(&mut self, out: Out) {
        match out {
            Out::Eof => self.exited = true,
            Out::Malformed(text) => self.transcript.malformed(text),
            Out::Frame(channel, payload) => {
                // Paths under the temporary directory differ per run.
                let payload = replace_bytes(&payload, self.root.as_bytes(), b"${TMP}");
                if channel.is_empty() {
                    let value: Value = match serde_json::from_slice(&payload) {
                        Ok(v) => v,
                        Err(_) => {
                            let text = String::from_utf8_lossy(&payload);
                            self.transcript
                                .malformed(format!("control payload is not JSON: {text:?}"));
                            return;
                        }
                    };
                    let about = value
                        .get("channel")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let command = value
                        .get("command")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let mut value = value;
                    if command == "ping" && !about.is_empty() {
                        if self.autopong {
                            let mut pong = value.clone();
                            pong["command"] = json!("pong");
                            self.send_control(&pong);
                        }
                        // A flow-control ping counts the bytes sent on the channel so far;
                        // where it falls depends on how the data was chunked. Mark the ones
                        // that count right, so that they can be compared without chunking.
                        let sent = self.data_bytes.get(&about).copied().unwrap_or(0);
                        if value.get("sequence").and_then(Value::as_u64) == Some(sent) {
                            value["sequence"] = json!(DATA_SO_FAR);
                        }
                    }
                    *self.seen.entry((about.clone(), command)).or_default() += 1;
                    self.transcript.push_control(&about, value);
                } else {
                    *self.data_bytes.entry(channel.clone()).or_default() += payload.len() as u64;
                    *self.data_frames.entry(channel.clone()).or_default() += 1;
                    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&payload) {
                        if let Some(Value::String(id)) = m.get("id") {
                            self.data_ids.insert((channel.clone(), id.clone()));
                        }
                    }
                    let mode = self.modes.get(&channel).copied();
                    self.transcript.push_data(&channel, &payload, mode);
                }
            }
        }
    }

    /// Record output until `done` holds, the deadline passes, or the output ends.
    /// Returns whether `done` held.
    fn pump(&mut self, deadline: Instant, done: &dyn Fn(&Session) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if self.exited {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match self.output.recv_timeout(deadline - now) {
                Ok(out) => self.record(out),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.exited = true,
            }
        }
    }

    fn perform(&mut self, plan: &Plan) {
        if !plan.manual_init {
            let deadline = Instant::now() + self.timeout;
            let key = (String::new(), "init".to_owned());
            if !self.pump(deadline, &|s| s.seen.get(&key).copied().unwrap_or(0) >= 1) {
                self.transcript
                    .note("the bridge sent no init (runner's init exchange)".into());
                return;
            }
            self.send_control(&json!({"command": "init", "version": 1, "host": "localhost"}));
        }
        for (line, step) in &plan.steps {
            if !self.step(*line, step) {
                return;
            }
        }
    }

    /// Perform one step; `false` when an `expect` timed out (the rest is then skipped).
    fn step(&mut self, line: usize, step: &Step) -> bool {
        let deadline = Instant::now() + self.timeout;
        let ok = match step {
            Step::Control(m) => {
                self.send_control(&Value::Object(m.clone()));
                true
            }
            Step::Data {
                channel,
                data,
                repeat,
            } => {
                for _ in 0..*repeat {
                    self.send_frame(channel, data);
                    // Keep up with the output, so that pings get their pongs in time.
                    while let Ok(out) = self.output.try_recv() {
                        self.record(out);
                    }
                }
                true
            }
            Step::Raw(bytes) => {
                self.send(bytes.clone());
                true
            }
            Step::ExpectControl { channel, command } => {
                let key = (channel.clone(), command.clone());
                let want = {
                    let w = self.waited.entry(key.clone()).or_default();
                    *w += 1;
                    *w
                };
                self.pump(deadline, &|s| {
                    s.seen.get(&key).copied().unwrap_or(0) >= want
                })
            }
            Step::ExpectData { channel, bytes } => self.pump(deadline, &|s| {
                s.data_bytes.get(channel).copied().unwrap_or(0) >= *bytes
            }),
            Step::ExpectReply { channel, id } => self.pump(deadline, &|s| {
                s.data_ids.contains(&(channel.clone(), id.clone()))
            }),
            Step::ExpectFrames { channel, frames } => self.pump(deadline, &|s| {
                s.data_frames.get(channel).copied().unwrap_or(0) >= *frames
            }),
            Step::ExpectExit => {
                self.pump(deadline, &|_| false);
                self.exited
            }
            Step::Sleep(d) => {
                self.pump(Instant::now() + *d, &|_| false);
                true
            }
            Step::Autopong => {
                self.autopong = true;
                true
            }
            Step::Eof => {
                self.close_input();
                true
            }
        };
        if !ok {
            self.transcript
                .note(format!("line {line}: timed out or ended at {step:?}"));
        }
        ok
    }

    fn close_input(&mut self) {
        self.eof = true;
        self.input = None;
    }

    /// Close the input, wait for the bridge to exit, and return the transcript.
    fn finish(&mut self) -> Transcript {
        self.close_input();
        let deadline = Instant::now() + EXIT_TIMEOUT;
        self.pump(deadline, &|_| false);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's process group; no memory is involved.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        self.transcript.exit = match status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => format!("{s}"),
            },
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                format!(
                    "still running {}s after its input was closed",
                    EXIT_TIMEOUT.as_secs()
                )
            }
        };
        if let Some(h) = self.stderr.take() {
            self.stderr_text = String::from_utf8_lossy(&h.join().unwrap_or_default()).into();
        }
        std::mem::take(&mut self.transcript)
    }

    fn stderr(&self) -> String {
        self.stderr_text.clone()
    }
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Decode `LEN\nCHANNEL\nPAYLOAD` frames from the bridge's output until it ends.
fn read_frames(stdout: &mut impl Read, tx: &Sender<Out>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        // Take every complete frame from the buffer.
        loop {
            let Some(nl) = buf.iter().take(11).position(|&b| b == b'\n') else {
                if buf.len() > 10 {
                    let _ = tx.send(Out::Malformed(format!(
                        "size line too long: {:?}",
                        String::from_utf8_lossy(&buf[..buf.len().min(40)])
                    )));
                    return drain(stdout, tx);
                }
                break;
            };
            let Some(size) = std::str::from_utf8(&buf[..nl])
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
            else {
                let _ = tx.send(Out::Malformed(format!(
                    "bad size line: {:?}",
                    String::from_utf8_lossy(&buf[..nl])
                )));
                return drain(stdout, tx);
            };
            if buf.len() < nl + 1 + size {
                break;
            }
            let body = &buf[nl + 1..nl + 1 + size];
            let Some(cnl) = body.iter().position(|&b| b == b'\n') else {
                let _ = tx.send(Out::Malformed("frame without a channel line".into()));
                return drain(stdout, tx);
            };
            let channel = String::from_utf8_lossy(&body[..cnl]).into_owned();
            let payload = body[cnl + 1..].to_vec();
            buf.drain(..nl + 1 + size);
            if tx.send(Out::Frame(channel, payload)).is_err() {
                return;
            }
        }
        match stdout.read(&mut chunk) {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    let _ = tx.send(Out::Malformed(format!(
                        "output ended inside a frame: {:?}",
                        String::from_utf8_lossy(&buf[..buf.len().min(80)])
                    )));
                }
                let _ = tx.send(Out::Eof);
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn drain(stdout: &mut impl Read, tx: &Sender<Out>) {
    let mut sink = [0u8; 65536];
    while matches!(stdout.read(&mut sink), Ok(n) if n > 0) {}
    let _ = tx.send(Out::Eof);
}
