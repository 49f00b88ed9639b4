//! The protocol core: init, framing errors, control messages, channels' life cycle.

use serde_json::{json, Value};

use crate::common::{frame, Bridge, Out};

/// The bridge answers with `close` carrying `protocol-error` and exits non-zero.
fn assert_protocol_error(b: &mut Bridge) {
    let rest = b.rest();
    let close = rest
        .iter()
        .find(|o| o.command() == Some("close"))
        .unwrap_or_else(|| panic!("no close in {rest:?}"));
    let Out::Control(close) = close else {
        unreachable!()
    };
    assert_eq!(close["problem"], "protocol-error", "{close}");
    assert!(close.get("channel").is_none(), "{close}");
    let status = b.wait();
    assert!(!status.success(), "{status:?}");
}

#[test]
fn init_carries_version_capabilities_and_os_release() {
    let b = Bridge::spawn(std::process::Stdio::null());
    assert_eq!(b.init["version"], 1);
    assert!(b.init["capabilities"].is_object(), "{}", b.init);
    let id = std::fs::read_to_string("/etc/os-release")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("ID=")
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap();
    assert_eq!(b.init["os-release"]["ID"], id.as_str());
}

#[test]
fn messages_before_init_are_protocol_errors() {
    let mut b = Bridge::spawn(std::process::Stdio::null());
    b.data("a", b"x");
    assert_protocol_error(&mut b);

    let mut b = Bridge::spawn(std::process::Stdio::null());
    b.open("a", json!({"payload": "echo"}));
    assert_protocol_error(&mut b);
}

#[test]
fn init_needs_version_1_and_a_host() {
    let mut b = Bridge::spawn(std::process::Stdio::null());
    b.control(json!({"command": "init", "version": 2, "host": "localhost"}));
    assert_protocol_error(&mut b);

    let mut b = Bridge::spawn(std::process::Stdio::null());
    b.control(json!({"command": "init", "version": 1}));
    assert_protocol_error(&mut b);
}

