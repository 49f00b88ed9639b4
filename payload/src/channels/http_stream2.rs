//! `http-stream2`: one HTTP/1.1 request over a unix socket (`unix`) or TCP (`port`, with
//! `address`, default `localhost`).
//!
//! As the reference bridge does: the connection is made at `open` (`ready` once connected,
//! `not-found` when nothing listens), the request body is collected from data frames until
//! `done`, then the request goes out with `Host`, `Accept-Encoding: identity` and, on text
//! channels, `Accept-Charset: UTF-8` added, and `Content-Length` when there is a body (or the
//! method is POST). The response's status line and headers become a `response` control
//! message (`status`, `reason`, `headers`; without `Connection` and `Transfer-Encoding`, and
//! on text channels without `Content-Length` and `Range`); the body follows as data (chunked
//! encoding and `Content-Length` decoded), then `done` and `close`. TLS is `not-supported`.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::fsutil::TextSanitizer;
use crate::channel::{Channel, ChannelError, ChannelResult, Input};
use ferry_protocol::control::Message;
use ferry_protocol::problem;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where to connect.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Unix(String),
    Tcp(String, u16),
}

impl Target {
    /// The name the reference uses in messages and for `Host`.
    fn name(&self) -> String {
        match self {
            Target::Unix(path) => path.clone(),
            Target::Tcp(host, port) => format!("{host}:{port}"),
        }
    }
}

fn protocol_error(message: impl Into<String>) -> ChannelError {
    ChannelError::new(problem::PROTOCOL_ERROR).message(message)
}

/// The address options, checked as the reference checks them.
fn parse_target(open: &Map<String, Value>) -> Result<Target, ChannelError> {
    let unix = match open.get("unix") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(protocol_error("invalid \"unix\" option in channel")),
    };
    let port = match open.get("port") {
        None => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            _ => return Err(protocol_error("received invalid \"port\" option")),
        },
        Some(_) => return Err(protocol_error("invalid \"port\" option in channel")),
    };
    let address = match open.get("address") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(protocol_error("invalid \"address\" option in channel")),
    };
    let target = match (unix, port) {
        (Some(_), Some(_)) => {
            return Err(protocol_error(
                "cannot specify both \"port\" and \"unix\" options",
            ))
        }
        (Some(path), None) => Target::Unix(path),
        (None, Some(port)) => Target::Tcp(address.unwrap_or_else(|| "localhost".into()), port),
        (None, None) => {
            return Err(protocol_error(
                "no \"port\" or \"unix\" or other address option for channel",
            ))
        }
    };
    if open.contains_key("tls") {
        return Err(
            ChannelError::new(problem::NOT_SUPPORTED).message("TLS connections are not supported")
        );
    }
    Ok(target)
}

async fn connect(target: &Target) -> io::Result<Box<dyn Io>> {
    Ok(match target {
        Target::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        Target::Tcp(host, port) => {
            Box::new(tokio::net::TcpStream::connect((host.as_str(), *port)).await?)
        }
    })
}

fn connect_error(name: &str, err: &io::Error) -> ChannelError {
    use io::ErrorKind::*;
    match err.kind() {
        NotFound | ConnectionRefused | AddrNotAvailable => ChannelError::new(problem::NOT_FOUND),
        PermissionDenied => ChannelError::new(problem::ACCESS_DENIED),
        // Name resolution failures come as other kinds: the host is not found either.
        _ if err.raw_os_error().is_none() => ChannelError::new(problem::NOT_FOUND),
        _ => ChannelError::new(problem::INTERNAL_ERROR)
            .message(format!("{name}: couldn't connect: {err}")),
    }
}

/// No whitespace: what the reference accepts as a method, path or header name.
fn is_simple_token(s: &str) -> bool {
    !s.contains([' ', '\t', '\r', '\n', '\x0b'])
}

fn is_header_value(s: &str) -> bool {
    !s.contains(['\r', '\n', '\x0b'])
}

