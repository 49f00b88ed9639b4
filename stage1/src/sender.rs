use std::borrow::Cow;
use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::Invocation;

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
    /// What the remote printed before the handshake (login-script output), at most its last
    /// 4 KiB, kept for diagnostics.
    pub noise: String,
}

/// Why the loader did not start a bridge. Nothing was executed on the remote in any case.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    #[error("the remote's CPU is {0}, and ferry has no bridge for it")]
    UnsupportedArch(String),
    #[error("no directory on the remote is both writable and executable (tried: {})", .0.trim())]
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
    Closed {
        /// What the remote printed on the stream (its last 4 KiB), for quoting.
        noise: String,
    },
    #[error("the loader did not answer within {} s", after.as_secs())]
    Timeout {
        after: std::time::Duration,
        /// What the remote printed on the stream meanwhile (its last 4 KiB), for quoting.
        noise: String,
    },
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
    let mut noise = Noise::default();
    let said = answer(invocation, reader, &marker, &mut noise).await?;
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
        noise: noise.text(),
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
        return match answer(invocation, reader, &marker, &mut noise).await {
            Ok(said) if said.starts_with("fail ") => Err(failure(&said)),
            _ => Err(err.into()),
        };
    }
    booted.payload_bytes = total;
    booted.codec = Some(codec);

    // Lockstep: nothing more is written until the loader has answered.
    let said = answer(invocation, reader, &marker, &mut noise).await?;
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

/// [`next_said`], waiting at most `invocation.timeout`.
async fn answer<R: AsyncBufRead + Unpin>(
    invocation: &Invocation,
    reader: &mut R,
    marker: &str,
    noise: &mut Noise,
) -> Result<String, Stage1Error> {
    let after = invocation.timeout;
    match tokio::time::timeout(after, next_said(reader, marker, noise)).await {
        Ok(said) => said,
        Err(_) => Err(Stage1Error::Timeout {
            after,
            noise: noise.text(),
        }),
    }
}

/// The most of the remote's own output kept for an error message.
const NOISE_KEPT: usize = 4096;
/// The longest line the loader itself prints (its directory names included).
const MAX_SAID: usize = 16 * 1024;

/// What the remote printed that was not the loader's (login-script output, a forced command's
/// message): the last [`NOISE_KEPT`] bytes of it.
#[derive(Default)]
struct Noise {
    tail: Vec<u8>,
    /// The last bytes read, fewer than the marker's length, that may still begin it.
    carry: Vec<u8>,
}

impl Noise {
    fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        tracing::debug!(noise = %String::from_utf8_lossy(bytes), "remote output before the handshake");
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > NOISE_KEPT {
            let cut = self.tail.len() - NOISE_KEPT;
            self.tail.drain(..cut);
        }
    }

    /// Everything kept, the carry included (for a loader that never spoke).
    fn text(&self) -> String {
        let mut all = self.tail.clone();
        all.extend_from_slice(&self.carry);
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The next line the loader said (after its marker), adding everything before it to `noise`.
///
/// The marker is found wherever it falls: in the middle of a line, across reads, after any amount
/// of output without a newline. Nothing after the loader's line is consumed from `reader`.
async fn next_said<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    marker: &str,
    noise: &mut Noise,
) -> Result<String, Stage1Error> {
    let marker = marker.as_bytes();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Err(Stage1Error::Closed {
                noise: noise.text(),
            });
        }
        let mut joined = std::mem::take(&mut noise.carry);
        let before = joined.len();
        joined.extend_from_slice(buf);
        if let Some(at) = find(&joined, marker) {
            noise.push(&joined[..at]);
            // The marker ends inside `buf`: `carry` is shorter than the marker.
            let used = at + marker.len() - before;
            reader.consume(used);
            break;
        }
        let keep = (marker.len() - 1).min(joined.len());
        let cut = joined.len() - keep;
        noise.push(&joined[..cut]);
        noise.carry = joined.split_off(cut);
        let n = buf.len();
        reader.consume(n);
    }
    // The rest of the loader's line, up to its newline and no further.
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            break;
        }
        let (take, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(nl) => (nl + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if end {
            break;
        }
        if line.len() > MAX_SAID {
            return Err(Stage1Error::Protocol(format!(
                "a line of more than {MAX_SAID} bytes"
            )));
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
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

    /// The marker is found after noise of every length, whatever the reader's buffer size, and
    /// exactly the bytes after the loader's line are left unread.
    #[tokio::test]
    async fn marker_found_across_every_buffer_boundary() {
        let marker = "ferry-0123456789abcdef ";
        for capacity in [1usize, 2, 7, 22, 23, 24, 64, 4096] {
            let mut lengths: Vec<usize> = (0..=50).collect();
            for k in 1..=3 {
                lengths.extend((k * capacity).saturating_sub(24)..=k * capacity + 1);
            }
            if capacity >= 64 {
                lengths.extend([65513, 65536, 70000]);
            }
            for n in lengths {
                let mut stream = vec![b'x'; n];
                stream.extend_from_slice(marker.as_bytes());
                stream.extend_from_slice(b"hello x86_64 cached zstd, /d\nFRAMES");
                let mut reader = tokio::io::BufReader::with_capacity(capacity, &stream[..]);
                let mut noise = Noise::default();
                let said = next_said(&mut reader, marker, &mut noise).await.unwrap();
                assert_eq!(
                    said, "hello x86_64 cached zstd, /d",
                    "cap {capacity}, noise {n}"
                );
                let mut rest = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut rest)
                    .await
                    .unwrap();
                assert_eq!(rest, b"FRAMES", "cap {capacity}, noise {n}");
                assert_eq!(
                    noise.text().len(),
                    n.min(NOISE_KEPT),
                    "cap {capacity}, noise {n}"
                );
            }
        }
    }

    /// Noise that only looks like the start of the marker is kept as noise and quoted.
    #[tokio::test]
    async fn partial_marker_is_noise() {
        let marker = "ferry-0123456789abcdef ";
        let stream = b"ferry-0123 said the remote".to_vec();
        let mut reader = tokio::io::BufReader::with_capacity(8, &stream[..]);
        let mut noise = Noise::default();
        match next_said(&mut reader, marker, &mut noise).await {
            Err(Stage1Error::Closed { noise }) => {
                assert_eq!(noise, "ferry-0123 said the remote")
            }
            other => panic!("{other:?}"),
        }
    }
}
