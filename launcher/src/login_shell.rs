//! Quoting an argument vector into one command line that every supported login shell parses
//! back into exactly the same words.
//!
//! After an ssh hop, the rest of the route reaches the remote as one string, which sshd hands to
//! the user's login shell as `SHELL -c STRING`. That shell may be bash, dash, zsh, fish, tcsh or
//! busybox ash, and they disagree: fish treats `\\` and `\'` inside single quotes as escapes,
//! tcsh expands history (`!`) even inside single quotes and allows no newline there, zsh expands
//! a leading `=`. The one form all six agree on:
//!
//! - a word made only of `A-Z a-z 0-9 _ . / , : @ + - =` (not starting with `=`) goes as it is;
//! - any other word is single-quoted, with `'`, `\` and `!` each written outside the quotes,
//!   escaped with a backslash (`'it'\''s'`, `'a'\\'b'`, `'x'\!'y'`).
//!
//! What no form carries through all of them is refused: a newline or carriage return (tcsh
//! cannot quote it, and `\` + newline is a line continuation in the others) and the other
//! control characters (tcsh and fish rewrite some of them).

use std::fmt;

/// A word that cannot pass through every login shell unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{word:?}: {why}")]
pub struct Unquotable {
    /// The whole word, as given.
    pub word: String,
    /// Which character and why, in a sentence.
    pub why: String,
}

/// `words` as one command line for any supported login shell; `Err` names the first word holding
/// a character that cannot be carried.
pub fn command_line(words: &[String]) -> Result<String, Unquotable> {
    let mut line = String::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        quote_into(word, &mut line)?;
    }
    Ok(line)
}

fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./,:@+-=".contains(c)
}

/// Why a character can never be carried, or `None` when it can.
fn refused(c: char) -> Option<&'static str> {
    match c {
        '\n' => Some("a newline cannot be quoted for tcsh, and is a line continuation after `\\` in the other shells"),
        '\r' => Some("a carriage return is not carried unchanged by every login shell"),
        c if c.is_control() && c != '\t' => Some("control characters are not carried unchanged by every login shell (tcsh, fish)"),
        _ => None,
    }
}

fn quote_into(word: &str, out: &mut String) -> Result<(), Unquotable> {
    if let Some((c, why)) = word.chars().find_map(|c| refused(c).map(|why| (c, why))) {
        return Err(Unquotable {
            word: word.to_owned(),
            why: format!("{}: {why}", Named(c)),
        });
    }
    if !word.is_empty() && word.chars().all(plain) && !word.starts_with('=') {
        out.push_str(word);
        return Ok(());
    }
    let mut open = false;
    for c in word.chars() {
        if matches!(c, '\'' | '\\' | '!') {
            if open {
                out.push('\'');
                open = false;
            }
            out.push('\\');
            out.push(c);
        } else {
            if !open {
                out.push('\'');
                open = true;
            }
            out.push(c);
        }
    }
    if open {
        out.push('\'');
    } else if word.is_empty() {
        out.push_str("''");
    }
    Ok(())
}

/// A character as an error message names it.
struct Named(char);

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            '\n' => f.write_str("newline (\\n)"),
            '\r' => f.write_str("carriage return (\\r)"),
            '\t' => f.write_str("tab (\\t)"),
            c => write!(f, "character U+{:04X}", c as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn quotes_as_documented() {
        let line = command_line(&words(&[
            "sh",
            "x86_64=ab",
            "",
            "a b",
            "it's",
            "a\\b",
            "x!y",
            "=ls",
            "'",
            "$HOME",
        ]))
        .unwrap();
        assert_eq!(
            line,
            r#"sh x86_64=ab '' 'a b' 'it'\''s' 'a'\\'b' 'x'\!'y' '=ls' \' '$HOME'"#
        );
    }

    #[test]
    fn refuses_what_cannot_be_carried() {
        for bad in ["a\nb", "\r", "\u{1}", "x\u{7f}"] {
            let err = command_line(&words(&["ok", bad])).unwrap_err();
            assert_eq!(err.word, bad);
        }
        let err = command_line(&words(&["a\nb"])).unwrap_err();
        assert!(err.to_string().contains("newline"), "{err}");
    }

    /// Every printable ASCII character, alone and between others, and non-ASCII text, through
    /// every login shell on this machine (`SHELL -c LINE`, as sshd runs it).
    #[test]
    fn every_printable_character_survives_local_shells() {
        let mut list: Vec<String> = (0x20u8..0x7f).map(|b| (b as char).to_string()).collect();
        list.extend((0x20u8..0x7f).map(|b| format!("a{}b", b as char)));
        list.extend(
            [
                "",
                "it's",
                "'",
                "''",
                "\\",
                "\\\\",
                "a\\",
                "\\'",
                "'\\",
                "!",
                "!!",
                "!$",
                "x!y",
                "$HOME",
                "${x}",
                "`id`",
                "$(id)",
                "\"",
                "~",
                "~root",
                "=ls",
                "*",
                "?",
                "[a]",
                "{a,b}",
                "%1",
                "^x^y",
                "#c",
                "a b",
                "  ",
                "é",
                "\u{2603} snow",
                "\u{1f600}",
                "\t",
            ]
            .map(str::to_owned),
        );
        let line = command_line(&list).unwrap();
        let mut expected = Vec::new();
        for w in &list {
            expected.extend_from_slice(w.as_bytes());
            expected.push(0);
        }
        let shells = [
            "/bin/bash",
            "/bin/dash",
            "/bin/zsh",
            "/usr/bin/fish",
            "/bin/tcsh",
            "/var/lib/ferry-testbed/bin/ash",
        ];
        for shell in shells {
            if !std::path::Path::new(shell).exists() {
                eprintln!("skipped: {shell} is not installed");
                continue;
            }
            // printf from coreutils, by path: the same program under every shell.
            let script = format!("/usr/bin/printf '%s\\0' {line}");
            let out = std::process::Command::new(shell)
                .arg("-c")
                .arg(&script)
                .env("LC_ALL", "C.UTF-8")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{shell}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if out.stdout != expected {
                let got: Vec<String> = out
                    .stdout
                    .split(|b| *b == 0)
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                let first_bad = list
                    .iter()
                    .zip(&got)
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| format!("{a:?} came out as {b:?}"));
                panic!("{shell}: words changed: {first_bad:?}");
            }
        }
    }
}
