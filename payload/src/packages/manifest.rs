//! Finding packages and reading their manifests, as Cockpit's `PackagesLoader` does
//! (`src/cockpit/packages.py` in Cockpit 337) and as Cockpit's package documentation
//! (`doc/guide/packages.xml`) specifies.
//!
//! - Data directories: `$XDG_DATA_HOME` (default `~/.local/share`), then `$XDG_DATA_DIRS`
//!   (default `/usr/local/share:/usr/share`); every `cockpit/<dir>/manifest.json` under each.
//! - A package's name is its manifest's `name`, else its directory's name. Of several
//!   packages with one name, the one with the highest `priority` (default 1) whose
//!   `conditions` hold is served; with equal priorities, the first data directory wins.
//! - The manifest is patched before anything reads it: `override.json` beside it, then
//!   `cockpit/<dir>.override.json` in the first of `$XDG_CONFIG_DIRS` (default `/etc`) that
//!   has it, then `$XDG_CONFIG_HOME/cockpit/<dir>.override.json` (default `~/.config`), each a
//!   JSON merge patch (RFC 7396); then `${libexecdir}` is replaced everywhere.
//! - `requires: {"cockpit": "N"}` hides the package when N is newer than
//!   [`COCKPIT_VERSION`]; any other requirement hides it too.
//! - Names follow the documented rules ([`is_package_name`], [`is_file_name`]); a package
//!   whose name or directory name breaks them is skipped (as Cockpit's C bridge does), as are manifests that are not JSON objects or whose
//!   `name`, `priority`, `content-security-policy` or `conditions` have the wrong type.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The Cockpit release whose bridge behaviour ferry's bridge follows, for `requires`.
pub const COCKPIT_VERSION: &str = "337";

/// Where packages and their configuration are looked up.
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    /// Data directories, in order of preference (`cockpit/` is looked up under each).
    pub data: Vec<PathBuf>,
    /// `$XDG_CONFIG_DIRS` (system configuration, e.g. `/etc`).
    pub config: Vec<PathBuf>,
    /// `$XDG_CONFIG_HOME` (e.g. `~/.config`), if there is a home.
    pub config_home: Option<PathBuf>,
}

impl Dirs {
    /// The directories the environment names, with the XDG Base Directory defaults.
    pub fn from_env() -> Dirs {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from);
        let mut data = Vec::new();
        match var("XDG_DATA_HOME") {
            Some(dir) => data.push(PathBuf::from(dir)),
            None => data.extend(home.as_ref().map(|h| h.join(".local/share"))),
        }
        match var("XDG_DATA_DIRS") {
            Some(dirs) => data.extend(std::env::split_paths(&dirs)),
            None => data.extend(["/usr/local/share", "/usr/share"].map(PathBuf::from)),
        }
        let config = match var("XDG_CONFIG_DIRS") {
            Some(dirs) => std::env::split_paths(&dirs).collect(),
            None => vec![PathBuf::from("/etc")],
        };
        let config_home = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".config")));
        Dirs {
            data,
            config,
            config_home,
        }
    }
}

/// A package name: ASCII letters, digits, `_` and `-` (the documentation allows `_`;
/// Cockpit's C bridge also takes `-`, which installed packages such as `file-sharing` use).
pub fn is_package_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A file or directory name inside a package: ASCII letters, digits, `-`, `_`, `.` and `,`,
/// and not `.` or `..`.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,".contains(&b))
}

/// One manifest that was read and passed its checks (not yet its `conditions`).
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The package's name.
    pub name: String,
    /// The package's directory.
    pub path: PathBuf,
    /// `priority` (default 1).
    pub priority: i64,
    /// The manifest, with overrides applied and `${libexecdir}` replaced.
    pub value: Map<String, Value>,
}

