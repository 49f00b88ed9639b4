//! `dbus-json3` against real buses: private `dbus-daemon`s with the Gio test service
//! (`org.ferry.Test`) and the real `systemd-hostnamed`, and the bridge's internal bus.

use ferry_testbed::{Component, TestBuses, TEST_NAME};
use serde_json::{json, Value};

use crate::common::{Bridge, Out};

const PATH: &str = "/org/ferry/Test";
const IFACE: &str = "org.ferry.Test";
const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";

/// The buses and a bridge that uses them.
fn setup() -> Option<(TestBuses, Bridge)> {
    if !ferry_testbed::require(Component::DBus) {
        return None;
    }
    let buses = TestBuses::start().expect("start the test buses");
    let bridge = Bridge::start_env(&buses.env());
    Some((buses, bridge))
}

/// The next frame for `ch`: its data as JSON, or its control message.
fn next(b: &Bridge, ch: &str) -> Value {
    loop {
        match b.recv() {
            Out::Data(c, data) if c == ch => {
                return serde_json::from_slice(&data).expect("dbus-json3 data is JSON")
            }
            Out::Control(v) if v["channel"] == ch => return v,
            _ => {}
        }
    }
}

fn send(b: &mut Bridge, ch: &str, v: Value) {
    b.data(ch, v.to_string().as_bytes());
}

/// Open a channel to the test service on `bus` and return its `ready`.
fn open_test(b: &mut Bridge, ch: &str, bus: &str) -> Value {
    b.open(
        ch,
        json!({"payload": "dbus-json3", "bus": bus, "name": TEST_NAME}),
    );
    let owner = next(b, ch);
    let owner = owner["owner"]
        .as_str()
        .expect("an owner before ready")
        .to_owned();
    assert!(owner.starts_with(':'), "{owner}");
    let ready = next(b, ch);
    assert_eq!(ready["command"], "ready");
    assert_eq!(ready["unique-name"], owner.as_str());
    ready
}

fn call(b: &mut Bridge, ch: &str, id: &str, member: &str, args: Value, extra: Value) -> Value {
    let mut m = json!({"call": [PATH, IFACE, member, args], "id": id});
    if let Value::Object(extra) = extra {
        m.as_object_mut().unwrap().extend(extra);
    }
    send(b, ch, m);
    next(b, ch)
}

fn every_type() -> Value {
    json!([
        255, true, -32768, 65535, -2147483648i64, 4294967295u64, i64::MIN, u64::MAX, 1.5,
        "ünïcode", "/a/b_c", "a{sv}", {"t": "a{sv}", "v": {"k": {"t": "t", "v": u64::MAX}}},
        "AAEC/w==", ["x", ""], {"k": {"t": "s", "v": "v"}}, {"1": "one", "-2": "minus two"},
        [-7, "s"], ["", "aGk="]
    ])
}

#[test]
fn every_type_survives_a_round_trip_with_and_without_type() {
    let Some((_buses, mut b)) = setup() else {
        return;
    };
    open_test(&mut b, "d", "system");
    let types = "ybnqiuxtdsogvayasa{sv}a{is}(is)aay";
    let with = call(
        &mut b,
        "d",
        "1",
        "Types",
        every_type(),
        json!({"type": types}),
    );
    assert_eq!(
        with,
        json!({"reply": [every_type()], "id": "1", "type": types, "flags": null})
    );
    // Without a type, the bridge introspects the object first.
    let without = call(&mut b, "d", "2", "Types", every_type(), json!({}));
    assert_eq!(
        without,
        json!({"reply": [every_type()], "id": "2", "type": types, "flags": null})
    );
    let nothing = call(&mut b, "d", "3", "Nothing", json!([]), json!({"flags": ""}));
    assert_eq!(
        nothing,
        json!({"reply": [[]], "id": "3", "type": "", "flags": "<"})
    );
}

