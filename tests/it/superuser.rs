//! Administrative access through the internal bus: the `/superuser` object (`cockpit.Superuser`)
//! drives the privileged bridge as Cockpit's "Limited access" switch does (`Bridges`,
//! `Current`, `Start`, `Stop`, `Answer`, the `Prompt` signal), against the real sudo.

use ferry_testbed::{require, Component};
use serde_json::{json, Value};

use crate::harness::{frame, Running};
use crate::hops::{conversation, id_u};

/// What happened on the internal bus channel, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A `notify` of `Current`.
    Current(String),
    /// A `Prompt` signal: (prompt, error).
    Prompt(String, String),
    /// The reply (or error) to the call with this id.
    Reply(String, Value),
}

/// The internal bus on channel `ch`, watching `/superuser`; returns the first values of
/// `Current` and `Bridges`.
fn open_bus(ferry: &mut Running, ch: &str) -> (String, Value) {
    ferry.send_control(&json!({
        "command": "open", "channel": ch, "payload": "dbus-json3", "bus": "internal",
    }));
    send(
        ferry,
        ch,
        json!({"add-match": {"path": "/superuser", "interface": "cockpit.Superuser"}}),
    );
    send(
        ferry,
        ch,
        json!({"watch": {"path": "/superuser", "interface": "cockpit.Superuser"}, "id": "w"}),
    );
    let mut props = json!({});
    loop {
        let (id, payload) = ferry.recv();
        if id != ch {
            continue;
        }
        let msg: Value = serde_json::from_slice(&payload).unwrap();
        if let Some(p) = msg.pointer("/notify/~1superuser/cockpit.Superuser") {
            props = p.clone();
        }
        if msg["id"] == "w" {
            return (
                props["Current"].as_str().unwrap_or_default().to_owned(),
                props["Bridges"].clone(),
            );
        }
    }
}

fn send(ferry: &mut Running, ch: &str, msg: Value) {
    ferry.send(&frame(ch, msg.to_string().as_bytes()));
}

/// Call `member(args)` on `/superuser` with this call id.
fn call(ferry: &mut Running, ch: &str, id: &str, member: &str, args: Value) {
    send(
        ferry,
        ch,
        json!({"call": ["/superuser", "cockpit.Superuser", member, args], "id": id}),
    );
}

/// What arrived before a reply: the bus's news, control messages, data on other channels.
type Before = (Vec<Seen>, Vec<Value>, Vec<(String, Vec<u8>)>);

/// Read frames until the reply to call `id` on channel `ch`.
fn until_reply(ferry: &mut Running, ch: &str, id: &str) -> Before {
    until(
        ferry,
        ch,
        |seen| matches!(seen, Seen::Reply(call, _) if call == id),
    )
}

/// Read frames until the bus says what `stop` waits for.
fn until(ferry: &mut Running, ch: &str, stop: impl Fn(&Seen) -> bool) -> Before {
    let mut seen = Vec::new();
    let mut control = Vec::new();
    let mut other = Vec::new();
    loop {
        let (channel, payload) = ferry.recv();
        if channel.is_empty() {
            control.push(serde_json::from_slice(&payload).unwrap());
            continue;
        }
        if channel != ch {
            other.push((channel, payload));
            continue;
        }
        let msg: Value = serde_json::from_slice(&payload).unwrap();
        if let Some(current) = msg
            .pointer("/notify/~1superuser/cockpit.Superuser/Current")
            .and_then(Value::as_str)
        {
            seen.push(Seen::Current(current.to_owned()));
        }
        if let Some(args) = msg.get("signal").filter(|s| s[2] == "Prompt") {
            let args = &args[3];
            seen.push(Seen::Prompt(
                args[1].as_str().unwrap().to_owned(),
                args[4].as_str().unwrap().to_owned(),
            ));
        }
        if let Some(call) = msg["id"].as_str().filter(|id| *id != "w") {
            let result = msg.get("reply").or(msg.get("error")).cloned();
            seen.push(Seen::Reply(call.to_owned(), result.unwrap_or_default()));
        }
        if seen.last().is_some_and(&stop) {
            return (seen, control, other);
        }
    }
}

fn error(name: &str, text: &str) -> Value {
    json!([name, [text]])
}

