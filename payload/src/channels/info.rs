//! `info`: one JSON message describing the bridge, then `done` and `close` (as the Python
//! bridge's `info` channel does): the bridge `version`, the `channels` (payload types) it
//! serves, its `capabilities` and the machine's `os-release`.

use serde_json::{Map, Value};

use crate::channel::{Channel, ChannelResult};

/// The payload types this bridge serves; keep in step with `channels::run`.
pub(super) const PAYLOADS: &[&str] = &[
    "echo",
    "fsinfo",
    "fslist1",
    "fsread1",
    "fsreplace1",
    "fswatch1",
    "http-stream2",
    "info",
    "metrics1",
    "null",
    "stream",
];

/// The `info` message.
fn info() -> Value {
    let init = crate::init_message();
    let mut info = Map::new();
    info.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    let mut channels = Map::new();
    for payload in PAYLOADS {
        channels.insert((*payload).to_owned(), Value::Array(Vec::new()));
    }
    info.insert("channels".into(), Value::Object(channels));
    for key in ["capabilities", "os-release"] {
        if let Some(v) = init.get(key) {
            info.insert(key.into(), v.clone());
        }
    }
    Value::Object(info)
}

pub async fn run(ch: &mut Channel) -> ChannelResult {
    ch.ready(Map::new()).await;
    if ch.send_json(&info()).await {
        ch.done().await;
    }
    Ok(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_bridge() {
        let v = info();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert!(v["channels"]["fsread1"].is_array());
        assert!(v["channels"].get("no-such-payload").is_none());
        assert!(v["os-release"].is_object());
        assert_eq!(v["capabilities"]["explicit-superuser"], true);
    }
}
