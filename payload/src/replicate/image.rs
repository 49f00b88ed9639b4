//! The image a bridge sends when it starts the next hop: its own executable.

use std::borrow::Cow;
use std::io;

use ferry_stage1::{Codec, ImageSource, Tools};
use sha2::{Digest, Sha256};

/// Where a running bridge finds its own executable.
const SELF_EXE: &str = "/proc/self/exe";

/// This bridge's own executable, offered for the architecture it was built for.
///
/// It is read from `/proc/self/exe` only when the far side asks for it, and sent only if its
/// sha256 is the one the launcher offered for this architecture. It travels raw: a bridge
/// carries no compressor, and the hops it starts are mostly local (sudo, su, doas, podman,
/// flatpak-spawn), where compressing would cost more time than it saves.
pub(crate) struct SelfImage {
    /// `(arch, sha256)` offered to the far side's loader.
    pub offered: Vec<(String, String)>,
    /// An image for another architecture, received from upstream, encoded for the far side
    /// (whose loader checks its sha256 after decoding it).
    pub other: Option<(String, Codec, Vec<u8>)>,
}

impl ImageSource for SelfImage {
    /// Errors: `Unsupported` when the far side needs another architecture (or none was
    /// offered for it), `InvalidData` when the executable does not match its sha256.
    fn encoded(&self, arch: &str, tools: &Tools) -> io::Result<(Codec, Cow<'_, [u8]>)> {
        if let Some((other, codec, bytes)) = &self.other {
            if other == arch {
                return Ok((*codec, Cow::Borrowed(bytes)));
            }
        }
        let own = std::env::consts::ARCH;
        let wanted = self
            .offered
            .iter()
            .find(|(a, _)| a == arch)
            .map(|(_, sha)| sha.as_str());
        let Some(wanted) = wanted.filter(|_| arch == own) else {
            // The message is the arch and the far side's decoders: the launcher may send an
            // image for it, encoded for them.
            let decoders: Vec<&str> = ["zstd", "gzip"]
                .into_iter()
                .filter(|t| tools.has(t))
                .collect();
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{arch} {}", decoders.join(",")),
            ));
        };
        let bytes = std::fs::read(SELF_EXE)?;
        let got = hex(&Sha256::digest(&bytes));
        if got != wanted {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{SELF_EXE} has sha256 {got}, not the offered {wanted}"),
            ));
        }
        Ok((Codec::Raw, Cow::Owned(bytes)))
    }
}

/// The sha256 of `bytes`, lower-case hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `(arch, sha256)` of this bridge's own executable, to offer to a loader it starts itself.
///
/// A bridge the loader started runs from a file named by its sha256, which the loader checked
/// just before running it: that name is taken as is (whatever is later sent is checked again,
/// and the far side's loader checks everything). Otherwise the executable is hashed.
pub(crate) fn own_image() -> std::io::Result<(String, String)> {
    let arch = std::env::consts::ARCH.to_owned();
    if let Ok(path) = std::fs::read_link(SELF_EXE) {
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            if name.len() == 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Ok((arch, name.to_owned()));
            }
        }
    }
    let bytes = std::fs::read(SELF_EXE)?;
    Ok((arch, hex(&Sha256::digest(&bytes))))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn other_arch_and_wrong_sha_are_refused() {
        let tools = Tools::default();
        let other = if std::env::consts::ARCH == "aarch64" {
            "x86_64"
        } else {
            "aarch64"
        };
        let source = SelfImage {
            offered: vec![
                (other.to_owned(), "0".repeat(64)),
                (std::env::consts::ARCH.to_owned(), "0".repeat(64)),
            ],
            other: None,
        };
        let err = source.encoded(other, &tools).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        let err = source.encoded(std::env::consts::ARCH, &tools).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn own_executable_is_sent_raw_when_it_matches() {
        let bytes = std::fs::read(SELF_EXE).unwrap();
        let sha = hex(&Sha256::digest(&bytes));
        let source = SelfImage {
            offered: vec![(std::env::consts::ARCH.to_owned(), sha)],
            other: Some(("riscv64".to_owned(), Codec::Gzip, vec![1, 2, 3])),
        };
        let (codec, other) = source.encoded("riscv64", &Tools::default()).unwrap();
        assert_eq!((codec, &*other), (Codec::Gzip, &[1u8, 2, 3][..]));
        let (codec, sent) = source
            .encoded(std::env::consts::ARCH, &Tools::default())
            .unwrap();
        assert_eq!(codec, Codec::Raw);
        assert_eq!(sent.len(), bytes.len());
    }
}