#[test]
fn broken_frames_are_protocol_errors() {
    let cases: Vec<Vec<u8>> = vec![
        b"12345678901\n\n{}".to_vec(),                   // size line too long
        b"99999999999".to_vec(),                         // too long, no newline yet
        b"x\n".to_vec(),                                 // not a number
        b"-5\n".to_vec(),                                // not a number either
        b"2000000000\n".to_vec(),                        // larger than the maximum frame
        b"3\nabc".to_vec(),                              // no channel line
        frame("", br#"{"a":1}"#),                        // control without command
        frame("", b"{}x"),                               // not JSON
        frame("", b"["),                                 // not JSON
        frame("", b"\xff"),                              // not JSON
        frame("", br#"{"command":"open"}"#),             // open without channel
        frame("", br#"{"command":"open","channel":5}"#), // channel is not a string
    ];
    for case in cases {
        let mut b = Bridge::start();
        b.write(&case);
        b.close_stdin();
        let rest = b.rest();
        let close = rest.iter().find_map(|o| match o {
            Out::Control(v) if v["command"] == "close" => Some(v.clone()),
            _ => None,
        });
        let close = close.unwrap_or_else(|| {
            panic!("{:?}: no close in {rest:?}", String::from_utf8_lossy(&case))
        });
        assert_eq!(close["problem"], "protocol-error", "{close}");
        assert!(!b.wait().success());
    }
}

#[test]
fn truncated_frame_at_eof_is_an_error_but_clean_eof_is_not() {
    let mut b = Bridge::start();
    b.write(b"10\nab");
    b.close_stdin();
    assert!(!b.wait().success());

    let mut b = Bridge::start();
    b.control(json!({"command": "ping"}));
    assert_eq!(b.recv().command(), Some("pong"));
    b.close_stdin();
    assert!(b.wait().success());
}

#[test]
fn duplicate_open_and_empty_channel_are_protocol_errors() {
    let mut b = Bridge::start();
    b.open("a", json!({"payload": "null"}));
    assert_eq!(b.until("ready", Some("a")).0["channel"], "a");
    b.open("a", json!({"payload": "null"}));
    assert_protocol_error(&mut b);

    let mut b = Bridge::start();
    b.control(json!({"command": "done", "channel": ""}));
    assert_protocol_error(&mut b);
}

#[test]
fn ping_is_answered_with_pong_and_unknown_commands_are_ignored() {
    let mut b = Bridge::start();
    b.control(json!({"command": "frobnicate", "x": 1}));
    b.control(json!({"command": "authorize", "cookie": "c", "response": "r"}));
    b.control(json!({"command": "frobnicate", "channel": "nope"}));
    b.control(json!({"command": "ping", "extra": [1]}));
    let Out::Control(pong) = b.recv() else {
        panic!("expected a control message")
    };
    assert_eq!(pong, json!({"command": "pong", "extra": [1]}));
}

#[test]
fn echo_done_and_close() {
    let mut b = Bridge::start();
    b.open("e", json!({"payload": "echo"}));
    b.data("e", b"hello");
    b.data("e", b"");
    b.control(json!({"command": "done", "channel": "e"}));
    let (done, data) = b.until("done", Some("e"));
    assert_eq!(done["channel"], "e");
    assert_eq!(data, b"hello");
    let (close, _) = b.until_close("e");
    assert!(close.get("problem").is_none(), "{close}");
}

#[test]
fn close_from_the_peer_is_answered_and_the_id_can_be_reused() {
    let mut b = Bridge::start();
    b.open("n", json!({"payload": "null"}));
    b.until("ready", Some("n"));
    b.control(json!({"command": "close", "channel": "n"}));
    let (close, _) = b.until_close("n");
    assert!(close.get("problem").is_none(), "{close}");
    // Data for a closed channel is dropped; the id is free again.
    b.data("n", b"dropped");
    b.data("never-opened", b"dropped");
    b.open("n", json!({"payload": "echo"}));
    b.data("n", b"again");
    let mut got = Vec::new();
    while got.len() < 5 {
        match b.recv() {
            Out::Data(ch, d) => {
                assert_eq!(ch, "n");
                got.extend_from_slice(&d);
            }
            Out::Control(v) => assert_ne!(v["command"], "close", "{v}"),
        }
    }
    assert_eq!(got, b"again");
}

#[test]
fn reopening_right_after_the_bridge_closes_a_channel_works() {
    // The bridge closes "s" by itself; the peer reuses the id as soon as it sees the close.
    let mut b = Bridge::start();
    for round in 0..50 {
        b.open("s", json!({"payload": "stream", "spawn": ["true"]}));
        let (close, _) = b.until_close("s");
        assert_eq!(close["exit-status"], 0, "round {round}: {close}");
    }
    b.control(json!({"command": "ping"}));
    b.until("pong", None);
}

#[test]
fn unknown_payload_is_not_supported() {
    let mut b = Bridge::start();
    b.open("x", json!({"payload": "no-such-payload"}));
    let (close, _) = b.until_close("x");
    assert_eq!(close["problem"], "not-supported");
    b.open("y", json!({}));
    let (close, _) = b.until_close("y");
    assert_eq!(close["problem"], "not-supported");
}

#[test]
fn send_acks_and_channel_pings() {
    let mut b = Bridge::start();
    b.open("e", json!({"payload": "echo", "send-acks": "bytes"}));
    b.data("e", b"12345");
    b.data("e", b"123");
    b.control(json!({"command": "ping", "channel": "e", "sequence": 8, "x": "y"}));
    b.control(json!({"command": "done", "channel": "e"}));
    let mut acks = Vec::new();
    let mut pong = None;
    loop {
        match b.recv() {
            Out::Control(v) if v["command"] == "ack" => acks.push(v["bytes"].as_u64().unwrap()),
            Out::Control(v) if v["command"] == "pong" => {
                // Answered only after the data before it was consumed.
                assert_eq!(acks, [5, 3]);
                pong = Some(v);
            }
            Out::Control(v) if v["command"] == "close" => break,
            _ => {}
        }
    }
    assert_eq!(acks, [5, 3]);
    assert_eq!(
        pong,
        Some(json!({"command": "pong", "channel": "e", "sequence": 8, "x": "y"}))
    );
}

#[test]
fn a_thousand_channels_at_once() {
    let mut b = Bridge::start();
    let mut opens = Vec::new();
    for i in 0..1000 {
        opens.extend(frame(
            "",
            json!({"command": "open", "channel": format!("c{i}"), "payload": "echo"})
                .to_string()
                .as_bytes(),
        ));
        opens.extend(frame(&format!("c{i}"), format!("msg {i}").as_bytes()));
    }
    b.write(&opens);
    let mut seen = vec![false; 1000];
    let mut count = 0;
    while count < 1000 {
        if let Out::Data(ch, d) = b.recv() {
            let i: usize = ch[1..].parse().unwrap();
            assert_eq!(d, format!("msg {i}").as_bytes());
            assert!(!seen[i]);
            seen[i] = true;
            count += 1;
        }
    }
    // All are still open: each answers again.
    let mut again = Vec::new();
    for i in 0..1000 {
        again.extend(frame(&format!("c{i}"), b"2"));
    }
    b.write(&again);
    let mut echoed = 0;
    while echoed < 1000 {
        if let Out::Data(_, d) = b.recv() {
            assert_eq!(d, b"2");
            echoed += 1;
        }
    }
    // Every close is answered.
    let mut closes = Vec::new();
    for i in 0..1000 {
        closes.extend(frame(
            "",
            json!({"command": "close", "channel": format!("c{i}")})
                .to_string()
                .as_bytes(),
        ));
    }
    b.write(&closes);
    let mut closed = vec![false; 1000];
    for _ in 0..1000 {
        let (close, _) = b.until("close", None);
        let i: usize = close["channel"].as_str().unwrap()[1..].parse().unwrap();
        assert!(!closed[i]);
        closed[i] = true;
    }
    b.control(json!({"command": "ping"}));
    b.until("pong", None);
}

#[test]
fn a_thousand_processes_at_once() {
    let mut b = Bridge::start();
    let mut opens = Vec::new();
    for i in 0..1000 {
        let open = json!({"command": "open", "channel": format!("p{i}"), "payload": "stream",
                          "spawn": ["cat"]});
        opens.extend(frame("", open.to_string().as_bytes()));
    }
    b.write(&opens);
    let mut ready = 0;
    while ready < 1000 {
        match b.recv() {
            Out::Control(v) if v["command"] == "ready" => ready += 1,
            Out::Control(v) if v["command"] == "close" => panic!("{v}"),
            _ => {}
        }
    }
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend(frame(&format!("p{i}"), format!("{i}\n").as_bytes()));
        let done = json!({"command": "done", "channel": format!("p{i}")});
        input.extend(frame("", done.to_string().as_bytes()));
    }
    b.write(&input);
    let mut closed = 0;
    let mut data = vec![Vec::new(); 1000];
    while closed < 1000 {
        match b.recv() {
            Out::Data(ch, d) => data[ch[1..].parse::<usize>().unwrap()].extend(d),
            Out::Control(v) if v["command"] == "close" => {
                assert_eq!(v["exit-status"], 0, "{v}");
                closed += 1;
            }
            Out::Control(_) => {}
        }
    }
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d, format!("{i}\n").as_bytes());
    }
}

