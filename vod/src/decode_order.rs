//! Decode timestamps for live video. RTP carries presentation times only, and frames arrive in
//! decode order. Without B-frames the two orders agree and the decode time is the presentation
//! time. Once a frame arrives that displays before one already received (B-frames), the stream
//! is reordered: from its next keyframe on, frames are held [`DEPTH`] frames and each is given
//! the next-smallest presentation time, moved back by `DEPTH` frame durations, as its decode
//! time. That is monotonic and never after the frame's own presentation time while the stream
//! reorders by at most `DEPTH` frames (B-pyramids of common encoders reorder by 2 or 3).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::frame::{Frame, CLOCK_HZ};

/// Frames held once the stream is known to reorder.
pub const DEPTH: usize = 4;
/// A step back larger than this is a timestamp jump (a new source), not reordering.
const JUMP_BACK: i64 = CLOCK_HZ;
/// Frame duration assumed until one is measured (30 fps).
const DEFAULT_DURATION: i64 = CLOCK_HZ / 30;

/// Turns video frames in decode order into `(frame, decode time)`.
#[derive(Debug)]
pub struct DecodeTimes {
    /// A frame displayed before an earlier-received one was seen.
    reordering: bool,
    /// Holding frames (from the first keyframe after reordering was seen).
    holding: bool,
    held: VecDeque<Frame>,
    pts_heap: BinaryHeap<Reverse<i64>>,
    /// Largest presentation time received.
    max_pts: Option<i64>,
    /// The previous frame's presentation time (decode order), for the duration estimate.
    prev_pts: Option<i64>,
    /// Smallest positive step between presentation times seen.
    duration: i64,
    last_dts: Option<i64>,
}

impl Default for DecodeTimes {
    fn default() -> Self {
        DecodeTimes {
            reordering: false,
            holding: false,
            held: VecDeque::new(),
            pts_heap: BinaryHeap::new(),
            max_pts: None,
            prev_pts: None,
            duration: DEFAULT_DURATION,
            last_dts: None,
        }
    }
}

impl DecodeTimes {
    /// Whether frames are being held (the stream has B-frames).
    pub fn reorders(&self) -> bool {
        self.holding
    }

    /// Takes the next frame in decode order; returns the frames whose decode time is known.
    /// Between the first reordered frame and the next keyframe, frames are dropped (their
    /// decode times cannot be known without holding frames from a keyframe on).
    pub fn push(&mut self, frame: Frame) -> Vec<(Frame, i64)> {
        let mut out = Vec::new();
        if let Some(max) = self.max_pts {
            if max - frame.pts > JUMP_BACK {
                // Timestamps started over: emit what is held, start afresh (reordering stays
                // known: the encoder is the same).
                self.drain(&mut out);
                let reordering = self.reordering;
                *self = DecodeTimes {
                    reordering,
                    duration: self.duration,
                    ..DecodeTimes::default()
                };
            } else if frame.pts < max {
                self.reordering = true;
            }
        }
        if let Some(prev) = self.prev_pts {
            let step = (frame.pts - prev).abs();
            if step > 0 {
                self.duration = self.duration.min(step).max(CLOCK_HZ / 240);
            }
        }
        self.prev_pts = Some(frame.pts);
        self.max_pts = Some(self.max_pts.map_or(frame.pts, |m| m.max(frame.pts)));
        if !self.holding {
            if !self.reordering {
                let dts = frame.pts;
                self.last_dts = Some(dts);
                out.push((frame, dts));
                return out;
            }
            if !frame.keyframe {
                return out;
            }
            self.holding = true;
        }
        self.pts_heap.push(Reverse(frame.pts));
        self.held.push_back(frame);
        while self.held.len() > DEPTH {
            self.release(&mut out);
        }
        out
    }

    /// Emits every held frame (end of stream or a timestamp jump).
    fn drain(&mut self, out: &mut Vec<(Frame, i64)>) {
        while !self.held.is_empty() {
            self.release(out);
        }
    }

    /// Emits the oldest held frame with the next-smallest presentation time, moved back by
    /// `DEPTH` frame durations, as its decode time (kept increasing and never after its pts).
    fn release(&mut self, out: &mut Vec<(Frame, i64)>) {
        let (Some(frame), Some(Reverse(pts))) = (self.held.pop_front(), self.pts_heap.pop()) else {
            return;
        };
        let mut dts = pts - DEPTH as i64 * self.duration;
        if let Some(last) = self.last_dts {
            dts = dts.max(last + 1);
        }
        dts = dts.min(frame.pts);
        self.last_dts = Some(dts);
        out.push((frame, dts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Codec;
    use bytes::Bytes;

    fn frame(pts: i64, keyframe: bool) -> Frame {
        Frame {
            codec: Codec::H264,
            pts,
            keyframe,
            data: Bytes::new(),
        }
    }

    #[test]
    fn without_b_frames_decode_time_is_presentation_time_at_once() {
        let mut d = DecodeTimes::default();
        for i in 0..10 {
            let out = d.push(frame(i * 3000, i == 0));
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].1, i * 3000);
        }
        assert!(!d.reorders());
    }

    #[test]
    fn b_frames_get_monotonic_decode_times_not_after_their_pts() {
        let mut d = DecodeTimes::default();
        // I P B B P B B ... in decode order (display order I B B P B B P), 30 fps.
        let gop = |base: i64| {
            vec![
                (base, true),
                (base + 9000, false),
                (base + 3000, false),
                (base + 6000, false),
                (base + 18000, false),
                (base + 12000, false),
                (base + 15000, false),
            ]
        };
        let mut out = Vec::new();
        // The first GOP shows the reordering; frames until the next keyframe are dropped.
        for (pts, key) in gop(0).into_iter().chain(gop(21000)).chain(gop(42000)) {
            out.extend(d.push(frame(pts, key)));
        }
        assert!(d.reorders());
        let first_held = out.iter().position(|(f, _)| f.pts == 21000).expect("the second GOP");
        let timed = &out[first_held..];
        assert_eq!(timed.len(), 7 + 7 - DEPTH, "{timed:?}");
        for w in timed.windows(2) {
            assert!(
                w[1].1 > w[0].1,
                "decode times increase: {:?}",
                timed.iter().map(|t| t.1).collect::<Vec<_>>()
            );
        }
        for (f, dts) in timed {
            assert!(*dts <= f.pts, "dts {dts} after pts {}", f.pts);
        }
    }

    #[test]
    fn a_timestamp_jump_is_not_reordering() {
        let mut d = DecodeTimes::default();
        assert_eq!(d.push(frame(900_000, true)).len(), 1);
        assert_eq!(d.push(frame(903_000, false)).len(), 1);
        // A new source starting at 0: passed at once, no reordering assumed.
        let out = d.push(frame(0, true));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, 0);
        assert!(!d.reorders());
    }
}
