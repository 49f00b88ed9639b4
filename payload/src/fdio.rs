//! Non-blocking descriptors driven by tokio's reactor: pty masters, and the bridge's own stdin
//! and stdout when they are pipes or sockets (tokio's `stdin()`/`stdout()` hand every read and
//! write to a blocking thread instead).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Set or clear `O_NONBLOCK`; returns the previous file status flags.
pub(crate) fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<libc::c_int> {
    // SAFETY: fcntl on a descriptor the caller owns; no memory effects.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        let new = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if new != flags {
            cvt(libc::fcntl(fd, libc::F_SETFL, new))?;
        }
        Ok(flags)
    }
}

struct Inner {
    fd: AsyncFd<OwnedFd>,
    /// `O_NONBLOCK` was set by us on a description others may share: clear it when done.
    restore_blocking: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.restore_blocking {
            let _ = set_nonblocking(self.fd.get_ref().as_raw_fd(), false);
        }
    }
}

/// A non-blocking descriptor, readable and writable asynchronously. Clones share it.
#[derive(Clone)]
pub struct Fd {
    inner: Arc<Inner>,
    /// Reading `EIO` means the end (a pty master whose slave is closed everywhere).
    eio_is_eof: bool,
}

impl Fd {
    /// `fd` must already be non-blocking.
    pub fn new(fd: OwnedFd, eio_is_eof: bool) -> io::Result<Self> {
        Self::register(fd, eio_is_eof, false)
    }

    fn register(fd: OwnedFd, eio_is_eof: bool, restore_blocking: bool) -> io::Result<Self> {
        // SAFETY: the descriptor is owned by the AsyncFd and stays open as long as it lives.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Fd {
            inner: Arc::new(Inner {
                fd,
                restore_blocking,
            }),
            eio_is_eof,
        })
    }

    /// A duplicate of one of the bridge's standard descriptors, if it is a pipe or a socket.
    /// Sets `O_NONBLOCK` (on the open file description, which a pipe or socket of our own
    /// shares with nobody who still reads or writes it) and clears it again when dropped.
    /// `None` for a terminal or a file: those stay blocking.
    pub fn stdio(fd: RawFd) -> Option<Self> {
        // SAFETY: fstat writes into the struct we pass.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } < 0 {
            return None;
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFIFO && kind != libc::S_IFSOCK {
            return None;
        }
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that nothing else owns.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return None;
        }
        // SAFETY: dup is a fresh open descriptor.
        let owned = unsafe { OwnedFd::from_raw_fd(dup) };
        let was = set_nonblocking(dup, true).ok()?;
        let restore = was & libc::O_NONBLOCK == 0;
        match Self::register(owned, false, restore) {
            Ok(fd) => Some(fd),
            Err(_) => {
                if restore {
                    let _ = set_nonblocking(fd, false);
                }
                None
            }
        }
    }

    pub fn raw(&self) -> RawFd {
        self.inner.fd.get_ref().as_raw_fd()
    }
}

impl AsyncRead for Fd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.inner.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let result = guard.try_io(|fd| {
                // SAFETY: reads at most unfilled.len() bytes into the initialised buffer.
                let n = unsafe {
                    libc::read(
                        fd.get_ref().as_raw_fd(),
                        unfilled.as_mut_ptr().cast(),
                        unfilled.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if self.eio_is_eof && e.raw_os_error() == Some(libc::EIO) => {
                    return Poll::Ready(Ok(()))
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Fd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.inner.fd.poll_write_ready(cx))?;
            let result = guard.try_io(|fd| {
                // SAFETY: writes at most data.len() bytes from data.
                let n = unsafe {
                    libc::write(fd.get_ref().as_raw_fd(), data.as_ptr().cast(), data.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The bridge's stdin: non-blocking through the reactor when it is a pipe or socket.
pub fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    match Fd::stdio(libc::STDIN_FILENO) {
        Some(fd) => Box::new(fd),
        None => Box::new(tokio::io::stdin()),
    }
}

/// The bridge's stdout: non-blocking through the reactor when it is a pipe or socket.
pub fn stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    match Fd::stdio(libc::STDOUT_FILENO) {
        Some(fd) => Box::new(fd),
        None => Box::new(tokio::io::stdout()),
    }
}
