//! WHEP playback: `POST /v1/groups/{gid}/whep?participant=<uid>` (needs `can_subscribe`).

use actix_web::{web, HttpRequest, HttpResponse};
use engine::session::start_view;
use serde::Deserialize;

use super::whip::{created, sdp_body};
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
