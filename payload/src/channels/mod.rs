//! One module per payload type. [`run`] picks the one an `open` asks for.

mod echo;
mod null;
mod stream;

use crate::channel::{Channel, ChannelError, ChannelResult};

/// Run the channel's payload until it ends.
pub async fn run(ch: &mut Channel) -> ChannelResult {
    match ch.open.str("payload").unwrap_or_default() {
        "echo" => echo::run(ch).await,
        "null" => null::run(ch).await,
        "stream" => stream::run(ch).await,
        other => Err(ChannelError::new(ferry_protocol::problem::NOT_SUPPORTED)
            .message(format!("payload type {other:?} is not supported"))),
    }
}
