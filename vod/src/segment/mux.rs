//! One MPEG-TS writer (ISO/IEC 13818-1) for one segment, writing into memory. Each segment gets
//! its own, so it starts with its own PAT/PMT; the PAT/PMT are written again at the start of
//! every part and before every video keyframe, so a low-latency player can start at any
//! independent part. Bytes written so far can be taken at any frame boundary, which is how a
//! segment is split into parts.
//!
//! Ours rather than libavformat's `mpegts`: the live path touched about 1.3 MB of FFmpeg's code
//! pages and 0.3 MB of muxer state per process for what is a few header bytes per 184 bytes of
//! payload, and libavformat copied every frame twice (into its I/O buffer, then out of it).
//! This writer copies each frame once, from the caller's slice into the TS packets.
//!
//! What it writes, as libavformat did for our streams: PAT (program 1), PMT on PID 0x1000 with
//! the PCR on the video PID (the audio PID without video), video on PID 0x100 (H.264 stream type
//! 0x1B, H.265 0x24) with an access unit delimiter added when the frame has none, audio on the
//! next PID as AAC in ADTS (stream type 0x0F); one PES per frame, PCR = DTS. When video stalls
//! and audio goes on, a PCR-only packet on the video PID keeps PCRs at most 100 ms apart.

use bytes::{BufMut, Bytes, BytesMut};

use crate::depack::{BitReader, AAC_RATES};
use crate::VodError;

/// The video codec of a muxer (Annex-B frames either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VideoCodec {
    H264,
    H265,
}

impl VideoCodec {
    /// The PMT stream type.
    fn stream_type(self) -> u8 {
        match self {
            VideoCodec::H264 => 0x1b,
            VideoCodec::H265 => 0x24,
        }
    }

    /// An access unit delimiter NAL unit with its start code, allowing any picture type.
    fn aud(self) -> &'static [u8] {
        match self {
            VideoCodec::H264 => &[0, 0, 0, 1, 0x09, 0xf0],
            VideoCodec::H265 => &[0, 0, 0, 1, 0x46, 0x01, 0x50],
        }
    }

    /// Whether an Annex-B frame starts with an access unit delimiter.
    fn starts_with_aud(self, data: &[u8]) -> bool {
        let nal = match data {
            [0, 0, 1, n, ..] | [0, 0, 0, 1, n, ..] => *n,
            _ => return false,
        };
        match self {
            VideoCodec::H264 => nal & 0x1f == 9,
            VideoCodec::H265 => (nal >> 1) & 0x3f == 35,
        }
    }
}

/// The audio track of a muxer: AAC with its AudioSpecificConfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AudioTrack {
    pub config: Bytes,
    pub rate: u32,
    pub channels: u16,
}

/// An MPEG-TS muxer writing into a growing in-memory buffer.
pub(crate) struct TsMuxer {
    out: BytesMut,
    video: Option<Stream>,
    video_codec: Option<VideoCodec>,
    audio: Option<Stream>,
    /// The fixed part of every ADTS header of the audio track (the length goes in per frame).
    adts: [u8; 7],
    tables: Tables,
    /// Whether the next frame is preceded by PAT/PMT (the first of a segment or of a part).
    tables_due: bool,
    /// The last PCR written (90 kHz), if any.
    last_pcr: Option<i64>,
}

/// The PAT and PMT sections and their continuity counters.
struct Tables {
    pat: Vec<u8>,
    pmt: Vec<u8>,
    pat_cc: u8,
    pmt_cc: u8,
}

impl Tables {
    /// Writes the PAT and the PMT, one packet each.
    fn write(&mut self, out: &mut BytesMut) {
        write_section(out, PAT_PID, &mut self.pat_cc, &self.pat);
        write_section(out, PMT_PID, &mut self.pmt_cc, &self.pmt);
    }
}

/// One elementary stream's PID and its state.
struct Stream {
    pid: u16,
    cc: u8,
    last_dts: Option<i64>,
}

const PACKET: usize = 188;
const PAYLOAD: usize = PACKET - 4;
const PAT_PID: u16 = 0;
const PMT_PID: u16 = 0x1000;
const FIRST_PID: u16 = 0x100;
const STREAM_TYPE_AAC: u8 = 0x0f;
/// Timestamps are 33 bits of a 90 kHz clock.
const TS_MASK: u64 = (1 << 33) - 1;
/// The PES header fields after PES_packet_length with a PTS and a DTS.
const PES_OPT_MAX: usize = 3 + 10;
/// The longest the PCR goes without a new value (ISO/IEC 13818-1 asks for at most 100 ms):
/// while video stalls and audio goes on, PCR-only packets on the video PID keep it.
const PCR_MAX_GAP: i64 = 90_000 / 10;

