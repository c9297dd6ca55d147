//! H.264 helpers for media tests: read an Annex-B file into access units (one per frame),
//! packetize them into RTP (RFC 6184: single NAL, STAP-A, FU-A) and, on the receiving side,
//! reassemble RTP back into frames so tests can count complete frames and keyframes.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;

/// NAL unit type of a coded slice of a non-IDR picture.
pub const NAL_SLICE: u8 = 1;
/// NAL unit type of a coded slice of an IDR picture (a keyframe).
pub const NAL_IDR: u8 = 5;
/// NAL unit type of an SEI message.
pub const NAL_SEI: u8 = 6;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 9;
/// RTP payload type 24: STAP-A aggregation packet.
pub const NAL_STAP_A: u8 = 24;
/// RTP payload type 28: FU-A fragmentation unit.
pub const NAL_FU_A: u8 = 28;

/// RTP clock rate of video.
pub const CLOCK_RATE: u32 = 90_000;
/// Largest RTP payload the packetizer emits, so that a packet with its 12-byte header stays
/// within 1200 bytes.
pub const RTP_PAYLOAD_MTU: usize = 1200 - 12;

/// The NAL unit type (low five bits of the NAL header byte).
pub fn nal_type(header: u8) -> u8 {
    header & 0x1f
}

/// The test fixture: 640x360, 30 fps, 120 frames, GOP 30, baseline, SPS/PPS before every IDR.
pub fn fixture_path() -> PathBuf {
    crate::workspace().join("assets/media/360p30-h264.h264")
}

/// One coded picture: its NAL units (without start codes), in decoding order. SPS, PPS, SEI
/// and AUD units belong to the picture that follows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// NAL units without start codes.
    pub nalus: Vec<Bytes>,
    /// Whether the picture contains an IDR slice.
    pub keyframe: bool,
}

impl AccessUnit {
    /// The access unit as an Annex-B byte stream (4-byte start codes).
    pub fn to_annexb(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.nalus.iter().map(|n| n.len() + 4).sum());
        for n in &self.nalus {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(n);
        }
        out.freeze()
    }

    /// Total size of the NAL units in bytes.
    pub fn len(&self) -> usize {
        self.nalus.iter().map(Bytes::len).sum()
    }

    /// Whether the access unit has no NAL units.
    pub fn is_empty(&self) -> bool {
        self.nalus.is_empty()
    }
}

/// Splits an Annex-B byte stream into NAL units (start codes and trailing zero bytes removed).
pub fn split_annexb(data: &Bytes) -> Vec<Bytes> {
    let mut starts = Vec::new(); // offsets of the first byte after each 00 00 01
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map(|&n| n - 3).unwrap_or(data.len());
        while end > s && data[end - 1] == 0 {
            end -= 1; // the leading zero of a 4-byte start code, or trailing_zero_8bits
        }
        if end > s {
            out.push(data.slice(s..end));
        }
    }
    out
}

/// Groups NAL units into access units (H.264 7.4.1.2.3): a new picture starts at a VCL NAL
/// unit with `first_mb_in_slice == 0`, or at an SPS/PPS/SEI/AUD after the current picture's slices.
pub fn group_access_units(nalus: Vec<Bytes>) -> Vec<AccessUnit> {
    let mut out = Vec::new();
    let mut cur: Vec<Bytes> = Vec::new();
    let mut cur_has_vcl = false;
    let mut cur_key = false;
    for nal in nalus {
        let Some(&hdr) = nal.first() else { continue };
        let t = nal_type(hdr);
        let is_vcl = (1..=5).contains(&t);
        let starts_new = if is_vcl {
            // first_mb_in_slice is ue(v); it is 0 exactly when its first bit is 1.
            cur_has_vcl && nal.get(1).is_some_and(|b| b & 0x80 != 0)
        } else {
            cur_has_vcl && matches!(t, 6..=9 | 14..=18)
        };
        if starts_new {
            out.push(AccessUnit {
                nalus: std::mem::take(&mut cur),
                keyframe: cur_key,
            });
            cur_has_vcl = false;
            cur_key = false;
        }
        cur_has_vcl |= is_vcl;
        cur_key |= t == NAL_IDR;
        cur.push(nal);
    }
    if !cur.is_empty() {
        out.push(AccessUnit {
            nalus: cur,
            keyframe: cur_key,
        });
    }
    out
}

