//! A connection to a message bus (or a peer): address parsing, EXTERNAL authentication,
//! `Hello`, and matching replies to calls.
//!
//! A reader task owns the receiving half. A reply to a call made with [`Connection::call`]
//! goes to that caller; a reply to a call sent with [`Connection::send_call`] and every other
//! message (signals, calls to us) goes, in arrival order, to the connection's [`Event`]
//! queue. The dbus-json3 channel relies on that order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::message::{Kind, Message};

/// The size of the reader's buffer, in bytes (a larger message is read straight into place).
const READ_BUFFER: usize = 16 * 1024;
/// How long a connection may take to authenticate and say `Hello`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(25);
/// How long the bridge waits for the answer to a call it makes on its own behalf
/// (the D-Bus reference implementation's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(25);

/// What the reader task hands on, in arrival order.
#[derive(Debug)]
pub enum Event {
    /// The reply (return or error) to a call sent with [`Connection::send_call`].
    Reply(Message),
    /// A signal.
    Signal(Message),
    /// A method call addressed to this connection.
    Call(Message),
    /// The connection ended (with the reason).
    Closed(String),
}

/// A failure of the connection itself, or a call that got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("{0}")]
    Connect(String),
    #[error("the connection to the bus was lost")]
    Disconnected,
    #[error("the call timed out")]
    Timeout,
}

enum Waiter {
    Once(oneshot::Sender<Message>),
    Event,
}

type Pending = Arc<Mutex<HashMap<u32, Waiter>>>;

/// One connection. Dropping it ends the reader task and closes the socket.
pub struct Connection {
    write: OwnedWriteHalf,
    serial: u32,
    pending: Pending,
    reader: JoinHandle<()>,
    /// The unique name the bus gave (`None` on a peer-to-peer connection).
    pub unique_name: Option<String>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connect to the bus at `address` (a D-Bus address: `unix:path=...`, `unix:abstract=...`,
    /// several separated by `;`), authenticate, and say `Hello` when `bus` (a message bus
    /// rather than a peer).
    pub async fn open(
        address: &str,
        bus: bool,
    ) -> Result<(Connection, mpsc::UnboundedReceiver<Event>), BusError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect(address))
            .await
            .map_err(|_| BusError::Connect(format!("connecting to {address} timed out")))??;
        let (mut read, mut write) = stream.into_split();
        tokio::time::timeout(CONNECT_TIMEOUT, authenticate(&mut read, &mut write))
            .await
            .map_err(|_| BusError::Connect("authentication timed out".into()))??;
        let (mut conn, events) = Connection::start(read, write);
        if bus {
            let hello = Message::method_call(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "Hello",
            );
            let reply = conn.call(hello, CONNECT_TIMEOUT).await?;
            match reply.args() {
                Ok(args) if reply.kind == Kind::MethodReturn => {
                    conn.unique_name = args.first().and_then(|v| v.as_str()).map(str::to_owned);
                }
                _ => return Err(BusError::Connect("the bus refused Hello".into())),
            }
        }
        Ok((conn, events))
    }

    /// A connection over a socket that is already past authentication (the internal bus).
    pub fn start(
        read: OwnedReadHalf,
        write: OwnedWriteHalf,
    ) -> (Connection, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let reader = tokio::spawn(read_loop(read, pending.clone(), tx));
        (
            Connection {
                write,
                serial: 0,
                pending,
                reader,
                unique_name: None,
            },
            rx,
        )
    }

    /// Write a whole message. Boxed: awaited in several places, its state machine is kept
    /// out of theirs (image size).
    fn write(
        &mut self,
        bytes: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BusError>> + Send + '_>>
    {
        Box::pin(async move {
            self.write
                .write_all(&bytes)
                .await
                .map_err(|_| BusError::Disconnected)
        })
    }

    fn next_serial(&mut self) -> u32 {
        self.serial = self.serial.wrapping_add(1).max(1);
        self.serial
    }

    /// Send a message that expects no reply routed anywhere; returns its serial.
    pub async fn send(&mut self, m: &Message) -> Result<u32, BusError> {
        let serial = self.next_serial();
        let bytes = m
            .encode(serial)
            .map_err(|e| BusError::Connect(e.to_string()))?;
        self.write(bytes).await?;
        Ok(serial)
    }

    /// Send a call whose reply goes to the event queue as [`Event::Reply`]; returns its serial.
    pub async fn send_call(&mut self, m: &Message) -> Result<u32, BusError> {
        let serial = self.next_serial();
        self.pending.lock().unwrap().insert(serial, Waiter::Event);
        let bytes = m
            .encode(serial)
            .map_err(|e| BusError::Connect(e.to_string()));
        let sent = match bytes {
            Ok(bytes) => self.write(bytes).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            self.forget(serial);
            return Err(e);
        }
        Ok(serial)
    }

    /// Stop routing the reply to `serial` (a call that timed out).
    pub fn forget(&mut self, serial: u32) {
        self.pending.lock().unwrap().remove(&serial);
    }

    /// Call and wait for the reply (a return or an error message), at most `timeout`.
    pub async fn call(&mut self, m: Message, timeout: Duration) -> Result<Message, BusError> {
        let serial = self.next_serial();
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap()
            .insert(serial, Waiter::Once(tx));
        let bytes = m
            .encode(serial)
            .map_err(|e| BusError::Connect(e.to_string()))?;
        if self.write(bytes).await.is_err() {
            self.forget(serial);
            return Err(BusError::Disconnected);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(BusError::Disconnected),
            Err(_) => {
                self.forget(serial);
                Err(BusError::Timeout)
            }
        }
    }

    /// Add a match rule on the bus without waiting for the answer (the bus handles messages
    /// in order, so the rule is in force for anything sent after it).
    pub async fn add_match(&mut self, rule: &str) -> Result<(), BusError> {
        let m = Message::method_call(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "AddMatch",
        )
        .with_body("s", &serde_json::json!([rule]))
        .map_err(|e| BusError::Connect(e.to_string()))?;
        self.send(&m).await.map(|_| ())
    }
}

