//! The prompt relay: what ssh asks while it connects (a password, a one-time code, whether to
//! trust an unknown host key) reaches the user once, verbatim, and the answer goes back to ssh
//! without touching argv, the environment, a file or a log.
//!
//! ssh runs with `SSH_ASKPASS_REQUIRE=force` and `SSH_ASKPASS` naming `ferry-askpass`, a
//! symbolic link to ferry's own executable in the ssh master's private control directory (mode
//! 0700). Run under that name, ferry is the askpass program ([`askpass_main`]): it hands the
//! prompt (its one argument, as OpenSSH's `ssh_askpass()` passes it) and `SSH_ASKPASS_PROMPT`
//! to the relay over a Unix socket in the same directory ([`SOCKET_ENV`] names it), prints the
//! answer on stdout for ssh, and exits 0; it exits 1 when the relay declines, which ssh takes
//! as a cancelled prompt.
//!
//! The relay ([`Relay`]) answers from the user's terminal (`/dev/tty`: the prompt is printed
//! as ssh gave it, and a password is read without echo), from the client of `ferry connect`
//! ([`Conversation`]: an `authorize` message), or, with nobody to ask, declines at once and
//! keeps the prompt so that the error can quote it (status 202). ssh is asked for one
//! password attempt only (`NumberOfPasswordPrompts=1`): a wrong password ends the connection
//! instead of locking the account after a storm of retries.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferry_protocol::control::Message;
use ferry_protocol::FrameCodec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

/// The name of the askpass link; ferry run under it is the askpass program.
pub const ASKPASS_NAME: &str = "ferry-askpass";

/// The environment variable that tells the askpass program where the relay listens (a path:
/// not a secret).
pub const SOCKET_ENV: &str = "FERRY_ASKPASS_SOCKET";

/// How the relay answers.
#[derive(Clone, Debug)]
pub enum Answerer {
    /// Ask on the controlling terminal.
    Terminal,
    /// Ask the client of `ferry connect` with an `authorize` message (see [`Conversation`]).
    Conversation(Arc<Conversation>),
    /// Nobody can answer: decline every prompt, and remember it for the error.
    Nobody,
}

impl Answerer {
    /// The terminal when this process has one (`/dev/tty` opens), nobody otherwise.
    pub fn for_this_process() -> Answerer {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
        {
            Ok(_) => Answerer::Terminal,
            Err(_) => Answerer::Nobody,
        }
    }
}

/// Prompts asked of the client of `ferry connect` (cockpit-ws, or any front end) before the
/// bridge runs, in the form Cockpit's login page answers (Cockpit 337's `beiboot.py`): an
/// `authorize` control message with `cookie`, `challenge` `X-Conversation ID BASE64(PROMPT)`,
/// `prompt`, `hint` and `echo`, plus, for an unknown host key, `host-key` (`HOST TYPE
/// login-data`) and the fingerprint as `default`; the answer is an `authorize` with the same
/// `cookie` and `response` `X-Conversation ID BASE64(ANSWER)`. Anything else the client sends
/// meanwhile is kept, in order, for the bridge ([`Conversation::take_pending`]).
#[derive(Debug, Default)]
pub struct Conversation {
    state: tokio::sync::Mutex<ConversationState>,
    next: std::sync::atomic::AtomicU64,
    password: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct ConversationState {
    /// Bytes read from stdin and not yet decoded.
    unread: bytes::BytesMut,
    /// Frames read from stdin that were not answers, encoded again, for the bridge.
    pending: Vec<u8>,
    ended: bool,
}

impl Conversation {
    /// Everything the client sent that was not an answer (complete frames, then any partial
    /// one), for the bridge: it must be written before the rest of stdin.
    pub async fn take_pending(&self) -> Vec<u8> {
        let mut state = self.state.lock().await;
        let mut out = std::mem::take(&mut state.pending);
        out.extend_from_slice(&std::mem::take(&mut state.unread));
        out
    }

    /// Answer the first password prompt with this password (from the login page's Basic
    /// credentials), once, without asking: Cockpit 337's `AuthorizeResponder` does the same.
    pub fn set_password(&self, password: String) {
        *self.password.lock().unwrap_or_else(|e| e.into_inner()) = Some(password);
    }

