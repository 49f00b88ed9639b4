//! `http-stream1` with `internal: "packages"`: one HTTP GET answered from the packages, as
//! Cockpit 337's `PackagesChannel` (`src/cockpit/channels/packages.py`) answers it.
//!
//! The channel says `ready`, waits for the peer's `done` (cockpit-ws sends it right after the
//! `open`), then sends the response head as the first data frame,
//! `{"status": 200, "reason": "OK", "headers": {...}}`, the body as further data frames,
//! `done`, and closes without a problem. Headers: `Cache-Control: no-cache, no-store`,
//! `Content-Type`, `Content-Encoding: gzip` for a `.gz` file, and for HTML pages the
//! `Content-Security-Policy`, whose `connect-src 'self';` gets the WebSocket origin
//! (`wss://` for `X-Forwarded-Proto: https`, else `ws://`, then `X-Forwarded-Host`).
//!
//! Failures are HTTP errors, not channel problems: 400 for a method other than GET (at once;
//! 337 sends it without `ready`, but ferry's channels always say `ready` before data), data in
//! the request, a bad path or missing `X-Forwarded-*` headers on
//! an HTML page; 404 for what does not exist; 500 when a file cannot be read. Each has
//! `"reason": "ERROR"`, `Content-Type: text/html; charset=utf-8` and a small HTML page that
//! names the error.
//!
//! One addition to 337: a gzipped file is unzipped when the request's `Accept-Encoding`
//! does not take gzip (as Cockpit's C bridge does; no `Accept-Encoding` takes anything).

use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

use super::{Body, Document, HttpError, Packages};
use crate::channel::{Channel, ChannelError, ChannelResult, Input};

/// Largest data frame of a response body.
const CHUNK: usize = 64 * 1024;

/// The error page; `@@message@@` is replaced by the (escaped) message.
const FAIL_HTML: &str = "<!DOCTYPE html>
<html>
<head>
    <title>@@message@@</title>
    <meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">
    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">
</head>
<body>
    <h1>@@message@@</h1>
</body>
</html>
";

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Send an HTTP error response and end the channel's data.
async fn http_error(ch: &mut Channel, error: &HttpError) {
    let head = json!({
        "status": error.status,
        "reason": "ERROR",
        "headers": {"Content-Type": "text/html; charset=utf-8"},
    });
    if !ch.send_json(&head).await {
        return;
    }
    let page = FAIL_HTML.replace("@@message@@", &escape_html(&error.message));
    if ch.send_data(Bytes::from(page)).await {
        ch.done().await;
    }
}

/// `Accept-Encoding` takes gzip: absent, or naming `gzip` or `*` with a q-value above 0.
fn accepts_gzip(headers: &Map<String, Value>) -> bool {
    let Some(header) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Accept-Encoding"))
        .and_then(|(_, v)| v.as_str())
    else {
        return true;
    };
    header.split(',').any(|entry| {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(super::negotiate::qvalue)
                == Some(0)
        });
        (coding == "gzip" || coding == "*") && !refused
    })
}

/// A response body: a file to send as it is read, or bytes.
enum Content {
    File(std::fs::File),
    Bytes(Vec<u8>),
}

/// The response head and body for `path`.
fn respond(
    packages: &Packages,
    path: &str,
    headers: &Map<String, Value>,
) -> Result<(Value, Content), HttpError> {
    let document: Document = packages.load_path(path, headers)?;
    let unzip = document.gzip && !accepts_gzip(headers);
    let mut out = Map::new();
    out.insert("Cache-Control".into(), "no-cache, no-store".into());
    out.insert("Content-Type".into(), document.content_type.into());
    if document.gzip && !unzip {
        out.insert("Content-Encoding".into(), "gzip".into());
    }
    if let Some(mut policy) = document.csp.clone() {
        if policy.contains("connect-src 'self';") {
            let header = |name: &str| headers.get(name).and_then(Value::as_str);
            let (Some(proto), Some(host)) =
                (header("X-Forwarded-Proto"), header("X-Forwarded-Host"))
            else {
                return Err(HttpError::new(400, "Invalid host or protocol header"));
            };
            let scheme = if proto == "https" { "wss" } else { "ws" };
            policy = policy.replace(
                "connect-src 'self';",
                &format!("connect-src {scheme}://{host} 'self';"),
            );
        }
        out.insert("Content-Security-Policy".into(), policy.into());
    }
    let body = match &document.body {
        Body::File(path) if !unzip => {
            Content::File(std::fs::File::open(path).map_err(|e| HttpError::io(&e))?)
        }
        _ => Content::Bytes(document.read(unzip)?),
    };
    let head = json!({"status": 200, "reason": "OK", "headers": out});
    Ok((head, body))
}