#[test]
fn start_and_stop_through_the_internal_bus() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    let mut ferry = conversation(&["ssh:sudoer"], json!({}));
    let (current, bridges) = open_bus(&mut ferry, "su");
    assert_eq!(current, "none");
    assert_eq!(bridges, json!(["sudo"]));

    call(&mut ferry, "su", "u", "Start", json!(["pkexec"]));
    let (seen, ..) = until_reply(&mut ferry, "su", "u");
    let unknown = error(
        "cockpit.Superuser.Error",
        "Unknown superuser bridge type \"pkexec\"",
    );
    assert_eq!(seen, [Seen::Reply("u".into(), unknown)]);

    // Start returns once the root copy runs; Current goes init -> sudo before the reply; an
    // echo channel opened meanwhile is served.
    call(&mut ferry, "su", "s", "Start", json!(["sudo"]));
    ferry.send_control(&json!({"command": "open", "channel": "e", "payload": "echo"}));
    ferry.send(&frame("e", b"meanwhile"));
    let (seen, _, other) = until_reply(&mut ferry, "su", "s");
    assert!(
        other.contains(&("e".to_owned(), b"meanwhile".to_vec())),
        "{other:?}"
    );
    assert_eq!(
        seen,
        [
            Seen::Current("init".into()),
            Seen::Current("sudo".into()),
            Seen::Reply("s".into(), json!([[]])),
        ]
    );
    assert_eq!(id_u(&mut ferry, "r", "require"), "0");

    call(&mut ferry, "su", "again", "Start", json!(["sudo"]));
    let (seen, ..) = until_reply(&mut ferry, "su", "again");
    let running = error(
        "cockpit.Superuser.Error",
        "Superuser bridge already running",
    );
    assert_eq!(seen, [Seen::Reply("again".into(), running)]);

    // Stop: the root copy's channels close with `terminated`, Current is none again, and
    // `require` is refused from then on.
    ferry.send_control(&json!({
        "command": "open", "channel": "k", "payload": "stream",
        "spawn": ["sleep", "100"], "superuser": "require",
    }));
    loop {
        let (_, msg) = ferry.recv_control();
        if msg["command"] == "ready" && msg["channel"] == "k" {
            break;
        }
    }
    call(&mut ferry, "su", "x", "Stop", json!([]));
    let (seen, control, _) = until_reply(&mut ferry, "su", "x");
    assert_eq!(
        seen,
        [
            Seen::Current("none".into()),
            Seen::Reply("x".into(), json!([[]]))
        ]
    );
    let closed = control
        .iter()
        .find(|m| m["command"] == "close" && m["channel"] == "k")
        .unwrap_or_else(|| panic!("k is not closed: {control:?}"));
    assert_eq!(closed["problem"], "terminated", "{closed}");
    assert_eq!(id_u(&mut ferry, "r2", "require"), "problem:access-denied");

    // And it starts again.
    call(&mut ferry, "su", "s2", "Start", json!(["any"]));
    let (seen, ..) = until_reply(&mut ferry, "su", "s2");
    assert_eq!(seen.last(), Some(&Seen::Reply("s2".into(), json!([[]]))));
    assert_eq!(id_u(&mut ferry, "r3", "require"), "0");
    ferry.finish();
}

#[test]
fn a_root_session_is_root_already() {
    require!(Component::Root);
    let mut ferry = crate::harness::Test::new()
        .args(["connect", "local"])
        .spawn();
    let _ = ferry.recv_control();
    ferry.send_control(&json!({"command": "init", "version": 1, "host": "localhost"}));
    let (current, _) = open_bus(&mut ferry, "su");
    assert_eq!(current, "root");
    call(&mut ferry, "su", "s", "Start", json!(["sudo"]));
    let (seen, ..) = until_reply(&mut ferry, "su", "s");
    let running = error(
        "cockpit.Superuser.Error",
        "Superuser bridge already running",
    );
    assert_eq!(seen, [Seen::Reply("s".into(), running)]);
    ferry.finish();
}

// ---------------------------------------------------------------------------------------------
// A sudo that asks for a password: the prompt is relayed once, the answer reaches sudo once

/// Watches the command lines and environments of this test's processes for `secret` until
/// stopped: ferry's and everything it started here, and the bridge that runs sudo with its
/// askpass (`FERRY_ASKPASS=1`) with everything under it (sudo, the askpass, the loader, the
/// root copy). Other processes are not this test's: the machine is shared. Also says whether
/// it saw sudo's askpass environment at all (so the watch covered the start).
struct ProcWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<String>, bool)>,
}

