//! The bridge's internal bus: the objects a Cockpit front end reaches with
//! `cockpit.dbus(null, {bus: "internal"})`, served inside the bridge as Cockpit's Python
//! bridge serves them (`src/cockpit/internal_endpoints.py`, `config.py`, `superuser.py`,
//! `packages.py`):
//!
//! | path | interface | members |
//! | --- | --- | --- |
//! | `/user` | `cockpit.User` | `Name s`, `Full s` (GECOS), `Id i`, `Gid i`, `Home s`, `Shell s`, `Groups as` |
//! | `/config` | `cockpit.Config` | `GetString(ss)→s`, `GetUInt(ssuuu)→u`, `Reload()` |
//! | `/machines` | `cockpit.Machines` | `Machines a{sa{sv}}` (`machines.d/*.json`), `Update(ssa{sv})` |
//! | `/packages` | `cockpit.Packages` | `Manifests s`, `Reload()`, `ReloadHint()` |
//! | `/superuser` | `cockpit.Superuser` | `Bridges as`, `Current s`, `Methods a{sv}`, `Start(s)`, `Stop()`, `Answer(s)`, signal `Prompt(sssbs)` |
//! | `/LoginMessages` | `cockpit.LoginMessages` | `Get()→s`, `Dismiss()` |
//! | `/environment` | `cockpit.Environment` | `Variables a{ss}` |
//!
//! Every object also has `org.freedesktop.DBus.Properties`, `Introspectable` and `Peer`.
//!
//! The objects are served over an in-memory stream in the D-Bus wire format, by the same codec
//! that talks to real buses, so a `dbus-json3` channel treats the internal bus like any peer.
//! `Manifests` is the JSON of the packages the bridge serves (`crate::packages::current()`).
//! `/superuser` is the privileged bridge's (`crate::superuser`): `Start` and `Stop` are
//! answered once it has acted, after the `PropertiesChanged` of `Current` they cause, and its
//! signals go to every connection; other calls are answered at once, in order.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::sync::Mutex;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connection::{Connection, Event};
use super::introspect;
use super::message::{Kind, Message, NO_REPLY_EXPECTED};
use tokio::sync::mpsc;

const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const INTROSPECTABLE: &str = "org.freedesktop.DBus.Introspectable";
const PEER: &str = "org.freedesktop.DBus.Peer";

/// The object paths served, with their interface.
const OBJECTS: &[(&str, &str)] = &[
    ("/LoginMessages", "cockpit.LoginMessages"),
    ("/config", "cockpit.Config"),
    ("/environment", "cockpit.Environment"),
    ("/machines", "cockpit.Machines"),
    ("/packages", "cockpit.Packages"),
    ("/superuser", "cockpit.Superuser"),
    ("/user", "cockpit.User"),
];

/// Login messages handed over by cockpit-session (`COCKPIT_LOGIN_MESSAGES_MEMFD`), read once.
static LOGIN_MESSAGES: Mutex<Option<Option<String>>> = Mutex::new(None);

/// A D-Bus error: name and message.
type Failure = (String, String);

fn failure(name: &str, text: impl Into<String>) -> Failure {
    (name.to_owned(), text.into())
}

/// Open a connection to a fresh server of the internal objects.
pub fn connect() -> std::io::Result<(Connection, mpsc::UnboundedReceiver<Event>)> {
    let (client, server) = tokio::net::UnixStream::pair()?;
    let (read, write) = client.into_split();
    tokio::spawn(serve(server));
    Ok(Connection::start(read, write))
}

