//! `/v1/groups/{gid}/members[/{uid}]`: list, add or replace, change, and remove members.
//! Every change is stored first, then the group's room re-resolves permissions before the
//! request returns, so a revoked permission is gone for live connections at once.

use actix_web::{web, HttpResponse};
use engine::access::Access;
use engine::ids::UserId;
use engine::model::{validate_bitrate, Group, MediaCaps, Member};
use engine::perms::{Perm, Perms, PermsPatch, Principal, Role};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// A member as returned, with their effective permissions.
#[derive(Serialize)]
pub struct MemberView {
    #[serde(flatten)]
    member: Member,
    effective: Perms,
}

impl MemberView {
    fn new(group: &Group, member: Member) -> Self {
        let who = Principal {
            user: member.user.clone(),
            name: None,
            admin: false,
        };
        // A member always has access; `NONE` would only show for an inconsistent record.
        let effective = group.effective(&who, Some(&member)).unwrap_or(Perms::NONE);
        MemberView { member, effective }
    }
}

/// `PUT` / `PATCH` body. With `PATCH`, absent fields keep their value and `permissions` and
/// `media` merge field by field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    permissions: Option<PermsPatch>,
    #[serde(default)]
    media: Option<MediaCaps>,
}

fn check_media(media: &MediaCaps) -> Result<(), ApiError> {
    match media.max_bitrate_kbps {
        Some(kbps) => validate_bitrate(kbps).map_err(ApiError::from),
        None => Ok(()),
    }
}

/// Moderators may change members; only owners, group admins and admin tokens may touch an
/// owner or admin, or hand out those roles.
fn authorize_change(
    access: &Access,
    who: &Principal,
    target: Option<&Member>,
    new_role: Option<Role>,
) -> Result<(), ApiError> {
    access.require(Perm::Moderate)?;
    if access.is_privileged(who) {
        return Ok(());
    }
    if target.is_some_and(|m| m.role.is_privileged()) || new_role.is_some_and(Role::is_privileged) {
        return Err(ApiError::forbidden(
            "only owners and admins may change owners, admins, or grant those roles",
        ));
    }
    Ok(())
}

fn ids(gid: &str, uid: &str) -> Result<(engine::ids::GroupId, UserId), ApiError> {
    Ok((super::group_id(gid)?, super::user_id(uid)?))
}

fn not_member(gid: &str, uid: &str) -> ApiError {
    ApiError::not_found("member_not_found", format!("user {uid} is not a member of group {gid}"))
}

/// Lists members with their effective permissions (members and admins; not guests).
pub async fn list(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    let access = state.access(&who, &gid)?;
    access.require_any()?;
    if access.member.is_none() && !who.admin {
        return Err(ApiError::forbidden("only members may list a group's members"));
    }
    let members: Vec<MemberView> = state
        .store
        .members(&gid)?
        .into_iter()
        .map(|m| MemberView::new(&access.group, m))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "members": members })))
}

/// One member (extension; same access as the list).
pub async fn get(
    Caller(who): Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (gid, uid) = ids(&path.0, &path.1)?;
    let access = state.access(&who, &gid)?;
    access.require_any()?;
    if access.member.is_none() && !who.admin {
        return Err(ApiError::forbidden("only members may see a group's members"));
    }
    let member = state
        .store
        .member(&gid, &uid)?
        .ok_or_else(|| not_member(&path.0, &path.1))?;
    Ok(HttpResponse::Ok().json(MemberView::new(&access.group, member)))
}

/// Adds or replaces a member (`can_moderate`). 201 when added, 200 when replaced.
pub async fn put(
    Caller(who): Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<MemberBody>,
) -> Result<HttpResponse, ApiError> {
    let (gid, uid) = ids(&path.0, &path.1)?;
    let access = state.access(&who, &gid)?;
    let existing = state.store.member(&gid, &uid)?;
    let req = body.into_inner();
    authorize_change(&access, &who, existing.as_ref(), req.role)?;
    let media = req.media.unwrap_or_default();
    check_media(&media)?;
    let member = Member {
        user: uid,
        role: req.role.unwrap_or_default(),
        permissions: req.permissions.unwrap_or_default(),
        media,
        added_at: existing.as_ref().map_or_else(OffsetDateTime::now_utc, |m| m.added_at),
    };
    state.store.put_member(&gid, &member)?;
    super::group_changed(&state, &gid).await;
    let view = MemberView::new(&access.group, member);
    Ok(if existing.is_some() {
        HttpResponse::Ok().json(view)
    } else {
        HttpResponse::Created().json(view)
    })
}

/// Changes some of a member's fields (`can_moderate`).
pub async fn patch(
    Caller(who): Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<MemberBody>,
) -> Result<HttpResponse, ApiError> {
    let (gid, uid) = ids(&path.0, &path.1)?;
    let access = state.access(&who, &gid)?;
    let existing = state.store.member(&gid, &uid)?;
    let req = body.into_inner();
    authorize_change(&access, &who, existing.as_ref(), req.role)?;
    let mut member = existing.ok_or_else(|| not_member(&path.0, &path.1))?;
    if let Some(role) = req.role {
        member.role = role;
    }
    if let Some(p) = &req.permissions {
        member.permissions.merge(p);
    }
    if let Some(m) = &req.media {
        check_media(m)?;
        member.media.merge(m);
    }
    state.store.put_member(&gid, &member)?;
    super::group_changed(&state, &gid).await;
    Ok(HttpResponse::Ok().json(MemberView::new(&access.group, member)))
}

/// Removes a member (`can_moderate`, or the member themselves leaving). Their live
/// connections lose access before this returns.
pub async fn delete(
    Caller(who): Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (gid, uid) = ids(&path.0, &path.1)?;
    let access = state.access(&who, &gid)?;
    let existing = state.store.member(&gid, &uid)?;
    let leaving_self = !who.admin && who.user == uid && existing.is_some();
    if !leaving_self {
        authorize_change(&access, &who, existing.as_ref(), None)?;
    }
    if !state.store.delete_member(&gid, &uid)? {
        return Err(not_member(&path.0, &path.1));
    }
    super::group_changed(&state, &gid).await;
    Ok(HttpResponse::NoContent().finish())
}
