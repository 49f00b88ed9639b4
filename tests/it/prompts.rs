//! The prompt relay: what ssh asks while it connects reaches the user once, on their terminal,
//! and the answer never shows (no echo, nothing in argv, environments or files); without a
//! terminal ferry fails at once, quoting the prompt. The login is a real password login to the
//! test bed's sshd (`password` in its client config: `ferry-pw`, no key).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testbed::{require, Component, Sshd, PASSWORD};

use crate::harness::{ferry_bin, Test};

/// How many failed password logins sshd logged after `before` of them; it may log one just
/// after the connection ends, so this waits up to 5 s for the first.
fn failed_since(before: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    while failed_passwords() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    failed_passwords() - before
}

/// How many failed password logins the shared sshd has logged for `ferry-pw`.
fn failed_passwords() -> usize {
    Sshd::shared()
        .log()
        .lines()
        .filter(|l| l.contains("Failed password for ferry-pw"))
        .count()
}

#[test]
fn a_password_prompt_without_a_terminal_fails_202_quoting_it() {
    require!(Component::Sshd);
    require!(Component::User("pw"));
    let _one = crate::harness::password_logins();
    let before = failed_passwords();
    let output = Test::new()
        .ssh_config()
        .args(["run", "ssh:password", "--", "true"])
        .status(202)
        .stderr_contains("password:")
        .stderr_contains("nobody answered (no terminal")
        .run();
    crate::bootstrap::assert_one_error_line(&output, &["ssh asked"]);
    // `connect` asks its client; a client whose input ends declines.
    let output = Test::new()
        .ssh_config()
        .args(["connect", "ssh:password"])
        .status(202)
        .run();
    let messages = output.control_messages();
    let commands: Vec<_> = messages.iter().map(|m| m["command"].clone()).collect();
    if commands != ["authorize", "init"] || messages[1]["problem"] != "authentication-failed" {
        output.fail("expected an authorize, then an init with problem authentication-failed");
    }
    // Nothing was tried: no password was sent.
    assert_eq!(failed_passwords(), before, "{}", Sshd::shared().log());
}

/// `ferry run` under a pseudo-terminal (util-linux `script`), typing `answer` once the prompt
/// shows; returns the exit status and everything the terminal showed.
fn on_a_terminal(answer: &str, command: &str) -> (i32, String) {
    let config = Sshd::shared().client_config();
    let line = format!(
        "{} run --ssh-config {} ssh:password -- {command}",
        ferry_bin(),
        config.display()
    );
    let mut script = Command::new("script")
        .args(["-q", "-f", "-e", "-c", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    let mut stdout = script.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut shown = Vec::new();
    let started = Instant::now();
    let mut answered = false;
    let mut stdin = script.stdin.take();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(bytes) => shown.extend(bytes),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(_) => {}
        }
        if !answered && String::from_utf8_lossy(&shown).contains("password:") {
            let input = stdin.as_mut().unwrap();
            input.write_all(format!("{answer}\n").as_bytes()).unwrap();
            input.flush().unwrap();
            answered = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no end after 60 s: {}",
            String::from_utf8_lossy(&shown)
        );
    }
    drop(stdin);
    let status = script.wait().unwrap().code().unwrap_or(-1);
    assert!(answered, "no prompt: {}", String::from_utf8_lossy(&shown));
    (status, String::from_utf8_lossy(&shown).into_owned())
}

/// Every process's command line and environment, as one text.
fn every_argv_and_environment() -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        for file in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                all.extend(bytes);
            }
        }
    }
    all
}

#[test]
fn a_password_is_asked_once_on_the_terminal_and_never_shown() {
    require!(Component::Sshd);
    require!(Component::User("pw"));
    let _one = crate::harness::password_logins();
    let watcher = std::thread::spawn(|| {
        // While the route runs, the password is in no command line and no environment.
        let until = Instant::now() + Duration::from_secs(8);
        let mut seen = false;
        while Instant::now() < until {
            let all = every_argv_and_environment();
            seen |= all
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes());
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    });
    let before = failed_passwords();
    let (status, shown) = on_a_terminal(PASSWORD, "sh -c 'id -un; sleep 3'");
    assert_eq!(status, 0, "{shown}");
    assert!(shown.contains("ferry-pw\r\n"), "{shown}");
    assert_eq!(shown.matches("'s password:").count(), 1, "{shown}");
    assert!(
        !shown.contains(PASSWORD),
        "the password was echoed: {shown}"
    );
    assert!(
        !watcher.join().unwrap(),
        "the password was in a command line or environment"
    );
    assert_eq!(failed_passwords(), before);
}

