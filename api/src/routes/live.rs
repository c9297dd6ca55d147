//! Live low-latency HLS of a group's program: the playlist (`can_subscribe`, blocking reload
//! with `_HLS_msn`/`_HLS_part`), its segments and parts (signed links from the playlist), and
//! the moderator's choice of who is the program (extension).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use engine::perms::Perm;
use serde::Deserialize;
use vod::live::Chunk;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::recordings::Signed;
use crate::state::AppState;

/// Blocking playlist reload parameters.
#[derive(Deserialize)]
pub struct Reload {
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    part: Option<u32>,
}

/// `GET /v1/groups/{gid}/live/index.m3u8`.
pub async fn playlist(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
    reload: web::Query<Reload>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    state.access(&who, &gid)?.require(Perm::Subscribe)?;
    if reload.part.is_some() && reload.msn.is_none() {
        return Err(ApiError::bad_request("invalid_query", "_HLS_part needs _HLS_msn"));
    }
    let body = state.vod.live_playlist(&gid, reload.msn, reload.part).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/vnd.apple.mpegurl")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body))
}

/// Parses `<seq>.ts` or `<seq>.<part>.ts`.
fn chunk_name(name: &str) -> Result<Chunk, ApiError> {
    let bad = || ApiError::bad_request("invalid_segment", "a live segment is named <n>.ts or <n>.<part>.ts");
    let stem = name.strip_suffix(".ts").ok_or_else(bad)?;
    let digits = |s: &str| -> Result<u64, ApiError> {
        if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    match stem.split_once('.') {
        None => Ok(Chunk::Segment(digits(stem)?)),
        Some((seq, part)) => Ok(Chunk::Part(
            digits(seq)?,
            u32::try_from(digits(part)?).map_err(|_| bad())?,
        )),
    }
}

/// `GET /v1/groups/{gid}/live/{name}.ts?exp=&sig=`.
pub async fn chunk(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    signed: web::Query<Signed>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&path.0)?;
    let chunk = chunk_name(&path.1)?;
    let (exp, sig) = signed.parts()?;
    let data = state.vod.live_chunk(&gid, chunk, exp, sig).await?;
    Ok(HttpResponse::Ok()
        .content_type("video/mp2t")
        .insert_header((header::CACHE_CONTROL, "max-age=60"))
        .body(data))
}

/// Body of `PUT /v1/groups/{gid}/live/program`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramBody {
    /// The participant to show; `null` returns to the automatic choice (the lead speaker, else
    /// the first publisher).
    participant: Option<String>,
}

/// `PUT /v1/groups/{gid}/live/program` (extension, `can_moderate`): who the live HLS and call
/// recordings show.
pub async fn set_program(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
    body: web::Json<ProgramBody>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    state.access(&who, &gid)?.require(Perm::Moderate)?;
    let user = body.participant.as_deref().map(super::user_id).transpose()?;
    state.vod.pin(&gid, user.clone());
    Ok(HttpResponse::Ok().json(serde_json::json!({ "participant": user })))
}
