//! `/v1/groups/{gid}/messages`: send (`can_send`) and page through history (`can_receive`).

use actix_web::{web, HttpResponse};
use engine::chat::send_message;
use engine::perms::Perm;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Default page size.
const DEFAULT_LIMIT: usize = 50;

/// `POST` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    text: String,
}

/// `GET` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    /// Accepted so that `?token=` works here too.
    #[serde(default, rename = "token")]
    _token: Option<String>,
}

/// Sends a message -> 201 `{"id","from","text","ts"}`.
pub async fn send(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
    body: web::Json<SendBody>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    let message = send_message(&state.store, &state.registry, &state.metrics, &who, &gid, &body.text).await?;
    Ok(HttpResponse::Created().json(message))
}

/// Pages through history, oldest first: `?after=<id>&limit=<n>` ->
/// `{"messages": [...], "next_after": <id of the last one, or null>}`.
pub async fn list(
    Caller(who): Caller,
    state: web::Data<AppState>,
    gid: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let gid = super::group_id(&gid)?;
    let max = state.config.limits.max_page;
    let limit = match &query.limit {
        None => DEFAULT_LIMIT.min(max),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be a whole number from 1 to {max}"),
                ))
            }
        },
    };
    let after = match &query.after {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request("invalid_after", "after must be a message id"))?,
        ),
    };
    state.access(&who, &gid)?.require(Perm::Receive)?;
    let messages = state.store.messages(&gid, after, limit)?;
    let next_after = messages.last().map(|m| m.id.clone());
    Ok(HttpResponse::Ok().json(json!({ "messages": messages, "next_after": next_after })))
}
