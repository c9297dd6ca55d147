//! Which camera streams become published tracks, and how each frame becomes RTP packets on
//! its track: H.264 video (repacketized), AAC (RFC 3640) and G.711 audio. The first video and
//! the first audio stream are taken; others (and codecs retina cannot depacketize, such as
//! Opus or H.265 for WebRTC) are left out.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use engine::track::{Fanout, MediaKind};
use retina::client::Stream;
use retina::codec::{AudioFrame, ParametersRef, VideoFrame, VideoParametersCodec};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;

use crate::packetize::{aac, h264, RtpTimeline};

/// The codec of a planned track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestCodec {
    H264,
    /// With its AudioSpecificConfig.
    Aac(Vec<u8>),
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
}

/// Picks the first supported video and audio stream. Returns the plans and a note on each
/// stream left out.
pub fn plan(streams: &[Stream]) -> (Vec<TrackPlan>, Vec<String>) {
    let mut plans: Vec<TrackPlan> = Vec::new();
    let mut skipped = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let (media, enc) = (s.media(), s.encoding_name());
        let plan = match (media, enc) {
            ("video", "h264") => Some(video_plan(i, s)),
            ("audio", "mpeg4-generic") => aac_plan(i, s),
            ("audio", "pcmu") => Some(g711_plan(i, IngestCodec::Pcmu, "audio/PCMU", s)),
            ("audio", "pcma") => Some(g711_plan(i, IngestCodec::Pcma, "audio/PCMA", s)),
            _ => None,
        };
        match plan {
            Some(p) if !plans.iter().any(|q| q.kind == p.kind) => plans.push(p),
            Some(_) => skipped.push(format!(
                "stream {i} ({media}/{enc}): one {media} track is taken already"
            )),
            None => skipped.push(format!("stream {i} ({media}/{enc}): codec not supported for ingest")),
        }
    }
    (plans, skipped)
}

fn video_plan(i: usize, s: &Stream) -> TrackPlan {
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
        rtp: RTCRtpCodec {
            mime_type: "video/H264".into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"),
            rtcp_feedback: vec![],
        },
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

/// A published track and its outgoing RTP timeline; lives as long as the ingest.
pub struct LiveTrack {
    pub plan: TrackPlan,
    pub fanout: Arc<Fanout>,
    pub timeline: RtpTimeline,
}

impl LiveTrack {
    /// Forwards one video frame; `params` are the stream's current SPS and PPS. Returns the
    /// packets written (0 when the frame was malformed).
    pub fn video(&mut self, frame: &VideoFrame, params: Option<(&[u8], &[u8])>, now: Instant) -> usize {
        let payloads = match h264::packetize_au(frame.data(), params, h264::MAX_PAYLOAD) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(track = %self.fanout.info.id, "dropping a malformed access unit: {}", e.0);
                return 0;
            }
        };
        let ts = self.timeline.timestamp(frame.timestamp().elapsed(), now);
        let n = payloads.len();
        for (i, p) in payloads.into_iter().enumerate() {
            self.fanout.forward(self.timeline.packet(p, i + 1 == n, ts));
        }
        n
    }

    /// Forwards one audio frame.
    pub fn audio(&mut self, frame: &AudioFrame, now: Instant) -> usize {
        let payload = match &self.plan.codec {
            IngestCodec::Aac(_) => aac::payload(frame.data()),
            IngestCodec::Pcmu | IngestCodec::Pcma => Some(Bytes::copy_from_slice(frame.data())),
            IngestCodec::H264 => None,
        };
        let Some(payload) = payload else { return 0 };
        let ts = self.timeline.timestamp(frame.timestamp().elapsed(), now);
        self.fanout.forward(self.timeline.packet(payload, true, ts));
        1
    }
}

/// SPS and PPS of an H.264 stream's parameters.
pub fn h264_params(p: Option<ParametersRef<'_>>) -> Option<(Bytes, Bytes)> {
    match p {
        Some(ParametersRef::Video(v)) => match v.codec_params() {
            VideoParametersCodec::H264 { sps, pps } => Some((sps.clone(), pps.clone())),
            _ => None,
        },
        _ => None,
    }
}
