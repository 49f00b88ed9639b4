//! The `dbus-json3` channel (doc/protocol.md, "Payload: dbus-json3"): JSON messages on the
//! channel become D-Bus calls, match rules and property watches on one bus connection, and what
//! the bus sends back becomes `reply`, `error`, `signal`, `notify`, `meta` and `owner` messages.
//!
//! Every channel has its own connection. One reader task hands the connection's replies and
//! signals over in arrival order, and this task handles them one at a time, waiting for any
//! call it must make on the way (a `Get` for an invalidated property, an `Introspect` for new
//! interfaces). So everything a call causes (signals, property changes, interfaces added)
//! goes out before that call's reply, and a watch's `meta`, `notify` and `reply` come before
//! anything sent after it is answered, as Cockpit's bridges do and cockpit.js relies on.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ferry_protocol::problem;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::connection::{self, BusError, Connection, Event, DEFAULT_TIMEOUT};
use super::internal;
use super::introspect;
use super::marshal::is_object_path;
use super::message::{Kind, Message, ALLOW_INTERACTIVE_AUTHORIZATION, NO_REPLY_EXPECTED};
use super::signature;
use crate::channel::{Channel, ChannelError, ChannelResult, Input};

const DBUS: &str = "org.freedesktop.DBus";
const DBUS_PATH: &str = "/org/freedesktop/DBus";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";
const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";

/// A D-Bus error as dbus-json3 sends it: name and message.
type Failure = (String, String);

/// A boxed future. The helpers that are awaited in many places return one, so that their
/// state machines are not copied into every caller's (which matters for the image size).
type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn invalid_args(text: impl Into<String>) -> Failure {
    (INVALID_ARGS.to_owned(), text.into())
}

/// An `add-match` (or a watch's own rule): missing fields match anything.
#[derive(Debug, Clone, PartialEq, Default)]
struct Match {
    path: Option<String>,
    path_namespace: Option<String>,
    interface: Option<String>,
    member: Option<String>,
    arg0: Option<String>,
    sender: Option<String>,
}

fn under(path: &str, namespace: &str) -> bool {
    namespace == "/"
        || path == namespace
        || path
            .strip_prefix(namespace)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Match {
    fn from_json(v: &Value, default_sender: Option<&str>) -> Option<Match> {
        let o = v.as_object()?;
        let field = |k: &str| -> Option<Option<String>> {
            match o.get(k) {
                None | Some(Value::Null) => Some(None),
                Some(Value::String(s)) => Some(Some(s.clone())),
                Some(_) => None,
            }
        };
        let sender = match field("sender")? {
            Some(s) => Some(s),
            None => field("name")?.or_else(|| default_sender.map(str::to_owned)),
        };
        Some(Match {
            path: field("path")?,
            path_namespace: field("path_namespace")?,
            interface: field("interface")?,
            member: field("member")?,
            arg0: field("arg0")?,
            sender,
        })
    }

    /// The rule as the bus takes it.
    fn rule(&self) -> String {
        let mut r = String::from("type='signal'");
        let mut add = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                r.push_str(&format!(",{k}='{}'", v.replace('\'', "'\\''")));
            }
        };
        add("sender", &self.sender);
        add("path", &self.path);
        // A namespace of "/" matches everything anyway (and dbus-broker refuses it).
        add(
            "path_namespace",
            &self.path_namespace.clone().filter(|p| p != "/"),
        );
        add("interface", &self.interface);
        add("member", &self.member);
        add("arg0", &self.arg0);
        r
    }

    /// Whether the signal `m` (already decoded to `args`) matches; `owner` is the current owner
    /// of the channel's name, which a rule for that name compares with.
    fn matches(
        &self,
        m: &Message,
        arg0: Option<&str>,
        name: Option<&str>,
        owner: Option<&str>,
    ) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        let path = m.path.as_deref().unwrap_or("");
        if let Some(sender) = &self.sender {
            let have = m.sender.as_deref();
            let ok = if sender.starts_with(':') || sender == DBUS || name != Some(sender) {
                // A rule for another well-known name: the bus only sends what matches.
                !sender.starts_with(':') && sender != DBUS || have == Some(sender.as_str())
            } else {
                owner.is_some() && have == owner
            };
            if !ok {
                return false;
            }
        }
        eq(&self.path, Some(path))
            && self
                .path_namespace
                .as_deref()
                .is_none_or(|ns| under(path, ns))
            && eq(&self.interface, m.interface.as_deref())
            && eq(&self.member, m.member.as_deref())
            && eq(&self.arg0, arg0)
    }
}

