//! Sending a chat message, the one path shared by REST and the realtime socket: check
//! `can_send`, store durably, then hand the stored message to the group's room for delivery.
//! The durable append (an fsync) runs on the blocking pool, so the worker that accepted the
//! request keeps serving its other connections meanwhile.

use std::sync::Arc;

use actix::Addr;
use time::OffsetDateTime;

use crate::access::Access;
use crate::error::EngineError;
use crate::ids::GroupId;
use crate::metrics::EngineMetrics;
use crate::model::{validate_text, Message};
use crate::perms::{Perm, Principal};
use crate::registry::{Deliver, Registry};
use crate::store::Store;

/// Stores `text` from `who` in `gid` and delivers it live. Returns the stored message.
pub async fn send_message(
    store: &Arc<dyn Store>,
    registry: &Addr<Registry>,
    metrics: &EngineMetrics,
    who: &Principal,
    gid: &GroupId,
    text: &str,
) -> Result<Message, EngineError> {
    validate_text(text)?;
    Access::load(store.as_ref(), who, gid)?.require(Perm::Send)?;
    let (store, gid_owned, from, text) = (store.clone(), gid.clone(), who.user.clone(), text.to_owned());
    let message =
        tokio::task::spawn_blocking(move || store.append_message(&gid_owned, &from, &text, OffsetDateTime::now_utc()))
            .await
            .map_err(|e| EngineError::Storage(format!("the append task failed: {e}")))??;
    metrics.messages.inc();
    registry
        .send(Deliver {
            group: gid.clone(),
            message: message.clone(),
        })
        .await
        .map_err(|_| EngineError::ActorGone("registry"))?;
    Ok(message)
}