/// Reads an Annex-B H.264 file into access units.
pub fn read_access_units(path: &Path) -> std::io::Result<Vec<AccessUnit>> {
    let data = Bytes::from(std::fs::read(path)?);
    Ok(group_access_units(split_annexb(&data)))
}

/// Index of the first keyframe strictly after `idx`, wrapping around; `idx` itself when it is
/// the only keyframe, or `None` when there is none.
pub fn next_keyframe(aus: &[AccessUnit], idx: usize) -> Option<usize> {
    let n = aus.len();
    (1..=n).map(|k| (idx + k) % n).find(|&i| aus[i].keyframe)
}

/// Turns access units into RTP packets: SPS+PPS as one STAP-A, other NAL units as single-NAL
/// packets or FU-A fragments; the marker bit on each picture's last packet. Sequence numbers
/// continue across calls.
pub struct Packetizer {
    payloader: H264Payloader,
    mtu: usize,
    /// Payload type written into every packet.
    pub payload_type: u8,
    /// SSRC written into every packet.
    pub ssrc: u32,
    seq: u16,
}

impl Packetizer {
    /// A packetizer with the given header fields and first sequence number, and payloads of at
    /// most [`RTP_PAYLOAD_MTU`] bytes.
    pub fn new(payload_type: u8, ssrc: u32, first_seq: u16) -> Self {
        Packetizer {
            payloader: H264Payloader::default(),
            mtu: RTP_PAYLOAD_MTU,
            payload_type,
            ssrc,
            seq: first_seq,
        }
    }

    /// Sets the largest payload size.
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    /// The sequence number the next packet will get.
    pub fn next_sequence(&self) -> u16 {
        self.seq
    }

    /// Packetizes one picture with RTP timestamp `timestamp`.
    pub fn packetize(&mut self, au: &AccessUnit, timestamp: u32) -> Result<Vec<rtp::Packet>, String> {
        let payloads = self
            .payloader
            .payload(self.mtu, &au.to_annexb())
            .map_err(|e| e.to_string())?;
        let n = payloads.len();
        Ok(payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let seq = self.seq;
                self.seq = self.seq.wrapping_add(1);
                rtp::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        marker: i + 1 == n,
                        payload_type: self.payload_type,
                        sequence_number: seq,
                        timestamp,
                        ssrc: self.ssrc,
                        ..Default::default()
                    },
                    payload,
                }
            })
            .collect())
    }
}

