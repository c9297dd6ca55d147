//! What an ingest is: the request bodies ([`NewIngest`], [`IngestUpdate`]), the stored record
//! ([`IngestRecord`], JSON in table `ingests`, keyed by id), and the API view ([`IngestView`],
//! URL redacted).

use engine::ids::{GroupId, UserId};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;

use crate::session::tracks::StoredPlan;
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
    /// Interleaved, as `Tcp`, but carried through an RTSP-over-HTTP tunnel (QuickTime's GET/POST
    /// pair, [`crate::http_tunnel`]) to the URL's host and port; `rtsp://` only.
    Http,
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
    /// Extension: connect to the camera only while someone reads it (as MediaMTX's
    /// `sourceOnDemand`); see [`IngestState::Idle`].
    #[serde(default)]
    pub on_demand: bool,
}

/// `PATCH /v1/ingests/{id}` (extension): the fields that may change while the ingest runs.
/// An absent field is left as it is; `"name": null` clears the name. The connection fields
/// (`url`, `transport`, `tls_fingerprint`) are accepted by the parser only to be refused with
/// a clear error ([`IngestUpdate::fixed_fields`]): changing them means another camera session.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestUpdate {
    /// `Some(None)`: clear the name.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub groups: Option<Vec<GroupId>>,
    #[serde(default, deserialize_with = "present")]
    pub record: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub on_demand: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    url: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    transport: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    tls_fingerprint: Option<IgnoredAny>,
}

impl IngestUpdate {
    /// The fields the body names that cannot be changed in place (empty when none).
    pub fn fixed_fields(&self) -> Vec<&'static str> {
        [
            ("url", self.url.is_some()),
            ("transport", self.transport.is_some()),
            ("tls_fingerprint", self.tls_fingerprint.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, named)| named.then_some(field))
        .collect()
    }
}

/// A field that is present in the body, whatever its value (`null` included: for `name` that
/// is `Some(None)`; for a field whose type refuses `null`, an error).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
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
    /// Connected only while read (absent in records written before it existed: `false`).
    #[serde(default)]
    pub on_demand: bool,
    /// The tracks the camera's session carried, as its latest description gave them (kept by
    /// the server, not shown): an on-demand ingest publishes them after a restart without
    /// connecting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<StoredPlan>,
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
    /// Extension, `on_demand` cameras: nobody reads it, so it is not connected; the first
    /// reader (a WebRTC viewer of its participant, live HLS, a recording) connects it again.
    Idle,
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
    /// Extension: connected only while read.
    pub on_demand: bool,
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
            on_demand: record.on_demand,
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

    fn patch(json: &str) -> Result<IngestUpdate, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn a_patch_tells_absent_from_null_and_names_the_fixed_fields() {
        let empty = patch("{}").unwrap();
        assert!(empty.name.is_none() && empty.groups.is_none() && empty.record.is_none());
        assert!(empty.fixed_fields().is_empty());

        let p = patch(r#"{"name": null, "groups": ["a", "b"], "record": true}"#).unwrap();
        assert_eq!(p.name, Some(None));
        assert_eq!(p.groups.map(|g| g.len()), Some(2));
        assert_eq!(p.record, Some(true));
        assert_eq!(patch(r#"{"name": "Gate"}"#).unwrap().name, Some(Some("Gate".into())));

        // Named at all, even as null: refused by the manager with the field names.
        let p = patch(r#"{"url": null, "tls_fingerprint": "ab", "transport": "udp"}"#).unwrap();
        assert_eq!(p.fixed_fields(), ["url", "transport", "tls_fingerprint"]);
        let err = crate::IngestError::Immutable(p.fixed_fields());
        assert_eq!(err.code(), "ingest_field_immutable");
        assert_eq!(err.kind(), engine::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("url, transport, tls_fingerprint"), "{err}");
        assert!(err.to_string().contains("delete"), "{err}");
    }

    #[test]
    fn a_patch_refuses_unknown_fields_and_null_groups_or_record() {
        for bad in [
            r#"{"nmae": "x"}"#,
            r#"{"groups": null}"#,
            r#"{"record": null}"#,
            r#"{"record": "yes"}"#,
            r#"{"groups": ["bad id!"]}"#,
            r#"{"groups": "a"}"#,
        ] {
            assert!(patch(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn the_http_transport_parses_is_stored_and_shown_as_http() {
        let req: NewIngest =
            serde_json::from_str(r#"{"url": "rtsp://127.0.0.1/cam", "groups": ["g"], "transport": "http"}"#).unwrap();
        assert_eq!(req.transport, RtspTransport::Http);
        assert!(serde_json::from_str::<NewIngest>(r#"{"url": "x", "groups": [], "transport": "HTTP"}"#).is_err());
        let stored = r#"{"id":"abcdefghijkl","url":"rtsp://127.0.0.1/cam","name":null,"groups":["g"],
            "record":false,"transport":"http","created_by":"admin","created_at":"2025-01-02T03:04:05Z"}"#;
        let r: IngestRecord = serde_json::from_str(stored).unwrap();
        assert_eq!(r.transport, RtspTransport::Http);
        let back: IngestRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back.transport, RtspTransport::Http);
        let view = IngestView::of(&back, crate::status::IngestStatus::default().snapshot());
        assert_eq!(serde_json::to_value(&view).unwrap()["transport"], "http");
    }

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
