//! The scenario format: one file per scenario in `tests/conformance/*.scenario`.
//!
//! A line-based format, one directive or step per line; `#` starts a comment line. Words are
//! separated by blanks; a word may be a double-quoted string with escapes (`\n`, `\r`, `\t`,
//! `\0`, `\\`, `\"`, `\xHH`), and a word starting with `{` takes the rest of the line as JSON.
//! `${TMP}` and the server variables (`${HTTP_PORT}`, `${HTTP_SOCKET}`, `${TCP_PORT}`,
//! `${UNIX_SOCKET}`) are substituted before a line is parsed.
//!
//! Directives (where they appear does not matter):
//! - `timeout SECONDS`: how long each `expect` may wait (default 10).
//! - `init manual`: do not perform the init exchange; the steps do it.
//! - `env NAME VALUE`: an extra environment variable for the bridge.
//! - `json CHANNEL [sorted]`: each data frame on CHANNEL is one JSON document; compare them
//!   parsed and normalised, one by one (`sorted`: in any order).
//! - `size CHANNEL UNIT`: compare only how much data CHANNEL sent, in whole UNITs of bytes
//!   (for amounts that depend on timing, such as a flow-control window).
//! - `unordered CHANNEL`: compare what CHANNEL sent in any order (where the reference's own
//!   order varies from run to run; say why in a comment).
//! - `shape CHANNEL`: like `json`, but compare only the shape of each document (numbers
//!   become a placeholder) and collapse runs of equal shapes (for periodic samples).
//! - `http CHANNEL`: the channel answers an HTTP request in `http-stream1` form: its first
//!   data frame is the response head, of which `status` and `Content-Encoding` are compared;
//!   the body follows, compared parsed when all of it is one JSON document.
//! - `reference 287|337`: compare with this reference only (repeatable; without it, with
//!   both). For what one reference lacks, such as payloads newer than 287.
//! - `user SHORT`: run every bridge as the test user `ferry-SHORT` (ferry-testbed's users)
//!   instead of the user running the tests, with its groups, home and name in the
//!   environment; the runner must be root (elsewhere the scenario is skipped, or fails in CI).
//!
//! Setup, done in a fresh `${TMP}` before each bridge starts:
//! - `mkdir PATH`, `write PATH STRING`, `fill PATH BYTES`, `chmod OCTAL PATH`,
//!   `symlink TARGET PATH` (PATH relative to `${TMP}`).
//! - `server http` | `server tcp-echo` | `server unix-echo` | `server dbus` (private system
//!   and session buses with the test service `org.ferry.Test` and `systemd-hostnamed`; the
//!   bridge gets their addresses, `${DBUS_SESSION}` is the session bus's).
//!
//! Steps, in order:
//! - `send {JSON}`: a control message.
//! - `send CHANNEL STRING`: a data frame. `send CHANNEL repeat COUNT STRING`: COUNT frames.
//! - `raw STRING`: bytes exactly as given.
//! - `expect CHANNEL COMMAND`: wait for one more control message COMMAND about CHANNEL (`-`
//!   for messages without a channel) than earlier `expect`s of the same pair waited for.
//! - `expect CHANNEL data BYTES`: wait until CHANNEL has sent at least BYTES bytes of data.
//! - `expect CHANNEL frames N`: wait until CHANNEL has sent at least N data frames (for
//!   message-based payloads such as dbus-json3, one message per frame).
//! - `expect CHANNEL reply ID`: wait until CHANNEL has sent a JSON document whose `id` is the
//!   string ID (a dbus-json3 `reply` or `error`).
//! - `expect exit`: wait for the bridge to exit.
//! - `sleep SECONDS`, `autopong` (answer every channel `ping` with a `pong` from now on),
//!   `eof` (close the bridge's input).
//!
//! After the last step the runner closes the bridge's input and waits for it to exit.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Setup {
    Mkdir(String),
    Write(String, Vec<u8>),
    Fill(String, u64),
    Chmod(u32, String),
    Symlink(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Http,
    TcpEcho,
    UnixEcho,
    /// Private system and session buses (ferry-testbed's `TestBuses`), handed to the bridge
    /// through `DBUS_SYSTEM_BUS_ADDRESS` and `DBUS_SESSION_BUS_ADDRESS`.
    Dbus,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Control(serde_json::Map<String, Value>),
    Data {
        channel: String,
        data: Vec<u8>,
        repeat: u64,
    },
    Raw(Vec<u8>),
    ExpectControl {
        channel: String,
        command: String,
    },
    ExpectData {
        channel: String,
        bytes: u64,
    },
    ExpectFrames {
        channel: String,
        frames: u64,
    },
    ExpectReply {
        channel: String,
        id: String,
    },
    ExpectExit,
    Sleep(Duration),
    Autopong,
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    Json {
        sorted: bool,
    },
    Shape,
    /// Only the amount of data counts, in whole units of this many bytes.
    Size(u64),
    /// An `http-stream1` response: a head, then the body.
    Http,
}

