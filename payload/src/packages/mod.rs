//! Cockpit packages: the web pages, scripts and translations that Cockpit's front end loads
//! from the machine the bridge runs on, found and served as Cockpit's own bridges do.
//!
//! - [`manifest`]: finding packages and reading their manifests (`PackagesLoader` in
//!   Cockpit 337's `src/cockpit/packages.py`).
//! - [`negotiate`]: which file answers a request path (`doc/guide/packages.xml`, "Content
//!   Negotiation"), and `Accept-Language`.
//! - [`channel`]: the `http-stream1` channel with `internal: "packages"`
//!   (`src/cockpit/channels/packages.py`).
//!
//! [`Packages::load`] gives the packages the environment names; [`Packages::load_path`]
//! answers one request path with a [`Document`] or an [`HttpError`].

pub(crate) mod channel;
mod gzip;
pub mod manifest;
pub mod negotiate;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

pub use gzip::{gunzip, GzipError};
pub use manifest::{Dirs, Manifest, COCKPIT_VERSION};

/// One package being served.
#[derive(Debug, Clone)]
pub struct Package {
    /// Its name, directory, priority and (patched) manifest.
    pub manifest: Manifest,
}

impl Package {
    /// The package's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The package's directory.
    pub fn path(&self) -> &Path {
        &self.manifest.path
    }

    /// The translation file of `kind` for the first of `locales` that has one: among the
    /// files `po.LOCALE.js[.gz]` (`kind` "po") or `po.manifest.LOCALE.js[.gz]` (`kind`
    /// "po.manifest") at the top of the package, with `LOCALE` compared in lower case and
    /// `-` for `_` (as `Accept-Language` writes it). Without any `po.manifest` file, the `po`
    /// files stand in for them (as in Cockpit, for packages built before those existed).
    fn translation_file(&self, kind: &str, locales: &[String]) -> Option<String> {
        // (is a po.manifest file, locale, file name)
        let mut files: Vec<(bool, String, String)> = Vec::new();
        for entry in std::fs::read_dir(self.path()).ok()?.filter_map(|e| e.ok()) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let stem = name.strip_suffix(".gz").unwrap_or(&name);
            let Some(stem) = stem.strip_suffix(".js") else {
                continue;
            };
            let (manifest, locale) = if let Some(l) = stem.strip_prefix("po.manifest.") {
                (true, l)
            } else if let Some(l) = stem.strip_prefix("po.") {
                (false, l)
            } else {
                continue;
            };
            if locale.is_empty() || locale.contains('.') {
                continue;
            }
            let locale = locale.to_ascii_lowercase().replace('_', "-");
            files.push((manifest, locale, name));
        }
        let want_manifest = kind == "po.manifest" && files.iter().any(|f| f.0);
        locales.iter().find_map(|locale| {
            files
                .iter()
                .find(|(manifest, l, _)| *manifest == want_manifest && l == locale)
                .map(|f| f.2.clone())
        })
    }

    /// The translation of `kind` for the first of `locales` that has one: an empty
    /// `text/javascript` document when none has (Cockpit answers so rather than 404).
    fn translation(&self, kind: &str, locales: &[String]) -> Document {
        match self.translation_file(kind, locales) {
            Some(name) => {
                let gzip = name.ends_with(".gz");
                self.file_document(&name, gzip)
            }
            None => Document::bytes(Vec::new(), "text/javascript"),
        }
    }

    /// The document for the file `name` (relative, as found), served as `Content-Type` of its
    /// name without `.gz`.
    fn file_document(&self, name: &str, gzip: bool) -> Document {
        let shown = if gzip {
            name.strip_suffix(".gz").unwrap_or(name)
        } else {
            name
        };
        let content_type = negotiate::content_type(shown);
        Document {
            body: Body::File(self.path().join(name)),
            content_type,
            gzip,
            csp: content_type
                .starts_with("text/html")
                .then(|| content_security_policy(self.manifest.csp())),
        }
    }

    /// The file that answers `path` (relative to the package, already checked), negotiated
    /// for `language`.
    fn negotiate_file(&self, path: &str, language: Option<&str>) -> Option<Document> {
        negotiate::candidates(path, language)
            .into_iter()
            .find(|c| self.path().join(&c.name).is_file())
            .map(|c| self.file_document(&c.name, c.gzip))
    }
}

/// The `Content-Security-Policy` of an HTML page of a package whose manifest has `policy`:
/// Cockpit's defaults, each directive of `policy` replacing the default of the same name,
/// then `block-all-mixed-content` (`Package.get_content_security_policy` in Cockpit 337).
/// `connect-src 'self';` is completed with the WebSocket origin when the page is served.
pub fn content_security_policy(policy: &str) -> String {
    let mut directives: Vec<(String, String)> = [
        ("default-src", "'self'"),
        ("connect-src", "'self'"),
        ("form-action", "'self'"),
        ("base-uri", "'self'"),
        ("object-src", "'none'"),
        ("font-src", "'self' data:"),
        ("img-src", "'self' data:"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for item in policy.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item.split_once(' ').unwrap_or((item, ""));
        match directives.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => directives.push((key.to_owned(), value.to_owned())),
        }
    }
    let mut out = String::new();
    for (k, v) in directives {
        let _ = write!(out, "{k} {v}; ");
    }
    out.push_str("block-all-mixed-content");
    out
}

