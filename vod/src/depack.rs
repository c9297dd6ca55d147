//! RTP depacketization: the packets of one SSRC, in order, turned into [`Frame`]s (or a local
//! source's whole frames put on the same timeline).
//!
//! H.264 (RFC 6184: single NAL unit, STAP-A, FU-A), H.265 (RFC 7798: single NAL unit,
//! aggregation packets, fragmentation units; no DONL), VP8 (RFC 7741), Opus, G.711 and AAC in
//! RFC 3640 `mpeg4-generic` (AAC-hbr). Loss is tolerated: a sequence gap drops the access unit
//! it broke and, for video, everything until the next keyframe. Malformed payloads are skipped,
//! never a panic: per-packet problems are trace lines, not errors.

use bytes::{Bytes, BytesMut};

use crate::frame::{Codec, Frame, CLOCK_HZ};
use crate::VodError;

/// Largest access unit we assemble; anything bigger is treated as garbage.
const MAX_FRAME_BYTES: usize = 8 << 20;

/// Turns the RTP packets of one track into frames.
#[derive(Debug)]
pub struct Depacketizer {
    clock_rate: u32,
    ts: Unwrap,
    last_seq: Option<u16>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    H264(VideoAu),
    H265(VideoAu),
    Vp8(VideoAu),
    /// One packet = one frame (Opus, G.711).
    Simple(Codec),
    Aac(AacState),
}

impl Depacketizer {
    /// `mime` like "video/H264", "video/H265", "video/VP8", "audio/opus", "audio/PCMU", "audio/PCMA",
    /// "audio/mpeg4-generic" (RFC 3640 AAC-hbr; its AudioSpecificConfig comes from `fmtp` "config=<hex>").
    /// Err(VodError::Unsupported) for anything else.
    pub fn new(mime: &str, clock_rate: u32, channels: u16, fmtp: &str) -> Result<Depacketizer, VodError> {
        let clock_rate = if clock_rate == 0 { CLOCK_HZ as u32 } else { clock_rate };
        let kind = match mime.to_ascii_lowercase().as_str() {
            "video/h264" => Kind::H264(VideoAu::default()),
            "video/h265" => Kind::H265(VideoAu::default()),
            "video/vp8" => Kind::Vp8(VideoAu::default()),
            "audio/opus" => Kind::Simple(Codec::Opus {
                channels: if channels == 1 { 1 } else { 2 },
            }),
            "audio/pcmu" => Kind::Simple(Codec::Pcmu),
            "audio/pcma" => Kind::Simple(Codec::Pcma),
            "audio/mpeg4-generic" => Kind::Aac(AacState::from_fmtp(fmtp)?),
            other => return Err(VodError::Unsupported(format!("RTP payload format {other:?}"))),
        };
        Ok(Depacketizer {
            clock_rate,
            ts: Unwrap::default(),
            last_seq: None,
            kind,
        })
    }

    /// Feeds one packet; returns the frames it completed (H.264: access unit complete on marker bit
    /// or timestamp change; FU-A/STAP-A/single NAL; after a sequence gap drop the broken AU and, for video,
    /// emit nothing until the next keyframe). pts = RTP timestamp unwrapped to i64 and rescaled to 90 kHz,
    /// starting from whatever the first packet says (consumers rebase). H.264 keyframes: prepend the most
    /// recent SPS/PPS seen if the AU lacks them; H.265 IRAP pictures likewise with VPS/SPS/PPS.
    pub fn push(&mut self, pkt: &rtc::rtp::Packet) -> Vec<Frame> {
        let seq = pkt.header.sequence_number;
        let gap = match self.last_seq {
            Some(last) => seq != last.wrapping_add(1),
            None => false,
        };
        if let Some(last) = self.last_seq {
            // A duplicate or reordered old packet: ignore it rather than break the frame.
            let d = seq.wrapping_sub(last) as i16;
            if d <= 0 {
                tracing::trace!(seq, last, "rtp: old or duplicate packet dropped");
                return Vec::new();
            }
        }
        self.last_seq = Some(seq);
        let ts = self.ts.unwrap(pkt.header.timestamp);
        let pts = rescale(ts, self.clock_rate);
        let mut out = Vec::new();
        match &mut self.kind {
            Kind::H264(au) => au.push(&H264, pkt, pts, gap, &mut out),
            Kind::H265(au) => au.push(&H265, pkt, pts, gap, &mut out),
            Kind::Vp8(au) => au.push(&Vp8, pkt, pts, gap, &mut out),
            Kind::Simple(codec) => {
                if !pkt.payload.is_empty() {
                    out.push(Frame {
                        codec: codec.clone(),
                        pts,
                        keyframe: true,
                        data: pkt.payload.clone(),
                    });
                }
            }
            Kind::Aac(st) => st.push(pkt, ts, self.clock_rate, gap, &mut out),
        }
        out
    }

