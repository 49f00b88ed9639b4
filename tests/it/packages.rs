//! Packages from the machine ferry runs on, for a remote with none: the aarch64 busybox root
//! (nothing but `sh`) gets the web console's files from here, while its commands run there.

use std::path::PathBuf;

use serde_json::{json, Value};

use ferry_testbed::{require, Component};

use crate::harness::{Running, Test};

/// `ferry connect` into the aarch64 chroot with `--packages FROM`; its `init`, and a guard that
/// removes the cache the chroot got.
fn connect(from: &str) -> (Running, Value, impl Drop) {
    let root = ferry_testbed::aarch64_root();
    let cache = tempfile::tempdir().unwrap();
    /// Removes what the chroot got; the cache directory itself goes with its `TempDir`.
    struct Cleanup(PathBuf, #[allow(dead_code)] tempfile::TempDir);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let inside = root.join(cache.path().strip_prefix("/").unwrap());
    let hop = format!("exec:chroot {}", root.display());
    let mut ferry = Test::new()
        .cache_home(cache.path())
        .args(["connect", "--packages", from, &hop])
        .spawn();
    let (_, init) = ferry.recv_control();
    assert_eq!(init["command"], "init", "{init}");
    ferry.send_control(&json!({"command": "init", "version": 1, "host": "localhost"}));
    (ferry, init, Cleanup(inside, cache))
}

/// GET `path` from the packages channel: status and body.
fn get(ferry: &mut Running, id: &str, path: &str) -> (u64, Vec<u8>) {
    ferry.send_control(&json!({
        "command": "open", "channel": id, "payload": "http-stream1", "internal": "packages",
        "method": "GET", "path": path, "headers": {}, "binary": "raw",
    }));
    ferry.send_control(&json!({"command": "done", "channel": id}));
    let (mut head, mut body): (Option<Value>, Vec<u8>) = (None, Vec::new());
    loop {
        let (channel, payload) = ferry.recv();
        if channel == id {
            match head {
                None => head = Some(serde_json::from_slice(&payload).unwrap()),
                Some(_) => body.extend(payload),
            }
        } else if channel.is_empty() {
            let msg: Value = serde_json::from_slice(&payload).unwrap();
            if msg["command"] == "close" && msg["channel"] == id {
                let status = head.map_or(0, |h| h["status"].as_u64().unwrap_or(0));
                return (status, body);
            }
        }
    }
}

#[test]
fn a_remote_without_packages_gets_this_machines() {
    require!(Component::Aarch64);
    require!(Component::CockpitBridge);
    let (mut ferry, init, _cleanup) = connect("auto");
    // The remote has none; this machine has Cockpit's (287's, installed by the test bed).
    assert!(
        init["packages"]["shell"].is_null() && init["packages"].get("shell").is_some(),
        "{init}"
    );
    let (status, body) = get(&mut ferry, "p", "/manifests.json");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let manifests: Value = serde_json::from_slice(&body).unwrap();
    assert!(manifests["shell"].is_object(), "{manifests}");
    // Everything else still runs on the remote.
    assert_eq!(ferry.stream_output("u", &["uname", "-m"]), "aarch64\n");
    ferry.finish();
}

#[test]
fn packages_remote_keeps_the_remotes_own() {
    require!(Component::Aarch64);
    let (mut ferry, init, _cleanup) = connect("remote");
    assert!(
        init["packages"].as_object().is_none_or(|p| p.is_empty()),
        "{init}"
    );
    let (status, body) = get(&mut ferry, "p", "/manifests.json");
    assert!(status != 200 || !String::from_utf8_lossy(&body).contains("\"shell\""));
    ferry.finish();
}
