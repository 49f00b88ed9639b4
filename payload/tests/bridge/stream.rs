//! The `stream` payload: processes with pipes or a pty, sockets, teardown.

use std::io::{Read, Write};
use std::process::Stdio;

use serde_json::{json, Value};

use crate::common::{alive, gone, Bridge, Out};

fn run(open: Value) -> (Value, Vec<u8>) {
    let mut b = Bridge::start();
    b.open("s", open);
    b.until_close("s")
}

fn text(data: &[u8]) -> String {
    String::from_utf8(data.to_vec()).unwrap()
}

#[test]
fn exit_status_and_exit_signal() {
    let (close, data) = run(json!({"payload": "stream", "spawn": ["sh", "-c", "echo hi; exit 7"]}));
    assert_eq!(text(&data), "hi\n");
    assert_eq!(close["exit-status"], 7);
    assert!(close.get("exit-signal").is_none());
    assert!(close.get("problem").is_none());

    for (sig, name) in [
        ("TERM", "TERM"),
        ("SEGV", "SEGV"),
        ("USR1", "USR1"),
        ("KILL", "KILL"),
    ] {
        let (close, _) = run(json!({"payload": "stream",
                                     "spawn": ["sh", "-c", format!("kill -{sig} $$")]}));
        assert_eq!(close["exit-signal"], name, "{close}");
        assert!(close.get("exit-status").is_none(), "{close}");
    }
}

#[test]
fn done_closes_stdin_and_output_ends_with_done() {
    let mut b = Bridge::start();
    b.open("w", json!({"payload": "stream", "spawn": ["wc", "-c"]}));
    b.data("w", b"12345");
    b.data("w", b"678");
    b.control(json!({"command": "done", "channel": "w"}));
    let (done, data) = b.until("done", Some("w"));
    assert_eq!(done["channel"], "w");
    assert_eq!(text(&data).trim(), "8");
    let (close, _) = b.until_close("w");
    assert_eq!(close["exit-status"], 0);
}

#[test]
fn spawn_errors() {
    let (close, _) = run(json!({"payload": "stream", "spawn": ["/nonexistent/program"]}));
    assert_eq!(close["problem"], "not-found", "{close}");
    let (close, _) = run(json!({"payload": "stream", "spawn": ["/etc/passwd"]}));
    assert_eq!(close["problem"], "access-denied", "{close}");
    let (close, _) = run(json!({"payload": "stream", "spawn": ["true"],
                                "directory": "/nonexistent/dir"}));
    assert_eq!(close["problem"], "not-found", "{close}");
    let (close, _) = run(json!({"payload": "stream", "spawn": []}));
    assert_eq!(close["problem"], "protocol-error", "{close}");
    let (close, _) = run(json!({"payload": "stream", "spawn": ["true"], "environ": ["NOEQUALS"]}));
    assert_eq!(close["problem"], "protocol-error", "{close}");
    let (close, _) = run(json!({"payload": "stream"}));
    assert_eq!(close["problem"], "protocol-error", "{close}");
}

#[test]
fn environ_and_directory() {
    let dir = std::env::temp_dir();
    let (close, data) = run(json!({"payload": "stream",
        "spawn": ["sh", "-c", "echo \"$FERRY_A|$FERRY_B\"; pwd -P"],
        "environ": ["FERRY_A=one", "FERRY_B=two=2"],
        "directory": dir.to_str().unwrap()}));
    assert_eq!(close["exit-status"], 0);
    let canonical = dir.canonicalize().unwrap();
    assert_eq!(text(&data), format!("one|two=2\n{}\n", canonical.display()));
}