async fn read_loop(read: OwnedReadHalf, pending: Pending, events: mpsc::UnboundedSender<Event>) {
    // Buffered: a burst of signals is read a socketful at a time, not with two reads each.
    let mut read = tokio::io::BufReader::with_capacity(READ_BUFFER, read);
    let reason = loop {
        let mut head = [0u8; 16];
        if read.read_exact(&mut head).await.is_err() {
            break "the bus closed the connection".to_owned();
        }
        let total = match Message::total_len(&head) {
            Ok(n) => n,
            Err(e) => break e.to_string(),
        };
        let mut bytes = vec![0u8; total];
        bytes[..16].copy_from_slice(&head);
        if read.read_exact(&mut bytes[16..]).await.is_err() {
            break "the bus closed the connection".to_owned();
        }
        let m = match Message::decode(&bytes) {
            Ok(m) => m,
            Err(e) => break e.to_string(),
        };
        let event = match m.kind {
            Kind::MethodReturn | Kind::Error => {
                let waiter = m
                    .reply_serial
                    .and_then(|s| pending.lock().unwrap().remove(&s));
                match waiter {
                    Some(Waiter::Once(tx)) => {
                        let _ = tx.send(m);
                        continue;
                    }
                    Some(Waiter::Event) => Event::Reply(m),
                    None => continue,
                }
            }
            Kind::Signal => Event::Signal(m),
            Kind::MethodCall => Event::Call(m),
        };
        if events.send(event).is_err() {
            return;
        }
    };
    pending.lock().unwrap().clear();
    let _ = events.send(Event::Closed(reason));
}

/// Undo the address escaping (`%XX`).
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            if let Some(b) = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn connect(address: &str) -> Result<UnixStream, BusError> {
    let mut last = format!("no usable address in {address:?}");
    for entry in address.split(';').filter(|e| !e.is_empty()) {
        let Some((transport, params)) = entry.split_once(':') else {
            continue;
        };
        let params: HashMap<&str, String> = params
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, unescape(v)))
            .collect();
        if transport != "unix" {
            last = format!("unsupported D-Bus transport {transport:?}");
            continue;
        }
        let result = if let Some(path) = params.get("path") {
            UnixStream::connect(path).await
        } else if let Some(name) = params.get("abstract") {
            abstract_socket(name.as_bytes())
        } else {
            last = format!("unsupported unix address {entry:?}");
            continue;
        };
        match result {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("cannot connect to {entry}: {e}"),
        }
    }
    Err(BusError::Connect(last))
}

fn abstract_socket(name: &[u8]) -> std::io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    let s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    s.set_nonblocking(true)?;
    UnixStream::from_std(s)
}

/// SASL EXTERNAL with our effective uid, all lines sent at once.
async fn authenticate(
    read: &mut OwnedReadHalf,
    write: &mut OwnedWriteHalf,
) -> Result<(), BusError> {
    // SAFETY: geteuid cannot fail and has no preconditions.
    let uid = unsafe { libc::geteuid() }.to_string();
    let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
    let hello = format!("\0AUTH EXTERNAL {hex}\r\n");
    write
        .write_all(hello.as_bytes())
        .await
        .map_err(|e| BusError::Connect(e.to_string()))?;
    // One byte at a time: nothing after the line may be consumed here (the bus sends nothing
    // more before BEGIN, but the messages that follow belong to the reader).
    let mut line = Vec::new();
    while line.len() < 512 && line.last() != Some(&b'\n') {
        let b = read
            .read_u8()
            .await
            .map_err(|e| BusError::Connect(e.to_string()))?;
        line.push(b);
    }
    if !line.starts_with(b"OK ") {
        return Err(BusError::Connect(format!(
            "the bus refused authentication: {}",
            String::from_utf8_lossy(&line).trim()
        )));
    }
    write
        .write_all(b"BEGIN\r\n")
        .await
        .map_err(|e| BusError::Connect(e.to_string()))?;
    Ok(())
}

/// The address of the system bus: `DBUS_SYSTEM_BUS_ADDRESS`, or the standard socket.
pub fn system_bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/var/run/dbus/system_bus_socket".into())
}

/// The address of the session bus: `DBUS_SESSION_BUS_ADDRESS`, or `$XDG_RUNTIME_DIR/bus`.
pub fn session_bus_address() -> Option<String> {
    if let Ok(a) = std::env::var("DBUS_SESSION_BUS_ADDRESS") {
        return Some(a);
    }
    let dir = std::env::var("XDG_RUNTIME_DIR")
        .unwrap_or_else(|_| format!("/run/user/{}", unsafe { libc::getuid() }));
    let path = format!("{dir}/bus");
    std::path::Path::new(&path)
        .exists()
        .then(|| format!("unix:path={path}"))
}