/// What a document's body is.
#[derive(Debug, Clone)]
pub enum Body {
    /// A file's content, read when it is sent.
    File(PathBuf),
    /// Content made by the bridge.
    Bytes(Vec<u8>),
}

/// One answer to a request path.
#[derive(Debug, Clone)]
pub struct Document {
    pub body: Body,
    pub content_type: &'static str,
    /// The body is gzip data (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// The page's `Content-Security-Policy` (HTML only), before the WebSocket origin is put
    /// in.
    pub csp: Option<String>,
}

impl Document {
    fn bytes(data: Vec<u8>, content_type: &'static str) -> Document {
        Document {
            body: Body::Bytes(data),
            content_type,
            gzip: false,
            csp: None,
        }
    }

    /// The body's bytes, unzipped when it is gzip data and `unzip` holds. A file larger than
    /// [`MAX_READ`] is an error (files are sent from disk as they are read; only what the
    /// bridge unzips or puts together is held whole).
    pub fn read(&self, unzip: bool) -> Result<Vec<u8>, HttpError> {
        let data = match &self.body {
            Body::Bytes(data) => return Ok(data.clone()),
            Body::File(path) => read_capped(path).map_err(|e| HttpError::io(&e))?,
        };
        if self.gzip && unzip {
            return gunzip(&data).map_err(|e| HttpError::new(500, format!("Internal error: {e}")));
        }
        Ok(data)
    }
}

/// The most the bridge reads of one file into memory, and unzips from one file.
pub const MAX_READ: usize = gzip::MAX_SIZE;

/// The content of `path`, if it is at most [`MAX_READ`] bytes.
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_READ as u64 + 1)
        .read_to_end(&mut data)?;
    if data.len() > MAX_READ {
        return Err(std::io::Error::other(format!(
            "{}: larger than {MAX_READ} bytes",
            path.display()
        )));
    }
    Ok(data)
}

/// A request that is answered with an HTTP error page: status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found() -> HttpError {
        HttpError::new(404, "Not found")
    }

    /// An error reading a file: 404 when it is gone, 500 otherwise (as Cockpit 337).
    pub fn io(err: &std::io::Error) -> HttpError {
        match err.kind() {
            std::io::ErrorKind::NotFound => HttpError::not_found(),
            _ => HttpError::new(500, format!("Internal error: {err}")),
        }
    }
}

/// The packages of one machine and user, by name.
#[derive(Debug, Clone, Default)]
pub struct Packages {
    packages: BTreeMap<String, Package>,
}

