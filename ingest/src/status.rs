//! The live status of one ingest, shared between its RTSP pump (writes) and the API (reads):
//! state, counters, the last error (already redacted) and the camera's latest picture (for
//! snapshots); and the one setting the pump reads live, `on_demand` (its session writes it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use crate::model::{IngestState, TrackSummary};

/// Shared status of one ingest.
#[derive(Debug)]
pub struct IngestStatus {
    state: Mutex<IngestState>,
    /// Frames received from the camera (video and audio).
    pub frames: AtomicU64,
    /// Bytes of those frames.
    pub bytes: AtomicU64,
    /// Connection attempts after a failure.
    pub reconnects: AtomicU64,
    last_error: Mutex<Option<String>>,
    tracks: Mutex<Vec<TrackSummary>>,
    /// The camera is connected only while read (the record's `on_demand`, as last applied).
    pub on_demand: AtomicBool,
    /// The latest keyframe of the camera's first video track (Annex-B), while it is live.
    picture: Mutex<Option<Bytes>>,
}

/// A copy of the status at one instant.
#[derive(Clone, Debug)]
pub struct StatusSnapshot {
    pub state: IngestState,
    pub frames: u64,
    pub bytes: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub tracks: Vec<TrackSummary>,
}

impl Default for IngestStatus {
    fn default() -> Self {
        IngestStatus {
            state: Mutex::new(IngestState::Connecting),
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_error: Mutex::new(None),
            tracks: Mutex::new(Vec::new()),
            on_demand: AtomicBool::new(false),
            picture: Mutex::new(None),
        }
    }
}

impl IngestStatus {
    /// The current state.
    pub fn state(&self) -> IngestState {
        self.state.lock().map(|s| *s).unwrap_or(IngestState::Stopped)
    }

    /// Moves to `state` (a stopped ingest stays stopped). Out of `live`, the latest picture
    /// goes: it would be stale.
    pub fn set_state(&self, state: IngestState) {
        if let Ok(mut s) = self.state.lock() {
            if *s != IngestState::Stopped {
                *s = state;
            }
        }
        if state != IngestState::Live {
            if let Ok(mut p) = self.picture.lock() {
                *p = None;
            }
        }
    }

    /// Keeps `keyframe` (Annex-B) as the camera's latest picture.
    pub fn set_picture(&self, keyframe: Bytes) {
        if let Ok(mut p) = self.picture.lock() {
            *p = Some(keyframe);
        }
    }

    /// The camera's latest keyframe, if it is live and has sent one.
    pub fn picture(&self) -> Option<Bytes> {
        self.picture.lock().ok().and_then(|p| p.clone())
    }

    /// Records a (redacted) error.
    pub fn set_error(&self, message: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(message);
        }
    }

    /// Counts one frame of `len` bytes.
    pub fn count_frame(&self, len: usize) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Sets the published tracks.
    pub fn set_tracks(&self, tracks: Vec<TrackSummary>) {
        if let Ok(mut t) = self.tracks.lock() {
            *t = tracks;
        }
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            state: self.state(),
            frames: self.frames.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
            tracks: self.tracks.lock().map(|t| t.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopped_is_final() {
        let s = IngestStatus::default();
        assert_eq!(s.state(), IngestState::Connecting);
        s.set_state(IngestState::Live);
        s.set_state(IngestState::Stopped);
        s.set_state(IngestState::Retrying);
        assert_eq!(s.state(), IngestState::Stopped);
    }

    #[test]
    fn the_picture_is_kept_only_while_live() {
        let s = IngestStatus::default();
        s.set_state(IngestState::Live);
        s.set_picture(Bytes::from_static(b"key"));
        assert_eq!(s.picture().as_deref(), Some(b"key".as_slice()));
        s.set_state(IngestState::Idle);
        assert_eq!(s.picture(), None);
    }
}
