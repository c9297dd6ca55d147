//! Frame taps: a local source's frames handed whole to consumers that want frames rather than
//! RTP (live HLS, recordings), so they need not depacketize what the source has just
//! packetized. Only a local source (an RTSP ingest) has frames to give; a WebRTC publisher's
//! track is tapped as packets ([`super::Fanout::tap`]).

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

/// One access unit (video) or codec frame (audio) of a local source: what a depacketizer would
/// rebuild from the packets the source sends for it.
#[derive(Clone, Debug)]
pub struct SourceFrame {
    /// The RTP timestamp its packets carry, on the track's clock.
    pub timestamp: u32,
    /// A picture a decoder can start from (always true for audio).
    pub keyframe: bool,
    /// H.264 and H.265: the access unit as an Annex B byte stream (start codes), parameter sets
    /// before each keyframe's pictures. AAC: the raw frame (no ADTS, no RTP AU header). G.711
    /// and Opus: the frame as its RTP payload carries it.
    pub data: Bytes,
}

/// One frame tap: a tap that could not take a frame skips video until the next keyframe, as
/// the frames after a lost one refer to it.
struct FrameTap {
    tx: mpsc::Sender<SourceFrame>,
    resync: bool,
}

/// A track's frame taps.
#[derive(Default)]
pub(super) struct FrameTaps(Mutex<Vec<FrameTap>>);

impl FrameTaps {
    /// A new tap holding up to `capacity` frames.
    pub(super) fn open(&self, capacity: usize) -> mpsc::Receiver<SourceFrame> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        if let Ok(mut taps) = self.0.lock() {
            taps.push(FrameTap { tx, resync: false });
        }
        rx
    }

    /// Whether any tap is open (a source builds frames only then).
    pub(super) fn any(&self) -> bool {
        self.0.lock().is_ok_and(|t| !t.is_empty())
    }

    /// Hands `frame` to every tap; returns how many could not take it. Closed taps go.
    pub(super) fn send(&self, frame: &SourceFrame) -> u64 {
        let Ok(mut taps) = self.0.lock() else { return 0 };
        let mut dropped = 0;
        taps.retain_mut(|tap| {
            if tap.resync && !frame.keyframe {
                dropped += 1;
                return !tap.tx.is_closed();
            }
            match tap.tx.try_send(frame.clone()) {
                Ok(()) => {
                    tap.resync = false;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tap.resync = true;
                    dropped += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        dropped
    }

    /// Ends every tap.
    pub(super) fn close(&self) {
        if let Ok(mut taps) = self.0.lock() {
            taps.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(timestamp: u32, keyframe: bool) -> SourceFrame {
        SourceFrame {
            timestamp,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        }
    }

    #[test]
    fn a_full_tap_skips_to_the_next_keyframe_and_a_closed_one_goes() {
        let taps = FrameTaps::default();
        let mut rx = taps.open(2);
        assert!(taps.any());
        assert_eq!(taps.send(&frame(0, true)), 0);
        assert_eq!(taps.send(&frame(1, false)), 0);
        // Full: this frame is lost, so the next delta frame is useless too.
        assert_eq!(taps.send(&frame(2, false)), 1);
        assert_eq!(rx.try_recv().map(|f| f.timestamp).ok(), Some(0));
        assert_eq!(rx.try_recv().map(|f| f.timestamp).ok(), Some(1));
        assert_eq!(taps.send(&frame(3, false)), 1);
        assert!(rx.try_recv().is_err());
        assert_eq!(taps.send(&frame(4, true)), 0);
        assert_eq!(taps.send(&frame(5, false)), 0);
        assert_eq!(rx.try_recv().map(|f| f.timestamp).ok(), Some(4));
        assert_eq!(rx.try_recv().map(|f| f.timestamp).ok(), Some(5));
        drop(rx);
        assert_eq!(taps.send(&frame(6, true)), 0);
        assert!(!taps.any());
    }
}
