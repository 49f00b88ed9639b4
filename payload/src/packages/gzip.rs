//! Reading gzip files (RFC 1952), for the places where Cockpit serves a package file's
//! content rather than the file: translations of manifests (`manifests-i18n.js`), the
//! concatenated `*/po.js`, and a `.gz` file asked for without `gzip` in `Accept-Encoding`.
//! The inflating is `miniz_oxide`'s (pure Rust).

/// Largest content accepted from one gzip file.
pub const MAX_SIZE: usize = 64 << 20;

/// Why a gzip file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GzipError {
    #[error("not a gzip file")]
    Header,
    #[error("corrupt gzip data")]
    Data,
    #[error("gzip data larger than {MAX_SIZE} bytes")]
    TooLarge,
    #[error("gzip size check failed")]
    Size,
}

const FHCRC: u8 = 1 << 1;
const FEXTRA: u8 = 1 << 2;
const FNAME: u8 = 1 << 3;
const FCOMMENT: u8 = 1 << 4;

/// The content of a gzip file's first member; its length is checked against the trailer.
pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, GzipError> {
    if data.len() < 18 || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8 {
        return Err(GzipError::Header);
    }
    let flags = data[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = usize::from(u16::from_le_bytes([
            *data.get(at).ok_or(GzipError::Header)?,
            *data.get(at + 1).ok_or(GzipError::Header)?,
        ]));
        at += 2 + len;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = data
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
                .ok_or(GzipError::Header)?;
            at += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    let body = data.get(at..).ok_or(GzipError::Header)?;
    let out =
        miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_SIZE).map_err(|e| match e
            .status
        {
            miniz_oxide::inflate::TINFLStatus::HasMoreOutput => GzipError::TooLarge,
            _ => GzipError::Data,
        })?;
    // ISIZE, the last four bytes of a single-member file: the length modulo 2^32.
    let tail = &data[data.len() - 4..];
    let isize = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if isize != out.len() as u32 {
        return Err(GzipError::Size);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hello, gzip\n` compressed by Python's `gzip` with the file name `h.txt`.
    const HELLO: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x08, 0x00, 0x00, 0x00, 0x00, 0x02, 0xff, 0x68, 0x2e, 0x74, 0x78, 0x74,
        0x00, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0xd7, 0x51, 0x48, 0xaf, 0xca, 0x2c, 0xe0, 0x02, 0x00,
        0x86, 0x1f, 0x82, 0xa4, 0x0c, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn reads_a_member_with_a_name() {
        assert_eq!(gunzip(HELLO).unwrap(), b"hello, gzip\n");
    }

    #[test]
    fn rejects_what_is_not_gzip() {
        assert_eq!(gunzip(b"plain text, long enough"), Err(GzipError::Header));
        let mut bad = HELLO.to_vec();
        let n = bad.len();
        bad[n - 4] ^= 1;
        assert_eq!(gunzip(&bad), Err(GzipError::Size));
        let mut bad = HELLO.to_vec();
        bad[17] = 0xff;
        assert!(gunzip(&bad).is_err());
    }
}
