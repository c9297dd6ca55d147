//! Which camera streams become published tracks, and how each frame becomes RTP packets on
//! its track: H.264 and H.265 video (repacketized), AAC (RFC 3640), Opus (payloads as received)
//! and G.711 audio; while a frame tap is open (live HLS, recordings), each frame is also handed
//! over whole. Every stream we can carry becomes a track, up to [`MAX_TRACKS_PER_KIND`] video
//! and as many audio (a camera's main and sub stream in one session, say); codecs we cannot
//! carry, such as MJPEG, are left out. Live HLS and recordings take the first video and the
//! first audio track. AAC tracks are for live HLS and recordings, and H.265 ones for those and
//! the WebRTC viewers that take H.265. A camera with B-frames marks its track reordered, so
//! WebRTC viewers get it re-encoded in display order; until then (or without a re-encode
//! slot) they skip the B-frames no frame refers to.
//! Each AAC track has an Opus companion track ([`OpusTrack`]) that WebRTC viewers hear instead:
//! the camera's AAC, transcoded only while the companion has a subscriber; likewise each H.265
//! track has an H.264 companion ([`H264Track`]) for the WebRTC viewers that cannot take H.265,
//! re-encoded only while it has a subscriber. Each audio frame's loudness is measured (decoded)
//! for the call's active speakers, as cameras send no levels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::track::scaled::{Refused, ScaleSpec, ScaledLayer};
use engine::track::{Fanout, MediaKind, SourceFrame};
use retina::client::Stream;
use retina::codec::{AudioFrame, ParametersRef, VideoFrame, VideoParametersCodec};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use serde::{Deserialize, Serialize};

use vod::frame::Codec;
use vod::level_meter::LevelMeter;
use vod::transcode::AudioTranscoder;

use super::demux::ReadAs;
use crate::packetize::{aac, annex_b, h264, h265, RtpTimeline};
use crate::status::IngestStatus;

/// Opus's RTP clock (RFC 7587: always 48 kHz, whatever the encoder's sampling rate).
const OPUS_CLOCK: u32 = 48_000;
/// Tracks of one kind taken from a camera, at most.
pub const MAX_TRACKS_PER_KIND: usize = 4;
/// An H.264 companion's re-encode stops this long after its last viewer leaves.
const REENCODE_IDLE_STOP: Duration = Duration::from_secs(5);

/// The codec of a planned track.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestCodec {
    H264,
    /// For live HLS and recordings only.
    H265,
    /// With its AudioSpecificConfig.
    Aac(Vec<u8>),
    /// Payloads forwarded as received.
    Opus,
    Pcmu,
    Pcma,
}

/// A camera stream chosen for publishing.
#[derive(Clone, Debug)]
pub struct TrackPlan {
    /// Index in retina's stream list.
    pub stream: usize,
    pub kind: MediaKind,
    pub codec: IngestCodec,
    /// As published (payload type excluded).
    pub rtp: RTCRtpCodec,
}

impl TrackPlan {
    /// Whether a track published with `other` can carry this stream after a reconnect.
    pub fn same_as(&self, other: &TrackPlan) -> bool {
        self.codec == other.codec && self.rtp.clock_rate == other.rtp.clock_rate
    }

    /// How the pump reads the stream: Opus has no retina depacketizer.
    pub fn read_as(&self) -> ReadAs {
        match self.codec {
            IngestCodec::Opus => ReadAs::Raw,
            _ => ReadAs::Depacketized,
        }
    }
}

/// A [`TrackPlan`] as the ingest's record keeps it: the tracks its camera had, so that an
/// on-demand ingest can publish them after a restart without connecting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPlan {
    pub stream: usize,
    pub kind: MediaKind,
    pub codec: IngestCodec,
    pub mime_type: String,
    pub clock_rate: u32,
    pub channels: u16,
    pub fmtp: String,
}

