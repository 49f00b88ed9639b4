//! sudo's askpass (`sudo -A`), answered by the bridge that runs sudo, so that a password typed
//! in the front end reaches sudo without touching argv, the environment, a file or a log.
//!
//! sudo runs `$SUDO_ASKPASS PROMPT` as the user, with stdout a pipe it reads the password from
//! (up to a newline). It closes every descriptor above stderr first (sudo 1.9, `sudo_askpass`
//! in `tgetpass.c`), but stderr stays: so the bridge gives sudo a socket as its stderr, as
//! Cockpit's ferny agent does. The askpass program is the bridge's own image (the verified
//! file it runs from), which `FERRY_ASKPASS=1` in its environment and a single argument turn
//! into an askpass client ([`client`]). The client makes a fresh socket pair, passes one end over
//! stderr with `SCM_RIGHTS` after the [`MARKER`], writes the prompt on its own end and reads
//! the answer there: `0` and the password (which it writes to stdout with a newline, exit 0),
//! or `1` (nothing written, exit 1; sudo then says "no password was provided" and gives up). The
//! answer travels only over that private socket pair and sudo's pipe.
//!
//! Everything else on the stderr socket is what sudo (and, later, what it starts) writes to
//! stderr: passed on to the bridge's own stderr, and kept as the text that came before the
//! next prompt or the end, which Cockpit shows with the prompt or as the failure.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::sync::oneshot;

/// The environment variable that makes the bridge's image an askpass client.
pub const ENV: &str = "FERRY_ASKPASS";

/// What the client sends over stderr with its end of the socket pair.
pub const MARKER: &[u8] = b"\0ferry-askpass\0";

/// The longest prompt and answer accepted.
const MAX: u64 = 4096;

/// How much of what sudo said is kept (its end).
const SAID_TAIL: usize = 4096;

/// Run as sudo's askpass when the environment and arguments say so: returns the exit status
/// (0: the password is on stdout; 1: none), or `None` when this is not an askpass run.
pub fn client() -> Option<u8> {
    if std::env::var_os(ENV).as_deref() != Some(std::ffi::OsStr::new("1")) {
        return None;
    }
    let mut args = std::env::args_os().skip(1);
    let (Some(prompt), None) = (args.next(), args.next()) else {
        return None;
    };
    Some(ask(prompt.as_bytes()).unwrap_or(1))
}

fn ask(prompt: &[u8]) -> io::Result<u8> {
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    send_fd(2, MARKER, theirs.as_raw_fd())?;
    drop(theirs);
    ours.write_all(prompt)?;
    ours.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    (&mut ours).take(MAX + 1).read_to_end(&mut reply)?;
    match reply.split_first() {
        Some((b'0', password)) => {
            let mut out = io::stdout().lock();
            out.write_all(password)?;
            out.write_all(b"\n")?;
            out.flush()?;
            Ok(0)
        }
        _ => Ok(1),
    }
}

/// Send `data` on the socket `sock` with `fd` attached.
fn send_fd(sock: RawFd, data: &[u8], fd: RawFd) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut space = [0u64; 4];
    // SAFETY: `msg` points at `iov` and `space`, which outlive the call; the control message
    // is written within `space` (CMSG_SPACE of one descriptor is 24 bytes, `space` has 32).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) != data.len() as isize {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receive into `buf` from `sock`, with the descriptors that came along.
fn recv_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut space = [0u64; 16];
    let mut fds = Vec::new();
    // SAFETY: `msg` points at `iov` and `space`, which outlive the call; the kernel writes at
    // most `msg_controllen` bytes of control messages, which are walked with the CMSG macros,
    // and every descriptor they carry is owned from here on (closed if unused).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&space) as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, fds))
    }
}

/// The program sudo is to run as askpass: the file this bridge runs from (a verified image in
/// its user's own cache, named by its sha256), if it is still there. Another loader may have
/// put the same image there again since (the link then says "(deleted)"): the name says it is
/// the same file.
pub(crate) fn program() -> Option<PathBuf> {
    let path = std::fs::read_link("/proc/self/exe").ok()?;
    let path = match path.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
        Some(name) => {
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(name));
            let named_by_sha256 = path.file_name().is_some_and(|n| {
                n.len() == 64
                    && n.as_bytes()
                        .iter()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
            if !named_by_sha256 {
                return None;
            }
            path
        }
        None => path,
    };
    (path.is_absolute() && std::fs::metadata(&path).is_ok_and(|m| m.is_file())).then_some(path)
}

