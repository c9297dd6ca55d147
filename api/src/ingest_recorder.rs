//! Connects RTSP ingest to recordings: a camera with `"record": true` is recorded (kind
//! `ingest`, in its first group) from its first frame (or from the `PATCH` that turns `record`
//! on) until it is deleted or `record` is turned off; reconnects are gaps in the same
//! recording. A `PATCH` that takes the recorded group away ends that recording and starts one
//! in the camera's first group now (the camera no longer sends into the old one).

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

    fn groups_changed(&self, tracks: &IngestTracks) {
        let recorded = self
            .recording
            .lock()
            .ok()
            .and_then(|r| r.get(&tracks.id).map(|(_, groups)| groups.clone()));
        let Some(groups) = recorded else {
            return;
        };
        if groups.iter().all(|g| tracks.groups.contains(g)) {
            return; // the recording goes on where it is
        }
        self.ingest_stopped(&tracks.id);
        self.tracks_published(tracks);
    }

    fn ingest_stopped(&self, id: &str) {
        let entry = self.recording.lock().ok().and_then(|mut r| r.remove(id));
        if let Some((participant, groups)) = entry {
            self.recorder.do_send(StopParticipant { participant, groups });
        }
    }
}
