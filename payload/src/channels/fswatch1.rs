//! `fswatch1`: reports changes to a file or directory as JSON messages
//! (`{"event":"changed","path":...,"tag":...}`), with the reference bridge's event semantics
//! (see [`super::gmonitor`]). The channel takes no data.

use serde_json::Map;

use super::gmonitor::{self, Monitor};
use crate::channel::{Channel, ChannelError, ChannelResult, Input};
use ferry_protocol::problem;

pub async fn run(ch: &mut Channel) -> ChannelResult {
    let path = match ch.open.get("path") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ChannelError::new(problem::PROTOCOL_ERROR)
                .message("invalid \"path\" option for fswatch channel"))
        }
    };
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Err(ChannelError::new(problem::PROTOCOL_ERROR)
            .message("missing \"path\" option for fswatch channel"));
    };
    let mut monitor = Monitor::new(&path)
        .map_err(|e| ChannelError::new(problem::INTERNAL_ERROR).message(format!("{path}: {e}")))?;
    ch.ready(Map::new()).await;
    watch(
        ch,
        &mut monitor,
        "received unexpected message in fswatch channel",
    )
    .await
}

/// Relay the monitor's events until the peer closes; data from the peer is a protocol error.
pub(super) async fn watch(
    ch: &mut Channel,
    monitor: &mut Monitor,
    unexpected: &str,
) -> ChannelResult {
    loop {
        tokio::select! {
            event = monitor.next() => {
                let event = event.map_err(|e| {
                    ChannelError::new(problem::INTERNAL_ERROR).message(e.to_string())
                })?;
                if !ch.send_data(gmonitor::event_message(&event)).await {
                    return Ok(Map::new());
                }
            }
            input = ch.recv() => match input {
                Some(Input::Data(_)) => {
                    return Err(ChannelError::new(problem::PROTOCOL_ERROR).message(unexpected));
                }
                Some(_) => {}
                None => return Ok(Map::new()),
            },
        }
    }
}