    /// Takes one whole frame of a local source (a frame tap: nothing to reassemble) on the same
    /// timeline as [`Self::push`]: its RTP timestamp unwrapped and rescaled to 90 kHz. None for
    /// an empty frame.
    pub fn push_frame(&mut self, frame: &engine::track::SourceFrame) -> Option<Frame> {
        if frame.data.is_empty() {
            return None;
        }
        let pts = rescale(self.ts.unwrap(frame.timestamp), self.clock_rate);
        let (codec, keyframe) = match &self.kind {
            Kind::H264(_) => (Codec::H264, frame.keyframe),
            Kind::H265(_) => (Codec::H265, frame.keyframe),
            Kind::Vp8(_) => (Codec::Vp8, frame.keyframe),
            Kind::Simple(codec) => (codec.clone(), true),
            Kind::Aac(st) => (
                Codec::Aac {
                    config: st.config.clone(),
                },
                true,
            ),
        };
        Some(Frame {
            codec,
            pts,
            keyframe,
            data: frame.data.clone(),
        })
    }
}

/// Rescales a timestamp of `clock_rate` Hz to 90 kHz.
fn rescale(ts: i64, clock_rate: u32) -> i64 {
    if clock_rate as i64 == CLOCK_HZ {
        ts
    } else {
        ((ts as i128) * (CLOCK_HZ as i128) / (clock_rate as i128)) as i64
    }
}

/// Unwraps 32-bit RTP timestamps into a continuous i64 timeline.
#[derive(Debug, Default)]
struct Unwrap {
    last: Option<(u32, i64)>,
}

impl Unwrap {
    fn unwrap(&mut self, ts: u32) -> i64 {
        let v = match self.last {
            None => ts as i64,
            Some((raw, ext)) => ext + ts.wrapping_sub(raw) as i32 as i64,
        };
        self.last = Some((ts, v));
        v
    }
}

/// What differs between the video payload formats: how a payload adds to the frame being built.
trait VideoFormat {
    /// The codec of the frames.
    fn codec(&self) -> Codec;
    /// Appends the payload's contribution to `au`; false when the payload is malformed.
    fn append(&self, au: &mut VideoAu, payload: &Bytes) -> bool;
    /// Whether this payload starts a frame (used to tell whether the head of a frame was lost).
    fn starts_frame(&self, payload: &[u8]) -> bool;
    /// Finishes the frame: its bytes and whether it is a keyframe, or None to drop it.
    fn finish(&self, au: &mut VideoAu) -> Option<(Bytes, bool)>;
}

/// A video frame being assembled, plus the state that spans frames.
#[derive(Debug, Default)]
struct VideoAu {
    /// RTP timestamp (90 kHz, unwrapped) of the frame being built, while one is open.
    open: Option<i64>,
    broken: bool,
    /// After loss: emit nothing until a keyframe.
    waiting_key: bool,
    /// H.264/H.265: NAL units of the access unit (without start codes). VP8: unused.
    nalus: Vec<Bytes>,
    /// H.264/H.265: fragmented NAL unit being reassembled. VP8: the frame bytes.
    buf: Option<BytesMut>,
    /// Length of the last unit reassembled in `buf`: the next one's starting capacity, so it
    /// is rarely regrown (and copied) as its fragments arrive.
    last_unit: usize,
    size: usize,
    /// H.264/H.265 parameter sets last seen (the VPS is H.265's only).
    vps: Option<Bytes>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

impl VideoAu {
    /// An empty buffer for a unit whose first fragment is `first` bytes.
    fn unit_buf(&self, first: usize) -> BytesMut {
        let hint = self.last_unit + self.last_unit / 8;
        BytesMut::with_capacity(hint.max(first * 4).min(MAX_FRAME_BYTES))
    }