/// Run the channel (see the module's documentation).
pub async fn run(ch: &mut Channel) -> ChannelResult {
    let method = ch.open.get("method").cloned().unwrap_or(Value::Null);
    if method.as_str() != Some("GET") {
        let shown = match &method {
            Value::String(s) => s.clone(),
            Value::Null => "None".into(),
            other => other.to_string(),
        };
        http_error(
            ch,
            &HttpError::new(400, format!("Unsupported HTTP method {shown}")),
        )
        .await;
        return Ok(Map::new());
    }
    ch.ready(Map::new()).await;
    loop {
        match ch.recv().await {
            Some(Input::Done) => break,
            Some(Input::Data(_)) => {
                http_error(ch, &HttpError::new(400, "Received unexpected data")).await;
                return Ok(Map::new());
            }
            Some(_) => {}
            None => return Ok(Map::new()),
        }
    }
    let path = ch.open.str("path").unwrap_or_default().to_owned();
    let headers = ch
        .open
        .get("headers")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // Package files are local and small: they are looked up and read on the bridge's
    // thread, a piece at a time between frames, as Cockpit's bridges do.
    let answer = respond(&super::current(), &path, &headers);
    match answer {
        Err(error) => http_error(ch, &error).await,
        Ok((head, body)) => {
            if !ch.send_json(&head).await {
                return Ok(Map::new());
            }
            let sent = match body {
                Content::Bytes(body) => send_bytes(ch, Bytes::from(body)).await,
                Content::File(file) => send_file(ch, file).await?,
            };
            if sent {
                ch.done().await;
            }
        }
    }
    Ok(Map::new())
}

/// Send `body` in frames of at most [`CHUNK`] bytes; `false` once the channel should stop.
async fn send_bytes(ch: &mut Channel, body: Bytes) -> bool {
    let mut at = 0;
    while at < body.len() {
        let end = (at + CHUNK).min(body.len());
        if !ch.send_data(body.slice(at..end)).await {
            return false;
        }
        at = end;
    }
    true
}

/// Send a file as it is read. Once the head is out, a read error can only end the channel
/// (with its problem, such as `internal-error`).
async fn send_file(ch: &mut Channel, mut file: std::fs::File) -> Result<bool, ChannelError> {
    use std::io::Read;
    let mut buf = BytesMut::new();
    loop {
        buf.resize(CHUNK, 0);
        let n = loop {
            match file.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        }
        .map_err(|e| ChannelError::from_io(&e))?;
        if n == 0 {
            return Ok(true);
        }
        buf.truncate(n);
        if !ch.send_data(buf.split().freeze()).await {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn gzip_acceptance() {
        assert!(accepts_gzip(&headers(json!({}))));
        assert!(accepts_gzip(&headers(
            json!({"Accept-Encoding": "gzip, deflate, br"})
        )));
        assert!(accepts_gzip(&headers(json!({"accept-encoding": "*"}))));
        assert!(!accepts_gzip(&headers(
            json!({"Accept-Encoding": "identity"})
        )));
        assert!(!accepts_gzip(&headers(
            json!({"Accept-Encoding": "gzip;q=0, br"})
        )));
    }

    #[test]
    fn messages_are_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
