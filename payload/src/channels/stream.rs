//! `stream`: a spawned process (pipes or a pty), a unix socket, or a TCP connection.
//!
//! Data from the peer goes to the process's stdin (or the socket); its output comes back as
//! data. `done` from the peer closes stdin (or shuts down the socket's write side); the end of
//! the output sends `done`, and the channel closes once the process has exited (with
//! `exit-status` or `exit-signal`) or the socket has ended.
//!
//! The output is read only while the channel may send (flow control, output queue), and input
//! is taken from the peer only as fast as the process consumes it, so neither side makes the
//! bridge's memory grow.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use ferry_protocol::problem;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, Command};

use crate::channel::{Channel, ChannelError, ChannelResult, Input, ReadBuffer};
use crate::process::{self, ProcessGroup};
use crate::pty::{self, WindowSize};

/// Smallest and largest read from the output: idle channels keep small buffers, busy ones
/// grow them. Flow control bounds what a channel has in flight; without it, the output queue
/// (a number of frames) does, so frames stay smaller.
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 256 * 1024;
const READ_MAX_UNCONTROLLED: usize = 64 * 1024;

/// A read this large found the child's pipe full (a default pipe holds 64 KiB): the child
/// produces faster than we read, and its pipe is enlarged so that it can run ahead further.
const PIPE_BUSY: usize = 64 * 1024;

/// On a binary channel whose output and transport are both pipes, at least this much waiting
/// in the child's pipe goes out with `splice(2)` (moved from pipe to pipe, never copied into
/// the bridge's memory) instead of a read and a write.
const SPLICE_MIN: usize = 16 * 1024;

/// How long a process may take to end after `kill` before it is killed outright.
const KILL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// At most this much of stderr goes into the `close` message with `err: "message"`.
const MESSAGE_MAX: usize = 256 * 1024;

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

fn protocol_error(message: &str) -> ChannelError {
    ChannelError::new(problem::PROTOCOL_ERROR).message(message)
}

pub async fn run(ch: &mut Channel) -> ChannelResult {
    let has = |key: &str| ch.open.get(key).is_some();
    let (spawn, unix, port) = (has("spawn"), has("unix"), has("port"));
    if u8::from(spawn) + u8::from(unix) + u8::from(port) > 1 {
        return Err(protocol_error(
            "only one of \"spawn\", \"unix\" and \"port\" may be given",
        ));
    }
    if spawn {
        return run_process(ch).await;
    }
    if unix {
        let Some(path) = ch.open.str("unix") else {
            return Err(protocol_error("\"unix\" must be a string"));
        };
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| ChannelError::from_io(&e))?;
        let (r, w) = stream.into_split();
        return run_socket(ch, Box::new(r), Box::new(w)).await;
    }
    if port {
        let port = match ch.open.get("port") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse::<u64>().ok(),
            _ => None,
        };
        let Some(port) = port.and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0) else {
            return Err(protocol_error("invalid \"port\""));
        };
        let address = match ch.open.get("address") {
            None => "localhost".to_owned(),
            Some(Value::String(a)) => a.clone(),
            Some(_) => return Err(protocol_error("\"address\" must be a string")),
        };
        let stream = tokio::net::TcpStream::connect((address.as_str(), port))
            .await
            .map_err(|e| ChannelError::from_io(&e))?;
        let (r, w) = stream.into_split();
        return run_socket(ch, Box::new(r), Box::new(w)).await;
    }
    if has("internal") {
        return Err(
            ChannelError::new(problem::NOT_SUPPORTED).message("internal streams are not supported")
        );
    }
    Err(protocol_error(
        "stream needs \"spawn\", \"unix\" or \"port\"",
    ))
}

async fn run_socket(ch: &mut Channel, reader: Reader, writer: Writer) -> ChannelResult {
    ch.ready(Map::new()).await;
    let mut pump = Pump {
        source: Source::Other(reader),
        grown: false,
        writer: Some(writer),
        pty: None,
        stderr: None,
        message: None,
    };
    pump.run(ch, None).await
}

/// Where the child's stderr goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Err {
    /// The bridge's own stderr (`err: "inherit"`, ferry's own value, which `ferry run` uses).
    Inherit,
    /// Into the channel's data, with stdout.
    Out,
    /// Nowhere.
    Ignore,
    /// Into the `close` message.
    Message,
}

