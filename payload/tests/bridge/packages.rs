//! Packages: discovery, manifests and overrides, and the `http-stream1` packages channel,
//! on package trees built in temporary directories (the XDG variables point at them).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::{bin, Bridge, Out};

/// A temporary home for packages: `home` (XDG_DATA_HOME), two system data directories, a
/// system configuration directory and a user one.
struct Tree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

/// One answer of the packages channel.
#[derive(Debug)]
struct Response {
    /// Whether `ready` came before the response.
    ready: bool,
    status: u64,
    reason: String,
    headers: Value,
    body: Vec<u8>,
    close: Value,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers[name].as_str()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Tree {
    fn new() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        for d in ["home", "data1", "data2", "etc", "config"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Tree { _tmp: tmp, root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Write `content` to `rel` (directories made as needed).
    fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A package directory `data/cockpit/dir` with `manifest`.
    fn package(&self, data: &str, dir: &str, manifest: Value) -> PathBuf {
        self.write(
            &format!("{data}/cockpit/{dir}/manifest.json"),
            manifest.to_string(),
        );
        self.path(&format!("{data}/cockpit/{dir}"))
    }

    /// Gzip `content` into `rel` with the system's gzip.
    fn gzip(&self, rel: &str, content: &[u8]) -> Vec<u8> {
        let plain = self.write(rel.strip_suffix(".gz").unwrap(), content);
        let status = Command::new("gzip")
            .args(["-n", "-f"])
            .arg(&plain)
            .status()
            .expect("gzip runs");
        assert!(status.success());
        std::fs::read(self.path(rel)).unwrap()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let p = |d: &str| self.path(d).display().to_string();
        vec![
            ("XDG_DATA_HOME", p("home")),
            ("XDG_DATA_DIRS", format!("{}:{}", p("data1"), p("data2"))),
            ("XDG_CONFIG_DIRS", p("etc")),
            ("XDG_CONFIG_HOME", p("config")),
        ]
    }

    fn bridge(&self) -> Bridge {
        Bridge::start_env(&self.env())
    }

    /// `ferry-bridge --packages`.
    fn list(&self) -> String {
        let out = Command::new(bin())
            .arg("--packages")
            .envs(self.env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Ask the packages channel for `path` with `headers` (`method` GET unless given).
fn request(b: &mut Bridge, id: &str, path: &str, headers: Value, method: &str) -> Response {
    b.open(
        id,
        json!({"payload": "http-stream1", "internal": "packages", "method": method,
               "path": path, "headers": headers, "binary": "raw"}),
    );
    b.control(json!({"command": "done", "channel": id}));
    let mut ready = false;
    let mut head: Option<Value> = None;
    let mut body = Vec::new();
    loop {
        match b.recv() {
            Out::Control(v) if v["channel"] == id => match v["command"].as_str() {
                Some("ready") => ready = head.is_none(),
                Some("close") => {
                    let head = head.expect("a response head before close");
                    return Response {
                        ready,
                        status: head["status"].as_u64().unwrap(),
                        reason: head["reason"].as_str().unwrap().to_owned(),
                        headers: head["headers"].clone(),
                        body,
                        close: v,
                    };
                }
                _ => {}
            },
            Out::Data(ch, data) if ch == id => match head {
                None => head = Some(serde_json::from_slice(&data).expect("head is JSON")),
                Some(_) => body.extend_from_slice(&data),
            },
            _ => {}
        }
    }
}

fn get(b: &mut Bridge, path: &str, headers: Value) -> Response {
    request(b, "p", path, headers, "GET")
}

#[test]
fn init_names_the_packages_and_manifests_json_has_them() {
    let t = Tree::new();
    t.package("data1", "one", json!({"menu": {"index": {"label": "One"}}}));
    t.package("data2", "two", json!({"name": "second", "version": 3}));
    let mut b = t.bridge();
    assert_eq!(b.init["packages"], json!({"one": null, "second": null}));
    let r = get(&mut b, "/manifests.json", json!({}));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("Cache-Control"), Some("no-cache, no-store"));
    let manifests: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        manifests,
        json!({"one": {"menu": {"index": {"label": "One"}}},
               "second": {"name": "second", "version": 3}})
    );
    assert!(r.close.get("problem").is_none(), "{}", r.close);
}

#[test]
fn priority_then_first_directory_wins() {
    let t = Tree::new();
    // Same name, equal priority: the first data directory (XDG_DATA_HOME) wins.
    t.package("home", "a", json!({"from": "home"}));
    t.package("data1", "a", json!({"from": "data1"}));
    // A higher priority in a later directory wins over an earlier one.
    t.package("data1", "b", json!({"from": "data1"}));
    t.package(
        "data2",
        "b2",
        json!({"name": "b", "priority": 5, "from": "data2"}),
    );
    // base1 style: a negative priority loses to the default.
    t.package("data1", "c", json!({"priority": -1, "from": "data1"}));
    t.package("data2", "c", json!({"from": "data2"}));
    let mut b = t.bridge();
    let m: Value = serde_json::from_slice(&get(&mut b, "/manifests.json", json!({})).body).unwrap();
    assert_eq!(m["a"]["from"], "home");
    assert_eq!(m["b"]["from"], "data2");
    assert_eq!(m["c"]["from"], "data2");
    assert_eq!(b.init["packages"], json!({"a": null, "b": null, "c": null}));
}

#[test]
fn conditions_hide_packages() {
    let t = Tree::new();
    let here = t.path("home").display().to_string();
    let nowhere = t.path("nowhere").display().to_string();
    t.package(
        "data1",
        "shown",
        json!({"conditions": [{"path-exists": here}]}),
    );
    t.package(
        "data1",
        "gone",
        json!({"conditions": [{"path-exists": nowhere}]}),
    );
    t.package(
        "data1",
        "absent",
        json!({"conditions": [{"path-not-exists": nowhere}]}),
    );
    t.package(
        "data1",
        "present",
        json!({"conditions": [{"path-not-exists": here}]}),
    );
    t.package(
        "data1",
        "any",
        json!({"conditions": [{"any": [{"path-exists": nowhere}, {"path-exists": here}]}]}),
    );
    t.package(
        "data1",
        "none",
        json!({"conditions": [{"any": [{"path-exists": nowhere}]}]}),
    );
    t.package(
        "data1",
        "future",
        json!({"conditions": [{"some-new-predicate": 1}]}),
    );
    // The preferred package's conditions fail: the next one by priority is served.
    t.package(
        "data1",
        "x",
        json!({"priority": 9, "conditions": [{"path-exists": nowhere}], "from": "high"}),
    );
    t.package("data2", "x", json!({"from": "low"}));
    let mut b = t.bridge();
    assert_eq!(
        b.init["packages"],
        json!({"shown": null, "absent": null, "any": null, "future": null, "x": null})
    );
    let m: Value = serde_json::from_slice(&get(&mut b, "/manifests.json", json!({})).body).unwrap();
    assert_eq!(m["x"]["from"], "low");
}

#[test]
fn requires_is_checked_against_the_bridge_version() {
    let t = Tree::new();
    t.package("data1", "old", json!({"requires": {"cockpit": "239"}}));
    t.package("data1", "new", json!({"requires": {"cockpit": "99999"}}));
    t.package("data1", "dotted", json!({"requires": {"cockpit": "337.1"}}));
    t.package("data1", "other", json!({"requires": {"something": "1"}}));
    t.package("data1", "badtype", json!({"requires": {"cockpit": 1}}));
    let b = t.bridge();
    assert_eq!(b.init["packages"], json!({"old": null}));
}

#[test]
fn names_must_follow_the_rules() {
    let t = Tree::new();
    t.package("data1", "good_1", json!({}));
    t.package("data1", "with-dash", json!({}));
    t.package("data1", "has.dot", json!({}));
    t.package("data1", "renamed", json!({"name": "has space"}));
    t.package("data1", "wrongtype", json!({"name": 5}));
    t.package("data1", "badprio", json!({"priority": "high"}));
    t.write("data1/cockpit/notjson/manifest.json", "{");
    t.write("data1/cockpit/notobject/manifest.json", "[]");
    let dir = t.package("data1", "files", json!({}));
    std::fs::write(dir.join("a b.txt"), "x").unwrap();
    std::fs::write(dir.join("ok.txt"), "ok").unwrap();
    std::fs::write(t.path("data1/cockpit/secret.txt"), "secret").unwrap();
    let mut b = t.bridge();
    assert_eq!(
        b.init["packages"],
        json!({"good_1": null, "with-dash": null, "files": null})
    );
    assert_eq!(get(&mut b, "/files/ok.txt", json!({})).status, 200);
    for bad in [
        "/files/a b.txt",
        "/files/../secret.txt",
        "/files/./ok.txt",
        "/files/manifest.json",
        "/nosuch/ok.txt",
        "/has.dot/manifest.json",
        "/other.json",
    ] {
        let r = get(&mut b, bad, json!({}));
        assert_eq!(r.status, 404, "{bad}: {r:?}");
        assert_eq!(r.reason, "ERROR");
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        assert!(r.text().contains("Not found"), "{}", r.text());
        assert!(r.close.get("problem").is_none());
    }
    for bad in ["/files//ok.txt", "/files/", "nolead"] {
        assert_eq!(get(&mut b, bad, json!({})).status, 400, "{bad}");
    }
}

#[test]
fn overrides_are_merge_patches_in_order() {
    let t = Tree::new();
    let dir = t.package(
        "data1",
        "sys",
        json!({"menu": {"logs": {"label": "Logs"}, "services": {"label": "Services", "order": 5}},
               "keep": 1, "tool": "${libexecdir}/cockpit-helper"}),
    );
    std::fs::write(
        dir.join("override.json"),
        json!({"menu": {"logs": null}, "beside": true, "keep": 2}).to_string(),
    )
    .unwrap();
    t.write(
        "etc/cockpit/sys.override.json",
        json!({"menu": {"services": {"order": -1}}, "etc": true, "keep": 3}).to_string(),
    );
    t.write(
        "config/cockpit/sys.override.json",
        json!({"user": true, "keep": 4, "beside": null}).to_string(),
    );
    // A broken override is ignored.
    t.package("data1", "other", json!({"a": 1}));
    t.write("etc/cockpit/other.override.json", "{not json");
    let mut b = t.bridge();
    let m: Value = serde_json::from_slice(&get(&mut b, "/manifests.json", json!({})).body).unwrap();
    let sys = &m["sys"];
    assert_eq!(
        sys["menu"],
        json!({"services": {"label": "Services", "order": -1}})
    );
    assert_eq!(sys["etc"], true);
    assert_eq!(sys["user"], true);
    assert_eq!(sys["keep"], 4);
    assert!(sys.get("beside").is_none(), "{sys}");
    let tool = sys["tool"].as_str().unwrap();
    let libexec = [
        "/usr/local/libexec",
        "/usr/libexec",
        "/usr/local/lib/cockpit",
        "/usr/lib/cockpit",
    ]
    .into_iter()
    .find(|d| Path::new(d).join("cockpit-askpass").exists())
    .unwrap_or("/nonexistent/libexec");
    assert_eq!(tool, format!("{libexec}/cockpit-helper"));
    assert_eq!(m["other"], json!({"a": 1}));
}

#[test]
fn files_are_negotiated_in_the_documented_order() {
    let t = Tree::new();
    let dir = t.package("data1", "p", json!({}));
    std::fs::write(dir.join("only.min.js"), "min").unwrap();
    std::fs::write(dir.join("both.js"), "plain").unwrap();
    std::fs::write(dir.join("both.min.js"), "min").unwrap();
    std::fs::write(dir.join("test.js"), "test.js").unwrap();
    std::fs::write(dir.join("page.html"), "page").unwrap();
    std::fs::write(dir.join("page.de.html"), "Seite").unwrap();
    std::fs::write(dir.join("page.pt_BR.html"), "pagina").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/deep.css"), "deep").unwrap();
    let gz = t.gzip("data1/cockpit/p/big.js.gz", b"zipped content\n");
    let mut b = t.bridge();
    let body = |b: &mut Bridge, path: &str, h: Value| {
        let r = get(b, path, h);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        r.text()
    };
    assert_eq!(body(&mut b, "/p/only.js", json!({})), "min");
    assert_eq!(body(&mut b, "/p/both.js", json!({})), "plain");
    // An extension too many is popped off.
    assert_eq!(body(&mut b, "/p/test.de.js", json!({})), "test.js");
    assert_eq!(body(&mut b, "/p/sub/deep.css", json!({})), "deep");
    let fwd = |lang: &str| json!({"Accept-Language": lang, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "h"});
    assert_eq!(body(&mut b, "/p/page.html", fwd("de-at, en")), "Seite");
    assert_eq!(body(&mut b, "/p/page.html", fwd("pt-br")), "pagina");
    assert_eq!(body(&mut b, "/p/page.html", fwd("fr")), "page");
    assert_eq!(body(&mut b, "/p/page.html", fwd("en, de")), "page");

    // `.gz`: served as it is with Content-Encoding, or unzipped for a client that refuses gzip.
    let r = get(&mut b, "/p/big.js", json!({"Accept-Encoding": "gzip, br"}));
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    assert_eq!(r.header("Content-Type"), Some("text/javascript"));
    assert_eq!(r.body, gz);
    let r = get(&mut b, "/p/big.js", json!({}));
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    assert_eq!(r.body, gz);
    let r = get(&mut b, "/p/big.js", json!({"Accept-Encoding": "identity"}));
    assert_eq!(r.header("Content-Encoding"), None);
    assert_eq!(r.text(), "zipped content\n");
    assert_eq!(get(&mut b, "/p/missing.js", json!({})).status, 404);
}

#[test]
fn po_js_follows_accept_language() {
    let t = Tree::new();
    let dir = t.package("data1", "p", json!({}));
    std::fs::write(dir.join("po.pt_BR.js"), "pt_BR").unwrap();
    std::fs::write(dir.join("po.fr.js"), "fr").unwrap();
    t.gzip("data1/cockpit/p/po.de.js.gz", b"de");
    let q = t.package("data1", "q", json!({}));
    std::fs::write(q.join("po.de.js"), "q-de;").unwrap();
    let mut b = t.bridge();
    let po = |b: &mut Bridge, lang: &str| {
        let r = get(
            b,
            "/p/po.js",
            json!({"Accept-Language": lang, "Accept-Encoding": "identity"}),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("text/javascript"));
        r.text()
    };
    assert_eq!(po(&mut b, "pt-BR"), "pt_BR");
    assert_eq!(po(&mut b, "pt-br;q=0.2, fr;q=0.8"), "fr");
    assert_eq!(po(&mut b, "es, de;q=0.5"), "de");
    assert_eq!(po(&mut b, "de-ch"), "de");
    // Nothing for the language, or English first: an empty script, not a 404.
    assert_eq!(po(&mut b, "ja"), "");
    assert_eq!(po(&mut b, "en, de"), "");
    assert_eq!(po(&mut b, ""), "");
    let r = get(&mut b, "/p/po.js", json!({"Accept-Language": "de"}));
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));

    // `*/po.js`: every package's, unzipped, by package name.
    let r = get(&mut b, "/*/po.js", json!({"Accept-Language": "de"}));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Encoding"), None);
    assert_eq!(r.text(), "deq-de;");
    assert_eq!(get(&mut b, "/*/po.js", json!({})).text(), "");
}

#[test]
fn manifests_js_and_their_translations() {
    let t = Tree::new();
    let dir = t.package("data1", "p", json!({"menu": {"i": {"label": "P"}}}));
    t.gzip("data1/cockpit/p/po.manifest.de.js.gz", b"P_DE;");
    std::fs::write(dir.join("po.de.js"), "not this one").unwrap();
    // Without po.manifest files, the po files stand in for them.
    let q = t.package("data1", "q", json!({}));
    std::fs::write(q.join("po.de.js"), "Q_DE;").unwrap();
    let base = t.package("data1", "base1", json!({}));
    std::fs::write(base.join("po.de.js"), "BASE;").unwrap();
    let mut b = t.bridge();
    let manifests: Value =
        serde_json::from_slice(&get(&mut b, "/manifests.json", json!({})).body).unwrap();
    let data_of = |js: &str| -> Value {
        let start = js.find("}(this, ").expect("the wrapper") + "}(this, ".len();
        let end = js.rfind("))").unwrap();
        serde_json::from_str(&js[start..end]).unwrap()
    };
    let r = get(&mut b, "/manifests.js", json!({"Accept-Language": "de"}));
    assert_eq!(r.header("Content-Type"), Some("text/javascript"));
    let js = r.text();
    assert!(js.contains("cockpit.manifests = data;"), "{js}");
    assert!(!js.contains("P_DE"), "{js}");
    assert_eq!(data_of(&js), manifests);
    let js = get(
        &mut b,
        "/manifests-i18n.js",
        json!({"Accept-Language": "de"}),
    )
    .text();
    assert!(js.starts_with("P_DE;\nQ_DE;\n"), "{js}");
    assert!(!js.contains("BASE"), "{js}");
    assert_eq!(data_of(&js), manifests);
    let js = get(
        &mut b,
        "/manifests-i18n.js",
        json!({"Accept-Language": "fr"}),
    )
    .text();
    assert!(js.starts_with("\n\n"), "{js}");
    assert_eq!(data_of(&js), manifests);
}

#[test]
fn html_pages_get_a_content_security_policy() {
    let t = Tree::new();
    let dir = t.package("data1", "plain", json!({}));
    std::fs::write(dir.join("index.html"), "<p>").unwrap();
    std::fs::write(dir.join("code.js"), "1").unwrap();
    let own = t.package(
        "data1",
        "own",
        json!({"content-security-policy": "img-src 'self' data: blob:; frame-src 'self'"}),
    );
    std::fs::write(own.join("index.html"), "<p>").unwrap();
    let ws = t.package(
        "data1",
        "ws",
        json!({"content-security-policy": "connect-src 'self' wss://elsewhere"}),
    );
    std::fs::write(ws.join("index.html"), "<p>").unwrap();
    let mut b = t.bridge();
    let https = json!({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "myhost:9090"});
    let r = get(&mut b, "/plain/index.html", https.clone());
    assert_eq!(r.header("Content-Type"), Some("text/html"));
    assert_eq!(
        r.header("Content-Security-Policy"),
        Some(
            "default-src 'self'; connect-src wss://myhost:9090 'self'; form-action 'self'; \
             base-uri 'self'; object-src 'none'; font-src 'self' data:; img-src 'self' data:; \
             block-all-mixed-content"
        )
    );
    let r = get(
        &mut b,
        "/plain/index.html",
        json!({"X-Forwarded-Proto": "http", "X-Forwarded-Host": "h"}),
    );
    assert!(r
        .header("Content-Security-Policy")
        .unwrap()
        .contains("connect-src ws://h 'self';"));
    let r = get(&mut b, "/own/index.html", https.clone());
    assert_eq!(
        r.header("Content-Security-Policy"),
        Some(
            "default-src 'self'; connect-src wss://myhost:9090 'self'; form-action 'self'; \
             base-uri 'self'; object-src 'none'; font-src 'self' data:; \
             img-src 'self' data: blob:; frame-src 'self'; block-all-mixed-content"
        )
    );
    // The manifest's own connect-src needs no forwarded headers.
    let r = get(&mut b, "/ws/index.html", json!({}));
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Security-Policy")
        .unwrap()
        .contains("connect-src 'self' wss://elsewhere;"));
    // Scripts have none; HTML without the forwarded headers is a bad request.
    let r = get(&mut b, "/plain/code.js", json!({}));
    assert_eq!(r.header("Content-Security-Policy"), None);
    let r = get(
        &mut b,
        "/plain/index.html",
        json!({"X-Forwarded-Host": "h"}),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Invalid host or protocol header"));
}

#[test]
fn errors_are_http_statuses() {
    let t = Tree::new();
    let dir = t.package("data1", "p", json!({}));
    std::fs::write(dir.join("a.txt"), "a").unwrap();
    let mut b = t.bridge();
    // Another method: 400 at once (after `ready`, as every channel's data).
    let r = request(&mut b, "post", "/p/a.txt", json!({}), "POST");
    assert_eq!(r.status, 400);
    assert!(r.ready);
    assert!(
        r.text().contains("Unsupported HTTP method POST"),
        "{}",
        r.text()
    );
    assert!(r.close.get("problem").is_none());
    // Data in the request: 400.
    b.open(
        "d",
        json!({"payload": "http-stream1", "internal": "packages", "method": "GET",
               "path": "/p/a.txt", "binary": "raw"}),
    );
    b.data("d", b"body");
    let (close, data) = b.until_close("d");
    let text = String::from_utf8_lossy(&data);
    assert!(text.contains("\"status\":400"), "{text}");
    assert!(text.contains("Received unexpected data"), "{text}");
    assert!(close.get("problem").is_none());
    // Other http-stream1 channels are not served.
    b.open(
        "x",
        json!({"payload": "http-stream1", "method": "GET", "path": "/", "port": 1}),
    );
    let (close, _) = b.until_close("x");
    assert_eq!(close["problem"], "not-supported");
    // Plain text channels work too.
    b.open(
        "t",
        json!({"payload": "http-stream1", "internal": "packages", "method": "GET",
               "path": "/p/a.txt"}),
    );
    b.control(json!({"command": "done", "channel": "t"}));
    let (close, data) = b.until_close("t");
    assert!(close.get("problem").is_none(), "{close}");
    assert!(data.ends_with(b"}a"), "{}", String::from_utf8_lossy(&data));
}

#[test]
fn packages_option_lists_them_as_cockpit_bridge_does() {
    let t = Tree::new();
    t.package(
        "data1",
        "systemd",
        json!({"name": "system",
               "menu": {"index": {"label": "Overview"}, "logs": {"label": "Logs"}},
               "tools": {"terminal": {"label": "Terminal"}}}),
    );
    t.package("data1", "base1", json!({}));
    t.package(
        "data2",
        "averyveryverylongpackagename",
        json!({"menu": {"a": {"label": "A label long enough to pass forty characters"}}}),
    );
    let listed = t.list();
    let d1 = t.path("data1/cockpit").display().to_string();
    let d2 = t.path("data2/cockpit").display().to_string();
    assert_eq!(
        listed,
        format!(
            "{:<20} {:<40} {d2}/averyveryverylongpackagename\n\
             {:<20} {:<40} {d1}/base1\n\
             {:<20} {:<40} {d1}/systemd\n",
            "averyveryverylongpac",
            "A label long enough to pass forty charac",
            "base1",
            "",
            "system",
            "Overview, Logs, Terminal",
        )
    );
}
