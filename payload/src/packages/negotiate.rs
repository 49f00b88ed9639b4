//! Content negotiation for package files: which file answers a request path, in which
//! language, and with which `Content-Type`.
//!
//! File names follow the order that Cockpit's package documentation lists
//! (`doc/guide/packages.xml`, "Content Negotiation") and that Cockpit's C bridge implements
//! (`cockpit_web_response_negotiation`): for `base.ext` and a language `ll-rr`, first
//! `base.ll_RR.ext`, `base.ll_RR.ext.gz`, `base.ll.ext`, `base.ll.ext.gz`, then `base.ext`,
//! `base.min.ext`, `base.ext.gz`, `base.min.ext.gz`; if none exists and `base` has an
//! extension of its own, that one is popped off and the list is tried again.
//!
//! Languages come from `Accept-Language` as Cockpit's Python bridge reads it
//! (`parse_accept_language`): q-values, each tag followed by its shorter prefixes, sorted by
//! q, cut where `en` appears.

/// A q-value (`0.8`, `1`, `.5`) in thousandths; `None` when it is not a plain decimal number.
/// (RFC 7231 allows at most three decimals; more are cut off.)
pub fn qvalue(text: &str) -> Option<u64> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        || whole.len() > 6
    {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut millis = whole * 1000;
    for (i, digit) in fraction.bytes().take(3).enumerate() {
        millis += u64::from(digit - b'0') * [100, 10, 1][i];
    }
    Some(millis)
}

/// The languages of an `Accept-Language` header, most preferred first, lower case, with
/// each tag's prefixes after it (`de-de` gives `de-de`, `de`), up to the first `en`.
pub fn accept_language(header: &str) -> Vec<String> {
    let mut with_q: Vec<(String, u64)> = Vec::new();
    for entry in header.split(',') {
        let entry = entry.trim().to_ascii_lowercase();
        let (locale, q) = match entry.split_once(";q=") {
            Some((locale, q)) => match qvalue(q) {
                Some(q) => (locale.to_owned(), q),
                None => continue,
            },
            None => (entry, 1000),
        };
        let mut locale = locale.as_str();
        while !locale.is_empty() {
            // Highest q first; among equal q-values in the order given (a stable sort).
            let at = with_q.partition_point(|(_, other)| *other >= q);
            with_q.insert(at, (locale.to_owned(), q));
            locale = locale.rsplit_once('-').map_or("", |(head, _)| head);
        }
    }
    let mut out: Vec<String> = Vec::new();
    for (locale, _) in with_q {
        if locale == "en" {
            break;
        }
        if !out.contains(&locale) {
            out.push(locale);
        }
    }
    out
}

/// A language tag as a locale name and its language alone: `de-de` gives `("de_DE",
/// Some("de"))`, `de` gives `("de", None)`.
fn locale_of(language: &str) -> (String, Option<String>) {
    match language.split_once('-') {
        Some((lang, region)) if !lang.is_empty() && !region.is_empty() => (
            format!("{lang}_{}", region.to_ascii_uppercase()),
            Some(lang.to_owned()),
        ),
        _ => (language.to_owned(), None),
    }
}

/// Where the extension of the last component of `name` starts (its `.`), if it has one that
/// is not the whole name.
fn extension_at(name: &str) -> Option<usize> {
    let start = name.rfind('/').map_or(0, |s| s + 1);
    match name[start..].rfind('.') {
        Some(0) | None => None,
        Some(dot) => Some(start + dot),
    }
}

/// One candidate file: its name relative to the package, and whether it is gzipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub gzip: bool,
}

