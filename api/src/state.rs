//! What every handler shares: storage, the registry actor, the token codec, metrics, config.

use std::sync::Arc;

use actix::Addr;
use engine::metrics::EngineMetrics;
use engine::registry::Registry;
use engine::session::SessionDeps;
use engine::store::Store;

use crate::config::Config;
use crate::tokens::TokenCodec;

/// Shared server state, cloned into each worker.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub registry: Addr<Registry>,
    pub tokens: Arc<TokenCodec>,
    pub metrics: EngineMetrics,
    pub prometheus: prometheus::Registry,
    pub config: Arc<Config>,
    /// The WebRTC media plane and live sessions.
    pub rtc: SessionDeps,
    /// Live HLS, recordings and uploads.
    pub vod: vod::Vod,
}

impl AppState {
    /// The caller's standing in group `gid` (404 if there is no such group).
    pub fn access(
        &self,
        who: &engine::perms::Principal,
        gid: &engine::ids::GroupId,
    ) -> Result<engine::access::Access, crate::error::ApiError> {
        Ok(engine::access::Access::load(self.store.as_ref(), who, gid)?)
    }
}
