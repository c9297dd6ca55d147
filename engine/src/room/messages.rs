//! Messages a [`super::Room`] handles, and the notice it sends back to participants.

use std::sync::Arc;

use actix::{Message, Recipient};

use crate::error::EngineError;
use crate::ids::GroupId;
use crate::outbox::Outbox;
use crate::perms::{Perms, Principal};

/// Identifies one realtime connection for the server's lifetime.
pub type ConnId = u64;

/// What a room needs to know about a connection that joins it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub id: ConnId,
    pub principal: Arc<Principal>,
    pub outbox: Outbox,
    /// Where the room tells the connection's actor that it was removed.
    pub notices: Recipient<Removed>,
}

/// Add a connection to the room; replies with its effective permissions, or `Forbidden`.
#[derive(Message)]
#[rtype(result = "Result<Perms, EngineError>")]
pub struct Join {
    pub conn: ConnInfo,
}

/// Remove a connection (it left or closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub conn: ConnId,
}

/// Deliver a stored chat message to every connection with `can_receive`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Broadcast {
    pub message: crate::model::Message,
}

/// The group's settings or members changed in storage: re-resolve everyone's permissions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh;

/// The group was deleted: tell every connection and empty the room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// Fault injection for tests: panic inside a handler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// Sent to a participant actor: it is no longer in `group`'s room.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Removed {
    pub group: GroupId,
}