fn disallowed_header(name: &str, value: &str, binary: bool) -> bool {
    const BAD: &[&str] = &[
        "Content-Length",
        "Content-MD5",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    ];
    const BAD_TEXT: &[&str] = &[
        "Accept-Encoding",
        "Content-Encoding",
        "Accept-Charset",
        "Accept-Ranges",
        "Content-Range",
        "Range",
    ];
    let is = |list: &[&str]| list.iter().any(|b| b.eq_ignore_ascii_case(name));
    is(BAD)
        || (!binary && is(BAD_TEXT))
        || (name.eq_ignore_ascii_case("Connection") && value == "close")
}

/// `%XX`-escape everything but unreserved characters and the ones the reference keeps.
fn escape_host(name: &str) -> String {
    let mut out = String::new();
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~[]!%$&()*+,:;=\\".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request head up to `Content-Length` and the method, or the reference's complaint
/// about the options (reported once the request is due, as the reference does).
fn request_head(
    open: &Map<String, Value>,
    name: &str,
    host: &str,
    binary: bool,
) -> Result<(String, String), ChannelError> {
    let field = |key: &str| -> Result<&str, ChannelError> {
        match open.get(key) {
            Some(Value::String(s)) if is_simple_token(s) => Ok(s),
            Some(Value::String(_)) => Err(protocol_error(format!(
                "{name}: invalid \"{key}\" field in HTTP stream request"
            ))),
            None | Some(Value::Null) => Err(protocol_error(format!(
                "{name}: missing \"{key}\" field in HTTP stream request"
            ))),
            Some(_) => Err(protocol_error(format!(
                "{name}: bad \"{key}\" field in HTTP stream request"
            ))),
        }
    };
    let path = field("path")?;
    let method = field("method")?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    let (mut had_host, mut had_encoding) = (false, false);
    match open.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (header, value) in headers {
                if !is_simple_token(header) {
                    return Err(protocol_error(format!(
                        "{name}: invalid header in HTTP stream request: {header}"
                    )));
                }
                let Some(value) = value.as_str() else {
                    return Err(protocol_error(format!(
                        "{name}: invalid header value in HTTP stream request: {header}"
                    )));
                };
                if disallowed_header(header, value, binary) {
                    return Err(protocol_error(format!(
                        "{name}: disallowed header in HTTP stream request: {header}"
                    )));
                }
                if !is_header_value(value) {
                    return Err(protocol_error(format!(
                        "{name}: invalid header value in HTTP stream request: {header}"
                    )));
                }
                head.push_str(&format!("{header}: {value}\r\n"));
                had_host |= header.eq_ignore_ascii_case("Host");
                had_encoding |= header.eq_ignore_ascii_case("Accept-Encoding");
            }
        }
        Some(_) => {
            return Err(protocol_error(format!(
                "{name}: invalid \"headers\" field in HTTP stream request"
            )))
        }
    }
    if !had_host {
        head.push_str(&format!("Host: {}\r\n", escape_host(host)));
    }
    if !had_encoding {
        head.push_str("Accept-Encoding: identity\r\n");
    }
    if !binary {
        head.push_str("Accept-Charset: UTF-8\r\n");
    }
    Ok((head, method.to_owned()))
}

/// The complete request head: `Content-Length` when there is a body (or for POST).
fn finish_head(mut head: String, method: &str, body: Option<usize>) -> Vec<u8> {
    let body = match body {
        None if method.eq_ignore_ascii_case("POST") => Some(0),
        other => other,
    };
    if let Some(len) = body {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    version: String,
    status: u16,
    reason: String,
    /// In order of first appearance; a repeated header keeps its first name and last value.
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

enum HeadError {
    Incomplete,
    BadStatus,
    BadHeaders,
}

/// Parse a complete head at the start of `data`: the head and its length.
fn parse_head(data: &[u8]) -> Result<(Head, usize), HeadError> {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(HeadError::Incomplete);
    };
    let text = std::str::from_utf8(&data[..end]).map_err(|_| HeadError::BadHeaders)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || status.len() != 3 {
        return Err(HeadError::BadStatus);
    }
    let status: u16 = status.parse().map_err(|_| HeadError::BadStatus)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeadError::BadHeaders);
        };
        if name.is_empty() || !is_simple_token(name) {
            return Err(HeadError::BadHeaders);
        }
        let value = value.trim_matches([' ', '\t']).to_owned();
        match headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(existing) => existing.1 = value,
            None => headers.push((name.to_owned(), value)),
        }
    }
    Ok((
        Head {
            version: version.to_owned(),
            status,
            reason: reason.to_owned(),
            headers,
        },
        end + 4,
    ))
}

