//! What a bridge answered in one scenario, per channel; how it is normalised and compared.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::scenario::DataMode;

/// One thing a bridge sent, in the order it was sent on its channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A control message about this channel (or without a channel, for channel `""`).
    Control(Value),
    /// Data: consecutive data frames are concatenated, since chunking is not part of the contract.
    Data(Vec<u8>),
    /// One data frame parsed as JSON (channels in `json` or `shape` mode).
    Json(Value),
    /// How much data (channels in `size` mode): whole units of `unit` bytes.
    Amount { units: u64, unit: u64 },
    /// Output that is not a frame: the bytes from where the frame decoder gave up.
    Malformed(String),
    /// Something the runner observed: an `expect` that timed out.
    Note(String),
}

/// Everything a bridge answered during one scenario.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcript {
    /// Per channel id; `""` holds the control messages that name no channel.
    pub channels: BTreeMap<String, Vec<Event>>,
    /// How the bridge ended: `exit status N`, `killed by signal N`, or that it did not.
    pub exit: String,
}

impl Transcript {
    pub fn push_control(&mut self, channel: &str, value: Value) {
        self.channels
            .entry(channel.to_owned())
            .or_default()
            .push(Event::Control(value));
    }

    pub fn push_data(&mut self, channel: &str, data: &[u8], mode: Option<DataMode>) {
        let events = self.channels.entry(channel.to_owned()).or_default();
        let first_data = !events
            .iter()
            .any(|e| matches!(e, Event::Data(_) | Event::Json(_)));
        if mode == Some(DataMode::Http) && first_data {
            events.push(match serde_json::from_slice::<Value>(data) {
                Ok(head) => Event::Json(http_head(&head)),
                Err(_) => Event::Data(data.to_vec()),
            });
            return;
        }
        if mode.is_some() && mode != Some(DataMode::Http) {
            match serde_json::from_slice(data) {
                Ok(v) => events.push(Event::Json(v)),
                Err(_) => events.push(Event::Data(data.to_vec())),
            }
            return;
        }
        if let Some(Event::Data(prev)) = events.last_mut() {
            prev.extend_from_slice(data);
        } else {
            events.push(Event::Data(data.to_vec()));
        }
    }

    pub fn note(&mut self, text: String) {
        self.channels
            .entry(String::new())
            .or_default()
            .push(Event::Note(text));
    }

    pub fn malformed(&mut self, text: String) {
        self.channels
            .entry(String::new())
            .or_default()
            .push(Event::Malformed(text));
    }

