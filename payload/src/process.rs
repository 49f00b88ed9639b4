//! Child processes: exit reporting, process-group teardown, the open-files limit.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

/// The soft open-files limit the bridge started with, restored in children (0: unchanged).
static ORIGINAL_NOFILE: AtomicU64 = AtomicU64::new(0);

const NOFILE_WANTED: libc::rlim_t = 65536;

pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let wanted = lim.rlim_max.min(NOFILE_WANTED);
        if lim.rlim_cur >= wanted {
            return;
        }
        let original = lim.rlim_cur;
        lim.rlim_cur = wanted;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            ORIGINAL_NOFILE.store(original, Ordering::Relaxed);
        }
    }
}

/// In a forked child before exec: give back the open-files limit the bridge started with.
/// Only async-signal-safe calls.
pub fn restore_fd_limit_in_child() {
    let original = ORIGINAL_NOFILE.load(Ordering::Relaxed);
    if original == 0 {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them, and are
    // async-signal-safe.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = original;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// In a forked child before exec: every signal back to its default disposition and an empty
/// signal mask, so that a program the bridge starts behaves as it would started from a login
/// shell. Ignored signals and the mask survive `exec` (handled signals are reset by it), and
/// the bridge's caller may have ignored some (`nohup`, a `trap '' QUIT`, a C library that
/// ignores its internal real-time signals 32 and 33). Raw system calls: the C library's
/// `sigaction` refuses the signals it keeps for itself. Only async-signal-safe calls.
pub fn reset_signals_in_child() {
    // The kernel's `struct sigaction` with SIG_DFL (0), no flags, no restorer, an empty mask;
    // all zero, so its layout does not matter on any architecture.
    let default = [0u64; 4];
    let empty: u64 = 0;
    const SIGSET_SIZE: libc::c_long = 8;
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads `default`, a zeroed buffer as large as the kernel's
        // struct sigaction, and writes nothing (the old action is not asked for).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig as libc::c_long,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                SIGSET_SIZE,
            );
        }
    }
    // SAFETY: rt_sigprocmask reads the empty set and writes nothing.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as libc::c_long,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            SIGSET_SIZE,
        );
    }
}

/// The name Cockpit gives a signal in `exit-signal`: the C name without `SIG`.
pub fn signal_name(sig: i32) -> String {
    ferry_protocol::signal::name(sig)
}

/// `exit-status` or `exit-signal` for a `close`.
pub fn exit_fields(status: std::process::ExitStatus) -> Map<String, Value> {
    use std::os::unix::process::ExitStatusExt;
    let mut fields = Map::new();
    if let Some(code) = status.code() {
        fields.insert("exit-status".into(), code.into());
    } else if let Some(sig) = status.signal() {
        fields.insert("exit-signal".into(), signal_name(sig).into());
    }
    fields
}

/// A child that leads its own process group. Unless [`reaped`](Self::reaped) was called, the
/// whole group is killed when this is dropped, so that a channel torn down (closed, killed,
/// transport gone) leaves no process behind.
#[derive(Debug)]
pub struct ProcessGroup {
    pid: libc::pid_t,
    live: bool,
}

impl ProcessGroup {
    /// `pid` must lead its own process group (spawned with `setsid` or `process_group(0)`).
    pub fn new(pid: u32) -> Self {
        let pid = libc::pid_t::try_from(pid).unwrap_or(0);
        // Never signal group 0 or 1: that would be the bridge's own group, or everything.
        ProcessGroup { pid, live: pid > 1 }
    }

    /// Ask the whole group to end (SIGTERM), as `kill` does.
    pub fn terminate(&self) {
        if self.live {
            // SAFETY: kill has no memory effects; the leader is not reaped yet.
            unsafe {
                libc::kill(-self.pid, libc::SIGTERM);
                libc::kill(self.pid, libc::SIGTERM);
            }
        }
    }

    /// The leader was waited for: its pid may be reused, so never signal it again.
    pub fn reaped(&mut self) {
        self.live = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.live {
            // SAFETY: kill has no memory effects. The leader is not reaped yet, so the group id
            // still belongs to its group.
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_as_cockpit_gives_them() {
        assert_eq!(signal_name(libc::SIGTERM), "TERM");
        assert_eq!(signal_name(libc::SIGSEGV), "SEGV");
        assert_eq!(signal_name(libc::SIGUSR1), "USR1");
        assert_eq!(
            signal_name(libc::SIGRTMIN() + 1),
            (libc::SIGRTMIN() + 1).to_string()
        );
    }

    #[test]
    fn exit_fields_for_code_and_signal() {
        use std::os::unix::process::ExitStatusExt;
        let f = exit_fields(std::process::ExitStatus::from_raw(3 << 8));
        assert_eq!(f.get("exit-status"), Some(&Value::from(3)));
        assert!(f.get("exit-signal").is_none());
        let f = exit_fields(std::process::ExitStatus::from_raw(libc::SIGKILL));
        assert_eq!(f.get("exit-signal"), Some(&Value::from("KILL")));
        assert!(f.get("exit-status").is_none());
    }
}