/// Answer calls on `stream` until it closes; send the `/superuser` signals.
async fn serve(stream: tokio::net::UnixStream) {
    let (read, mut write) = stream.into_split();
    let (calls_tx, mut calls) = mpsc::unbounded_channel::<Message>();
    // Reading is not cancel-safe: it has its own task, and ends with the connection.
    let reader = tokio::spawn(read_calls(read, calls_tx));
    let mut signals = crate::superuser::subscribe();
    // Replies to `Start` and `Stop`, once the privileged bridge has acted.
    let (later_tx, mut later) = mpsc::unbounded_channel::<Message>();
    let mut serial = 0u32;
    loop {
        // Signals first: a change that a call caused goes out before that call's reply.
        let out = tokio::select! {
            biased;
            signal = next_signal(&mut signals) => match signal {
                Some(signal) => vec![superuser_signal(signal)],
                None => {
                    signals = None;
                    continue;
                }
            },
            Some(reply) = later.recv() => vec![reply],
            call = calls.recv() => match call {
                None => break,
                Some(call) => {
                    let quiet = call.flags & NO_REPLY_EXPECTED != 0;
                    if superuser_call(&call, &later_tx) {
                        continue;
                    }
                    let (reply, signals) = handle(&call);
                    if quiet {
                        continue;
                    }
                    std::iter::once(reply).chain(signals).collect()
                }
            },
        };
        for m in out {
            serial = serial.wrapping_add(1).max(1);
            let Ok(bytes) = m.encode(serial) else {
                continue;
            };
            if write.write_all(&bytes).await.is_err() {
                reader.abort();
                return;
            }
        }
    }
}

/// Read method calls from `read` until it closes or sends what is not D-Bus.
async fn read_calls(
    mut read: tokio::net::unix::OwnedReadHalf,
    calls: mpsc::UnboundedSender<Message>,
) {
    loop {
        let mut head = [0u8; 16];
        if read.read_exact(&mut head).await.is_err() {
            return;
        }
        let Ok(total) = Message::total_len(&head) else {
            return;
        };
        let mut bytes = vec![0u8; total];
        bytes[..16].copy_from_slice(&head);
        if read.read_exact(&mut bytes[16..]).await.is_err() {
            return;
        }
        let Ok(call) = Message::decode(&bytes) else {
            return;
        };
        if call.kind != Kind::MethodCall
            || call.destination.as_deref() == Some("org.freedesktop.DBus")
        {
            continue;
        }
        if calls.send(call).is_err() {
            return;
        }
    }
}

