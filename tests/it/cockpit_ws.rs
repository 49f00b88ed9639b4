//! The real Cockpit 337 web server with `ferry cockpit-ssh` as its login command: a login as
//! the login page sends it (`GET /cockpit+=USER@HOST:PORT/login` with Basic credentials),
//! then the shell page, the manifests and a page's files for that host, served by ferry's
//! bridge on the far side of ssh. A wrong password is the login page's 401.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;

use ferry_testbed::{require, CockpitWs, Component, Sshd, PASSWORD};

use crate::harness::ferry_bin;

/// A response: status, head and body.
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    /// The value of the first header called `name` (any case).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`; a chunked body is decoded.
fn get(port: u16, path: &str, headers: &[(&str, String)]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to cockpit-ws");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .expect("a response within 60 s");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut response = Response {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk(&response.body);
    }
    response
}

/// A chunked body's content.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&raw[..eol]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        let start = eol + 2;
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
    body
}

fn basic(user_password: &str) -> (&'static str, String) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user_password}\0"));
    ("Authorization", format!("Basic {encoded}"))
}

/// Log in as the login page does: `GET /cockpit+=HOST/login` with Basic `user_password` and
/// unknown hosts allowed.
fn login(ws: &CockpitWs, host: &str, user_password: &str) -> Response {
    get(
        ws.port(),
        &format!("/cockpit+={host}/login"),
        &[
            basic(user_password),
            ("X-SSH-Connect-Unknown-Hosts", "yes".to_owned()),
        ],
    )
}

/// The session cookie a successful login set, as a request header.
fn session_cookie(login: &Response) -> (&'static str, String) {
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie");
    ("Cookie", cookie.to_owned())
}

/// The manifests (with the shell's) and the Overview page are served for `host`.
fn serves_the_console(port: u16, host: &str, cookie: &(&'static str, String)) {
    let cookie = std::slice::from_ref(cookie);
    let manifests = get(
        port,
        &format!("/cockpit+={host}/@localhost/manifests.json"),
        cookie,
    );
    assert_eq!(manifests.status, 200, "{}", manifests.head);
    let manifests: serde_json::Value = serde_json::from_slice(&manifests.body).unwrap();
    assert!(manifests["shell"].is_object(), "{manifests}");
    let overview = get(
        port,
        &format!("/cockpit+={host}/@localhost/system/index.html"),
        cookie,
    );
    assert_eq!(overview.status, 200, "{}", overview.head);
    assert!(String::from_utf8_lossy(&overview.body).contains("<title>Overview</title>"));
}

#[test]
fn cockpit_ws_logs_in_and_serves_the_shell_through_ferry() {
    require!(Component::Sshd);
    require!(Component::User("pw"));
    require!(Component::User("bash"));
    require!(Component::Cockpit337);
    require!(Component::Unshare);
    // A wrong password: see `password_logins`.
    let _one = crate::harness::password_logins();
    let ws = CockpitWs::start(std::path::Path::new(ferry_bin()), &["cockpit-ssh"])
        .expect("start cockpit-ws 337");
    let port = ws.port();
    let host = format!("ferry-pw@127.0.0.1:{}", Sshd::shared().port());
    let wrong = login(&ws, &host, "ferry-pw:not-the-password");
    assert_eq!(wrong.status, 401, "{}\n{}", wrong.head, ws.log());

    let login = login(&ws, &host, &format!("ferry-pw:{PASSWORD}"));
    assert_eq!(login.status, 200, "{}\n{}", login.head, ws.log());
    let body: serde_json::Value = serde_json::from_slice(&login.body).unwrap();
    assert!(body["csrf-token"].is_string(), "{body}");
    assert!(
        body["login-data"]["known-hosts"]
            .as_str()
            .is_some_and(|k| k.contains(" ssh-ed25519 ")),
        "{body}"
    );
    let cookie = session_cookie(&login);

    let shell = get(port, &format!("/={host}/"), std::slice::from_ref(&cookie));
    assert_eq!(shell.status, 200, "{}", shell.head);
    let html = String::from_utf8_lossy(&shell.body);
    assert!(
        html.contains(&format!("/cockpit+={host}/@localhost/shell/index.html")),
        "{html}"
    );
    serves_the_console(port, &host, &cookie);
}

/// Run the browser script (tests/browser/console.py) against `ws`; its screenshots are kept
/// under the target directory's `browser-shots/NAME`.
fn browser(ws: &CockpitWs, host: &str, password: &str, name: &str, extra: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.py");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("browser-shots")
        .join(name);
    let mut child = std::process::Command::new(ferry_testbed::playwright_python())
        .arg(script)
        .arg(format!("http://127.0.0.1:{}", ws.port()))
        .args([host, "ferry-pw"])
        .arg(&shots)
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the browser script");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}\nscreenshots: {}\ncockpit-ws: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        shots.display(),
        ws.log()
    );
    assert!(output.status.success(), "{said}");
    said
}

