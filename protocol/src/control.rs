//! Control messages: JSON objects on the control channel with a `command` field.

use serde_json::{Map, Value};

use crate::FrameError;

/// A parsed control message. The object is kept whole so that unknown fields survive.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub command: String,
    pub fields: Map<String, Value>,
}

impl Message {
    /// Parse a control payload: one JSON object with a string `command`.
    pub fn parse(payload: &[u8]) -> Result<Self, FrameError> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| FrameError::BadControl(format!("not JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(FrameError::BadControl("not a JSON object".into()));
        };
        let command = match fields.get("command") {
            Some(Value::String(c)) => c.clone(),
            _ => return Err(FrameError::BadControl("no \"command\" field".into())),
        };
        Ok(Message { command, fields })
    }

    /// A new message with just a `command`.
    pub fn new(command: &str) -> Self {
        let mut fields = Map::new();
        fields.insert("command".into(), Value::String(command.into()));
        Message {
            command: command.into(),
            fields,
        }
    }

    /// Change the command (kept in both `command` and the `command` field).
    pub fn set_command(&mut self, command: &str) {
        self.command = command.to_owned();
        self.fields
            .insert("command".into(), Value::String(command.into()));
    }

    /// The answer to a `ping`: the same fields, with `command` `pong`.
    pub fn into_pong(mut self) -> Self {
        self.set_command("pong");
        self
    }

    /// Builder-style setter for one field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// The `channel` field, if this message is about a channel.
    pub fn channel(&self) -> Option<&str> {
        self.str("channel")
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.fields.get(key).and_then(Value::as_u64)
    }

    pub fn i64(&self, key: &str) -> Option<i64> {
        self.fields.get(key).and_then(Value::as_i64)
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.fields.get(key).and_then(Value::as_bool)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// The `problem` field of a `close` or `init`.
    pub fn problem(&self) -> Option<&str> {
        self.str("problem")
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.fields.clone())
    }

    pub fn into_frame(self) -> crate::Frame {
        crate::Frame::control(&Value::Object(self.fields))
    }
}

/// `{"command":"init","version":1,...}` as the first message of either side.
pub fn init() -> Message {
    Message::new("init").with("version", 1)
}

/// An `init` that says the bridge could not be started: `problem` and a human `message`.
pub fn init_problem(problem: &str, message: &str) -> Message {
    Message::new("init")
        .with("version", 1)
        .with("problem", problem)
        .with("message", message)
}

/// `open` for `channel` with payload type `payload`.
pub fn open(channel: &str, payload: &str) -> Message {
    Message::new("open")
        .with("channel", channel)
        .with("payload", payload)
}

/// `close` for `channel`, with an optional `problem`.
pub fn close(channel: &str, problem: Option<&str>) -> Message {
    let m = Message::new("close").with("channel", channel);
    match problem {
        Some(p) => m.with("problem", p),
        None => m,
    }
}

/// `done` for `channel`: no more data will be sent on it by this side.
pub fn done(channel: &str) -> Message {
    Message::new("done").with("channel", channel)
}

/// `ready` for `channel`.
pub fn ready(channel: &str) -> Message {
    Message::new("ready").with("channel", channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_build() {
        let m = Message::parse(br#"{"command":"open","channel":"4","payload":"echo","x":[1]}"#)
            .unwrap();
        assert_eq!(m.command, "open");
        assert_eq!(m.channel(), Some("4"));
        assert_eq!(m.get("x"), Some(&serde_json::json!([1])));
        assert_eq!(open("4", "echo").with("x", serde_json::json!([1])), m);
    }

    #[test]
    fn pong_answers_ping() {
        let ping = Message::parse(br#"{"command":"ping","channel":"a","sequence":3}"#).unwrap();
        let pong = ping.into_pong();
        assert_eq!(pong.command, "pong");
        assert_eq!(
            pong.to_value(),
            serde_json::json!({"command":"pong","channel":"a","sequence":3})
        );
    }

    #[test]
    fn rejects_non_messages() {
        assert!(Message::parse(b"[]").is_err());
        assert!(Message::parse(b"{}").is_err());
        assert!(Message::parse(br#"{"command":3}"#).is_err());
        assert!(Message::parse(b"{").is_err());
    }
}
