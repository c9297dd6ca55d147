//! Fanfare's RTSP camera ingest. Each camera is an [`IngestSession`] actor: a retina RTSP
//! session (re-established with backoff when it drops) whose video and audio frames are
//! repacketized into RTP and pushed into [`engine::track::Fanout`]s, published into each group
//! call as participant `ingest-{id}` with source `ingest`. The [`IngestManager`] stores ingests,
//! restarts them at boot, changes running ones in place, and answers the HTTP routes.
//! `rtsps://` cameras are reached through a per-connection TLS bridge ([`tls`]), and cameras
//! with `"transport": "http"` through a per-connection RTSP-over-HTTP tunnel
//! ([`http_tunnel`]).

pub mod backoff;
pub mod config;
pub mod error;
pub mod http_tunnel;
pub mod manager;
pub mod model;
pub mod packetize;
pub mod session;
pub mod source;
pub mod status;
pub mod tls;

pub use config::IngestConfig;
pub use error::IngestError;
pub use manager::{IngestDeps, IngestManager, IngestRecorder};
pub use model::{IngestRecord, IngestState, IngestUpdate, IngestView, NewIngest, RtspTransport};
pub use session::{IngestSession, IngestTracks};
