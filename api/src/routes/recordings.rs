//! Recordings and on-demand media: start/stop a group call's recording (`can_moderate`),
//! upload a file (`can_publish`), list and play (`can_playback`; playlists carry signed,
//! short-lived segment links), delete (`can_moderate`).

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use engine::perms::{Perm, Principal};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use vod::recordings::{Recording, RecordingKind};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// `exp` and `sig` of a signed link.
#[derive(Deserialize)]
pub struct Signed {
    exp: Option<u64>,
    sig: Option<String>,
}

impl Signed {
    pub(crate) fn parts(&self) -> Result<(u64, &str), ApiError> {
        match (self.exp, self.sig.as_deref()) {
            (Some(exp), Some(sig)) => Ok((exp, sig)),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "link_unsigned",
                "segment links must carry exp and sig; take them from the playlist",
            )),
        }
    }
}

/// Validates a `{rid}` path segment (same alphabet as other ids).
fn recording_id(raw: &str) -> Result<String, ApiError> {
    let ok = !raw.is_empty() && raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::bad_request(
            "invalid_id",
            "a recording id has letters, digits and _ only",
        ))
    }
}

/// The recording `rid`, if the caller may do `perm` in its group.
async fn permitted(state: &AppState, who: &Principal, rid: &str, perm: Perm) -> Result<Recording, ApiError> {
    let rec = state.vod.get(rid).await?;
    state.access(who, &rec.group)?.require(perm)?;
    Ok(rec)
}

/// A recording as the API shows it: the record plus where to play it.
fn view(state: &AppState, rec: &Recording) -> serde_json::Value {
    let mut v = serde_json::to_value(rec).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "playlist_url".into(),
            json!(format!("/v1/recordings/{}/index.m3u8", rec.id)),
        );
        if rec.poster {
            o.insert(
                "poster_url".into(),
                json!(format!(
                    "/v1/recordings/{}/poster.jpg?{}",
                    rec.id,
                    state.vod.poster_query(&rec.id)
                )),
            );
        }
    }
    v
}

/// `POST /v1/groups/{gid}/recordings`: starts recording the group call.
pub async fn start(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    state.access(&who, &gid)?.require(Perm::Moderate)?;
    let rec = state
        .vod
        .start_recording(&gid, &who.user, RecordingKind::Call, None)
        .await?;
    Ok(HttpResponse::Created().json(view(&state, &rec)))
}

/// `POST /v1/recordings/{rid}/stop`.
pub async fn stop(
    Caller(who): Caller,
    state: web::Data<AppState>,
    rid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let rid = recording_id(&rid)?;
    permitted(&state, &who, &rid, Perm::Moderate).await?;
    let rec = state.vod.stop_recording(&rid).await?;
    Ok(HttpResponse::Ok().json(view(&state, &rec)))
}

/// `GET /v1/groups/{gid}/recordings`.
pub async fn list(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    state.access(&who, &gid)?.require(Perm::Playback)?;
    let recs = state.vod.list(&gid).await?;
    let items: Vec<serde_json::Value> = recs.iter().map(|r| view(&state, r)).collect();
    Ok(HttpResponse::Ok().json(json!({ "recordings": items })))
}

/// `GET /v1/recordings/{rid}`.
pub async fn get(
    Caller(who): Caller,
    state: web::Data<AppState>,
    rid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let rid = recording_id(&rid)?;
    let rec = permitted(&state, &who, &rid, Perm::Playback).await?;
    Ok(HttpResponse::Ok().json(view(&state, &rec)))
}

