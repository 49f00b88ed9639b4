//! `echo`: sends every data frame back.

use serde_json::Map;

use crate::channel::{Channel, ChannelResult, Input};

pub async fn run(ch: &mut Channel) -> ChannelResult {
    ch.ready(Map::new()).await;
    while let Some(input) = ch.recv().await {
        match input {
            Input::Data(data) => {
                if !ch.send_data(data).await {
                    break;
                }
            }
            Input::Done => {
                ch.done().await;
                break;
            }
            Input::Options(_) | Input::Control(_) => {}
        }
    }
    Ok(Map::new())
}