    /// Takes the reassembled unit out of `buf`, remembering its length.
    fn take_unit(&mut self) -> Option<Bytes> {
        let b = self.buf.take()?;
        self.last_unit = b.len();
        Some(b.freeze())
    }

    fn push<F: VideoFormat>(&mut self, fmt: &F, pkt: &rtc::rtp::Packet, pts: i64, gap: bool, out: &mut Vec<Frame>) {
        let codec = fmt.codec();
        let head_ok = fmt.starts_frame(&pkt.payload);
        match self.open {
            Some(open_ts) if open_ts == pts => {
                if gap {
                    self.broken = true;
                }
            }
            Some(_) => {
                // Timestamp change without a marker: the previous frame ends here. A gap means
                // the lost packets were its tail (if this packet starts a frame) or this one's head.
                if gap {
                    self.broken = true;
                }
                self.complete(fmt, codec.clone(), out);
                self.start(pts, gap && !head_ok);
            }
            None => self.start(pts, gap || !head_ok),
        }
        if gap {
            self.waiting_key = true;
        }
        if !pkt.payload.is_empty() && !self.broken && !fmt.append(self, &pkt.payload) {
            tracing::trace!("rtp: malformed video payload");
            self.broken = true;
        }
        if self.size > MAX_FRAME_BYTES {
            self.broken = true;
        }
        if pkt.header.marker {
            self.complete(fmt, codec, out);
        }
    }

    fn start(&mut self, pts: i64, broken: bool) {
        self.open = Some(pts);
        self.broken = broken;
        self.nalus.clear();
        self.buf = None;
        self.size = 0;
    }

    fn complete<F: VideoFormat>(&mut self, fmt: &F, codec: Codec, out: &mut Vec<Frame>) {
        let Some(pts) = self.open.take() else { return };
        if self.broken {
            self.waiting_key = true;
            self.nalus.clear();
            self.buf = None;
            return;
        }
        let Some((data, keyframe)) = fmt.finish(self) else {
            return;
        };
        if self.waiting_key && !keyframe {
            return;
        }
        self.waiting_key = false;
        out.push(Frame {
            codec,
            pts,
            keyframe,
            data,
        });
    }
}

struct H264;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

impl H264 {
    fn add_nal(au: &mut VideoAu, nal: Bytes) {
        if nal.is_empty() {
            return;
        }
        match nal[0] & 0x1f {
            NAL_SPS => au.sps = Some(nal.clone()),
            NAL_PPS => au.pps = Some(nal.clone()),
            _ => {}
        }
        au.size += nal.len() + 4;
        au.nalus.push(nal);
    }
}

impl VideoFormat for H264 {
    fn codec(&self) -> Codec {
        Codec::H264
    }

    fn append(&self, au: &mut VideoAu, p: &Bytes) -> bool {
        let t = p[0] & 0x1f;
        match t {
            1..=23 => {
                au.buf = None;
                H264::add_nal(au, p.clone());
                true
            }
            24 => {
                let mut i = 1;
                while i + 2 <= p.len() {
                    let len = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                    i += 2;
                    if len == 0 || i + len > p.len() {
                        return false;
                    }
                    H264::add_nal(au, p.slice(i..i + len));
                    i += len;
                }
                i == p.len()
            }
            28 => {
                let Some(&fu) = p.get(1) else { return false };
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if start {
                    let mut b = au.unit_buf(p.len());
                    b.extend_from_slice(&[(p[0] & 0xe0) | (fu & 0x1f)]);
                    b.extend_from_slice(&p[2..]);
                    au.buf = Some(b);
                } else {
                    match au.buf.as_mut() {
                        Some(b) => b.extend_from_slice(&p[2..]),
                        None => return false,
                    }
                }
                au.size += p.len();
                if end {
                    if let Some(nal) = au.take_unit() {
                        H264::add_nal(au, nal);
                    }
                }
                true
            }
            _ => false, // STAP-B, MTAP, FU-B and reserved types
        }
    }

    fn starts_frame(&self, p: &[u8]) -> bool {
        match p.first().map(|b| b & 0x1f) {
            Some(1..=24) => true,
            Some(28) => p.get(1).is_some_and(|b| b & 0x80 != 0),
            _ => false,
        }
    }

