//! From camera frames to RTP: the H.264, H.265 and AAC payloaders (and [`annex_b`], the same
//! video NAL units as a byte stream for frame taps), and [`RtpTimeline`], which keeps a
//! published track's sequence numbers and timestamps continuous across reconnects (a new RTSP
//! session restarts the camera's clock; the subscriber only sees a gap).

pub mod aac;
pub mod h264;
pub mod h265;

use std::time::Instant;

use bytes::Bytes;
use rtc::rtp;

/// Payload type written into packets (each subscriber leg rewrites it to its own).
pub const INGEST_PT: u8 = 96;

/// The outgoing sequence and timestamp space of one published track.
#[derive(Debug)]
pub struct RtpTimeline {
    clock_rate: u32,
    ssrc: u32,
    seq: u16,
    first_ts: u32,
    /// Added (wrapping) to the camera's elapsed timestamp in the current connection; `None`
    /// until the connection's first frame.
    offset: Option<u32>,
    /// The last timestamp written and when.
    last: Option<(u32, Instant)>,
}

impl RtpTimeline {
    /// A timeline with the given clock, SSRC, first sequence number and first timestamp.
    pub fn new(clock_rate: u32, ssrc: u32, first_seq: u16, first_ts: u32) -> RtpTimeline {
        RtpTimeline {
            clock_rate: clock_rate.max(1),
            ssrc,
            seq: first_seq,
            first_ts,
            offset: None,
            last: None,
        }
    }

    /// A random SSRC, sequence number and timestamp base.
    pub fn random(clock_rate: u32) -> RtpTimeline {
        Self::new(clock_rate, rand::random(), rand::random(), rand::random())
    }

    /// A new camera session begins: its clock is re-based on its first frame, continuing from
    /// the last timestamp written plus the wall-clock time since.
    pub fn reconnected(&mut self) {
        self.offset = None;
    }

    /// The outgoing timestamp of a frame `elapsed` camera ticks into the current session,
    /// observed at `now`.
    pub fn timestamp(&mut self, elapsed: i64, now: Instant) -> u32 {
        let offset = match self.offset {
            Some(o) => o,
            None => {
                let base = match self.last {
                    None => self.first_ts,
                    Some((ts, at)) => {
                        let gap = now.saturating_duration_since(at).as_secs_f64() * f64::from(self.clock_rate);
                        ts.wrapping_add((gap as u64).clamp(1, u64::from(u32::MAX / 2)) as u32)
                    }
                };
                let o = base.wrapping_sub(elapsed as u32);
                self.offset = Some(o);
                o
            }
        };
        let ts = (elapsed as u32).wrapping_add(offset);
        self.last = Some((ts, now));
        ts
    }

    /// The next packet of the track.
    pub fn packet(&mut self, payload: Bytes, marker: bool, timestamp: u32) -> rtp::Packet {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker,
                payload_type: INGEST_PT,
                sequence_number: seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        }
    }
}

/// An access unit's NAL units (from `h264::nal_units` or `h265::nal_units`) as an Annex B
/// byte stream: a 4-byte start code before each.
pub fn annex_b(nals: &[&[u8]]) -> Bytes {
    let mut out = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum());
    for nal in nals {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    Bytes::from(out)
}

/// Splits a NAL unit's `body` (its header removed) into fragmentation units, H.264 FU-A or
/// H.265 FU: each payload is `header` (the FU indicator or payload header), an FU header
/// (start and end bits over `nal_type`), then a slice of the body, `max_payload` bytes in all.
fn fragment_units(header: &[u8], nal_type: u8, body: &[u8], max_payload: usize, out: &mut Vec<Bytes>) {
    let chunk = max_payload.saturating_sub(header.len() + 1).max(1);
    let count = body.len().div_ceil(chunk);
    // One allocation for all of the unit's payloads, each a slice of it.
    let mut buf = bytes::BytesMut::with_capacity(body.len() + count * (header.len() + 1));
    for (i, part) in body.chunks(chunk).enumerate() {
        let mut fu_header = nal_type;
        if i == 0 {
            fu_header |= 0x80;
        }
        if i + 1 == count {
            fu_header |= 0x40;
        }
        buf.extend_from_slice(header);
        buf.extend_from_slice(&[fu_header]);
        buf.extend_from_slice(part);
        out.push(buf.split().freeze());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn annex_b_puts_a_start_code_before_each_nal_unit() {
        let sps: &[u8] = &[0x67, 0x42];
        let idr: &[u8] = &[0x65, 1, 2];
        assert_eq!(
            annex_b(&[sps, idr]).as_ref(),
            &[0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x65, 1, 2]
        );
        assert!(annex_b(&[]).is_empty());
    }

    #[test]
    fn continuous_across_reconnects() {
        let t0 = Instant::now();
        let mut tl = RtpTimeline::new(90_000, 7, 65_534, 1000);
        // First session: camera elapsed starts at 5000.
        assert_eq!(tl.timestamp(5000, t0), 1000);
        assert_eq!(tl.timestamp(8000, t0 + Duration::from_millis(33)), 4000);
        let p1 = tl.packet(Bytes::from_static(b"a"), false, 4000);
        let p2 = tl.packet(Bytes::from_static(b"b"), true, 4000);
        assert_eq!((p1.header.sequence_number, p2.header.sequence_number), (65_534, 65_535));
        // The camera drops; two seconds later a new session restarts its clock at 0.
        tl.reconnected();
        let ts = tl.timestamp(0, t0 + Duration::from_millis(2033));
        assert_eq!(ts, 4000 + 180_000);
        assert_eq!(tl.timestamp(3000, t0 + Duration::from_millis(2066)), 4000 + 183_000);
        assert_eq!(tl.packet(Bytes::new(), true, ts).header.sequence_number, 0);
    }

    #[test]
    fn timestamps_wrap() {
        let t0 = Instant::now();
        let mut tl = RtpTimeline::new(90_000, 1, 0, u32::MAX - 10);
        assert_eq!(tl.timestamp(0, t0), u32::MAX - 10);
        assert_eq!(tl.timestamp(20, t0), 9);
    }
}
