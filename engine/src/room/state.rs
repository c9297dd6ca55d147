//! A room's live state: who is connected, with which permissions and media caps, and whose hand
//! is raised. Plain data, no I/O.

use std::collections::HashMap;

use super::messages::{ConnId, ConnInfo};
use crate::model::MediaCaps;
use crate::perms::Perms;

/// A connection in the room.
#[derive(Debug)]
pub struct Conn {
    pub info: ConnInfo,
    pub perms: Perms,
    /// The connection's effective media caps here (told to the client).
    pub media: MediaCaps,
}

/// The connections in a room, by id.
#[derive(Debug, Default)]
pub struct RoomState {
    pub conns: HashMap<ConnId, Conn>,
    /// Users whose hand is raised.
    pub hands: std::collections::BTreeSet<crate::ids::UserId>,
}

impl RoomState {
    /// Forgets `user`'s raised hand once none of their connections is left in the room.
    pub fn forget_hand_if_gone(&mut self, user: &crate::ids::UserId) {
        if !self.conns.values().any(|c| &c.info.principal.user == user) {
            self.hands.remove(user);
        }
    }
}
