//! Cutting one program (at most one video and one audio track) into MPEG-TS segments and
//! low-latency parts.
//!
//! Policy: with video, a segment starts at a keyframe (H.264 IDR with SPS/PPS, or H.265 IRAP
//! picture with VPS/SPS/PPS) and is cut at the first keyframe at or after `target`; it may run
//! long when the GOP is long. Audio-only
//! programs are cut on time. Each segment is muxed by its own [`mux::TsMuxer`] (PAT/PMT at its
//! start, so it decodes alone) and split into parts of about `part` at frame boundaries: the
//! concatenation of a segment's parts is exactly the segment. VP8 becomes H.264 and Opus/G.711
//! become AAC through [`crate::transcode`]; H.264, H.265 and AAC pass through (H.265 is never
//! re-encoded). A change of video codec is handled like a timestamp jump.
//!
//! A timestamp jump (more than 2 s forward, or backwards) closes the open segment and flags the
//! next one as a discontinuity; small backward steps (under 100 ms) drop the frame.

pub(crate) mod mux;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::depack::{aac_channels, aac_rate};
use crate::frame::{Codec, Frame, CLOCK_HZ};
use crate::transcode::{AudioTranscoder, VideoTranscoder};
use crate::VodError;
use mux::{AudioTrack, TsMuxer, VideoCodec};

/// Segment and part target durations.
#[derive(Clone, Copy, Debug)]
pub struct SegmenterConfig {
    /// Target segment duration (segments are cut on the first keyframe at or after it).
    pub target: Duration,
    /// Target part duration (low-latency HLS).
    pub part: Duration,
}

impl Default for SegmenterConfig {
    /// 1 s segments, 200 ms parts: what live HLS, recordings and uploads use.
    fn default() -> Self {
        SegmenterConfig {
            target: Duration::from_secs(1),
            part: Duration::from_millis(200),
        }
    }
}

/// What the segmenter produces, in order: the parts of a segment, then the segment.
#[derive(Clone, Debug)]
pub enum SegmentEvent {
    /// A finished part of the open segment: `data` is this part's bytes only; the concatenation of a
    /// segment's parts, in order, is exactly that segment's `data`. `independent` = starts with a keyframe.
    Part {
        segment: u64,
        index: u32,
        duration: f64,
        independent: bool,
        data: Bytes,
    },
    /// A finished segment (its parts were emitted before).
    Segment(Segment),
}

/// One finished MPEG-TS segment.
#[derive(Clone, Debug)]
pub struct Segment {
    /// 0, 1, 2, ... per [`Segmenter`].
    pub seq: u64,
    /// 90 kHz, the first frame's pts.
    pub start_pts: i64,
    /// Seconds, what goes into `#EXTINF`.
    pub duration: f64,
    /// The timestamps jumped (more than 2 s forward, or backwards) before this segment: the
    /// player must reset (`#EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
    /// The segment's bytes as its parts (in order): a complete MPEG-TS segment once joined.
    /// Joined only by a consumer that needs one buffer ([`Segment::data`]). Empty when the
    /// segmenter was told not to keep them ([`Segmenter::keep_bytes`]): a live program's
    /// window already holds the parts.
    pub parts: Vec<Bytes>,
    /// Its length in bytes, kept or not.
    pub len: usize,
}

impl Segment {
    /// A segment of one buffer.
    pub fn whole(seq: u64, start_pts: i64, duration: f64, discontinuity: bool, data: Bytes) -> Segment {
        Segment {
            seq,
            start_pts,
            duration,
            discontinuity,
            len: data.len(),
            parts: vec![data],
        }
    }

    /// Whether its bytes came with it (see [`Segment::parts`]).
    pub fn has_bytes(&self) -> bool {
        self.parts.iter().map(Bytes::len).sum::<usize>() == self.len
    }

    /// The whole segment in one buffer (a copy unless it has a single part; empty when the
    /// bytes were not kept).
    pub fn data(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => {
                let mut data = BytesMut::with_capacity(self.len);
                for p in parts {
                    data.extend_from_slice(p);
                }
                data.freeze()
            }
        }
    }
}