impl TsMuxer {
    /// A muxer with an H.264 or H.265 track (if `video`) and an AAC track (if `audio`).
    pub fn new(video: Option<VideoCodec>, audio: Option<&AudioTrack>) -> Result<TsMuxer, VodError> {
        if video.is_none() && audio.is_none() {
            return Err(VodError::BadMedia("a segment with neither video nor audio".into()));
        }
        let adts = match audio {
            Some(a) => adts_template(a)?,
            None => [0; 7],
        };
        let mut next_pid = FIRST_PID;
        let mut stream = || {
            let s = Stream {
                pid: next_pid,
                cc: 0,
                last_dts: None,
            };
            next_pid += 1;
            s
        };
        let video_stream = video.map(|_| stream());
        let audio_stream = audio.map(|_| stream());
        let mut es = Vec::new();
        if let (Some(c), Some(s)) = (video, &video_stream) {
            es.push((c.stream_type(), s.pid));
        }
        if let Some(s) = &audio_stream {
            es.push((STREAM_TYPE_AAC, s.pid));
        }
        let pcr_pid = es[0].1;
        Ok(TsMuxer {
            out: BytesMut::with_capacity(64 * 1024),
            video: video_stream,
            video_codec: video,
            audio: audio_stream,
            adts,
            tables: Tables {
                pat: pat_section(),
                pmt: pmt_section(pcr_pid, &es),
                pat_cc: 0,
                pmt_cc: 0,
            },
            tables_due: true,
            last_pcr: None,
        })
    }

    /// Whether the muxer has a video track.
    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    /// Writes one frame (90 kHz timestamps). The data must be Annex-B H.264/H.265 or raw AAC.
    pub fn write(&mut self, video: bool, pts: i64, dts: i64, key: bool, data: &[u8]) -> Result<(), VodError> {
        if data.is_empty() {
            return Err(VodError::BadMedia("empty frame".into()));
        }
        if pts < dts {
            return Err(VodError::BadMedia(format!("pts {pts} before dts {dts}")));
        }
        let pcr_on_video = self.video.is_some();
        // Where a PCR-only packet would go: the video PID, with its last continuity counter.
        let video_pid = self.video.as_ref().map(|v| (v.pid, v.cc.wrapping_sub(1) & 0x0f));
        let stream = if video {
            self.video.as_mut()
        } else {
            self.audio.as_mut()
        };
        let Some(stream) = stream else {
            return Err(VodError::BadMedia("frame for a track the segment does not have".into()));
        };
        if stream.last_dts.is_some_and(|last| dts <= last) {
            return Err(VodError::BadMedia(format!("dts {dts} not after the track's last one")));
        }

        // The prefix the payload needs: an AUD before video that has none, the ADTS header
        // before AAC.
        let mut adts = self.adts;
        let prefix: &[u8] = if video {
            let codec = self.video_codec.unwrap_or(VideoCodec::H264);
            if codec.starts_with_aud(data) {
                &[]
            } else {
                codec.aud()
            }
        } else {
            let len = data.len() + adts.len();
            if len > 0x1fff {
                return Err(VodError::BadMedia(format!("AAC frame of {} bytes", data.len())));
            }
            adts[3] |= ((len >> 11) & 0x03) as u8;
            adts[4] = (len >> 3) as u8;
            adts[5] = ((len as u8 & 0x07) << 5) | 0x1f;
            &adts
        };
        // The PES header. Video leaves PES_packet_length at 0 (unbounded), as most muxers do.
        let with_dts = video && dts != pts;
        let opt = if with_dts { PES_OPT_MAX } else { PES_OPT_MAX - 5 };
        let pes_len = if video { 0 } else { opt + prefix.len() + data.len() };
        let mut head = [0u8; 6 + PES_OPT_MAX + 7];
        head[..9].copy_from_slice(&[
            0,
            0,
            1,
            if video { 0xe0 } else { 0xc0 },
            (pes_len >> 8) as u8,
            pes_len as u8,
            0x84,
            if with_dts { 0xc0 } else { 0x80 },
            (opt - 3) as u8,
        ]);
        let mut n = 9;
        if with_dts {
            head[n..n + 5].copy_from_slice(&timestamp(0x3, pts));
            head[n + 5..n + 10].copy_from_slice(&timestamp(0x1, dts));
            n += 10;
        } else {
            head[n..n + 5].copy_from_slice(&timestamp(0x2, pts));
            n += 5;
        }
        head[n..n + prefix.len()].copy_from_slice(prefix);
        n += prefix.len();

        if self.tables_due || (video && key) {
            self.tables.write(&mut self.out);
            self.tables_due = false;
        }
        // The PCR never goes back: a PCR-only packet may have carried an audio DTS a little
        // ahead of the video's.
        let pcr = if video == pcr_on_video {
            Some(self.last_pcr.map_or(dts, |last| last.max(dts)))
        } else {
            if let (Some(last), Some((pid, cc))) = (self.last_pcr, video_pid) {
                if dts - last > PCR_MAX_GAP {
                    write_pcr_only(&mut self.out, pid, cc, dts);
                    self.last_pcr = Some(dts);
                }
            }
            None
        };
        if pcr.is_some() {
            self.last_pcr = pcr;
        }
        stream.last_dts = Some(dts);
        write_pes(&mut self.out, stream, &head[..n], data, pcr, key);
        Ok(())
    }