    fn finish(&self, au: &mut VideoAu) -> Option<(Bytes, bool)> {
        let nalus = std::mem::take(&mut au.nalus);
        if au.buf.take().is_some() {
            return None; // an FU-A never ended
        }
        let has_vcl = nalus.iter().any(|n| (1..=5).contains(&(n[0] & 0x1f)));
        if !has_vcl {
            return None; // parameter sets alone (kept above) or SEI only
        }
        let keyframe = nalus.iter().any(|n| n[0] & 0x1f == NAL_IDR);
        let has_sps = nalus.iter().any(|n| n[0] & 0x1f == NAL_SPS);
        let has_pps = nalus.iter().any(|n| n[0] & 0x1f == NAL_PPS);
        let mut out = BytesMut::with_capacity(au.size + 64);
        if keyframe && !(has_sps && has_pps) {
            let (Some(sps), Some(pps)) = (au.sps.clone(), au.pps.clone()) else {
                tracing::trace!("h264: keyframe without SPS/PPS dropped");
                return None;
            };
            // Put the parameter sets first, then the AU's own NAL units minus any partial set.
            for n in [&sps, &pps] {
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(n);
            }
            for n in nalus
                .iter()
                .filter(|n| !matches!(n[0] & 0x1f, NAL_SPS | NAL_PPS | NAL_AUD))
            {
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(n);
            }
        } else {
            for n in nalus.iter().filter(|n| n[0] & 0x1f != NAL_AUD) {
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(n);
            }
        }
        Some((out.freeze(), keyframe))
    }
}

struct H265;

const HEVC_IRAP: std::ops::RangeInclusive<u8> = 16..=21;
const HEVC_VPS: u8 = 32;
const HEVC_SPS: u8 = 33;
const HEVC_PPS: u8 = 34;
const HEVC_AUD: u8 = 35;
const HEVC_AP: u8 = 48;
const HEVC_FU: u8 = 49;

/// The type of an H.265 NAL unit, or of an RFC 7798 payload (from its first header byte).
fn hevc_type(b: &[u8]) -> Option<u8> {
    b.first().map(|h| (h >> 1) & 0x3f)
}

impl H265 {
    fn add_nal(au: &mut VideoAu, nal: Bytes) {
        if nal.len() < 2 {
            return; // not even the 2-byte header
        }
        match hevc_type(&nal) {
            Some(HEVC_VPS) => au.vps = Some(nal.clone()),
            Some(HEVC_SPS) => au.sps = Some(nal.clone()),
            Some(HEVC_PPS) => au.pps = Some(nal.clone()),
            _ => {}
        }
        au.size += nal.len() + 4;
        au.nalus.push(nal);
    }

    /// An aggregation packet: 2-byte payload header, then (16-bit size, NAL unit) pairs.
    fn aggregation(au: &mut VideoAu, p: &Bytes) -> bool {
        let mut i = 2;
        while let Some(&[hi, lo]) = p.get(i..i + 2) {
            let len = u16::from_be_bytes([hi, lo]) as usize;
            i += 2;
            if len < 2 || p.get(i..i + len).is_none() {
                return false;
            }
            H265::add_nal(au, p.slice(i..i + len));
            i += len;
        }
        i == p.len()
    }

    /// A fragmentation unit: 2-byte payload header, FU header (S, E, type), a piece of the NAL.
    fn fragment(au: &mut VideoAu, p: &Bytes) -> bool {
        let (Some(&[h0, h1]), Some(&fu)) = (p.get(..2), p.get(2)) else {
            return false;
        };
        let body = p.get(3..).unwrap_or_default();
        if fu & 0x80 != 0 {
            let mut b = au.unit_buf(p.len());
            b.extend_from_slice(&[(h0 & 0x81) | ((fu & 0x3f) << 1), h1]);
            b.extend_from_slice(body);
            au.buf = Some(b);
        } else {
            match au.buf.as_mut() {
                Some(b) => b.extend_from_slice(body),
                None => return false,
            }
        }
        au.size += p.len();
        if fu & 0x40 != 0 {
            if let Some(nal) = au.take_unit() {
                H265::add_nal(au, nal);
            }
        }
        true
    }
}

impl VideoFormat for H265 {
    fn codec(&self) -> Codec {
        Codec::H265
    }

    fn append(&self, au: &mut VideoAu, p: &Bytes) -> bool {
        if p.len() < 2 {
            return false;
        }
        match hevc_type(p) {
            Some(0..=47) => {
                au.buf = None;
                H265::add_nal(au, p.clone());
                true
            }
            Some(HEVC_AP) => H265::aggregation(au, p),
            Some(HEVC_FU) => H265::fragment(au, p),
            _ => false, // PACI and reserved types
        }
    }