/// A forward jump larger than this is a discontinuity.
const JUMP_FORWARD: i64 = 2 * CLOCK_HZ;
/// A backward step larger than this is a discontinuity; smaller ones drop the frame.
const JUMP_BACK: i64 = CLOCK_HZ / 10;
/// Without video for this long, an A/V program is cut on audio time.
const VIDEO_STALL: i64 = 2 * CLOCK_HZ;
/// Audio waits this long for video to show up before an audio-only segment starts.
const AUDIO_HOLD: i64 = CLOCK_HZ / 2;
/// At most this much audio is held while waiting for the first video keyframe.
const PENDING_MAX: i64 = 4 * CLOCK_HZ;
const V: usize = 0;
const A: usize = 1;

/// Cuts the frames of one program into segments and parts.
pub struct Segmenter {
    cfg: SegmenterConfig,
    target: i64,
    part: i64,
    next_seq: u64,
    open: Option<Open>,
    /// Whether a finished segment carries its parts' bytes.
    keep_bytes: bool,
    /// The video codec seen (none yet: audio-only so far).
    video_codec: Option<VideoCodec>,
    audio: Option<AudioTrack>,
    video_tc: Option<VideoTranscoder>,
    audio_tc: Option<(Codec, AudioTranscoder)>,
    waiting_key: bool,
    pending_audio: VecDeque<(i64, Bytes)>,
    /// Video held at start (up to [`AUDIO_HOLD`]) until audio shows up, so the first segment has both.
    pending_video: Vec<(i64, i64, bool, Bytes)>,
    /// Whether the start-up wait for audio is over.
    hold_done: bool,
    discontinuity: bool,
    last_dts: [Option<i64>; 2],
    last_pts: [Option<i64>; 2],
    frame_dur: [i64; 2],
    last_video_pts: Option<i64>,
}

/// The segment being written.
struct Open {
    seq: u64,
    start_pts: i64,
    mux: TsMuxer,
    audio: Option<AudioTrack>,
    discontinuity: bool,
    /// The parts so far (only while the segmenter keeps bytes).
    parts: Vec<Bytes>,
    /// How many parts, and their bytes, so far.
    part_count: u32,
    len: usize,
    part_start: i64,
    part_independent: bool,
    part_frames: u32,
    end_pts: i64,
}

impl Segmenter {
    /// A segmenter with the given durations.
    pub fn new(cfg: SegmenterConfig) -> Segmenter {
        let to90 = |d: Duration| ((d.as_secs_f64() * CLOCK_HZ as f64).round() as i64).max(1);
        Segmenter {
            cfg,
            target: to90(cfg.target),
            part: to90(cfg.part),
            next_seq: 0,
            open: None,
            keep_bytes: true,
            video_codec: None,
            audio: None,
            video_tc: None,
            audio_tc: None,
            waiting_key: true,
            pending_audio: VecDeque::new(),
            pending_video: Vec::new(),
            hold_done: false,
            discontinuity: false,
            last_dts: [None; 2],
            last_pts: [None; 2],
            frame_dur: [CLOCK_HZ / 30, 1920],
            last_video_pts: None,
        }
    }

    /// Whether finished segments carry their bytes (the default). A live program says no: its
    /// window holds the parts, and a segment's parts would otherwise stay in memory until the
    /// segment ends (up to a GOP of a camera's bitrate) for nothing while nothing records.
    pub fn keep_bytes(mut self, keep: bool) -> Segmenter {
        self.keep_bytes = keep;
        self
    }

    /// The configuration this segmenter was made with.
    pub fn config(&self) -> SegmenterConfig {
        self.cfg
    }

    /// Frames of one program (at most one video track and one audio track, interleaved in roughly
    /// increasing pts; audio and video share the 90 kHz clock origin chosen by the caller).
    pub fn push(&mut self, frame: Frame) -> Result<Vec<SegmentEvent>, VodError> {
        let dts = frame.pts;
        self.push_with_dts(frame, dts)
    }