struct Spawn {
    argv: Vec<String>,
    environ: Vec<(String, String)>,
    directory: Option<String>,
    err: Err,
    pty: Option<WindowSize>,
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

impl Spawn {
    fn parse(open: &ferry_protocol::control::Message) -> Result<Self, ChannelError> {
        let argv = open
            .get("spawn")
            .and_then(strings)
            .filter(|argv| !argv.is_empty())
            .ok_or_else(|| protocol_error("\"spawn\" must be a non-empty list of strings"))?;
        let environ = match open.get("environ") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => strings(v)
                .and_then(|list| {
                    list.iter()
                        .map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                        .collect::<Option<Vec<_>>>()
                })
                .filter(|env| env.iter().all(|(k, _)| !k.is_empty()))
                .ok_or_else(|| protocol_error("\"environ\" must be a list of NAME=VALUE"))?,
        };
        let directory = match open.get("directory") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => return Err(protocol_error("\"directory\" must be a string")),
        };
        let err = match open.get("err") {
            // Cockpit 337's default: the front end shows a failed command's stderr from the
            // `close` message (cockpit-bridge 287 let it through to its own stderr).
            None | Some(Value::Null) => Err::Message,
            Some(Value::String(e)) => match e.as_str() {
                "out" => Err::Out,
                "ignore" => Err::Ignore,
                "message" => Err::Message,
                // ferry's own value (and any other): the bridge's stderr, live, for `ferry run`.
                _ => Err::Inherit,
            },
            Some(_) => return Err(protocol_error("\"err\" must be a string")),
        };
        let pty = match open.get("pty") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(WindowSize::default().update(open.get("window"))),
            Some(_) => return Err(protocol_error("\"pty\" must be a boolean")),
        };
        Ok(Spawn {
            argv,
            environ,
            directory,
            err,
            pty,
        })
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are open descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A spawned child: its output, its input, and what it takes to tear it down.
struct Spawned {
    child: Child,
    group: ProcessGroup,
    pump: Pump,
}

fn spawn(spec: &Spawn) -> std::io::Result<Spawned> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or(std::io::ErrorKind::InvalidInput)?;
    let mut cmd = Command::new(program);
    cmd.args(args).kill_on_drop(true);
    for (k, v) in &spec.environ {
        cmd.env(k, v);
    }
    if let Some(dir) = &spec.directory {
        cmd.current_dir(dir);
    }
    let (source, writer, pty_master) = match spec.pty {
        Some(size) => {
            let (master, slave) = pty::open(size)?;
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            // SAFETY: the closure only makes async-signal-safe calls.
            unsafe {
                cmd.pre_exec(|| {
                    process::restore_fd_limit_in_child();
                    process::reset_signals_in_child();
                    pty::make_controlling_terminal()
                });
            }
            let master = pty::master(master)?;
            (
                Source::Other(Box::new(master.clone())),
                Some(Box::new(master.clone()) as Writer),
                Some(master),
            )
        }
        None => {
            let (out_r, out_w) = pipe()?;
            match spec.err {
                Err::Inherit => cmd.stderr(Stdio::inherit()),
                Err::Out => cmd.stderr(Stdio::from(out_w.try_clone()?)),
                Err::Ignore => cmd.stderr(Stdio::null()),
                Err::Message => cmd.stderr(Stdio::piped()),
            };
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::from(out_w))
                .process_group(0);
            // SAFETY: the closure only makes async-signal-safe calls.
            unsafe {
                cmd.pre_exec(|| {
                    process::restore_fd_limit_in_child();
                    process::reset_signals_in_child();
                    Ok(())
                });
            }
            let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(out_r)?;
            (Source::Pipe(reader), None, None)
        }
    };
    let mut child = cmd.spawn()?;
    // The parent's copies of the child's ends must go, or the output never ends.
    drop(cmd);
    let group = ProcessGroup::new(child.id().unwrap_or(0));
    let writer = match writer {
        Some(w) => Some(w),
        None => child.stdin.take().map(|w| Box::new(w) as Writer),
    };
    let stderr = child.stderr.take();
    let message = stderr.as_ref().map(|_| Vec::new());
    Ok(Spawned {
        child,
        group,
        pump: Pump {
            source,
            grown: false,
            writer,
            pty: pty_master,
            stderr,
            message,
        },
    })
}

