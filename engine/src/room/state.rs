//! A room's live state: who is connected and with which permissions. Plain data, no I/O.

use std::collections::HashMap;

use super::messages::{ConnId, ConnInfo};
use crate::perms::Perms;

/// A connection in the room.
#[derive(Debug)]
pub struct Conn {
    pub info: ConnInfo,
    pub perms: Perms,
}

/// The connections in a room, by id.
#[derive(Debug, Default)]
pub struct RoomState {
    pub conns: HashMap<ConnId, Conn>,
}