    fn starts_frame(&self, p: &[u8]) -> bool {
        match hevc_type(p) {
            Some(0..=HEVC_AP) => true,
            Some(HEVC_FU) => p.get(2).is_some_and(|b| b & 0x80 != 0),
            _ => false,
        }
    }

    fn finish(&self, au: &mut VideoAu) -> Option<(Bytes, bool)> {
        let nalus = std::mem::take(&mut au.nalus);
        if au.buf.take().is_some() {
            return None; // a fragmented NAL unit never ended
        }
        let types: Vec<u8> = nalus.iter().filter_map(|n| hevc_type(n)).collect();
        if !types.iter().any(|t| *t <= 31) {
            return None; // parameter sets alone (kept above) or SEI only
        }
        let keyframe = types.iter().any(|t| HEVC_IRAP.contains(t));
        let complete = [HEVC_VPS, HEVC_SPS, HEVC_PPS].iter().all(|ps| types.contains(ps));
        let mut out = BytesMut::with_capacity(au.size + 128);
        let mut put = |n: &[u8]| {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(n);
        };
        if keyframe && !complete {
            let (Some(vps), Some(sps), Some(pps)) = (au.vps.clone(), au.sps.clone(), au.pps.clone()) else {
                tracing::trace!("h265: IRAP picture without VPS/SPS/PPS dropped");
                return None;
            };
            // The parameter sets first, then the AU's own NAL units minus any partial set.
            for n in [&vps, &sps, &pps] {
                put(n);
            }
            for n in nalus
                .iter()
                .filter(|n| !matches!(hevc_type(n), Some(HEVC_VPS | HEVC_SPS | HEVC_PPS | HEVC_AUD)))
            {
                put(n);
            }
        } else {
            for n in nalus.iter().filter(|n| hevc_type(n) != Some(HEVC_AUD)) {
                put(n);
            }
        }
        Some((out.freeze(), keyframe))
    }
}

struct Vp8;

impl Vp8 {
    /// Length of the VP8 payload descriptor, or None when malformed.
    fn descriptor_len(p: &[u8]) -> Option<usize> {
        let b0 = *p.first()?;
        let mut i = 1;
        if b0 & 0x80 != 0 {
            let x = *p.get(i)?;
            i += 1;
            if x & 0x80 != 0 {
                let pid = *p.get(i)?;
                i += if pid & 0x80 != 0 { 2 } else { 1 };
            }
            if x & 0x40 != 0 {
                i += 1;
            }
            if x & 0x30 != 0 {
                i += 1;
            }
        }
        (i < p.len()).then_some(i)
    }
}

impl VideoFormat for Vp8 {
    fn codec(&self) -> Codec {
        Codec::Vp8
    }

    fn append(&self, au: &mut VideoAu, p: &Bytes) -> bool {
        let Some(d) = Vp8::descriptor_len(p) else {
            return false;
        };
        let start = p[0] & 0x10 != 0 && p[0] & 0x07 == 0;
        if start {
            au.buf = Some(au.unit_buf(p.len()));
        }
        let Some(b) = au.buf.as_mut() else {
            return false;
        };
        b.extend_from_slice(&p[d..]);
        au.size = b.len();
        true
    }

    fn starts_frame(&self, p: &[u8]) -> bool {
        p.first().is_some_and(|b| b & 0x10 != 0 && b & 0x07 == 0)
    }