    /// Send `message` (an `authorize` carrying `cookie`) to the client and wait for the
    /// `authorize` that answers it; `None` when the client's input ends first. Other frames
    /// read meanwhile are kept for the bridge.
    pub async fn request(&self, message: Message, cookie: &str) -> Option<Message> {
        let mut state = self.state.lock().await;
        let mut stdout = tokio::io::stdout();
        let frame = message.into_frame().to_bytes();
        if stdout.write_all(&frame).await.is_err() || stdout.flush().await.is_err() {
            return None;
        }
        let mut codec = FrameCodec::new();
        let mut stdin = tokio::io::stdin();
        loop {
            while let Ok(Some(frame)) = codec.decode(&mut state.unread) {
                let answer = frame
                    .is_control()
                    .then(|| frame.parse_control().ok())
                    .flatten()
                    .filter(|m| m.command == "authorize" && m.str("cookie") == Some(cookie));
                if answer.is_some() {
                    return answer;
                }
                let mut again = bytes::BytesMut::new();
                let _ = codec.encode(&frame, &mut again);
                state.pending.extend_from_slice(&again);
            }
            if state.ended {
                return None;
            }
            let mut buf = vec![0u8; 64 * 1024];
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => state.ended = true,
                Ok(n) => state.unread.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// A cookie no other request of this process uses.
    pub fn cookie(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        format!("ferry-{n}")
    }

    /// Ask the client; `None` when it declines (a `problem`, a response of another form) or
    /// its input ends.
    async fn ask(&self, prompt: &str, hint: &str) -> Option<String> {
        use base64::Engine as _;
        if prompt.to_lowercase().contains("password:") {
            let password = self
                .password
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if password.is_some() {
                return password;
            }
        }
        let cookie = self.cookie();
        let prefix = format!("X-Conversation {}-{}", std::process::id(), cookie);
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut msg = Message::new("authorize")
            .with("cookie", cookie.as_str())
            .with("challenge", format!("{prefix} {}", b64.encode(prompt)))
            .with("prompt", prompt)
            .with("hint", hint)
            .with("echo", echoes(prompt, hint));
        if let Some((host, key_type, fingerprint)) = host_key_question(prompt) {
            msg = msg
                .with("host-key", format!("{host} {key_type} login-data"))
                .with("default", fingerprint);
        }
        let answer = self.request(msg, &cookie).await?;
        let encoded = answer.str("response")?.strip_prefix(&prefix)?.trim();
        String::from_utf8(b64.decode(encoded).ok()?).ok()
    }
}

/// The host, key type and fingerprint of ssh's question about an unknown host key
/// ("The authenticity of host 'HOST (ADDR)' can't be established.\nTYPE key fingerprint is
/// FP.").
fn host_key_question(prompt: &str) -> Option<(String, String, String)> {
    let host = prompt
        .split_once("authenticity of host '")?
        .1
        .split([' ', '\''])
        .next()?
        .to_owned();
    let line = prompt
        .lines()
        .find(|l| l.contains(" key fingerprint is "))?;
    let (key_type, fingerprint) = line.split_once(" key fingerprint is ")?;
    Some((
        host,
        key_type.trim().to_owned(),
        fingerprint.trim().trim_end_matches('.').to_owned(),
    ))
}

/// A relay listening in `dir` for the askpass program; it stops when dropped.
pub struct Relay {
    link: PathBuf,
    socket: PathBuf,
    declined: Arc<Mutex<Vec<String>>>,
    asking: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listen in `dir` (private to this user: the ssh master's control directory).
    ///
    /// # Errors
    /// When the link or the socket cannot be made there, or ferry's own path is unknown.
    pub fn start(dir: &Path, answerer: Answerer) -> std::io::Result<Relay> {
        let link = dir.join(ASKPASS_NAME);
        let socket = dir.join("askpass.sock");
        std::os::unix::fs::symlink(std::env::current_exe()?, &link)?;
        let listener = tokio::net::UnixListener::bind(&socket)?;
        let declined = Arc::new(Mutex::new(Vec::new()));
        let seen = declined.clone();
        let asking = Arc::new(AtomicBool::new(false));
        let waiting = asking.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                if stream.read_to_end(&mut request).await.is_err() {
                    continue;
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let (hint, prompt) = request.split_once('\0').unwrap_or(("", &request));
                let (hint, prompt) = (hint.to_owned(), prompt.to_owned());
                let answer = match &answerer {
                    Answerer::Nobody => None,
                    Answerer::Conversation(conversation) => {
                        waiting.store(true, Ordering::Relaxed);
                        let answer = conversation.ask(&prompt, &hint).await;
                        waiting.store(false, Ordering::Relaxed);
                        answer
                    }
                    Answerer::Terminal => {
                        let p = prompt.clone();
                        waiting.store(true, Ordering::Relaxed);
                        let answer = tokio::task::spawn_blocking(move || ask_terminal(&p, &hint))
                            .await
                            .ok()
                            .flatten();
                        waiting.store(false, Ordering::Relaxed);
                        answer
                    }
                };
                let reply = match answer {
                    Some(a) => {
                        let mut r = b"y".to_vec();
                        r.extend_from_slice(a.as_bytes());
                        r
                    }
                    None => {
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push(prompt);
                        b"n".to_vec()
                    }
                };
                let _ = stream.write_all(&reply).await;
                let _ = stream.shutdown().await;
            }
        });
        Ok(Relay {
            link,
            socket,
            declined,
            asking,
            task,
        })
    }

    /// The environment ssh needs to ask through this relay.
    pub fn env(&self) -> [(&'static str, OsString); 3] {
        [
            ("SSH_ASKPASS", self.link.clone().into_os_string()),
            ("SSH_ASKPASS_REQUIRE", "force".into()),
            (SOCKET_ENV, self.socket.clone().into_os_string()),
        ]
    }

    /// The first secret ssh asked for (a password, a code) that nobody could answer, trimmed
    /// to one line. A declined question about a host key is not one: ssh names that failure
    /// itself ("Host key verification failed").
    pub fn declined(&self) -> Option<String> {
        let declined = self.declined.lock().unwrap_or_else(|e| e.into_inner());
        declined
            .iter()
            .find(|p| !echoes(p, ""))
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// Is a prompt waiting for its answer now?
    pub fn asking(&self) -> bool {
        self.asking.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Is this prompt a question whose answer may be shown (yes/no about a host key), rather than
/// a secret? OpenSSH passes `SSH_ASKPASS_PROMPT=confirm` for confirmations.
fn echoes(prompt: &str, hint: &str) -> bool {
    hint == "confirm" || prompt.contains("(yes/no")
}

/// Ask on `/dev/tty`: the prompt as ssh gave it, the answer without echo unless it is a yes/no
/// question. `None` when the terminal fails or the user ends the input.
///
/// Echo is turned off before the prompt is shown, so that nothing typed ahead is echoed
/// (a password typed as soon as the prompt appears must never show).
fn ask_terminal(prompt: &str, hint: &str) -> Option<String> {
    use std::os::fd::AsRawFd;
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let fd = tty.as_raw_fd();
    let secret = !echoes(prompt, hint);
    // SAFETY: termios is plain data; tcgetattr fills it for an open terminal descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the life of `tty`; `saved` is a valid termios to fill.
    let have_termios = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if secret && have_termios {
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
        quiet.c_lflag |= libc::ICANON;
        // SAFETY: as above; TCSAFLUSH also drops what was typed before the prompt.
        unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &quiet) };
    }
    let read = (|| {
        tty.write_all(prompt.as_bytes()).ok()?;
        tty.flush().ok()?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match tty.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break,
                Ok(1) => line.push(byte[0]),
                _ if line.is_empty() => return None,
                _ => break,
            }
        }
        Some(
            String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_owned(),
        )
    })();
    if secret && have_termios {
        // SAFETY: as above: the terminal gets back what it had.
        unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &saved) };
        let _ = tty.write_all(b"\n");
    }
    read
}