impl Manifest {
    /// Check a patched manifest's fields; `Err` says why it is not usable.
    fn new(path: PathBuf, value: Map<String, Value>) -> Result<Manifest, String> {
        let name = match value.get("name") {
            None => path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned(),
            Some(Value::String(name)) => name.clone(),
            Some(_) => return Err("\"name\" is not a string".into()),
        };
        if !is_package_name(&name) {
            return Err(format!("invalid package name {name:?}"));
        }
        let priority = match value.get("priority") {
            None => 1,
            Some(Value::Number(n)) => n.as_i64().ok_or("\"priority\" is not an integer")?,
            Some(_) => return Err("\"priority\" is not an integer".into()),
        };
        if !matches!(
            value.get("content-security-policy"),
            None | Some(Value::String(_))
        ) {
            return Err("\"content-security-policy\" is not a string".into());
        }
        match value.get("conditions") {
            None => {}
            Some(Value::Array(list)) if list.iter().all(is_condition) => {}
            Some(_) => return Err("\"conditions\" is not a list of conditions".into()),
        }
        match value.get("requires") {
            None => {}
            Some(Value::Object(requires)) => {
                for (what, version) in requires {
                    if what != "cockpit" {
                        return Err(format!("non-cockpit requirement listed: {what}"));
                    }
                    let Some(version) = version.as_str() else {
                        return Err("required cockpit version is not a string".into());
                    };
                    if sortify_version(version) > sortify_version(COCKPIT_VERSION) {
                        return Err(format!("required cockpit version ({version}) not met"));
                    }
                }
            }
            Some(_) => return Err("\"requires\" is not an object".into()),
        }
        Ok(Manifest {
            name,
            path,
            priority,
            value,
        })
    }

    /// The package's own `content-security-policy`, or empty.
    pub fn csp(&self) -> &str {
        self.value
            .get("content-security-policy")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Every condition holds (an unknown predicate counts as holding, for forward
    /// compatibility, as in Cockpit).
    pub fn conditions_hold(&self) -> bool {
        match self.value.get("conditions") {
            Some(Value::Array(list)) => list.iter().all(condition_holds),
            _ => true,
        }
    }
}

/// A condition is an object with exactly one predicate.
fn is_condition(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.len() == 1)
}

/// `path-exists`, `path-not-exists` (on strings only; anything else fails the condition) and
/// `any` (a list of conditions, at least one of which holds).
fn condition_holds(condition: &Value) -> bool {
    let Some((predicate, value)) = condition.as_object().and_then(|o| o.iter().next()) else {
        return false;
    };
    match predicate.as_str() {
        "path-exists" => value.as_str().is_some_and(|p| Path::new(p).exists()),
        "path-not-exists" => value.as_str().is_some_and(|p| !Path::new(p).exists()),
        "any" => value
            .as_array()
            .is_some_and(|list| list.iter().any(|c| is_condition(c) && condition_holds(c))),
        _ => true,
    }
}

/// Cockpit's `sortify_version`: every dotted part zero-padded to 8 characters, so that
/// versions compare as strings.
fn sortify_version(version: &str) -> String {
    version
        .split('.')
        .map(|part| format!("{part:0>8}"))
        .collect::<Vec<_>>()
        .join(".")
}

/// RFC 7396 JSON merge patch: `patch` applied to `target`.
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(slot) = slot {
                    merge_patch(slot, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Read a JSON object from `path`: `None` when the file does not exist, or is not a JSON
/// object (logged).
fn read_object(path: &Path) -> Option<Map<String, Value>> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Some(map),
        Ok(_) => {
            log(format_args!("{}: not a JSON object", path.display()));
            None
        }
        Err(e) => {
            log(format_args!("{}: {e}", path.display()));
            None
        }
    }
}

/// A warning on stderr, which Cockpit's front end keeps in the session's log.
fn log(args: std::fmt::Arguments<'_>) {
    eprintln!("ferry-bridge: packages: {args}");
}

/// The override files of the package in `dir`, in the order they apply.
fn override_files(dir: &Path, dirs: &Dirs) -> Vec<PathBuf> {
    let mut files = vec![dir.join("override.json")];
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return files;
    };
    let file = format!("{name}.override.json");
    // Cockpit's `lookup_config`: the first configuration directory that has the file.
    if let Some(found) = dirs
        .config
        .iter()
        .map(|c| c.join("cockpit").join(&file))
        .find(|p| p.exists())
    {
        files.push(found);
    }
    if let Some(home) = &dirs.config_home {
        files.push(home.join("cockpit").join(&file));
    }
    files
}

/// The directory that holds `cockpit-askpass`, as Cockpit's `get_libexecdir` finds it.
fn libexecdir() -> &'static str {
    [
        "/usr/local/libexec",
        "/usr/libexec",
        "/usr/local/lib/cockpit",
        "/usr/lib/cockpit",
    ]
    .into_iter()
    .find(|d| Path::new(d).join("cockpit-askpass").exists())
    .unwrap_or("/nonexistent/libexec")
}

/// `cockpit-askpass` found in `PATH`.
fn askpass_in_path() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("cockpit-askpass"))
        .find(|p| p.is_file())
        .and_then(|p| p.to_str().map(str::to_owned))
}