/// A scenario as written, before variables are substituted.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// The lines, kept raw: they are parsed after substitution, once per bridge run.
    lines: Vec<(usize, String)>,
    pub servers: Vec<Server>,
    /// How each channel's data is compared (from `json`, `shape` and `size`).
    pub modes: BTreeMap<String, DataMode>,
    /// Channels whose events are compared in any order (from `unordered`).
    pub unordered: Vec<String>,
    /// The references compared with (from `reference`; empty: all of them).
    pub references: Vec<String>,
    /// The test user the bridges run as (from `user`, its short name).
    pub user: Option<String>,
}

/// A scenario with its variables substituted, ready to run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub timeout: Option<Duration>,
    pub manual_init: bool,
    pub env: Vec<(String, String)>,
    pub modes: BTreeMap<String, DataMode>,
    pub unordered: Vec<String>,
    pub references: Vec<String>,
    pub user: Option<String>,
    pub setup: Vec<Setup>,
    pub steps: Vec<(usize, Step)>,
}

#[derive(Debug)]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

impl Scenario {
    /// Read the raw lines and the servers the scenario needs (so they can be started first).
    pub fn parse(name: &str, text: &str) -> Result<Scenario, ParseError> {
        let mut lines = Vec::new();
        let mut servers = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let lineno = i + 1;
            if let Some(rest) = trimmed.strip_prefix("server ") {
                servers.push(match rest.trim() {
                    "http" => Server::Http,
                    "tcp-echo" => Server::TcpEcho,
                    "unix-echo" => Server::UnixEcho,
                    "dbus" => Server::Dbus,
                    other => {
                        return Err(ParseError {
                            file: name.into(),
                            line: lineno,
                            message: format!("unknown server {other:?}"),
                        })
                    }
                });
                continue;
            }
            lines.push((lineno, trimmed.to_owned()));
        }
        let mut scenario = Scenario {
            name: name.into(),
            lines,
            servers,
            modes: BTreeMap::new(),
            unordered: Vec::new(),
            references: Vec::new(),
            user: None,
        };
        // Check the syntax once, with dummy values.
        let mut vars = BTreeMap::new();
        for v in [
            "TMP",
            "HTTP_PORT",
            "HTTP_SOCKET",
            "TCP_PORT",
            "UNIX_SOCKET",
            "DBUS_SESSION",
        ] {
            vars.insert(v.to_owned(), "1".to_owned());
        }
        let plan = scenario.plan(&vars)?;
        scenario.modes = plan.modes;
        scenario.unordered = plan.unordered;
        scenario.references = plan.references;
        scenario.user = plan.user;
        Ok(scenario)
    }

    /// Substitute `vars` and parse every line.
    pub fn plan(&self, vars: &BTreeMap<String, String>) -> Result<Plan, ParseError> {
        let mut plan = Plan::default();
        for (lineno, raw) in &self.lines {
            let err = |message: String| ParseError {
                file: self.name.clone(),
                line: *lineno,
                message,
            };
            let line = substitute(raw, vars).map_err(err)?;
            let words = split_words(&line).map_err(err)?;
            parse_line(&mut plan, *lineno, &words).map_err(err)?;
        }
        Ok(plan)
    }
}

/// A word of a line: plain, quoted (bytes after escapes) or a JSON value.
#[derive(Debug, Clone, PartialEq)]
enum Word {
    Plain(String),
    Quoted(Vec<u8>),
    Json(Value),
}

impl Word {
    fn plain(&self) -> Result<&str, String> {
        match self {
            Word::Plain(s) => Ok(s),
            other => Err(format!("expected a plain word, found {other:?}")),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Word::Plain(s) => s.as_bytes().to_vec(),
            Word::Quoted(b) => b.clone(),
            Word::Json(v) => v.to_string().into_bytes(),
        }
    }
}

