//! One module per payload type. [`run`] picks the one an `open` asks for.

mod echo;
mod null;
mod stream;

mod fsinfo;
mod fslist1;
mod fsread1;
mod fsreplace1;
mod fsutil;
mod fswatch1;
mod gmonitor;
mod http_stream2;
mod info;
mod inotify;
mod metrics1;
mod samplers;
mod session_control;

use crate::channel::{Channel, ChannelError, ChannelResult};

/// Run the channel's payload until it ends.
pub async fn run(ch: &mut Channel) -> ChannelResult {
    match ch.open.str("payload").unwrap_or_default() {
        "echo" => echo::run(ch).await,
        "null" => null::run(ch).await,
        "stream" => stream::run(ch).await,
        "fsread1" => fsread1::run(ch).await,
        "fsreplace1" => fsreplace1::run(ch).await,
        "fslist1" => fslist1::run(ch).await,
        "fswatch1" => fswatch1::run(ch).await,
        "metrics1" => metrics1::run(ch).await,
        "http-stream2" => http_stream2::run(ch).await,
        "http-stream1" if ch.open.str("internal") == Some("packages") => {
            crate::packages::channel::run(ch).await
        }
        "fsinfo" => fsinfo::run(ch).await,
        "info" => info::run(ch).await,
        "session-control" => session_control::run(ch).await,
        "dbus-json3" => crate::dbus::channel::run(ch).await,
        other => Err(ChannelError::new(ferry_protocol::problem::NOT_SUPPORTED)
            .message(format!("payload type {other:?} is not supported"))),
    }
}
