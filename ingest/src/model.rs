//! What an ingest is: the request body ([`NewIngest`]), the stored record ([`IngestRecord`],
//! JSON in table `ingests`, keyed by id), and the API view ([`IngestView`], URL redacted).

use engine::ids::{GroupId, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::source::SourceUrl;
use crate::status::StatusSnapshot;

/// Storage table of ingest records.
pub const TABLE: &str = "ingests";
/// Most groups one ingest is published into.
pub const MAX_GROUPS: usize = 16;

/// How RTP reaches us from the camera (an extension field of the request body).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection (default; works through NAT and firewalls).
    #[default]
    Tcp,
    /// Separate UDP ports (LAN only: no reordering, no receiver reports).
    Udp,
}

/// `POST /v1/ingests`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIngest {
    pub url: String,
    #[serde(default)]
    pub name: Option<String>,
    pub groups: Vec<GroupId>,
    #[serde(default)]
    pub record: bool,
    #[serde(default)]
    pub transport: RtspTransport,
}

/// An ingest as stored (the URL keeps its credentials: they are needed to reconnect).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestRecord {
    pub id: String,
    pub url: String,
    pub name: Option<String>,
    pub groups: Vec<GroupId>,
    pub record: bool,
    #[serde(default)]
    pub transport: RtspTransport,
    pub created_by: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl IngestRecord {
    /// The participant id the camera has in group calls.
    pub fn participant(&self) -> String {
        participant_of(&self.id)
    }
}

/// `ingest-{id}`.
pub fn participant_of(id: &str) -> String {
    format!("ingest-{id}")
}

/// Where an ingest stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestState {
    /// First connection attempt under way.
    Connecting,
    /// Frames are flowing.
    Live,
    /// The camera failed or dropped; waiting to reconnect.
    Retrying,
    /// Deleted, or every group of the ingest is gone.
    Stopped,
}

/// A published track of an ingest, as listed in the view.
#[derive(Clone, Debug, Serialize)]
pub struct TrackSummary {
    pub id: String,
    pub kind: engine::track::MediaKind,
    pub codec: String,
}

/// `GET /v1/ingests/{id}`.
#[derive(Clone, Debug, Serialize)]
pub struct IngestView {
    pub id: String,
    pub participant: String,
    /// With any userinfo replaced by `***`.
    pub url: String,
    pub name: Option<String>,
    pub groups: Vec<GroupId>,
    pub record: bool,
    pub transport: RtspTransport,
    pub status: IngestState,
    pub frames: u64,
    pub bytes: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub tracks: Vec<TrackSummary>,
    pub created_by: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl IngestView {
    /// The view of `record` with its live status.
    pub fn of(record: &IngestRecord, status: StatusSnapshot) -> IngestView {
        let url = SourceUrl::parse(&record.url)
            .map(|s| s.redacted)
            .unwrap_or_else(|_| "(invalid)".into());
        IngestView {
            id: record.id.clone(),
            participant: record.participant(),
            url,
            name: record.name.clone(),
            groups: record.groups.clone(),
            record: record.record,
            transport: record.transport,
            status: status.state,
            frames: status.frames,
            bytes: status.bytes,
            reconnects: status.reconnects,
            last_error: status.last_error,
            tracks: status.tracks,
            created_by: record.created_by.clone(),
            created_at: record.created_at,
        }
    }
}
