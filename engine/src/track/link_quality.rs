//! How well a participant's links carry media: the loss on a publisher's uplink, counted from
//! the gaps in each layer's sequence numbers by the reader task ([`SeqLoss`], atomics only),
//! and on a viewer's downlink, from the loss its receiver reports give; graded into a
//! [`Quality`] for the room's `connection_quality` events. Pure logic; no I/O.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Loss below this is excellent.
const GOOD_LOSS: f64 = 0.02;
/// Loss at or above this is poor.
const POOR_LOSS: f64 = 0.10;
/// `last` before the first packet.
const NONE: u32 = u32::MAX;

/// A link's grade, as LiveKit's connection quality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Poor,
    Good,
    Excellent,
}

impl Quality {
    /// The grade of a link losing `loss` (0 to 1) of its packets.
    pub fn of_loss(loss: f64) -> Quality {
        if loss >= POOR_LOSS {
            Quality::Poor
        } else if loss >= GOOD_LOSS {
            Quality::Good
        } else {
            Quality::Excellent
        }
    }
}

/// Packets expected and received on one RTP stream, from its sequence numbers. Written by
/// one task (the reader), taken by another (the room).
#[derive(Debug)]
pub struct SeqLoss {
    last: AtomicU32,
    expected: AtomicU64,
    received: AtomicU64,
}

impl Default for SeqLoss {
    fn default() -> Self {
        SeqLoss {
            last: AtomicU32::new(NONE),
            expected: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }
}

impl SeqLoss {
    /// Counts a packet with sequence number `seq`: a jump forward expects the packets skipped,
    /// a late or repeated one expects nothing more.
    pub fn observe(&self, seq: u16) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let last = self.last.load(Ordering::Relaxed);
        let ahead = if last == NONE {
            1
        } else {
            i64::from(seq.wrapping_sub(last as u16) as i16)
        };
        if ahead > 0 {
            self.expected.fetch_add(ahead as u64, Ordering::Relaxed);
            self.last.store(u32::from(seq), Ordering::Relaxed);
        }
    }

    /// (expected, received) since the last call.
    pub fn take(&self) -> (u64, u64) {
        (
            self.expected.swap(0, Ordering::Relaxed),
            self.received.swap(0, Ordering::Relaxed),
        )
    }
}

/// The share lost of `expected` packets when `received` came (repeats count once at most).
pub fn loss(expected: u64, received: u64) -> Option<f64> {
    (expected > 0).then(|| expected.saturating_sub(received) as f64 / expected as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_loss_and_late_or_repeated_packets_are_not() {
        let s = SeqLoss::default();
        for seq in [65_530u16, 65_531, 65_534, 65_535, 0, 3, 2, 3] {
            s.observe(seq);
        }
        // 65530..=3 expects 10; 8 came (2 of them late or repeated).
        let (expected, received) = s.take();
        assert_eq!((expected, received), (10, 8));
        assert_eq!(loss(expected, received), Some(0.2));
        assert_eq!(s.take(), (0, 0));
        assert_eq!(loss(0, 0), None);
        assert_eq!(loss(5, 7), Some(0.0), "repeats never make a gain");
    }

    #[test]
    fn loss_grades_the_link() {
        assert_eq!(Quality::of_loss(0.0), Quality::Excellent);
        assert_eq!(Quality::of_loss(0.05), Quality::Good);
        assert_eq!(Quality::of_loss(0.3), Quality::Poor);
        assert!(Quality::Poor < Quality::Good && Quality::Good < Quality::Excellent);
    }
}
