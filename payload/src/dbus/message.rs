//! D-Bus messages: the fixed header, the header fields and the body (D-Bus specification,
//! "Message Protocol").

use serde_json::Value;

use super::marshal::{self, Reader, ValueError, WireError, Writer};
use super::signature::{self, Type};

/// The largest message the specification allows (128 MiB).
pub const MAX_MESSAGE: usize = 1 << 27;

/// Flag: the sender wants no reply.
pub const NO_REPLY_EXPECTED: u8 = 0x1;
/// Flag: the bus must not start a service for this call.
pub const NO_AUTO_START: u8 = 0x2;
/// Flag: the caller is ready to wait for interactive authorization.
pub const ALLOW_INTERACTIVE_AUTHORIZATION: u8 = 0x4;

/// The four kinds of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MethodCall = 1,
    MethodReturn = 2,
    Error = 3,
    Signal = 4,
}

/// One message, with its body still marshalled.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    pub flags: u8,
    /// Set when sending.
    pub serial: u32,
    pub path: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub error_name: Option<String>,
    pub reply_serial: Option<u32>,
    pub destination: Option<String>,
    pub sender: Option<String>,
    /// The body's signature (`""` when there is none).
    pub signature: String,
    pub body: Vec<u8>,
    /// The body is in big-endian order (only for received messages).
    pub big_endian: bool,
}

impl Message {
    fn new(kind: Kind) -> Self {
        Message {
            kind,
            flags: 0,
            serial: 0,
            path: None,
            interface: None,
            member: None,
            error_name: None,
            reply_serial: None,
            destination: None,
            sender: None,
            signature: String::new(),
            body: Vec::new(),
            big_endian: false,
        }
    }

    /// A method call with an empty body.
    pub fn method_call(
        destination: Option<&str>,
        path: &str,
        interface: &str,
        member: &str,
    ) -> Self {
        let mut m = Message::new(Kind::MethodCall);
        m.destination = destination.map(str::to_owned);
        m.path = Some(path.to_owned());
        m.interface = (!interface.is_empty()).then(|| interface.to_owned());
        m.member = Some(member.to_owned());
        m
    }

    /// A signal with an empty body.
    pub fn signal(path: &str, interface: &str, member: &str) -> Self {
        let mut m = Message::new(Kind::Signal);
        m.path = Some(path.to_owned());
        m.interface = Some(interface.to_owned());
        m.member = Some(member.to_owned());
        m
    }

    /// The (empty) return for `call`.
    pub fn method_return(call: &Message) -> Self {
        let mut m = Message::new(Kind::MethodReturn);
        m.reply_serial = Some(call.serial);
        m.destination = call.sender.clone();
        m
    }

    /// An error answering `call`, with `text` as its one string argument.
    pub fn error(call: &Message, name: &str, text: &str) -> Self {
        let mut m = Message::new(Kind::Error);
        m.reply_serial = Some(call.serial);
        m.destination = call.sender.clone();
        m.error_name = Some(name.to_owned());
        m.signature = "s".into();
        let mut w = Writer::new();
        w.string(text);
        m.body = w.buf;
        m
    }

    /// Set the body from JSON arguments and their signature.
    pub fn with_body(mut self, sig: &str, args: &Value) -> Result<Self, ValueError> {
        self.body = marshal::encode_body(sig, args)?;
        self.signature = sig.to_owned();
        Ok(self)
    }

    /// Set the body from values of types already parsed.
    pub fn with_values(mut self, types: &[Type], args: &[Value]) -> Result<Self, ValueError> {
        let mut w = Writer::new();
        w.values(types, args)?;
        self.body = w.buf;
        self.signature = signature::to_string(types);
        Ok(self)
    }

    /// The body as JSON values.
    pub fn args(&self) -> Result<Vec<Value>, WireError> {
        marshal::decode_body(&self.signature, &self.body, self.big_endian)
    }

    /// An error's name and first string argument (`[name, [message]]` in dbus-json3).
    pub fn error_text(&self) -> String {
        match self.args() {
            Ok(args) => match args.first() {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            },
            Err(_) => String::new(),
        }
    }

    /// The message on the wire (little-endian), with `serial`.
    pub fn encode(&self, serial: u32) -> Result<Vec<u8>, ValueError> {
        let mut w = Writer::new();
        w.u8(b'l');
        w.u8(self.kind as u8);
        w.u8(self.flags);
        w.u8(1);
        w.u32(self.body.len() as u32);
        w.u32(serial);
        w.u32(0);
        let start = w.buf.len();
        let field = |w: &mut Writer, code: u8, sig: &str, value: &str| {
            w.pad(8);
            w.u8(code);
            w.signature(sig);
            if sig == "g" {
                w.signature(value);
            } else {
                w.string(value);
            }
        };
        if let Some(v) = &self.path {
            field(&mut w, 1, "o", v);
        }
        if let Some(v) = &self.interface {
            field(&mut w, 2, "s", v);
        }
        if let Some(v) = &self.member {
            field(&mut w, 3, "s", v);
        }
        if let Some(v) = &self.error_name {
            field(&mut w, 4, "s", v);
        }
        if let Some(v) = self.reply_serial {
            w.pad(8);
            w.u8(5);
            w.signature("u");
            w.u32(v);
        }
        if let Some(v) = &self.destination {
            field(&mut w, 6, "s", v);
        }
        if let Some(v) = &self.sender {
            field(&mut w, 7, "s", v);
        }
        if !self.signature.is_empty() {
            field(&mut w, 8, "g", &self.signature);
        }
        let len = (w.buf.len() - start) as u32;
        w.buf[12..16].copy_from_slice(&len.to_le_bytes());
        w.pad(8);
        w.buf.extend_from_slice(&self.body);
        if w.buf.len() > MAX_MESSAGE {
            return Err(ValueError("message too large".into()));
        }
        Ok(w.buf)
    }

