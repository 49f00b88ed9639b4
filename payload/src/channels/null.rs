//! `null`: accepts everything, sends nothing.

use serde_json::Map;

use crate::channel::{Channel, ChannelResult, Input};

pub async fn run(ch: &mut Channel) -> ChannelResult {
    ch.ready(Map::new()).await;
    while let Some(input) = ch.recv().await {
        if let Input::Done = input {
            break;
        }
    }
    Ok(Map::new())
}
