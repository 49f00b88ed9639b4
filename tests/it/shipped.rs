//! The bridge as ferry ships it (the static musl image), reached with `ferry connect local`: the
//! bridge's own tests run a build for this machine, whose C library can behave differently.

use std::process::Command;

use serde_json::json;

use crate::bootstrap::tempdir;
use crate::harness::{Running, Test};

fn connect() -> Running {
    let mut ferry = Test::new().arg("connect").arg("local").spawn();
    let (_, init) = ferry.recv_control();
    assert_eq!(init["command"], "init", "{init}");
    ferry.send_control(&json!({"command": "init", "version": 1, "host": "localhost"}));
    ferry
}

/// `fsinfo` looks at a FIFO without opening it for reading (`O_PATH`, which musl's `O_ACCMODE`
/// would swallow through `OpenOptions`): no writer, and the bridge still answers at once.
#[test]
fn fsinfo_of_a_fifo_without_writer_answers_at_once() {
    let dir = tempdir();
    let fifo = dir.path().join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success(), "mkfifo");
    let mut ferry = connect();
    ferry.send_control(&json!({
        "command": "open", "channel": "x", "payload": "fsinfo",
        "path": fifo.to_str().unwrap(), "attrs": ["type", "size"],
    }));
    let (_, ready) = ferry.recv_control();
    assert_eq!(ready["command"], "ready", "{ready}");
    let (channel, data) = ferry.recv();
    assert_eq!(channel, "x");
    let info: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(info["info"]["type"], "fifo", "{info}");
    // Without `watch` the channel ends after its answer; the bridge goes on serving.
    ferry.send_control(&json!({"command": "ping"}));
    loop {
        let (_, message) = ferry.recv_control();
        match message["command"].as_str() {
            Some("pong") => break,
            Some("done" | "close") if message["channel"] == "x" => continue,
            _ => panic!("unexpected {message}"),
        }
    }
    ferry.finish();
}
