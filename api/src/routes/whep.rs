//! WHEP playback: `POST /v1/groups/{gid}/whep?participant=<uid>` (needs `can_subscribe`), and
//! the extensions `PUT /v1/sessions/{sid}/layer` that pins a playback to a simulcast layer and
//! `PUT /v1/sessions/{sid}/view` that tells it the size its video is shown at.

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use engine::perms::Principal;
use engine::session::{start_view, view_size, SessionKind, SetLayer, SetView, Viewer};
use serde::Deserialize;
use serde_json::json;

use super::whip::{created, owned_session, sdp_body};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhepQuery {
    #[serde(default)]
    participant: Option<String>,
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

/// Plays a publisher of the group (the given participant, or the first publisher).
pub async fn play(
    Caller(who): Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
    gid: web::Path<String>,
    query: web::Query<WhepQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let offer = sdp_body(&req, &body, "application/sdp")?;
    let gid = super::group_id(&gid)?;
    let participant = query.participant.as_deref().map(super::user_id).transpose()?;
    let (sid, answer) = start_view(&state.rtc, who, gid, participant, offer, None).await?;
    Ok(created(&sid, answer))
}

/// The caller's playback session `sid`, for a request that only a playback (`what` it does)
/// takes: 400 `not_a_playback_session` for a publish.
fn owned_playback(state: &AppState, who: &Principal, sid: &str, what: &str) -> Result<Addr<Viewer>, ApiError> {
    match owned_session(state, who, sid)?.kind {
        SessionKind::View(viewer) => Ok(viewer),
        SessionKind::Publish(_) => Err(ApiError::bad_request(
            "not_a_playback_session",
            format!("only a playback (WHEP) session {what}"),
        )),
    }
}

/// `PUT /v1/sessions/{sid}/layer` body: `rid` null = automatic; without `track`, every video
/// track of the session.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerBody {
    rid: Option<String>,
    #[serde(default)]
    track: Option<String>,
}

/// `PUT /v1/sessions/{sid}/layer`: pins a playback's video to a simulcast layer (within the
/// viewer's caps) or returns it to automatic choice.
pub async fn set_layer(
    Caller(who): Caller,
    state: web::Data<AppState>,
    sid: web::Path<String>,
    body: web::Json<LayerBody>,
) -> Result<HttpResponse, ApiError> {
    let viewer = owned_playback(&state, &who, &sid, "picks a layer")?;
    let LayerBody { rid, track } = body.into_inner();
    viewer
        .send(SetLayer {
            track: track.clone(),
            rid: rid.clone(),
        })
        .await
        .map_err(|_| ApiError::not_found("session_not_found", "the session has ended"))??;
    Ok(HttpResponse::Ok().json(json!({ "rid": rid, "track": track })))
}

/// `PUT /v1/sessions/{sid}/view` body: the size in device pixels the video is shown at (both
/// `null`: no longer told; 0 x 0: hidden); without `track`, every video track of the session.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewBody {
    width: Option<u32>,
    height: Option<u32>,
    #[serde(default)]
    track: Option<String>,
}

/// `PUT /v1/sessions/{sid}/view` (adaptive stream): each video track of the playback then gets
/// the smallest simulcast layer that covers that size, within the viewer's caps (a pinned
/// layer first; hidden: no video until it is shown again).
pub async fn set_view(
    Caller(who): Caller,
    state: web::Data<AppState>,
    sid: web::Path<String>,
    body: web::Json<ViewBody>,
) -> Result<HttpResponse, ApiError> {
    let viewer = owned_playback(&state, &who, &sid, "has a view size")?;
    let ViewBody { width, height, track } = body.into_inner();
    let size = view_size(width, height)?;
    viewer
        .send(SetView {
            track: track.clone(),
            size,
        })
        .await
        .map_err(|_| ApiError::not_found("session_not_found", "the session has ended"))??;
    Ok(HttpResponse::Ok().json(json!({ "width": width, "height": height, "track": track })))
}