impl From<&TrackPlan> for StoredPlan {
    fn from(p: &TrackPlan) -> Self {
        StoredPlan {
            stream: p.stream,
            kind: p.kind,
            codec: p.codec.clone(),
            mime_type: p.rtp.mime_type.clone(),
            clock_rate: p.rtp.clock_rate,
            channels: p.rtp.channels,
            fmtp: p.rtp.sdp_fmtp_line.clone(),
        }
    }
}

impl From<&StoredPlan> for TrackPlan {
    fn from(s: &StoredPlan) -> Self {
        TrackPlan {
            stream: s.stream,
            kind: s.kind,
            codec: s.codec.clone(),
            rtp: RTCRtpCodec {
                mime_type: s.mime_type.clone(),
                clock_rate: s.clock_rate,
                channels: s.channels,
                sdp_fmtp_line: s.fmtp.clone(),
                rtcp_feedback: vec![],
            },
        }
    }
}

/// Picks the supported streams, in the camera's order, up to [`MAX_TRACKS_PER_KIND`] of each
/// kind. Returns the plans and a note on each stream left out.
pub fn plan(streams: &[Stream]) -> (Vec<TrackPlan>, Vec<String>) {
    let mut plans: Vec<TrackPlan> = Vec::new();
    let mut skipped = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let (media, enc) = (s.media(), s.encoding_name());
        let plan = match (media, enc) {
            ("video", "h264") => Some(h264_plan(i, s)),
            ("video", "h265") => Some(h265_plan(i)),
            ("audio", "mpeg4-generic") => aac_plan(i, s),
            ("audio", "opus") if s.clock_rate_hz() == OPUS_CLOCK => Some(opus_plan(i)),
            ("audio", "pcmu") => Some(g711_plan(i, IngestCodec::Pcmu, "audio/PCMU", s)),
            ("audio", "pcma") => Some(g711_plan(i, IngestCodec::Pcma, "audio/PCMA", s)),
            _ => None,
        };
        match plan {
            Some(p) if plans.iter().filter(|q| q.kind == p.kind).count() < MAX_TRACKS_PER_KIND => plans.push(p),
            Some(_) => skipped.push(format!(
                "stream {i} ({media}/{enc}): {MAX_TRACKS_PER_KIND} {media} tracks are taken already"
            )),
            None => skipped.push(format!(
                "stream {i} ({media}/{enc}/{}): codec not supported for ingest",
                s.clock_rate_hz()
            )),
        }
    }
    (plans, skipped)
}

fn video_codec(mime: &str, fmtp: String) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: mime.into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: fmtp,
        rtcp_feedback: vec![],
    }
}