/// The names to try for `path` (relative to the package), in order, for the preferred
/// `language` (a lower-case tag such as `de-de`, or `None`).
pub fn candidates(path: &str, language: Option<&str>) -> Vec<Candidate> {
    let (mut base, ext) = match extension_at(path) {
        Some(dot) => (path[..dot].to_owned(), &path[dot..]),
        None => (path.to_owned(), ""),
    };
    let locale = language.map(locale_of);
    let mut out = Vec::new();
    loop {
        let mut push = |name: String| {
            out.push(Candidate {
                gzip: false,
                name: name.clone(),
            });
            out.push(Candidate {
                name: name + ".gz",
                gzip: true,
            });
        };
        match &locale {
            Some((locale, Some(lang))) => {
                push(format!("{base}.{locale}{ext}"));
                push(format!("{base}.{lang}{ext}"));
            }
            Some((locale, None)) => push(format!("{base}.{locale}{ext}")),
            None => {}
        }
        // base.ext, base.min.ext, base.ext.gz, base.min.ext.gz
        let plain = format!("{base}{ext}");
        let min = format!("{base}.min{ext}");
        out.push(Candidate {
            name: plain.clone(),
            gzip: false,
        });
        out.push(Candidate {
            name: min.clone(),
            gzip: false,
        });
        out.push(Candidate {
            name: plain + ".gz",
            gzip: true,
        });
        out.push(Candidate {
            name: min + ".gz",
            gzip: true,
        });
        match extension_at(&base) {
            Some(dot) => base.truncate(dot),
            None => return out,
        }
    }
}

/// The `Content-Type` of a file name (without a `.gz`), as Python's `mimetypes` gives it to
/// Cockpit's Python bridge; `text/plain` for anything unknown.
pub fn content_type(name: &str) -> &'static str {
    let ext = extension_at(name).map_or("", |dot| &name[dot + 1..]);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html",
        "js" | "mjs" => "text/javascript",
        "css" => "text/css",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/vnd.microsoft.icon",
        "webp" => "image/webp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "eot" => "application/vnd.ms-fontobject",
        "wasm" => "application/wasm",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        _ => "text/plain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qvalues() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("0.8"), Some(800));
        assert_eq!(qvalue(" .25 "), Some(250));
        assert_eq!(qvalue("0.1234"), Some(123));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("x"), None);
        assert_eq!(qvalue("."), None);
        assert_eq!(qvalue("-1"), None);
    }

    #[test]
    fn accept_language_as_cockpit_reads_it() {
        assert_eq!(accept_language("de-de"), ["de-de", "de"]);
        assert_eq!(
            accept_language("fr;q=0.5, de-DE, en;q=0.9, ja;q=0.1"),
            ["de-de", "de"]
        );
        assert_eq!(accept_language("fr;q=0.5, de;q=0.7"), ["de", "fr"]);
        // Checked against Cockpit 337: `en` cuts the list where it appears.
        assert_eq!(accept_language("en-us, de"), ["en-us"]);
        assert_eq!(
            accept_language("zh-hant-tw"),
            ["zh-hant-tw", "zh-hant", "zh"]
        );
        assert_eq!(accept_language("de;q=x, pt-br"), ["pt-br", "pt"]);
        assert!(accept_language("").is_empty());
        assert!(accept_language("en").is_empty());
    }

    fn names(path: &str, language: Option<&str>) -> Vec<String> {
        candidates(path, language)
            .into_iter()
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn the_documented_order() {
        // doc/guide/packages.xml, "Content Negotiation".
        assert_eq!(
            names("test.de.js", None),
            [
                "test.de.js",
                "test.de.min.js",
                "test.de.js.gz",
                "test.de.min.js.gz",
                "test.js",
                "test.min.js",
                "test.js.gz",
                "test.min.js.gz",
            ]
        );
        assert_eq!(
            names("sub/index.html", Some("pt-br")),
            [
                "sub/index.pt_BR.html",
                "sub/index.pt_BR.html.gz",
                "sub/index.pt.html",
                "sub/index.pt.html.gz",
                "sub/index.html",
                "sub/index.min.html",
                "sub/index.html.gz",
                "sub/index.min.html.gz",
            ]
        );
        assert_eq!(
            names("README", Some("de")),
            [
                "README.de",
                "README.de.gz",
                "README",
                "README.min",
                "README.gz",
                "README.min.gz"
            ]
        );
        let gz: Vec<bool> = candidates("a.js", None).iter().map(|c| c.gzip).collect();
        assert_eq!(gz, [false, false, true, true]);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html");
        assert_eq!(content_type("po.de.js"), "text/javascript");
        assert_eq!(content_type("index.js.LICENSE.txt"), "text/plain");
        assert_eq!(content_type("fonts/x.woff2"), "font/woff2");
        assert_eq!(content_type("noext"), "text/plain");
    }
}
