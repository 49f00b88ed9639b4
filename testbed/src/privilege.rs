//! The test bed's sudo and doas rules, for the hop tests.
//!
//! - `ferry-sudoer` may run anything as anyone through sudo and doas without a password;
//! - `ferry-tty` may too through sudo, but sudo insists on a terminal (`requiretty`);
//! - `ferry-pw` may become root through sudo with a password;
//! - `ferry-limited` may become `ferry-bash` through sudo (no password asked), and nobody else;
//! - every other test user is in no rule (sudo: "not in the sudoers file").

/// The password of [`PASSWORD_USERS`] (a test fixture: `cargo xtask setup` sets it through
/// `chpasswd`'s stdin). sudo asks `ferry-pw` for it, and the test bed's sshd takes it for
/// `ferry-pw` (and for `ferry-ash` where a test's sshd allows it).
pub const PASSWORD: &str = "ferry-Pw-4921";

/// The test users (short names) with [`PASSWORD`].
pub const PASSWORD_USERS: &[&str] = &["pw", "ash"];

/// The sudoers drop-in (mode 0440).
pub const SUDOERS_FILE: &str = "/etc/sudoers.d/ferry-testbed";

/// doas's configuration (mode 0400; Debian ships none).
pub const DOAS_CONF: &str = "/etc/doas.conf";

/// The content of [`SUDOERS_FILE`].
pub fn sudoers() -> String {
    "# ferry test bed: sudo rules for the hop tests\n\
     Defaults:ferry-tty requiretty\n\
     ferry-sudoer ALL=(ALL:ALL) NOPASSWD: ALL\n\
     ferry-tty ALL=(ALL:ALL) NOPASSWD: ALL\n\
     ferry-pw ALL=(root) ALL\n\
     Defaults:ferry-limited !authenticate\n\
     ferry-limited ALL=(ferry-bash) ALL\n"
        .to_owned()
}

/// The content of [`DOAS_CONF`].
pub fn doas_conf() -> String {
    "# ferry test bed: doas rules for the hop tests\n\
     permit nopass root\n\
     permit nopass ferry-sudoer\n"
        .to_owned()
}