/// `DELETE /v1/recordings/{rid}`.
pub async fn delete(
    Caller(who): Caller,
    state: web::Data<AppState>,
    rid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let rid = recording_id(&rid)?;
    permitted(&state, &who, &rid, Perm::Moderate).await?;
    state.vod.delete(&rid).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /v1/recordings/{rid}/index.m3u8`: VOD (or EVENT, while recording) playlist.
pub async fn playlist(
    Caller(who): Caller,
    state: web::Data<AppState>,
    rid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let rid = recording_id(&rid)?;
    let rec = permitted(&state, &who, &rid, Perm::Playback).await?;
    let body = state.vod.playlist(&rec).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/vnd.apple.mpegurl")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body))
}

/// Parses `<digits>.ts` (nothing else: no `..`, no slashes).
fn segment_number(name: &str) -> Result<u64, ApiError> {
    name.strip_suffix(".ts")
        .filter(|n| !n.is_empty() && n.len() <= 12 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError::bad_request("invalid_segment", "a segment is named <number>.ts"))
}

/// `GET /v1/recordings/{rid}/segments/{n}.ts?exp=&sig=`: a segment, by signed link only.
pub async fn segment(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    signed: web::Query<Signed>,
) -> Result<HttpResponse, ApiError> {
    let rid = recording_id(&path.0)?;
    let seq = segment_number(&path.1)?;
    let (exp, sig) = signed.parts()?;
    state.vod.check_recording_link(&rid, exp, sig)?;
    let data = state.vod.segment(&rid, seq).await?;
    Ok(HttpResponse::Ok()
        .content_type("video/mp2t")
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
        .body(data))
}

/// `GET /v1/recordings/{rid}/poster.jpg?exp=&sig=`.
pub async fn poster(
    state: web::Data<AppState>,
    rid: web::Path<String>,
    signed: web::Query<Signed>,
) -> Result<HttpResponse, ApiError> {
    let rid = recording_id(&rid)?;
    let (exp, sig) = signed.parts()?;
    state.vod.check_recording_link(&rid, exp, sig)?;
    let data = state.vod.poster(&rid).await?;
    Ok(HttpResponse::Ok().content_type(ContentType::jpeg()).body(data))
}

/// `POST /v1/groups/{gid}/media`: an upload, as a raw `video/*` body or the first file part
/// of a `multipart/form-data` body; streamed to disk, then converted in the background.
pub async fn upload(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    state.access(&who, &gid)?.require(Perm::Publish)?;
    let mime = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let limit = state.config.hls.max_upload_bytes;
    let dir = state.config.data_dir.join("uploads");
    std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
    let path = dir.join(format!("{}.part", engine::next_id()));
    let written = if mime.starts_with("multipart/form-data") {
        let mut form = actix_multipart::Multipart::new(req.headers(), payload);
        let mut written = None;
        while let Some(field) = form.next().await {
            let field =
                field.map_err(|e| ApiError::bad_request("invalid_multipart", format!("the form is malformed: {e}")))?;
            if field.content_disposition().and_then(|d| d.get_filename()).is_none() {
                continue;
            }
            written = Some(save_stream(field.map(|c| c.map_err(|e| e.to_string())), &path, limit).await?);
            break;
        }
        written.ok_or_else(|| ApiError::bad_request("no_file", "the form has no file part"))?
    } else if mime.starts_with("video/") || mime.starts_with("audio/") || mime == "application/octet-stream" {
        save_stream(payload.map(|c| c.map_err(|e| e.to_string())), &path, limit).await?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the file as Content-Type: video/mp4 (or another video/* type) or multipart/form-data",
        ));
    };
    if written == 0 {
        let _ = std::fs::remove_file(&path);
        return Err(ApiError::bad_request("empty_upload", "the uploaded file is empty"));
    }
    let rec = state.vod.upload(&gid, &who.user, path).await?;
    Ok(HttpResponse::Created().json(view(&state, &rec)))
}

/// Writes a byte stream to `path`, refusing more than `limit` bytes (413; the file is removed).
async fn save_stream<S>(mut stream: S, path: &std::path::Path, limit: u64) -> Result<u64, ApiError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, String>> + Unpin,
{
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::File::create(path).await.map_err(ApiError::internal)?;
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(ApiError::bad_request(
                    "upload_interrupted",
                    format!("the upload broke off: {e}"),
                ));
            }
        };
        total += chunk.len() as u64;
        if total > limit {
            let _ = std::fs::remove_file(path);
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "upload_too_large",
                format!("uploads are limited to {limit} bytes"),
            ));
        }
        if let Err(e) = file.write_all(&chunk).await {
            let _ = std::fs::remove_file(path);
            return Err(ApiError::internal(e));
        }
    }
    file.flush().await.map_err(ApiError::internal)?;
    Ok(total)
}