#[test]
fn err_modes() {
    let script = "echo out; echo err >&2";
    let (close, data) = run(json!({"payload": "stream", "spawn": ["sh", "-c", script],
                                   "err": "out"}));
    assert_eq!(text(&data), "out\nerr\n");
    // Every process's close has a message (Cockpit 337): empty when stderr went elsewhere.
    assert_eq!(close["message"], "");

    let (close, data) = run(json!({"payload": "stream", "spawn": ["sh", "-c", script],
                                   "err": "ignore"}));
    assert_eq!(text(&data), "out\n");
    assert_eq!(close["message"], "");

    let (close, data) = run(json!({"payload": "stream", "spawn": ["sh", "-c", script],
                                   "err": "message"}));
    assert_eq!(text(&data), "out\n");
    assert_eq!(close["message"], "err\n");
    assert_eq!(close["exit-status"], 0);

    // Default: the `close` message, as in Cockpit 337; nothing on the bridge's own stderr.
    let mut b = Bridge::spawn(Stdio::piped());
    b.control(json!({"command": "init", "version": 1, "host": "localhost"}));
    b.open(
        "s",
        json!({"payload": "stream", "spawn": ["sh", "-c", script]}),
    );
    let (close, data) = b.until_close("s");
    assert_eq!(text(&data), "out\n");
    assert_eq!(close["message"], "err\n");
    b.close_stdin();
    assert!(b.wait().success());
    let mut stderr = String::new();
    b.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(stderr, "");
}

#[test]
fn pty_window_and_resize() {
    let mut b = Bridge::start();
    b.open(
        "t",
        json!({"payload": "stream", "pty": true, "window": {"rows": 33, "cols": 77},
        "spawn": ["sh", "-c",
                  "tty; stty size; test -t 0 && echo stdin-is-tty; echo to-stderr >&2; \
                   read line; echo \"got $line\"; stty size"]}),
    );
    let mut seen = String::new();
    while !seen.contains("to-stderr") {
        match b.recv() {
            Out::Data(ch, d) if ch == "t" => seen.push_str(&text(&d)),
            Out::Control(v) => assert_ne!(v["command"], "close", "{v} after {seen:?}"),
            _ => {}
        }
    }
    let lines: Vec<&str> = seen.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{seen:?}");
    assert_eq!(lines[1], "33 77");
    assert_eq!(lines[2], "stdin-is-tty");
    assert_eq!(lines[3], "to-stderr");
    b.control(json!({"command": "options", "channel": "t", "window": {"rows": 10, "cols": 20}}));
    b.data("t", b"hello\n");
    let (close, data) = b.until_close("t");
    let rest = text(&data);
    // The terminal echoes the input, then the script answers.
    assert!(rest.contains("got hello\r\n10 20\r\n"), "{rest:?}");
    assert_eq!(close["exit-status"], 0);
}

#[test]
fn pty_default_window() {
    let (close, data) = run(json!({"payload": "stream", "pty": true, "spawn": ["stty", "size"]}));
    assert_eq!(text(&data), "24 80\r\n");
    assert_eq!(close["exit-status"], 0);
}

#[test]
fn text_channels_check_utf8_across_reads() {
    // The euro sign is split over two writes of the child.
    let (close, data) = run(json!({"payload": "stream",
        "spawn": ["sh", "-c", "printf '\\342\\202'; sleep 0.3; printf '\\254\\n'"]}));
    assert_eq!(close["exit-status"], 0, "{close}");
    assert_eq!(text(&data), "€\n");

    // Each frame on its own is valid UTF-8.
    let mut b = Bridge::start();
    b.open(
        "u",
        json!({"payload": "stream",
        "spawn": ["sh", "-c", "printf 'a\\342\\202'; sleep 0.3; printf '\\254b'"]}),
    );
    let mut frames = Vec::new();
    loop {
        match b.recv() {
            Out::Data(_, d) => frames.push(d),
            Out::Control(v) if v["command"] == "close" => break,
            Out::Control(_) => {}
        }
    }
    assert!(frames.len() >= 2, "{frames:?}");
    for f in &frames {
        assert!(std::str::from_utf8(f).is_ok(), "{f:?}");
    }
    assert_eq!(frames.concat(), "a€b".as_bytes());

    let (close, _) = run(json!({"payload": "stream", "spawn": ["printf", "ok\\377"]}));
    assert_eq!(close["problem"], "protocol-error", "{close}");
    // Ending inside a code point is invalid too.
    let (close, _) = run(json!({"payload": "stream", "spawn": ["printf", "ok\\342\\202"]}));
    assert_eq!(close["problem"], "protocol-error", "{close}");

    // Binary channels pass everything.
    let (close, data) = run(json!({"payload": "stream", "binary": "raw",
                                   "spawn": ["printf", "\\377\\000\\342"]}));
    assert_eq!(close["exit-status"], 0);
    assert_eq!(data, b"\xff\x00\xe2");
}