/// Whether an H.264 RTP payload starts a NAL unit (single NAL, STAP-A, or the first FU-A fragment).
pub fn payload_starts_nal(payload: &[u8]) -> bool {
    match payload.first().map(|&b| nal_type(b)) {
        Some(1..=23) | Some(NAL_STAP_A) => true,
        Some(NAL_FU_A) => payload.get(1).is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// Whether an H.264 RTP payload carries (part of) an IDR slice, looking inside STAP-A and FU-A.
pub fn payload_has_idr(payload: &[u8]) -> bool {
    match payload.first().map(|&b| nal_type(b)) {
        Some(NAL_IDR) => true,
        Some(NAL_FU_A) => payload.get(1).is_some_and(|&b| nal_type(b) == NAL_IDR),
        Some(NAL_STAP_A) => stap_a_units(payload)
            .iter()
            .any(|n| n.first().is_some_and(|&b| nal_type(b) == NAL_IDR)),
        _ => false,
    }
}

/// The NAL units inside a STAP-A payload (stops at the first malformed length).
fn stap_a_units(payload: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 1;
    while i + 2 <= payload.len() {
        let len = u16::from_be_bytes([payload[i], payload[i + 1]]) as usize;
        i += 2;
        if len == 0 || i + len > payload.len() {
            break;
        }
        out.push(&payload[i..i + len]);
        i += len;
    }
    out
}

/// A picture reassembled from RTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// RTP timestamp.
    pub timestamp: u32,
    /// Whether an IDR slice was present.
    pub keyframe: bool,
    /// The NAL units, without start codes.
    pub nalus: Vec<Bytes>,
}

/// Receive-side H.264 depacketizer and frame counter for one SSRC. A frame counts as complete
/// when every packet of its timestamp arrived in sequence, starting with the beginning of a NAL
/// unit right after the previous frame, and ending with the marker bit.
#[derive(Debug, Default)]
pub struct FrameCounter {
    last_seq: Option<u16>,
    cur: Option<PartialFrame>,
    /// Complete frames.
    pub frames: u64,
    /// Complete frames that contain an IDR slice.
    pub keyframes: u64,
    /// Frames abandoned because of a gap, a missing start or a missing marker.
    pub incomplete: u64,
    /// Packets pushed, including duplicates and late ones.
    pub packets: u64,
    /// Packets ignored as duplicates or arriving after a later sequence number.
    pub late_packets: u64,
    /// Payload bytes pushed.
    pub payload_bytes: u64,
}

#[derive(Debug)]
struct PartialFrame {
    timestamp: u32,
    ok: bool,
    keyframe: bool,
    nalus: Vec<Bytes>,
    fu: Option<BytesMut>,
}

impl FrameCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one packet; returns the frame it completes, if any.
    pub fn push(&mut self, pkt: &rtp::Packet) -> Option<Frame> {
        let h = &pkt.header;
        self.packets += 1;
        self.payload_bytes += pkt.payload.len() as u64;
        let contiguous = match self.last_seq {
            None => true,
            Some(last) => {
                let d = h.sequence_number.wrapping_sub(last) as i16;
                if d <= 0 {
                    self.late_packets += 1;
                    return None;
                }
                d == 1
            }
        };
        self.last_seq = Some(h.sequence_number);
        if pkt.payload.is_empty() {
            return None; // padding-only packet: takes a sequence number, carries no media
        }
        match &mut self.cur {
            Some(f) if f.timestamp == h.timestamp => {
                if !contiguous {
                    f.ok = false;
                }
            }
            cur => {
                if cur.is_some() {
                    self.incomplete += 1; // a new timestamp before the previous frame's marker
                }
                *cur = Some(PartialFrame {
                    timestamp: h.timestamp,
                    ok: contiguous && payload_starts_nal(&pkt.payload),
                    keyframe: false,
                    nalus: Vec::new(),
                    fu: None,
                });
            }
        }
        let f = self.cur.as_mut()?;
        if f.ok {
            f.ok = depacketize(&pkt.payload, &mut f.nalus, &mut f.fu);
        }
        f.keyframe |= payload_has_idr(&pkt.payload);
        if !h.marker {
            return None;
        }
        let f = self.cur.take()?;
        if f.ok && f.fu.is_none() && !f.nalus.is_empty() {
            self.frames += 1;
            if f.keyframe {
                self.keyframes += 1;
            }
            Some(Frame {
                timestamp: f.timestamp,
                keyframe: f.keyframe,
                nalus: f.nalus,
            })
        } else {
            self.incomplete += 1;
            None
        }
    }
}

