//! Connects RTSP ingest to recordings: a camera created with `"record": true` is recorded (kind
//! `ingest`, in its first group) from its first frame until it is deleted; reconnects are gaps
//! in the same recording.

use std::collections::HashMap;
use std::sync::Mutex;

use actix::Addr;
use engine::ids::{GroupId, UserId};
use ingest::{IngestRecorder, IngestTracks};
use vod::auto_record::{AutoRecorder, RecordParticipant, StopParticipant};

/// The recorder the ingest manager calls.
pub struct IngestRecordings {
    recorder: Addr<AutoRecorder>,
    /// Ingest id -> the participant and groups it records.
    recording: Mutex<HashMap<String, (UserId, Vec<GroupId>)>>,
}

impl IngestRecordings {
    /// Records through `recorder`.
    pub fn new(recorder: Addr<AutoRecorder>) -> IngestRecordings {
        IngestRecordings {
            recorder,
            recording: Mutex::new(HashMap::new()),
        }
    }
}

impl IngestRecorder for IngestRecordings {
    fn tracks_published(&self, tracks: &IngestTracks) {
        let Some(group) = tracks.groups.first().cloned() else {
            return;
        };
        if let Ok(mut r) = self.recording.lock() {
            r.insert(tracks.id.clone(), (tracks.participant.clone(), vec![group.clone()]));
        }
        self.recorder.do_send(RecordParticipant {
            group,
            participant: tracks.participant.clone(),
        });
    }

    fn ingest_stopped(&self, id: &str) {
        let entry = self.recording.lock().ok().and_then(|mut r| r.remove(id));
        if let Some((participant, groups)) = entry {
            self.recorder.do_send(StopParticipant { participant, groups });
        }
    }
}