/// How the response body ends.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked,
    UntilClose,
}

fn body_kind(head: &Head, method: &str, name: &str) -> Result<Body, ChannelError> {
    let chunked = match head.get("Transfer-Encoding") {
        None => false,
        Some("chunked") => true,
        Some(other) => {
            return Err(protocol_error(format!(
                "{name}: received unsupported Transfer-Encoding in HTTP response: {other}"
            )))
        }
    };
    if method.eq_ignore_ascii_case("HEAD")
        || head.status == 204
        || head.status == 304
        || (100..200).contains(&head.status)
    {
        return Ok(Body::Length(0));
    }
    if chunked {
        return Ok(Body::Chunked);
    }
    match head.get("Content-Length") {
        None => Ok(Body::UntilClose),
        Some(v) => v.parse::<u64>().map(Body::Length).map_err(|_| {
            protocol_error(format!(
                "{name}: received invalid Content-Length in HTTP stream response"
            ))
        }),
    }
}

/// Reads the response from the connection, keeping what was read ahead.
struct Reader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Read more; `false` at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        self.buf.reserve(64 * 1024);
        Ok(self.io.read_buf(&mut self.buf).await? > 0)
    }
}

/// Sends body data, converted to UTF-8 on text channels.
struct BodyOut {
    text: Option<TextSanitizer>,
}

impl BodyOut {
    /// `false` once the channel should stop.
    async fn send(&mut self, ch: &mut Channel, data: Bytes) -> bool {
        let data = match &mut self.text {
            Some(t) => Bytes::from(t.push(&data)),
            None => data,
        };
        data.is_empty() || ch.send_data(data).await
    }

    async fn finish(&mut self, ch: &mut Channel) -> bool {
        match self.text.as_mut().map(TextSanitizer::finish) {
            Some(rest) if !rest.is_empty() => ch.send_data(Bytes::from(rest)).await,
            _ => true,
        }
    }
}