    fn finish(&self, au: &mut VideoAu) -> Option<(Bytes, bool)> {
        let data = au.take_unit()?;
        let first = *data.first()?;
        // VP8 frame tag: bit 0 is 0 for a key frame, which also carries the start code 9d 01 2a.
        let keyframe = first & 0x01 == 0 && data.get(3..6) == Some(&[0x9d, 0x01, 0x2a][..]);
        Some((data, keyframe))
    }
}

/// RFC 3640 AAC-hbr state.
#[derive(Debug)]
struct AacState {
    config: Bytes,
    size_length: u32,
    index_length: u32,
    index_delta_length: u32,
    /// A fragmented AU being reassembled: expected size, bytes so far, RTP timestamp.
    frag: Option<(usize, BytesMut, i64)>,
}

impl AacState {
    fn from_fmtp(fmtp: &str) -> Result<AacState, VodError> {
        let mut config = None;
        let (mut size_length, mut index_length, mut index_delta_length) = (13, 3, 3);
        for kv in fmtp.split(';') {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "config" => config = parse_hex(v),
                "sizelength" => size_length = v.parse().unwrap_or(13),
                "indexlength" => index_length = v.parse().unwrap_or(3),
                "indexdeltalength" => index_delta_length = v.parse().unwrap_or(3),
                _ => {}
            }
        }
        let config = config
            .filter(|c| c.len() >= 2)
            .ok_or_else(|| VodError::Unsupported("mpeg4-generic without a valid config= in fmtp".into()))?;
        if size_length == 0 || size_length > 16 || index_length > 16 || index_delta_length > 16 {
            return Err(VodError::Unsupported(
                "mpeg4-generic with unusual AU header sizes".into(),
            ));
        }
        Ok(AacState {
            config: Bytes::from(config),
            size_length,
            index_length,
            index_delta_length,
            frag: None,
        })
    }

    fn push(&mut self, pkt: &rtc::rtp::Packet, ts: i64, clock_rate: u32, gap: bool, out: &mut Vec<Frame>) {
        if gap {
            self.frag = None;
        }
        let p = &pkt.payload;
        if p.len() < 2 {
            return;
        }
        let headers_bits = u16::from_be_bytes([p[0], p[1]]) as usize;
        let headers_bytes = headers_bits.div_ceil(8);
        let Some(hdr) = p.get(2..2 + headers_bytes) else { return };
        let mut data_off = 2 + headers_bytes;
        let mut bits = BitReader::new(hdr);
        let mut sizes = Vec::new();
        let mut first = true;
        while bits.pos + self.size_length as usize <= headers_bits {
            let Some(size) = bits.read(self.size_length) else { break };
            let idx_len = if first {
                self.index_length
            } else {
                self.index_delta_length
            };
            if bits.read(idx_len).is_none() {
                break;
            }
            first = false;
            sizes.push(size as usize);
        }
        // A fragment continuing an AU from earlier packets.
        if let Some((want, mut buf, frag_ts)) = self.frag.take() {
            if frag_ts == ts && sizes.len() == 1 {
                buf.extend_from_slice(&p[data_off..]);
                if buf.len() >= want {
                    buf.truncate(want);
                    out.push(self.frame(ts, clock_rate, buf.freeze()));
                } else if pkt.header.marker {
                    // The AU ended short: drop it.
                } else {
                    self.frag = Some((want, buf, frag_ts));
                }
                return;
            }
        }
        for (i, size) in sizes.iter().enumerate() {
            let end = data_off + size;
            if end > p.len() {
                if sizes.len() == 1 && !pkt.header.marker {
                    let mut buf = BytesMut::with_capacity(*size);
                    buf.extend_from_slice(&p[data_off..]);
                    self.frag = Some((*size, buf, ts));
                }
                return;
            }
            if *size > 0 {
                let au_ts = ts + (i as i64) * 1024 * (clock_rate as i64) / (aac_rate(&self.config) as i64).max(1);
                out.push(self.frame(au_ts, clock_rate, p.slice(data_off..end)));
            }
            data_off = end;
        }
    }

    fn frame(&self, ts: i64, clock_rate: u32, data: Bytes) -> Frame {
        Frame {
            codec: Codec::Aac {
                config: self.config.clone(),
            },
            pts: rescale(ts, clock_rate),
            keyframe: true,
            data,
        }
    }
}

/// Sample rate from an AudioSpecificConfig (48 kHz when unreadable).
/// The sampling rates of MPEG-4 audio's samplingFrequencyIndex.
pub(crate) const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

pub(crate) fn aac_rate(config: &[u8]) -> u32 {
    if config.len() < 2 {
        return 48000;
    }
    let idx = (((config[0] & 0x07) << 1) | (config[1] >> 7)) as usize;
    if idx == 15 && config.len() >= 5 {
        return (((config[1] & 0x7f) as u32) << 17)
            | ((config[2] as u32) << 9)
            | ((config[3] as u32) << 1)
            | ((config[4] >> 7) as u32);
    }
    AAC_RATES.get(idx).copied().unwrap_or(48000)
}

