//! `POST /v1/tokens`: admins mint user tokens for their users.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use engine::model::validate_name;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Validated in the handler, so a bad id gets `invalid_id`.
    user: String,
    #[serde(default)]
    name: Option<String>,
    /// Lifetime in seconds (default one hour).
    #[serde(default)]
    ttl_s: Option<u64>,
    /// Extension: mint an admin token.
    #[serde(default)]
    admin: bool,
}

/// Mints a token (admin only).
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    let req = body.into_inner();
    let user = super::user_id(&req.user)?;
    if let Some(name) = &req.name {
        validate_name(name)?;
    }
    let ttl = Duration::from_secs(req.ttl_s.unwrap_or(3600));
    let token = state.tokens.mint(&user, req.name.as_deref(), req.admin, ttl)?;
    Ok(HttpResponse::Created().json(json!({ "token": token })))
}