/// The next `/superuser` signal; `None` when there are no more.
async fn next_signal(
    signals: &mut Option<mpsc::UnboundedReceiver<crate::superuser::Signal>>,
) -> Option<crate::superuser::Signal> {
    match signals {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A `/superuser` signal as D-Bus sends it.
fn superuser_signal(signal: crate::superuser::Signal) -> Message {
    use crate::superuser::Signal;
    let (m, sig, body) = match signal {
        Signal::Current(current) => (
            Message::signal("/superuser", PROPERTIES, "PropertiesChanged"),
            "sa{sv}as",
            json!(["cockpit.Superuser", {"Current": {"t": "s", "v": current}}, []]),
        ),
        Signal::Prompt { prompt, error } => (
            Message::signal("/superuser", "cockpit.Superuser", "Prompt"),
            "sssbs",
            json!(["", prompt, "", false, error]),
        ),
    };
    m.clone().with_body(sig, &body).unwrap_or(m)
}

/// `Start(s)` and `Stop()` on `/superuser`: the privileged bridge answers them later, through
/// `later`. Returns whether `call` was one of them.
fn superuser_call(call: &Message, later: &mpsc::UnboundedSender<Message>) -> bool {
    use crate::superuser::{request, BusReply, BusRequest};
    if call.path.as_deref() != Some("/superuser")
        || !matches!(call.interface.as_deref(), None | Some("cockpit.Superuser"))
    {
        return false;
    }
    let reply: BusReply = {
        let (call, later) = (call.clone(), later.clone());
        Box::new(move |result| {
            let reply = match result {
                Ok(()) => Message::method_return(&call),
                Err((name, text)) => Message::error(&call, &name, &text),
            };
            if call.flags & NO_REPLY_EXPECTED == 0 {
                let _ = later.send(reply);
            }
        })
    };
    match (call.member.as_deref(), call.signature.as_str()) {
        (Some("Start"), "s") => {
            let name = call
                .args()
                .ok()
                .and_then(|a| a.first()?.as_str().map(str::to_owned));
            request(BusRequest::Start(name.unwrap_or_default(), reply));
        }
        (Some("Stop"), "") => request(BusRequest::Stop(reply)),
        _ => return false,
    }
    true
}

/// The reply to `call`, and any signals it causes (sent after the reply).
fn handle(call: &Message) -> (Message, Vec<Message>) {
    let path = call.path.as_deref().unwrap_or("");
    let member = call.member.as_deref().unwrap_or("");
    let result = match call.args() {
        Err(e) => Err(failure(
            "org.freedesktop.DBus.Error.InvalidArgs",
            e.to_string(),
        )),
        Ok(args) => dispatch(
            path,
            call.interface.as_deref(),
            member,
            &call.signature,
            &args,
        ),
    };
    match result {
        Ok((sig, values)) => {
            let reply = Message::method_return(call).with_body(&sig, &Value::Array(values));
            match reply {
                Ok(m) => (m, Vec::new()),
                Err(e) => (
                    Message::error(call, "org.freedesktop.DBus.Error.Failed", &e.to_string()),
                    Vec::new(),
                ),
            }
        }
        Err((name, text)) => (Message::error(call, &name, &text), Vec::new()),
    }
}

type Reply = Result<(String, Vec<Value>), Failure>;

fn ok(sig: &str, values: Vec<Value>) -> Reply {
    Ok((sig.to_owned(), values))
}

fn dispatch(path: &str, iface: Option<&str>, member: &str, sig: &str, args: &[Value]) -> Reply {
    let object = OBJECTS.iter().find(|(p, _)| *p == path).map(|(_, i)| *i);
    let want = |s: &str| -> Result<(), Failure> {
        if sig == s {
            Ok(())
        } else {
            Err(failure(
                "org.freedesktop.DBus.Error.InvalidArgs",
                format!(
                    "Invalid arguments '{sig}' to call {}.{member}(), expecting '{s}'.",
                    iface.unwrap_or("")
                ),
            ))
        }
    };
    let arg = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or("").to_owned();
    match (iface, member) {
        (Some(INTROSPECTABLE) | None, "Introspect") => {
            want("")?;
            return ok("s", vec![introspect_xml(path).into()]);
        }
        (Some(PEER) | None, "Ping") => {
            want("")?;
            return ok("", vec![]);
        }
        (Some(PEER) | None, "GetMachineId") => {
            want("")?;
            let id = std::fs::read_to_string("/etc/machine-id")
                .or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id"))
                .map_err(|e| failure("org.freedesktop.DBus.Error.Failed", e.to_string()))?;
            return ok("s", vec![id.trim().into()]);
        }
        _ => {}
    }
    let Some(object) = object else {
        return Err(failure(
            "org.freedesktop.DBus.Error.UnknownObject",
            format!("Unknown object '{path}'."),
        ));
    };
    match (iface, member) {
        (Some(PROPERTIES), "Get") => {
            want("ss")?;
            let props = properties(object)?;
            match (arg(0) == object).then(|| props.get(&arg(1))).flatten() {
                Some((t, v)) => ok("v", vec![json!({"t": t, "v": v})]),
                None => Err(failure(
                    "org.freedesktop.DBus.Error.UnknownProperty",
                    format!("Unknown property '{}.{}'.", arg(0), arg(1)),
                )),
            }
        }
        (Some(PROPERTIES), "GetAll") => {
            want("s")?;
            let mut all = Map::new();
            if arg(0) == object || arg(0).is_empty() {
                for (k, (t, v)) in properties(object)? {
                    all.insert(k, json!({"t": t, "v": v}));
                }
            }
            ok("a{sv}", vec![Value::Object(all)])
        }
        (Some(PROPERTIES), "Set") => {
            want("ssv")?;
            Err(failure(
                "org.freedesktop.DBus.Error.PropertyReadOnly",
                format!("Property '{}.{}' is not writable.", arg(0), arg(1)),
            ))
        }
        (Some(i), _) if i != object => Err(failure(
            "org.freedesktop.DBus.Error.UnknownInterface",
            format!("Unknown interface '{i}'."),
        )),
        _ => method(object, member, sig, args, &want),
    }
}

fn unknown_method(object: &str, member: &str) -> Failure {
    failure(
        "org.freedesktop.DBus.Error.UnknownMethod",
        format!("Unknown method '{member}' on interface '{object}'."),
    )
}

fn method(
    object: &str,
    member: &str,
    _sig: &str,
    args: &[Value],
    want: &dyn Fn(&str) -> Result<(), Failure>,
) -> Reply {
    let s = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or("").to_owned();
    let u = |i: usize| args.get(i).and_then(Value::as_u64).unwrap_or(0);
    match (object, member) {
        ("cockpit.Config", "GetString") => {
            want("ss")?;
            match config_value(&s(0), &s(1)) {
                Some(v) => ok("s", vec![v.into()]),
                None => Err(failure(
                    "cockpit.Config.KeyError",
                    format!("key {} in section {} does not exist", s(1), s(0)),
                )),
            }
        }
        ("cockpit.Config", "GetUInt") => {
            want("ssuuu")?;
            let (default, max, min) = (u(2), u(3), u(4));
            let value = config_value(&s(0), &s(1))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map_or(default, |v| v.max(min as i64).min(max as i64).max(0) as u64);
            ok("u", vec![value.into()])
        }
        ("cockpit.Config", "Reload") => {
            want("")?;
            ok("", vec![])
        }
        ("cockpit.Packages", "Reload" | "ReloadHint") => {
            // Packages are read again from disk; ferry's bridge has no cache to keep warm, so
            // ReloadHint reloads as Reload does.
            want("")?;
            crate::packages::reload();
            ok("", vec![])
        }
        ("cockpit.Machines", "Update") => {
            want("ssa{sv}")?;
            update_machines(&s(0), &s(1), args.get(2))?;
            ok("", vec![])
        }
        // With the right arguments, these are answered by `superuser_call`.
        ("cockpit.Superuser", "Start") => {
            want("s")?;
            Err(unknown_method(object, member))
        }
        ("cockpit.Superuser", "Stop") => {
            want("")?;
            Err(unknown_method(object, member))
        }
        ("cockpit.LoginMessages", "Dismiss") => {
            want("")?;
            *LOGIN_MESSAGES.lock().unwrap() = Some(None);
            ok("", vec![])
        }
        ("cockpit.Superuser", "Answer") => {
            want("s")?;
            crate::superuser::answer(s(0));
            ok("", vec![])
        }
        ("cockpit.LoginMessages", "Get") => {
            want("")?;
            ok(
                "s",
                vec![login_messages().unwrap_or_else(|| "{}".into()).into()],
            )
        }
        _ => Err(unknown_method(object, member)),
    }
}

/// Every interface served, described as dbus-json3 `meta` JSON (parsed when introspected:
/// text is smaller in the image than code that builds it).
const INTERFACES: &str = r#"{
"org.freedesktop.DBus.Properties": {"methods": {"Get": {"in": ["s", "s"], "out": ["v"]},
  "GetAll": {"in": ["s"], "out": ["a{sv}"]}, "Set": {"in": ["s", "s", "v"], "out": []}},
  "properties": {}, "signals": {"PropertiesChanged": {"in": ["s", "a{sv}", "as"]}}},
"org.freedesktop.DBus.Introspectable": {"methods": {"Introspect": {"in": [], "out": ["s"]}},
  "properties": {}, "signals": {}},
"org.freedesktop.DBus.Peer": {"methods": {"Ping": {"in": [], "out": []},
  "GetMachineId": {"in": [], "out": ["s"]}}, "properties": {}, "signals": {}},
"cockpit.User": {"methods": {}, "properties": {"Name": {"flags": "r", "type": "s"},
  "Full": {"flags": "r", "type": "s"}, "Id": {"flags": "r", "type": "i"},
  "Gid": {"flags": "r", "type": "i"}, "Home": {"flags": "r", "type": "s"},
  "Shell": {"flags": "r", "type": "s"}, "Groups": {"flags": "r", "type": "as"}}, "signals": {}},
"cockpit.Config": {"methods": {"GetString": {"in": ["s", "s"], "out": ["s"]},
  "GetUInt": {"in": ["s", "s", "u", "u", "u"], "out": ["u"]}, "Reload": {"in": [], "out": []}},
  "properties": {}, "signals": {}},
"cockpit.Machines": {"methods": {"Update": {"in": ["s", "s", "a{sv}"], "out": []}},
  "properties": {"Machines": {"flags": "r", "type": "a{sa{sv}}"}}, "signals": {}},
"cockpit.Packages": {"methods": {"Reload": {"in": [], "out": []},
  "ReloadHint": {"in": [], "out": []}},
  "properties": {"Manifests": {"flags": "r", "type": "s"}}, "signals": {}},
"cockpit.Superuser": {"methods": {"Start": {"in": ["s"], "out": []}, "Stop": {"in": [], "out": []},
  "Answer": {"in": ["s"], "out": []}},
  "properties": {"Bridges": {"flags": "r", "type": "as"}, "Current": {"flags": "r", "type": "s"},
    "Methods": {"flags": "r", "type": "a{sv}"}},
  "signals": {"Prompt": {"in": ["s", "s", "s", "b", "s"]}}},
"cockpit.LoginMessages": {"methods": {"Get": {"in": [], "out": ["s"]},
  "Dismiss": {"in": [], "out": []}}, "properties": {}, "signals": {}},
"cockpit.Environment": {"methods": {}, "properties": {"Variables": {"flags": "r", "type": "a{ss}"}},
  "signals": {}}
}"#;

fn introspect_xml(path: &str) -> String {
    let Ok(Value::Object(mut all)) = serde_json::from_slice::<Value>(INTERFACES.as_bytes()) else {
        return introspect::to_xml(&Map::new(), &[]);
    };
    if let Some((_, object)) = OBJECTS.iter().find(|(p, _)| *p == path) {
        all.retain(|name, _| name.starts_with("org.freedesktop.DBus.") || name == object);
        return introspect::to_xml(&all, &[]);
    }
    let children: Vec<String> = if path == "/" {
        OBJECTS.iter().map(|(p, _)| p[1..].to_owned()).collect()
    } else {
        Vec::new()
    };
    introspect::to_xml(&Map::new(), &children)
}

/// An object's properties: name → (type, JSON value).
fn properties(object: &str) -> Result<BTreeMap<String, (&'static str, Value)>, Failure> {
    let mut p = BTreeMap::new();
    let mut put = |k: &str, t: &'static str, v: Value| {
        p.insert(k.to_owned(), (t, v));
    };
    match object {
        "cockpit.User" => {
            let user = User::current()
                .ok_or_else(|| failure("org.freedesktop.DBus.Error.Failed", "unknown user"))?;
            put("Name", "s", user.name.into());
            put("Full", "s", user.gecos.into());
            put("Id", "i", user.uid.into());
            put("Gid", "i", user.gid.into());
            put("Home", "s", user.home.into());
            put("Shell", "s", user.shell.into());
            put("Groups", "as", user.groups.into());
        }
        "cockpit.Machines" => put("Machines", "a{sa{sv}}", machines()),
        "cockpit.Packages" => put(
            "Manifests",
            "s",
            crate::packages::current().manifests().to_string().into(),
        ),
        "cockpit.Superuser" => {
            put("Bridges", "as", json!(crate::superuser::bridges()));
            put("Current", "s", crate::superuser::current().into());
            put("Methods", "a{sv}", json!({}));
        }
        "cockpit.Environment" => {
            let mut vars = Map::new();
            for (k, v) in std::env::vars_os() {
                if let (Ok(k), Ok(v)) = (k.into_string(), v.into_string()) {
                    vars.insert(k, v.into());
                }
            }
            put("Variables", "a{ss}", Value::Object(vars));
        }
        _ => {}
    }
    Ok(p)
}

