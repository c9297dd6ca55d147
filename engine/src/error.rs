//! The engine's error type. The `api` crate maps [`ErrorKind`] to HTTP status and the spec's
//! error JSON in one place.

use thiserror::Error;

/// Broad classes of failure, each mapping to one HTTP status in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input (400).
    InvalidArgument,
    /// Authenticated but not permitted (403).
    PermissionDenied,
    /// No such thing (404).
    NotFound,
    /// Already exists or conflicts with current state (409).
    Conflict,
    /// A dependency (store) is down (503).
    Unavailable,
    /// A bug or an unexpected failure (500).
    Internal,
}

/// Errors from the engine's domain logic and storage.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("invalid {kind} {id:?}: ids are 1 to 64 characters from A-Z a-z 0-9 _ . -")]
    InvalidId { kind: &'static str, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("group {0} not found")]
    GroupNotFound(String),
    #[error("user {user} is not a member of group {group}")]
    MemberNotFound { group: String, user: String },
    #[error("group {0} already exists")]
    GroupExists(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the {0} actor is not running")]
    ActorGone(&'static str),
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("media engine failure: {0}")]
    Media(String),
    #[error("{0}")]
    NotFound(String),
}

impl EngineError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::InvalidId { .. } | EngineError::Invalid(_) => ErrorKind::InvalidArgument,
            EngineError::GroupNotFound(_) | EngineError::MemberNotFound { .. } | EngineError::NotFound(_) => {
                ErrorKind::NotFound
            }
            EngineError::InvalidSdp(_) => ErrorKind::InvalidArgument,
            EngineError::Media(_) => ErrorKind::Internal,
            EngineError::GroupExists(_) => ErrorKind::Conflict,
            EngineError::Forbidden(_) => ErrorKind::PermissionDenied,
            EngineError::Storage(_) => ErrorKind::Unavailable,
            EngineError::Corrupt { .. } | EngineError::ActorGone(_) => ErrorKind::Internal,
        }
    }

    /// A stable machine-readable code for the error JSON.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::InvalidId { .. } => "invalid_id",
            EngineError::Invalid(_) => "invalid_argument",
            EngineError::GroupNotFound(_) => "group_not_found",
            EngineError::MemberNotFound { .. } => "member_not_found",
            EngineError::GroupExists(_) => "group_exists",
            EngineError::Forbidden(_) => "forbidden",
            EngineError::Storage(_) => "storage_unavailable",
            EngineError::Corrupt { .. } => "corrupt_record",
            EngineError::ActorGone(_) | EngineError::Media(_) => "internal",
            EngineError::InvalidSdp(_) => "invalid_sdp",
            EngineError::NotFound(_) => "not_found",
        }
    }
}

impl From<sled::Error> for EngineError {
    fn from(e: sled::Error) -> Self {
        EngineError::Storage(e.to_string())
    }
}
