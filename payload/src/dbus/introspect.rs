//! Introspection data: the XML of `org.freedesktop.DBus.Introspectable.Introspect`, read into
//! the JSON that dbus-json3's `meta` carries, and written from it.
//!
//! The JSON shape is Cockpit's (doc/protocol.md, "meta"): per interface
//! `{"methods": {NAME: {"in": [SIG...], "out": [SIG...]}}, "properties": {NAME: {"flags": F,
//! "type": SIG}}, "signals": {NAME: {"in": [SIG...]}}}`, with `F` one of `r`, `w`, `rw` (as
//! cockpit-bridge 287 writes them: a page may only write properties whose flags contain `w`).

use serde_json::{json, Map, Value};

/// One tag of the XML: its name, attributes, and whether it opens, closes or is empty.
struct Tag {
    name: String,
    attrs: Vec<(String, String)>,
    closing: bool,
    empty: bool,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The tags of `xml`, skipping text, comments, processing instructions and DOCTYPE.
fn tags(xml: &str) -> Vec<Tag> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        if let Some(after) = rest.strip_prefix("!--") {
            rest = after.find("-->").map_or("", |e| &after[e + 3..]);
            continue;
        }
        let Some(end) = find_tag_end(rest) else {
            break;
        };
        let inner = &rest[..end];
        rest = &rest[end + 1..];
        if inner.starts_with('?') || inner.starts_with('!') {
            continue;
        }
        let closing = inner.starts_with('/');
        let inner = inner.trim_start_matches('/');
        let empty = inner.ends_with('/');
        let inner = inner.trim_end_matches('/');
        let name_end = inner
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(inner.len());
        let name = inner[..name_end].to_owned();
        let mut attrs = Vec::new();
        let mut a = &inner[name_end..];
        loop {
            a = a.trim_start();
            let Some(eq) = a.find('=') else { break };
            let key = a[..eq].trim().to_owned();
            let v = a[eq + 1..].trim_start();
            let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                break;
            };
            let Some(close) = v[1..].find(q) else { break };
            attrs.push((key, unescape(&v[1..1 + close])));
            a = &v[close + 2..];
        }
        out.push(Tag {
            name,
            attrs,
            closing,
            empty,
        });
    }
    out
}

/// The end of a tag, skipping `>` inside quoted attribute values.
fn find_tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The interfaces an `Introspect` reply describes, as dbus-json3 `meta` JSON by name.
/// Only the top `<node>`'s interfaces count; child nodes are ignored.
pub fn parse(xml: &str) -> Map<String, Value> {
    let mut interfaces = Map::new();
    let mut depth = 0usize;
    let mut iface: Option<Interface> = None;
    // The member being read: (kind, name, in, out).
    let mut member: Option<Member> = None;
    for tag in tags(xml) {
        if tag.name == "node" {
            if tag.closing {
                depth = depth.saturating_sub(1);
            } else if !tag.empty {
                depth += 1;
            }
            continue;
        }
        if depth != 1 {
            continue;
        }
        match (tag.name.as_str(), tag.closing) {
            ("interface", false) => {
                if let Some(name) = tag.attr("name") {
                    iface = Some((name.to_owned(), Map::new(), Map::new(), Map::new()));
                }
                if tag.empty {
                    finish_interface(&mut iface, &mut interfaces);
                }
            }
            ("interface", true) => finish_interface(&mut iface, &mut interfaces),
            ("method" | "signal", false) => {
                if let Some(name) = tag.attr("name") {
                    member = Some((tag.name.clone(), name.to_owned(), vec![], vec![]));
                }
                if tag.empty {
                    finish_member(&mut member, &mut iface);
                }
            }
            ("method" | "signal", true) => finish_member(&mut member, &mut iface),
            ("arg", false) => {
                if let (Some(m), Some(t)) = (member.as_mut(), tag.attr("type")) {
                    let out = m.0 == "method" && tag.attr("direction") == Some("out");
                    if out {
                        m.3.push(t.into());
                    } else {
                        m.2.push(t.into());
                    }
                }
            }
            ("property", false) => {
                if let (Some(i), Some(name), Some(t)) =
                    (iface.as_mut(), tag.attr("name"), tag.attr("type"))
                {
                    let flags = match tag.attr("access") {
                        Some("readwrite") => "rw",
                        Some("write") => "w",
                        _ => "r",
                    };
                    i.2.insert(name.to_owned(), json!({"flags": flags, "type": t}));
                }
            }
            _ => {}
        }
    }
    interfaces
}

