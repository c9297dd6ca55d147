//! Fault injection for the test suite, enabled only by `testing.fault_injection`.

use actix_web::{web, HttpResponse};
use engine::registry::CrashRoom;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// `POST /v1/debug/groups/{gid}/room/crash`: makes the group's room panic (admin only).
pub async fn crash_room(
    caller: Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.config.testing.fault_injection {
        return Err(ApiError::not_found("not_found", "no such resource"));
    }
    caller.require_admin()?;
    let group = super::group_id(&gid)?;
    let active = state
        .registry
        .send(CrashRoom { group })
        .await
        .map_err(ApiError::internal)?;
    if active {
        Ok(HttpResponse::Accepted().finish())
    } else {
        Err(ApiError::not_found("room_not_active", "that group has no active room"))
    }
}