/// Replace `${libexecdir}` in every string of `value`; `${libexecdir}/cockpit-askpass`
/// becomes the `cockpit-askpass` in `PATH` when there is one (as Cockpit does).
fn patch_libexecdir(value: &mut Value) {
    match value {
        Value::String(s) if s.contains("${libexecdir}") => {
            if s.contains("${libexecdir}/cockpit-askpass") {
                if let Some(askpass) = askpass_in_path() {
                    *s = s.replace("${libexecdir}/cockpit-askpass", &askpass);
                }
            }
            *s = s.replace("${libexecdir}", libexecdir());
        }
        Value::Array(items) => items.iter_mut().for_each(patch_libexecdir),
        Value::Object(map) => map.values_mut().for_each(patch_libexecdir),
        _ => {}
    }
}

/// Every usable manifest under the data directories, in order: directory by directory, and
/// within one `cockpit/` directory by directory name.
pub fn load_manifests(dirs: &Dirs) -> Vec<Manifest> {
    let mut manifests = Vec::new();
    for data in &dirs.data {
        let root = data.join("cockpit");
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut names: Vec<PathBuf> = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            names.insert(names.partition_point(|p| *p < path), path);
        }
        for dir in names {
            let file = dir.join("manifest.json");
            if !file.is_file() {
                continue;
            }
            // The directory's name must be a package name too (Cockpit's C bridge).
            let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !is_package_name(dir_name) {
                log(format_args!(
                    "{}: invalid package directory name",
                    dir.display()
                ));
                continue;
            }
            let Some(mut value) = read_object(&file) else {
                continue;
            };
            for file in override_files(&dir, dirs) {
                if let Some(patch) = read_object(&file) {
                    merge_patch(&mut value, &patch);
                }
            }
            let mut patched = Value::Object(value);
            patch_libexecdir(&mut patched);
            let Value::Object(value) = patched else {
                continue;
            };
            match Manifest::new(dir, value) {
                Ok(manifest) => manifests.push(manifest),
                Err(why) => log(format_args!("{}: {why}", file.display())),
            }
        }
    }
    manifests
}

/// Of each name, the manifest to serve: of those whose conditions hold, the one with the
/// highest `priority`, and the first data directory's among equals. In order of first
/// appearance.
pub fn select(manifests: Vec<Manifest>) -> Vec<Manifest> {
    let mut chosen: Vec<Manifest> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for m in &manifests {
        if seen.contains(&m.name.as_str()) {
            continue;
        }
        seen.push(&m.name);
        let mut best: Option<&Manifest> = None;
        for candidate in manifests.iter().filter(|c| c.name == m.name) {
            if best.is_none_or(|b| candidate.priority > b.priority) && candidate.conditions_hold() {
                best = Some(candidate);
            }
        }
        chosen.extend(best.cloned());
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn merge_patch_is_rfc_7396() {
        // The examples of RFC 7396, appendix A.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({"a": "foo"}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = obj(target);
            merge_patch(&mut t, &obj(patch));
            assert_eq!(Value::Object(t), want);
        }
    }

    #[test]
    fn versions_compare_by_parts() {
        assert!(sortify_version("300") > sortify_version("265"));
        assert!(sortify_version("1000") > sortify_version("337"));
        assert!(sortify_version("337.1") > sortify_version("337"));
        assert_eq!(sortify_version("337"), sortify_version("337"));
    }

    #[test]
    fn names() {
        for ok in ["base1", "file-sharing", "my_pkg", "A9"] {
            assert!(is_package_name(ok), "{ok}");
        }
        for bad in ["", "a.b", "a b", "ä", "a/b"] {
            assert!(!is_package_name(bad), "{bad}");
        }
        for ok in ["index.html", "po.de.js.gz", "a,b", "x-y_z"] {
            assert!(is_file_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a%20", "ä.js", "a\\b"] {
            assert!(!is_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn conditions() {
        let holds = |v: Value| condition_holds(&v);
        assert!(holds(json!({"path-exists": "/"})));
        assert!(!holds(json!({"path-exists": "/nonexistent/x"})));
        assert!(holds(json!({"path-not-exists": "/nonexistent/x"})));
        assert!(!holds(json!({"path-exists": 1})));
        assert!(holds(json!({"something-new": "x"})));
        assert!(holds(
            json!({"any": [{"path-exists": "/nonexistent"}, {"path-exists": "/"}]})
        ));
        assert!(!holds(json!({"any": [{"path-exists": "/nonexistent"}]})));
        assert!(!holds(json!({"any": []})));
    }
}