#[test]
fn a_wrong_password_is_tried_once_and_fails_202() {
    require!(Component::Sshd);
    require!(Component::User("pw"));
    let _one = crate::harness::password_logins();
    let before = failed_passwords();
    let (status, shown) = on_a_terminal("not-the-password", "true");
    assert_eq!(status, 202, "{shown}");
    assert!(shown.contains("authentication failed"), "{shown}");
    assert_eq!(
        shown.matches("'s password:").count(),
        1,
        "asked more than once: {shown}"
    );
    assert_eq!(failed_since(before), 1, "{}", Sshd::shared().log());
}

/// The `X-Conversation ID` prefix and the prompt of an `authorize` challenge.
fn conversation_challenge(message: &serde_json::Value) -> (String, String) {
    use base64::Engine as _;
    assert_eq!(message["command"], "authorize", "{message}");
    let challenge = message["challenge"].as_str().expect("a challenge");
    let mut words = challenge.split(' ');
    assert_eq!(words.next(), Some("X-Conversation"), "{message}");
    let id = words.next().expect("an id");
    let prompt = base64::engine::general_purpose::STANDARD
        .decode(words.next().expect("a prompt"))
        .expect("base64");
    let prompt = String::from_utf8(prompt).unwrap();
    assert_eq!(message["prompt"], prompt.as_str(), "{message}");
    assert_eq!(message["echo"], false, "{message}");
    (format!("X-Conversation {id}"), prompt)
}

fn answer(prefix: &str, cookie: &serde_json::Value, answer: &str) -> serde_json::Value {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(answer);
    serde_json::json!({
        "command": "authorize",
        "cookie": cookie,
        "response": format!("{prefix} {encoded}"),
    })
}

#[test]
fn connect_asks_its_client_in_the_form_cockpit_answers() {
    require!(Component::Sshd);
    require!(Component::User("pw"));
    let _one = crate::harness::password_logins();
    let before = failed_passwords();
    let mut ferry = Test::new()
        .ssh_config()
        .args(["connect", "ssh:password"])
        .spawn();
    let (_, authorize) = ferry.recv_control();
    let (prefix, prompt) = conversation_challenge(&authorize);
    assert!(prompt.ends_with("password: "), "{prompt}");
    // What the client sends before it answers reaches the bridge after the answer: here its
    // own `init`, then a ping.
    ferry.send_control(&serde_json::json!({"command": "init", "version": 1, "host": "localhost"}));
    ferry.send_control(&serde_json::json!({"command": "ping"}));
    ferry.send_control(&answer(&prefix, &authorize["cookie"], PASSWORD));
    let (_, init) = ferry.recv_control();
    assert_eq!(init["command"], "init", "{init}");
    assert!(init.get("problem").is_none(), "{init}");
    let (_, pong) = ferry.recv_control();
    assert_eq!(pong["command"], "pong", "{pong}");
    assert_eq!(ferry.stream_output("1", &["id", "-un"]), "ferry-pw\n");
    ferry.finish();
    assert_eq!(failed_passwords(), before);
}

#[test]
fn connect_with_a_wrong_answer_fails_authentication_once() {
    require!(Component::Sshd);
    require!(Component::User("pw"));
    let _one = crate::harness::password_logins();
    let before = failed_passwords();
    let mut ferry = Test::new()
        .ssh_config()
        .args(["connect", "ssh:password"])
        .status(202)
        .spawn();
    let (_, authorize) = ferry.recv_control();
    let (prefix, _) = conversation_challenge(&authorize);
    ferry.send_control(&answer(&prefix, &authorize["cookie"], "not-the-password"));
    let (_, init) = ferry.recv_control();
    assert_eq!(init["problem"], "authentication-failed", "{init}");
    ferry.finish();
    assert_eq!(failed_since(before), 1, "{}", Sshd::shared().log());
}
