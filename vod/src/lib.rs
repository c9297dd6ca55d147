//! Fanfare's HLS side: RTP from live tracks turned into frames ([`depack`]), cut on keyframes
//! into MPEG-TS segments and parts ([`segment`], muxed with FFmpeg; audio made AAC by
//! [`transcode`]), uploads converted to the same form ([`upload`]), recordings kept in the
//! object store with their index in the embedded database, and live low-latency HLS served
//! from memory.

pub mod auto_record;
pub mod decode_order;
pub mod depack;
pub mod error;
pub mod frame;
pub mod level_meter;
pub mod live;
pub mod metrics;
pub mod program;
pub mod recordings;
pub mod scale;
pub mod segment;
pub mod service;
pub mod signing;
pub mod storage;
pub mod transcode;
pub mod upload;

pub use error::VodError;
pub use service::{Vod, VodConfig};
