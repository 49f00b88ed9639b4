//! Incremental UTF-8 checking for text channels.
//!
//! Reads from a pipe or socket split the data at arbitrary places, so a code point may straddle
//! two chunks. [`Utf8Check`] holds back an incomplete tail (at most three bytes) until the
//! next chunk completes it, and reports invalid data as an error; or, in the lossy mode that
//! terminals use ([`Utf8Check::lossy`]), replaces it with U+FFFD.

use bytes::{BufMut, Bytes, BytesMut};

/// The data is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("channel data is not valid UTF-8")]
pub struct InvalidUtf8;

#[derive(Debug, Default)]
pub struct Utf8Check {
    tail: [u8; 4],
    tail_len: usize,
    lossy: bool,
}

/// U+FFFD REPLACEMENT CHARACTER in UTF-8.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

impl Utf8Check {
    pub fn new() -> Self {
        Self::default()
    }

    /// A check that never fails: each maximal invalid sequence becomes U+FFFD (as
    /// `String::from_utf8_lossy` does, and as cockpit-bridge 287 does for a terminal), so that
    /// a terminal survives `cat` of a binary file. An incomplete code point at the end of the
    /// stream is one more U+FFFD ([`Utf8Check::finish_lossy`]).
    pub fn lossy() -> Self {
        Self {
            lossy: true,
            ..Self::default()
        }
    }

    /// Is this the lossy mode?
    pub fn is_lossy(&self) -> bool {
        self.lossy
    }

    /// Bytes held back because they end in the middle of a code point.
    pub fn pending(&self) -> usize {
        self.tail_len
    }

    /// Check the next chunk. Returns the longest complete UTF-8 prefix of everything seen so
    /// far that was not returned yet; an incomplete code point at the end is kept for later.
    pub fn push(&mut self, data: Bytes) -> Result<Bytes, InvalidUtf8> {
        let mut data = if self.tail_len == 0 {
            data
        } else {
            let mut joined = BytesMut::with_capacity(self.tail_len + data.len());
            joined.put_slice(&self.tail[..self.tail_len]);
            joined.put_slice(&data);
            self.tail_len = 0;
            joined.freeze()
        };
        match std::str::from_utf8(&data) {
            Ok(_) => Ok(data),
            Err(e) if e.error_len().is_none() => {
                // Incomplete sequence at the end: at most 3 bytes.
                let keep = data.split_off(e.valid_up_to());
                self.tail[..keep.len()].copy_from_slice(&keep);
                self.tail_len = keep.len();
                Ok(data)
            }
            Err(_) if self.lossy => Ok(self.replace_invalid(&data)),
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// `data` with each maximal invalid sequence replaced by U+FFFD; an incomplete code point
    /// at the end is kept for the next chunk.
    fn replace_invalid(&mut self, data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(data.len() + REPLACEMENT.len());
        let mut rest = data;
        loop {
            match std::str::from_utf8(rest) {
                Ok(_) => {
                    out.put_slice(rest);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.put_slice(valid);
                    match e.error_len() {
                        Some(n) => {
                            out.put_slice(REPLACEMENT);
                            rest = &after[n..];
                        }
                        None => {
                            self.tail[..after.len()].copy_from_slice(after);
                            self.tail_len = after.len();
                            break;
                        }
                    }
                }
            }
        }
        out.freeze()
    }

    /// The stream ended, lossy mode: U+FFFD for an incomplete code point left over, if any.
    pub fn finish_lossy(&mut self) -> Option<Bytes> {
        if !self.lossy || self.tail_len == 0 {
            return None;
        }
        self.tail_len = 0;
        Some(Bytes::from_static(REPLACEMENT))
    }

    /// The stream ended: an incomplete code point left over is an error (in lossy mode it is
    /// dropped; see [`Utf8Check::finish_lossy`] to send its U+FFFD first).
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        if self.tail_len == 0 || self.lossy {
            self.tail_len = 0;
            Ok(())
        } else {
            self.tail_len = 0;
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> Result<Vec<u8>, InvalidUtf8> {
        let mut c = Utf8Check::new();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&c.push(Bytes::copy_from_slice(chunk))?);
        }
        c.finish()?;
        Ok(out)
    }

    #[test]
    fn ascii_and_whole_code_points_pass_unchanged() {
        assert_eq!(
            feed(&[b"abc", "é€😀".as_bytes()]).unwrap(),
            "abcé€😀".as_bytes()
        );
        assert_eq!(feed(&[b""]).unwrap(), b"");
    }

    #[test]
    fn code_points_split_at_every_position() {
        let text = "a😀b€cé".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let out = feed(&[&text[..i], &text[i..j], &text[j..]]).unwrap();
                assert_eq!(out, text, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let text = "😀€é".as_bytes();
        let mut c = Utf8Check::new();
        let mut out = Vec::new();
        for b in text {
            let got = c.push(Bytes::copy_from_slice(&[*b])).unwrap();
            out.extend_from_slice(&got);
        }
        assert_eq!(c.pending(), 0);
        assert_eq!(out, text);
    }

    #[test]
    fn holds_back_only_the_incomplete_tail() {
        let mut c = Utf8Check::new();
        let euro = "€".as_bytes();
        let got = c.push(Bytes::from(vec![b'x', euro[0], euro[1]])).unwrap();
        assert_eq!(&got[..], b"x");
        assert_eq!(c.pending(), 2);
        let got = c.push(Bytes::from(vec![euro[2], b'y'])).unwrap();
        assert_eq!(&got[..], "€y".as_bytes());
    }

    #[test]
    fn lossy_mode_replaces_invalid_sequences_and_keeps_the_rest() {
        let feed_lossy = |chunks: &[&[u8]]| {
            let mut c = Utf8Check::lossy();
            let mut out = Vec::new();
            for chunk in chunks {
                out.extend_from_slice(&c.push(Bytes::copy_from_slice(chunk)).unwrap());
            }
            if let Some(rest) = c.finish_lossy() {
                out.extend_from_slice(&rest);
            }
            assert_eq!(c.finish(), Ok(()));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(feed_lossy(&[b"a\xffb"]), "a\u{FFFD}b");
        assert_eq!(feed_lossy(&[b"a\xff", b"\xfeb\0"]), "a\u{FFFD}\u{FFFD}b\0");
        // A code point split across chunks is still whole; one cut short is replaced.
        assert_eq!(feed_lossy(&[b"x\xe2\x82", b"\xacy"]), "x€y");
        assert_eq!(feed_lossy(&[b"x\xe2\x82", b"y"]), "x\u{FFFD}y");
        assert_eq!(feed_lossy(&[b"end\xe2\x82"]), "end\u{FFFD}");
        // The same as the standard library's lossy decoding, for every byte value.
        let all: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        assert_eq!(feed_lossy(&[&all]), String::from_utf8_lossy(&all));
    }

    #[test]
    fn rejects_invalid_data() {
        assert_eq!(feed(&[b"ab\xffcd"]), Err(InvalidUtf8));
        assert_eq!(feed(&[b"\xc3", b"("]), Err(InvalidUtf8));
        // Overlong encoding and surrogates are not UTF-8.
        assert_eq!(feed(&[b"\xc0\xaf"]), Err(InvalidUtf8));
        assert_eq!(feed(&[b"\xed\xa0\x80"]), Err(InvalidUtf8));
        // Truncated at the end of the stream.
        assert_eq!(feed(&[b"ok\xe2\x82"]), Err(InvalidUtf8));
    }
}