#[test]
fn bad_arguments_and_failures_are_errors_and_the_channel_goes_on() {
    let Some((_buses, mut b)) = setup() else {
        return;
    };
    open_test(&mut b, "d", "session");
    for (args, ty) in [
        (json!(["not a number"]), json!("i")),
        (json!([true]), json!("i")),
        (json!([2147483648u64]), json!("i")),
        (json!(["!!"]), json!("ay")),
        (json!([1]), json!("b")),
        (json!([{"t": "ss", "v": 1}]), json!("v")),
        (json!([0]), json!("h")),
        (json!([1, 2]), json!("i")),
        (json!(["x"]), json!("a{")),
    ] {
        let e = call(&mut b, "d", "e", "Sleep", args.clone(), json!({"type": ty}));
        assert_eq!(
            e["error"][0], "org.freedesktop.DBus.Error.InvalidArgs",
            "{args} {ty}: {e}"
        );
        assert_eq!(e["id"], "e");
    }
    let e = call(&mut b, "d", "f", "Fail", json!(["it broke"]), json!({}));
    assert_eq!(
        e,
        json!({"error": ["org.ferry.Test.Error.Failed", ["it broke"]], "id": "f"})
    );
    let e = call(&mut b, "d", "u", "NoSuchMethod", json!([1]), json!({}));
    assert_eq!(
        e,
        json!({"error": ["org.freedesktop.DBus.Error.UnknownMethod",
            ["Introspection data for method org.ferry.Test NoSuchMethod not available"]], "id": "u"})
    );
    let e = call(
        &mut b,
        "d",
        "t",
        "Sleep",
        json!([3000]),
        json!({"timeout": 100}),
    );
    assert_eq!(e["error"][0], "org.freedesktop.DBus.Error.Timeout", "{e}");
    // Still working.
    let ok = call(&mut b, "d", "ok", "Nothing", json!([]), json!({}));
    assert_eq!(ok["reply"], json!([[]]));
}

#[test]
fn signals_and_property_changes_come_before_the_reply() {
    let Some((_buses, mut b)) = setup() else {
        return;
    };
    open_test(&mut b, "d", "system");
    send(
        &mut b,
        "d",
        json!({"add-match": {"path": PATH, "interface": IFACE}}),
    );
    // The match is in force for the very next call.
    send(
        &mut b,
        "d",
        json!({"call": [PATH, IFACE, "Emit", ["hello"]], "id": "1"}),
    );
    assert_eq!(
        next(&b, "d"),
        json!({"signal": [PATH, IFACE, "Signal", ["hello", 5]]})
    );
    assert_eq!(next(&b, "d"), json!({"signal": [PATH, IFACE, "Empty", []]}));
    assert_eq!(next(&b, "d")["id"], "1");

    send(
        &mut b,
        "d",
        json!({"watch": {"path": PATH, "interface": IFACE}, "id": "w"}),
    );
    let meta = next(&b, "d");
    let props = &meta["meta"][IFACE]["properties"];
    assert_eq!(props["Counter"], json!({"flags": "r", "type": "i"}));
    assert_eq!(props["Writable"], json!({"flags": "rw", "type": "s"}));
    assert_eq!(
        meta["meta"][IFACE]["methods"]["Fail"],
        json!({"in": ["s"], "out": []})
    );
    assert_eq!(
        next(&b, "d"),
        json!({"notify": {PATH: {IFACE: {"Counter": 0, "Hidden": "hidden-0", "Writable": "initial"}}}})
    );
    assert_eq!(next(&b, "d"), json!({"reply": [], "id": "w"}));

    // Counter is announced with its value, Hidden only as invalidated: fetched.
    // (The match above is for the service's own interface: PropertiesChanged is not a hit.)
    send(
        &mut b,
        "d",
        json!({"call": [PATH, IFACE, "SetCounter", [7]], "id": "2"}),
    );
    assert_eq!(
        next(&b, "d"),
        json!({"notify": {PATH: {IFACE: {"Counter": 7, "Hidden": "hidden-7"}}}})
    );
    assert_eq!(next(&b, "d")["id"], "2");

    let set = json!({"call": [PATH, "org.freedesktop.DBus.Properties", "Set",
        [IFACE, "Writable", {"t": "s", "v": "changed"}]], "id": "3"});
    send(
        &mut b,
        "d",
        json!({"add-match": {"interface": "org.freedesktop.DBus.Properties"}}),
    );
    send(&mut b, "d", set);
    let changed = next(&b, "d");
    assert_eq!(
        changed,
        json!({"signal": [PATH, "org.freedesktop.DBus.Properties", "PropertiesChanged",
            [IFACE, {"Writable": {"t": "s", "v": "changed"}}, []]]})
    );
    assert_eq!(
        next(&b, "d"),
        json!({"notify": {PATH: {IFACE: {"Writable": "changed"}}}})
    );
    assert_eq!(
        next(&b, "d"),
        json!({"reply": [[]], "id": "3", "type": "", "flags": null})
    );
}