pub async fn run(ch: &mut Channel) -> ChannelResult {
    let open = &ch.open.fields;
    if !matches!(open.get("connection"), None | Some(Value::String(_))) {
        return Err(protocol_error(
            "bad \"connection\" field in HTTP stream request",
        ));
    }
    let path_for_name = match open.get("path") {
        None => "/",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(protocol_error("bad \"path\" field in HTTP stream request")),
    };
    let target = parse_target(open)?;
    let host = target.name();
    let name = format!("http://{host}{path_for_name}");
    let binary = ch.binary();
    let request = request_head(open, &name, &host, binary);

    let conn = connect(&target)
        .await
        .map_err(|e| connect_error(&name, &e))?;
    let (read_half, mut write_half) = tokio::io::split(conn);
    let mut reader = Reader {
        io: read_half,
        buf: BytesMut::new(),
    };
    ch.ready(Map::new()).await;

    // Collect the request body until `done`; the server must stay quiet meanwhile.
    let mut body: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            input = ch.recv() => match input {
                Some(Input::Data(data)) => body.get_or_insert_with(Vec::new).extend_from_slice(&data),
                Some(Input::Done) => break,
                Some(_) => {}
                None => return Ok(Map::new()),
            },
            more = reader.fill() => {
                return Err(match more {
                    Ok(true) => protocol_error(format!(
                        "{name}: received data before HTTP request was sent"
                    )),
                    _ => protocol_error(format!("{name}: received truncated HTTP response")),
                });
            }
        }
    }

    let (head, method) = request?;
    let head = finish_head(head, &method, body.as_ref().map(Vec::len));
    let sent = async {
        write_half.write_all(&head).await?;
        if let Some(body) = &body {
            write_half.write_all(body).await?;
        }
        write_half.flush().await
    };
    sent.await.map_err(|e| {
        ChannelError::new(problem::INTERNAL_ERROR)
            .message(format!("{name}: couldn't write request: {e}"))
    })?;

    // The response head.
    let (mut head, len) = loop {
        match parse_head(&reader.buf) {
            Ok(parsed) => break parsed,
            Err(HeadError::Incomplete) if reader.buf.len() <= MAX_HEAD => {}
            Err(HeadError::Incomplete) | Err(HeadError::BadHeaders) => {
                return Err(protocol_error(format!(
                    "{name}: received response with bad HTTP headers"
                )))
            }
            Err(HeadError::BadStatus) => {
                return Err(protocol_error(format!(
                    "{name}: received response with bad HTTP status line"
                )))
            }
        }
        if !reader.fill().await.unwrap_or(false) {
            return Err(protocol_error(format!(
                "{name}: received truncated HTTP response"
            )));
        }
    };
    reader.buf.advance(len);
    let kind = body_kind(&head, &method, &name)?;
    if !binary {
        head.remove("Content-Length");
        head.remove("Range");
    }
    head.remove("Connection");
    head.remove("Transfer-Encoding");
    let mut headers = Map::new();
    for (n, v) in head.headers {
        headers.insert(n, Value::String(v));
    }
    let response = Message::new("response")
        .with("channel", ch.id.as_str())
        .with("status", head.status)
        .with("reason", head.reason.as_str())
        .with("headers", Value::Object(headers));
    ch.send_control(response).await;

    let mut out = BodyOut {
        text: (!binary).then(TextSanitizer::new),
    };
    let truncated = || protocol_error(format!("{name}: received truncated HTTP response"));
    match kind {
        Body::Length(mut left) => {
            while left > 0 {
                if reader.buf.is_empty() && !reader.fill().await.unwrap_or(false) {
                    return Err(truncated());
                }
                let n = reader
                    .buf
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                let data = reader.buf.split_to(n).freeze();
                left -= n as u64;
                if !out.send(ch, data).await {
                    return Ok(Map::new());
                }
            }
        }
        Body::UntilClose => loop {
            if !reader.buf.is_empty() {
                let data = reader.buf.split().freeze();
                if !out.send(ch, data).await {
                    return Ok(Map::new());
                }
            }
            match reader.fill().await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    return Err(
                        ChannelError::new(problem::INTERNAL_ERROR).message(format!("{name}: {e}"))
                    )
                }
            }
        },
        Body::Chunked => loop {
            match parse_chunk(&reader.buf) {
                Chunk::Incomplete => {
                    if !reader.fill().await.unwrap_or(false) {
                        return Err(truncated());
                    }
                }
                Chunk::Invalid => {
                    return Err(protocol_error(format!(
                        "{name}: received invalid HTTP chunk"
                    )))
                }
                Chunk::Last(len) => {
                    reader.buf.advance(len);
                    break;
                }
                Chunk::Data { start, size } => {
                    reader.buf.advance(start);
                    let data = reader.buf.split_to(size).freeze();
                    reader.buf.advance(2);
                    if !out.send(ch, data).await {
                        return Ok(Map::new());
                    }
                }
            }
        },
    }
    if !out.finish(ch).await {
        return Ok(Map::new());
    }
    ch.done().await;
    Ok(Map::new())
}

#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    Incomplete,
    Invalid,
    /// The last chunk (and its trailers) takes this many bytes.
    Last(usize),
    /// A data chunk: the data starts at `start` and is followed by CRLF.
    Data {
        start: usize,
        size: usize,
    },
}