/// A `watch`: a path, or all paths under one, and maybe one interface.
#[derive(Debug, Clone, PartialEq)]
struct Watch {
    path: String,
    namespace: bool,
    interface: Option<String>,
}

impl Watch {
    fn covers(&self, path: &str, interface: &str) -> bool {
        let path_ok = if self.namespace {
            under(path, &self.path)
        } else {
            path == self.path
        };
        path_ok && self.interface.as_deref().is_none_or(|i| i == interface)
    }
}

/// A call from the peer waiting for its reply.
struct PendingCall {
    id: Value,
    flags: bool,
    deadline: Option<Instant>,
}

struct DBusChannel {
    conn: Connection,
    events: mpsc::UnboundedReceiver<Event>,
    internal: bool,
    /// The channel's default destination (`name`).
    name: Option<String>,
    /// The current owner of `name`, as last told to the peer.
    owner: Option<String>,
    /// Interface descriptions known to this channel (introspected or given by `meta`).
    cache: Map<String, Value>,
    /// Interfaces already described to the peer with `meta`.
    described: HashSet<String>,
    /// Paths introspected already (successfully or not).
    introspected: HashSet<(Option<String>, String)>,
    matches: Vec<Match>,
    watches: Vec<Watch>,
    calls: HashMap<u32, PendingCall>,
}

/// Run a `dbus-json3` channel.
pub async fn run(ch: &mut Channel) -> ChannelResult {
    let protocol = |m: &str| ChannelError::new(problem::PROTOCOL_ERROR).message(m);
    let bus = match ch.open.get("bus") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(protocol("invalid \"bus\" option")),
    };
    let address = match ch.open.get("address") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(protocol("invalid \"address\" option")),
    };
    let name = match ch.open.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(protocol("invalid \"name\" option")),
    };
    let internal = bus.as_deref() == Some("internal");
    let address = match (bus.as_deref(), address) {
        (None | Some("none"), Some(a)) => Some(a),
        (Some(b), Some(_)) if b != "none" => {
            return Err(protocol(
                "only one of \"bus\" and \"address\" can be specified",
            ))
        }
        (Some("none"), None) => return Err(protocol("bus \"none\" needs an \"address\"")),
        (None | Some("system"), None) => Some(connection::system_bus_address()),
        (Some("session"), None) => Some(
            connection::session_bus_address()
                .ok_or_else(|| ChannelError::new(problem::NOT_FOUND).message("no session bus"))?,
        ),
        (Some("internal"), None) => None,
        (Some(other), _) => return Err(protocol(&format!("invalid bus \"{other}\""))),
    };
    let (conn, events) = match address {
        None => internal::connect()
            .map_err(|e| ChannelError::new(problem::INTERNAL_ERROR).message(e.to_string()))?,
        Some(address) => {
            // A connection to a message bus says Hello; one to a bare peer (an `address`
            // without `name`) does not, as in Cockpit's bridge.
            let bus_client = bus.as_deref() != Some("none") || name.is_some();
            Connection::open(&address, bus_client)
                .await
                .map_err(|e| ChannelError::new(problem::NOT_FOUND).message(e.to_string()))?
        }
    };
    let mut d = DBusChannel {
        conn,
        events,
        internal,
        name: if internal { None } else { name },
        owner: None,
        cache: Map::new(),
        described: HashSet::new(),
        introspected: HashSet::new(),
        matches: Vec::new(),
        watches: Vec::new(),
        calls: HashMap::new(),
    };
    if d.name.is_some() {
        match d.track_owner().await {
            Some(owner) => {
                if !ch.send_json_before_ready(&json!({"owner": owner})).await {
                    return Ok(Map::new());
                }
                let mut extra = Map::new();
                extra.insert("unique-name".into(), owner.into());
                ch.ready(extra).await;
            }
            None => {
                ch.send_json_before_ready(&json!({"owner": null})).await;
                return Err(ChannelError::new(problem::NOT_FOUND));
            }
        }
    } else {
        ch.ready(Map::new()).await;
    }
    d.run(ch).await
}

