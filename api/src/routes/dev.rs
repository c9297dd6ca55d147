//! `POST /v1/dev/token` (extension): development sign-in for the web app. Anyone may mint a
//! 24 h user token for any user id, so it answers only when `web.dev_tokens` is on (by default:
//! when the server listens on a loopback address); otherwise 404 like an unknown route.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use engine::model::validate_name;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// Lifetime of a development token.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    /// Validated in the handler, so a bad id gets `invalid_id`.
    user: String,
    #[serde(default)]
    name: Option<String>,
}

/// Mints a 24 h user token (never an admin token) when development tokens are enabled.
pub async fn token(state: web::Data<AppState>, body: web::Json<DevTokenRequest>) -> Result<HttpResponse, ApiError> {
    if !state.config.dev_tokens() {
        return Err(ApiError::not_found(
            "not_found",
            "development tokens are off on this server (config [web] dev_tokens); ask for a token",
        ));
    }
    let req = body.into_inner();
    let user = super::user_id(&req.user)?;
    let name = match req.name.as_deref().map(str::trim) {
        Some("") | None => None,
        Some(n) => {
            validate_name(n)?;
            Some(n.to_owned())
        }
    };
    let token = state.tokens.mint(
        &user,
        Some(name.as_deref().unwrap_or(user.as_str())),
        false,
        DEV_TOKEN_TTL,
    )?;
    Ok(HttpResponse::Created().json(json!({ "token": token, "user": user, "expires_in_s": DEV_TOKEN_TTL.as_secs() })))
}
