//! The HLS side's errors.

use thiserror::Error;

/// What can go wrong while segmenting, storing or serving HLS.
#[derive(Debug, Error)]
pub enum VodError {
    /// The input is not media we can read (an upload that is not a video, garbage frames).
    #[error("bad media: {0}")]
    BadMedia(String),
    /// A codec or container we do not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// FFmpeg failed.
    #[error("ffmpeg: {0}")]
    Ffmpeg(String),
    /// The object store failed (the caller spools and retries).
    #[error("object store: {0}")]
    ObjectStore(String),
    /// The embedded database failed.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// No such recording, segment or live program.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (already recording, not recording).
    #[error("{0}")]
    Conflict(String),
    /// A signed link that is expired or does not match.
    #[error("{0}")]
    Link(String),
    /// Local disk I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ffmpeg_next::Error> for VodError {
    fn from(e: ffmpeg_next::Error) -> Self {
        VodError::Ffmpeg(e.to_string())
    }
}