fn h264_plan(i: usize, s: &Stream) -> TrackPlan {
    let profile = match s.parameters() {
        Some(ParametersRef::Video(v)) => match v.codec_params() {
            VideoParametersCodec::H264 { sps, .. } if sps.len() >= 4 => {
                format!("{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3])
            }
            _ => "42e01f".into(),
        },
        _ => "42e01f".into(),
    };
    TrackPlan {
        stream: i,
        kind: MediaKind::Video,
        codec: IngestCodec::H264,
        rtp: video_codec(
            "video/H264",
            format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"),
        ),
    }
}

/// H.265 for live HLS and recordings. The fmtp stays empty: the parameter sets travel in-band
/// before every IRAP picture, and no WebRTC peer negotiates this track.
fn h265_plan(i: usize) -> TrackPlan {
    TrackPlan {
        stream: i,
        kind: MediaKind::Video,
        codec: IngestCodec::H265,
        rtp: video_codec("video/H265", String::new()),
    }
}

fn aac_plan(i: usize, s: &Stream) -> Option<TrackPlan> {
    let Some(ParametersRef::Audio(a)) = s.parameters() else {
        return None;
    };
    let config = a.extra_data().to_vec();
    if config.is_empty() {
        return None;
    }
    Some(TrackPlan {
        stream: i,
        kind: MediaKind::Audio,
        rtp: RTCRtpCodec {
            mime_type: "audio/mpeg4-generic".into(),
            clock_rate: a.clock_rate(),
            channels: a.channels().get(),
            sdp_fmtp_line: aac::fmtp(&config),
            rtcp_feedback: vec![],
        },
        codec: IngestCodec::Aac(config),
    })
}

/// Opus as WebRTC wants it: `opus/48000/2` (RFC 7587 always signals two channels; a mono
/// stream decodes the same) with the fmtp browsers and the media engine use.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: OPUS_CLOCK,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

fn opus_plan(i: usize) -> TrackPlan {
    TrackPlan {
        stream: i,
        kind: MediaKind::Audio,
        codec: IngestCodec::Opus,
        rtp: opus_codec(),
    }
}

fn g711_plan(i: usize, codec: IngestCodec, mime: &str, s: &Stream) -> TrackPlan {
    TrackPlan {
        stream: i,
        kind: MediaKind::Audio,
        codec,
        rtp: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate: s.clock_rate_hz(),
            channels: s.channels().map(|c| c.get()).unwrap_or(1),
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

/// The Opus track WebRTC viewers hear a camera's AAC on. The AAC is decoded and encoded Opus
/// (`vod::transcode`) only while the track has a subscriber: nobody listening costs nothing.
pub struct OpusTrack {
    pub fanout: Arc<Fanout>,
    timeline: RtpTimeline,
    /// The AAC's AudioSpecificConfig and clock rate.
    config: Vec<u8>,
    aac_rate: u32,
    transcoder: Option<AudioTranscoder>,
    /// The transcoder could not be made (logged once; not tried again).
    failed: bool,
}

impl OpusTrack {
    /// A companion published on `fanout` for AAC of `config` at `aac_rate` Hz.
    pub fn new(fanout: Arc<Fanout>, config: Vec<u8>, aac_rate: u32) -> OpusTrack {
        OpusTrack {
            fanout,
            timeline: RtpTimeline::random(OPUS_CLOCK),
            config,
            aac_rate: aac_rate.max(1),
            transcoder: None,
            failed: false,
        }
    }

    /// Transcodes one AAC frame, `elapsed` camera ticks into the session, and forwards the
    /// Opus packets now complete; drops the transcoder while nobody subscribes. Returns the
    /// frame's level when it was decoded here (so the camera's meter need not decode it too).
    fn push(&mut self, aac: &[u8], elapsed: i64, now: Instant) -> Option<u8> {
        if self.fanout.subscribers() == 0 {
            self.transcoder = None;
            return None;
        }
        if self.transcoder.is_none() && !self.failed {
            match AudioTranscoder::aac_to_opus(&self.config) {
                Ok(t) => self.transcoder = Some(t.measuring()),
                Err(e) => {
                    self.failed = true;
                    tracing::warn!(track = %self.fanout.info.id, "no Opus for WebRTC viewers of this AAC: {e}");
                }
            }
        }
        let t = self.transcoder.as_mut()?;
        let pts = elapsed * vod::frame::CLOCK_HZ / i64::from(self.aac_rate);
        let packets = match t.push(pts, aac) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(track = %self.fanout.info.id, "AAC to Opus: {e}");
                return None;
            }
        };
        let level = t.level();
        for p in packets {
            let ts = self
                .timeline
                .timestamp(p.pts * i64::from(OPUS_CLOCK) / vod::frame::CLOCK_HZ, now);
            self.fanout.forward(self.timeline.packet(p.data, false, ts));
        }
        level
    }

    /// A new camera session: its clock starts again, and so does the transcoder.
    fn reconnected(&mut self) {
        self.timeline.reconnected();
        self.transcoder = None;
    }
}

/// H.264 as WebRTC viewers without H.265 get a camera's H.265 (what the re-encoder writes:
/// constrained baseline).
pub fn h264_stand_in_codec() -> RTCRtpCodec {
    video_codec(
        "video/H264",
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
    )
}

/// The H.264 track WebRTC viewers without H.265 get of a camera's H.265 track: the H.265 is
/// decoded and encoded H.264 (`engine::track::scaled`, on a thread of its own) only while the
/// companion has a subscriber, and for 5 s after the last one leaves.
pub struct H264Track {
    pub fanout: Arc<Fanout>,
    running: Option<ScaledLayer>,
    /// Since when the running re-encode has had no subscriber.
    idle_since: Option<Instant>,
    /// It could not be started (logged once; not tried again).
    failed: bool,
}

impl H264Track {
    /// A companion published on `fanout` (H.264, standing in for H.265).
    pub fn new(fanout: Arc<Fanout>) -> H264Track {
        H264Track {
            fanout,
            running: None,
            idle_since: None,
            failed: false,
        }
    }

    /// Starts re-encoding `source` (the camera's H.265 track) when the companion has a
    /// subscriber; stops [`REENCODE_IDLE_STOP`] after it has none.
    fn tend(&mut self, source: &Arc<Fanout>, now: Instant) {
        if self.fanout.subscribers() > 0 {
            self.idle_since = None;
            if self.running.is_none() && !self.failed {
                let spec = ScaleSpec {
                    mime: "video/H265".into(),
                    out_mime: "video/H264".into(),
                    width: 0,
                    height: 0,
                    kbps: 0,
                };
                match ScaledLayer::start_into(source, spec, self.fanout.clone()) {
                    Ok(running) => self.running = Some(running),
                    // Tried again at the next frame.
                    Err(Refused::Busy) => {}
                    Err(Refused::Unable) => {
                        self.failed = true;
                        tracing::warn!(track = %self.fanout.info.id, "no H.264 for WebRTC viewers of this H.265 camera");
                    }
                }
            }
            return;
        }
        let Some(since) = self.running.as_ref().map(|_| *self.idle_since.get_or_insert(now)) else {
            return;
        };
        if now.saturating_duration_since(since) >= REENCODE_IDLE_STOP {
            self.stop();
        }
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop(&self.fanout);
        }
        self.idle_since = None;
    }
}

