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

/// At most this many buffers go into one `writev` (the kernel's `IOV_MAX` is 1024).
pub(crate) const MAX_IOV: usize = 1024;

/// The size busy pipes are given: the default `/proc/sys/fs/pipe-max-size`, the most an
/// unprivileged process may ask for.
pub(crate) const PIPE_SIZE: libc::c_int = 1024 * 1024;

/// Enlarge a pipe to [`PIPE_SIZE`] (best effort: not a pipe, or over the user's limit, and it
/// stays as it is).
pub(crate) fn grow_pipe(fd: RawFd) {
    // SAFETY: fcntl on a descriptor the caller owns; no memory effects.
    unsafe {
        if libc::fcntl(fd, libc::F_GETPIPE_SZ) < PIPE_SIZE {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE);
        }
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
    /// It is a pipe.
    fifo: bool,
}

/// Where the bridge writes its frames.
pub trait Transport: AsyncWrite + Unpin + Send + 'static {
    /// This output as a pipe of the bridge's own, if it is one: data waiting in another pipe
    /// can then move into it with `splice(2)`, without passing through the bridge's memory.
    fn pipe(&self) -> Option<Fd> {
        None
    }
}

impl Transport for Fd {
    fn pipe(&self) -> Option<Fd> {
        self.fifo.then(|| self.clone())
    }
}

impl Transport for Box<dyn Transport> {
    fn pipe(&self) -> Option<Fd> {
        (**self).pipe()
    }
}

impl Transport for tokio::io::Stdout {}
impl Transport for tokio::io::Sink {}
impl Transport for tokio::io::DuplexStream {}

/// Bytes waiting to be read from a pipe.
pub(crate) fn pending_bytes(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) })?;
    Ok(usize::try_from(n).unwrap_or(0))
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
            fifo: false,
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
            Ok(fd) => Some(Fd {
                fifo: kind == libc::S_IFIFO,
                ..fd
            }),
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

    /// Move `len` bytes waiting in the pipe `from` into this pipe with `splice(2)`, waiting
    /// for room as needed. Returns how many moved: fewer than `len` only if `from` ran dry.
    pub(crate) async fn splice_from(&self, from: RawFd, len: usize) -> io::Result<usize> {
        let mut moved = 0;
        while moved < len {
            let mut guard = self.inner.fd.writable().await?;
            let result = guard.try_io(|fd| {
                // SAFETY: no memory is passed; both descriptors are open.
                let n = unsafe {
                    libc::splice(
                        from,
                        std::ptr::null_mut(),
                        fd.get_ref().as_raw_fd(),
                        std::ptr::null_mut(),
                        len - moved,
                        libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
                    )
                };
                if n >= 0 {
                    return Ok(n as usize);
                }
                let e = io::Error::last_os_error();
                // EAGAIN from an empty source is not about our side being full.
                if e.kind() == io::ErrorKind::WouldBlock && pending_bytes(from)? == 0 {
                    return Ok(0);
                }
                Err(e)
            });
            match result {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => moved += n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(moved)
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
            // SAFETY: the kernel only writes into this memory; nothing reads it uninitialised.
            let unfilled = unsafe { buf.unfilled_mut() };
            let result = guard.try_io(|fd| {
                // SAFETY: reads at most unfilled.len() bytes into the buffer.
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
                    if n > 0 && n < unfilled.len() {
                        // A short read drained it: wait for the next event rather than
                        // finding out with another read that fails with EAGAIN.
                        guard.clear_ready();
                    }
                    // SAFETY: read() initialised the first n bytes.
                    unsafe { buf.assume_init(n) };
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
                Ok(Ok(n)) if n < data.len() => {
                    // Full: wait for room rather than finding out with EAGAIN.
                    guard.clear_ready();
                    return Poll::Ready(Ok(n));
                }
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // IoSlice is ABI-compatible with struct iovec.
        let count = bufs.len().min(MAX_IOV);
        let total: usize = bufs[..count].iter().map(|b| b.len()).sum();
        let count = count as libc::c_int;
        loop {
            let mut guard = ready!(self.inner.fd.poll_write_ready(cx))?;
            let result = guard.try_io(|fd| {
                // SAFETY: writev reads `count` iovecs, each valid for its length.
                let n =
                    unsafe { libc::writev(fd.get_ref().as_raw_fd(), bufs.as_ptr().cast(), count) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(Ok(n)) if n < total => {
                    // Full: wait for room rather than finding out with EAGAIN.
                    guard.clear_ready();
                    return Poll::Ready(Ok(n));
                }
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
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

/// The bridge's stdout: non-blocking through the reactor when it is a pipe or socket. A pipe
/// is enlarged to [`PIPE_SIZE`]: bulk data then moves in fewer, larger writes and reads.
pub fn stdout() -> Box<dyn Transport> {
    match Fd::stdio(libc::STDOUT_FILENO) {
        Some(fd) => {
            grow_pipe(fd.raw());
            Box::new(fd)
        }
        None => Box::new(tokio::io::stdout()),
    }
}
