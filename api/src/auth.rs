//! The authenticated caller as an extractor: `Authorization: Bearer <jwt>`, or `?token=<jwt>`
//! where headers cannot be set (WebSocket, `<video src>`).

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use engine::perms::Principal;

use crate::error::ApiError;
use crate::state::AppState;

/// The verified caller of a request.
pub struct Caller(pub Principal);

fn token_of(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| ApiError::unauthorized("token_malformed", "the Authorization header is not text"))?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthorized("token_malformed", "use Authorization: Bearer <token>"))?;
        return Ok(Some(token.trim().to_owned()));
    }
    let query = req.query_string();
    if query.is_empty() {
        return Ok(None);
    }
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|_| ApiError::bad_request("invalid_query", "the query string is not valid"))?;
    Ok(pairs.0.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v))
}

fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("application state is missing"))?;
    match token_of(req)? {
        Some(token) => state.tokens.verify(&token),
        None => Err(ApiError::unauthorized(
            "token_missing",
            "this endpoint needs a token: Authorization: Bearer <token> or ?token=<token>",
        )),
    }
}

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(authenticate(req).map(Caller).map_err(Into::into))
    }
}

impl Caller {
    /// Fails with 403 unless this is an admin token.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs an admin token"))
        }
    }
}