impl Drop for H264Track {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A published track and its outgoing RTP timeline; lives as long as the ingest.
pub struct LiveTrack {
    pub plan: TrackPlan,
    pub fanout: Arc<Fanout>,
    pub timeline: RtpTimeline,
    /// For an AAC track: the Opus track WebRTC viewers get.
    pub opus: Option<OpusTrack>,
    /// For an H.265 track: the H.264 track WebRTC viewers without H.265 get.
    pub h264: Option<H264Track>,
    /// The latest presentation time of the connection's video frames so far (camera ticks).
    latest_pts: Option<i64>,
    /// The camera's B-frames have been noticed (logged once).
    b_frames: bool,
    /// An audio track's loudness, measured from each frame (cameras send no levels), so the
    /// camera can be an active speaker.
    meter: Option<LevelMeter>,
    /// The camera's first video track keeps its latest keyframe here (for snapshots).
    picture: Option<Arc<IngestStatus>>,
}

impl LiveTrack {
    /// A track published on `fanout`; `picture`: where the camera's latest keyframe goes, for
    /// its first video track.
    pub fn new(
        plan: TrackPlan,
        fanout: Arc<Fanout>,
        timeline: RtpTimeline,
        (opus, h264): (Option<OpusTrack>, Option<H264Track>),
        picture: Option<Arc<IngestStatus>>,
    ) -> LiveTrack {
        let codec = match &plan.codec {
            IngestCodec::Aac(config) => Some(Codec::Aac {
                config: Bytes::copy_from_slice(config),
            }),
            IngestCodec::Opus => Some(Codec::Opus {
                channels: plan.rtp.channels.clamp(1, 2) as u8,
            }),
            IngestCodec::Pcmu => Some(Codec::Pcmu),
            IngestCodec::Pcma => Some(Codec::Pcma),
            IngestCodec::H264 | IngestCodec::H265 => None,
        };
        let meter = codec.and_then(|c| LevelMeter::new(&c).ok());
        if meter.is_some() {
            fanout.levels.set_measured();
        }
        LiveTrack {
            plan,
            fanout,
            timeline,
            opus,
            h264,
            latest_pts: None,
            b_frames: false,
            meter,
            picture,
        }
    }