    /// The notes (timeouts) the runner recorded.
    pub fn notes(&self) -> Vec<&str> {
        self.channels
            .values()
            .flatten()
            .filter_map(|e| match e {
                Event::Note(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// What is compared of an HTTP response head: the status and the `Content-Encoding`. The
/// reason phrase is free text, and the other headers are each bridge's own (checksums,
/// caching, security headers); the ones that matter get scenarios and tests of their own.
fn http_head(head: &Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("status".into(), head["status"].clone());
    if let Some(encoding) = head["headers"].get("Content-Encoding") {
        out.insert("Content-Encoding".into(), encoding.clone());
    }
    Value::Object(out)
}

/// The `sequence` of a channel `ping` that equals the bytes of data sent before it.
pub const DATA_SO_FAR: &str = "<bytes of data so far>";

/// Placeholder for a value that legitimately differs between runs or implementations.
fn placeholder(what: &str) -> Value {
    Value::String(format!("<{what}>"))
}

/// Replace what legitimately differs, in both transcripts alike. Each rule says why.
pub fn normalise(t: &mut Transcript, modes: &BTreeMap<String, DataMode>) {
    for (channel, events) in t.channels.iter_mut() {
        for event in events.iter_mut() {
            match event {
                Event::Control(Value::Object(m)) => {
                    // Process ids are assigned by the kernel.
                    if m.get("pid").is_some_and(Value::is_number) {
                        m.insert("pid".into(), placeholder("pid"));
                    }
                    // A file's tag encodes its inode and mtime: new for every temporary file.
                    // The tag "-" (file missing) is meaningful and stays.
                    if m.get("tag").is_some_and(|t| t.is_string() && t != "-") {
                        m.insert("tag".into(), placeholder("tag"));
                    }
                    // `message` next to a `problem` explains it to a person; its wording is not
                    // part of the protocol. (Without a problem it can carry data, such as the
                    // stderr of a process with `err: "message"`, and is compared.)
                    if m.contains_key("problem") && m.get("message").is_some_and(Value::is_string) {
                        m.insert("message".into(), placeholder("message"));
                    }
                    if channel.is_empty() && m.get("command") == Some(&"init".into()) {
                        // Implementation details of the bridge: its own version of the
                        // packages it serves, what it can do, how it reads os-release.
                        for key in ["os-release", "capabilities", "checksum", "packages"] {
                            if m.contains_key(key) {
                                m.insert(key.into(), placeholder(key));
                            }
                        }
                    }
                    // A D-Bus connection's unique name depends on how many came before it.
                    if m.get("unique-name").is_some_and(Value::is_string) {
                        m.insert("unique-name".into(), placeholder("unique-name"));
                    }
                    // Times of day: the moment the sample or meta message was made.
                    if m.get("timestamp").is_some_and(Value::is_number) {
                        m.insert("timestamp".into(), placeholder("timestamp"));
                    }
                }
                Event::Json(v) => {
                    normalise_internal_bus(v);
                    normalise_json(v);
                    if modes.get(channel) == Some(&DataMode::Shape) {
                        *v = shape(v);
                    }
                }
                _ => {}
            }
        }
        collapse_pings(channel, events);
        match modes.get(channel) {
            Some(DataMode::Json { sorted: true }) => sort_json_runs(events),
            Some(DataMode::Size(unit)) => {
                for e in events.iter_mut() {
                    if let Event::Data(d) = e {
                        *e = Event::Amount {
                            units: d.len() as u64 / unit,
                            unit: *unit,
                        };
                    }
                }
            }
            Some(DataMode::Shape) => events.dedup(),
            Some(DataMode::Http) => {
                // A body that is one JSON document (manifests.json) is compared parsed.
                for e in events.iter_mut() {
                    if let Event::Data(d) = e {
                        if let Ok(mut v) = serde_json::from_slice::<Value>(d) {
                            normalise_json(&mut v);
                            *e = Event::Json(v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Flow-control pings whose sequence counts the data sent so far (marked by the runner) sit
/// wherever the sender's chunks ended: remove them, join the data they split, and keep one
/// ping at the end of the channel to say that there were some.
fn collapse_pings(channel: &str, events: &mut Vec<Event>) {
    let is_counting_ping = |e: &Event| match e {
        Event::Control(v) => {
            v.get("command") == Some(&Value::from("ping"))
                && v.get("sequence") == Some(&Value::from(DATA_SO_FAR))
        }
        _ => false,
    };
    let before = events.len();
    events.retain(|e| !is_counting_ping(e));
    if events.len() == before {
        return;
    }
    join_data(events);
    events.push(Event::Control(serde_json::json!({
        "command": "ping",
        "channel": channel,
        "sequence": DATA_SO_FAR,
    })));
}

/// Concatenate neighbouring data events.
fn join_data(events: &mut Vec<Event>) {
    let mut joined: Vec<Event> = Vec::with_capacity(events.len());
    for e in events.drain(..) {
        match (joined.last_mut(), e) {
            (Some(Event::Data(prev)), Event::Data(d)) => prev.extend_from_slice(&d),
            (_, e) => joined.push(e),
        }
    }
    *events = joined;
}

/// What the dbus-json3 internal bus reports in a `notify` about the bridge's own process and
/// text formatting rather than about the machine:
/// - `/environment`'s `Variables`: `PYTHONPATH` is dropped. The runner starts Cockpit 337's
///   bridge through `env PYTHONPATH=... python3`, so only that bridge has it, as a detail of how
///   the test starts it (every other variable comes from the runner, or from the bridge itself,
///   and is compared).
/// - `/packages`' `Manifests`: JSON text, compared parsed. cockpit.js parses it; how the JSON is
///   spaced and in which order its members come is no protocol (`packages-beyond-337` in
///   DIFFERENCES.md for the same text in `manifests.js`).
fn normalise_internal_bus(v: &mut Value) {
    let Some(Value::Object(paths)) = v.get_mut("notify") else {
        return;
    };
    if let Some(Value::Object(vars)) = paths
        .get_mut("/environment")
        .and_then(|o| o.get_mut("cockpit.Environment"))
        .and_then(|i| i.get_mut("Variables"))
    {
        vars.remove("PYTHONPATH");
    }
    if let Some(m) = paths
        .get_mut("/packages")
        .and_then(|o| o.get_mut("cockpit.Packages"))
        .and_then(|i| i.get_mut("Manifests"))
    {
        if let Some(parsed) = m.as_str().and_then(|t| serde_json::from_str(t).ok()) {
            *m = parsed;
        }
    }
}

/// Fields in JSON data (fslist1, fswatch1, fsinfo, metrics1) that hold times, inode numbers or
/// tags of the temporary files, which are new on every run.
fn normalise_json(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                match k.as_str() {
                    "modified" | "mtime" | "atime" | "ctime" | "btime" | "birth" | "timestamp"
                        if val.is_number() =>
                    {
                        *val = placeholder("time");
                    }
                    "inode" | "ino" | "dev" if val.is_number() => *val = placeholder(k),
                    "tag" if val.is_string() && val != "-" => *val = placeholder("tag"),
                    _ => normalise_json(val),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise_json),
        // A D-Bus unique name (`:1.42`), e.g. an `owner`: depends on the bus's history.
        Value::String(s) if is_unique_name(s) => *v = placeholder("unique-name"),
        _ => {}
    }
}

fn is_unique_name(s: &str) -> bool {
    s.strip_prefix(':').is_some_and(|rest| {
        rest.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && rest.contains('.')
    })
}

/// Numbers become a placeholder: only the structure is compared. `null` counts as a number:
/// in metrics1 samples it stands for "unchanged since the last sample".
fn shape(v: &Value) -> Value {
    match v {
        Value::Number(_) | Value::Null => placeholder("number"),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        other => other.clone(),
    }
}

fn sort_json_runs(events: &mut [Event]) {
    let mut start = 0;
    while start < events.len() {
        if !matches!(events[start], Event::Json(_)) {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < events.len() && matches!(events[end], Event::Json(_)) {
            end += 1;
        }
        events[start..end].sort_by_key(render_event);
        start = end;
    }
}

/// One rule from `DIFFERENCES.md`: erases one known difference from both transcripts.
/// CHANNEL `-` is the control channel, `*` every channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `drop CHANNEL COMMAND`: control messages COMMAND about CHANNEL.
    Drop { channel: String, command: String },
    /// `drop-field CHANNEL COMMAND FIELD`: one field of those messages.
    DropField {
        channel: String,
        command: String,
        field: String,
    },
    /// `ignore-data CHANNEL`: the data sent on CHANNEL.
    IgnoreData(String),
    /// `ignore-channel CHANNEL`: everything about CHANNEL.
    IgnoreChannel(String),
    /// `ignore-order CHANNEL`: the order of what was sent on CHANNEL.
    IgnoreOrder(String),
    /// `ignore-exit`: how the bridge ended.
    IgnoreExit,
    /// `drop-key CHANNEL KEY`: the member KEY, at any depth, of the JSON documents CHANNEL
    /// sent (JSON data and `http` bodies).
    DropKey { channel: String, key: String },
    /// `drop-json CHANNEL KEY`: the top-level field KEY of JSON documents sent on CHANNEL.
    DropJson { channel: String, key: String },
    /// `json-replace CHANNEL KEY FROM TO`: a top-level field KEY of a JSON document that is
    /// FROM (JSON without blanks) becomes TO.
    JsonReplace {
        channel: String,
        key: String,
        from: Value,
        to: Value,
    },
    /// `empty-notify CHANNEL`: dbus-json3 `notify` documents that carry no property at all.
    EmptyNotify(String),
    /// `empty-meta CHANNEL`: dbus-json3 `meta` documents that describe no interface.
    EmptyMeta(String),
    /// `drop-null CHANNEL KEY`: the top-level field KEY of JSON documents sent on CHANNEL, when
    /// it is `null`.
    DropNull { channel: String, key: String },
    /// `meta-readwrite CHANNEL`: in dbus-json3 `meta` documents, a property's flags `rw`
    /// (readable and writable) become `r`.
    MetaReadwrite(String),
    /// `drop-meta CHANNEL INTERFACE`: the description of INTERFACE in dbus-json3 `meta`
    /// documents.
    DropMeta { channel: String, interface: String },
    /// `drop-notify-path CHANNEL PATH`: the object PATH in dbus-json3 `notify` documents.
    DropNotifyPath { channel: String, path: String },
    /// `drop-property CHANNEL INTERFACE PROPERTY`: the property PROPERTY of INTERFACE, on any
    /// object, in dbus-json3 `notify` documents.
    DropProperty {
        channel: String,
        interface: String,
        property: String,
    },
    /// `error-message CHANNEL`: the message of a dbus-json3 `error` (`[name, [message]]`)
    /// the bridge wrote itself (human text; the error's name is still compared).
    ErrorMessage(String),
    /// `owner-after-ready CHANNEL`: a dbus-json3 `{"owner": ...}` right before the channel's
    /// `ready` is put right after it.
    OwnerAfterReady(String),
}

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let ch = |w: &str| {
            if w == "-" {
                String::new()
            } else {
                w.to_owned()
            }
        };
        Ok(match words.as_slice() {
            ["drop", c, cmd] => Rule::Drop {
                channel: ch(c),
                command: (*cmd).into(),
            },
            ["drop-field", c, cmd, f] => Rule::DropField {
                channel: ch(c),
                command: (*cmd).into(),
                field: (*f).into(),
            },
            ["ignore-data", c] => Rule::IgnoreData(ch(c)),
            ["ignore-channel", c] => Rule::IgnoreChannel(ch(c)),
            ["ignore-order", c] => Rule::IgnoreOrder(ch(c)),
            ["ignore-exit"] => Rule::IgnoreExit,
            ["drop-key", c, k] => Rule::DropKey {
                channel: ch(c),
                key: (*k).into(),
            },
            ["drop-json", c, k] => Rule::DropJson {
                channel: ch(c),
                key: (*k).into(),
            },
            ["json-replace", c, k, from, to] => Rule::JsonReplace {
                channel: ch(c),
                key: (*k).into(),
                from: serde_json::from_str(from).map_err(|e| format!("{from}: {e}"))?,
                to: serde_json::from_str(to).map_err(|e| format!("{to}: {e}"))?,
            },
            ["owner-after-ready", c] => Rule::OwnerAfterReady(ch(c)),
            ["error-message", c] => Rule::ErrorMessage(ch(c)),
            ["empty-notify", c] => Rule::EmptyNotify(ch(c)),
            ["empty-meta", c] => Rule::EmptyMeta(ch(c)),
            ["drop-null", c, k] => Rule::DropNull {
                channel: ch(c),
                key: (*k).into(),
            },
            ["meta-readwrite", c] => Rule::MetaReadwrite(ch(c)),
            ["drop-meta", c, i] => Rule::DropMeta {
                channel: ch(c),
                interface: (*i).into(),
            },
            ["drop-notify-path", c, p] => Rule::DropNotifyPath {
                channel: ch(c),
                path: (*p).into(),
            },
            ["drop-property", c, i, p] => Rule::DropProperty {
                channel: ch(c),
                interface: (*i).into(),
                property: (*p).into(),
            },
            _ => return Err(format!("unknown rule {text:?}")),
        })
    }

    pub fn apply(&self, t: &mut Transcript) {
        let channel = match self {
            Rule::Drop { channel, .. }
            | Rule::DropField { channel, .. }
            | Rule::IgnoreData(channel)
            | Rule::IgnoreChannel(channel)
            | Rule::IgnoreOrder(channel)
            | Rule::DropKey { channel, .. }
            | Rule::DropJson { channel, .. }
            | Rule::JsonReplace { channel, .. }
            | Rule::OwnerAfterReady(channel)
            | Rule::ErrorMessage(channel)
            | Rule::EmptyNotify(channel)
            | Rule::EmptyMeta(channel)
            | Rule::DropNull { channel, .. }
            | Rule::MetaReadwrite(channel)
            | Rule::DropMeta { channel, .. }
            | Rule::DropNotifyPath { channel, .. }
            | Rule::DropProperty { channel, .. } => Some(channel.as_str()),
            Rule::IgnoreExit => None,
        };
        match channel {
            // `*` as the channel: the rule applies to every channel.
            Some("*") => {
                let all: Vec<String> = t.channels.keys().cloned().collect();
                for c in all {
                    self.apply_to(t, &c);
                }
            }
            Some(c) => self.apply_to(t, c),
            None => t.exit = "(ignored)".into(),
        }
        // A channel that lost all its events is as good as absent; data that a removed
        // message split is one piece again.
        t.channels.retain(|_, events| !events.is_empty());
        for events in t.channels.values_mut() {
            join_data(events);
        }
    }

    fn apply_to(&self, t: &mut Transcript, channel: &str) {
        let is_command = |e: &Event, command: &str| match e {
            Event::Control(v) => v.get("command").and_then(Value::as_str) == Some(command),
            _ => false,
        };
        let Some(events) = t.channels.get_mut(channel) else {
            return;
        };
        match self {
            Rule::Drop { command, .. } => events.retain(|e| !is_command(e, command)),
            Rule::DropField { command, field, .. } => {
                for e in events.iter_mut() {
                    if is_command(e, command) {
                        if let Event::Control(Value::Object(m)) = e {
                            m.remove(field);
                        }
                    }
                }
            }
            Rule::IgnoreData(_) => events
                .retain(|e| !matches!(e, Event::Data(_) | Event::Json(_) | Event::Amount { .. })),
            Rule::IgnoreChannel(_) => events.clear(),
            Rule::IgnoreOrder(_) => events.sort_by_key(render_event),
            Rule::IgnoreExit => {}
            Rule::DropKey { key, .. } => {
                for e in events.iter_mut() {
                    if let Event::Json(v) = e {
                        drop_key(v, key);
                    }
                }
            }
            Rule::DropJson { key, .. } => {
                for e in events.iter_mut() {
                    if let Event::Json(Value::Object(m)) = e {
                        m.remove(key);
                    }
                }
            }
            Rule::JsonReplace { key, from, to, .. } => {
                for e in events.iter_mut() {
                    if let Event::Json(Value::Object(m)) = e {
                        if let Some(v) = m.get_mut(key).filter(|v| *v == from) {
                            *v = to.clone();
                        }
                    }
                }
            }
            Rule::EmptyNotify(_) => events.retain(|e| {
                let Event::Json(Value::Object(m)) = e else {
                    return true;
                };
                let Some(Value::Object(paths)) = m.get("notify") else {
                    return true;
                };
                !paths.values().all(|ifaces| {
                    ifaces.as_object().is_some_and(|i| {
                        i.values()
                            .all(|p| p.as_object().is_some_and(|p| p.is_empty()))
                    })
                })
            }),
            Rule::EmptyMeta(_) => events.retain(|e| {
                !matches!(e, Event::Json(Value::Object(m))
                    if m.len() == 1 && m.get("meta").is_some_and(|v| v == &serde_json::json!({})))
            }),
            Rule::DropNull { key, .. } => {
                for e in events.iter_mut() {
                    if let Event::Json(Value::Object(m)) = e {
                        if m.get(key).is_some_and(Value::is_null) {
                            m.remove(key);
                        }
                    }
                }
            }
            Rule::MetaReadwrite(_) => {
                for e in events.iter_mut() {
                    let Event::Json(Value::Object(m)) = e else {
                        continue;
                    };
                    let Some(Value::Object(ifaces)) = m.get_mut("meta") else {
                        continue;
                    };
                    for iface in ifaces.values_mut() {
                        let Some(Value::Object(props)) = iface.get_mut("properties") else {
                            continue;
                        };
                        for p in props.values_mut() {
                            if let Some(f) = p.get_mut("flags").filter(|f| *f == "rw") {
                                *f = "r".into();
                            }
                        }
                    }
                }
            }
            Rule::DropMeta { interface, .. } => {
                for e in events.iter_mut() {
                    if let Event::Json(Value::Object(m)) = e {
                        if let Some(Value::Object(ifaces)) = m.get_mut("meta") {
                            ifaces.remove(interface);
                        }
                    }
                }
            }
            Rule::DropNotifyPath { path, .. } => {
                for e in events.iter_mut() {
                    if let Event::Json(Value::Object(m)) = e {
                        if let Some(Value::Object(paths)) = m.get_mut("notify") {
                            paths.remove(path);
                        }
                    }
                }
            }
            Rule::DropProperty {
                interface,
                property,
                ..
            } => {
                for e in events.iter_mut() {
                    if let Event::Json(Value::Object(m)) = e {
                        if let Some(Value::Object(paths)) = m.get_mut("notify") {
                            for object in paths.values_mut() {
                                if let Some(Value::Object(props)) = object.get_mut(interface) {
                                    props.remove(property);
                                }
                            }
                        }
                    }
                }
            }
            Rule::ErrorMessage(_) => {
                for e in events.iter_mut() {
                    if let Event::Json(Value::Object(m)) = e {
                        if let Some(Value::Array(text)) =
                            m.get_mut("error").and_then(|e| e.get_mut(1))
                        {
                            text.iter_mut().for_each(|t| *t = placeholder("message"));
                        }
                    }
                }
            }
            Rule::OwnerAfterReady(_) => {
                for i in 1..events.len() {
                    let owner = matches!(&events[i - 1], Event::Json(Value::Object(m))
                        if m.len() == 1 && m.contains_key("owner"));
                    if owner && is_command(&events[i], "ready") {
                        events.swap(i - 1, i);
                        break;
                    }
                }
            }
        }
    }
}

/// Remove the member `key` from every object in `v`.
fn drop_key(v: &mut Value, key: &str) {
    match v {
        Value::Object(m) => {
            m.remove(key);
            m.values_mut().for_each(|v| drop_key(v, key));
        }
        Value::Array(a) => a.iter_mut().for_each(|v| drop_key(v, key)),
        _ => {}
    }
}

/// One line per event, for reports and for order-insensitive comparisons.
pub fn render_event(e: &Event) -> String {
    match e {
        Event::Control(v) => format!("control {v}"),
        Event::Json(v) => format!("json    {v}"),
        Event::Data(d) => format!("data    {}", render_bytes(d)),
        Event::Amount { units, unit } => {
            format!("data    {units} x {unit} bytes (rounded down)")
        }
        Event::Malformed(m) => format!("MALFORMED OUTPUT {m}"),
        Event::Note(n) => format!("RUNNER: {n}"),
    }
}

/// Bytes as an escaped string; long data shows its start, end, length and a checksum.
pub fn render_bytes(d: &[u8]) -> String {
    const HEAD: usize = 64;
    const TAIL: usize = 16;
    if d.len() <= HEAD + TAIL {
        return format!("{:?} ({} bytes)", escape(d), d.len());
    }
    let sum = d.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!(
        "{:?}...{:?} ({} bytes, fnv {sum:016x})",
        escape(&d[..HEAD]),
        escape(&d[d.len() - TAIL..]),
        d.len()
    )
}

fn escape(d: &[u8]) -> String {
    d.utf8_chunks().fold(String::new(), |mut s, chunk| {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
        s
    })
}

/// The differences between two transcripts, as a report; empty when they agree.
pub fn compare(ferry: &Transcript, reference: &Transcript) -> String {
    let mut report = String::new();
    let names: std::collections::BTreeSet<&String> = ferry
        .channels
        .keys()
        .chain(reference.channels.keys())
        .collect();
    for name in names {
        let empty = Vec::new();
        let a = ferry.channels.get(name).unwrap_or(&empty);
        let b = reference.channels.get(name).unwrap_or(&empty);
        if a == b {
            continue;
        }
        let label = if name.is_empty() {
            "control channel (messages without a channel)".to_owned()
        } else {
            format!("channel {name:?}")
        };
        let _ = writeln!(report, "--- {label}");
        let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        for e in &a[..common] {
            let _ = writeln!(report, "    same       {}", render_event(e));
        }
        for e in &a[common..] {
            let _ = writeln!(report, "    ferry      {}", render_event(e));
        }
        for e in &b[common..] {
            let _ = writeln!(report, "    reference  {}", render_event(e));
        }
    }
    if ferry.exit != reference.exit {
        let _ = writeln!(
            report,
            "--- end of session\n    ferry      {}\n    reference  {}",
            ferry.exit, reference.exit
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn transcript(events: Vec<(&str, Event)>) -> Transcript {
        let mut t = Transcript {
            exit: "exit status 0".into(),
            ..Default::default()
        };
        for (c, e) in events {
            t.channels.entry(c.into()).or_default().push(e);
        }
        t
    }

    #[test]
    fn normalising_hides_volatile_values_only() {
        let mut a = transcript(vec![
            (
                "a",
                Event::Control(json!({"command":"ready","channel":"a","pid":12})),
            ),
            (
                "a",
                Event::Control(json!({"command":"close","channel":"a","tag":"1:2-3"})),
            ),
        ]);
        let mut b = transcript(vec![
            (
                "a",
                Event::Control(json!({"command":"ready","channel":"a","pid":99})),
            ),
            (
                "a",
                Event::Control(json!({"command":"close","channel":"a","tag":"4:5-6"})),
            ),
        ]);
        normalise(&mut a, &BTreeMap::new());
        normalise(&mut b, &BTreeMap::new());
        assert_eq!(compare(&a, &b), "");

        let mut c = transcript(vec![
            (
                "a",
                Event::Control(json!({"command":"ready","channel":"a","pid":99})),
            ),
            (
                "a",
                Event::Control(json!({"command":"close","channel":"a","tag":"-"})),
            ),
        ]);
        normalise(&mut c, &BTreeMap::new());
        let report = compare(&a, &c);
        assert!(report.contains("channel \"a\""), "{report}");
        assert!(report.contains(r#""tag":"-""#), "{report}");
    }

    #[test]
    fn data_is_concatenated_and_rules_erase_one_difference() {
        let mut a = Transcript::default();
        a.push_data("a", b"he", None);
        a.push_data("a", b"llo", None);
        a.push_control("a", json!({"command":"close","channel":"a"}));
        let mut b = Transcript::default();
        b.push_control("a", json!({"command":"ready","channel":"a"}));
        b.push_data("a", b"hello", None);
        b.push_control("a", json!({"command":"close","channel":"a"}));
        assert_ne!(compare(&a, &b), "");
        let rule = Rule::parse("drop a ready").unwrap();
        rule.apply(&mut a);
        rule.apply(&mut b);
        assert_eq!(compare(&a, &b), "");
        // The same rule does not hide a different difference.
        b.push_data("a", b"!", None);
        assert_ne!(compare(&a, &b), "");
        assert!(Rule::parse("frob a").is_err());
    }

    /// Each dbus-json3 rule erases exactly its difference and leaves others visible.
    #[test]
    fn dbus_rules_erase_their_difference_only() {
        let json = |v: Value| ("d", Event::Json(v));
        let erased = |rule: &str, ferry: Value, reference: Value| {
            let mut a = transcript(vec![json(ferry)]);
            let mut b = transcript(vec![json(reference)]);
            let rule = Rule::parse(rule).unwrap();
            rule.apply(&mut a);
            rule.apply(&mut b);
            compare(&a, &b).is_empty()
        };
        let reply = |flags: Value| json!({"reply": [[]], "id": "1", "flags": flags});
        assert!(erased(
            "drop-null d flags",
            reply(Value::Null),
            json!({"reply": [[]], "id": "1"})
        ));
        assert!(!erased(
            "drop-null d flags",
            reply("<".into()),
            json!({"reply": [[]], "id": "1"})
        ));
        let meta = |flags: &str| json!({"meta": {"I": {"properties": {"P": {"flags": flags}}}}});
        assert!(erased("meta-readwrite d", meta("rw"), meta("r")));
        assert!(!erased("meta-readwrite d", meta("w"), meta("r")));
        let rule = Rule::parse("empty-meta d").unwrap();
        let mut a = transcript(vec![
            json(json!({"meta": {}})),
            json(json!({"owner": null})),
        ]);
        let mut b = transcript(vec![json(json!({"owner": null}))]);
        rule.apply(&mut a);
        assert_eq!(compare(&a, &b), "");
        b = transcript(vec![
            json(json!({"meta": {"I": {}}})),
            json(json!({"owner": null})),
        ]);
        rule.apply(&mut b);
        assert_ne!(compare(&a, &b), "");
        let two = json!({"meta": {"A": {}, "B": {}}});
        assert!(erased(
            "drop-meta d B",
            two.clone(),
            json!({"meta": {"A": {}}})
        ));
        assert!(!erased("drop-meta d B", two, json!({"meta": {"B": {}}})));
        let notify = json!({"notify": {"/a": {"I": {"P": 1}}, "/b": {"I": {"P": 2}}}});
        assert!(erased(
            "drop-notify-path d /a",
            notify.clone(),
            json!({"notify": {"/b": {"I": {"P": 2}}}})
        ));
        assert!(erased(
            "drop-property d I P",
            notify.clone(),
            json!({"notify": {"/a": {"I": {}}, "/b": {"I": {}}}})
        ));
        assert!(!erased(
            "drop-property d I P",
            notify,
            json!({"notify": {"/a": {"I": {}}}})
        ));
    }

    #[test]
    fn internal_bus_values_of_the_process_are_normalised_only() {
        let env = |vars: Value| {
            let mut t = transcript(vec![(
                "i",
                Event::Json(json!({"notify": {"/environment":
                    {"cockpit.Environment": {"Variables": vars}}}})),
            )]);
            normalise(&mut t, &BTreeMap::new());
            t
        };
        let ferry = env(json!({"HOME": "/root"}));
        assert_eq!(
            compare(&ferry, &env(json!({"HOME": "/root", "PYTHONPATH": "/x"}))),
            ""
        );
        assert_ne!(
            compare(&ferry, &env(json!({"HOME": "/root", "USER": "root"}))),
            ""
        );
        let manifests = |text: &str| {
            let mut t = transcript(vec![(
                "i",
                Event::Json(json!({"notify": {"/packages":
                    {"cockpit.Packages": {"Manifests": text}}}})),
            )]);
            normalise(&mut t, &BTreeMap::new());
            t
        };
        let compact = manifests(r#"{"a":{"b":1},"c":2}"#);
        assert_eq!(
            compare(&compact, &manifests(r#"{"c": 2, "a": {"b": 1}}"#)),
            ""
        );
        assert_ne!(
            compare(&compact, &manifests(r#"{"c": 2, "a": {"b": 3}}"#)),
            ""
        );
    }

    #[test]
    fn shapes_collapse_repeated_samples() {
        let modes = BTreeMap::from([("m".to_owned(), DataMode::Shape)]);
        let mut a = Transcript::default();
        for v in [1, 2, 3] {
            a.push_data(
                "m",
                json!([[v, [v, v]]]).to_string().as_bytes(),
                Some(DataMode::Shape),
            );
        }
        normalise(&mut a, &modes);
        assert_eq!(a.channels["m"].len(), 1);
    }
}
