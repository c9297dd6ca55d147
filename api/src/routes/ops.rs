//! Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document.

use actix_web::{web, HttpResponse};
use prometheus::{Encoder, TextEncoder};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /readyz`: storage answers; 503 otherwise.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.store.check()?;
    // A down object store is reported (503) but loses nothing: segments wait in the spool.
    if let Err(e) = state.vod.check().await {
        return Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "object_store_unavailable",
            format!("the object store is not reachable (segments are kept locally meanwhile): {e}"),
        ));
    }
    Ok(HttpResponse::Ok().json(json!({ "status": "ready", "store": "ok", "object_store": "ok" })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    encoder
        .encode(&state.prometheus.gather(), &mut buf)
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type(encoder.format_type()).body(buf))
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}