    /// Like [`Segmenter::push`] with an explicit decode timestamp (uploads with B-frames, and
    /// live video whose decode times [`crate::decode_order`] derived).
    pub(crate) fn push_with_dts(&mut self, frame: Frame, dts: i64) -> Result<Vec<SegmentEvent>, VodError> {
        let mut ev = Vec::new();
        match &frame.codec {
            Codec::H264 => self.video(VideoCodec::H264, frame.pts, dts, frame.keyframe, frame.data, &mut ev)?,
            Codec::H265 => self.video(VideoCodec::H265, frame.pts, dts, frame.keyframe, frame.data, &mut ev)?,
            Codec::Vp8 => {
                if self.video_tc.is_none() {
                    self.video_tc = Some(VideoTranscoder::vp8()?);
                }
                let out = match self.video_tc.as_mut() {
                    Some(tc) => tc.push(frame.pts, &frame.data)?,
                    None => Vec::new(),
                };
                for f in out {
                    self.video(VideoCodec::H264, f.pts, f.dts, f.key, f.data, &mut ev)?;
                }
            }
            Codec::Aac { config } => {
                let track = AudioTrack {
                    config: config.clone(),
                    rate: aac_rate(config),
                    channels: aac_channels(config),
                };
                self.audio_frame(frame.pts, frame.data, track, &mut ev)?;
            }
            c @ (Codec::Opus { .. } | Codec::Pcmu | Codec::Pcma) => {
                if self.audio_tc.as_ref().is_none_or(|(have, _)| have != c) {
                    let tc = AudioTranscoder::for_codec(c)?;
                    self.set_audio_track(tc.track().clone());
                    self.audio_tc = Some((c.clone(), tc));
                }
                let (out, track) = match self.audio_tc.as_mut() {
                    Some((_, tc)) => (tc.push(frame.pts, &frame.data)?, tc.track().clone()),
                    None => return Ok(ev),
                };
                for f in out {
                    self.audio_frame(f.pts, f.data, track.clone(), &mut ev)?;
                }
            }
        }
        Ok(ev)
    }

    /// Flushes the open segment (end of stream).
    pub fn finish(&mut self) -> Result<Vec<SegmentEvent>, VodError> {
        let mut ev = Vec::new();
        if let Some(tc) = self.video_tc.as_mut() {
            for f in tc.flush()? {
                self.video(VideoCodec::H264, f.pts, f.dts, f.key, f.data, &mut ev)?;
            }
        }
        if let Some((_, tc)) = self.audio_tc.as_mut() {
            let track = tc.track().clone();
            for f in tc.flush()? {
                self.audio_frame(f.pts, f.data, track.clone(), &mut ev)?;
            }
        }
        if self.open.is_none() && !self.pending_video.is_empty() {
            self.flush_pending_video(&mut ev)?;
        }
        if self.open.is_none() && self.video_codec.is_none() && !self.pending_audio.is_empty() {
            self.open_audio_from_pending(&mut ev)?;
        }
        self.close(None, &mut ev)?;
        self.pending_audio.clear();
        self.video_tc = None;
        self.audio_tc = None;
        self.waiting_key = true;
        Ok(ev)
    }

    /// Classifies a timestamp against the track's last one: Some(true) = discontinuity,
    /// Some(false) = drop (small step back), None = fine.
    fn check_jump(&self, t: usize, dts: i64) -> Option<bool> {
        let last = self.last_dts[t]?;
        let d = dts - last;
        if !(-JUMP_BACK..=JUMP_FORWARD).contains(&d) {
            Some(true)
        } else if d <= 0 {
            Some(false)
        } else {
            None
        }
    }

    fn break_stream(&mut self, ev: &mut Vec<SegmentEvent>) -> Result<(), VodError> {
        tracing::debug!("segmenter: timestamp discontinuity");
        self.close(None, ev)?;
        self.discontinuity = true;
        self.waiting_key = true;
        self.last_dts = [None; 2];
        self.last_pts = [None; 2];
        self.pending_audio.clear();
        self.pending_video.clear();
        self.last_video_pts = None;
        Ok(())
    }