    /// Returns every byte written since the last call; the next frame starts with PAT/PMT.
    pub fn take(&mut self) -> Result<Bytes, VodError> {
        let taken = self.out.split().freeze();
        // The next part is about as long as this one: room for it now, so the buffer is not
        // regrown (and copied) as frames are written.
        self.out.reserve(taken.len() + taken.len() / 4 + PACKET * 16);
        self.tables_due = true;
        Ok(taken)
    }

    /// Returns the remaining bytes (MPEG-TS has no trailer).
    pub fn finish(&mut self) -> Result<Bytes, VodError> {
        Ok(self.out.split().freeze())
    }
}

/// A PTS or DTS field: the 4-bit `prefix`, then 33 bits with marker bits.
fn timestamp(prefix: u8, t: i64) -> [u8; 5] {
    let t = (t as u64) & TS_MASK;
    [
        (prefix << 4) | (((t >> 29) as u8) & 0x0e) | 1,
        (t >> 22) as u8,
        (((t >> 14) as u8) & 0xfe) | 1,
        (t >> 7) as u8,
        ((t << 1) as u8) | 1,
    ]
}

/// Writes one PES packet (`head` then `body`) as TS packets of `stream`'s PID: the first with
/// payload_unit_start and, if `pcr`, an adaptation field with the PCR (and the random access
/// flag when `key`); the last padded by adaptation-field stuffing.
fn write_pes(out: &mut BytesMut, stream: &mut Stream, head: &[u8], body: &[u8], pcr: Option<i64>, key: bool) {
    let total = head.len() + body.len();
    out.reserve(total.div_ceil(PAYLOAD - 8) * PACKET + PACKET);
    let mut pos = 0;
    let mut first = true;
    while pos < total {
        // The adaptation field's own content (flags and PCR), before any stuffing.
        let (flags, pcr_here) = match (first, pcr) {
            (true, Some(p)) => (0x10 | if key { 0x40 } else { 0 }, Some(p)),
            (true, None) if key => (0x40, None),
            _ => (0, None),
        };
        let af_content = if flags != 0 {
            2 + if pcr_here.is_some() { 6 } else { 0 }
        } else {
            0
        };
        let n = (PAYLOAD - af_content).min(total - pos);
        let stuffing = PAYLOAD - af_content - n;
        let af_len = af_content + stuffing;
        let pusi = if first { 0x40 } else { 0 };
        let control = if af_len > 0 { 0x30 } else { 0x10 };
        out.put_slice(&[
            0x47,
            pusi | (stream.pid >> 8) as u8,
            stream.pid as u8,
            control | stream.cc,
        ]);
        stream.cc = (stream.cc + 1) & 0x0f;
        if af_len > 0 {
            // adaptation_field_length counts the bytes after itself.
            out.put_u8((af_len - 1) as u8);
            if af_len > 1 {
                out.put_u8(flags);
                if let Some(p) = pcr_here {
                    out.put_slice(&pcr_field(p));
                }
                let written = if pcr_here.is_some() { 8 } else { 2 };
                out.put_bytes(0xff, af_len - written);
            }
        }
        // The payload: bytes pos..pos + n of head followed by body.
        let end = pos + n;
        if pos < head.len() {
            let h_end = end.min(head.len());
            out.put_slice(&head[pos..h_end]);
            if end > head.len() {
                out.put_slice(&body[..end - head.len()]);
            }
        } else {
            out.put_slice(&body[pos - head.len()..end - head.len()]);
        }
        pos = end;
        first = false;
    }
}