async fn run_process(ch: &mut Channel) -> ChannelResult {
    let spec = Spawn::parse(&ch.open)?;
    if spec.pty.is_some() {
        // A terminal shows whatever its programs print: invalid UTF-8 becomes U+FFFD, as in
        // cockpit-bridge 287, so that `cat` of a binary file does not end the session (see
        // DIFFERENCES.md, `pty-invalid-utf8`). Pipes stay strict, as in Cockpit 337.
        ch.text_lossy();
    }
    let Spawned {
        mut child,
        mut group,
        mut pump,
    } = spawn(&spec).map_err(|e| ChannelError::from_io(&e))?;
    let mut extra = Map::new();
    if let Some(pid) = child.id() {
        extra.insert("pid".into(), pid.into());
    }
    ch.ready(extra).await;
    pump.run(ch, Some((&mut child, &mut group))).await
}

/// Where a stream's output comes from.
enum Source {
    /// A pipe of our own: the child's stdout (and perhaps stderr).
    Pipe(tokio::net::unix::pipe::Receiver),
    /// A pty master or a socket.
    Other(Reader),
}

/// What waiting for output gave.
enum Output {
    /// Data read into memory.
    Data(Bytes),
    /// This much waits in the pipe, to be spliced.
    Waiting(usize),
    End,
}

impl Source {
    /// Wait for output: on a pipe that may be spliced from (`splice`), how much waits if that
    /// is at least [`SPLICE_MIN`]; otherwise a read of at most `want` bytes. Cancel-safe.
    async fn next(
        &mut self,
        buf: &mut ReadBuffer,
        want: usize,
        splice: Option<usize>,
    ) -> std::io::Result<Output> {
        let reader: &mut (dyn AsyncRead + Unpin + Send) = match self {
            Source::Pipe(rx) => {
                if let Some(most) = splice {
                    rx.readable().await?;
                    let waiting = crate::fdio::pending_bytes(rx.as_raw_fd())?;
                    if waiting >= SPLICE_MIN {
                        return Ok(Output::Waiting(waiting.min(most)));
                    }
                }
                rx
            }
            Source::Other(r) => r,
        };
        let buf = buf.prepare(want);
        let n = reader.read_buf(&mut (&mut *buf).limit(want)).await?;
        Ok(if n == 0 {
            Output::End
        } else {
            Output::Data(buf.split().freeze())
        })
    }

    /// The child produces faster than we read: let it run further ahead.
    fn grow(&self) {
        if let Source::Pipe(rx) = self {
            crate::fdio::grow_pipe(rx.as_raw_fd());
        }
    }
}

/// Moves data between a channel and a process or socket.
struct Pump {
    source: Source,
    /// The pipe was enlarged.
    grown: bool,
    writer: Option<Writer>,
    /// Present for a pty: resized through `options`, never half-closed.
    pty: Option<pty::Master>,
    /// The child's stderr with `err: "message"`, and what it said so far.
    stderr: Option<ChildStderr>,
    message: Option<Vec<u8>>,
}

