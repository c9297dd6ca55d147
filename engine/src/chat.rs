//! Sending a chat message, the one path shared by REST and the realtime socket: check
//! `can_send`, store durably, then hand the stored message to the group's room for delivery.

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
    store: &dyn Store,
    registry: &Addr<Registry>,
    metrics: &EngineMetrics,
    who: &Principal,
    gid: &GroupId,
    text: &str,
) -> Result<Message, EngineError> {
    validate_text(text)?;
    Access::load(store, who, gid)?.require(Perm::Send)?;
    let message = store.append_message(gid, &who.user, text, OffsetDateTime::now_utc())?;
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
