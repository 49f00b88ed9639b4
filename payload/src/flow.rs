//! Send-side flow control arithmetic.
//!
//! A channel opened with `"flow-control": true` counts the bytes it sends. Each time the count
//! crosses a [`BLOCK_SIZE`] boundary it sends a channel `ping` carrying the count as `sequence`.
//! The peer answers with a `pong` carrying the same `sequence` once it has consumed the data up
//! to there. The sender may run at most [`WINDOW`] bytes ahead of the highest answered sequence.

/// A `ping` is sent each time the byte count crosses a multiple of this.
pub const BLOCK_SIZE: u64 = 16 * 1024;

/// How far the sender may run ahead of the last `pong`.
pub const WINDOW: u64 = 2 * 1024 * 1024;

/// Byte counting for one channel's outgoing data.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    /// Bytes sent so far.
    sent: u64,
    /// Highest `sequence` the peer answered.
    acked: u64,
}

impl SendWindow {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count `len` more bytes as sent. Returns the `sequence` to put in a `ping` when this
    /// crossed a block boundary.
    pub fn sent(&mut self, len: usize) -> Option<u64> {
        let before = self.sent;
        self.sent = self.sent.saturating_add(len as u64);
        (before / BLOCK_SIZE != self.sent / BLOCK_SIZE).then_some(self.sent)
    }

    /// The peer answered `sequence`. A stale or bogus answer never shrinks the window.
    pub fn pong(&mut self, sequence: u64) {
        // A peer cannot acknowledge what was never sent.
        let sequence = sequence.min(self.sent);
        self.acked = self.acked.max(sequence);
    }

    /// May more data be sent now?
    pub fn is_open(&self) -> bool {
        self.sent < self.acked.saturating_add(WINDOW)
    }

    /// Bytes that may still be sent before the window closes.
    pub fn room(&self) -> u64 {
        self.acked.saturating_add(WINDOW).saturating_sub(self.sent)
    }

    /// Bytes sent so far.
    pub fn sequence(&self) -> u64 {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_on_block_boundaries_only() {
        let mut w = SendWindow::new();
        assert_eq!(w.sent(100), None);
        assert_eq!(w.sent(16 * 1024 - 101), None);
        assert_eq!(w.sequence(), 16 * 1024 - 1);
        assert_eq!(w.sent(1), Some(16 * 1024));
        assert_eq!(w.sent(1), None);
        // One big write that spans several blocks yields one ping.
        assert_eq!(w.sent(100_000), Some(16 * 1024 + 1 + 100_000));
        assert_eq!(w.sent(0), None);
    }

    #[test]
    fn window_closes_at_two_mib_and_pong_reopens_it() {
        let mut w = SendWindow::new();
        let mut pings = Vec::new();
        while w.is_open() {
            if let Some(seq) = w.sent(4096) {
                pings.push(seq);
            }
        }
        assert_eq!(w.sequence(), WINDOW);
        assert_eq!(pings.len() as u64, WINDOW / BLOCK_SIZE);
        assert_eq!(pings[0], BLOCK_SIZE);
        // Answering the first ping moves the window by one block.
        w.pong(pings[0]);
        assert!(w.is_open());
        while w.is_open() {
            w.sent(4096);
        }
        assert_eq!(w.sequence(), WINDOW + BLOCK_SIZE);
    }

    #[test]
    fn stale_or_bogus_pongs_never_shrink_or_overextend() {
        let mut w = SendWindow::new();
        w.sent(WINDOW as usize);
        assert!(!w.is_open());
        w.pong(BLOCK_SIZE * 3);
        assert!(w.is_open());
        w.pong(BLOCK_SIZE); // stale: ignored
        w.sent((BLOCK_SIZE * 3) as usize - 1);
        assert!(w.is_open());
        w.sent(1);
        assert!(!w.is_open());
        // A pong for bytes never sent only acknowledges what was sent.
        w.pong(u64::MAX);
        assert!(w.is_open());
        w.sent(WINDOW as usize);
        assert!(!w.is_open());
    }

    #[test]
    fn oversized_single_send_is_allowed_then_blocks() {
        let mut w = SendWindow::new();
        assert!(w.is_open());
        w.sent(5 * WINDOW as usize);
        assert!(!w.is_open());
        w.pong(4 * WINDOW + 1);
        assert!(w.is_open());
    }
}