/// The user the bridge runs as.
pub(crate) struct User {
    pub(crate) name: String,
    gecos: String,
    uid: i64,
    gid: i64,
    pub(crate) home: String,
    pub(crate) shell: String,
    groups: Vec<String>,
}

impl User {
    pub(crate) fn current() -> Option<User> {
        // SAFETY: getpwuid_r writes into the buffers given; the strings it points to live in
        // `buf`, which outlives their use here.
        unsafe {
            let uid = libc::getuid();
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut buf = vec![0 as libc::c_char; 16384];
            let mut result = std::ptr::null_mut();
            libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result);
            if result.is_null() {
                return None;
            }
            let text = |p: *const libc::c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let name = text(pw.pw_name);
            Some(User {
                groups: groups(&name, pw.pw_gid),
                gecos: text(pw.pw_gecos),
                uid: i64::from(pw.pw_uid),
                gid: i64::from(pw.pw_gid),
                home: text(pw.pw_dir),
                shell: text(pw.pw_shell),
                name,
            })
        }
    }
}

/// The names of the user's groups: the primary group first, no duplicates.
fn groups(user: &str, gid: libc::gid_t) -> Vec<String> {
    let mut ids = vec![gid];
    if let Ok(cname) = std::ffi::CString::new(user) {
        let mut list = vec![0 as libc::gid_t; 256];
        let mut n = list.len() as libc::c_int;
        // SAFETY: `list` has room for `n` entries; getgrouplist reports how many it needs.
        let r = unsafe { libc::getgrouplist(cname.as_ptr(), gid, list.as_mut_ptr(), &mut n) };
        if r >= 0 {
            list.truncate(n.max(0) as usize);
            ids.extend(list);
        }
    }
    let mut names: Vec<String> = Vec::new();
    for id in ids {
        if let Some(name) = group_name(id) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

fn group_name(gid: libc::gid_t) -> Option<String> {
    // SAFETY: as for getpwuid_r above.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 65536];
        let mut result = std::ptr::null_mut();
        libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut result);
        if result.is_null() || gr.gr_name.is_null() {
            return None;
        }
        Some(CStr::from_ptr(gr.gr_name).to_string_lossy().into_owned())
    }
}