    /// The length of the whole message that starts with these 16 bytes.
    pub fn total_len(head: &[u8; 16]) -> Result<usize, WireError> {
        let big_endian = match head[0] {
            b'l' => false,
            b'B' => true,
            _ => return Err(WireError("unknown byte order")),
        };
        let word = |at: usize| {
            let mut b = [head[at], head[at + 1], head[at + 2], head[at + 3]];
            if big_endian {
                b.reverse();
            }
            u32::from_le_bytes(b) as usize
        };
        let body = word(4);
        let fields = word(12);
        if body > MAX_MESSAGE || fields > MAX_MESSAGE {
            return Err(WireError("message too large"));
        }
        let total = (16 + fields).div_ceil(8) * 8 + body;
        if total > MAX_MESSAGE {
            return Err(WireError("message too large"));
        }
        Ok(total)
    }

    /// Parse one whole message.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let head: &[u8; 16] = bytes
            .get(..16)
            .and_then(|h| h.try_into().ok())
            .ok_or(WireError("truncated"))?;
        let total = Message::total_len(head)?;
        if bytes.len() != total {
            return Err(WireError("message length mismatch"));
        }
        let big_endian = bytes[0] == b'B';
        let kind = match bytes[1] {
            1 => Kind::MethodCall,
            2 => Kind::MethodReturn,
            3 => Kind::Error,
            4 => Kind::Signal,
            _ => return Err(WireError("unknown message type")),
        };
        if bytes[3] != 1 {
            return Err(WireError("unknown protocol version"));
        }
        let mut m = Message::new(kind);
        m.flags = bytes[2];
        m.big_endian = big_endian;
        let mut r = Reader::new(bytes, big_endian);
        r.pos = 4;
        let body_len = r.u32()? as usize;
        m.serial = r.u32()?;
        if m.serial == 0 {
            return Err(WireError("serial 0"));
        }
        let fields_len = r.u32()? as usize;
        let end = 16 + fields_len;
        while r.pos < end {
            r.align(8)?;
            let code = r.u8()?;
            let sig = r.signature()?;
            let t = signature::parse_single(sig).map_err(|_| WireError("bad header field"))?;
            let want = match code {
                1 => Some(Type::ObjectPath),
                2..=4 | 6 | 7 => Some(Type::String),
                5 | 9 => Some(Type::Uint32),
                8 => Some(Type::Signature),
                _ => None,
            };
            if want.as_ref().is_some_and(|w| *w != t) {
                return Err(WireError("header field of the wrong type"));
            }
            let v = r.value(&t, 1)?;
            let text = || v.as_str().map(str::to_owned);
            match code {
                1 => m.path = text(),
                2 => m.interface = text(),
                3 => m.member = text(),
                4 => m.error_name = text(),
                5 => m.reply_serial = v.as_u64().map(|n| n as u32),
                6 => m.destination = text(),
                7 => m.sender = text(),
                8 => m.signature = text().unwrap_or_default(),
                9 if v.as_u64() != Some(0) => {
                    return Err(WireError("file descriptors are not supported"))
                }
                _ => {}
            }
        }
        if r.pos != end {
            return Err(WireError("header fields length mismatch"));
        }
        r.align(8)?;
        let body = bytes.get(r.pos..).ok_or(WireError("truncated"))?;
        if body.len() != body_len {
            return Err(WireError("body length mismatch"));
        }
        let missing = match kind {
            Kind::MethodCall => m.path.is_none() || m.member.is_none(),
            Kind::MethodReturn => m.reply_serial.is_none(),
            Kind::Error => m.reply_serial.is_none() || m.error_name.is_none(),
            Kind::Signal => m.path.is_none() || m.interface.is_none() || m.member.is_none(),
        };
        if missing {
            return Err(WireError("required header field missing"));
        }
        m.body = body.to_vec();
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_round_trip() {
        let m = Message::method_call(Some("org.example"), "/a", "org.example.I", "Do")
            .with_body("sa{sv}", &json!(["x", {"k": {"t": "u", "v": 7}}]))
            .unwrap();
        let bytes = m.encode(9).unwrap();
        let head: [u8; 16] = bytes[..16].try_into().unwrap();
        assert_eq!(Message::total_len(&head).unwrap(), bytes.len());
        let back = Message::decode(&bytes).unwrap();
        assert_eq!(back.serial, 9);
        assert_eq!(
            back.args().unwrap(),
            vec![json!("x"), json!({"k": {"t": "u", "v": 7}})]
        );
        let e = Message::error(&back, "org.example.Failed", "no");
        assert_eq!(Message { serial: 0, ..back }, m);
        let e = Message::decode(&e.encode(10).unwrap()).unwrap();
        assert_eq!((e.reply_serial, e.error_text().as_str()), (Some(9), "no"));
    }

    #[test]
    fn broken_messages_are_errors() {
        let m = Message::signal("/a", "org.example.I", "S");
        let bytes = m.encode(1).unwrap();
        assert!(Message::decode(&bytes).is_ok());
        for i in 0..bytes.len() {
            assert!(Message::decode(&bytes[..i]).is_err());
        }
        let mut no_member = Message::signal("/a", "org.example.I", "S");
        no_member.member = None;
        assert!(Message::decode(&no_member.encode(1).unwrap()).is_err());
    }
}
