//! Every word of every hop after an ssh hop arrives exactly, whatever the login shell there;
//! what no login shell form can carry is refused before connecting.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use ferry_testbed::{require, Component};

use crate::harness::Test;

/// The words to carry: every printable ASCII character alone and between letters, quotes,
/// `$`, `!`, backslashes, globs, a tab, non-ASCII text.
fn words() -> Vec<String> {
    let mut words: Vec<String> = (0x20u8..0x7f).map(|b| (b as char).to_string()).collect();
    words.extend((0x20u8..0x7f).map(|b| format!("a{}b", b as char)));
    words.extend(
        [
            "",
            "it's",
            "''",
            "\"\"",
            "\\",
            "\\\\",
            "a\\",
            "\\'",
            "!",
            "!!",
            "!$",
            "x!y",
            "$HOME",
            "${x}",
            "`id`",
            "$(id)",
            "~",
            "~root",
            "=ls",
            "*",
            "[a]",
            "{a,b}",
            "%1",
            "^x^y",
            "#c",
            "a b",
            "  ",
            "tab\there",
            "é",
            "\u{2603} snow",
            "\u{1f600}",
            "日本語",
        ]
        .map(str::to_owned),
    );
    words
}

/// `ferry run ssh:<short> exec:RECORD OUT WORDS... -- true`: the hop program writes the words
/// it was given to OUT, NUL-terminated, then runs the rest of the route.
fn carries_every_word(short: &'static str) {
    require!(Component::Sshd);
    require!(Component::User(short));
    let dir = tempfile::Builder::new()
        .prefix("ferry-it-")
        .tempdir()
        .unwrap();
    // The remote user runs the hop program and writes the record.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let record = dir.path().join("record");
    fs::write(
        &record,
        "#!/bin/sh\nout=$1; shift\n: > \"$out\"\nwhile [ \"$1\" != -- ]; do printf '%s\\0' \"$1\" >> \"$out\"; shift; done\nshift\nexec \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&record, fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.path().join("out");
    let words = words();
    let mut hop_argv = vec![record.display().to_string(), out.display().to_string()];
    hop_argv.extend(words.iter().cloned());
    hop_argv.push("--".into());
    let hop = format!("exec:{}", shell_join(&hop_argv));
    Test::new()
        .arg("run")
        .ssh_config()
        .args([&format!("ssh:{short}"), &hop, "--", "echo", "ran"])
        .stdout("ran\n")
        .run();
    let got = fs::read(&out).unwrap();
    let got: Vec<String> = got
        .split(|b| *b == 0)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    // The record ends with a NUL: the last piece is empty.
    let got = &got[..got.len().saturating_sub(1)];
    for (i, want) in words.iter().enumerate() {
        let arrived = got.get(i);
        assert_eq!(
            arrived,
            Some(want),
            "{short}: word {i} {want:?} arrived as {arrived:?}"
        );
    }
    assert_eq!(got.len(), words.len(), "{short}: extra words arrived");
}

/// POSIX quoting for ferry's own hop parser (`exec:` takes shell-like words).
fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn hop_words_survive_bash() {
    carries_every_word("bash");
}

#[test]
fn hop_words_survive_dash() {
    carries_every_word("dash");
}

#[test]
fn hop_words_survive_zsh() {
    carries_every_word("zsh");
}

#[test]
fn hop_words_survive_fish() {
    carries_every_word("fish");
}

#[test]
fn hop_words_survive_tcsh() {
    carries_every_word("tcsh");
}

#[test]
fn hop_words_survive_ash() {
    carries_every_word("ash");
}

#[test]
fn a_word_no_login_shell_can_carry_is_refused_before_connecting() {
    require!(Component::Sshd);
    // `closed` is a port where nothing listens: a refusal after connecting would be 201.
    for (word, named) in [("a\nb", "newline"), ("a\rb", "carriage return")] {
        let hop = format!("exec:echo {}", shell_join(&[word.to_owned()]));
        Test::new()
            .arg("run")
            .ssh_config()
            .args(["ssh:closed", &hop, "--", "true"])
            .status(2)
            .stdout("")
            .stderr_contains(named)
            .run();
    }
    // Before an ssh hop nothing is parsed by a shell: a newline is carried.
    Test::new()
        .args([
            "run",
            "exec:env FERRY_WORD='a\nb'",
            "--",
            "printenv",
            "FERRY_WORD",
        ])
        .stdout("a\nb\n")
        .run();
}
