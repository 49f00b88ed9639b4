use std::sync::OnceLock;

/// The loader as written, for reading and for shellcheck.
pub const SOURCE: &str = include_str!("../stage1.sh");

/// The loader as sent: one line, comments dropped.
///
/// Login shells (bash, dash, zsh, fish, tcsh, ash) disagree about newlines, backslashes,
/// single quotes and `!` inside single quotes, so the sent form has none of them. The source
/// follows one rule that makes joining safe: a line ending in a word that continues a command
/// (`then`, `do`, `else`, `in`, `{`, `&&`, `||`, `|`, `;;`) is joined with a space, every other
/// line ends its command and is joined with `; `.
pub fn script() -> &'static str {
    static MINIFIED: OnceLock<String> = OnceLock::new();
    MINIFIED.get_or_init(|| minify(SOURCE))
}

fn minify(source: &str) -> String {
    const CONTINUES: [&str; 9] = ["then", "do", "else", "in", "{", "&&", "||", "|", ";;"];
    let mut out = String::with_capacity(source.len());
    let mut sep = "";
    for line in source.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push_str(sep);
        out.push_str(line);
        let last = line.rsplit(' ').next().unwrap_or(line);
        sep = if CONTINUES.contains(&last) { " " } else { "; " };
    }
    out
}

/// One run of the loader: a fresh nonce and the images the sender can offer.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub nonce: String,
    /// `(arch, sha256 hex of the raw image)` for every image the sender has.
    pub images: Vec<(String, String)>,
    /// How long [`send`](crate::send) waits for each line of the loader (the first one includes
    /// connecting and the remote's login scripts): [`DEFAULT_TIMEOUT`] unless changed.
    pub timeout: std::time::Duration,
}

/// How long the sender waits for the loader to speak, unless told otherwise.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Invocation {
    pub fn new(images: Vec<(String, String)>) -> Self {
        Invocation {
            nonce: new_nonce(),
            images,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The argument vector that runs the loader: `sh -c STAGE1 remote-sh NONCE ARCH=SHA...`.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            script().to_owned(),
            // `$0`: the name the remote shell gives its own errors ("remote-sh: 1: ...").
            "remote-sh".to_owned(),
            self.nonce.clone(),
        ];
        argv.extend(self.images.iter().map(|(a, h)| format!("{a}={h}")));
        argv
    }

    /// [`argv`](Self::argv) as one command line for a login shell (what `ssh` sends).
    ///
    /// Only the script needs quoting, and it contains no character that any supported login
    /// shell treats specially inside single quotes.
    pub fn command_line(&self) -> String {
        self.argv()
            .iter()
            .map(|word| {
                if word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=.,/".contains(&b))
                {
                    word.clone()
                } else {
                    format!("'{word}'")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The prefix of every line the loader prints.
    pub fn marker(&self) -> String {
        format!("ferry-{} ", self.nonce)
    }
}

fn new_nonce() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_form_survives_every_login_shell() {
        let s = script();
        for bad in ['\n', '\'', '\\', '`'] {
            assert!(!s.contains(bad), "script contains {bad:?}");
        }
        // csh-style history expansion leaves a `!` followed by a blank alone, even in quotes.
        assert!(
            !s.contains('!') || s.matches('!').count() == s.matches("! ").count(),
            "script contains a `!` that is not followed by a blank"
        );
        assert!(s.len() < 4096, "script is {} bytes", s.len());
        for joined_wrong in ["then;", "do;", "else;", "{;", "|;", ";;;"] {
            assert!(
                !s.contains(joined_wrong),
                "script contains {joined_wrong:?}"
            );
        }
    }

    #[test]
    fn minify_joins_by_rule() {
        let src = "# c\nif a; then\nb\nfi\ncase x in\ny) z ;;\nesac\nf() {\ng\n}\n";
        assert_eq!(
            minify(src),
            "if a; then b; fi; case x in y) z ;; esac; f() { g; }"
        );
    }

    #[test]
    fn minified_script_parses() {
        for sh in ["sh", "dash", "bash"] {
            let Ok(status) = std::process::Command::new(sh)
                .args(["-n", "-c", script()])
                .status()
            else {
                continue;
            };
            assert!(status.success(), "{sh} -n rejects the script");
        }
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(new_nonce(), new_nonce());
    }
}