impl DBusChannel {
    fn send<'a>(&self, ch: &'a mut Channel, v: Value) -> Boxed<'a, bool> {
        Box::pin(async move { ch.send_json(&v).await })
    }

    /// Follow the owner of `name`: the match for its changes, then its owner now, starting
    /// the service when it has none. The owner, or `None` when the name cannot be had.
    async fn track_owner(&mut self) -> Option<String> {
        let name = self.name.clone()?;
        let rule = Match {
            sender: Some(DBUS.into()),
            path: Some(DBUS_PATH.into()),
            interface: Some(DBUS.into()),
            member: Some("NameOwnerChanged".into()),
            arg0: Some(name.clone()),
            ..Match::default()
        };
        self.conn.add_match(&rule.rule()).await.ok()?;
        let get = |name: &str| {
            Message::method_call(Some(DBUS), DBUS_PATH, DBUS, "GetNameOwner")
                .with_body("s", &json!([name]))
        };
        let owner = self.bus_call(get(&name).ok()?).await;
        let owner = match owner {
            Ok(args) => args.first().and_then(Value::as_str).map(str::to_owned),
            Err(_) => {
                let start = Message::method_call(Some(DBUS), DBUS_PATH, DBUS, "StartServiceByName")
                    .with_body("su", &json!([name, 0]))
                    .ok()?;
                self.bus_call(start).await.ok()?;
                let args = self.bus_call(get(&name).ok()?).await.ok()?;
                args.first().and_then(Value::as_str).map(str::to_owned)
            }
        };
        self.owner.clone_from(&owner);
        owner
    }

    /// A call on the bridge's own behalf: the reply's arguments, or the error.
    fn bus_call(&mut self, m: Message) -> Boxed<'_, Result<Vec<Value>, Failure>> {
        Box::pin(self.bus_call_inner(m))
    }

    async fn bus_call_inner(&mut self, m: Message) -> Result<Vec<Value>, Failure> {
        match self.conn.call(m, DEFAULT_TIMEOUT).await {
            Ok(reply) if reply.kind == Kind::Error => Err((
                reply.error_name.clone().unwrap_or_default(),
                reply.error_text(),
            )),
            Ok(reply) => reply.args().map_err(|e| {
                (
                    "org.freedesktop.DBus.Error.InconsistentMessage".into(),
                    e.to_string(),
                )
            }),
            Err(e) => Err(bus_failure(&e)),
        }
    }

    fn destination(&self) -> Option<&str> {
        self.name.as_deref()
    }

    async fn run(&mut self, ch: &mut Channel) -> ChannelResult {
        loop {
            let deadline = self.calls.values().filter_map(|c| c.deadline).min();
            tokio::select! {
                biased;
                event = self.events.recv() => match event {
                    Some(Event::Closed(reason)) => {
                        return Err(ChannelError::new(problem::TERMINATED).message(reason));
                    }
                    Some(event) => {
                        if !self.event(ch, event).await {
                            return Ok(Map::new());
                        }
                    }
                    None => return Err(ChannelError::new(problem::TERMINATED)),
                },
                input = ch.recv() => match input {
                    Some(Input::Data(data)) => {
                        let message: Value = match serde_json::from_slice(&data) {
                            Ok(Value::Object(m)) => Value::Object(m),
                            _ => {
                                return Err(ChannelError::new(problem::PROTOCOL_ERROR)
                                    .message("dbus-json3 messages must be JSON objects"))
                            }
                        };
                        if !self.request(ch, message).await {
                            return Ok(Map::new());
                        }
                    }
                    Some(Input::Done) | None => return Ok(Map::new()),
                    Some(_) => {}
                },
                _ = sleep_until(deadline) => self.expire(ch).await,
            }
        }
    }

    /// Answer the calls whose timeout passed.
    async fn expire(&mut self, ch: &mut Channel) {
        let now = Instant::now();
        let expired: Vec<u32> = self
            .calls
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(s, _)| *s)
            .collect();
        for serial in expired {
            self.conn.forget(serial);
            if let Some(call) = self.calls.remove(&serial) {
                let e = (
                    "org.freedesktop.DBus.Error.Timeout".to_owned(),
                    "Method call timed out".to_owned(),
                );
                self.send(ch, error_json(&e, call.id)).await;
            }
        }
    }

    /// One message from the peer. `false` when the channel must stop.
    async fn request(&mut self, ch: &mut Channel, message: Value) -> bool {
        if let Some(call) = message.get("call") {
            let id = message.get("id").cloned();
            if let Err(e) = self.call(call, &message, id.clone()).await {
                if let Some(id) = id {
                    return self.send(ch, error_json(&e, id)).await;
                }
            }
            true
        } else if let Some(rule) = message.get("add-match") {
            let default_sender = self.destination().map(str::to_owned);
            if let Some(m) = Match::from_json(rule, default_sender.as_deref()) {
                if !self.internal {
                    let _ = self.conn.add_match(&m.rule()).await;
                }
                self.matches.push(m);
            }
            true
        } else if let Some(rule) = message.get("remove-match") {
            let default_sender = self.destination().map(str::to_owned);
            if let Some(m) = Match::from_json(rule, default_sender.as_deref()) {
                if let Some(i) = self.matches.iter().position(|x| *x == m) {
                    self.matches.remove(i);
                }
            }
            true
        } else if let Some(w) = message.get("watch") {
            self.watch(ch, w, message.get("id").cloned()).await
        } else if let Some(w) = message.get("unwatch") {
            if let Some(w) = parse_watch(w) {
                if let Some(i) = self.watches.iter().position(|x| *x == w) {
                    self.watches.remove(i);
                }
            }
            true
        } else {
            if let Some(Value::Object(meta)) = message.get("meta") {
                for (k, v) in meta {
                    if v.is_object() {
                        self.cache.insert(k.clone(), v.clone());
                    }
                }
            }
            true
        }
    }

    /// Send a `call`: its reply comes back through the event queue.
    async fn call(
        &mut self,
        call: &Value,
        message: &Value,
        id: Option<Value>,
    ) -> Result<(), Failure> {
        let parts = call.as_array().filter(|a| a.len() == 4);
        let Some([Value::String(path), Value::String(iface), Value::String(member), args]) =
            parts.map(Vec::as_slice)
        else {
            return Err(invalid_args(
                "\"call\" must be [path, interface, member, [args...]]",
            ));
        };
        if !is_object_path(path) {
            return Err(invalid_args(format!("invalid object path {path:?}")));
        }
        if member.is_empty() {
            return Err(invalid_args("empty method name"));
        }
        let Value::Array(arg_list) = args else {
            return Err(invalid_args("the arguments of a call must be an array"));
        };
        let destination = match message.get("name") {
            Some(Value::String(n)) if !self.internal => Some(n.clone()),
            _ => self.destination().map(str::to_owned),
        };
        let sig = match message.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Null) | None if arg_list.is_empty() => String::new(),
            Some(Value::Null) | None => {
                self.method_signature(destination.as_deref(), path, iface, member)
                    .await?
            }
            Some(_) => return Err(invalid_args("invalid \"type\"")),
        };
        let types = signature::parse(&sig).map_err(|e| invalid_args(e.to_string()))?;
        let mut m = Message::method_call(destination.as_deref(), path, iface, member)
            .with_values(&types, arg_list)
            .map_err(|e| invalid_args(e.0))?;
        let flags = message.get("flags");
        let interactive = match flags {
            Some(Value::String(f)) => f.contains('i'),
            _ => true,
        };
        if interactive {
            m.flags |= ALLOW_INTERACTIVE_AUTHORIZATION;
        }
        let timeout = message
            .get("timeout")
            .and_then(Value::as_f64)
            .filter(|t| *t >= 0.0)
            .map(|t| Instant::now() + Duration::from_micros((t.min(1e12) * 1000.0) as u64));
        let Some(id) = id else {
            m.flags |= NO_REPLY_EXPECTED;
            self.conn.send(&m).await.map_err(|e| bus_failure(&e))?;
            return Ok(());
        };
        let serial = self.conn.send_call(&m).await.map_err(|e| bus_failure(&e))?;
        self.calls.insert(
            serial,
            PendingCall {
                id,
                flags: flags.is_some_and(|f| !f.is_null()),
                deadline: timeout,
            },
        );
        Ok(())
    }

    /// The input signature of a method, from the cache or by introspecting `path`.
    async fn method_signature(
        &mut self,
        destination: Option<&str>,
        path: &str,
        iface: &str,
        member: &str,
    ) -> Result<String, Failure> {
        if !self.cache.contains_key(iface) {
            let _ = self.introspect(destination, path).await;
        }
        let ins = self
            .cache
            .get(iface)
            .and_then(|i| i.get("methods"))
            .and_then(|m| m.get(member))
            .and_then(|m| m.get("in"))
            .and_then(Value::as_array);
        match ins {
            Some(ins) => Ok(ins.iter().filter_map(Value::as_str).collect()),
            None => Err((
                "org.freedesktop.DBus.Error.UnknownMethod".into(),
                format!("Introspection data for method {iface} {member} not available"),
            )),
        }
    }

    /// Introspect `path` and remember every interface it has; returns them.
    fn introspect<'a>(
        &'a mut self,
        destination: Option<&'a str>,
        path: &'a str,
    ) -> Boxed<'a, Result<Map<String, Value>, Failure>> {
        Box::pin(self.introspect_inner(destination, path))
    }

    async fn introspect_inner(
        &mut self,
        destination: Option<&str>,
        path: &str,
    ) -> Result<Map<String, Value>, Failure> {
        let m = Message::method_call(
            destination,
            path,
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
        );
        let args = self.bus_call(m).await?;
        self.introspected
            .insert((destination.map(str::to_owned), path.to_owned()));
        let xml = args.first().and_then(Value::as_str).unwrap_or("");
        let interfaces = introspect::parse(xml);
        for (k, v) in &interfaces {
            self.cache.insert(k.clone(), v.clone());
        }
        Ok(interfaces)
    }

    /// The description of `iface`, if this channel has not sent it yet (introspecting `path`
    /// when it is unknown).
    fn describe_if_new<'a>(
        &'a mut self,
        iface: &'a str,
        path: &'a str,
        meta: &'a mut Map<String, Value>,
    ) -> Boxed<'a, ()> {
        Box::pin(self.describe_if_new_inner(iface, path, meta))
    }

    async fn describe_if_new_inner(
        &mut self,
        iface: &str,
        path: &str,
        meta: &mut Map<String, Value>,
    ) {
        if self.described.contains(iface) {
            return;
        }
        if !self.cache.contains_key(iface) {
            let dest = self.destination().map(str::to_owned);
            let _ = self.introspect(dest.as_deref(), path).await;
        }
        if let Some(info) = self.cache.get(iface) {
            meta.insert(iface.to_owned(), info.clone());
            self.described.insert(iface.to_owned());
        }
    }

    /// Set up a watch: `meta`, `notify`, then the empty `reply`.
    async fn watch(&mut self, ch: &mut Channel, w: &Value, id: Option<Value>) -> bool {
        let Some(id) = id else {
            return true;
        };
        let Some(watch) = parse_watch(w) else {
            let e = invalid_args("a watch needs a \"path\" or \"path_namespace\"");
            return self.send(ch, error_json(&e, id)).await;
        };
        match self.setup_watch(&watch).await {
            Ok((meta, notify)) => {
                self.watches.push(watch);
                // Both always, even empty, as Cockpit's Python bridge sends them.
                if !self.send(ch, json!({ "meta": meta })).await
                    || !self.send(ch, json!({ "notify": notify })).await
                {
                    return false;
                }
                self.send(ch, json!({"reply": [], "id": id})).await
            }
            Err(e) => self.send(ch, error_json(&e, id)).await,
        }
    }

    async fn setup_watch(
        &mut self,
        watch: &Watch,
    ) -> Result<(Map<String, Value>, Map<String, Value>), Failure> {
        let sender = self.destination().map(str::to_owned);
        let changed = Match {
            sender: sender.clone(),
            interface: Some(PROPERTIES.into()),
            member: Some("PropertiesChanged".into()),
            path: (!watch.namespace).then(|| watch.path.clone()),
            path_namespace: watch.namespace.then(|| watch.path.clone()),
            ..Match::default()
        };
        if !self.internal {
            let _ = self.conn.add_match(&changed.rule()).await;
            if watch.namespace {
                let om = Match {
                    sender: sender.clone(),
                    path: Some(watch.path.clone()),
                    interface: Some(OBJECT_MANAGER.into()),
                    ..Match::default()
                };
                let _ = self.conn.add_match(&om.rule()).await;
            }
        }
        let mut meta = Map::new();
        let mut notify = Map::new();
        let dest = sender.clone();
        // The watched object itself, as Cockpit's Python bridge does for a `path` and for the
        // root of a `path_namespace`: every interface it has (or the one asked for) is
        // described, and the properties of all but the standard ones are sent.
        let here = match self.introspect(dest.as_deref(), &watch.path).await {
            Ok(here) => here,
            // A namespace whose root is no object may still have an ObjectManager's objects.
            Err(_) if watch.namespace => Map::new(),
            Err(e) => return Err(e),
        };
        for (iface, info) in &here {
            if watch.interface.as_deref().is_some_and(|i| i != iface) {
                continue;
            }
            meta.insert(iface.clone(), info.clone());
            self.described.insert(iface.clone());
        }
        for iface in here.keys() {
            if iface.starts_with("org.freedesktop.DBus.")
                || watch.interface.as_deref().is_some_and(|i| i != iface)
            {
                continue;
            }
            let get_all = Message::method_call(dest.as_deref(), &watch.path, PROPERTIES, "GetAll")
                .with_body("s", &json!([iface]))
                .map_err(|e| invalid_args(e.0))?;
            if let Ok(args) = self.bus_call(get_all).await {
                if let Some(props) = args.first() {
                    notify_update(&mut notify, &watch.path, iface, props);
                }
            }
        }
        if watch.namespace {
            // Then the objects of the ObjectManager at the namespace's root (none without one).
            let get = Message::method_call(
                dest.as_deref(),
                &watch.path,
                OBJECT_MANAGER,
                "GetManagedObjects",
            );
            if let Ok(args) = self.bus_call(get).await {
                if let Some(Value::Object(objects)) = args.into_iter().next() {
                    for (path, ifaces) in objects {
                        let Value::Object(ifaces) = ifaces else {
                            continue;
                        };
                        for (iface, props) in ifaces {
                            if watch.interface.as_deref().is_some_and(|i| i != iface) {
                                continue;
                            }
                            self.describe_if_new(&iface, &path, &mut meta).await;
                            notify_update(&mut notify, &path, &iface, &props);
                        }
                    }
                }
            }
        }
        Ok((meta, notify))
    }

    /// One event from the bus. `false` when the channel must stop.
    async fn event(&mut self, ch: &mut Channel, event: Event) -> bool {
        match event {
            Event::Reply(m) => {
                let Some(call) = m.reply_serial.and_then(|s| self.calls.remove(&s)) else {
                    return true;
                };
                let v = if m.kind == Kind::Error {
                    let e = (m.error_name.clone().unwrap_or_default(), m.error_text());
                    error_json(&e, call.id)
                } else {
                    match m.args() {
                        Ok(args) => {
                            // `flags` is `"<"` (little-endian) when the call had `flags`,
                            // else `null`, as Cockpit's Python bridge writes it.
                            let flags = if call.flags {
                                Value::from("<")
                            } else {
                                Value::Null
                            };
                            json!({"reply": [args], "id": call.id, "type": m.signature,
                                   "flags": flags})
                        }
                        Err(e) => error_json(
                            &(
                                "org.freedesktop.DBus.Error.InconsistentMessage".into(),
                                e.to_string(),
                            ),
                            call.id,
                        ),
                    }
                };
                self.send(ch, v).await
            }
            Event::Signal(m) => self.signal(ch, m).await,
            Event::Call(m) => {
                if m.flags & NO_REPLY_EXPECTED == 0 {
                    let e = Message::error(
                        &m,
                        "org.freedesktop.DBus.Error.UnknownMethod",
                        "this connection exports no objects",
                    );
                    let _ = self.conn.send(&e).await;
                }
                true
            }
            Event::Closed(_) => false,
        }
    }

    async fn signal(&mut self, ch: &mut Channel, m: Message) -> bool {
        let Ok(args) = m.args() else {
            return true;
        };
        let path = m.path.clone().unwrap_or_default();
        let iface = m.interface.clone().unwrap_or_default();
        let member = m.member.clone().unwrap_or_default();
        let arg0 = args.first().and_then(Value::as_str);
        let from_bus = m.sender.as_deref() == Some(DBUS);
        // The owner of our name changed.
        if from_bus && iface == DBUS && member == "NameOwnerChanged" {
            if let (Some(name), Some(arg0)) = (&self.name, arg0) {
                if name == arg0 {
                    let new = args
                        .get(2)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned);
                    if new != self.owner {
                        self.owner.clone_from(&new);
                        if !self.send(ch, json!({ "owner": new })).await {
                            return false;
                        }
                    }
                }
            }
        }
        let name = self.name.clone();
        let owner = self.owner.clone();
        let hit = self
            .matches
            .iter()
            .any(|r| r.matches(&m, arg0, name.as_deref(), owner.as_deref()));
        if hit
            && !self
                .send(ch, json!({"signal": [path, iface, member, args]}))
                .await
        {
            return false;
        }
        // Signals for watches come from the name's owner only.
        if self.name.is_some() && (m.sender.is_none() || m.sender != self.owner) {
            return true;
        }
        if iface == PROPERTIES && member == "PropertiesChanged" {
            let Some(changed_iface) = arg0.map(str::to_owned) else {
                return true;
            };
            if !self.watches.iter().any(|w| w.covers(&path, &changed_iface)) {
                return true;
            }
            let mut props = args.get(1).cloned().unwrap_or_else(|| json!({}));
            let invalidated: Vec<String> = args
                .get(2)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let dest = self.destination().map(str::to_owned);
            for prop in invalidated {
                let Ok(get) = Message::method_call(dest.as_deref(), &path, PROPERTIES, "Get")
                    .with_body("ss", &json!([changed_iface, prop]))
                else {
                    continue;
                };
                if let Ok(values) = self.bus_call(get).await {
                    if let (Some(v), Some(map)) = (values.into_iter().next(), props.as_object_mut())
                    {
                        map.insert(prop, v);
                    }
                }
            }
            let mut notify = Map::new();
            notify_update(&mut notify, &path, &changed_iface, &props);
            return self.send(ch, json!({ "notify": notify })).await;
        }
        if iface == OBJECT_MANAGER {
            let watching = |w: &Watch| w.namespace && w.path == path;
            let Some(object) = arg0.map(str::to_owned) else {
                return true;
            };
            let relevant: Vec<Watch> = self
                .watches
                .iter()
                .filter(|w| watching(w))
                .cloned()
                .collect();
            if relevant.is_empty() {
                return true;
            }
            let wants = |i: &str| {
                relevant
                    .iter()
                    .any(|w| w.interface.as_deref().is_none_or(|x| x == i))
            };
            if member == "InterfacesAdded" {
                let mut meta = Map::new();
                let mut notify = Map::new();
                if let Some(Value::Object(ifaces)) = args.get(1) {
                    for (i, props) in ifaces {
                        if !wants(i) {
                            continue;
                        }
                        self.describe_if_new(i, &object, &mut meta).await;
                        notify_update(&mut notify, &object, i, props);
                    }
                }
                // Both always, even empty, as Cockpit's Python bridge sends them.
                return self.send(ch, json!({ "meta": meta })).await
                    && self.send(ch, json!({ "notify": notify })).await;
            } else if member == "InterfacesRemoved" {
                let mut gone = Map::new();
                if let Some(Value::Array(ifaces)) = args.get(1) {
                    for i in ifaces.iter().filter_map(Value::as_str) {
                        if wants(i) {
                            gone.insert(i.to_owned(), Value::Null);
                        }
                    }
                }
                if !gone.is_empty() {
                    return self.send(ch, json!({"notify": {object: gone}})).await;
                }
            }
        }
        true
    }
}

