//! Signal names as Cockpit writes them in `exit-signal`: the C name without `SIG`.
//!
//! One table, read both ways: the bridge names the signal that ended a process, and the
//! launcher turns that name back into a number for its own exit status.

const SIGNALS: &[(libc::c_int, &str)] = &[
    (libc::SIGHUP, "HUP"),
    (libc::SIGINT, "INT"),
    (libc::SIGQUIT, "QUIT"),
    (libc::SIGILL, "ILL"),
    (libc::SIGTRAP, "TRAP"),
    (libc::SIGABRT, "ABRT"),
    (libc::SIGBUS, "BUS"),
    (libc::SIGFPE, "FPE"),
    (libc::SIGKILL, "KILL"),
    (libc::SIGUSR1, "USR1"),
    (libc::SIGSEGV, "SEGV"),
    (libc::SIGUSR2, "USR2"),
    (libc::SIGPIPE, "PIPE"),
    (libc::SIGALRM, "ALRM"),
    (libc::SIGTERM, "TERM"),
    (libc::SIGSTKFLT, "STKFLT"),
    (libc::SIGCHLD, "CHLD"),
    (libc::SIGCONT, "CONT"),
    (libc::SIGSTOP, "STOP"),
    (libc::SIGTSTP, "TSTP"),
    (libc::SIGTTIN, "TTIN"),
    (libc::SIGTTOU, "TTOU"),
    (libc::SIGURG, "URG"),
    (libc::SIGXCPU, "XCPU"),
    (libc::SIGXFSZ, "XFSZ"),
    (libc::SIGVTALRM, "VTALRM"),
    (libc::SIGPROF, "PROF"),
    (libc::SIGWINCH, "WINCH"),
    (libc::SIGIO, "IO"),
    (libc::SIGPWR, "PWR"),
    (libc::SIGSYS, "SYS"),
];

/// The name of signal `sig`; a signal without one (real-time signals) is its number.
pub fn name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|(n, _)| *n == sig)
        .map_or_else(|| sig.to_string(), |(_, name)| (*name).to_owned())
}

/// The number of a signal named as [`name`] gives it (a leading `SIG` is accepted too).
pub fn number(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    SIGNALS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(sig, _)| *sig)
        .or_else(|| name.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways() {
        for (sig, n) in SIGNALS {
            assert_eq!(name(*sig), *n);
            assert_eq!(number(n), Some(*sig));
        }
        assert_eq!(number("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(
            name(libc::SIGRTMIN() + 1),
            (libc::SIGRTMIN() + 1).to_string()
        );
        assert_eq!(number("40"), Some(40));
        assert_eq!(number("NOPE"), None);
    }
}