fn login_messages() -> Option<String> {
    let mut cell = LOGIN_MESSAGES.lock().unwrap();
    cell.get_or_insert_with(|| {
        let fd: i32 = std::env::var("COCKPIT_LOGIN_MESSAGES_MEMFD")
            .ok()?
            .parse()
            .ok()?;
        let mut text = String::new();
        // Read through /proc so the descriptor itself stays untouched.
        let mut f = std::fs::File::open(format!("/proc/self/fd/{fd}")).ok()?;
        std::io::Read::read_to_string(&mut f, &mut text).ok()?;
        Some(text)
    })
    .clone()
}

/// The first configuration directory (`XDG_CONFIG_DIRS`, default `/etc`) joined with `cockpit`.
fn etc_cockpit() -> String {
    let dirs = std::env::var("XDG_CONFIG_DIRS").unwrap_or_default();
    let first = dirs
        .split(':')
        .next()
        .filter(|d| !d.is_empty())
        .unwrap_or("/etc");
    format!("{first}/cockpit")
}

/// The value of `key` in `[section]` of `cockpit.conf`, from the first configuration directory
/// (`XDG_CONFIG_DIRS`, default `/etc`) that has one. Sections are case-sensitive and keys are
/// not, as in Python's configparser, which Cockpit uses.
pub(crate) fn config_value(section: &str, key: &str) -> Option<String> {
    let dirs = std::env::var("XDG_CONFIG_DIRS").unwrap_or_default();
    let text = dirs
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(dirs.is_empty().then_some("/etc"))
        .find_map(|d| std::fs::read_to_string(format!("{d}/cockpit/cockpit.conf")).ok())?;
    ini_value(&text, section, key)
}

fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut here = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            here = name == section;
            continue;
        }
        if !here {
            continue;
        }
        let (k, v) = match line.find(['=', ':']) {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, ""),
        };
        if k.trim().eq_ignore_ascii_case(key) {
            found = Some(v.trim().to_owned());
        }
    }
    found
}

/// A JSON value from a machines file as a variant: `{"t": SIG, "v": VALUE}`.
fn variant_of(v: &Value) -> Option<Value> {
    Some(match v {
        Value::String(_) => json!({"t": "s", "v": v}),
        Value::Bool(_) => json!({"t": "b", "v": v}),
        Value::Number(n) if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) => {
            json!({"t": "i", "v": v})
        }
        Value::Number(n) if n.is_i64() => json!({"t": "x", "v": v}),
        Value::Number(n) if n.is_u64() => json!({"t": "t", "v": v}),
        Value::Number(_) => json!({"t": "d", "v": v}),
        Value::Object(m) => json!({"t": "a{sv}", "v": map_values(m, variant_of)}),
        Value::Array(a) => {
            json!({"t": "av", "v": a.iter().filter_map(variant_of).collect::<Vec<_>>()})
        }
        Value::Null => return None,
    })
}

/// The `Machines` property: every `machines.d/*.json` merged, in name order.
fn machines() -> Value {
    let dir = format!("{}/machines.d", etc_cockpit());
    let mut files: Vec<String> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if let Ok(name) = e.file_name().into_string() {
                if name.ends_with(".json") {
                    files.push(format!("{dir}/{name}"));
                }
            }
        }
    }
    files.sort_unstable();
    let mut out = Map::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(Value::Object(hosts)) = serde_json::from_slice::<Value>(text.as_bytes()) else {
            continue;
        };
        for (host, attrs) in hosts {
            let Value::Object(attrs) = attrs else {
                continue;
            };
            out.insert(host, Value::Object(map_values(&attrs, variant_of)));
        }
    }
    Value::Object(out)
}

