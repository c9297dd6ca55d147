//! The one place errors become HTTP: every failure is answered with the spec's shape
//! `{"error": {"code", "message"}}` and the status of its kind. Extractor failures (bad JSON,
//! oversize bodies, wrong content type, bad query) and responses the framework makes itself
//! (unknown route, wrong method) are rewritten into the same shape.

use std::fmt;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use engine::{EngineError, ErrorKind};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// An error with an explicit status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 401.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// 500; the detail is logged, not returned.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed; the failure was logged",
        )
    }

    fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(self.body())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
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
}

/// Maps JSON body extractor failures.
impl From<vod::VodError> for ApiError {
    fn from(e: vod::VodError) -> Self {
        use vod::VodError as V;
        match e {
            V::NotFound(m) => ApiError::not_found("not_found", m),
            V::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            V::Link(m) => ApiError::new(StatusCode::FORBIDDEN, "link_invalid", m),
            V::BadMedia(m) => ApiError::bad_request("bad_media", m),
            V::Unsupported(m) => ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media", m),
            V::ObjectStore(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "object_store_unavailable",
                format!("the object store is not reachable: {m}"),
            ),
            V::Engine(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let e = match &err {
        JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(de) if de.is_data() => {
            ApiError::bad_request("invalid_body", format!("the body does not fit this endpoint: {de}"))
        }
        JsonPayloadError::Deserialize(de) => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {de}"))
        }
        other => ApiError::bad_request("invalid_body", format!("the body could not be read: {other}")),
    };
    e.into()
}

/// Maps query-string extractor failures.
pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_query", format!("the query string is invalid: {err}")).into()
}

/// Rewrites any error response that is not already JSON into the spec's error shape.
pub fn ensure_json_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = match status {
        StatusCode::NOT_FOUND => "no such resource".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this resource".to_string(),
        s => s.canonical_reason().unwrap_or("error").to_string(),
    };
    let body = ApiError::new(status, code, message).body().to_string();
    let (req, mut res) = res.into_parts();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let res = res.set_body(BoxBody::new(body));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, res).map_into_right_body(),
    ))
}
