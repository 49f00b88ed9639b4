//! Incremental UTF-8 checking for text channels.
//!
//! Reads from a pipe or socket split the data at arbitrary places, so a code point may straddle
//! two chunks. [`Utf8Check`] holds back an incomplete tail (at most three bytes) until the
//! next chunk completes it, and reports invalid data as an error.

use bytes::{BufMut, Bytes, BytesMut};

/// The data is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("channel data is not valid UTF-8")]
pub struct InvalidUtf8;

#[derive(Debug, Default)]
pub struct Utf8Check {
    tail: [u8; 4],
    tail_len: usize,
}

impl Utf8Check {
    pub fn new() -> Self {
        Self::default()
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
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// The stream ended: an incomplete code point left over is an error.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        if self.tail_len == 0 {
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