/// Does this sudo have askpass (`sudo -A --help` succeeds; sudo-rs has no `-A`)?
pub(crate) async fn sudo_has_askpass() -> bool {
    let Ok(mut child) = tokio::process::Command::new("sudo")
        .args(["-A", "--help"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), child.wait()).await,
        Ok(Ok(s)) if s.success()
    )
}

/// The bridge's side: reads sudo's stderr socket, answers askpass requests.
pub(crate) struct Agent {
    sock: tokio::net::UnixStream,
    /// What was said since the last prompt (its last [`SAID_TAIL`] bytes).
    said: Arc<Mutex<Vec<u8>>>,
}

/// An askpass request: what sudo said before it (`error`), its prompt, and where the answer
/// goes (`None`: no password).
pub(crate) struct Ask {
    pub error: String,
    pub prompt: String,
    pub reply: oneshot::Sender<Option<String>>,
}

impl Agent {
    /// An agent, and the descriptor to give sudo as its stderr.
    pub(crate) fn new() -> io::Result<(Agent, OwnedFd)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let agent = Agent {
            sock: tokio::net::UnixStream::from_std(ours)?,
            said: Arc::default(),
        };
        Ok((agent, theirs.into()))
    }

    /// What was said since the last prompt, as text.
    pub(crate) fn said(&self) -> String {
        let said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&said).trim().to_owned()
    }

    fn keep(&self, text: &[u8]) {
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        said.extend_from_slice(text);
        let excess = said.len().saturating_sub(SAID_TAIL);
        said.drain(..excess);
    }

    /// Serve until every writer has closed the socket: pass text on to our stderr, and hand
    /// each askpass request to `asks`.
    pub(crate) async fn run(&self, asks: &(dyn Fn(Ask) + Sync)) {
        let mut buf = vec![0u8; 4096];
        let mut stderr = tokio::io::stderr();
        loop {
            let fd = self.sock.as_raw_fd();
            let got = self
                .sock
                .async_io(Interest::READABLE, || recv_fds(fd, &mut buf))
                .await;
            let (n, mut fds) = match got {
                Ok((0, _)) | Err(_) => return,
                Ok(got) => got,
            };
            let data = &buf[..n];
            // Text from another writer may come in the same read, before the marker.
            let text = match data.strip_suffix(MARKER) {
                Some(before) if fds.len() == 1 => before,
                _ => {
                    fds.clear();
                    data
                }
            };
            if !text.is_empty() {
                self.keep(text);
                let _ = stderr.write_all(text).await;
                let _ = stderr.flush().await;
            }
            if let Some(fd) = fds.pop() {
                let error = self.said();
                self.said.lock().unwrap_or_else(|e| e.into_inner()).clear();
                answer(fd, error, asks).await;
            }
        }
    }
}

/// Read the prompt from the client's socket, ask, and write the answer back.
async fn answer(fd: OwnedFd, error: String, asks: &(dyn Fn(Ask) + Sync)) {
    let std = std::os::unix::net::UnixStream::from(fd);
    if std.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut sock) = tokio::net::UnixStream::from_std(std) else {
        return;
    };
    let mut prompt = Vec::new();
    let mut limited = (&mut sock).take(MAX);
    let read = limited.read_to_end(&mut prompt);
    if !matches!(
        tokio::time::timeout(Duration::from_secs(10), read).await,
        Ok(Ok(_))
    ) {
        return;
    }
    let (tx, rx) = oneshot::channel();
    asks(Ask {
        error,
        prompt: String::from_utf8_lossy(&prompt).into_owned(),
        reply: tx,
    });
    let reply = match rx.await {
        Ok(Some(password)) if password.len() as u64 <= MAX => {
            let mut r = Vec::with_capacity(1 + password.len());
            r.push(b'0');
            r.extend_from_slice(password.as_bytes());
            r
        }
        _ => b"1".to_vec(),
    };
    let _ = sock.write_all(&reply).await;
}
