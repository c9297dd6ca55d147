//! Messages the [`super::Registry`] handles.

use actix::Message;

use crate::error::EngineError;
use crate::ids::GroupId;
use crate::room::messages::{ConnId, ConnInfo};

/// Put a connection into `group`'s room (starting the room if needed). Replies with the
/// connection's permissions there, or `Forbidden` / `GroupNotFound`.
#[derive(Message)]
#[rtype(result = "Result<crate::room::messages::JoinedRoom, EngineError>")]
pub struct JoinRoom {
    pub group: GroupId,
    pub conn: ConnInfo,
}

/// Take a connection out of `group`'s room; the room stops when its last connection leaves.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaveRoom {
    pub group: GroupId,
    pub conn: ConnId,
}

/// A chat message was stored in `group`: deliver it to the room, if the room is active.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub group: GroupId,
    pub message: crate::model::Message,
}

/// `group`'s settings or members changed in storage. Replies once the room has applied it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GroupChanged {
    pub group: GroupId,
}

/// `group` was deleted. Replies once its room has told everyone and stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GroupDeleted {
    pub group: GroupId,
}

/// Fault injection for tests: make `group`'s room panic. Replies `false` if it is not active.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CrashRoom {
    pub group: GroupId,
}

/// The room of `group` (started if needed), held on behalf of `holder` (a session id) until a
/// matching [`LeaveRoom`].
#[derive(Message)]
#[rtype(result = "actix::Addr<crate::room::Room>")]
pub struct RoomFor {
    pub group: GroupId,
    pub holder: u64,
}

/// The room of `group` if it is active (nothing is started).
#[derive(Message)]
#[rtype(result = "Option<actix::Addr<crate::room::Room>>")]
pub struct FindRoom {
    pub group: GroupId,
}

/// Makes `observer` the recipient of every room's [`crate::room::messages::CallActivity`]
/// (rooms started from now on).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ObserveCalls(pub actix::Recipient<crate::room::messages::CallActivity>);
