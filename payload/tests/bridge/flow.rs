//! Flow control and bounded memory with slow readers.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{bin, frame, read_frame, rss_kib, Bridge, Out};

const MIB: u64 = 1024 * 1024;

/// Receive until nothing arrives for `quiet`; returns data bytes and ping sequences seen.
fn drain_quiet(b: &Bridge, quiet: Duration) -> (u64, Vec<u64>, Option<serde_json::Value>) {
    let mut bytes = 0;
    let mut pings = Vec::new();
    while let Some(out) = b.recv_timeout(quiet) {
        match out {
            Out::Data(_, d) => bytes += d.len() as u64,
            Out::Control(v) if v["command"] == "ping" => {
                pings.push(v["sequence"].as_u64().unwrap());
            }
            Out::Control(v) if v["command"] == "close" => return (bytes, pings, Some(v)),
            Out::Control(_) => {}
        }
    }
    (bytes, pings, None)
}

#[test]
fn flow_control_stops_at_the_window_and_pongs_move_it() {
    let mut b = Bridge::start();
    let total = 8 * MIB;
    b.open(
        "f",
        json!({"payload": "stream", "binary": "raw", "flow-control": true,
               "spawn": ["head", "-c", total.to_string(), "/dev/zero"]}),
    );
    let (ready, _) = b.until("ready", Some("f"));
    let pid = ready["pid"].as_i64().unwrap() as i32;

    // Nobody answers: the bridge stops after 2 MiB (plus at most one read).
    let (sent, pings, close) = drain_quiet(&b, Duration::from_millis(1500));
    assert!(close.is_none());
    assert!(sent >= 2 * MIB, "only {sent} bytes");
    assert!(
        sent <= 2 * MIB + 64 * 1024,
        "{sent} bytes despite the window"
    );
    // A ping each time the count crosses a 16 KiB boundary, carrying the bytes sent.
    let block = 16 * 1024;
    assert!(pings[0] >= block, "{pings:?}");
    assert!(
        pings.windows(2).all(|w| w[0] / block < w[1] / block),
        "{pings:?}"
    );
    assert!(pings.iter().all(|&s| s <= sent));
    assert!(
        sent - pings.last().unwrap() < block + 64 * 1024,
        "{pings:?}"
    );
    // The producer is blocked, not finished: the bridge stopped reading.
    assert!(crate::common::alive(pid));
    // Memory stays small while the data waits in the child.
    assert!(rss_kib(b.child.id()) < 32 * 1024);

    // Answering the first quarter of the pings moves the window by about that much.
    let answered = pings[pings.len() / 4];
    b.control(json!({"command": "pong", "channel": "f", "sequence": answered}));
    let (more, more_pings, close) = drain_quiet(&b, Duration::from_millis(1500));
    assert!(close.is_none());
    let limit = answered + 2 * MIB;
    assert!(sent + more >= limit, "{} < {limit}", sent + more);
    assert!(sent + more <= limit + 64 * 1024);

    // Answer everything as it comes: the rest arrives and the channel closes.
    let mut received = sent + more;
    let mut last = more_pings.last().copied().unwrap_or(answered);
    b.control(json!({"command": "pong", "channel": "f", "sequence": last}));
    loop {
        match b.recv() {
            Out::Data(_, d) => received += d.len() as u64,
            Out::Control(v) if v["command"] == "ping" => {
                last = v["sequence"].as_u64().unwrap();
                b.control(json!({"command": "pong", "channel": "f", "sequence": last}));
            }
            Out::Control(v) if v["command"] == "close" => {
                assert_eq!(v["exit-status"], 0, "{v}");
                break;
            }
            Out::Control(_) => {}
        }
    }
    assert_eq!(received, total);
    assert_eq!(last, total);
}

#[test]
fn without_flow_control_a_slow_reader_does_not_grow_the_bridge() {
    use std::io::{BufReader, Write};
    use std::process::{Command, Stdio};

    let mut child = Command::new(bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let total: u64 = 256 * MIB;
    let mut input = frame(
        "",
        json!({"command": "init", "version": 1, "host": "localhost"})
            .to_string()
            .as_bytes(),
    );
    input.extend(frame(
        "",
        json!({"command": "open", "channel": "z", "payload": "stream", "binary": "raw",
               "spawn": ["head", "-c", total.to_string(), "/dev/zero"]})
        .to_string()
        .as_bytes(),
    ));
    stdin.write_all(&input).unwrap();
    stdin.flush().unwrap();

    // Nobody reads for a while: the producer has more than enough time to outrun us.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(child.id());
    assert!(rss < 48 * 1024, "the bridge holds {rss} KiB");

    let mut stdout = BufReader::with_capacity(1 << 20, child.stdout.take().unwrap());
    let mut received = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut close = None;
    while let Some((ch, payload)) = read_frame(&mut stdout) {
        assert!(Instant::now() < deadline);
        if ch == "z" {
            received += payload.len() as u64;
        } else {
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            if v["command"] == "close" {
                close = Some(v);
                break;
            }
        }
    }
    assert_eq!(received, total);
    assert_eq!(close.unwrap()["exit-status"], 0);
    let rss = rss_kib(child.id());
    assert!(rss < 48 * 1024, "the bridge holds {rss} KiB");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn large_input_and_output_at_once_do_not_deadlock() {
    // cat writes while we write: the bridge must keep reading its output while the child is
    // not reading its input, and the other way round.
    let mut b = Bridge::start();
    b.open(
        "c",
        json!({"payload": "stream", "binary": "raw", "spawn": ["cat"]}),
    );
    let chunk = vec![b'x'; 60_000];
    let count = 100;
    let mut input = Vec::new();
    for _ in 0..count {
        input.extend(frame("c", &chunk));
    }
    input.extend(frame(
        "",
        json!({"command": "done", "channel": "c"})
            .to_string()
            .as_bytes(),
    ));
    // Write on another thread: the pipe to the bridge fills up too.
    let mut stdin_frames = input;
    let writer = {
        let mut stdin = b.take_stdin();
        std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(&std::mem::take(&mut stdin_frames)).unwrap();
            stdin.flush().unwrap();
            // Keep the pipe open until the test is done reading.
            std::thread::sleep(Duration::from_secs(5));
        })
    };
    let (close, data) = b.until_close("c");
    assert_eq!(close["exit-status"], 0, "{close}");
    assert_eq!(data.len(), chunk.len() * count);
    writer.join().unwrap();
}