/// Channel count from an AudioSpecificConfig (2 when unreadable).
pub(crate) fn aac_channels(config: &[u8]) -> u16 {
    if config.len() < 2 {
        return 2;
    }
    let idx = (((config[0] & 0x07) << 1) | (config[1] >> 7)) as usize;
    let ch = if idx == 15 {
        config.get(4).map(|b| (b >> 3) & 0x0f).unwrap_or(2)
    } else {
        (config[1] >> 3) & 0x0f
    };
    match ch {
        0 => 2,
        7 => 8,
        c => c as u16,
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Reads big-endian bit fields.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// The next `n` (at most 32) bits, or `None` past the end.
    pub(crate) fn read(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | bit as u32;
            self.pos += 1;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::header::Header;
    use rtc::rtp::Packet;

    #[test]
    fn whole_frames_keep_their_codec_and_a_continuous_90khz_clock() {
        use engine::track::SourceFrame;
        let frame = |timestamp: u32, keyframe: bool, data: &'static [u8]| SourceFrame {
            timestamp,
            keyframe,
            data: Bytes::from_static(data),
        };
        let mut aac = Depacketizer::new("audio/mpeg4-generic", 48000, 2, "config=1190;sizelength=13").unwrap();
        let first = aac.push_frame(&frame(u32::MAX - 1023, false, &[1, 2])).unwrap();
        // 1024 samples at 48 kHz later, across the 32-bit wrap: 1920 ticks of 90 kHz.
        let next = aac.push_frame(&frame(0, false, &[3])).unwrap();
        assert_eq!(next.pts - first.pts, 1920);
        assert!(next.keyframe);
        assert_eq!(
            next.codec,
            Codec::Aac {
                config: Bytes::from_static(&[0x11, 0x90])
            }
        );
        assert!(aac.push_frame(&frame(1024, false, &[])).is_none());

        let mut h264 = Depacketizer::new("video/H264", 90000, 1, "").unwrap();
        let idr = h264.push_frame(&frame(3000, true, &[0, 0, 0, 1, 0x65, 1])).unwrap();
        let p = h264.push_frame(&frame(6000, false, &[0, 0, 0, 1, 0x41, 1])).unwrap();
        assert_eq!((idr.codec, idr.keyframe, p.keyframe), (Codec::H264, true, false));
        assert_eq!(p.pts - idr.pts, 3000);
        assert_eq!(p.data.as_ref(), &[0, 0, 0, 1, 0x41, 1]);
    }

    fn pkt(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Packet {
        Packet {
            header: Header {
                version: 2,
                marker,
                sequence_number: seq,
                timestamp: ts,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn rejects_unknown_payload_formats() {
        assert!(matches!(
            Depacketizer::new("video/AV1", 90000, 0, ""),
            Err(VodError::Unsupported(_))
        ));
        assert!(Depacketizer::new("audio/mpeg4-generic", 48000, 2, "mode=AAC-hbr").is_err());
    }

    #[test]
    fn h264_stap_and_fu_a_reassemble() {
        let mut d = Depacketizer::new("video/H264", 90000, 0, "").unwrap();
        // STAP-A with SPS + PPS, then an IDR in two FU-A fragments.
        let stap = [24, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
        assert!(d.push(&pkt(1, 1000, false, &stap)).is_empty());
        assert!(d.push(&pkt(2, 1000, false, &[0x7c, 0x85, 1, 2])).is_empty());
        let f = d.push(&pkt(3, 1000, true, &[0x7c, 0x45, 3]));
        assert_eq!(f.len(), 1);
        assert!(f[0].keyframe);
        assert_eq!(f[0].pts, 1000);
        assert_eq!(
            &f[0].data[..],
            &[0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 1, 2, 3]
        );
        // A P frame with the marker lost, then a new timestamp: completes on timestamp change.
        assert!(d.push(&pkt(4, 4000, false, &[0x41, 9])).is_empty());
        let f = d.push(&pkt(5, 7000, true, &[0x41, 8]));
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].pts, 4000);
        // IDR without parameter sets gets the last ones prepended.
        let f = d.push(&pkt(6, 10000, true, &[0x65, 7]));
        assert_eq!(&f[0].data[..4], &[0, 0, 0, 1]);
        assert_eq!(f[0].data[4], 0x67);
    }

    #[test]
    fn timestamps_unwrap_and_rescale() {
        let mut d = Depacketizer::new("audio/opus", 48000, 2, "").unwrap();
        let a = d.push(&pkt(1, u32::MAX - 479, false, &[1]));
        let b = d.push(&pkt(2, 480, false, &[1]));
        assert_eq!(b[0].pts - a[0].pts, 1800); // 960 samples at 48 kHz = 20 ms
        assert!(d.push(&pkt(3, 1440, false, &[])).is_empty());
    }

    #[test]
    fn aac_hbr_multiple_aus() {
        let mut d = Depacketizer::new(
            "audio/mpeg4-generic",
            48000,
            2,
            "mode=AAC-hbr;config=1190;sizeLength=13",
        )
        .unwrap();
        // two AU headers (16 bits each): sizes 2 and 3
        let payload = [0, 32, 0, 16, 0, 24, 0xa, 0xb, 1, 2, 3];
        let f = d.push(&pkt(1, 0, true, &payload));
        assert_eq!(f.len(), 2);
        assert_eq!(&f[1].data[..], &[1, 2, 3]);
        assert_eq!(f[1].pts, 1920);
        assert_eq!(aac_rate(&[0x11, 0x90]), 48000);
        assert_eq!(aac_channels(&[0x11, 0x90]), 2);
    }

    #[test]
    fn h265_aggregation_and_fragments_reassemble() {
        let mut d = Depacketizer::new("video/H265", 90000, 0, "").unwrap();
        // An aggregation packet with VPS, SPS and PPS, then an IDR_W_RADL (19) in two FUs.
        let ap = [
            0x60, 0x01, 0, 3, 0x40, 0x01, 0x0c, 0, 3, 0x42, 0x01, 0x01, 0, 3, 0x44, 0x01, 0xc1,
        ];
        assert!(d.push(&pkt(1, 1000, false, &ap)).is_empty());
        assert!(d.push(&pkt(2, 1000, false, &[0x62, 0x01, 0x80 | 19, 1, 2])).is_empty());
        let f = d.push(&pkt(3, 1000, true, &[0x62, 0x01, 0x40 | 19, 3]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].codec, Codec::H265);
        assert!(f[0].keyframe);
        assert_eq!(
            &f[0].data[..],
            &[
                0, 0, 0, 1, 0x40, 0x01, 0x0c, 0, 0, 0, 1, 0x42, 0x01, 0x01, 0, 0, 0, 1, 0x44, 0x01, 0xc1, 0, 0, 0, 1,
                0x26, 0x01, 1, 2, 3
            ]
        );
        // A TRAIL_R picture (1) is not a keyframe; a CRA (21) alone gets the last parameter sets.
        let f = d.push(&pkt(4, 4000, true, &[0x02, 0x01, 9]));
        assert!(!f[0].keyframe);
        let f = d.push(&pkt(5, 7000, true, &[0x2a, 0x01, 8]));
        assert!(f[0].keyframe);
        assert_eq!(&f[0].data[4..6], &[0x40, 0x01]);
        // Loss: nothing until the next IRAP picture.
        assert!(d.push(&pkt(7, 10000, true, &[0x02, 0x01, 9])).is_empty());
        assert_eq!(d.push(&pkt(8, 13000, true, &[0x26, 0x01, 7])).len(), 1);
    }

    #[test]
    fn h265_garbage_does_not_panic() {
        let mut d = Depacketizer::new("video/H265", 90000, 0, "").unwrap();
        let mut seq = 0u16;
        for seed in 0..400u32 {
            let len = (seed % 23) as usize;
            let junk: Vec<u8> = (0..len)
                .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u32 * 17) ^ (seed >> 3)) as u8)
                .collect();
            for ty in [None, Some(48u8), Some(49), Some(50), Some(19)] {
                let mut p = junk.clone();
                if let (Some(t), Some(b)) = (ty, p.first_mut()) {
                    *b = t << 1;
                }
                seq = seq.wrapping_add(1 + (seed % 3 == 0) as u16);
                let _ = d.push(&pkt(seq, seed * 3000, seed % 2 == 0, &p));
            }
        }
    }

    #[test]
    fn vp8_keyframe() {
        let mut d = Depacketizer::new("video/VP8", 90000, 0, "").unwrap();
        let f = d.push(&pkt(1, 0, true, &[0x10, 0x50, 0, 0, 0x9d, 0x01, 0x2a, 1, 2]));
        assert_eq!(f.len(), 1);
        assert!(f[0].keyframe);
        assert_eq!(f[0].data.len(), 8);
    }
}
