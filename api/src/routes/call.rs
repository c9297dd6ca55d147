//! The live call of a group: `GET /v1/groups/{gid}/call` (`can_list`), and moderation of its
//! participants (`can_moderate`): mute, remove.

use actix_web::{web, HttpResponse};
use engine::perms::Perm;
use engine::registry::FindRoom;
use engine::room::call::CallView;
use engine::room::messages::{GetCall, MuteParticipant, RemoveParticipant};
use engine::track::Source;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Mute body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MuteBody {
    #[serde(default)]
    source: Option<Source>,
}

async fn room(
    state: &AppState,
    gid: &engine::ids::GroupId,
) -> Result<Option<actix::Addr<engine::room::Room>>, ApiError> {
    state
        .registry
        .send(FindRoom { group: gid.clone() })
        .await
        .map_err(ApiError::internal)
}

/// Who is in the call and what they publish.
pub async fn get(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    state.access(&who, &gid)?.require(Perm::List)?;
    let view = match room(&state, &gid).await? {
        Some(room) => room.send(GetCall).await.map_err(ApiError::internal)?,
        None => CallView {
            participants: Vec::new(),
        },
    };
    Ok(HttpResponse::Ok().json(view))
}

/// Mutes a participant's tracks (all, or one `source`) for everyone.
pub async fn mute(
    Caller(who): Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: Option<web::Json<MuteBody>>,
) -> Result<HttpResponse, ApiError> {
    let (gid, uid) = (super::group_id(&path.0)?, super::user_id(&path.1)?);
    state.access(&who, &gid)?.require(Perm::Moderate)?;
    let source = body.map(|b| b.into_inner()).unwrap_or_default().source;
    let muted = match room(&state, &gid).await? {
        Some(room) => room
            .send(MuteParticipant {
                user: uid.clone(),
                source,
            })
            .await
            .map_err(ApiError::internal)?,
        None => 0,
    };
    if muted == 0 {
        return Err(ApiError::not_found(
            "not_in_call",
            format!("{uid} publishes no such track in this call"),
        ));
    }
    Ok(HttpResponse::Ok().json(json!({ "muted": muted })))
}

/// Takes a participant out of the call.
pub async fn remove(
    Caller(who): Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (gid, uid) = (super::group_id(&path.0)?, super::user_id(&path.1)?);
    state.access(&who, &gid)?.require(Perm::Moderate)?;
    let removed = match room(&state, &gid).await? {
        Some(room) => room
            .send(RemoveParticipant { user: uid.clone() })
            .await
            .map_err(ApiError::internal)?,
        None => false,
    };
    if !removed {
        return Err(ApiError::not_found("not_in_call", format!("{uid} is not in this call")));
    }
    Ok(HttpResponse::NoContent().finish())
}
