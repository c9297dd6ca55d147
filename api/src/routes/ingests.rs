//! RTSP camera ingests: `POST /v1/ingests` (admin, or `can_publish` in every listed group),
//! `GET /v1/ingests` and `GET /v1/ingests/{id}` (admin: all; a user: those they created and
//! those in a group where they hold `can_list`), `DELETE /v1/ingests/{id}` (admin, creator, or
//! `can_moderate` in one of its groups; answers 200 with the final view, `status: stopped`),
//! and the extension `PATCH /v1/ingests/{id}` (`name`, `groups`, `record` of a running ingest;
//! admin, or `can_publish` in every resulting and every removed group; 200 with the view).
//! URLs are returned with their credentials replaced by `***`. Extension: `GET
//! /v1/ingests/{id}/snapshot`, a JPEG of the camera's latest picture.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use engine::ErrorKind;
use ingest::{IngestError, IngestManager, IngestUpdate, NewIngest};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;

/// Maps the ingest crate's errors onto the spec's error JSON.
fn api_error(e: IngestError) -> ApiError {
    let status = match e.kind() {
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => return ApiError::internal(e),
    };
    ApiError::new(status, e.code(), e.to_string())
}

/// Creates an ingest; 201 with its view (`id`, `status`, ...).
pub async fn create(
    Caller(who): Caller,
    manager: web::Data<IngestManager>,
    body: web::Json<NewIngest>,
) -> Result<HttpResponse, ApiError> {
    let view = manager.create(&who, body.into_inner()).await.map_err(api_error)?;
    Ok(HttpResponse::Created().json(view))
}

/// The ingests the caller may see: `{"ingests": [...]}`.
pub async fn list(Caller(who): Caller, manager: web::Data<IngestManager>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({"ingests": manager.list(&who)})))
}

/// One ingest with its status and counters.
pub async fn get(
    Caller(who): Caller,
    manager: web::Data<IngestManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(manager.get(&who, &id).map_err(api_error)?))
}

/// Changes a running ingest's `name`, `groups` or `record` in place; 200 with its view.
pub async fn update(
    Caller(who): Caller,
    manager: web::Data<IngestManager>,
    id: web::Path<String>,
    body: web::Json<IngestUpdate>,
) -> Result<HttpResponse, ApiError> {
    let view = manager.update(&who, &id, body.into_inner()).await.map_err(api_error)?;
    Ok(HttpResponse::Ok().json(view))
}

/// Stops and forgets an ingest.
pub async fn delete(
    Caller(who): Caller,
    manager: web::Data<IngestManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = manager.delete(&who, &id).await.map_err(api_error)?;
    Ok(HttpResponse::Ok().json(view))
}

/// The camera's latest picture as a JPEG (at most 640 px wide), decoded from its last
/// keyframe; `Cache-Control: no-store`. 503 `ingest_no_picture` when it has none to give.
pub async fn snapshot(
    Caller(who): Caller,
    manager: web::Data<IngestManager>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let keyframe = manager.snapshot(&who, &id).await.map_err(api_error)?;
    let jpeg = web::block(move || vod::transcode::poster_jpeg(&keyframe))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ingest_no_picture",
                format!("the camera's picture could not be decoded: {e}"),
            )
        })?;
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header(("Cache-Control", "no-store"))
        .body(jpeg))
}
