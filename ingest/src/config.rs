//! The `[ingest]` section of the server configuration.

use serde::{Deserialize, Serialize};

/// RTSP ingest settings (see `assets/fanfare.example.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Whether cameras may be on non-loopback addresses. `false` restricts sources to
    /// 127.0.0.0/8, ::1 and names resolving only to those.
    pub allow_remote: bool,
    /// Seconds allowed for TCP connect (+ TLS handshake for `rtsps`) + DESCRIBE + SETUP + PLAY.
    pub connect_timeout_s: u64,
    /// A session that delivers no frame for this many seconds is dropped and retried.
    pub read_timeout_s: u64,
    /// First retry delay, in milliseconds (doubles per failure, jittered).
    pub backoff_min_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Most ingests the server runs at once.
    pub max_ingests: usize,
    /// An `on_demand` camera is disconnected this many seconds after its last reader left.
    pub on_demand_close_after_s: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            allow_remote: true,
            connect_timeout_s: 10,
            read_timeout_s: 10,
            backoff_min_ms: 500,
            backoff_max_ms: 30_000,
            max_ingests: 64,
            on_demand_close_after_s: 10,
        }
    }
}

impl IngestConfig {
    /// Checks the values; the error names the offending key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, v, max) in [
            ("ingest.connect_timeout_s", self.connect_timeout_s, 300),
            ("ingest.read_timeout_s", self.read_timeout_s, 300),
            ("ingest.backoff_min_ms", self.backoff_min_ms, 600_000),
            ("ingest.backoff_max_ms", self.backoff_max_ms, 3_600_000),
            ("ingest.on_demand_close_after_s", self.on_demand_close_after_s, 3_600),
        ] {
            if v == 0 || v > max {
                return Err((key, format!("must be between 1 and {max}, got {v}")));
            }
        }
        if self.backoff_min_ms > self.backoff_max_ms {
            return Err(("ingest.backoff_min_ms", "must not exceed ingest.backoff_max_ms".into()));
        }
        if self.max_ingests == 0 || self.max_ingests > 10_000 {
            return Err(("ingest.max_ingests", "must be between 1 and 10000".into()));
        }
        Ok(())
    }
}
