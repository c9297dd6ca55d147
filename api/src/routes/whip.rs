//! WHIP (RFC 9725) publishing and the session resource shared with WHEP:
//! `POST /v1/whip?groups=a,b`, `PATCH|DELETE /v1/sessions/{sid}`, `PUT /v1/sessions/{sid}/groups`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use engine::ids::GroupId;
use engine::perms::{Perm, Principal};
use engine::session::{start_publish, AddCandidates, SessionEntry, SessionKind, SetGroups};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Most groups one publish may fan out to.
pub const MAX_FANOUT_GROUPS: usize = 32;

/// `POST /v1/whip` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipQuery {
    groups: String,
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

/// `PUT /v1/sessions/{sid}/groups` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsBody {
    groups: Vec<String>,
}

/// Checks the content type and returns the body as an SDP string.
pub fn sdp_body(req: &HttpRequest, body: &[u8], want: &'static str) -> Result<String, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.trim().to_ascii_lowercase().starts_with(want) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send the body as Content-Type: {want}"),
        ));
    }
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("invalid_sdp", "the body is not UTF-8 text"))
}

/// Parses and validates a list of group ids (deduplicated, order kept).
fn parse_groups<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<GroupId>, ApiError> {
    let mut groups: Vec<GroupId> = Vec::new();
    for item in items.map(str::trim) {
        let g = super::group_id(item)?;
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    if groups.is_empty() || groups.len() > MAX_FANOUT_GROUPS {
        return Err(ApiError::bad_request(
            "invalid_groups",
            format!("list 1 to {MAX_FANOUT_GROUPS} groups, e.g. ?groups=a,b"),
        ));
    }
    Ok(groups)
}

/// Fails unless `who` may publish in every group.
fn require_publish(state: &AppState, who: &Principal, groups: &[GroupId]) -> Result<(), ApiError> {
    for g in groups {
        state.access(who, g)?.require(Perm::Publish)?;
    }
    Ok(())
}

/// Answers with 201, the session's `Location` and the SDP answer.
pub fn created(sid: &str, answer: String) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/sessions/{sid}")))
        .insert_header((header::CONTENT_TYPE, "application/sdp"))
        .body(answer)
}

/// `POST /v1/whip?groups=a,b`: publish to every listed group (needs `can_publish` in each).
pub async fn publish(
    Caller(who): Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<WhipQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let offer = sdp_body(&req, &body, "application/sdp")?;
    let groups = parse_groups(query.groups.split(','))?;
    let (sid, answer) = start_publish(&state.rtc, who, groups, offer, None, None).await?;
    Ok(created(&sid, answer))
}

/// The session `sid`, if `who` started it (or is an admin).
pub(crate) fn owned_session(state: &AppState, who: &Principal, sid: &str) -> Result<SessionEntry, ApiError> {
    let entry = state
        .rtc
        .sessions
        .get(sid)
        .ok_or_else(|| ApiError::not_found("session_not_found", "no such session"))?;
    if entry.owner != who.user && !who.admin {
        return Err(ApiError::forbidden("this session belongs to another user"));
    }
    Ok(entry)
}

/// `DELETE /v1/sessions/{sid}`: ends a publish or playback session (its owner or an admin).
pub async fn delete(
    Caller(who): Caller,
    state: web::Data<AppState>,
    sid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    owned_session(&state, &who, &sid)?;
    state.rtc.sessions.stop(&sid, "deleted by the client");
    Ok(HttpResponse::Ok().finish())
}

/// `PATCH /v1/sessions/{sid}` with `application/trickle-ice-sdpfrag`: adds the client's
/// candidates (the server's are all in its answer).
pub async fn trickle(
    Caller(who): Caller,
    req: HttpRequest,
    state: web::Data<AppState>,
    sid: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let frag = sdp_body(&req, &body, "application/trickle-ice-sdpfrag")?;
    let entry = owned_session(&state, &who, &sid)?;
    let candidates: Vec<String> = frag
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("a=")
                .filter(|c| c.starts_with("candidate:"))
                .map(str::to_owned)
        })
        .collect();
    let msg = AddCandidates { candidates };
    let res = match entry.kind {
        SessionKind::Publish(a) => a.send(msg).await,
        SessionKind::View(a) => a.send(msg).await,
    };
    res.map_err(|_| ApiError::not_found("session_not_found", "the session has ended"))??;
    Ok(HttpResponse::NoContent().finish())
}

/// `PUT /v1/sessions/{sid}/groups`: changes the groups a live publish fans out to.
pub async fn set_groups(
    Caller(who): Caller,
    state: web::Data<AppState>,
    sid: web::Path<String>,
    body: web::Json<GroupsBody>,
) -> Result<HttpResponse, ApiError> {
    let entry = owned_session(&state, &who, &sid)?;
    let SessionKind::Publish(publisher) = entry.kind else {
        return Err(ApiError::bad_request(
            "not_a_publish_session",
            "only a WHIP publish session has groups",
        ));
    };
    let groups = parse_groups(body.groups.iter().map(String::as_str))?;
    require_publish(&state, &who, &groups)?;
    let groups = publisher
        .send(SetGroups { groups })
        .await
        .map_err(|_| ApiError::not_found("session_not_found", "the session has ended"))??;
    Ok(HttpResponse::Ok().json(json!({ "groups": groups })))
}