type Interface = (
    String,
    Map<String, Value>,
    Map<String, Value>,
    Map<String, Value>,
);

/// A member being read: kind (`method` or `signal`), name, in and out types.
type Member = (String, String, Vec<Value>, Vec<Value>);

fn finish_interface(iface: &mut Option<Interface>, out: &mut Map<String, Value>) {
    if let Some((name, methods, properties, signals)) = iface.take() {
        out.insert(
            name,
            json!({"methods": methods, "properties": properties, "signals": signals}),
        );
    }
}

fn finish_member(member: &mut Option<Member>, iface: &mut Option<Interface>) {
    if let (Some((kind, name, ins, outs)), Some(i)) = (member.take(), iface.as_mut()) {
        if kind == "method" {
            i.1.insert(name, json!({"in": ins, "out": outs}));
        } else {
            i.3.insert(name, json!({"in": ins}));
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The introspection XML of a node with these interfaces (`meta` JSON by name) and children.
pub fn to_xml(interfaces: &Map<String, Value>, children: &[String]) -> String {
    let mut x = String::from(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n",
    );
    let names = |v: &Value, key: &str| -> Vec<(String, Value)> {
        v.get(key)
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let types = |v: &Value, key: &str| -> Vec<String> {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (name, iface) in interfaces {
        x.push_str(&format!(" <interface name=\"{}\">\n", escape(name)));
        for (m, info) in names(iface, "methods") {
            x.push_str(&format!("  <method name=\"{}\">\n", escape(&m)));
            for t in types(&info, "in") {
                x.push_str(&format!("   <arg type=\"{t}\" direction=\"in\"/>\n"));
            }
            for t in types(&info, "out") {
                x.push_str(&format!("   <arg type=\"{t}\" direction=\"out\"/>\n"));
            }
            x.push_str("  </method>\n");
        }
        for (p, info) in names(iface, "properties") {
            let access = match info.get("flags").and_then(Value::as_str) {
                Some("rw") => "readwrite",
                Some("w") => "write",
                _ => "read",
            };
            let t = info.get("type").and_then(Value::as_str).unwrap_or("v");
            x.push_str(&format!(
                "  <property name=\"{}\" type=\"{t}\" access=\"{access}\"/>\n",
                escape(&p)
            ));
        }
        for (s, info) in names(iface, "signals") {
            x.push_str(&format!("  <signal name=\"{}\">\n", escape(&s)));
            for t in types(&info, "in") {
                x.push_str(&format!("   <arg type=\"{t}\"/>\n"));
            }
            x.push_str("  </signal>\n");
        }
        x.push_str(" </interface>\n");
    }
    for c in children {
        x.push_str(&format!(" <node name=\"{}\"/>\n", escape(c)));
    }
    x.push_str("</node>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_introspection_xml() {
        let xml = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<!-- a comment with <tags> -->
<node>
 <interface name="org.example.I">
  <method name="Do"><arg type="s" name="a" direction="in"/><arg type="a{sv}" direction="out"/></method>
  <method name="Nothing"/>
  <property name="P" type="i" access="readwrite"><annotation name="x" value="a&gt;b"/></property>
  <property name="R" type="s" access="read"/>
  <signal name="S"><arg type="u"/><arg type="s"/></signal>
 </interface>
 <node name="child"><interface name="org.example.Child"/></node>
</node>"#;
        let meta = parse(xml);
        assert_eq!(
            Value::Object(meta.clone()),
            json!({"org.example.I": {
                "methods": {"Do": {"in": ["s"], "out": ["a{sv}"]}, "Nothing": {"in": [], "out": []}},
                "properties": {"P": {"flags": "rw", "type": "i"}, "R": {"flags": "r", "type": "s"}},
                "signals": {"S": {"in": ["u", "s"]}}
            }})
        );
        assert_eq!(parse(&to_xml(&meta, &["child".into()])), meta);
    }
}
