//! A published track: what it is ([`TrackInfo`]) and how its packets reach subscribers
//! ([`Fanout`]). The publisher's reader task writes each packet straight to every subscriber
//! leg's connection: no actor mailbox and no task hop per subscriber on the per-packet path,
//! and a slow subscriber loses packets (counted) instead of slowing the publisher or the others. The [`Track`] actor owns
//! the control side: subscribers' caps, simulcast layer choice, keyframe requests for switches.

mod actor;
pub mod audio_level;
mod congestion;
mod directory;
mod fanout;
mod frame_tap;
pub mod layers;
pub mod link_quality;
pub mod scaled;

pub use actor::{LayersListener, Track};
pub use directory::{RoomTraffic, TrackCollector, TrackDirectory};
pub use fanout::{starts_keyframe, Downtrack, Fanout, LegCounters, TrackCounters, Upstream, NO_LAYER};
pub use frame_tap::SourceFrame;
pub use layers::{LayerView, LegCaps};

use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

/// Where a track comes from (the spec's `source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Camera,
    Microphone,
    Screen,
    Ingest,
    File,
}

impl Source {
    /// Guesses the source of a WebRTC track from its kind and the client's track/stream ids
    /// (a label containing "screen" marks a screen share).
    pub fn guess(kind: MediaKind, labels: &[&str]) -> Source {
        match kind {
            MediaKind::Audio => Source::Microphone,
            MediaKind::Video if labels.iter().any(|l| l.to_ascii_lowercase().contains("screen")) => Source::Screen,
            MediaKind::Video => Source::Camera,
        }
    }
}

/// What a published track is.
#[derive(Clone, Debug)]
pub struct TrackInfo {
    /// Server-assigned id, unique for the server's lifetime.
    pub id: String,
    pub kind: MediaKind,
    pub source: Source,
    /// The codec as the publisher negotiated it (payload type excluded: each leg has its own).
    pub codec: RTCRtpCodec,
    /// Who publishes it.
    pub publisher: UserId,
    /// The codec of the track this one stands in for (an H.265 camera's H.264 companion says
    /// `video/H265`): a WebRTC viewer is sent this one only when it cannot take that codec.
    pub stands_in_for: Option<String>,
}
