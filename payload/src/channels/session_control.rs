//! `session-control`: the shell's idle logout (Cockpit's `SessionController`; shells from
//! Cockpit 362 open it and show "Disconnected" when it is refused).
//!
//! `ready` carries `timeout`: `[Session] IdleTimeout` of `cockpit.conf` in seconds (the setting
//! is in minutes; 0 or unset: none). The client sends `{"command": "active"}` while a person
//! uses the page; after `timeout` seconds without it the bridge sends
//! `{"command": "countdown", "counter": N}` once a second for the last 30 seconds, then
//! `{"command": "logout"}`, and ends itself 10 seconds later (SIGTERM to its own process, so
//! that every channel is torn down in order).

use std::time::Duration;

use ferry_protocol::control::Message;
use serde_json::Map;
use tokio::time::Instant;

use crate::channel::{Channel, ChannelResult, Input};

/// How long before the logout the countdown starts.
const COUNTDOWN: Duration = Duration::from_secs(30);

/// How long the bridge lives on after `logout`.
const AFTER_LOGOUT: Duration = Duration::from_secs(10);

/// `[Session] IdleTimeout` in seconds; 0 when unset, zero or not a number of minutes.
fn idle_timeout() -> Duration {
    crate::dbus::internal::config_value("Session", "IdleTimeout")
        .and_then(|m| m.parse::<f64>().ok())
        .filter(|m| m.is_finite() && *m > 0.0)
        .map_or(Duration::ZERO, |m| Duration::from_secs_f64(m * 60.0))
}

pub async fn run(ch: &mut Channel) -> ChannelResult {
    let timeout = idle_timeout();
    let mut ready = Map::new();
    ready.insert("timeout".into(), timeout.as_secs().into());
    ch.ready(ready).await;
    let mut active = Instant::now();
    loop {
        // With a timeout: wake at the countdown's start, then at each whole second before the
        // logout, then at the logout.
        let wake = (!timeout.is_zero()).then(|| {
            let logout = active + timeout;
            let now = Instant::now();
            if now + COUNTDOWN < logout {
                return logout - COUNTDOWN;
            }
            let left = logout.saturating_duration_since(now);
            let whole = Duration::from_secs(left.as_secs());
            if whole == left {
                now + left.min(Duration::from_secs(1))
            } else {
                logout - whole
            }
        });
        tokio::select! {
            input = ch.recv() => match input {
                None => break,
                Some(Input::Control(m)) if m.command == "active" => active = Instant::now(),
                Some(_) => {}
            },
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                let left = (active + timeout).saturating_duration_since(Instant::now());
                if left.is_zero() {
                    ch.send_control(Message::new("logout").with("channel", ch.id.as_str())).await;
                    tokio::time::sleep(AFTER_LOGOUT).await;
                    // SAFETY: kill has no memory effects; the bridge ends as on any SIGTERM.
                    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
                    break;
                }
                let counter = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                let countdown = Message::new("countdown")
                    .with("channel", ch.id.as_str())
                    .with("counter", counter);
                ch.send_control(countdown).await;
            }
        }
    }
    Ok(Map::new())
}