    fn video(
        &mut self,
        codec: VideoCodec,
        pts: i64,
        dts: i64,
        key: bool,
        data: Bytes,
        ev: &mut Vec<SegmentEvent>,
    ) -> Result<(), VodError> {
        if !(data.starts_with(&[0, 0, 1]) || data.starts_with(&[0, 0, 0, 1])) || data.len() < 5 {
            tracing::trace!("segmenter: video frame without a start code dropped");
            return Ok(());
        }
        if self.video_codec.is_some_and(|c| c != codec) {
            // The muxer's stream type changes: a new segment, from the next keyframe.
            self.break_stream(ev)?;
        }
        self.video_codec = Some(codec);
        match self.check_jump(V, dts) {
            Some(true) => self.break_stream(ev)?,
            Some(false) => return Ok(()),
            None => {}
        }
        // A straggler far from the open segment (after a discontinuity on the other track).
        if let Some(o) = &self.open {
            if self.last_dts[V].is_none() && (pts - o.start_pts).abs() > JUMP_FORWARD {
                return Ok(());
            }
        }
        self.last_video_pts = Some(pts);
        let need_key = match &self.open {
            None => self.pending_video.is_empty(),
            Some(o) => !o.mux.has_video() || self.waiting_key,
        };
        if need_key && !key {
            return Ok(());
        }
        let cut = match &self.open {
            None => false,
            Some(o) => {
                !o.mux.has_video()
                    || (key && (pts - o.start_pts >= self.target - 90 || o.audio.as_ref() != self.audio.as_ref()))
            }
        };
        if cut {
            self.close(Some(pts), ev)?;
        }
        if self.open.is_none() && !self.hold_done {
            self.pending_video.push((pts, dts, key, data));
            self.last_dts[V] = Some(dts);
            let span = self.pending_video.last().map(|l| l.0).unwrap_or(pts) - self.pending_video[0].0;
            if self.audio.is_some() || span >= AUDIO_HOLD {
                self.flush_pending_video(ev)?;
            }
            return Ok(());
        }
        if self.open.is_none() {
            self.open_segment(pts, ev)?;
            // Audio that waited for this keyframe.
            let pending = std::mem::take(&mut self.pending_audio);
            self.write_video(pts, dts, key, &data);
            for (apts, adata) in pending.into_iter().filter(|(p, _)| *p >= pts) {
                self.write_audio(apts, &adata);
            }
            return Ok(());
        }
        self.maybe_part(pts, key, ev);
        self.write_video(pts, dts, key, &data);
        Ok(())
    }

    fn audio_frame(
        &mut self,
        pts: i64,
        data: Bytes,
        track: AudioTrack,
        ev: &mut Vec<SegmentEvent>,
    ) -> Result<(), VodError> {
        if data.is_empty() {
            return Ok(());
        }
        self.set_audio_track(track);
        match self.check_jump(A, pts) {
            Some(true) => self.break_stream(ev)?,
            Some(false) => return Ok(()),
            None => {}
        }
        if self.open.is_none() && !self.pending_video.is_empty() {
            self.flush_pending_video(ev)?;
            if self.pending_video.is_empty() && self.open.as_ref().is_some_and(|o| pts < o.start_pts) {
                self.last_dts[A] = Some(pts);
                return Ok(()); // audio from before the first keyframe
            }
        }
        let Some(o) = &self.open else {
            self.pending_audio.push_back((pts, data));
            while let (Some(f), Some(b)) = (self.pending_audio.front(), self.pending_audio.back()) {
                if b.0 - f.0 <= PENDING_MAX {
                    break;
                }
                self.pending_audio.pop_front();
            }
            self.last_dts[A] = Some(pts);
            if self.video_codec.is_none() {
                if let (Some(f), Some(b)) = (self.pending_audio.front(), self.pending_audio.back()) {
                    if b.0 - f.0 >= AUDIO_HOLD {
                        self.open_audio_from_pending(ev)?;
                    }
                }
            }
            return Ok(());
        };
        if self.last_dts[A].is_none() && (pts - o.start_pts).abs() > JUMP_FORWARD {
            return Ok(()); // straggler after a discontinuity on the video track
        }
        let has_video = o.mux.has_video();
        let same_track = o.audio.as_ref() == self.audio.as_ref();
        let video_stalled = self.last_video_pts.is_none_or(|v| pts - v > VIDEO_STALL);
        if has_video && !same_track {
            return Ok(()); // the next segment (cut on a keyframe) carries the new audio track
        }
        let timed_cut = pts - o.start_pts >= self.target - 90;
        if !same_track || (timed_cut && (!has_video || video_stalled)) {
            self.close(Some(pts), ev)?;
            if has_video {
                self.waiting_key = true;
            }
            self.open_segment(pts, ev)?;
        } else if !has_video || video_stalled {
            self.maybe_part(pts, true, ev);
        }
        self.write_audio(pts, &data);
        Ok(())
    }

