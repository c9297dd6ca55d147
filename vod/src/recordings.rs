//! Recordings and uploads as stored records: the [`Recording`] document, its segment index
//! rows, the object keys they point to, and the VOD/EVENT playlist built from them with
//! `hls_m3u8`.

use std::borrow::Cow;
use std::time::Duration;

use engine::ids::{GroupId, UserId};
use engine::store::Store;
use hls_m3u8::tags::ExtInf;
use hls_m3u8::types::PlaylistType;
use hls_m3u8::{MediaPlaylist, MediaSegment};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::signing::Signer;
use crate::storage::IndexRow;
use crate::VodError;

/// Document table of [`Recording`]s, keyed by id.
pub const RECORDINGS: &str = "recordings";
/// Document table of [`SegmentRow`]s, keyed `<rid>/<seq:010>`.
pub const SEGMENTS: &str = "segments";

/// What a recording holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingKind {
    /// A group call's program.
    Call,
    /// An RTSP camera.
    Ingest,
    /// An uploaded file.
    Upload,
}

/// Where a recording stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// Segments are being added; the playlist is an EVENT playlist.
    Recording,
    /// An upload being converted, or a stopped recording whose last segments are uploading.
    Processing,
    /// Complete: a VOD playlist.
    Ready,
    /// Could not be made (see `error`).
    Failed,
}

/// A recording or upload (the JSON of the recordings API).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recording {
    pub id: String,
    pub group: GroupId,
    pub kind: RecordingKind,
    pub status: RecordingStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Seconds of media stored so far.
    #[serde(default)]
    pub duration_s: f64,
    /// Why it failed, as a sentence.
    #[serde(default)]
    pub error: Option<String>,
    /// Who started it.
    pub created_by: UserId,
    /// The participant recorded, when not the group's program (an ingest's camera).
    #[serde(default)]
    pub participant: Option<UserId>,
    /// A poster image exists.
    #[serde(default)]
    pub poster: bool,
}

/// One stored segment of a recording.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SegmentRow {
    pub seq: u64,
    pub duration: f64,
    #[serde(default)]
    pub discontinuity: bool,
    pub bytes: u64,
}

impl SegmentRow {
    /// This row as the index entry the uploader writes once the segment is stored.
    pub fn index_row(&self, rid: &str) -> IndexRow {
        IndexRow {
            table: SEGMENTS.to_owned(),
            key: segment_row_key(rid, self.seq),
            value: serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// The object key of segment `seq` of recording `rid`.
pub fn segment_key(rid: &str, seq: u64) -> String {
    format!("recordings/{rid}/{seq:010}.ts")
}

/// The object key of a recording's poster.
pub fn poster_key(rid: &str) -> String {
    format!("recordings/{rid}/poster.jpg")
}

/// The index key of segment `seq` of recording `rid`.
pub fn segment_row_key(rid: &str, seq: u64) -> String {
    format!("{rid}/{seq:010}")
}

/// The path that signs segment links of `rid`.
pub fn link_path(rid: &str) -> String {
    format!("recordings/{rid}")
}

fn json_err(e: serde_json::Error) -> VodError {
    VodError::Io(std::io::Error::other(e))
}

/// Reads one recording.
pub fn load(db: &dyn Store, rid: &str) -> Result<Option<Recording>, VodError> {
    match db.doc(RECORDINGS, rid)? {
        Some(b) => Ok(Some(serde_json::from_slice(&b).map_err(json_err)?)),
        None => Ok(None),
    }
}

/// Writes one recording.
pub fn save(db: &dyn Store, rec: &Recording) -> Result<(), VodError> {
    db.put_doc(RECORDINGS, &rec.id, &serde_json::to_vec(rec).map_err(json_err)?)?;
    Ok(())
}

/// Every recording, oldest id first.
pub fn all(db: &dyn Store) -> Result<Vec<Recording>, VodError> {
    let mut out = Vec::new();
    for (_, v) in db.docs(RECORDINGS, "")? {
        if let Ok(r) = serde_json::from_slice::<Recording>(&v) {
            out.push(r);
        }
    }
    Ok(out)
}

/// The stored segments of `rid`, in order.
pub fn segments(db: &dyn Store, rid: &str) -> Result<Vec<SegmentRow>, VodError> {
    let mut rows = Vec::new();
    for (_, v) in db.docs(SEGMENTS, &format!("{rid}/"))? {
        if let Ok(r) = serde_json::from_slice::<SegmentRow>(&v) {
            rows.push(r);
        }
    }
    Ok(rows)
}

/// `rec` with `duration_s` summed from its stored segments.
pub fn with_duration(db: &dyn Store, mut rec: Recording) -> Recording {
    if let Ok(rows) = segments(db, &rec.id) {
        rec.duration_s = (rows.iter().map(|r| r.duration).sum::<f64>() * 1000.0).round() / 1000.0;
    }
    rec
}

/// The HLS playlist of a recording: `#EXT-X-PLAYLIST-TYPE:VOD` with an end list once it is
/// ready, an EVENT playlist while it is still being recorded. Segment URIs are relative
/// (`segments/<seq>.ts`) and signed with `signer`.
pub fn playlist(rec: &Recording, rows: &[SegmentRow], signer: &Signer) -> Result<String, VodError> {
    let done = rec.status == RecordingStatus::Ready;
    let longest = rows.iter().map(|r| r.duration).fold(1.0_f64, f64::max);
    let query = signer.query(&link_path(&rec.id));
    let mut segments = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let seg = MediaSegment::builder()
            .number(Some(i))
            .duration(ExtInf::new(Duration::from_secs_f64(row.duration.max(0.001))))
            .has_discontinuity(row.discontinuity && i > 0)
            .uri(Cow::Owned(format!("segments/{}.ts?{query}", row.seq)))
            .build()
            .map_err(|e| VodError::BadMedia(format!("cannot list segment {}: {e}", row.seq)))?;
        segments.push(seg);
    }
    let list = MediaPlaylist::builder()
        .target_duration(Duration::from_secs(longest.ceil() as u64))
        .playlist_type(if done { PlaylistType::Vod } else { PlaylistType::Event })
        .has_end_list(done)
        .has_independent_segments(true)
        .segments(segments)
        .build()
        .map_err(|e| VodError::BadMedia(format!("cannot build the playlist: {e}")))?;
    Ok(list.to_string())
}