#[test]
fn the_web_console_works_in_a_real_browser() {
    require!(Component::Sshd);
    require!(Component::User("pw"));
    require!(Component::User("bash"));
    require!(Component::Cockpit337);
    require!(Component::Unshare);
    require!(Component::Browser);
    // A wrong password: see `password_logins`.
    let _one = crate::harness::password_logins();
    let ws = CockpitWs::start(std::path::Path::new(ferry_bin()), &["cockpit-ssh"])
        .expect("start cockpit-ws 337");
    // The login page's "Connect to" field, as a person types it.
    let host = format!("127.0.0.1:{}", Sshd::shared().port());
    let said = browser(
        &ws,
        &host,
        "not-the-password",
        "wrong-password",
        &["--wrong-password"],
    );
    assert!(said.contains("step: wrong password refused\nok"), "{said}");
    // The login, the Overview with the machine's figures, a command in the Terminal, and
    // administrative access switched on with sudo's password (the Accounts page then offers
    // to create one, which it does not before).
    let said = browser(&ws, &host, PASSWORD, "console", &[]);
    assert!(
        said.contains("step: accounts, administrative\nok"),
        "{said}"
    );
}

/// cockpit-ws 287 (Debian's, installed by the test bed) killed on drop.
struct Ws287(std::process::Child);

impl Drop for Ws287 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cockpit_ws_287_runs_its_local_session_on_ferry_connect() {
    require!(Component::CockpitBridge);
    let ws = "/usr/lib/cockpit/cockpit-ws";
    if !std::path::Path::new(ws).exists() {
        // cockpit-ws comes with the test bed's packages, as cockpit-bridge does.
        panic!("{ws} is missing: run `cargo xtask setup`");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // --local-session runs one program, without arguments.
    let dir = tempfile::tempdir().unwrap();
    let bridge = dir.path().join("ferry-connect-local");
    std::fs::write(
        &bridge,
        format!("#!/bin/sh\nexec {} connect local\n", ferry_bin()),
    )
    .unwrap();
    std::fs::set_permissions(&bridge, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let child = std::process::Command::new(ws)
        .args(["--no-tls", "-a", "127.0.0.1", "-p", &port.to_string()])
        .arg(format!("--local-session={}", bridge.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start cockpit-ws 287");
    let _ws = Ws287(child);
    let started = std::time::Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cockpit-ws 287 does not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The shell and its packages come through ferry's bridge.
    let manifests = get(port, "/cockpit/@localhost/manifests.json", &[]);
    assert_eq!(manifests.status, 200, "{}", manifests.head);
    let manifests: serde_json::Value = serde_json::from_slice(&manifests.body).unwrap();
    assert!(manifests["shell"].is_object(), "{manifests}");
    let shell = get(port, "/", &[]);
    assert_eq!(shell.status, 200, "{}", shell.head);
    let overview = get(port, "/cockpit/@localhost/system/index.html", &[]);
    assert_eq!(overview.status, 200, "{}", overview.head);
    assert!(String::from_utf8_lossy(&overview.body).contains("<title>Overview</title>"));
}

#[test]
fn a_host_with_nothing_but_sh_gets_the_console() {
    require!(Component::Sshd);
    require!(Component::User("ash"));
    require!(Component::User("bash"));
    require!(Component::Cockpit337);
    require!(Component::Unshare);
    // ferry-ash logs in to a busybox root: no Cockpit, no Python, nothing but sh.
    let root = ferry_testbed::container_root();
    let sshd = Sshd::start_with(&format!(
        "Match User ferry-ash\n  ChrootDirectory {}\n  PasswordAuthentication yes",
        root.display()
    ))
    .expect("start an sshd with a chroot");
    let uid = ferry_testbed::user("ash").uid().unwrap();
    let cache = root.join(format!("tmp/ferry-{uid}"));
    let _ = std::fs::remove_dir_all(&cache);
    let ws = CockpitWs::start(std::path::Path::new(ferry_bin()), &["cockpit-ssh"])
        .expect("start cockpit-ws 337");
    let port = ws.port();
    let host = format!("ferry-ash@127.0.0.1:{}", sshd.port());
    let login = login(&ws, &host, &format!("ferry-ash:{PASSWORD}"));
    assert_eq!(login.status, 200, "{}\n{}", login.head, ws.log());
    // The bridge ran inside the root: its loader's cache is there.
    assert!(cache.is_dir(), "no {}: {}", cache.display(), ws.log());
    // The console's files come from the machine ferry runs on.
    serves_the_console(port, &host, &session_cookie(&login));
}