#[test]
fn object_manager_watches_follow_objects() {
    let Some((_buses, mut b)) = setup() else {
        return;
    };
    open_test(&mut b, "d", "session");
    let add = call(&mut b, "d", "1", "AddItem", json!(["first"]), json!({}));
    assert_eq!(add["id"], "1");
    send(
        &mut b,
        "d",
        json!({"watch": {"path_namespace": PATH}, "id": "w"}),
    );
    let meta = next(&b, "d");
    assert!(
        meta["meta"]["org.ferry.Test.Item"]["properties"]["Name"].is_object(),
        "{meta}"
    );
    // The namespace's root is watched too (as Cockpit 337 does), with every interface it has.
    assert!(
        meta["meta"][IFACE]["properties"]["Counter"].is_object(),
        "{meta}"
    );
    assert!(meta["meta"][OBJECT_MANAGER].is_object(), "{meta}");
    let notify = next(&b, "d");
    assert_eq!(
        notify["notify"][format!("{PATH}/items/first")],
        json!({"org.ferry.Test.Item": {"Name": "first"}})
    );
    assert_eq!(notify["notify"][PATH][IFACE]["Counter"], 0, "{notify}");
    assert!(
        notify["notify"][PATH].get(OBJECT_MANAGER).is_none(),
        "{notify}"
    );
    assert_eq!(next(&b, "d"), json!({"reply": [], "id": "w"}));
    // A call sent right behind a watch is answered after it; what it causes comes first.
    send(
        &mut b,
        "d",
        json!({"call": [PATH, IFACE, "AddItem", ["second"]], "id": "2"}),
    );
    // The interface is known already: an empty `meta`, as Cockpit 337 sends it.
    assert_eq!(next(&b, "d"), json!({"meta": {}}));
    assert_eq!(
        next(&b, "d"),
        json!({"notify": {format!("{PATH}/items/second"): {"org.ferry.Test.Item": {"Name": "second"}}}})
    );
    assert_eq!(next(&b, "d")["id"], "2");
    send(
        &mut b,
        "d",
        json!({"call": [PATH, IFACE, "RemoveItem", ["first"]], "id": "3"}),
    );
    assert_eq!(
        next(&b, "d"),
        json!({"notify": {format!("{PATH}/items/first"): {"org.ferry.Test.Item": null}}})
    );
    assert_eq!(next(&b, "d")["id"], "3");
}

#[test]
fn the_owner_is_followed_and_the_service_activated_again() {
    let Some((_buses, mut b)) = setup() else {
        return;
    };
    let ready = open_test(&mut b, "d", "system");
    let first = ready["unique-name"].clone();
    assert_eq!(
        call(&mut b, "d", "q", "Quit", json!([]), json!({}))["id"],
        "q"
    );
    assert_eq!(next(&b, "d"), json!({"owner": null}));
    send(
        &mut b,
        "d",
        json!({"call": [PATH, IFACE, "Nothing", []], "id": "n"}),
    );
    let owner = next(&b, "d");
    assert!(
        owner["owner"].is_string() && owner["owner"] != first,
        "{owner}"
    );
    assert_eq!(next(&b, "d")["id"], "n");

    b.open(
        "m",
        json!({"payload": "dbus-json3", "bus": "system", "name": "org.ferry.Missing"}),
    );
    assert_eq!(next(&b, "m"), json!({"owner": null}));
    let close = next(&b, "m");
    assert_eq!(
        (close["command"].as_str(), close["problem"].as_str()),
        (Some("close"), Some("not-found"))
    );
}

#[test]
fn hostnamed_is_activated_and_watched() {
    let Some((_buses, mut b)) = setup() else {
        return;
    };
    b.open(
        "h",
        json!({"payload": "dbus-json3", "name": "org.freedesktop.hostname1"}),
    );
    assert!(next(&b, "h")["owner"].is_string());
    assert_eq!(next(&b, "h")["command"], "ready");
    let path = "/org/freedesktop/hostname1";
    send(
        &mut b,
        "h",
        json!({"watch": {"path": path, "interface": "org.freedesktop.hostname1"}, "id": "w"}),
    );
    let meta = next(&b, "h");
    assert_eq!(
        meta["meta"]["org.freedesktop.hostname1"]["properties"]["Hostname"]["type"],
        "s"
    );
    let notify = next(&b, "h");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        notify["notify"][path]["org.freedesktop.hostname1"]["Hostname"],
        hostname.trim()
    );
    assert_eq!(next(&b, "h"), json!({"reply": [], "id": "w"}));
}

#[test]
fn open_options_are_checked() {
    let Some((buses, mut b)) = setup() else {
        return;
    };
    for (ch, opts) in [
        ("a", json!({"bus": "nonsense"})),
        ("b", json!({"bus": "session", "address": buses.session})),
        ("c", json!({"bus": "none"})),
    ] {
        let mut opts = opts;
        opts["payload"] = "dbus-json3".into();
        b.open(ch, opts);
        let close = next(&b, ch);
        assert_eq!(close["problem"], "protocol-error", "{ch}: {close}");
    }
    // An address of a bus, with a name.
    b.open("n", json!({"payload": "dbus-json3", "bus": "none", "address": buses.session, "name": TEST_NAME}));
    assert!(next(&b, "n")["owner"].is_string());
    assert_eq!(next(&b, "n")["command"], "ready");
    // Not JSON: protocol-error.
    b.data("n", b"[not json");
    assert_eq!(next(&b, "n")["problem"], "protocol-error");
}