/// The six bytes of a PCR field: 33-bit base (`pcr`, 90 kHz), 6 reserved bits, 9-bit
/// extension (0).
fn pcr_field(pcr: i64) -> [u8; 6] {
    let base = (pcr as u64) & TS_MASK;
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        (((base & 1) as u8) << 7) | 0x7e,
        0,
    ]
}

/// Writes a packet of `pid` with only an adaptation field carrying `pcr`. It has no payload,
/// so its continuity counter `cc` repeats the PID's previous one.
fn write_pcr_only(out: &mut BytesMut, pid: u16, cc: u8, pcr: i64) {
    out.put_slice(&[0x47, (pid >> 8) as u8, pid as u8, 0x20 | cc, 183, 0x10]);
    out.put_slice(&pcr_field(pcr));
    out.put_bytes(0xff, PACKET - 12);
}

/// Writes a PSI section in one TS packet (pointer field 0, padded with 0xff).
fn write_section(out: &mut BytesMut, pid: u16, cc: &mut u8, section: &[u8]) {
    out.put_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | *cc, 0]);
    *cc = (*cc + 1) & 0x0f;
    out.put_slice(section);
    out.put_bytes(0xff, PAYLOAD - 1 - section.len());
}

/// The PAT: program 1 on [`PMT_PID`].
fn pat_section() -> Vec<u8> {
    let mut s = vec![0x00, 0xb0, 0, 0x00, 0x01, 0xc1, 0x00, 0x00];
    s.extend_from_slice(&[0x00, 0x01, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8]);
    finish_section(s)
}

/// The PMT of program 1: `es` as (stream type, PID), PCR on `pcr_pid`.
fn pmt_section(pcr_pid: u16, es: &[(u8, u16)]) -> Vec<u8> {
    let mut s = vec![0x02, 0xb0, 0, 0x00, 0x01, 0xc1, 0x00, 0x00];
    s.extend_from_slice(&[0xe0 | (pcr_pid >> 8) as u8, pcr_pid as u8, 0xf0, 0x00]);
    for &(stream_type, pid) in es {
        s.extend_from_slice(&[stream_type, 0xe0 | (pid >> 8) as u8, pid as u8, 0xf0, 0x00]);
    }
    finish_section(s)
}

