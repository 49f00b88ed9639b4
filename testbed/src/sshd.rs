//! A real OpenSSH server on a free loopback port, and a client config that reaches it.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use crate::layout;
use crate::require::{is_root, Component};

/// The name under which the client config trusts the server's host key.
pub const HOST_KEY_ALIAS: &str = "ferry-testbed-sshd";

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SshdError {
    #[error("sshd is not available: {0}")]
    Missing(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("sshd did not start: {0}")]
    NotStarted(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SshdError {
    let what = what.into();
    move |source| SshdError::Io { what, source }
}

/// A running `sshd -D` on 127.0.0.1, killed (and its files removed) on drop.
///
/// Its client config ([`Sshd::client_config`]) has one `Host` per test user, named by the user's
/// short name (`bash`, `dash`, `zsh`, `fish`, `tcsh`, `ash`, `rohome`, `noexec`), all trusted and
/// non-interactive, plus these for error cases (all as `ferry-bash`):
///
/// - `refused`: offers a key the server does not accept;
/// - `unknown-hostkey`: knows no host key;
/// - `changed-hostkey`: knows another key for this server;
/// - `closed`: a loopback port where nothing listens.
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Sshd {
    /// Start a new server. Needs root (so that it can log in as the test users).
    pub fn start() -> Result<Sshd, SshdError> {
        Sshd::start_with("")
    }

    /// Start a new server whose `sshd_config` ends with `extra` (e.g. `ForceCommand ...`, or
    /// `Match` blocks), for tests of what a remote's own configuration does.
    pub fn start_with(extra: &str) -> Result<Sshd, SshdError> {
        Component::Sshd.check().map_err(SshdError::Missing)?;
        if is_root() {
            fs::create_dir_all("/run/sshd").map_err(io_err("mkdir /run/sshd"))?;
        }
        let dir = tempfile::Builder::new()
            .prefix("ferry-sshd-")
            .tempdir()
            .map_err(io_err("temporary directory"))?;
        // sshd reads AuthorizedKeysFile as the user logging in.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod"))?;
        let d = dir.path();
        for key in ["host_key", "other_host_key", "client_key", "refused_key"] {
            keygen(&d.join(key))?;
        }
        let pubkey = |name: &str| -> Result<String, SshdError> {
            let text = fs::read_to_string(d.join(format!("{name}.pub")))
                .map_err(io_err(format!("read {name}.pub")))?;
            // "TYPE BASE64 COMMENT": keep type and key.
            Ok(text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "))
        };
        let authorized = d.join("authorized_keys");
        fs::write(&authorized, format!("{}\n", pubkey("client_key")?))
            .map_err(io_err("write authorized_keys"))?;
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644))
            .map_err(io_err("chmod authorized_keys"))?;
        let known = |file: &str, key: &str| -> Result<(), SshdError> {
            fs::write(d.join(file), format!("{HOST_KEY_ALIAS} {}\n", pubkey(key)?))
                .map_err(io_err(format!("write {file}")))
        };
        known("known_hosts", "host_key")?;
        known("known_hosts_changed", "other_host_key")?;
        fs::write(d.join("known_hosts_empty"), "").map_err(io_err("write known_hosts_empty"))?;

        let mut last_error = String::new();
        // A free port can be taken between our probe and sshd's bind: try a few.
        for _ in 0..5 {
            let port = free_port()?;
            write_server_config(d, port, extra)?;
            let log = d.join("sshd.log");
            let _ = fs::remove_file(&log);
            let mut command = Command::new("/usr/sbin/sshd");
            command
                .arg("-D")
                .arg("-f")
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
            unsafe {
                command.pre_exec(|| {
                    // The server dies with the thread that started it (see `Sshd::shared`).
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = command.spawn().map_err(io_err("spawn /usr/sbin/sshd"))?;
            match wait_ready(&mut child, port, &log, Duration::from_secs(15)) {
                Ok(()) => {
                    let sshd = Sshd { dir, port, child };
                    sshd.write_client_config()?;
                    return Ok(sshd);
                }
                Err(why) => {
                    last_error = why;
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        Err(SshdError::NotStarted(last_error))
    }

    /// One server shared by the whole process, started on first use.
    ///
    /// It is started from a thread that lives as long as the process, so its parent-death signal
    /// only fires when the process ends; it is also killed and its files removed at exit.
    ///
    /// # Panics
    /// When it cannot start. Call [`crate::require`] with [`Component::Sshd`] first.
    pub fn shared() -> &'static Sshd {
        static SHARED: OnceLock<Sshd> = OnceLock::new();
        SHARED.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("ferry-testbed-sshd".into())
                .spawn(move || {
                    let _ = tx.send(Sshd::start());
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawn the sshd keeper thread");
            let sshd = match rx.recv() {
                Ok(Ok(sshd)) => sshd,
                Ok(Err(e)) => panic!("cannot start the test sshd: {e}"),
                Err(_) => panic!("the sshd keeper thread died"),
            };
            SHARED_CLEANUP
                .set((sshd.child.id(), sshd.dir.path().to_owned()))
                .expect("set once");
            extern "C" fn cleanup() {
                if let Some((pid, dir)) = SHARED_CLEANUP.get() {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe {
                        libc::kill(*pid as libc::pid_t, libc::SIGTERM);
                    }
                    let _ = fs::remove_dir_all(dir);
                }
            }
            // SAFETY: `cleanup` is a plain extern "C" fn that stays valid for the whole process.
            unsafe {
                libc::atexit(cleanup);
            }
            sshd
        })
    }

    /// The listening server's process id (its sessions are its descendants).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client config file, for `ssh -F FILE` / `ferry --ssh-config FILE`.
    pub fn client_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The private key the server accepts (for every test user).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    fn write_client_config(&self) -> Result<(), SshdError> {
        let d = self.dir.path();
        let mut cfg = String::from("# ferry test bed: client side of a loopback sshd\n");
        let mut host = |alias: &str, user: &str, port: u16, key: &str, known: &str| {
            let _ = write!(
                cfg,
                "\nHost {alias}\n  User {user}\n  HostName 127.0.0.1\n  Port {port}\n  \
                 IdentityFile {}\n  UserKnownHostsFile {}\n",
                d.join(key).display(),
                d.join(known).display()
            );
        };
        for user in layout::users() {
            host(
                user.short,
                &user.name(),
                self.port,
                "client_key",
                "known_hosts",
            );
        }
        // root logs in with the same key (`PermitRootLogin prohibit-password`).
        host("root", "root", self.port, "client_key", "known_hosts");
        let bash = layout::user("bash").name();
        host("refused", &bash, self.port, "refused_key", "known_hosts");
        host(
            "unknown-hostkey",
            &bash,
            self.port,
            "client_key",
            "known_hosts_empty",
        );
        host(
            "changed-hostkey",
            &bash,
            self.port,
            "client_key",
            "known_hosts_changed",
        );
        // Nothing listens on port 1 of the loopback: the connection is refused.
        host("closed", &bash, 1, "client_key", "known_hosts");
        // A password login, with no key: ssh asks, through ferry's prompt relay.
        let _ = write!(
            cfg,
            "\nHost password\n  User {}\n  HostName 127.0.0.1\n  Port {}\n  \
             UserKnownHostsFile {}\n  PubkeyAuthentication no\n  PasswordAuthentication yes\n  \
             BatchMode no\n",
            layout::user("pw").name(),
            self.port,
            d.join("known_hosts").display()
        );
        cfg.push_str(&format!(
            "\nHost *\n  HostKeyAlias {HOST_KEY_ALIAS}\n  GlobalKnownHostsFile /dev/null\n  \
             StrictHostKeyChecking yes\n  CheckHostIP no\n  UpdateHostKeys no\n  BatchMode yes\n  \
             IdentitiesOnly yes\n  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n  \
             ControlMaster no\n  ControlPath none\n  ConnectTimeout 10\n  LogLevel ERROR\n"
        ));
        fs::write(self.client_config(), cfg).map_err(io_err("write ssh_config"))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(child: &mut Child, port: u16, log: &Path, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    let log = || fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited with {status}: {}", log()));
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "sshd does not accept connections after {timeout:?}: {}",
                log()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn keygen(path: &Path) -> Result<(), SshdError> {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ferry-testbed", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("run ssh-keygen"))?;
    if !output.status.success() {
        return Err(SshdError::Command {
            command: format!("ssh-keygen -f {}", path.display()),
            detail: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

fn free_port() -> Result<u16, SshdError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("bind a loopback port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("local address"))?
        .port())
}

fn write_server_config(dir: &Path, port: u16, extra: &str) -> Result<(), SshdError> {
    let config = format!(
        "# ferry test bed: loopback sshd\n\
         Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {dir}/host_key\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         PidFile none\n\
         UsePAM no\n\
         StrictModes no\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         AllowUsers {prefix}* root\n\
         MaxStartups 200\n\
         MaxSessions 100\n\
         MaxAuthTries 10\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         X11Forwarding no\n\
         AllowAgentForwarding no\n\
         LogLevel VERBOSE\n\
         {extra}\n\
         Match User {pw}\n  PasswordAuthentication yes\n",
        pw = crate::layout::user("pw").name(),
        dir = dir.display(),
        prefix = layout::USER_PREFIX,
    );
    fs::write(dir.join("sshd_config"), config).map_err(io_err("write sshd_config"))
}

static SHARED_CLEANUP: OnceLock<(u32, PathBuf)> = OnceLock::new();
