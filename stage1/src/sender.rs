use std::borrow::Cow;
use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::Invocation;

/// Longest line kept from the remote before the handshake; longer noise is discarded in pieces.
const MAX_LINE: usize = 64 * 1024;
/// Size of the pieces an image is written in (progress is reported after each).
const CHUNK: usize = 64 * 1024;

/// How an image travels: the remote decodes it with the tool of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Gzip,
    Raw,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Gzip => "gzip",
            Codec::Raw => "raw",
        }
    }
}

/// The tools the loader found on the remote (`zstd`, `gzip`, `sha256sum`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tools(Vec<String>);

impl Tools {
    fn parse(list: &str) -> Self {
        Tools(
            list.split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    pub fn has(&self, tool: &str) -> bool {
        self.0.iter().any(|t| t == tool)
    }

    /// The best codec the remote can decode: zstd, else gzip, else raw.
    pub fn best_codec(&self) -> Codec {
        if self.has("zstd") {
            Codec::Zstd
        } else if self.has("gzip") {
            Codec::Gzip
        } else {
            Codec::Raw
        }
    }
}

/// Where images come from: the launcher's embedded set, or a bridge's own executable.
pub trait ImageSource {
    /// The image for `arch`, encoded in a codec the remote's `tools` can decode.
    fn encoded(&self, arch: &str, tools: &Tools) -> io::Result<(Codec, Cow<'_, [u8]>)>;
}

/// What the loader reported once the bridge was about to run.
#[derive(Clone, Debug)]
pub struct Booted {
    /// The remote's architecture, normalised (`x86_64`, `aarch64`).
    pub arch: String,
    /// A verified cached image was run; nothing was sent.
    pub cached: bool,
    /// The directory the image lives in on the remote (as the loader reported it).
    pub dir: String,
    pub tools: Tools,
    /// Image bytes written to the remote (0 when cached).
    pub payload_bytes: u64,
    /// How they were encoded, when sent.
    pub codec: Option<Codec>,
    /// Lines before the handshake (login-script output), kept for diagnostics.
    pub noise: Vec<String>,
}

/// Why the loader did not start a bridge. Nothing was executed on the remote in any case.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    #[error("the remote's CPU is {0}, and ferry has no bridge for it")]
    UnsupportedArch(String),
    #[error("no directory on the remote is both writable and executable (tried:{0})")]
    NoDirectory(String),
    #[error("the bridge image arrived corrupted ({0} bytes received); it was deleted and not run")]
    Corrupt(String),
    #[error("the cached bridge {0} did not match its sha256; it was deleted and not run")]
    Tampered(String),
    /// A program the loader needs is missing on the remote: `uname`, `dd`, `wc` (or `ls`), or a
    /// sha256 tool (reported as `sha256sum`; `shasum` or `openssl` would do as well).
    #[error("{}", missing_tool(.0))]
    MissingTool(String),
    /// Writing the image filled the filesystem of this directory; nothing was left behind.
    #[error(
        "no space left in {0} on the remote; the partial image was removed and nothing was run"
    )]
    NoSpace(String),
    /// The loader could not read the image from its stdin (the error as `dd` reported it).
    #[error("the loader could not read the image: {0}")]
    ReadFailed(String),
    #[error("the remote ended before the loader answered")]
    Closed { noise: Vec<String> },
    #[error("the loader said something unexpected: {0:?}")]
    Protocol(String),
    #[error("transport error during the handshake: {0}")]
    Io(#[from] io::Error),
}

fn missing_tool(tool: &str) -> String {
    match tool {
        "sha256sum" => "the remote has no sha256 tool (sha256sum, shasum or openssl), so the bridge cannot be verified; install coreutils or busybox there".to_owned(),
        _ => format!("the remote has no `{tool}`, which ferry's loader needs; install coreutils or busybox there"),
    }
}

/// Drive the loader to a running bridge.
///
/// `reader` is the remote's stdout, `writer` its stdin; the loader must already be running on
/// the other end (started with `invocation.argv()`). On success the next byte of `reader` is the
/// bridge's first frame. `progress(sent, total)` is called while an image is written.
pub async fn send<R, W, S>(
    invocation: &Invocation,
    reader: &mut R,
    writer: &mut W,
    source: &S,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Booted, Stage1Error>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
    S: ImageSource + ?Sized,
{
    let marker = invocation.marker();
    let mut noise = Vec::new();
    let said = next_said(reader, &marker, &mut noise).await?;
    let words: Vec<&str> = said.splitn(5, ' ').collect();
    let (arch, state, tools, dir) = match words.as_slice() {
        ["hello", arch, state, tools, dir] => (*arch, *state, Tools::parse(tools), *dir),
        ["hello", arch, state, tools] => (*arch, *state, Tools::parse(tools), ""),
        ["fail", ..] => return Err(failure(&said)),
        _ => return Err(Stage1Error::Protocol(said)),
    };
    let mut booted = Booted {
        arch: arch.to_owned(),
        cached: state == "cached",
        dir: dir.to_owned(),
        tools,
        payload_bytes: 0,
        codec: None,
        noise,
    };
    match state {
        "cached" => {
            tracing::debug!(arch, dir, "remote runs its cached bridge");
            return Ok(booted);
        }
        "need" => {}
        _ => return Err(Stage1Error::Protocol(said)),
    }

    let (codec, image) = source.encoded(arch, &booted.tools)?;
    let total = image.len() as u64;
    tracing::debug!(
        arch,
        codec = codec.name(),
        bytes = total,
        "sending bridge image"
    );
    let written = async {
        writer.write_all(&header(total, codec)).await?;
        let mut sent = 0u64;
        for chunk in image.chunks(CHUNK) {
            writer.write_all(chunk).await?;
            sent += chunk.len() as u64;
            progress(sent, total);
        }
        writer.flush().await
    }
    .await;
    if let Err(err) = written {
        // The loader picks its directory while the image travels, and may have given up: its
        // reason is the one to report, not the broken pipe.
        let mut late_noise = Vec::new();
        return match next_said(reader, &marker, &mut late_noise).await {
            Ok(said) if said.starts_with("fail ") => Err(failure(&said)),
            _ => Err(err.into()),
        };
    }
    booted.payload_bytes = total;
    booted.codec = Some(codec);

    // Lockstep: nothing more is written until the loader has answered.
    let mut late_noise = Vec::new();
    let said = next_said(reader, &marker, &mut late_noise).await?;
    if let Some(dir) = said.strip_prefix("ok ") {
        booted.dir = dir.to_owned();
        return Ok(booted);
    }
    if said.starts_with("fail ") {
        return Err(failure(&said));
    }
    Err(Stage1Error::Protocol(said))
}

/// Length of the line that announces an image: fixed, so that the loader reads it with the same
/// exact-length reads as the image (a shell's `read` loses bytes on a non-blocking stdin).
pub const HEADER_LEN: usize = 32;

/// `send SIZE CODEC`, padded with spaces to [`HEADER_LEN`] bytes including its newline.
fn header(size: u64, codec: Codec) -> Vec<u8> {
    let mut line = format!("send {size} {}", codec.name()).into_bytes();
    line.resize(HEADER_LEN - 1, b' ');
    line.push(b'\n');
    line
}

fn failure(said: &str) -> Stage1Error {
    let mut words = said.splitn(3, ' ').skip(1);
    let reason = words.next().unwrap_or_default();
    let detail = words.next().unwrap_or_default().to_owned();
    match reason {
        "arch" => Stage1Error::UnsupportedArch(detail),
        "dir" => Stage1Error::NoDirectory(detail),
        "corrupt" => Stage1Error::Corrupt(detail),
        "tampered" => Stage1Error::Tampered(detail),
        "tool" => Stage1Error::MissingTool(detail),
        "space" => Stage1Error::NoSpace(detail),
        "io" => Stage1Error::ReadFailed(detail),
        _ => Stage1Error::Protocol(said.to_owned()),
    }
}

/// The next line the loader said (after its marker), keeping earlier lines as noise.
async fn next_said<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    marker: &str,
    noise: &mut Vec<String>,
) -> Result<String, Stage1Error> {
    loop {
        let Some(line) = read_line_capped(reader).await? else {
            return Err(Stage1Error::Closed {
                noise: std::mem::take(noise),
            });
        };
        let text = String::from_utf8_lossy(&line);
        // Output without a final newline may run into the marker: look anywhere in the line.
        if let Some(at) = text.find(marker) {
            if at > 0 {
                noise.push(text[..at].to_owned());
            }
            return Ok(text[at + marker.len()..].trim_end().to_owned());
        }
        tracing::debug!(line = %text.trim_end(), "remote output before the handshake");
        if noise.len() < 100 {
            noise.push(text.trim_end().to_owned());
        }
    }
}

/// One line including its `\n`, at most [`MAX_LINE`] bytes; `None` at end of stream.
async fn read_line_capped<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let room = MAX_LINE - line.len();
        let (take, end) = match buf.iter().take(room).position(|&b| b == b'\n') {
            Some(nl) => (nl + 1, true),
            None => (buf.len().min(room), line.len() + buf.len() >= MAX_LINE),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if end {
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_choice() {
        assert_eq!(
            Tools::parse("zstd,gzip,sha256sum,").best_codec(),
            Codec::Zstd
        );
        assert_eq!(Tools::parse("gzip,sha256sum,").best_codec(), Codec::Gzip);
        assert_eq!(Tools::parse("sha256sum,").best_codec(), Codec::Raw);
    }

    #[test]
    fn header_has_a_fixed_length() {
        for (size, codec) in [
            (0, Codec::Raw),
            (u64::MAX, Codec::Zstd),
            (243_804, Codec::Gzip),
        ] {
            let h = header(size, codec);
            assert_eq!(h.len(), HEADER_LEN);
            assert_eq!(h.last(), Some(&b'\n'));
            let words: Vec<String> = String::from_utf8(h)
                .unwrap()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            assert_eq!(words, ["send", &size.to_string(), codec.name()]);
        }
    }

    #[test]
    fn failures_map() {
        assert!(
            matches!(failure("fail arch mips64"), Stage1Error::UnsupportedArch(a) if a == "mips64")
        );
        assert!(matches!(
            failure("fail dir  /a /b"),
            Stage1Error::NoDirectory(_)
        ));
        assert!(matches!(
            failure("fail corrupt 10/20"),
            Stage1Error::Corrupt(_)
        ));
        assert!(matches!(
            failure("fail tool uname"),
            Stage1Error::MissingTool(t) if t == "uname"
        ));
        assert!(matches!(
            failure("fail space /tmp/ferry-0"),
            Stage1Error::NoSpace(d) if d == "/tmp/ferry-0"
        ));
        assert!(failure("fail tool sha256sum")
            .to_string()
            .contains("shasum"));
        assert!(matches!(failure("fail what"), Stage1Error::Protocol(_)));
    }
}