fn parse_watch(w: &Value) -> Option<Watch> {
    let o = w.as_object()?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let interface = s("interface");
    if let Some(p) = s("path").filter(|p| is_object_path(p)) {
        return Some(Watch {
            path: p,
            namespace: false,
            interface,
        });
    }
    let p = s("path_namespace").filter(|p| is_object_path(p))?;
    Some(Watch {
        path: p,
        namespace: true,
        interface,
    })
}

/// Add an interface's properties (`a{sv}` as JSON) to a `notify`, unwrapping each variant.
fn notify_update(notify: &mut Map<String, Value>, path: &str, iface: &str, props: &Value) {
    let mut values = Map::new();
    if let Some(p) = props.as_object() {
        for (k, v) in p {
            values.insert(k.clone(), v.get("v").cloned().unwrap_or(Value::Null));
        }
    }
    let entry = notify
        .entry(path.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(e) = entry.as_object_mut() {
        e.insert(iface.to_owned(), Value::Object(values));
    }
}

fn error_json((name, text): &Failure, id: Value) -> Value {
    json!({"error": [name, [text]], "id": id})
}

fn bus_failure(e: &BusError) -> Failure {
    let name = match e {
        BusError::Timeout => "org.freedesktop.DBus.Error.Timeout",
        BusError::Disconnected => "org.freedesktop.DBus.Error.Disconnected",
        BusError::Connect(_) => "org.freedesktop.DBus.Error.Failed",
    };
    (name.to_owned(), e.to_string())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_rules_quote_their_values() {
        let m = Match {
            path: Some("/a".into()),
            member: Some("it's".into()),
            path_namespace: Some("/".into()),
            ..Match::default()
        };
        assert_eq!(m.rule(), "type='signal',path='/a',member='it'\\''s'");
    }

    #[test]
    fn namespaces_cover_their_subtrees_only() {
        assert!(under("/a/b", "/a"));
        assert!(under("/a", "/a"));
        assert!(!under("/ab", "/a"));
        assert!(under("/x", "/"));
    }
}
