//! The ingest crate's error type. The API maps [`IngestError::kind`] to an HTTP status and
//! [`IngestError::code`] to the error JSON's `code`. Messages never carry URL credentials.

use engine::{EngineError, ErrorKind};
use thiserror::Error;

/// Everything that can go wrong creating, running or deleting an ingest.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The source URL is malformed, uses another scheme, or has no host.
    #[error("invalid source url: {0}")]
    InvalidUrl(String),
    /// The source address is refused by the configuration (`ingest.allow_remote = false`).
    #[error("source host {host} is not allowed: {reason}")]
    HostNotAllowed { host: String, reason: String },
    /// Any other invalid field of the request.
    #[error("{0}")]
    Invalid(String),
    /// A `PATCH` named fields that are fixed for the ingest's life (the camera connection).
    #[error("{} cannot be changed on an existing ingest: delete it and create it again", .0.join(", "))]
    Immutable(Vec<&'static str>),
    /// No such ingest (or not visible to the caller).
    #[error("ingest {0} not found")]
    NotFound(String),
    /// The server already runs as many ingests as `ingest.max_ingests` allows.
    #[error("the server already runs {0} ingests (ingest.max_ingests)")]
    TooMany(usize),
    /// The camera could not be reached or misbehaved (`redacted` URL in the message).
    #[error("camera {url}: {message}")]
    Source { url: String, message: String },
    /// The camera has no picture to show (no video track, or none came in time).
    #[error("{0}")]
    NoPicture(String),
    /// Storage or an engine actor failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl IngestError {
    /// The class of this error (decides the HTTP status).
    pub fn kind(&self) -> ErrorKind {
        match self {
            IngestError::InvalidUrl(_)
            | IngestError::HostNotAllowed { .. }
            | IngestError::Invalid(_)
            | IngestError::Immutable(_) => ErrorKind::InvalidArgument,
            IngestError::NotFound(_) => ErrorKind::NotFound,
            IngestError::TooMany(_) => ErrorKind::Conflict,
            IngestError::Source { .. } | IngestError::NoPicture(_) => ErrorKind::Unavailable,
            IngestError::Engine(e) => e.kind(),
        }
    }

    /// A stable machine-readable code for the error JSON.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::InvalidUrl(_) => "ingest_invalid_url",
            IngestError::HostNotAllowed { .. } => "ingest_host_not_allowed",
            IngestError::Invalid(_) => "invalid_argument",
            IngestError::Immutable(_) => "ingest_field_immutable",
            IngestError::NotFound(_) => "ingest_not_found",
            IngestError::TooMany(_) => "ingest_limit_reached",
            IngestError::Source { .. } => "ingest_source_failed",
            IngestError::NoPicture(_) => "ingest_no_picture",
            IngestError::Engine(e) => e.code(),
        }
    }
}