fn substitute(line: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${...}".to_owned())?;
        let name = &after[..end];
        let value = vars
            .get(name)
            .ok_or_else(|| format!("unknown variable ${{{name}}} (is its server started?)"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn split_words(line: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('{') {
            let value: Value =
                serde_json::from_str(rest).map_err(|e| format!("bad JSON {rest:?}: {e}"))?;
            words.push(Word::Json(value));
            break;
        } else if let Some(body) = rest.strip_prefix('"') {
            let (bytes, after) = unquote(body)?;
            words.push(Word::Quoted(bytes));
            rest = after.trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            words.push(Word::Plain(rest[..end].to_owned()));
            rest = rest[end..].trim_start();
        }
    }
    Ok(words)
}

/// Decode a quoted string whose opening quote is already consumed; return it and what follows.
fn unquote(body: &str) -> Result<(Vec<u8>, &str), String> {
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => {
                let (_, e) = chars.next().ok_or("dangling backslash")?;
                match e {
                    'n' => out.push(b'\n'),
                    'r' => out.push(b'\r'),
                    't' => out.push(b'\t'),
                    '0' => out.push(0),
                    '\\' => out.push(b'\\'),
                    '"' => out.push(b'"'),
                    'x' => {
                        let hi = chars.next().map(|(_, c)| c).ok_or("short \\x escape")?;
                        let lo = chars.next().map(|(_, c)| c).ok_or("short \\x escape")?;
                        let hex: String = [hi, lo].iter().collect();
                        out.push(
                            u8::from_str_radix(&hex, 16)
                                .map_err(|_| format!("bad \\x escape {hex:?}"))?,
                        );
                    }
                    other => return Err(format!("unknown escape \\{other}")),
                }
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Err("unterminated string".into())
}

fn number<T: std::str::FromStr>(word: &Word) -> Result<T, String> {
    let s = word.plain()?;
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

fn seconds(word: &Word) -> Result<Duration, String> {
    let s: f64 = number(word)?;
    if !(0.0..=600.0).contains(&s) {
        return Err(format!("{s} seconds is out of range"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn channel_arg(word: &Word) -> Result<String, String> {
    Ok(match word.plain()? {
        "-" => String::new(),
        c => c.to_owned(),
    })
}

fn parse_line(plan: &mut Plan, lineno: usize, words: &[Word]) -> Result<(), String> {
    let verb = words.first().ok_or("empty line")?.plain()?;
    let args = &words[1..];
    let want = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("{verb} takes {n} arguments, found {}", args.len()))
        }
    };
    let step = |plan: &mut Plan, step: Step| plan.steps.push((lineno, step));
    match verb {
        "timeout" => {
            want(1)?;
            plan.timeout = Some(seconds(&args[0])?);
        }
        "init" => {
            want(1)?;
            if args[0].plain()? != "manual" {
                return Err("only `init manual` exists".into());
            }
            plan.manual_init = true;
        }
        "env" => {
            want(2)?;
            let value = String::from_utf8(args[1].bytes()).map_err(|_| "env value not UTF-8")?;
            plan.env.push((args[0].plain()?.to_owned(), value));
        }
        "reference" => {
            want(1)?;
            let r = args[0].plain()?;
            if !["287", "337"].contains(&r) {
                return Err(format!("unknown reference {r:?} (287 or 337)"));
            }
            plan.references.push(r.to_owned());
        }
        "user" => {
            want(1)?;
            let short = args[0].plain()?;
            if !ferry_testbed::users().iter().any(|u| u.short == short) {
                return Err(format!("no test user ferry-{short}"));
            }
            plan.user = Some(short.to_owned());
        }
        "unordered" => {
            want(1)?;
            plan.unordered.push(channel_arg(&args[0])?);
        }
        "size" => {
            want(2)?;
            let unit: u64 = number(&args[1])?;
            if unit == 0 {
                return Err("size unit must be positive".into());
            }
            plan.modes
                .insert(channel_arg(&args[0])?, DataMode::Size(unit));
        }
        "http" => {
            want(1)?;
            plan.modes.insert(channel_arg(&args[0])?, DataMode::Http);
        }
        "json" | "shape" => {
            let mode = match (verb, args.get(1).map(Word::plain).transpose()?) {
                ("json", None) => DataMode::Json { sorted: false },
                ("json", Some("sorted")) => DataMode::Json { sorted: true },
                ("shape", None) => DataMode::Shape,
                _ => return Err("usage: json CHANNEL [sorted] | shape CHANNEL".into()),
            };
            plan.modes
                .insert(channel_arg(args.first().ok_or("missing channel")?)?, mode);
        }
        "mkdir" => {
            want(1)?;
            plan.setup.push(Setup::Mkdir(args[0].plain()?.into()));
        }
        "write" => {
            want(2)?;
            plan.setup
                .push(Setup::Write(args[0].plain()?.into(), args[1].bytes()));
        }
        "fill" => {
            want(2)?;
            plan.setup
                .push(Setup::Fill(args[0].plain()?.into(), number(&args[1])?));
        }
        "chmod" => {
            want(2)?;
            let mode = u32::from_str_radix(args[0].plain()?, 8).map_err(|_| "bad octal mode")?;
            plan.setup.push(Setup::Chmod(mode, args[1].plain()?.into()));
        }
        "symlink" => {
            want(2)?;
            plan.setup.push(Setup::Symlink(
                args[0].plain()?.into(),
                args[1].plain()?.into(),
            ));
        }
        "send" => match args {
            [Word::Json(Value::Object(m))] => step(plan, Step::Control(m.clone())),
            [ch, data] => step(
                plan,
                Step::Data {
                    channel: channel_arg(ch)?,
                    data: data.bytes(),
                    repeat: 1,
                },
            ),
            [ch, Word::Plain(r), count, data] if r == "repeat" => step(
                plan,
                Step::Data {
                    channel: channel_arg(ch)?,
                    data: data.bytes(),
                    repeat: number(count)?,
                },
            ),
            _ => {
                return Err(
                    "usage: send {JSON} | send CHANNEL STRING | send CHANNEL repeat N STRING"
                        .into(),
                )
            }
        },
        "raw" => {
            want(1)?;
            step(plan, Step::Raw(args[0].bytes()));
        }
        "expect" => match args {
            [Word::Plain(e)] if e == "exit" => step(plan, Step::ExpectExit),
            [ch, Word::Plain(d), n] if d == "data" => step(
                plan,
                Step::ExpectData {
                    channel: channel_arg(ch)?,
                    bytes: number(n)?,
                },
            ),
            [ch, Word::Plain(d), n] if d == "frames" => step(
                plan,
                Step::ExpectFrames {
                    channel: channel_arg(ch)?,
                    frames: number(n)?,
                },
            ),
            [ch, Word::Plain(r), id] if r == "reply" => step(
                plan,
                Step::ExpectReply {
                    channel: channel_arg(ch)?,
                    id: id.plain()?.to_owned(),
                },
            ),
            [ch, cmd] => step(
                plan,
                Step::ExpectControl {
                    channel: channel_arg(ch)?,
                    command: cmd.plain()?.to_owned(),
                },
            ),
            _ => return Err(
                "usage: expect CHANNEL COMMAND | expect CHANNEL data N | expect CHANNEL frames N \
                     | expect CHANNEL reply ID | expect exit"
                    .into(),
            ),
        },
        "sleep" => {
            want(1)?;
            step(plan, Step::Sleep(seconds(&args[0])?));
        }
        "autopong" => {
            want(0)?;
            step(plan, Step::Autopong);
        }
        "eof" => {
            want(0)?;
            step(plan, Step::Eof);
        }
        other => return Err(format!("unknown directive {other:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_escapes() {
        let words = split_words(r#"send a "x\x00\n\"y" {"command": "ping"}"#).unwrap();
        assert_eq!(
            words,
            vec![
                Word::Plain("send".into()),
                Word::Plain("a".into()),
                Word::Quoted(b"x\0\n\"y".to_vec()),
                Word::Json(serde_json::json!({"command": "ping"})),
            ]
        );
        assert!(split_words(r#"send a "open"#).is_err());
        assert!(split_words(r#"send a "\q""#).is_err());
    }

    #[test]
    fn plan_substitutes_and_parses() {
        let s = Scenario::parse(
            "t",
            "# comment\nserver http\nwrite f \"hi\"\nsend {\"command\":\"open\",\"path\":\"${TMP}/f\"}\nexpect a close\nexpect - pong\nsend a repeat 3 \"z\"\n",
        )
        .unwrap();
        assert_eq!(s.servers, vec![Server::Http]);
        let vars = BTreeMap::from([("TMP".to_owned(), "/x".to_owned())]);
        let plan = s.plan(&vars).unwrap();
        assert_eq!(plan.setup, vec![Setup::Write("f".into(), b"hi".to_vec())]);
        assert_eq!(plan.steps.len(), 4);
        match &plan.steps[0].1 {
            Step::Control(m) => assert_eq!(m["path"], "/x/f"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            plan.steps[2].1,
            Step::ExpectControl {
                channel: String::new(),
                command: "pong".into()
            }
        );
        assert!(Scenario::parse("t", "frobnicate\n").is_err());
        assert!(Scenario::parse("t", "send {\"a\":${NOPE}}\n").is_err());
    }
}
