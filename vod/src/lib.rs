//! Fanfare's HLS side: RTP from live tracks turned into frames ([`depack`]), cut on keyframes
//! into MPEG-TS segments and parts ([`segment`], muxed with FFmpeg; audio made AAC by
//! [`transcode`]), uploads converted to the same form ([`upload`]), recordings kept in the
//! object store with their index in the embedded database, and live low-latency HLS served
//! from memory.

pub mod depack;
pub mod error;
pub mod frame;
pub mod segment;
pub mod transcode;
pub mod upload;

pub use error::VodError;
