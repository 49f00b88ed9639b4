//! Pseudo-terminals for `stream` channels with `"pty": true`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::fdio::{cvt, set_nonblocking, Fd};

/// Terminal size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

impl Default for WindowSize {
    fn default() -> Self {
        WindowSize { rows: 24, cols: 80 }
    }
}

impl WindowSize {
    /// From Cockpit's `window: {"rows": R, "cols": C}`; missing or invalid values keep
    /// `self`'s.
    pub fn update(self, window: Option<&serde_json::Value>) -> Self {
        let field = |name: &str, old: u16| {
            window
                .and_then(|w| w.get(name))
                .and_then(serde_json::Value::as_u64)
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(old)
        };
        WindowSize {
            rows: field("rows", self.rows),
            cols: field("cols", self.cols),
        }
    }

    fn winsize(self) -> libc::winsize {
        libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// Open `path` read-write, close-on-exec, without making it the controlling terminal.
fn open_tty(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: open with a NUL-terminated path; the result is a new descriptor we own.
    unsafe {
        let fd = cvt(libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Open a pseudo-terminal of `size`: returns the master (non-blocking) and the slave.
/// Both are close-on-exec; the slave is meant for a child's standard descriptors.
///
/// What musl's `openpty(3)` does (`/dev/ptmx`, unlock, `/dev/pts/N`), written out here:
/// musl's own formats the slave's path with `snprintf`, which alone brings `printf` and its
/// floating-point formatting into the image.
pub fn open(size: WindowSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let master = open_tty(c"/dev/ptmx")?;
    let mut number: libc::c_uint = 0;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes an unsigned int, through the pointers
    // we pass; both only on the master we own.
    unsafe {
        cvt(libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCSPTLCK as _,
            &unlock as *const libc::c_int,
        ))?;
        cvt(libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTN as _,
            &mut number as *mut libc::c_uint,
        ))?;
    }
    let path = std::ffi::CString::new(format!("/dev/pts/{number}"))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let slave = open_tty(&path)?;
    let ws = size.winsize();
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer we pass.
    unsafe {
        cvt(libc::ioctl(
            slave.as_raw_fd(),
            libc::TIOCSWINSZ as _,
            &ws as *const libc::winsize,
        ))?;
    }
    set_nonblocking(master.as_raw_fd(), true)?;
    Ok((master, slave))
}

/// In a forked child before exec, with the slave as standard input: start a new session and
/// make the terminal its controlling terminal. Only async-signal-safe calls.
pub fn make_controlling_terminal() -> io::Result<()> {
    // SAFETY: setsid and ioctl are async-signal-safe and have no memory effects here.
    unsafe {
        cvt(libc::setsid())?;
        cvt(libc::ioctl(0, libc::TIOCSCTTY as _, 0))?;
    }
    Ok(())
}

/// The master side of a pseudo-terminal, readable and writable asynchronously; reading ends
/// when every slave descriptor is closed. Clones share the descriptor.
pub type Master = Fd;

/// Make the master non-blocking and drive it through the reactor.
pub fn master(fd: OwnedFd) -> io::Result<Master> {
    Fd::new(fd, true)
}

/// Set the terminal size of the pty whose master is `master`.
pub fn resize(master: &Master, size: WindowSize) -> io::Result<()> {
    let ws = size.winsize();
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer we pass.
    unsafe {
        cvt(libc::ioctl(
            master.raw(),
            libc::TIOCSWINSZ as _,
            &ws as *const libc::winsize,
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn window_size_from_options() {
        let w = WindowSize::default();
        assert_eq!(w, WindowSize { rows: 24, cols: 80 });
        let w = w.update(Some(&json!({"rows": 40, "cols": 120})));
        assert_eq!(
            w,
            WindowSize {
                rows: 40,
                cols: 120
            }
        );
        let w = w.update(Some(&json!({"rows": -1, "cols": "x"})));
        assert_eq!(
            w,
            WindowSize {
                rows: 40,
                cols: 120
            }
        );
        let w = w.update(None);
        assert_eq!(
            w,
            WindowSize {
                rows: 40,
                cols: 120
            }
        );
        let w = w.update(Some(&json!({"cols": 70000})));
        assert_eq!(
            w,
            WindowSize {
                rows: 40,
                cols: 120
            }
        );
    }
}
