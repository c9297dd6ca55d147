//! Media frames: what the depacketizer produces and the segmenter consumes. One frame is one
//! access unit (video) or one codec frame (audio), timed on the 90 kHz MPEG clock.

use bytes::Bytes;

/// The 90 kHz clock every [`Frame::pts`] is expressed in.
pub const CLOCK_HZ: i64 = 90_000;

/// A frame's codec, with what a decoder or muxer needs beyond the frame itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Codec {
    /// H.264, Annex-B byte stream (start codes); keyframes carry their SPS and PPS.
    H264,
    /// H.265 (HEVC), Annex-B byte stream; keyframes (IRAP pictures) carry their VPS, SPS and
    /// PPS. Passed through to MPEG-TS, never transcoded (WebRTC viewers do not get it).
    H265,
    /// VP8 frames (transcoded to H.264 for HLS).
    Vp8,
    /// Opus packets, 48 kHz (transcoded to AAC for HLS).
    Opus { channels: u8 },
    /// G.711 mu-law, 8 kHz mono (transcoded to AAC for HLS).
    Pcmu,
    /// G.711 A-law, 8 kHz mono (transcoded to AAC for HLS).
    Pcma,
    /// Raw AAC frames (no ADTS header) with their AudioSpecificConfig.
    Aac { config: Bytes },
}

impl Codec {
    /// Whether this is a video codec.
    pub fn is_video(&self) -> bool {
        matches!(self, Codec::H264 | Codec::H265 | Codec::Vp8)
    }
}

/// One access unit or audio frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub codec: Codec,
    /// Presentation time on the [`CLOCK_HZ`] clock; starts anywhere, grows monotonically.
    pub pts: i64,
    /// A frame a decoder can start from (always true for audio).
    pub keyframe: bool,
    pub data: Bytes,
}