/// `m` with `f` applied to each value, leaving out those it maps to `None`. (A loop rather
/// than `collect`: every `collect` into a map is its own copy of a sort in the image.)
fn map_values(m: &Map<String, Value>, f: fn(&Value) -> Option<Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in m {
        if let Some(v) = f(v) {
            out.insert(k.clone(), v);
        }
    }
    out
}

fn unwrapped(v: &Value) -> Option<Value> {
    Some(unwrap_variant(v))
}

/// A variant's JSON without its type, recursively (what a machines file stores).
fn unwrap_variant(v: &Value) -> Value {
    match (v.get("t").and_then(Value::as_str), v.get("v")) {
        (Some(t), Some(inner)) => match (t, inner) {
            ("a{sv}", Value::Object(m)) => Value::Object(map_values(m, unwrapped)),
            ("av", Value::Array(a)) => Value::Array(a.iter().map(unwrap_variant).collect()),
            _ => inner.clone(),
        },
        _ => v.clone(),
    }
}

fn update_machines(filename: &str, host: &str, attrs: Option<&Value>) -> Result<(), Failure> {
    let err = |t: String| failure("cockpit.Machines.Error", t);
    if filename.is_empty() || filename.contains('/') || filename.starts_with('.') {
        return Err(err(format!("Invalid file name {filename:?}")));
    }
    let dir = format!("{}/machines.d", etc_cockpit());
    let path = format!("{dir}/{filename}");
    let mut contents = match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_slice::<Value>(text.as_bytes()) {
            Ok(Value::Object(m)) => m,
            _ => return Err(err(format!("File {filename} is in invalid format"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(err(format!("{path}: {e}"))),
    };
    let attrs = attrs
        .and_then(Value::as_object)
        .map(|m| map_values(m, unwrapped))
        .unwrap_or_default();
    contents.insert(host.to_owned(), Value::Object(attrs));
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("{dir}: {e}")))?;
    let text = serde_json::to_vec(&Value::Object(contents)).map_err(|e| err(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| err(format!("{path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_keys_are_case_insensitive_and_sections_are_not() {
        let c = "# x\n[Session]\nIdleTimeout = 15\nBanner: /etc/issue\n[WebService]\nOrigins=a b\n";
        assert_eq!(ini_value(c, "Session", "idletimeout").unwrap(), "15");
        assert_eq!(ini_value(c, "Session", "Banner").unwrap(), "/etc/issue");
        assert_eq!(ini_value(c, "WebService", "Origins").unwrap(), "a b");
        assert!(ini_value(c, "session", "IdleTimeout").is_none());
        assert!(ini_value(c, "Session", "Origins").is_none());
    }

    #[test]
    fn the_user_is_who_runs_the_bridge() {
        let p = properties("cockpit.User").unwrap();
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(p["Id"].1, json!(uid));
        let groups = p["Groups"].1.as_array().unwrap().clone();
        assert!(!groups.is_empty());
        let mut dedup = groups.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), groups.len());
    }
}