/// ferry run as the askpass program: ask the relay named by [`SOCKET_ENV`] and print its
/// answer. Returns the exit status: 0 with an answer, 1 when declined or unreachable.
pub fn askpass_main() -> u8 {
    let prompt = std::env::args_os()
        .nth(1)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hint = std::env::var("SSH_ASKPASS_PROMPT").unwrap_or_default();
    let Some(socket) = std::env::var_os(SOCKET_ENV) else {
        eprintln!("{ASKPASS_NAME}: {SOCKET_ENV} is not set; ferry runs this for ssh");
        return 1;
    };
    let ask = || -> std::io::Result<Vec<u8>> {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket)?;
        stream.write_all(hint.as_bytes())?;
        stream.write_all(b"\0")?;
        stream.write_all(prompt.as_bytes())?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        Ok(reply)
    };
    match ask() {
        Ok(reply) if reply.first() == Some(&b'y') => {
            let mut out = std::io::stdout().lock();
            let ok = out.write_all(&reply[1..]).is_ok() && out.write_all(b"\n").is_ok();
            if ok && out.flush().is_ok() {
                0
            } else {
                1
            }
        }
        _ => 1,
    }
}

/// Was this process started as the askpass program (its `argv[0]` ends in [`ASKPASS_NAME`])?
pub fn is_askpass() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == ASKPASS_NAME))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_questions_are_recognised() {
        let prompt = "The authenticity of host 'web1 (192.0.2.7)' can't be established.\n\
                      ED25519 key fingerprint is SHA256:abcDEF123.\n\
                      This key is not known by any other names.\n\
                      Are you sure you want to continue connecting (yes/no/[fingerprint])? ";
        assert_eq!(
            host_key_question(prompt),
            Some(("web1".into(), "ED25519".into(), "SHA256:abcDEF123".into()))
        );
        assert_eq!(host_key_question("web1's password: "), None);
    }

    #[test]
    fn yes_no_questions_echo_and_passwords_do_not() {
        assert!(echoes(
            "Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
            ""
        ));
        assert!(echoes("Allow use of key?", "confirm"));
        assert!(!echoes("ferry-pw@127.0.0.1's password: ", ""));
        assert!(!echoes("Verification code: ", ""));
    }
}