/// Fills in section_length and appends the CRC.
fn finish_section(mut s: Vec<u8>) -> Vec<u8> {
    // section_length counts from after itself to the end of the CRC.
    let len = s.len() - 3 + 4;
    s[1] |= (len >> 8) as u8 & 0x0f;
    s[2] = len as u8;
    let crc = crc32_mpeg(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, initial value all ones, not reflected).
fn crc32_mpeg(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The ADTS header of `track`'s frames without their length: MPEG-4, no CRC, the profile,
/// sampling index and channel configuration of its AudioSpecificConfig.
fn adts_template(track: &AudioTrack) -> Result<[u8; 7], VodError> {
    let c = &track.config;
    let mut bits = BitReader::new(c);
    let bad = || VodError::Unsupported(format!("AAC config {c:02x?} in ADTS"));
    let mut object = bits.read(5).ok_or_else(bad)?;
    let mut index = bits.read(4).ok_or_else(bad)?;
    if index == 15 {
        let rate = bits.read(24).ok_or_else(bad)?;
        index = AAC_RATES.iter().position(|r| *r == rate).ok_or_else(bad)? as u32;
    }
    let mut channels = bits.read(4).ok_or_else(bad)?;
    if object == 5 || object == 29 {
        // Explicit SBR/PS signalling: ADTS carries the core (AAC) object type and rate.
        if bits.read(4).ok_or_else(bad)? == 15 {
            bits.read(24).ok_or_else(bad)?;
        }
        object = bits.read(5).ok_or_else(bad)?;
    }
    if !(1..=4).contains(&object) {
        return Err(bad());
    }
    if channels == 0 {
        channels = u32::from(track.channels.clamp(1, 7));
    }
    let profile = (object - 1) as u8;
    Ok([
        0xff,
        0xf1,
        (profile << 6) | ((index as u8) << 2) | ((channels >> 2) as u8 & 1),
        ((channels & 3) as u8) << 6,
        0,
        0x1f,
        0xfc,
    ])
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// What a TS byte stream holds: PSI sections by PID and PES packets by PID, in order.
    #[derive(Default)]
    struct Demuxed {
        sections: HashMap<u16, Vec<Vec<u8>>>,
        pes: HashMap<u16, Vec<Vec<u8>>>,
        pcrs: Vec<(u16, u64)>,
        random_access: Vec<u16>,
    }

    /// Checks the packet structure (sync bytes, continuity counters, adaptation fields) and
    /// reassembles sections and PES packets.
    fn demux(ts: &[u8]) -> Demuxed {
        assert_eq!(ts.len() % PACKET, 0, "not whole packets");
        let mut d = Demuxed::default();
        let mut cc: HashMap<u16, u8> = HashMap::new();
        for p in ts.chunks(PACKET) {
            assert_eq!(p[0], 0x47);
            let pusi = p[1] & 0x40 != 0;
            let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
            let control = p[3] >> 4;
            assert!((1..=3).contains(&control), "adaptation_field_control {control}");
            // Packets without payload do not advance the counter (they repeat the last one).
            if control == 2 {
                assert_eq!(cc.get(&pid), Some(&(p[3] & 0x0f)), "continuity of a PCR-only packet");
            } else if let Some(prev) = cc.insert(pid, p[3] & 0x0f) {
                assert_eq!(p[3] & 0x0f, (prev + 1) & 0x0f, "continuity on PID {pid:#x}");
            }
            let mut i = 4;
            if control & 2 != 0 {
                let len = p[4] as usize;
                assert!(5 + len <= PACKET);
                if len > 0 {
                    let flags = p[5];
                    if flags & 0x40 != 0 {
                        d.random_access.push(pid);
                    }
                    if flags & 0x10 != 0 {
                        let b = &p[6..12];
                        let base = (u64::from(b[0]) << 25)
                            | (u64::from(b[1]) << 17)
                            | (u64::from(b[2]) << 9)
                            | (u64::from(b[3]) << 1)
                            | u64::from(b[4] >> 7);
                        d.pcrs.push((pid, base));
                    }
                    let stuffing_from = if flags & 0x10 != 0 { 12 } else { 6 };
                    assert!(p[stuffing_from..5 + len].iter().all(|b| *b == 0xff), "stuffing");
                }
                i = 5 + len;
            }
            if control == 2 {
                assert_eq!(i, PACKET, "a packet without payload is all adaptation field");
                continue;
            }
            let payload = &p[i..];
            if pid == PAT_PID || pid == PMT_PID {
                assert!(pusi);
                let ptr = payload[0] as usize;
                let s = &payload[1 + ptr..];
                let len = ((usize::from(s[1]) & 0x0f) << 8) | usize::from(s[2]);
                let section = s[..3 + len].to_vec();
                assert_eq!(crc32_mpeg(&section), 0, "CRC of a section on {pid:#x}");
                d.sections.entry(pid).or_default().push(section);
            } else {
                let list = d.pes.entry(pid).or_default();
                if pusi {
                    list.push(Vec::new());
                }
                list.last_mut()
                    .expect("PES starts with payload_unit_start")
                    .extend_from_slice(payload);
            }
        }
        d
    }

    fn read_ts(b: &[u8]) -> u64 {
        (u64::from(b[0] & 0x0e) << 29)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | u64::from(b[4] >> 1)
    }

    /// A PES packet's (PTS, DTS, payload).
    fn parse_pes(p: &[u8]) -> (u64, u64, &[u8]) {
        assert_eq!(&p[..3], &[0, 0, 1]);
        let len = (usize::from(p[4]) << 8) | usize::from(p[5]);
        if len > 0 {
            assert_eq!(len, p.len() - 6, "PES_packet_length");
        }
        let hdr = usize::from(p[8]);
        let pts = read_ts(&p[9..14]);
        let dts = if p[7] & 0x40 != 0 { read_ts(&p[14..19]) } else { pts };
        (pts, dts, &p[9 + hdr..])
    }

    fn aac_lc_48k_stereo() -> AudioTrack {
        AudioTrack {
            config: Bytes::from_static(&[0x11, 0x90]),
            rate: 48000,
            channels: 2,
        }
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        let mut f = vec![0, 0, 0, 1, 0x65];
        f.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
        f
    }

    #[test]
    fn frames_come_back_from_the_packets() {
        let mut m = TsMuxer::new(Some(VideoCodec::H264), Some(&aac_lc_48k_stereo())).expect("muxer");
        let key = frame(20_000, 1);
        let delta = frame(183, 2);
        let aac = vec![0x21u8; 300];
        m.write(true, 9000, 6000, true, &key).expect("key");
        m.write(false, 6100, 6100, true, &aac).expect("audio");
        m.write(true, 12000, 9000, false, &delta).expect("delta");
        let ts = m.finish().expect("finish");
        let d = demux(&ts);

        let pmt = &d.sections[&PMT_PID][0];
        assert_eq!(&pmt[8..10], &[0xe1, 0x00], "PCR on the video PID");
        assert_eq!(&pmt[12..17], &[0x1b, 0xe1, 0x00, 0xf0, 0x00]);
        assert_eq!(&pmt[17..22], &[0x0f, 0xe1, 0x01, 0xf0, 0x00]);
        assert_eq!(&d.sections[&PAT_PID][0][8..12], &[0x00, 0x01, 0xf0, 0x00]);

        let video = &d.pes[&0x100];
        assert_eq!(video.len(), 2);
        let (pts, dts, payload) = parse_pes(&video[0]);
        assert_eq!((pts, dts), (9000, 6000));
        assert_eq!(&payload[..6], VideoCodec::H264.aud());
        assert_eq!(&payload[6..], &key[..]);
        let (pts, dts, payload) = parse_pes(&video[1]);
        assert_eq!((pts, dts), (12000, 9000));
        assert_eq!(&payload[6..], &delta[..]);
        assert_eq!(d.pcrs, vec![(0x100, 6000), (0x100, 9000)]);
        assert_eq!(d.random_access, vec![0x100, 0x101], "the keyframe and the audio frame");

        let audio = &d.pes[&0x101];
        let (pts, _, payload) = parse_pes(&audio[0]);
        assert_eq!(pts, 6100);
        let len = aac.len() + 7;
        assert_eq!(
            &payload[..7],
            &[
                0xff,
                0xf1,
                0x4c,
                0x80 | (len >> 11) as u8,
                (len >> 3) as u8,
                ((len as u8 & 7) << 5) | 0x1f,
                0xfc
            ],
            "ADTS: AAC-LC, 48 kHz, 2 channels"
        );
        assert_eq!(&payload[7..], &aac[..]);
    }

    #[test]
    fn every_part_and_keyframe_starts_with_the_tables() {
        let mut m = TsMuxer::new(Some(VideoCodec::H265), None).expect("muxer");
        let mut parts = Vec::new();
        for i in 0..6i64 {
            m.write(true, i * 3000, i * 3000, i % 3 == 0, &frame(1000, i as u8))
                .expect("frame");
            if i % 2 == 1 {
                parts.push(m.take().expect("take"));
            }
        }
        for p in &parts {
            assert_eq!(&p[..4], &[0x47, 0x40, 0x00, p[3]], "a part starts with the PAT");
            assert_eq!((p[1] & 0x1f, p[2]), (0x00, 0x00));
        }
        let whole: Vec<u8> = parts.concat();
        let d = demux(&whole);
        // One at the start of each of the three parts, one before the keyframe inside the second.
        assert_eq!(d.sections[&PAT_PID].len(), 4);
        assert_eq!(d.pes[&0x100].len(), 6);
        let pmt = &d.sections[&PMT_PID][0];
        assert_eq!(pmt[12], 0x24, "H.265 stream type");
        let (_, _, payload) = parse_pes(&d.pes[&0x100][0]);
        assert_eq!(&payload[..7], VideoCodec::H265.aud());
    }

    #[test]
    fn a_frame_with_its_own_delimiter_gets_no_second_one() {
        let mut m = TsMuxer::new(Some(VideoCodec::H264), None).expect("muxer");
        let mut f = vec![0, 0, 1, 0x09, 0x10];
        f.extend_from_slice(&frame(50, 3));
        m.write(true, 0, 0, true, &f).expect("frame");
        let d = demux(&m.finish().expect("finish"));
        let (_, _, payload) = parse_pes(&d.pes[&0x100][0]);
        assert_eq!(payload, &f[..]);
    }

    #[test]
    fn audio_only_carries_the_pcr_on_the_audio_pid() {
        let mut m = TsMuxer::new(None, Some(&aac_lc_48k_stereo())).expect("muxer");
        // Packet sizes around the single-packet limit exercise every stuffing length.
        for (i, len) in (160..190).enumerate() {
            m.write(false, i as i64 * 1920, i as i64 * 1920, true, &vec![7u8; len])
                .expect("audio");
        }
        let d = demux(&m.finish().expect("finish"));
        assert_eq!(d.pes[&0x100].len(), 30);
        assert_eq!(d.pcrs.len(), 30);
        assert!(d.pcrs.iter().all(|(pid, _)| *pid == 0x100));
        for (i, p) in d.pes[&0x100].iter().enumerate() {
            let (pts, _, payload) = parse_pes(p);
            assert_eq!(pts, i as u64 * 1920);
            assert_eq!(payload.len(), 7 + 160 + i);
        }
    }

    #[test]
    fn pcr_keeps_going_while_video_stalls() {
        let mut m = TsMuxer::new(Some(VideoCodec::H264), Some(&aac_lc_48k_stereo())).expect("muxer");
        let mut audio = (0..).map(|i| i * 1920);
        let mut write_audio_until = |m: &mut TsMuxer, t: i64| {
            for a in audio.by_ref() {
                m.write(false, a, a, true, &[5u8; 100]).expect("audio");
                if a >= t {
                    break;
                }
            }
        };
        // Half a second of video, a one-second stall with audio only, then video again.
        let video_times = (0..15).map(|i| i * 3000).chain((0..15).map(|i| 135_000 + i * 3000));
        for (i, t) in video_times.enumerate() {
            write_audio_until(&mut m, t);
            m.write(true, t + 1000, t, i == 0, &frame(300, i as u8)).expect("video");
        }
        let d = demux(&m.finish().expect("finish"));
        assert_eq!(d.pes[&0x100].len(), 30, "every video frame");
        assert!(d.pcrs.iter().all(|(pid, _)| *pid == 0x100), "PCR on the video PID only");
        assert!(d.pcrs.windows(2).all(|w| w[0].1 <= w[1].1), "the PCR never goes back");
        let largest_gap = d.pcrs.windows(2).map(|w| w[1].1 - w[0].1).max().unwrap_or(0);
        assert!(largest_gap <= 9000 + 1920, "PCR gap of {largest_gap} ticks");
        // The stall was bridged by PCR-only packets: more PCRs than video frames.
        assert!(d.pcrs.len() >= 30 + 8, "{} PCRs", d.pcrs.len());
    }

    #[test]
    fn timestamps_wrap_at_33_bits() {
        let mut m = TsMuxer::new(Some(VideoCodec::H264), None).expect("muxer");
        let t = (1i64 << 33) + 4500;
        m.write(true, t, t, true, &frame(10, 0)).expect("frame");
        let d = demux(&m.finish().expect("finish"));
        assert_eq!(parse_pes(&d.pes[&0x100][0]).0, 4500);
    }

    #[test]
    fn bad_frames_and_configs_are_refused() {
        let mut m = TsMuxer::new(Some(VideoCodec::H264), None).expect("muxer");
        assert!(m.write(true, 10, 20, true, &frame(10, 0)).is_err(), "pts before dts");
        m.write(true, 20, 20, true, &frame(10, 0)).expect("frame");
        assert!(
            m.write(true, 20, 20, false, &frame(10, 0)).is_err(),
            "dts not increasing"
        );
        assert!(m.write(false, 30, 30, true, &[1, 2]).is_err(), "no audio track");
        assert!(m.write(true, 30, 30, false, &[]).is_err(), "empty");
        let bad = AudioTrack {
            config: Bytes::from_static(&[0xf8]),
            rate: 48000,
            channels: 2,
        };
        assert!(TsMuxer::new(None, Some(&bad)).is_err());
        assert!(TsMuxer::new(None, None).is_err());
        // HE-AAC with explicit SBR signalling: ADTS carries AAC-LC at the core rate (24 kHz).
        let he = AudioTrack {
            config: Bytes::from_static(&[0x2b, 0x11, 0x88, 0x00]),
            rate: 48000,
            channels: 2,
        };
        let adts = adts_template(&he).expect("HE-AAC");
        assert_eq!(adts[2] >> 6, 1, "AAC-LC profile");
        assert_eq!((adts[2] >> 2) & 0x0f, 6, "24 kHz index");
    }
}