impl Pump {
    /// Run until the output ends and (for a process) the child exited.
    async fn run(
        &mut self,
        ch: &mut Channel,
        mut process: Option<(&mut Child, &mut ProcessGroup)>,
    ) -> ChannelResult {
        let mut buf = ReadBuffer::new();
        // A second descriptor of the pipe, for the writer to splice from.
        let splice_from = match &self.source {
            Source::Pipe(rx) if ch.can_splice() => {
                rx.as_fd().try_clone_to_owned().ok().map(Arc::new)
            }
            _ => None,
        };
        let mut read_size = READ_MIN;
        let read_max = if ch.flow_controlled() {
            READ_MAX
        } else {
            READ_MAX_UNCONTROLLED
        };
        let mut out_open = true;
        let mut in_open = true;
        let mut pending = Bytes::new();
        // On the heap, and only when needed: a future's size is paid by every channel.
        let mut errbuf = vec![0u8; if self.stderr.is_some() { 4096 } else { 0 }];
        // After `kill`: SIGTERM was sent, SIGKILL follows if the process outlives this.
        let mut killed: Option<tokio::time::Instant> = None;
        loop {
            let output_ended = !out_open && self.stderr.is_none();
            if output_ended && process.is_none() {
                // A socket: its end is the channel's end.
                return Ok(Map::new());
            }
            // Never past the flow-control window: the channel stops right at it.
            let room = ch.window_room().max(1);
            let want = read_size.min(room);
            let splice = splice_from.as_ref().map(|_| read_max.min(room));
            tokio::select! {
                r = self.source.next(&mut buf, want, splice), if out_open => match r {
                    Ok(Output::Data(data)) => {
                        let n = data.len();
                        if n >= read_size && read_size < read_max {
                            read_size = (read_size * 2).min(read_max);
                        }
                        if n >= PIPE_BUSY && !self.grown {
                            self.source.grow();
                            self.grown = true;
                        }
                        if !ch.send_data(data).await {
                            return Ok(Map::new());
                        }
                    }
                    Ok(Output::Waiting(n)) => {
                        if n >= PIPE_BUSY && !self.grown {
                            self.source.grow();
                            self.grown = true;
                        }
                        let Some(from) = &splice_from else {
                            return Ok(Map::new());
                        };
                        if !ch.send_spliced(from, n).await {
                            return Ok(Map::new());
                        }
                    }
                    Ok(Output::End) | Err(_) => {
                        out_open = false;
                        // A killed channel ends with its close alone.
                        if killed.is_none() {
                            ch.done().await;
                        }
                    }
                },
                r = async {
                    match self.writer.as_mut() {
                        Some(w) => w.write(&pending).await,
                        None => std::future::pending().await,
                    }
                }, if !pending.is_empty() => match r {
                    Ok(n) if n > 0 => {
                        let _ = pending.split_to(n.min(pending.len()));
                    }
                    _ => {
                        // The child closed its input: drop what it will never read.
                        self.writer = None;
                        pending.clear();
                    }
                },
                input = ch.recv(), if in_open && pending.is_empty() => match input {
                    Some(Input::Data(data)) => {
                        if self.writer.is_some() {
                            pending = data;
                        }
                    }
                    Some(Input::Done) => {
                        if self.pty.is_none() {
                            if let Some(mut w) = self.writer.take() {
                                let _ = w.shutdown().await;
                            }
                        }
                    }
                    Some(Input::Options(options)) => {
                        if let (Some(master), Some(window)) = (&self.pty, options.get("window")) {
                            let _ = pty::resize(master, WindowSize::default().update(Some(window)));
                        }
                    }
                    Some(Input::Control(m)) if m.command == "kill" && killed.is_none() => {
                        if let Some((_, group)) = process.as_mut() {
                            group.terminate();
                        }
                        killed = Some(tokio::time::Instant::now() + KILL_GRACE);
                    }
                    Some(Input::Control(_)) => {}
                    None => in_open = false,
                },
                r = async {
                    match self.stderr.as_mut() {
                        Some(e) => e.read(&mut errbuf).await,
                        None => std::future::pending().await,
                    }
                }, if self.stderr.is_some() => match r {
                    Ok(n) if n > 0 => {
                        if let Some(message) = &mut self.message {
                            let room = MESSAGE_MAX.saturating_sub(message.len());
                            message.extend_from_slice(&errbuf[..n.min(room)]);
                        }
                    }
                    _ => self.stderr = None,
                },
                status = async {
                    match process.as_mut() {
                        Some((child, _)) => child.wait().await,
                        None => std::future::pending().await,
                    }
                }, if output_ended => {
                    let status = status.map_err(|e| ChannelError::from_io(&e))?;
                    if let Some((_, group)) = process.as_mut() {
                        group.reaped();
                    }
                    let mut close = process::exit_fields(status);
                    // Always a `message` for a process, as Cockpit 337 gives: its stderr with
                    // `err: "message"`, else empty.
                    let text = self
                        .message
                        .take()
                        .map(|m| String::from_utf8_lossy(&m).into_owned())
                        .unwrap_or_default();
                    close.insert("message".into(), text.into());
                    if killed.is_some() {
                        let mut err = ChannelError::new(ferry_protocol::problem::TERMINATED);
                        err.extra = close;
                        return Err(err);
                    }
                    return Ok(close);
                },
                () = async {
                    match killed {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                }, if killed.is_some() => {
                    // It would not end: the group is killed when the channel is dropped.
                    return Err(ChannelError::new(ferry_protocol::problem::TERMINATED)
                        .with("exit-signal", "KILL"));
                },
            }
        }
    }
}
