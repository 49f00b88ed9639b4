//! Small real servers the scenarios talk to through the bridge: an HTTP/1.1 server (TCP and
//! unix socket) and echo servers (TCP and unix socket). Each bridge run gets its own, on
//! loopback or in its own temporary directory; they stop when dropped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running server; stops accepting when dropped.
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

trait Listener: Send + 'static {
    type Stream: Read + Write + Send + 'static;
    fn accept_one(&self) -> io::Result<Self::Stream>;
}

impl Listener for TcpListener {
    type Stream = std::net::TcpStream;
    fn accept_one(&self) -> io::Result<Self::Stream> {
        let (s, _) = self.accept()?;
        s.set_nonblocking(false)?;
        Ok(s)
    }
}

impl Listener for UnixListener {
    type Stream = std::os::unix::net::UnixStream;
    fn accept_one(&self) -> io::Result<Self::Stream> {
        let (s, _) = self.accept()?;
        s.set_nonblocking(false)?;
        Ok(s)
    }
}

/// Accept connections on a non-blocking listener until stopped; one thread per connection.
fn serve<L, F>(listener: L, handler: F) -> Running
where
    L: Listener,
    F: Fn(L::Stream) + Clone + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match listener.accept_one() {
                Ok(stream) => {
                    let h = handler.clone();
                    std::thread::spawn(move || h(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Running {
        stop,
        thread: Some(thread),
    }
}

fn echo<S: Read + Write>(mut stream: S) {
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Listeners on one port of both loopback addresses, 127.0.0.1 and ::1 (where IPv6 exists):
/// a bridge may resolve `localhost` to either.
fn loopback() -> io::Result<(Vec<TcpListener>, u16)> {
    let mut last_err = None;
    for _ in 0..20 {
        let v4 = TcpListener::bind("127.0.0.1:0")?;
        let port = v4.local_addr()?.port();
        match TcpListener::bind(("::1", port)) {
            Ok(v6) => return Ok((vec![v4, v6], port)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
            // No IPv6 on this machine: IPv4 is all a bridge can reach.
            Err(_) => return Ok((vec![v4], port)),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no free loopback port")))
}

/// An echo server on the loopback addresses: returns the port.
pub fn tcp_echo() -> io::Result<(Vec<Running>, u16)> {
    let (listeners, port) = loopback()?;
    let mut running = Vec::new();
    for l in listeners {
        l.set_nonblocking(true)?;
        running.push(serve(l, echo));
    }
    Ok((running, port))
}

/// An echo server on a unix socket at `path`.
pub fn unix_echo(path: &Path) -> io::Result<Running> {
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(serve(listener, echo))
}

/// An HTTP server on the loopback addresses and on a unix socket at `path`: returns the TCP port.
///
/// Routes: `GET /hello` (fixed body, Content-Length), `GET /chunked` (chunked body),
/// `POST /echo` (the request body back), `GET /headers` (the request's header names and
/// values, sorted, with the Host value hidden), `GET /big` (256 KiB), anything else 404.
/// Responses carry no Date header, so that they are the same every time.
pub fn http(path: &Path) -> io::Result<(Vec<Running>, u16)> {
    let (listeners, port) = loopback()?;
    let mut servers = Vec::new();
    for l in listeners {
        l.set_nonblocking(true)?;
        servers.push(serve(l, http_connection));
    }
    let unix = UnixListener::bind(path)?;
    unix.set_nonblocking(true)?;
    servers.push(serve(unix, http_connection));
    Ok((servers, port))
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request<R: BufRead>(reader: &mut R) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            chunk.truncate(n);
            body.extend_from_slice(&chunk);
            if n == 0 {
                break;
            }
        }
    } else if let Some(len) = header("content-length") {
        let n: usize = len
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        body.resize(n.min(16 << 20), 0);
        reader.read_exact(&mut body)?;
    }
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

fn http_connection<S: Read + Write>(stream: S) {
    let mut reader = BufReader::new(stream);
    let Ok(Some(req)) = read_request(&mut reader) else {
        return;
    };
    let mut extra = String::new();
    let (status, body): (&str, Vec<u8>) = match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/hello") => ("200 OK", b"hello\n".to_vec()),
        ("POST", "/echo") => ("200 OK", req.body.clone()),
        ("GET", "/headers") => {
            let mut lines: Vec<String> = req
                .headers
                .iter()
                .map(|(k, v)| match k.as_str() {
                    // Names the address the bridge connected to, which changes per run.
                    "host" => "host: <present>\n".to_owned(),
                    _ => format!("{k}: {v}\n"),
                })
                .collect();
            lines.sort();
            ("200 OK", lines.concat().into_bytes())
        }
        ("GET", "/big") => (
            "200 OK",
            (0..256 * 1024u32).map(|i| b'a' + (i % 26) as u8).collect(),
        ),
        ("GET", "/chunked") => {
            let response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Ferry: chunked\r\n\
                            Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                            3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
            let _ = reader.get_mut().write_all(response.as_bytes());
            return;
        }
        _ => {
            extra.push_str("X-Reason: no such route\r\n");
            ("404 Not Found", b"not found\n".to_vec())
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Ferry: yes\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let stream = reader.get_mut();
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.flush();
}
