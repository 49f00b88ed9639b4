//! Administrative access through the internal bus: the `/superuser` object (`cockpit.Superuser`)
//! drives the privileged bridge as Cockpit's "Limited access" switch does (`Bridges`,
//! `Current`, `Start`, `Stop`, `Answer`, the `Prompt` signal), against the real sudo.

use ferry_testbed::{require, Component};
use serde_json::{json, Value};

use crate::harness::{frame, Running};
use crate::hops::{conversation, id_u};

/// What happened on the internal bus channel, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A `notify` of `Current`.
    Current(String),
    /// A `Prompt` signal: (prompt, error).
    Prompt(String, String),
    /// The reply (or error) to the call with this id.
    Reply(String, Value),
}

/// The internal bus on channel `ch`, watching `/superuser`; returns the first values of
/// `Current` and `Bridges`.
fn open_bus(ferry: &mut Running, ch: &str) -> (String, Value) {
    ferry.send_control(&json!({
        "command": "open", "channel": ch, "payload": "dbus-json3", "bus": "internal",
    }));
    send(
        ferry,
        ch,
        json!({"add-match": {"path": "/superuser", "interface": "cockpit.Superuser"}}),
    );
    send(
        ferry,
        ch,
        json!({"watch": {"path": "/superuser", "interface": "cockpit.Superuser"}, "id": "w"}),
    );
    let mut props = json!({});
    loop {
        let (id, payload) = ferry.recv();
        if id != ch {
            continue;
        }
        let msg: Value = serde_json::from_slice(&payload).unwrap();
        if let Some(p) = msg.pointer("/notify/~1superuser/cockpit.Superuser") {
            props = p.clone();
        }
        if msg["id"] == "w" {
            return (
                props["Current"].as_str().unwrap_or_default().to_owned(),
                props["Bridges"].clone(),
            );
        }
    }
}

fn send(ferry: &mut Running, ch: &str, msg: Value) {
    ferry.send(&frame(ch, msg.to_string().as_bytes()));
}

/// Call `member(args)` on `/superuser` with this call id.
fn call(ferry: &mut Running, ch: &str, id: &str, member: &str, args: Value) {
    send(
        ferry,
        ch,
        json!({"call": ["/superuser", "cockpit.Superuser", member, args], "id": id}),
    );
}

/// What arrived before a reply: the bus's news, control messages, data on other channels.
type Before = (Vec<Seen>, Vec<Value>, Vec<(String, Vec<u8>)>);

/// Read frames until the reply to call `id` on channel `ch`.
fn until_reply(ferry: &mut Running, ch: &str, id: &str) -> Before {
    let mut seen = Vec::new();
    let mut control = Vec::new();
    let mut other = Vec::new();
    loop {
        let (channel, payload) = ferry.recv();
        if channel.is_empty() {
            control.push(serde_json::from_slice(&payload).unwrap());
            continue;
        }
        if channel != ch {
            other.push((channel, payload));
            continue;
        }
        let msg: Value = serde_json::from_slice(&payload).unwrap();
        if let Some(current) = msg
            .pointer("/notify/~1superuser/cockpit.Superuser/Current")
            .and_then(Value::as_str)
        {
            seen.push(Seen::Current(current.to_owned()));
        }
        if let Some(args) = msg.get("signal").filter(|s| s[2] == "Prompt") {
            let args = &args[3];
            seen.push(Seen::Prompt(
                args[1].as_str().unwrap().to_owned(),
                args[4].as_str().unwrap().to_owned(),
            ));
        }
        if let Some(call) = msg["id"].as_str() {
            let result = msg.get("reply").or(msg.get("error")).cloned();
            seen.push(Seen::Reply(call.to_owned(), result.unwrap_or_default()));
            if call == id {
                return (seen, control, other);
            }
        }
    }
}

fn error(name: &str, text: &str) -> Value {
    json!([name, [text]])
}

