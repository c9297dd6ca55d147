//! `/v1/groups` and `/v1/groups/{gid}`: create, list, read, change and delete groups.

use actix_web::{web, HttpResponse};
use engine::ids::GroupId;
use engine::model::{validate_name, Group, Member, Settings};
use engine::perms::{Perm, Perms, Principal, Role};
use engine::registry::GroupDeleted;
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// A group as returned, with the caller's own role and effective permissions (extension).
#[derive(Serialize)]
pub struct GroupView {
    #[serde(flatten)]
    group: Group,
    role: Option<Role>,
    permissions: Option<Perms>,
}

impl GroupView {
    fn new(group: Group, who: &Principal, member: Option<&Member>) -> Self {
        let permissions = group.effective(who, member);
        GroupView {
            role: member.map(|m| m.role),
            permissions,
            group,
        }
    }
}

/// `POST /v1/groups` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Validated in the handler, so a bad id gets `invalid_id` like one in a path.
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    settings: Option<Settings>,
}

/// `PATCH /v1/groups/{gid}` body. `settings` is a JSON merge patch (RFC 7386) over the current
/// settings: `{"settings": {"guests": null}}` closes the group, `{"settings": {"members":
/// {"can_publish": false}}}` changes one default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    settings: Option<serde_json::Value>,
}

/// Creates a group; a user creator becomes its owner.
pub async fn create(
    Caller(who): Caller,
    state: web::Data<AppState>,
    body: web::Json<CreateGroup>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    validate_name(&req.name)?;
    let settings = req.settings.unwrap_or_default();
    settings.validate()?;
    let id = match req.id {
        Some(id) => super::group_id(&id)?,
        None => GroupId::new(Alphanumeric.sample_string(&mut rand::rng(), 12).to_lowercase())?,
    };
    let now = OffsetDateTime::now_utc();
    let group = Group {
        id,
        name: req.name,
        settings,
        created_at: now,
        created_by: (!who.admin).then(|| who.user.clone()),
    };
    let owner = (!who.admin).then(|| Member {
        user: who.user.clone(),
        role: Role::Owner,
        permissions: Default::default(),
        media: Default::default(),
        added_at: now,
    });
    state.store.create_group(&group, owner.as_ref())?;
    Ok(HttpResponse::Created().json(GroupView::new(group, &who, owner.as_ref())))
}

/// The caller's groups (admins: every group).
pub async fn list(Caller(who): Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let groups = if who.admin {
        state.store.groups()?
    } else {
        state.store.groups_of(&who.user)?
    };
    let mut views = Vec::with_capacity(groups.len());
    for g in groups {
        let member = state.store.member(&g.id, &who.user)?;
        views.push(GroupView::new(g, &who, member.as_ref()));
    }
    Ok(HttpResponse::Ok().json(json!({ "groups": views })))
}

/// One group: for members, and for guests when the group is open to them.
pub async fn get(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    let access = state.access(&who, &gid)?;
    access.require_any()?;
    Ok(HttpResponse::Ok().json(GroupView::new(access.group, &who, access.member.as_ref())))
}

/// Changes the name or settings (`can_moderate`).
pub async fn update(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
    body: web::Json<UpdateGroup>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    let access = state.access(&who, &gid)?;
    access.require(Perm::Moderate)?;
    let req = body.into_inner();
    let mut group = access.group;
    if let Some(name) = req.name {
        validate_name(&name)?;
        group.name = name;
    }
    if let Some(patch) = req.settings {
        let mut current = serde_json::to_value(&group.settings).map_err(ApiError::internal)?;
        merge_patch(&mut current, &patch);
        let settings: Settings = serde_json::from_value(current)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("settings: {e}")))?;
        settings.validate()?;
        group.settings = settings;
    }
    state.store.update_group(&group)?;
    super::group_changed(&state, &gid).await;
    Ok(HttpResponse::Ok().json(GroupView::new(group, &who, access.member.as_ref())))
}

/// Deletes the group, its members and history (owner, group admin, or admin token).
pub async fn delete(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    let access = state.access(&who, &gid)?;
    access.require_any()?;
    if !access.is_privileged(&who) {
        return Err(ApiError::forbidden("only the group's owner or admins may delete it"));
    }
    state.store.delete_group(&gid)?;
    let _ = state.registry.send(GroupDeleted { group: gid }).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Applies an RFC 7386 JSON merge patch: objects merge key by key, `null` removes a key, any
/// other value replaces.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge_patch(&mut v, &json!({"a": null, "b": {"c": 9}, "e": {"x": 1}}));
        assert_eq!(v, json!({"b": {"c": 9, "d": 3}, "e": {"x": 1}}));
    }
}
