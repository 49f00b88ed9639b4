//! The interface between the router and the channel types.
//!
//! Every payload type is one `async fn run(ch: &mut Channel) -> ChannelResult` in its own
//! module. The router spawns it as a task when an `open` arrives, and turns its result into
//! the channel's `close`. A `close` from the peer (or the end of the transport) aborts the task:
//! cleanup happens in `Drop` (child processes are spawned with `kill_on_drop`).

use bytes::Bytes;
use ferry_protocol::control::Message;
use serde_json::{Map, Value};

/// What the peer sends to an open channel.
#[derive(Debug)]
pub enum Input {
    /// A data frame.
    Data(Bytes),
    /// The peer sent `done`: it will send no more data.
    Done,
    /// The peer sent `options` (e.g. a pty resize).
    Options(Message),
    /// Any other channel-level control message the router does not handle itself.
    Control(Message),
}

/// How a channel ends with a problem: becomes `close` with `problem`, `message` and `extra`.
#[derive(Debug, Clone)]
pub struct ChannelError {
    pub problem: String,
    pub message: Option<String>,
    pub extra: Map<String, Value>,
}

impl ChannelError {
    pub fn new(problem: &str) -> Self {
        ChannelError {
            problem: problem.to_owned(),
            message: None,
            extra: Map::new(),
        }
    }

    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Map an I/O error to its Cockpit problem (`not-found`, `access-denied`, ...).
    pub fn from_io(err: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let problem = match err.kind() {
            NotFound | ConnectionRefused => ferry_protocol::problem::NOT_FOUND,
            PermissionDenied => ferry_protocol::problem::ACCESS_DENIED,
            _ if err.raw_os_error() == Some(libc::ENOTDIR) => {
                ferry_protocol::problem::NOT_DIRECTORY
            }
            _ => ferry_protocol::problem::INTERNAL_ERROR,
        };
        ChannelError::new(problem).message(err.to_string())
    }
}

/// A channel's result: `Ok(extra)` closes without a problem, adding `extra` to the `close`.
pub type ChannelResult = Result<Map<String, Value>, ChannelError>;

pub use crate::router::Channel;