    /// A new RTSP connection starts: its timestamps start again.
    pub fn reconnected(&mut self) {
        self.timeline.reconnected();
        self.latest_pts = None;
        if let Some(o) = self.opus.as_mut() {
            o.reconnected();
        }
    }

    /// The published tracks: this one, then its Opus or H.264 companion if it has one.
    pub fn fanouts(&self) -> impl Iterator<Item = &Arc<Fanout>> {
        std::iter::once(&self.fanout)
            .chain(self.opus.as_ref().map(|o| &o.fanout))
            .chain(self.h264.as_ref().map(|h| &h.fanout))
    }

    /// Whether WebRTC viewers must skip this H.264 frame: it displays before a frame already
    /// received (a B-frame: browsers' WebRTC decoders expect frames in display order), no
    /// other frame refers to it, and the track's scaled layer (which WebRTC viewers of a
    /// reordered track get: every frame, re-encoded in display order) is not running. Live HLS
    /// and recordings still get it. The first B-frame marks the track reordered.
    fn webrtc_skips(&mut self, frame: &VideoFrame) -> bool {
        let pts = frame.timestamp().elapsed();
        let reordered = self.latest_pts.is_some_and(|latest| pts < latest);
        self.latest_pts = Some(self.latest_pts.map_or(pts, |l| l.max(pts)));
        if !reordered {
            return false;
        }
        if !self.b_frames {
            self.b_frames = true;
            self.fanout.set_reordered();
            tracing::info!(track = %self.fanout.info.id, "the camera sends B-frames; WebRTC viewers get them re-encoded in display order (without a re-encode slot, the frames no other refers to are left out), live HLS and recordings all of them");
        }
        !self.fanout.scaled_running() && h264::is_non_reference(frame.data())
    }

