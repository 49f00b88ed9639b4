//! `session-control`: the idle timeout from `cockpit.conf`, `active` resetting it, the
//! countdown, `logout`, and the bridge ending 10 seconds later.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Bridge, Out};

/// A configuration directory whose `cockpit.conf` says `[Session] IdleTimeout = MINUTES`.
fn config(minutes: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cockpit")).unwrap();
    std::fs::write(
        dir.path().join("cockpit/cockpit.conf"),
        format!("[Session]\nIdleTimeout = {minutes}\n"),
    )
    .unwrap();
    dir
}

#[test]
fn without_a_timeout_ready_says_zero_and_nothing_follows() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Bridge::start_env(&[("XDG_CONFIG_DIRS", dir.path().display().to_string())]);
    b.open("s", json!({"payload": "session-control"}));
    let (ready, _) = b.until("ready", Some("s"));
    assert_eq!(ready["timeout"], 0, "{ready}");
    assert!(b.recv_timeout(Duration::from_secs(2)).is_none());
    b.close_stdin();
    assert!(b.wait().success());
}

#[test]
fn an_idle_session_counts_down_then_logs_out_and_the_bridge_ends() {
    // 0.52 minutes: 31 seconds, so the countdown starts about a second in.
    let dir = config("0.52");
    let mut b = Bridge::start_env(&[("XDG_CONFIG_DIRS", dir.path().display().to_string())]);
    b.open("s", json!({"payload": "session-control"}));
    let (ready, _) = b.until("ready", Some("s"));
    assert_eq!(ready["timeout"], 31, "{ready}");
    let (first, _) = b.until("countdown", Some("s"));
    assert_eq!(first["counter"], 30, "{first}");
    // A person is there: the countdown stops, and starts again from the top later.
    b.control(json!({"command": "active", "channel": "s"}));
    let reset = Instant::now();
    let mut counters = Vec::new();
    let logout = loop {
        let out = b
            .recv_timeout(Duration::from_secs(40))
            .expect("a countdown or the logout");
        let Out::Control(msg) = out else { continue };
        match msg["command"].as_str() {
            Some("countdown") => counters.push(msg["counter"].as_u64().unwrap()),
            Some("logout") => break Instant::now(),
            _ => {}
        }
    };
    assert!(
        logout - reset >= Duration::from_secs(30),
        "{:?}",
        logout - reset
    );
    // After `active`, a whole countdown from 30 down to 1 (perhaps one more 30 in flight).
    let tail: Vec<u64> = counters.iter().copied().skip_while(|&c| c != 30).collect();
    assert_eq!(tail.last(), Some(&1), "{counters:?}");
    assert!(
        tail.windows(2).all(|w| w[0] > w[1] || w[0] == 30),
        "{counters:?}"
    );
    // The bridge ends by itself, about 10 seconds after the logout.
    let status = b.wait();
    let ended = logout.elapsed();
    assert!(ended >= Duration::from_secs(9), "{ended:?} {status:?}");
}