fn serve_once(listener_accept: impl FnOnce() -> Box<dyn ReadWrite + Send> + Send + 'static) {
    std::thread::spawn(move || {
        let mut conn = listener_accept();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        // Input ended (the bridge shut down its write side): answer, then close.
        conn.write_all(&got.to_ascii_uppercase()).unwrap();
    });
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn tcp_stream() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_once(move || Box::new(listener.accept().unwrap().0));
    let mut b = Bridge::start();
    b.open(
        "n",
        json!({"payload": "stream", "port": port, "address": "127.0.0.1"}),
    );
    b.until("ready", Some("n"));
    b.data("n", b"hello ");
    b.data("n", b"tcp");
    b.control(json!({"command": "done", "channel": "n"}));
    let (_, data) = b.until("done", Some("n"));
    assert_eq!(data, b"HELLO TCP");
    let (close, _) = b.until_close("n");
    assert!(close.get("problem").is_none(), "{close}");

    // Nobody listens any more.
    let (close, _) = run(json!({"payload": "stream", "port": port, "address": "127.0.0.1"}));
    assert_eq!(close["problem"], "not-found", "{close}");
}

#[test]
fn tcp_stream_defaults_to_localhost() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_once(move || Box::new(listener.accept().unwrap().0));
    let mut b = Bridge::start();
    b.open("n", json!({"payload": "stream", "port": port.to_string()}));
    b.data("n", b"x");
    b.control(json!({"command": "done", "channel": "n"}));
    let (close, data) = b.until_close("n");
    assert!(close.get("problem").is_none(), "{close}");
    assert_eq!(data, b"X");
}