    fn set_audio_track(&mut self, track: AudioTrack) {
        if self.audio.as_ref() != Some(&track) {
            self.frame_dur[A] = 1024 * CLOCK_HZ / track.rate.max(1) as i64;
            self.audio = Some(track);
        }
    }

    /// Opens the first segment with the video held at start-up.
    fn flush_pending_video(&mut self, ev: &mut Vec<SegmentEvent>) -> Result<(), VodError> {
        self.hold_done = true;
        let pending = std::mem::take(&mut self.pending_video);
        let Some(&(start, ..)) = pending.first() else {
            return Ok(());
        };
        self.open_segment(start, ev)?;
        for (i, (pts, dts, key, data)) in pending.into_iter().enumerate() {
            if i > 0 {
                self.maybe_part(pts, key, ev);
            }
            self.write_video(pts, dts, key, &data);
        }
        Ok(())
    }

    fn open_audio_from_pending(&mut self, ev: &mut Vec<SegmentEvent>) -> Result<(), VodError> {
        let pending = std::mem::take(&mut self.pending_audio);
        let Some(&(start, _)) = pending.front() else {
            return Ok(());
        };
        self.open_segment(start, ev)?;
        for (i, (p, d)) in pending.into_iter().enumerate() {
            if i > 0 {
                self.maybe_part(p, true, ev);
            }
            self.write_audio(p, &d);
        }
        Ok(())
    }

    fn open_segment(&mut self, pts: i64, _ev: &mut Vec<SegmentEvent>) -> Result<(), VodError> {
        let mux = TsMuxer::new(self.video_codec, self.audio.as_ref())?;
        self.open = Some(Open {
            seq: self.next_seq,
            start_pts: pts,
            mux,
            audio: self.audio.clone(),
            discontinuity: std::mem::take(&mut self.discontinuity) && self.next_seq > 0,
            parts: Vec::new(),
            part_count: 0,
            len: 0,
            part_start: pts,
            part_independent: false,
            part_frames: 0,
            end_pts: pts,
        });
        self.next_seq += 1;
        Ok(())
    }

    /// Ends the open part before a frame at `pts` when it is long enough.
    fn maybe_part(&mut self, pts: i64, independent: bool, ev: &mut Vec<SegmentEvent>) {
        let Some(o) = self.open.as_mut() else { return };
        if o.part_frames == 0 || pts - o.part_start < self.part {
            return;
        }
        match o.mux.take() {
            Ok(data) => {
                ev.push(SegmentEvent::Part {
                    segment: o.seq,
                    index: o.part_count,
                    duration: (pts - o.part_start).max(0) as f64 / CLOCK_HZ as f64,
                    independent: o.part_independent,
                    data: data.clone(),
                });
                o.part_count += 1;
                o.len += data.len();
                if self.keep_bytes {
                    o.parts.push(data);
                }
                o.part_start = pts;
                o.part_frames = 0;
                o.part_independent = independent && !o.mux.has_video();
            }
            Err(e) => tracing::debug!("segmenter: flush failed: {e}"),
        }
    }

    fn write_video(&mut self, pts: i64, dts: i64, key: bool, data: &[u8]) {
        let Some(o) = self.open.as_mut() else { return };
        if let Err(e) = o.mux.write(true, pts, dts, key, data) {
            tracing::trace!("segmenter: video frame dropped: {e}");
            return;
        }
        if o.part_frames == 0 && key {
            o.part_independent = true;
        }
        o.part_frames += 1;
        if let Some(lp) = self.last_pts[V] {
            let d = pts - lp;
            if d > 0 && d < CLOCK_HZ {
                self.frame_dur[V] = d;
            }
        }
        self.last_pts[V] = Some(pts);
        self.last_dts[V] = Some(dts);
        o.end_pts = o.end_pts.max(pts + self.frame_dur[V]);
        if key {
            self.waiting_key = false;
        }
    }