/// Parse the chunk at the start of `data`.
fn parse_chunk(data: &[u8]) -> Chunk {
    let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
        return if data.len() > 1024 {
            Chunk::Invalid
        } else {
            Chunk::Incomplete
        };
    };
    let line = &data[..eol];
    // Chunk extensions after `;` are ignored.
    let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
    let size_text = std::str::from_utf8(size_text).unwrap_or("").trim();
    let Ok(size) = usize::from_str_radix(size_text, 16) else {
        return Chunk::Invalid;
    };
    let start = eol + 2;
    if size == 0 {
        // Skip trailers up to the empty line.
        let rest = &data[start..];
        if rest.starts_with(b"\r\n") {
            return Chunk::Last(start + 2);
        }
        return match rest.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => Chunk::Last(start + at + 4),
            None => Chunk::Incomplete,
        };
    }
    let Some(end) = start.checked_add(size).and_then(|e| e.checked_add(2)) else {
        return Chunk::Invalid;
    };
    if data.len() < end {
        return Chunk::Incomplete;
    }
    if &data[end - 2..end] != b"\r\n" {
        return Chunk::Invalid;
    }
    Chunk::Data { start, size }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn targets_and_their_errors() {
        assert_eq!(
            parse_target(&obj(json!({"port": 80}))).unwrap(),
            Target::Tcp("localhost".into(), 80)
        );
        assert_eq!(
            parse_target(&obj(json!({"port": 80, "address": "10.0.0.1"}))).unwrap(),
            Target::Tcp("10.0.0.1".into(), 80)
        );
        assert_eq!(
            parse_target(&obj(json!({"unix": "/run/x.sock"}))).unwrap(),
            Target::Unix("/run/x.sock".into())
        );
        let msg = |v: Value| parse_target(&obj(v)).unwrap_err().message.unwrap();
        assert_eq!(
            msg(json!({"address": "1.2.3.4"})),
            "no \"port\" or \"unix\" or other address option for channel"
        );
        assert_eq!(
            msg(json!({"port": "80"})),
            "invalid \"port\" option in channel"
        );
        assert_eq!(msg(json!({"port": 0})), "received invalid \"port\" option");
        assert_eq!(
            msg(json!({"port": 70000})),
            "received invalid \"port\" option"
        );
        assert_eq!(
            msg(json!({"port": 1, "unix": "/x"})),
            "cannot specify both \"port\" and \"unix\" options"
        );
        assert_eq!(
            msg(json!({"unix": 5})),
            "invalid \"unix\" option in channel"
        );
        let e = parse_target(&obj(json!({"port": 443, "tls": {}}))).unwrap_err();
        assert_eq!(e.problem, problem::NOT_SUPPORTED);
    }

    #[test]
    fn request_head_adds_the_reference_headers() {
        let o = obj(json!({"method": "GET", "path": "/x?q=1", "headers": {"X-Test": "yes"}}));
        let (head, method) = request_head(&o, "n", "localhost:80", false).unwrap();
        let head = finish_head(head, &method, None);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /x?q=1 HTTP/1.1\r\nX-Test: yes\r\nHost: localhost:80\r\n\
             Accept-Encoding: identity\r\nAccept-Charset: UTF-8\r\n\r\n"
        );
        let o = obj(json!({"method": "POST", "path": "/", "headers": {"Host": "h"}}));
        let full = |o: &Map<String, Value>, body| {
            let (head, method) = request_head(o, "n", "/run/a.sock", true).unwrap();
            String::from_utf8(finish_head(head, &method, body)).unwrap()
        };
        let head = full(&o, None);
        assert_eq!(
            head,
            "POST / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: identity\r\nContent-Length: 0\r\n\r\n"
        );
        let o = obj(json!({"method": "PUT", "path": "/"}));
        let head = full(&o, Some(5));
        assert!(head.contains("Host: %2Frun%2Fa.sock\r\n"), "{head}");
        assert!(head.contains("Content-Length: 5\r\n"));
    }

    #[test]
    fn request_head_rejects_what_the_reference_rejects() {
        let msg = |v: Value, binary: bool| {
            request_head(&obj(v), "http://h/", "h", binary)
                .unwrap_err()
                .message
                .unwrap()
        };
        assert_eq!(
            msg(json!({"path": "/"}), false),
            "http://h/: missing \"method\" field in HTTP stream request"
        );
        assert_eq!(
            msg(json!({"method": "GET"}), false),
            "http://h/: missing \"path\" field in HTTP stream request"
        );
        assert_eq!(
            msg(json!({"method": "GET", "path": "/a b"}), false),
            "http://h/: invalid \"path\" field in HTTP stream request"
        );
        assert_eq!(
            msg(
                json!({"method": "GET", "path": "/", "headers": {"Content-Length": "5"}}),
                true
            ),
            "http://h/: disallowed header in HTTP stream request: Content-Length"
        );
        assert_eq!(
            msg(
                json!({"method": "GET", "path": "/", "headers": {"accept-encoding": "gzip"}}),
                false
            ),
            "http://h/: disallowed header in HTTP stream request: accept-encoding"
        );
        assert!(request_head(
            &obj(json!({"method": "GET", "path": "/", "headers": {"Accept-Encoding": "gzip"}})),
            "n",
            "h",
            true
        )
        .is_ok());
        assert_eq!(
            msg(
                json!({"method": "GET", "path": "/", "headers": {"Connection": "close"}}),
                false
            ),
            "http://h/: disallowed header in HTTP stream request: Connection"
        );
        assert_eq!(
            msg(
                json!({"method": "GET", "path": "/", "headers": {"X A": "a"}}),
                false
            ),
            "http://h/: invalid header in HTTP stream request: X A"
        );
        assert_eq!(
            msg(
                json!({"method": "GET", "path": "/", "headers": {"X-A": "a\nb"}}),
                false
            ),
            "http://h/: invalid header value in HTTP stream request: X-A"
        );
        assert_eq!(
            msg(json!({"method": "GET", "path": "/", "headers": []}), false),
            "http://h/: invalid \"headers\" field in HTTP stream request"
        );
    }

    #[test]
    fn response_heads() {
        let raw = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Type:  text/plain \r\nx-a: 2\r\n\r\nbody";
        let Ok((head, len)) = parse_head(raw) else {
            panic!("not parsed")
        };
        assert_eq!(&raw[len..], b"body");
        assert_eq!(head.status, 200);
        assert_eq!(head.reason, "OK");
        assert_eq!(head.version, "HTTP/1.1");
        assert_eq!(
            head.headers,
            vec![
                ("X-A".to_owned(), "2".to_owned()),
                ("Content-Type".to_owned(), "text/plain".to_owned())
            ]
        );
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\n"),
            Err(HeadError::Incomplete)
        ));
        assert!(matches!(
            parse_head(b"SSH-2.0\r\n\r\n"),
            Err(HeadError::BadStatus)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.0 404 Not Found Here\r\nbad\r\n\r\n"),
            Err(HeadError::BadHeaders)
        ));
        let (head, _) = parse_head(b"HTTP/1.0 501 Unsupported method ('X')\r\n\r\n")
            .ok()
            .unwrap();
        assert_eq!(head.reason, "Unsupported method ('X')");
    }

    #[test]
    fn body_kinds() {
        let head = |raw: &[u8]| parse_head(raw).ok().unwrap().0;
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(body_kind(&h, "GET", "n").ok(), Some(Body::Length(12)));
        assert_eq!(body_kind(&h, "HEAD", "n").ok(), Some(Body::Length(0)));
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(body_kind(&h, "GET", "n").ok(), Some(Body::Chunked));
        let h = head(b"HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(body_kind(&h, "GET", "n").ok(), Some(Body::UntilClose));
        let h = head(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(body_kind(&h, "GET", "n").ok(), Some(Body::Length(0)));
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(
            body_kind(&h, "GET", "n").unwrap_err().message.as_deref(),
            Some("n: received unsupported Transfer-Encoding in HTTP response: gzip")
        );
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
        assert!(body_kind(&h, "GET", "n").is_err());
    }

    #[test]
    fn chunks() {
        assert_eq!(
            parse_chunk(b"3\r\nabc\r\n"),
            Chunk::Data { start: 3, size: 3 }
        );
        assert_eq!(
            parse_chunk(b"a;ext=1\r\n0123456789\r\n"),
            Chunk::Data { start: 9, size: 10 }
        );
        assert_eq!(parse_chunk(b"3\r\nab"), Chunk::Incomplete);
        assert_eq!(parse_chunk(b"3\r\nabcX\r\n"), Chunk::Invalid);
        assert_eq!(parse_chunk(b"zz\r\n"), Chunk::Invalid);
        assert_eq!(parse_chunk(b"0\r\n\r\n"), Chunk::Last(5));
        assert_eq!(parse_chunk(b"0\r\nX-T: 1\r\n\r\n"), Chunk::Last(13));
        assert_eq!(parse_chunk(b"0\r\nX-T: 1\r\n"), Chunk::Incomplete);
        assert_eq!(parse_chunk(b"3"), Chunk::Incomplete);
    }

    #[test]
    fn host_escaping() {
        assert_eq!(escape_host("localhost:8080"), "localhost:8080");
        assert_eq!(escape_host("/tmp/a sock"), "%2Ftmp%2Fa%20sock");
        assert_eq!(escape_host("[::1]:80"), "[::1]:80");
    }
}