/// Appends the NAL units of one payload; `fu` holds a NAL unit being reassembled from FU-A
/// fragments. Returns false on a malformed or out-of-place payload.
fn depacketize(payload: &Bytes, nalus: &mut Vec<Bytes>, fu: &mut Option<BytesMut>) -> bool {
    let Some(&hdr) = payload.first() else { return true };
    match nal_type(hdr) {
        1..=23 => {
            if fu.is_some() {
                return false;
            }
            nalus.push(payload.clone());
            true
        }
        NAL_STAP_A => {
            if fu.is_some() {
                return false;
            }
            let units = stap_a_units(payload);
            if units.is_empty() {
                return false;
            }
            nalus.extend(units.into_iter().map(Bytes::copy_from_slice));
            true
        }
        NAL_FU_A => {
            let Some(&fu_hdr) = payload.get(1) else { return false };
            let (start, end) = (fu_hdr & 0x80 != 0, fu_hdr & 0x40 != 0);
            if start {
                if fu.is_some() {
                    return false;
                }
                let mut buf = BytesMut::with_capacity(payload.len() * 4);
                buf.extend_from_slice(&[(hdr & 0xe0) | nal_type(fu_hdr)]);
                *fu = Some(buf);
            }
            let Some(buf) = fu.as_mut() else { return false };
            buf.extend_from_slice(&payload[2..]);
            if end {
                if let Some(buf) = fu.take() {
                    nalus.push(buf.freeze());
                }
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<AccessUnit> {
        read_access_units(&fixture_path()).expect("read the H.264 fixture")
    }

    #[test]
    fn fixture_has_120_frames_and_4_keyframes() {
        let aus = fixture();
        assert_eq!(aus.len(), 120);
        let keys: Vec<usize> = aus
            .iter()
            .enumerate()
            .filter(|(_, a)| a.keyframe)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, vec![0, 30, 60, 90]);
        for &k in &keys {
            let types: Vec<u8> = aus[k].nalus.iter().map(|n| nal_type(n[0])).collect();
            assert!(
                types.starts_with(&[NAL_SPS, NAL_PPS]),
                "keyframe {k} starts with SPS/PPS: {types:?}"
            );
            assert_eq!(types.last(), Some(&NAL_IDR));
        }
        assert!(aus
            .iter()
            .all(|a| a.nalus.iter().filter(|n| (1..=5).contains(&nal_type(n[0]))).count() == 1));
        assert_eq!(next_keyframe(&aus, 0), Some(30));
        assert_eq!(next_keyframe(&aus, 95), Some(0));
    }

    #[test]
    fn round_trip_fixture_through_rtp() {
        let aus = fixture();
        let mut pz = Packetizer::new(102, 0x1234_5678, 65_500); // wraps the sequence number
        let mut fc = FrameCounter::new();
        let mut frames = Vec::new();
        let (mut fua, mut stap, mut max_len) = (0, 0, 0);
        for (i, au) in aus.iter().enumerate() {
            let pkts = pz.packetize(au, 1000 + i as u32 * 3000).expect("packetize");
            assert!(pkts.last().is_some_and(|p| p.header.marker));
            assert_eq!(pkts.iter().filter(|p| p.header.marker).count(), 1);
            for p in &pkts {
                max_len = max_len.max(p.payload.len());
                match nal_type(p.payload[0]) {
                    NAL_FU_A => fua += 1,
                    NAL_STAP_A => stap += 1,
                    _ => {}
                }
                if let Some(f) = fc.push(p) {
                    frames.push(f);
                }
            }
        }
        assert!(max_len <= RTP_PAYLOAD_MTU);
        assert!(fua > 0, "the fixture's IDR frames need FU-A");
        assert_eq!(stap, 4, "SPS+PPS go as one STAP-A per keyframe");
        assert_eq!((fc.frames, fc.keyframes, fc.incomplete), (120, 4, 0));
        for (f, au) in frames.iter().zip(&aus) {
            assert_eq!(f.nalus, au.nalus, "frame at ts {} reassembles exactly", f.timestamp);
            assert_eq!(f.keyframe, au.keyframe);
        }
    }

    #[test]
    fn gaps_and_reordering_break_frames() {
        let aus = fixture();
        let mut pz = Packetizer::new(102, 1, 0);
        let keyframe = pz.packetize(&aus[0], 0).expect("packetize");
        let next = pz.packetize(&aus[1], 3000).expect("packetize");
        // The first FU-A continuation of the IDR slice (after STAP-A, SEI and the FU-A start).
        let mid = keyframe
            .iter()
            .position(|p| nal_type(p.payload[0]) == NAL_FU_A && !payload_starts_nal(&p.payload))
            .expect("the IDR slice is fragmented");
        assert!(mid + 1 < keyframe.len(), "the continuation is not the last packet");

        // Losing a middle fragment of the keyframe spoils it, but the next frame is fine.
        let mut fc = FrameCounter::new();
        for (i, p) in keyframe.iter().chain(&next).enumerate() {
            if i != mid {
                fc.push(p);
            }
        }
        assert_eq!((fc.frames, fc.keyframes, fc.incomplete), (1, 0, 1));

        // Joining mid-frame (first packet is an FU-A continuation) does not count that frame.
        let mut fc = FrameCounter::new();
        for p in keyframe.iter().skip(mid).chain(&next) {
            fc.push(p);
        }
        assert_eq!((fc.frames, fc.keyframes), (1, 0));

        // Duplicates are ignored.
        let mut fc = FrameCounter::new();
        for p in keyframe.iter().chain(&keyframe).chain(&next) {
            fc.push(p);
        }
        assert_eq!(
            (fc.frames, fc.keyframes, fc.late_packets),
            (2, 1, keyframe.len() as u64)
        );
    }
}

/// The simulcast fixtures, lowest first: RID, Annex-B file (320x180, 640x360, 1280x720; 30 fps,
/// GOP 30, baseline).
pub fn simulcast_fixtures() -> Vec<(String, PathBuf)> {
    let media = crate::workspace().join("assets/media");
    vec![
        ("q".to_owned(), media.join("180p30-h264.h264")),
        ("h".to_owned(), media.join("360p30-h264.h264")),
        ("f".to_owned(), media.join("720p30-h264.h264")),
    ]
}

/// The picture size an RTP payload announces: an SPS sent alone or inside a STAP-A.
pub fn payload_sps_dimensions(payload: &[u8]) -> Option<(u32, u32)> {
    match payload.first().map(|&b| nal_type(b))? {
        NAL_SPS => sps_dimensions(payload),
        NAL_STAP_A => stap_a_units(payload)
            .into_iter()
            .find(|n| n.first().is_some_and(|&b| nal_type(b) == NAL_SPS))
            .and_then(sps_dimensions),
        _ => None,
    }
}

/// Width and height from an SPS NAL unit (header byte included), cropping applied. Covers the
/// profiles the tests use (no scaling matrices).
pub fn sps_dimensions(nal: &[u8]) -> Option<(u32, u32)> {
    let mut rbsp = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut pos = 0usize;
    let mut bit = || -> Option<u32> {
        let byte = *rbsp.get(pos / 8)?;
        pos += 1;
        Some(u32::from((byte >> (7 - (pos - 1) % 8)) & 1))
    };
    fn bits(bit: &mut impl FnMut() -> Option<u32>, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some(acc << 1 | bit()?))
    }
    fn ue(bit: &mut impl FnMut() -> Option<u32>) -> Option<u32> {
        let mut zeros = 0;
        while bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + bits(bit, zeros)?)
    }
    let profile = bits(&mut bit, 8)?;
    bits(&mut bit, 16)?;
    ue(&mut bit)?;
    let mut chroma = 1;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128].contains(&profile) {
        chroma = ue(&mut bit)?;
        if chroma == 3 {
            bit()?;
        }
        ue(&mut bit)?;
        ue(&mut bit)?;
        bit()?;
        if bit()? == 1 {
            return None; // scaling matrices: not needed by the fixtures
        }
    }
    ue(&mut bit)?;
    match ue(&mut bit)? {
        0 => {
            ue(&mut bit)?;
        }
        1 => {
            bit()?;
            ue(&mut bit)?;
            ue(&mut bit)?;
            for _ in 0..ue(&mut bit)? {
                ue(&mut bit)?;
            }
        }
        _ => {}
    }
    ue(&mut bit)?;
    bit()?;
    let w_mbs = ue(&mut bit)? + 1;
    let h_units = ue(&mut bit)? + 1;
    let frame_mbs_only = bit()?;
    if frame_mbs_only == 0 {
        bit()?;
    }
    bit()?;
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if bit()? == 1 {
        (cl, cr, ct, cb) = (ue(&mut bit)?, ue(&mut bit)?, ue(&mut bit)?, ue(&mut bit)?);
    }
    let (sub_w, sub_h) = if chroma == 1 {
        (2, 2)
    } else if chroma == 2 {
        (2, 1)
    } else {
        (1, 1)
    };
    let width = (w_mbs * 16).checked_sub((cl + cr) * sub_w)?;
    let height = ((2 - frame_mbs_only) * h_units * 16).checked_sub((ct + cb) * sub_h * (2 - frame_mbs_only))?;
    Some((width, height))
}

#[cfg(test)]
mod sps_tests {
    #[test]
    fn the_simulcast_fixtures_have_the_sizes_they_are_named_for() {
        let want = [(320, 180), (640, 360), (1280, 720)];
        for ((_, path), want) in super::simulcast_fixtures().iter().zip(want) {
            let aus = super::read_access_units(path).unwrap();
            let sps = aus[0]
                .nalus
                .iter()
                .find(|n| super::nal_type(n[0]) == super::NAL_SPS)
                .unwrap();
            assert_eq!(super::sps_dimensions(sps), Some(want), "{}", path.display());
        }
    }
}