#[test]
fn the_internal_bus_serves_cockpits_objects() {
    let mut b = Bridge::start();
    b.open("i", json!({"payload": "dbus-json3", "bus": "internal"}));
    let ready = next(&b, "i");
    assert_eq!(ready["command"], "ready");
    assert!(ready.get("unique-name").is_none());
    let get_all = |b: &mut Bridge, path: &str, iface: &str| {
        send(
            b,
            "i",
            json!({"call": [path, "org.freedesktop.DBus.Properties", "GetAll", [iface]],
            "id": "g", "type": "s"}),
        );
        next(b, "i")
    };
    let user = get_all(&mut b, "/user", "cockpit.User");
    let user = &user["reply"][0][0];
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert_eq!(user["Id"], json!({"t": "i", "v": uid}));
    let id_n = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    assert_eq!(
        user["Name"]["v"],
        String::from_utf8_lossy(&id_n.stdout).trim()
    );
    let id_gn = std::process::Command::new("id")
        .arg("-Gn")
        .output()
        .unwrap();
    let groups: Vec<String> = String::from_utf8_lossy(&id_gn.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(user["Groups"]["v"], json!(groups));

    // The privileged bridge is sudo, when it is installed; a root session is root already.
    let root = uid == 0;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sudo = std::env::split_paths(&path).any(|d| d.join("sudo").is_file());
    let su = get_all(&mut b, "/superuser", "cockpit.Superuser");
    assert_eq!(
        su["reply"][0][0],
        json!({"Bridges": {"t": "as", "v": if sudo { vec!["sudo"] } else { vec![] }},
               "Current": {"t": "s", "v": if root { "root" } else { "none" }},
               "Methods": {"t": "a{sv}", "v": {}}})
    );
    send(
        &mut b,
        "i",
        json!({"call": ["/superuser", "cockpit.Superuser", "Start", ["bogus"]], "id": "s"}),
    );
    let why = if root {
        "Superuser bridge already running"
    } else {
        "Unknown superuser bridge type \"bogus\""
    };
    assert_eq!(
        next(&b, "i")["error"],
        json!(["cockpit.Superuser.Error", [why]])
    );

    // Without a type: the bridge introspects its own objects.
    send(
        &mut b,
        "i",
        json!({"call": ["/config", "cockpit.Config", "GetString", ["NoSuch", "Key"]], "id": "c"}),
    );
    assert_eq!(next(&b, "i")["error"][0], "cockpit.Config.KeyError");
    send(
        &mut b,
        "i",
        json!({"call": ["/config", "cockpit.Config", "GetUInt", ["NoSuch", "Key", 42, 100, 0]], "id": "u"}),
    );
    assert_eq!(
        next(&b, "i"),
        json!({"reply": [[42]], "id": "u", "type": "u", "flags": null})
    );

    send(
        &mut b,
        "i",
        json!({"watch": {"path": "/machines", "interface": "cockpit.Machines"}, "id": "w"}),
    );
    let meta = next(&b, "i");
    assert_eq!(
        meta["meta"]["cockpit.Machines"]["properties"]["Machines"]["type"],
        "a{sa{sv}}"
    );
    assert!(next(&b, "i")["notify"]["/machines"]["cockpit.Machines"]["Machines"].is_object());
    assert_eq!(next(&b, "i"), json!({"reply": [], "id": "w"}));

    let packages = get_all(&mut b, "/packages", "cockpit.Packages");
    // The manifests of the packages this bridge serves: the ones its `init` names.
    let manifests = &packages["reply"][0][0]["Manifests"];
    assert_eq!(manifests["t"], "s");
    let manifests: serde_json::Value =
        serde_json::from_str(manifests["v"].as_str().unwrap()).expect("Manifests is JSON");
    let mut named: Vec<&String> = manifests.as_object().expect("an object").keys().collect();
    let mut in_init: Vec<&String> = b.init["packages"]
        .as_object()
        .expect("init names its packages")
        .keys()
        .collect();
    named.sort();
    in_init.sort();
    assert_eq!(named, in_init);
    send(
        &mut b,
        "i",
        json!({"call": ["/LoginMessages", "cockpit.LoginMessages", "Get", []], "id": "l"}),
    );
    assert_eq!(next(&b, "i")["reply"], json!([["{}"]]));
    send(
        &mut b,
        "i",
        json!({"call": ["/user", "org.freedesktop.DBus.Peer", "Ping", []], "id": "p"}),
    );
    assert_eq!(next(&b, "i")["reply"], json!([[]]));
    send(
        &mut b,
        "i",
        json!({"call": ["/nowhere", "org.freedesktop.DBus.Properties", "GetAll", ["x"]], "id": "x", "type": "s"}),
    );
    assert_eq!(
        next(&b, "i")["error"][0],
        "org.freedesktop.DBus.Error.UnknownObject"
    );
}