    fn write_audio(&mut self, pts: i64, data: &[u8]) {
        let Some(o) = self.open.as_mut() else { return };
        if o.audio.is_none() {
            return;
        }
        if let Err(e) = o.mux.write(false, pts, pts, true, data) {
            tracing::trace!("segmenter: audio frame dropped: {e}");
            return;
        }
        if o.part_frames == 0 && !o.mux.has_video() {
            o.part_independent = true;
        }
        o.part_frames += 1;
        self.last_pts[A] = Some(pts);
        self.last_dts[A] = Some(pts);
        o.end_pts = o.end_pts.max(pts + self.frame_dur[A]);
    }

    /// Closes the open segment; `end` is the pts of the frame that starts the next one.
    fn close(&mut self, end: Option<i64>, ev: &mut Vec<SegmentEvent>) -> Result<(), VodError> {
        let Some(mut o) = self.open.take() else { return Ok(()) };
        let end = end.unwrap_or(o.end_pts).max(o.part_start);
        let last = o.mux.finish()?;
        ev.push(SegmentEvent::Part {
            segment: o.seq,
            index: o.part_count,
            duration: (end - o.part_start) as f64 / CLOCK_HZ as f64,
            independent: o.part_independent,
            data: last.clone(),
        });
        o.len += last.len();
        if self.keep_bytes {
            o.parts.push(last);
        }
        ev.push(SegmentEvent::Segment(Segment {
            seq: o.seq,
            start_pts: o.start_pts,
            duration: (end - o.start_pts).max(0) as f64 / CLOCK_HZ as f64,
            discontinuity: o.discontinuity,
            parts: o.parts,
            len: o.len,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aac(pts: i64) -> Frame {
        Frame {
            codec: Codec::Aac {
                config: crate::transcode::aac_config(48000, 2),
            },
            pts,
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]),
        }
    }

    #[test]
    fn audio_only_is_cut_on_time_with_parts() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        let mut ev = Vec::new();
        for i in 0..200 {
            ev.extend(s.push(aac(i * 1920)).unwrap());
        }
        ev.extend(s.finish().unwrap());
        let segs: Vec<&Segment> = ev
            .iter()
            .filter_map(|e| match e {
                SegmentEvent::Segment(s) => Some(s),
                _ => None,
            })
            .collect();
        assert!(segs.len() >= 4, "{}", segs.len());
        let total: f64 = segs.iter().map(|s| s.duration).sum();
        assert!((total - 200.0 * 1920.0 / 90000.0).abs() < 0.05, "{total}");
        for s in &segs {
            assert_eq!(s.data()[0], 0x47);
            assert_eq!(s.len % 188, 0);
        }
        // A jump forward makes a discontinuity.
        let mut ev = Vec::new();
        for i in 0..100 {
            let jump = if i >= 50 { 10 * CLOCK_HZ } else { 0 };
            ev.extend(s.push(aac(i * 1920 + jump)).unwrap());
        }
        ev.extend(s.finish().unwrap());
        assert!(ev
            .iter()
            .any(|e| matches!(e, SegmentEvent::Segment(s) if s.discontinuity)));
    }

    #[test]
    fn garbage_video_does_not_panic() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        for (i, d) in [
            &b""[..],
            &[0, 0, 1],
            &[1, 2, 3, 4, 5, 6],
            &[0, 0, 0, 1, 0x65, 0xff, 0xff],
        ]
        .iter()
        .enumerate()
        {
            let _ = s.push(Frame {
                codec: Codec::H264,
                pts: i as i64 * 3000,
                keyframe: true,
                data: Bytes::copy_from_slice(d),
            });
            let _ = s.push(Frame {
                codec: Codec::H265,
                pts: i as i64 * 3000 + 1500,
                keyframe: true,
                data: Bytes::copy_from_slice(d),
            });
            let _ = s.push(Frame {
                codec: Codec::Opus { channels: 2 },
                pts: i as i64 * 1800,
                keyframe: true,
                data: Bytes::copy_from_slice(d),
            });
        }
        let _ = s.finish();
    }
}
