//! `--interact=BOUNDARY`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::bin;

/// Messages `(channel, payload)` in the interact form.
fn parse(out: &str) -> Vec<(String, String)> {
    out.split("\n---\n")
        .filter(|m| !m.is_empty())
        .map(|m| {
            let (ch, payload) = m.split_once('\n').unwrap_or((m, ""));
            (ch.to_owned(), payload.to_owned())
        })
        .collect()
}

#[test]
fn interact_mode_speaks_the_reference_form() {
    let mut child = Command::new(bin())
        .arg("--interact=---")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    // No init needed: as if the peer had sent one for localhost.
    stdin
        .write_all(
            b"\n{\"command\":\"open\",\"channel\":\"a\",\"payload\":\"echo\"}\n---\n\
              a\nhello\nworld\n---\n\
              \n{\"command\":\"ping\"}\n---\n",
        )
        .unwrap();
    stdin.flush().unwrap();
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while parse(&out).len() < 3 {
        let chunk = rx.recv_timeout(deadline - Instant::now()).expect("output");
        out.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(out.ends_with("\n---\n"), "{out:?}");
    let messages = parse(&out);
    // No init is printed: the first message is the channel's.
    let control: Vec<Value> = messages
        .iter()
        .filter(|(ch, _)| ch.is_empty())
        .map(|(_, p)| serde_json::from_str(p).unwrap())
        .collect();
    assert!(
        control.contains(&json!({"command": "ready", "channel": "a"})),
        "{out:?}"
    );
    assert!(control.contains(&json!({"command": "pong"})), "{out:?}");
    assert!(
        messages.contains(&("a".to_owned(), "hello\nworld".to_owned())),
        "{out:?}"
    );
    assert!(!out.contains("\"init\""), "{out:?}");
    assert!(out.contains("a\nhello\nworld\n---\n"), "{out:?}");

    // A message that is not JSON is a protocol error, in the same form.
    stdin.write_all(b"\nnot json\n---\n").unwrap();
    stdin.flush().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let mut rest = String::new();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(5)) {
        rest.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let messages = parse(&rest);
    let close: Value = serde_json::from_str(&messages.last().unwrap().1).unwrap();
    assert_eq!(close["command"], "close");
    assert_eq!(close["problem"], "protocol-error");
}

#[test]
fn version_and_help() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ferry-bridge "));
    let out = Command::new(bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--interact=BOUNDARY"));
    let out = Command::new(bin()).arg("--bogus").output().unwrap();
    assert!(!out.status.success());
}
