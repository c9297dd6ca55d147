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
    /// Extension, `rtsps` only: the SHA-256 of the camera's certificate (DER, hex, colons
    /// allowed). When set, the certificate is pinned instead of checked against CAs.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
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
    /// The pinned certificate fingerprint (lowercase hex, no colons), `rtsps` only; absent in
    /// records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
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
    /// The pinned certificate fingerprint (lowercase hex), or null (not secret).
    pub tls_fingerprint: Option<String>,
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
            tls_fingerprint: record.tls_fingerprint.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_a_fingerprint_still_load_and_round_trip() {
        let old = r#"{"id":"abcdefghijkl","url":"rtsp://127.0.0.1/cam","name":null,"groups":["g"],
            "record":false,"transport":"tcp","created_by":"admin","created_at":"2025-01-02T03:04:05Z"}"#;
        let r: IngestRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.tls_fingerprint, None);
        assert!(!serde_json::to_string(&r).unwrap().contains("tls_fingerprint"));
        let pinned = IngestRecord {
            url: "rtsps://127.0.0.1/cam".into(),
            tls_fingerprint: Some("ab".repeat(32)),
            ..r
        };
        let back: IngestRecord = serde_json::from_slice(&serde_json::to_vec(&pinned).unwrap()).unwrap();
        assert_eq!(back.tls_fingerprint, pinned.tls_fingerprint);
        let view = IngestView::of(&back, crate::status::IngestStatus::default().snapshot());
        assert_eq!(view.url, "rtsps://127.0.0.1/cam");
        assert_eq!(view.tls_fingerprint, pinned.tls_fingerprint);
    }
}