#[test]
fn kill_by_group_and_host() {
    let mut b = Bridge::start();
    let mut pids = std::collections::HashMap::new();
    for (id, group, host) in [
        ("a", Some("g1"), None),
        ("b", Some("g2"), None),
        ("c", None, Some("localhost")),
        ("d", Some("g1"), None),
    ] {
        let mut open = json!({"payload": "stream", "spawn": ["sleep", "1000"]});
        if let Some(g) = group {
            open["group"] = g.into();
        }
        if let Some(h) = host {
            open["host"] = h.into();
        }
        b.open(id, open);
        let (ready, _) = b.until("ready", Some(id));
        pids.insert(id, ready["pid"].as_i64().unwrap() as i32);
    }
    b.control(json!({"command": "kill", "group": "g1"}));
    let mut closed = Vec::new();
    for _ in 0..2 {
        let (close, _) = b.until("close", None);
        assert_eq!(close["problem"], "terminated", "{close}");
        closed.push(close["channel"].as_str().unwrap().to_owned());
    }
    closed.sort();
    assert_eq!(closed, ["a", "d"]);
    assert!(crate::common::gone(pids["a"]));
    assert!(crate::common::gone(pids["d"]));
    assert!(crate::common::alive(pids["b"]));

    // Another host: nothing happens.
    b.control(json!({"command": "kill", "host": "elsewhere"}));
    b.control(json!({"command": "ping"}));
    let (_, _) = b.until("pong", None);
    assert!(crate::common::alive(pids["b"]));
    assert!(crate::common::alive(pids["c"]));

    // Everything of this host.
    b.control(json!({"command": "kill", "host": "localhost"}));
    let mut closed = Vec::new();
    for _ in 0..2 {
        let (close, _) = b.until("close", None);
        assert_eq!(close["problem"], "terminated");
        closed.push(close["channel"].as_str().unwrap().to_owned());
    }
    closed.sort();
    assert_eq!(closed, ["b", "c"]);
    assert!(crate::common::gone(pids["b"]));
    assert!(crate::common::gone(pids["c"]));
}

#[test]
fn message_for_an_unready_channel_waits() {
    // Input sent right after open reaches the process even though it arrives before ready.
    let mut b = Bridge::start();
    b.open("c", json!({"payload": "stream", "spawn": ["cat"]}));
    b.data("c", b"early");
    b.control(json!({"command": "done", "channel": "c"}));
    let (close, data) = b.until_close("c");
    assert_eq!(close["exit-status"], 0);
    assert_eq!(data, b"early");
    let _: Value = close;
}