#[test]
fn start_and_stop_through_the_internal_bus() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    let mut ferry = conversation(&["ssh:sudoer"], json!({}));
    let (current, bridges) = open_bus(&mut ferry, "su");
    assert_eq!(current, "none");
    assert_eq!(bridges, json!(["sudo"]));

    call(&mut ferry, "su", "u", "Start", json!(["pkexec"]));
    let (seen, ..) = until_reply(&mut ferry, "su", "u");
    let unknown = error(
        "cockpit.Superuser.Error",
        "Unknown superuser bridge type \"pkexec\"",
    );
    assert_eq!(seen, [Seen::Reply("u".into(), unknown)]);

    // Start returns once the root copy runs; Current goes init -> sudo before the reply; an
    // echo channel opened meanwhile is served.
    call(&mut ferry, "su", "s", "Start", json!(["sudo"]));
    ferry.send_control(&json!({"command": "open", "channel": "e", "payload": "echo"}));
    ferry.send(&frame("e", b"meanwhile"));
    let (seen, _, other) = until_reply(&mut ferry, "su", "s");
    assert!(
        other.contains(&("e".to_owned(), b"meanwhile".to_vec())),
        "{other:?}"
    );
    assert_eq!(
        seen,
        [
            Seen::Current("init".into()),
            Seen::Current("sudo".into()),
            Seen::Reply("s".into(), json!([[]])),
        ]
    );
    assert_eq!(id_u(&mut ferry, "r", "require"), "0");

    call(&mut ferry, "su", "again", "Start", json!(["sudo"]));
    let (seen, ..) = until_reply(&mut ferry, "su", "again");
    let running = error(
        "cockpit.Superuser.Error",
        "Superuser bridge already running",
    );
    assert_eq!(seen, [Seen::Reply("again".into(), running)]);

    // Stop: the root copy's channels close with `terminated`, Current is none again, and
    // `require` is refused from then on.
    ferry.send_control(&json!({
        "command": "open", "channel": "k", "payload": "stream",
        "spawn": ["sleep", "100"], "superuser": "require",
    }));
    loop {
        let (_, msg) = ferry.recv_control();
        if msg["command"] == "ready" && msg["channel"] == "k" {
            break;
        }
    }
    call(&mut ferry, "su", "x", "Stop", json!([]));
    let (seen, control, _) = until_reply(&mut ferry, "su", "x");
    assert_eq!(
        seen,
        [
            Seen::Current("none".into()),
            Seen::Reply("x".into(), json!([[]]))
        ]
    );
    let closed = control
        .iter()
        .find(|m| m["command"] == "close" && m["channel"] == "k")
        .unwrap_or_else(|| panic!("k is not closed: {control:?}"));
    assert_eq!(closed["problem"], "terminated", "{closed}");
    assert_eq!(id_u(&mut ferry, "r2", "require"), "problem:access-denied");

    // And it starts again.
    call(&mut ferry, "su", "s2", "Start", json!(["any"]));
    let (seen, ..) = until_reply(&mut ferry, "su", "s2");
    assert_eq!(seen.last(), Some(&Seen::Reply("s2".into(), json!([[]]))));
    assert_eq!(id_u(&mut ferry, "r3", "require"), "0");
    ferry.finish();
}

#[test]
fn a_root_session_is_root_already() {
    require!(Component::Root);
    let mut ferry = crate::harness::Test::new()
        .args(["connect", "local"])
        .spawn();
    let _ = ferry.recv_control();
    ferry.send_control(&json!({"command": "init", "version": 1, "host": "localhost"}));
    let (current, _) = open_bus(&mut ferry, "su");
    assert_eq!(current, "root");
    call(&mut ferry, "su", "s", "Start", json!(["sudo"]));
    let (seen, ..) = until_reply(&mut ferry, "su", "s");
    let running = error(
        "cockpit.Superuser.Error",
        "Superuser bridge already running",
    );
    assert_eq!(seen, [Seen::Reply("s".into(), running)]);
    ferry.finish();
}