/// One process: (pid, parent, command line, environment).
fn processes() -> Vec<(u32, u32, Vec<u8>, Vec<u8>)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let dir = entry.path();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: the command may hold anything, so read after its `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        all.push((pid, ppid, cmdline, environ));
    }
    all
}

impl ProcWatch {
    fn start(secret: &'static str, ferry: u32) -> ProcWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let has = |bytes: &[u8], what: &str| String::from_utf8_lossy(bytes).contains(what);
        let thread = std::thread::spawn(move || {
            let mut hits = Vec::new();
            let mut saw_askpass = false;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let all = processes();
                let mut ours: std::collections::HashSet<u32> = all
                    .iter()
                    .filter(|p| has(&p.3, "FERRY_ASKPASS=1"))
                    .map(|p| p.1)
                    .collect();
                saw_askpass |= !ours.is_empty();
                ours.insert(ferry);
                loop {
                    let more: Vec<u32> = all
                        .iter()
                        .filter(|p| ours.contains(&p.1) && !ours.contains(&p.0))
                        .map(|p| p.0)
                        .collect();
                    if more.is_empty() {
                        break;
                    }
                    ours.extend(more);
                }
                for (pid, _, cmdline, environ) in &all {
                    if ours.contains(pid) && (has(cmdline, secret) || has(environ, secret)) {
                        hits.push(format!("{pid}: {}", String::from_utf8_lossy(cmdline)));
                    }
                }
            }
            (hits, saw_askpass)
        });
        ProcWatch { stop, thread }
    }

    fn finish(self) -> (Vec<String>, bool) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Every file under `dir` (not following links) that contains `secret`.
fn files_containing(dir: &std::path::Path, secret: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            hits.extend(files_containing(&entry.path(), secret));
        } else if kind.is_file() {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            if String::from_utf8_lossy(&bytes).contains(secret) {
                hits.push(entry.path().display().to_string());
            }
        }
    }
    hits
}

/// `Start("sudo")` as ferry-pw, up to sudo's prompt: what the bus said.
fn start_until_prompt(ferry: &mut Running) -> Vec<Seen> {
    let (current, _) = open_bus(ferry, "su");
    assert_eq!(current, "none");
    call(ferry, "su", "s", "Start", json!(["sudo"]));
    let (seen, ..) = until(ferry, "su", |s| {
        matches!(s, Seen::Prompt(..) | Seen::Reply(..))
    });
    let Some(Seen::Prompt(prompt, error)) = seen.last() else {
        panic!("no prompt: {seen:?}");
    };
    assert!(prompt.contains("password for ferry-pw"), "{prompt:?}");
    assert_eq!(error, "", "nothing said before the first prompt");
    assert_eq!(seen[0], Seen::Current("init".into()), "{seen:?}");
    seen
}

#[test]
fn the_right_password_reaches_sudo_once_and_nowhere_else() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    let password = ferry_testbed::PASSWORD;
    let mut ferry = conversation(&["ssh:pw"], json!({}));
    start_until_prompt(&mut ferry);
    let watch = ProcWatch::start(password, ferry.pid());
    call(&mut ferry, "su", "a", "Answer", json!([password]));
    let (seen, ..) = until_reply(&mut ferry, "su", "s");
    let (hits, saw_askpass) = watch.finish();
    assert!(hits.is_empty(), "the password is in {hits:?}");
    assert!(saw_askpass, "the watch never saw sudo run with its askpass");
    assert_eq!(
        seen,
        [
            Seen::Reply("a".into(), json!([[]])),
            Seen::Current("sudo".into()),
            Seen::Reply("s".into(), json!([[]])),
        ]
    );
    assert_eq!(id_u(&mut ferry, "r", "require"), "0");
    let output = ferry.finish();
    assert!(
        !output.stderr_str().contains(password),
        "the password is in the log"
    );
    assert!(
        !output.stdout_str().contains(password),
        "the password is in the frames"
    );
    let home = ferry_testbed::user("pw").home();
    let files = files_containing(&home, password);
    assert!(files.is_empty(), "the password is in {files:?}");
}

#[test]
fn a_wrong_password_fails_start_after_one_try() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    let mut ferry = conversation(&["ssh:pw"], json!({}));
    start_until_prompt(&mut ferry);
    call(&mut ferry, "su", "a", "Answer", json!(["not the password"]));
    let (seen, ..) = until_reply(&mut ferry, "su", "s");
    // sudo asks again ("Sorry, try again."): that prompt is refused, not relayed, and sudo's
    // own words after it are the error, as 337 reports them.
    let Some(Seen::Reply(_, error)) = seen.last() else {
        unreachable!()
    };
    assert_eq!(error[0], "cockpit.Superuser.Error", "{error}");
    let text = error[1][0].as_str().unwrap();
    assert!(text.contains("1 incorrect password attempt"), "{text:?}");
    assert_eq!(
        seen[..seen.len() - 1],
        [
            Seen::Reply("a".into(), json!([[]])),
            Seen::Current("none".into()),
        ]
    );
    assert_eq!(id_u(&mut ferry, "r", "require"), "problem:access-denied");
    ferry.finish();
}

#[test]
fn stop_while_sudo_asks_cancels_start() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    let mut ferry = conversation(&["ssh:pw"], json!({}));
    start_until_prompt(&mut ferry);
    call(&mut ferry, "su", "x", "Stop", json!([]));
    let (seen, ..) = until_reply(&mut ferry, "su", "x");
    let cancelled = error("cockpit.Superuser.Error.Cancelled", "Operation aborted");
    assert_eq!(
        seen,
        [
            Seen::Current("none".into()),
            Seen::Reply("s".into(), cancelled),
            Seen::Reply("x".into(), json!([[]])),
        ]
    );
    ferry.finish();
}

// ---------------------------------------------------------------------------------------------
// The login-time attempt: `init` with `superuser: {"id": "sudo"}`, one `authorize` for the
// login password, `superuser-init-done` whatever the outcome

/// `ferry connect ssh:pw` with `superuser: {"id": "sudo"}` in our `init`; sudo's prompt comes
/// as one `authorize`, answered with `response`. Returns every control message up to
/// `superuser-init-done`.
fn login_with(response: &str) -> (Running, Vec<Value>) {
    let mut ferry = conversation(&["ssh:pw"], json!({"superuser": {"id": "sudo"}}));
    let mut said = Vec::new();
    loop {
        let (_, msg) = ferry.recv_control();
        said.push(msg.clone());
        if msg["command"] == "authorize" {
            ferry.send_control(&json!({
                "command": "authorize", "cookie": msg["cookie"], "response": response,
            }));
        }
        if msg["command"] == "superuser-init-done" {
            return (ferry, said);
        }
    }
}

/// The one `authorize` among `said`: its challenge is `plain1:` and the user's name in hex.
fn one_plain1(said: &[Value]) {
    let asked: Vec<&Value> = said
        .iter()
        .filter(|m| m["command"] == "authorize")
        .collect();
    assert_eq!(asked.len(), 1, "{said:?}");
    let hexuser: String = "ferry-pw".bytes().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        asked[0]["challenge"],
        format!("plain1:{hexuser}"),
        "{said:?}"
    );
    assert!(asked[0]["cookie"].is_string(), "{said:?}");
}

#[test]
fn the_login_password_starts_the_root_copy_at_login() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    let (mut ferry, said) = login_with(ferry_testbed::PASSWORD);
    one_plain1(&said);
    let (current, _) = open_bus(&mut ferry, "su");
    assert_eq!(current, "sudo");
    assert_eq!(id_u(&mut ferry, "r", "require"), "0");
    let output = ferry.finish();
    let password = ferry_testbed::PASSWORD;
    assert!(
        !output.stderr_str().contains(password),
        "the password is in the log"
    );
}

#[test]
fn a_wrong_or_no_login_password_is_tried_once_and_init_is_done() {
    require!(Component::Sshd);
    require!(Component::Sudo);
    for response in ["not the password", ""] {
        let (mut ferry, said) = login_with(response);
        one_plain1(&said);
        let (current, _) = open_bus(&mut ferry, "su");
        assert_eq!(current, "none", "{response:?}");
        assert_eq!(
            id_u(&mut ferry, "r", "require"),
            "problem:access-denied",
            "{response:?}"
        );
        // The front end can still switch administrative access on, with the right password.
        call(&mut ferry, "su", "s", "Start", json!(["sudo"]));
        let (seen, ..) = until(&mut ferry, "su", |s| matches!(s, Seen::Prompt(..)));
        assert_eq!(seen[0], Seen::Current("init".into()), "{seen:?}");
        call(
            &mut ferry,
            "su",
            "a",
            "Answer",
            json!([ferry_testbed::PASSWORD]),
        );
        let (seen, ..) = until_reply(&mut ferry, "su", "s");
        assert_eq!(seen.last(), Some(&Seen::Reply("s".into(), json!([[]]))));
        assert_eq!(id_u(&mut ferry, "r2", "require"), "0");
        ferry.finish();
    }
}