    /// Forwards one video frame; `params` are the stream's current parameter sets (SPS, PPS
    /// for H.264; VPS, SPS, PPS for H.265). Returns the packets written (0 when the frame was
    /// malformed, or is one WebRTC viewers skip: then only the frame taps get it).
    pub fn video(&mut self, frame: &VideoFrame, params: Option<&[Bytes]>, now: Instant) -> usize {
        if let Some(h264) = self.h264.as_mut() {
            h264.tend(&self.fanout, now);
        }
        let taps_only = self.plan.codec == IngestCodec::H264 && self.webrtc_skips(frame);
        let nals = match self.plan.codec {
            IngestCodec::H264 => {
                let ps = match params {
                    Some([sps, pps]) => Some((sps.as_ref(), pps.as_ref())),
                    _ => None,
                };
                h264::nal_units(frame.data(), ps)
            }
            IngestCodec::H265 => {
                let ps = match params {
                    Some([vps, sps, pps]) => Some([vps.as_ref(), sps.as_ref(), pps.as_ref()]),
                    _ => None,
                };
                h265::nal_units(frame.data(), ps)
            }
            _ => return 0,
        };
        let nals = match nals {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(track = %self.fanout.info.id, "dropping a malformed access unit: {}", e.0);
                return 0;
            }
        };
        let ts = self.timeline.timestamp(frame.timestamp().elapsed(), now);
        let h265 = self.plan.codec == IngestCodec::H265;
        let keyframe = if h265 {
            h265::has_keyframe(&nals)
        } else {
            h264::has_keyframe(&nals)
        };
        if let (Some(status), true) = (&self.picture, keyframe) {
            status.set_picture(annex_b(&nals));
        }
        if self.fanout.wants_frames() && !nals.is_empty() {
            self.fanout.forward_source_frame(&SourceFrame {
                timestamp: ts,
                keyframe,
                data: annex_b(&nals),
            });
        }
        if taps_only {
            // No packets: nothing else takes them (live HLS and recordings have the frame), and
            // the viewers' sequence numbers stay unbroken.
            return 0;
        }
        let payloads = if h265 {
            h265::payloads(&nals, h264::MAX_PAYLOAD)
        } else {
            h264::payloads(&nals, h264::MAX_PAYLOAD)
        };
        let n = payloads.len();
        let pkts = payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| self.timeline.packet(p, i + 1 == n, ts))
            .collect();
        self.fanout.forward_frame(pkts);
        n
    }

    /// Forwards one audio frame from retina's depacketizer.
    pub fn audio(&mut self, frame: &AudioFrame, now: Instant) -> usize {
        let (payload, raw) = match &self.plan.codec {
            IngestCodec::Aac(_) => (aac::payload(frame.data()), Some(frame.data())),
            IngestCodec::Pcmu | IngestCodec::Pcma => (Some(Bytes::copy_from_slice(frame.data())), None),
            IngestCodec::H264 | IngestCodec::H265 | IngestCodec::Opus => (None, None),
        };
        let Some(payload) = payload else { return 0 };
        let elapsed = frame.timestamp().elapsed();
        let level = self.opus.as_mut().and_then(|o| o.push(frame.data(), elapsed, now));
        self.forward_one(payload, raw, (true, level), elapsed, now)
    }

    /// Forwards one payload taken as received (an Opus packet; marker clear, as for continuous
    /// audio), `elapsed` camera clock ticks into the session.
    pub fn payload(&mut self, payload: Bytes, elapsed: i64, now: Instant) -> usize {
        if self.plan.codec != IngestCodec::Opus {
            return 0;
        }
        self.forward_one(payload, None, (false, None), elapsed, now)
    }

    /// Forwards one audio frame's packet (with `marker`), and the frame to the frame taps:
    /// `raw` when the payload is more than the frame (AAC's AU header), else the payload. Its
    /// level counts for active speakers: `level` when the frame was decoded already, else as
    /// the meter measures it.
    fn forward_one(
        &mut self,
        payload: Bytes,
        raw: Option<&[u8]>,
        (marker, level): (bool, Option<u8>),
        elapsed: i64,
        now: Instant,
    ) -> usize {
        if let (Some(m), false) = (self.meter.as_mut(), self.fanout.muted()) {
            if let Some(level) = level.or_else(|| m.measure(raw.unwrap_or(&payload))) {
                self.fanout.levels.observe(level);
            }
        }
        let ts = self.timeline.timestamp(elapsed, now);
        if self.fanout.wants_frames() {
            self.fanout.forward_source_frame(&SourceFrame {
                timestamp: ts,
                keyframe: true,
                data: raw.map_or_else(|| payload.clone(), Bytes::copy_from_slice),
            });
        }
        self.fanout.forward(self.timeline.packet(payload, marker, ts));
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_plan_gives_back_the_plan() {
        let plans = [
            TrackPlan {
                stream: 0,
                kind: MediaKind::Video,
                codec: IngestCodec::H264,
                rtp: video_codec("video/H264", "packetization-mode=1;profile-level-id=4d0029".into()),
            },
            TrackPlan {
                stream: 1,
                kind: MediaKind::Audio,
                codec: IngestCodec::Aac(vec![0x14, 0x08]),
                rtp: RTCRtpCodec {
                    mime_type: "audio/mpeg4-generic".into(),
                    clock_rate: 16_000,
                    channels: 1,
                    sdp_fmtp_line: aac::fmtp(&[0x14, 0x08]),
                    rtcp_feedback: vec![],
                },
            },
        ];
        for p in &plans {
            let json = serde_json::to_string(&StoredPlan::from(p)).unwrap();
            let back = TrackPlan::from(&serde_json::from_str::<StoredPlan>(&json).unwrap());
            assert!(back.same_as(p), "{json}");
            assert_eq!(
                (back.stream, back.kind, &back.rtp),
                (p.stream, p.kind, &p.rtp),
                "{json}"
            );
        }
    }
}