/// The wrapper of `manifests.js`, before and after the manifests (Cockpit 337's).
const MANIFESTS_JS_HEAD: &str = "
            (function (root, data) {
                if (typeof define === 'function' && define.amd) {
                    define(data);
                }

                if (typeof cockpit === 'object') {
                    cockpit.manifests = data;
                } else {
                    root.manifests = data;
                }
            }(this, ";
const MANIFESTS_JS_TAIL: &str = "))";

impl Packages {
    /// The packages in the directories the environment names (XDG Base Directory variables).
    pub fn load() -> Packages {
        Packages::load_from(&Dirs::from_env())
    }

    /// The packages in `dirs`.
    pub fn load_from(dirs: &Dirs) -> Packages {
        let mut packages = BTreeMap::new();
        for m in manifest::select(manifest::load_manifests(dirs)) {
            packages.insert(m.name.clone(), Package { manifest: m });
        }
        Packages { packages }
    }

    /// The packages, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Package> {
        self.packages.values()
    }

    /// The package called `name`.
    pub fn get(&self, name: &str) -> Option<&Package> {
        self.packages.get(name)
    }

    /// `{"name": null, ...}`, for the bridge's `init`.
    pub fn init_field(&self) -> Value {
        let mut map = Map::new();
        for name in self.packages.keys() {
            map.insert(name.clone(), Value::Null);
        }
        Value::Object(map)
    }

    /// `{"name": manifest, ...}`, as `/manifests.json` and the internal bus's
    /// `cockpit.Packages.Manifests` give it.
    pub fn manifests(&self) -> Value {
        let mut map = Map::new();
        for (name, package) in &self.packages {
            map.insert(name.clone(), Value::Object(package.manifest.value.clone()));
        }
        Value::Object(map)
    }

    /// What `--packages` prints: a line per package, its name, the labels of its menu
    /// entries and tools, and its directory, in the columns of `cockpit-bridge --packages`.
    pub fn show(&self) -> String {
        let mut out = String::new();
        for package in self.packages.values() {
            let labels: Vec<&str> = ["menu", "tools"]
                .iter()
                .filter_map(|key| package.manifest.value.get(*key)?.as_object())
                .flat_map(|items| items.values())
                .filter_map(|item| item.get("label")?.as_str())
                .collect();
            let labels = labels.join(", ");
            let _ = writeln!(
                out,
                "{:<20} {:<40} {}",
                clip(package.name(), 20),
                clip(&labels, 40),
                package.path().display()
            );
        }
        out
    }

    /// Answer a request for `path` (the part of the URL after the host, such as
    /// `/shell/index.html` or `/manifests.json`) with the request's `headers`.
    pub fn load_path(
        &self,
        path: &str,
        headers: &Map<String, Value>,
    ) -> Result<Document, HttpError> {
        let header = |name: &str| headers.get(name).and_then(Value::as_str).unwrap_or("");
        let Some(rest) = path.strip_prefix('/') else {
            return Err(HttpError::new(400, format!("Invalid HTTP path {path}")));
        };
        let (package, file) = match rest.split_once('/') {
            Some((package, file)) => (Some(package), file),
            None => (None, rest),
        };
        if file.is_empty() || file.split('/').any(str::is_empty) {
            return Err(HttpError::new(400, format!("Invalid HTTP path {path}")));
        }
        let locales = negotiate::accept_language(header("Accept-Language"));
        match package {
            None => match file {
                "manifests.json" => Ok(Document::bytes(
                    self.manifests().to_string().into_bytes(),
                    "application/json",
                )),
                "manifests.js" => Ok(self.manifests_js(None)),
                "manifests-i18n.js" => Ok(self.manifests_js(Some(&locales))),
                _ => Err(HttpError::not_found()),
            },
            Some("*") if file == "po.js" => Ok(self.all_po_js(&locales)),
            Some(name) => {
                let package = self.packages.get(name).ok_or_else(HttpError::not_found)?;
                if !file.split('/').all(manifest::is_file_name) || file == "manifest.json" {
                    return Err(HttpError::not_found());
                }
                match file {
                    "po.js" => Ok(package.translation("po", &locales)),
                    "po.manifest.js" => Ok(package.translation("po.manifest", &locales)),
                    _ => package
                        .negotiate_file(file, locales.first().map(String::as_str))
                        .ok_or_else(HttpError::not_found),
                }
            }
        }
    }

    /// `manifests.js`, and with `locales` `manifests-i18n.js`: the translations of every
    /// package's manifest (but `static`'s and `base1`'s) first, then the manifests.
    fn manifests_js(&self, locales: Option<&[String]>) -> Document {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        if let Some(locales) = locales {
            for package in self.packages.values() {
                if matches!(package.name(), "static" | "base1") {
                    continue;
                }
                let doc = package.translation("po.manifest", locales);
                chunks.push(doc.read(true).unwrap_or_default());
            }
        }
        let mut wrapped = MANIFESTS_JS_HEAD.as_bytes().to_vec();
        wrapped.extend_from_slice(self.manifests().to_string().as_bytes());
        wrapped.extend_from_slice(MANIFESTS_JS_TAIL.as_bytes());
        chunks.push(wrapped);
        Document::bytes(chunks.join(&b'\n'), "text/javascript")
    }

    /// `*/po.js`, which the shell of Cockpit 287 loads: every package's `po.js` for the
    /// preferred language, by package name, unzipped and concatenated (Cockpit's C bridge).
    fn all_po_js(&self, locales: &[String]) -> Document {
        let mut out = Vec::new();
        for package in self.packages.values() {
            let doc = package.translation("po", locales);
            out.extend(doc.read(true).unwrap_or_default());
        }
        Document::bytes(out, "text/javascript")
    }
}

/// At most `width` characters of `text` (C's `%-20.20s` cuts, too).
fn clip(text: &str, width: usize) -> &str {
    match text.char_indices().nth(width) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// The packages this bridge serves, loaded once and shared (the `init`, the packages
/// channel, the internal bus); [`reload`] loads them again.
static CURRENT: Mutex<Option<Arc<Packages>>> = Mutex::new(None);

/// The packages this bridge serves (loaded on first use).
pub fn current() -> Arc<Packages> {
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    current
        .get_or_insert_with(|| Arc::new(Packages::load()))
        .clone()
}

/// Load the packages again (Cockpit's `cockpit.Packages.Reload`); returns them.
pub fn reload() -> Arc<Packages> {
    let fresh = Arc::new(Packages::load());
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_defaults_and_overrides() {
        assert_eq!(
            content_security_policy(""),
            "default-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'self'; \
             object-src 'none'; font-src 'self' data:; img-src 'self' data:; \
             block-all-mixed-content"
        );
        assert_eq!(
            content_security_policy("img-src 'self' data: blob:; frame-src 'self' ;"),
            "default-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'self'; \
             object-src 'none'; font-src 'self' data:; img-src 'self' data: blob:; \
             frame-src 'self'; block-all-mixed-content"
        );
    }

    #[test]
    fn clipping() {
        assert_eq!(clip("abc", 2), "ab");
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("äöü", 2), "äö");
    }
}
