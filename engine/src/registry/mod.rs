//! The `Registry` actor: finds or starts the room of a group and supervises it. Rooms run on
//! the registry's arbiter under an actix `Supervisor`, so a room that panics is restarted with
//! the same address. The registry counts each room's connections and drops the room when the
//! last one leaves.

pub mod messages;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::{
    Actor, ActorFutureExt, Addr, ArbiterHandle, Context, Handler, Recipient, ResponseActFuture, ResponseFuture,
    Supervisor, WrapFuture,
};

use crate::error::EngineError;
use crate::ids::GroupId;
use crate::metrics::EngineMetrics;
use crate::room::messages::{Broadcast, CallActivity, Close, ConnId, Crash, Join, Leave, Refresh};
use crate::room::Room;
use crate::store::Store;
pub use messages::{
    CrashRoom, Deliver, FindRoom, GroupChanged, GroupDeleted, JoinRoom, LeaveRoom, ObserveCalls, RoomFor,
};

struct RoomEntry {
    addr: Addr<Room>,
    /// Connections and sessions holding the room; it is dropped when none is left.
    conns: HashSet<ConnId>,
}

/// Supervises the rooms of active groups.
pub struct Registry {
    store: Arc<dyn Store>,
    metrics: EngineMetrics,
    rooms: HashMap<GroupId, RoomEntry>,
    /// Told when a call starts or ends.
    observer: Option<Recipient<CallActivity>>,
}

impl Registry {
    /// A registry with no active rooms.
    pub fn new(store: Arc<dyn Store>, metrics: EngineMetrics) -> Registry {
        Registry {
            store,
            metrics,
            rooms: HashMap::new(),
            observer: None,
        }
    }

    fn room(&mut self, group: &GroupId, arbiter: &ArbiterHandle) -> &mut RoomEntry {
        self.rooms.entry(group.clone()).or_insert_with(|| {
            let (gid, store, metrics) = (group.clone(), self.store.clone(), self.metrics.clone());
            let observer = self.observer.clone();
            let addr = Supervisor::start_in_arbiter(arbiter, move |_| Room::new(gid, store, metrics, observer));
            RoomEntry {
                addr,
                conns: HashSet::new(),
            }
        })
    }

    fn leave(&mut self, group: &GroupId, conn: ConnId) {
        if let Some(entry) = self.rooms.get_mut(group) {
            entry.conns.remove(&conn);
            entry.addr.do_send(Leave { conn });
            if entry.conns.is_empty() {
                // Dropping the last address stops the room once its mailbox is drained.
                self.rooms.remove(group);
            }
        }
    }
}

/// Holds the rooms of `groups` on behalf of `holder` (a session id, see [`RoomFor`]); groups
/// whose room could not be had (the registry is gone: shutting down) are left out.
pub async fn hold_rooms(registry: Addr<Registry>, holder: u64, groups: Vec<GroupId>) -> Vec<(GroupId, Addr<Room>)> {
    let mut rooms = Vec::new();
    for group in groups {
        if let Ok(room) = registry
            .send(RoomFor {
                group: group.clone(),
                holder,
            })
            .await
        {
            rooms.push((group, room));
        }
    }
    rooms
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<ObserveCalls> for Registry {
    type Result = ();

    fn handle(&mut self, msg: ObserveCalls, _ctx: &mut Context<Self>) {
        self.observer = Some(msg.0);
    }
}

impl Handler<JoinRoom> for Registry {
    type Result = ResponseActFuture<Self, Result<crate::room::messages::JoinedRoom, EngineError>>;

    fn handle(&mut self, msg: JoinRoom, _ctx: &mut Context<Self>) -> Self::Result {
        // Rooms run on the registry's own arbiter.
        let entry = self.room(&msg.group, &actix::Arbiter::current());
        let conn = msg.conn.id;
        entry.conns.insert(conn);
        let addr = entry.addr.clone();
        let group = msg.group;
        Box::pin(
            async move {
                addr.send(Join { conn: msg.conn })
                    .await
                    .unwrap_or(Err(EngineError::ActorGone("room")))
            }
            .into_actor(self)
            .map(move |res, act, _ctx| {
                if res.is_err() {
                    act.leave(&group, conn);
                }
                res
            }),
        )
    }
}

impl Handler<RoomFor> for Registry {
    type Result = actix::MessageResult<RoomFor>;

    fn handle(&mut self, msg: RoomFor, _ctx: &mut Context<Self>) -> Self::Result {
        let entry = self.room(&msg.group, &actix::Arbiter::current());
        entry.conns.insert(msg.holder);
        actix::MessageResult(entry.addr.clone())
    }
}

impl Handler<FindRoom> for Registry {
    type Result = Option<Addr<Room>>;

    fn handle(&mut self, msg: FindRoom, _ctx: &mut Context<Self>) -> Self::Result {
        self.rooms.get(&msg.group).map(|e| e.addr.clone())
    }
}

impl Handler<LeaveRoom> for Registry {
    type Result = ();

    fn handle(&mut self, msg: LeaveRoom, _ctx: &mut Context<Self>) {
        self.leave(&msg.group, msg.conn);
    }
}

impl Handler<Deliver> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) {
        if let Some(entry) = self.rooms.get(&msg.group) {
            entry.addr.do_send(Broadcast { message: msg.message });
        }
    }
}

impl Handler<GroupChanged> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: GroupChanged, _ctx: &mut Context<Self>) -> Self::Result {
        let addr = self.rooms.get(&msg.group).map(|e| e.addr.clone());
        Box::pin(async move {
            if let Some(addr) = addr {
                // A room that is gone has nobody to tell.
                let _ = addr.send(Refresh).await;
            }
        })
    }
}

impl Handler<GroupDeleted> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: GroupDeleted, _ctx: &mut Context<Self>) -> Self::Result {
        let entry = self.rooms.remove(&msg.group);
        Box::pin(async move {
            if let Some(entry) = entry {
                let _ = entry.addr.send(Close).await;
            }
        })
    }
}

impl Handler<CrashRoom> for Registry {
    type Result = bool;

    fn handle(&mut self, msg: CrashRoom, _ctx: &mut Context<Self>) -> bool {
        match self.rooms.get(&msg.group) {
            Some(entry) => {
                entry.addr.do_send(Crash);
                true
            }
            None => false,
        }
    }
}