#[test]
fn unix_stream() {
    let dir = std::env::temp_dir().join(format!("ferry-bridge-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    serve_once(move || Box::new(listener.accept().unwrap().0));
    let mut b = Bridge::start();
    b.open(
        "u",
        json!({"payload": "stream", "unix": path.to_str().unwrap()}),
    );
    b.data("u", b"unix");
    b.control(json!({"command": "done", "channel": "u"}));
    let (close, data) = b.until_close("u");
    assert!(close.get("problem").is_none(), "{close}");
    assert_eq!(data, b"UNIX");
    std::fs::remove_dir_all(&dir).unwrap();

    let (close, _) = run(json!({"payload": "stream", "unix": "/nonexistent/socket"}));
    assert_eq!(close["problem"], "not-found", "{close}");
}

/// Opens a process that starts a grandchild in the background and prints its pid; returns
/// (child pid, grandchild pid).
fn open_with_grandchild(b: &mut Bridge, id: &str, pty: bool) -> (i32, i32) {
    b.open(
        id,
        json!({"payload": "stream", "pty": pty,
        "spawn": ["sh", "-c", "sleep 1000 & echo $!; wait"]}),
    );
    let (ready, _) = b.until("ready", Some(id));
    let pid = ready["pid"].as_i64().unwrap() as i32;
    let mut out = String::new();
    while !out.contains('\n') {
        if let Out::Data(ch, d) = b.recv() {
            if ch == id {
                out.push_str(&text(&d));
            }
        }
    }
    let grandchild: i32 = out.trim().parse().unwrap();
    assert!(alive(pid) && alive(grandchild));
    (pid, grandchild)
}

#[test]
fn no_orphans_after_transport_eof() {
    let mut b = Bridge::start();
    let pipes = open_with_grandchild(&mut b, "p", false);
    let pty = open_with_grandchild(&mut b, "t", true);
    b.close_stdin();
    assert!(b.wait().success());
    for pid in [pipes.0, pipes.1, pty.0, pty.1] {
        assert!(gone(pid), "process {pid} survived the bridge");
    }
}

#[test]
fn no_orphans_after_close() {
    let mut b = Bridge::start();
    let (pid, grandchild) = open_with_grandchild(&mut b, "p", false);
    b.control(json!({"command": "close", "channel": "p"}));
    b.until_close("p");
    assert!(gone(pid));
    assert!(gone(grandchild));
}

#[test]
fn no_orphans_when_the_bridge_is_killed_by_a_protocol_error() {
    let mut b = Bridge::start();
    let (pid, grandchild) = open_with_grandchild(&mut b, "p", false);
    b.write(b"garbage\n");
    assert!(!b.wait().success());
    assert!(gone(pid));
    assert!(gone(grandchild));
}

#[test]
fn no_orphans_when_the_bridge_is_terminated_by_a_signal() {
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        let mut b = Bridge::start();
        let pipes = open_with_grandchild(&mut b, "p", false);
        let pty = open_with_grandchild(&mut b, "t", true);
        // SAFETY: kill has no memory effects; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(b.child.id() as i32, signal) }, 0);
        b.wait();
        for pid in [pipes.0, pipes.1, pty.0, pty.1] {
            assert!(gone(pid), "process {pid} survived signal {signal}");
        }
    }
}

#[test]
fn text_output_that_is_not_utf8_is_a_protocol_error() {
    // Valid text first, then a byte that can never start a character.
    let (close, data) = run(json!({"payload": "stream",
                                   "spawn": ["printf", "ok \\303\\251 \\377 tail"]}));
    assert_eq!(close["problem"], "protocol-error", "{close}");
    assert!(!data.contains(&0xff), "the invalid byte was passed on");
    // The same bytes on a binary channel pass unchanged.
    let (close, data) = run(json!({"payload": "stream", "binary": "raw",
                                   "spawn": ["printf", "ok \\303\\251 \\377 tail"]}));
    assert_eq!(close["exit-status"], 0, "{close}");
    assert_eq!(data, b"ok \xc3\xa9 \xff tail");
}

#[test]
fn text_input_that_is_not_utf8_is_a_protocol_error() {
    let mut b = Bridge::start();
    b.open("e", json!({"payload": "echo"}));
    b.data("e", "fine: \u{e9}".as_bytes());
    b.data("e", b"bad: \xff\xfe");
    let (close, data) = b.until_close("e");
    assert_eq!(close["problem"], "protocol-error", "{close}");
    assert_eq!(data, "fine: \u{e9}".as_bytes());
}

#[test]
fn binary_output_arrives_intact_alongside_other_channels() {
    // Bulk binary output (which the bridge may move from pipe to pipe without reading it),
    // with and without flow control, while another channel talks in between.
    let mut b = Bridge::start();
    b.open(
        "p",
        json!({"payload": "stream", "binary": "raw", "flow-control": true,
               "spawn": ["seq", "1", "300000"]}),
    );
    b.open(
        "q",
        json!({"payload": "stream", "binary": "raw", "spawn": ["seq", "1000000", "1200000"]}),
    );
    b.open("e", json!({"payload": "echo", "binary": "raw"}));
    let seq = |from: u64, to: u64| -> Vec<u8> {
        (from..=to)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let mut got: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let mut echoes = Vec::new();
    let mut closed = 0;
    while closed < 2 || got.get("e").map_or(0, Vec::len) < echoes.len() {
        match b.recv() {
            Out::Data(ch, d) => got.entry(ch).or_default().extend_from_slice(&d),
            Out::Control(v) if v["command"] == "ping" => {
                let mut pong = v.clone();
                pong["command"] = "pong".into();
                b.control(pong);
                if echoes.len() < 2000 {
                    let said = format!("<{}>", echoes.len());
                    b.data("e", said.as_bytes());
                    echoes.extend_from_slice(said.as_bytes());
                }
            }
            Out::Control(v) if v["command"] == "close" => {
                assert_eq!(v["exit-status"], 0, "{v}");
                closed += 1;
            }
            Out::Control(_) => {}
        }
    }
    assert!(got["p"] == seq(1, 300_000), "channel p differs");
    assert!(got["q"] == seq(1_000_000, 1_200_000), "channel q differs");
    assert!(!echoes.is_empty());
    assert_eq!(got["e"], echoes);
}

#[test]
fn kill_sends_term_and_reports_how_the_process_ended() {
    let mut b = Bridge::start();
    b.open(
        "t",
        json!({"payload": "stream", "group": "g", "spawn": ["sleep", "1000"]}),
    );
    let (ready, _) = b.until("ready", Some("t"));
    let pid = ready["pid"].as_i64().unwrap() as i32;
    b.control(json!({"command": "kill", "group": "g"}));
    let (close, _) = b.until_close("t");
    assert_eq!(close["problem"], "terminated", "{close}");
    assert_eq!(close["exit-signal"], "TERM", "{close}");
    assert!(gone(pid));
}

#[test]
fn kill_escalates_when_the_process_ignores_term() {
    let mut b = Bridge::start();
    b.open(
        "i",
        json!({"payload": "stream", "spawn": ["sh", "-c", "trap '' TERM; echo up; sleep 1000"]}),
    );
    let (ready, _) = b.until("ready", Some("i"));
    let pid = ready["pid"].as_i64().unwrap() as i32;
    // Let the shell install its trap first.
    std::thread::sleep(std::time::Duration::from_millis(300));
    b.control(json!({"command": "kill"}));
    let (close, _) = b.until_close("i");
    assert_eq!(close["problem"], "terminated", "{close}");
    assert_eq!(close["exit-signal"], "KILL", "{close}");
    assert!(gone(pid));
}

/// `SigIgn:` and `SigBlk:` of `/proc/self/status`, as the spawned program itself sees them.
fn signal_masks(b: &mut Bridge, channel: &str, pty: bool) -> String {
    b.open(
        channel,
        json!({"payload": "stream", "pty": pty,
               "spawn": ["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"]}),
    );
    let (close, data) = b.until_close(channel);
    assert_eq!(close["exit-status"], 0, "{close}");
    text(&data).replace("\r\n", "\n")
}

#[test]
fn children_start_with_default_signals_and_an_empty_mask() {
    // The bridge's caller ignores QUIT and a real-time signal and blocks USR1: none of it may
    // reach the programs the bridge starts, with pipes or with a terminal.
    let mut b = Bridge::start_with_signals(&[libc::SIGQUIT, 33, libc::SIGPIPE], &[libc::SIGUSR1]);
    // The bridge itself did inherit them (or this test would prove nothing).
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.child.id())).unwrap();
    let mask = |name: &str| {
        let v = status.lines().find_map(|l| l.strip_prefix(name)).unwrap();
        u64::from_str_radix(v.trim(), 16).unwrap()
    };
    let bit = |sig: i32| 1u64 << (sig - 1);
    let ignored = bit(libc::SIGQUIT) | bit(33) | bit(libc::SIGPIPE);
    assert_eq!(mask("SigIgn:") & ignored, ignored, "{status}");
    assert_ne!(mask("SigBlk:") & bit(libc::SIGUSR1), 0, "{status}");
    for (channel, pty) in [("p", false), ("t", true)] {
        let masks = signal_masks(&mut b, channel, pty);
        assert_eq!(
            masks, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
            "{channel}"
        );
    }
}

#[test]
fn a_terminal_survives_invalid_utf8() {
    // As cockpit-bridge 287 does: each invalid sequence becomes U+FFFD, nothing is lost.
    let (close, data) = run(json!({"payload": "stream", "pty": true,
                                    "spawn": ["printf", "a\\377b"]}));
    assert_eq!(close["exit-status"], 0, "{close}");
    assert!(close.get("problem").is_none(), "{close}");
    assert_eq!(text(&data), "a\u{FFFD}b");

    // `cat` of a binary file, then the terminal still works.
    let mut b = Bridge::start();
    b.open(
        "t",
        json!({"payload": "stream", "pty": true, "spawn": ["sh", "-c",
               "head -c 65536 /proc/self/exe; echo; echo still-here"]}),
    );
    let (close, data) = b.until_close("t");
    assert_eq!(close["exit-status"], 0, "{close}");
    assert!(close.get("problem").is_none(), "{close}");
    assert!(text(&data).contains("still-here"));

    // A pipe carries text as it is: invalid UTF-8 there is still a protocol error (Cockpit 337).
    let (close, _) = run(json!({"payload": "stream", "spawn": ["printf", "a\\377b"]}));
    assert_eq!(close["problem"], "protocol-error", "{close}");
}
