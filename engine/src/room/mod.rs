//! The `Room` actor: one per active group. It owns who is connected and their effective
//! permissions (and raised hands), delivers chat messages, and applies permission changes live. Every handler runs
//! under a panic guard: a panic stops the actor, its `Supervisor` restarts it, and the restarted
//! room reloads permissions from storage and tells its members.

pub mod call;
pub mod messages;
mod state;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use actix::{Actor, ActorContext, Context, Handler, Supervised};
use tracing::{error, info, warn};

use crate::error::EngineError;
use crate::ids::GroupId;
use crate::metrics::EngineMetrics;
use crate::model::Group;
use crate::outbox::Pushed;
use crate::perms::Perms;
use crate::protocol::{LeaveReason, ServerMessage};
use crate::store::Store;
use messages::{Broadcast, Close, Crash, Join, Leave, Refresh, Removed};
use state::{Conn, RoomState};

/// The actor for one group's live state.
pub struct Room {
    group: GroupId,
    store: Arc<dyn Store>,
    metrics: EngineMetrics,
    state: RoomState,
    call: call::CallState,
    /// Told when the call starts or ends (automatic recording).
    observer: Option<actix::Recipient<messages::CallActivity>>,
}

impl Room {
    /// A room for `group`, empty until connections join.
    pub fn new(
        group: GroupId,
        store: Arc<dyn Store>,
        metrics: EngineMetrics,
        observer: Option<actix::Recipient<messages::CallActivity>>,
    ) -> Room {
        Room {
            group,
            store,
            metrics,
            state: RoomState::default(),
            call: call::CallState::default(),
            observer,
        }
    }

    /// Runs `f`; a panic inside it is logged and stops the actor so its supervisor restarts it.
    fn guarded<R>(&mut self, ctx: &mut Context<Self>, f: impl FnOnce(&mut Self) -> R) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(r) => {
                self.report();
                Some(r)
            }
            Err(_) => {
                error!(group = %self.group, "room panicked; restarting it");
                self.metrics.room_restarts.inc();
                ctx.stop();
                None
            }
        }
    }

    fn send_to(conn: &Conn, msg: &ServerMessage) {
        conn.info.outbox.push(msg.to_text());
    }

    /// Sends `msg` to every connection whose permissions pass `filter`, except `skip`.
    fn broadcast(&self, msg: &ServerMessage, filter: impl Fn(&Perms) -> bool, skip: Option<u64>) -> u64 {
        self.broadcast_where(msg, |c| filter(&c.perms), skip)
    }

    /// Sends `msg` to every connection that passes `filter`, except `skip`.
    fn broadcast_where(&self, msg: &ServerMessage, filter: impl Fn(&Conn) -> bool, skip: Option<u64>) -> u64 {
        let text = msg.to_text();
        let mut delivered = 0;
        for (id, conn) in &self.state.conns {
            if Some(*id) == skip || !filter(conn) {
                continue;
            }
            match conn.info.outbox.push(text.clone()) {
                Pushed::Queued => delivered += 1,
                Pushed::Overflowed => {
                    warn!(group = %self.group, user = %conn.info.principal.user, "connection cannot keep up; closing it");
                    self.metrics.dropped.inc();
                }
                Pushed::Closed => {}
            }
        }
        delivered
    }

    /// Publishes this room's sizes to the per-room gauges (after every guarded handler).
    fn report(&self) {
        let g = [self.group.as_str()];
        let m = &self.metrics;
        m.room_connections
            .with_label_values(&g)
            .set(self.state.conns.len() as i64);
        m.room_tracks
            .with_label_values(&g)
            .set(self.call.publications.len() as i64);
        m.room_viewers.with_label_values(&g).set(self.call.viewers.len() as i64);
    }

    /// Loads the group; `None` if it is gone, an error if storage failed.
    fn load_group(&self) -> Result<Option<Group>, EngineError> {
        self.store.group(&self.group)
    }

    fn resolve(&self, group: &Group, conn: &super::room::messages::ConnInfo) -> Result<Option<Perms>, EngineError> {
        let member = self.store.member(&self.group, &conn.principal.user)?;
        Ok(group.effective(&conn.principal, member.as_ref()))
    }

    /// `who`'s effective media caps here: the member's own over the group's media settings.
    fn media_of(&self, group: &Group, who: &crate::perms::Principal) -> crate::model::MediaCaps {
        let member = self.store.member(&self.group, &who.user).ok().flatten();
        let caps = crate::track::LegCaps::of(&group.settings.media, member.as_ref().map(|m| &m.media));
        crate::model::MediaCaps {
            max_resolution: caps.max_resolution,
            max_bitrate_kbps: caps.max_kbps,
        }
    }

    /// Removes a connection with `reason`, telling the client and its participant actor.
    fn evict(&mut self, id: u64, reason: LeaveReason) {
        if let Some(conn) = self.state.conns.remove(&id) {
            Self::send_to(
                &conn,
                &ServerMessage::Left {
                    group: self.group.clone(),
                    reason,
                    req: None,
                },
            );
            conn.info.notices.do_send(Removed {
                group: self.group.clone(),
            });
            let user = conn.info.principal.user.clone();
            self.state.forget_hand_if_gone(&user);
            self.broadcast(
                &ServerMessage::ParticipantLeft {
                    group: self.group.clone(),
                    user,
                },
                |p| p.can_list,
                None,
            );
        }
    }

    /// Re-resolves every connection's permissions from storage: evicts those who lost access,
    /// tells those whose permissions changed.
    fn refresh(&mut self) {
        let group = match self.load_group() {
            Ok(Some(g)) => g,
            Ok(None) => return self.close_all(LeaveReason::GroupDeleted),
            Err(e) => return warn!(group = %self.group, "refresh skipped: {e}"),
        };
        let mut evicted = Vec::new();
        let mut changed = Vec::new();
        let mut media_changed = Vec::new();
        for (id, conn) in &self.state.conns {
            let media = self.media_of(&group, &conn.info.principal);
            if media != conn.media {
                media_changed.push((*id, media));
            }
            match self.resolve(&group, &conn.info) {
                Ok(None) => evicted.push(*id),
                Ok(Some(p)) if p != conn.perms => changed.push((*id, p)),
                Ok(Some(_)) => {}
                Err(e) => warn!(group = %self.group, "refresh of one connection skipped: {e}"),
            }
        }
        for id in evicted {
            self.evict(id, LeaveReason::Removed);
        }
        for (id, media) in media_changed {
            if let Some(conn) = self.state.conns.get_mut(&id) {
                conn.media = media;
                Self::send_to(
                    conn,
                    &ServerMessage::MediaChanged {
                        group: self.group.clone(),
                        media,
                    },
                );
            }
        }
        let mut lowered = Vec::new();
        for (id, perms) in changed {
            if let Some(conn) = self.state.conns.get_mut(&id) {
                conn.perms = perms;
                // Given the floor: the hand that asked for it comes down.
                if perms.can_publish && self.state.hands.remove(&conn.info.principal.user) {
                    lowered.push(conn.info.principal.user.clone());
                }
                Self::send_to(
                    conn,
                    &ServerMessage::PermissionsChanged {
                        group: self.group.clone(),
                        permissions: perms,
                    },
                );
            }
        }
        for user in lowered {
            self.tell_hand(&user, false, None);
        }
        self.refresh_call(&group);
    }

    /// Tells the room's connections that list or moderate it, and `user`'s own, except `skip`,
    /// that `user`'s hand went up or down.
    fn tell_hand(&self, user: &crate::ids::UserId, raised: bool, skip: Option<u64>) {
        let msg = ServerMessage::HandRaised {
            group: self.group.clone(),
            user: user.clone(),
            raised,
            req: None,
        };
        self.broadcast_where(
            &msg,
            |c| c.perms.can_list || c.perms.can_moderate || &c.info.principal.user == user,
            skip,
        );
    }

    fn close_all(&mut self, reason: LeaveReason) {
        self.end_call();
        let ids: Vec<u64> = self.state.conns.keys().copied().collect();
        for id in ids {
            self.evict(id, reason);
        }
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        self.metrics.rooms.inc();
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.metrics.rooms.dec();
        let g = [self.group.as_str()];
        let m = &self.metrics;
        for gauge in [&m.room_connections, &m.room_tracks, &m.room_viewers] {
            let _ = gauge.remove_label_values(&g);
        }
        // What its tracks brought stays this room's (a restart enters them again).
        for p in &self.call.publications {
            p.track.leave_room(&self.group);
        }
    }
}

impl Supervised for Room {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        info!(group = %self.group, connections = self.state.conns.len(), "room restarted");
        // `stopped` ran for the failed instance and `started` will run again: keep the gauge true.
        // The call survived: its tracks count for this room again, and the failed instance's
        // timer went with it.
        for p in &self.call.publications {
            p.track.enter_room(&self.group);
        }
        self.call.call_timer = None;
        self.watch_call(ctx);
        self.refresh();
        let msg = ServerMessage::RoomRestarted {
            group: self.group.clone(),
        };
        self.broadcast(&msg, |_| true, None);
    }
}

impl Handler<Join> for Room {
    type Result = Result<messages::JoinedRoom, EngineError>;

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |room| {
            let group = room
                .load_group()?
                .ok_or_else(|| EngineError::GroupNotFound(room.group.to_string()))?;
            let perms = room
                .resolve(&group, &msg.conn)?
                .ok_or_else(|| EngineError::Forbidden(format!("group {} is closed to non-members", room.group)))?;
            let id = msg.conn.id;
            let joined = ServerMessage::ParticipantJoined {
                group: room.group.clone(),
                user: msg.conn.principal.user.clone(),
                name: msg.conn.principal.name.clone(),
            };
            let mut present: Vec<messages::Present> = Vec::new();
            if perms.can_list {
                for c in room.state.conns.values() {
                    let p = &c.info.principal;
                    if p.user != msg.conn.principal.user && !present.iter().any(|x| x.user == p.user) {
                        present.push(messages::Present {
                            user: p.user.clone(),
                            name: p.name.clone(),
                            hand_raised: room.state.hands.contains(&p.user),
                        });
                    }
                }
            }
            let media = room.media_of(&group, &msg.conn.principal);
            room.state.conns.insert(
                id,
                Conn {
                    info: msg.conn,
                    perms,
                    media,
                },
            );
            room.broadcast(&joined, |p| p.can_list, Some(id));
            Ok(messages::JoinedRoom { perms, present, media })
        })
        .unwrap_or(Err(EngineError::ActorGone("room")))
    }
}

impl Handler<messages::RaiseHand> for Room {
    type Result = Result<crate::ids::UserId, EngineError>;

    fn handle(&mut self, msg: messages::RaiseHand, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |room| {
            let user = room
                .state
                .conns
                .get(&msg.conn)
                .map(|c| c.info.principal.user.clone())
                .ok_or_else(|| EngineError::Invalid(format!("join group {} first", room.group)))?;
            let changed = if msg.raised {
                room.state.hands.insert(user.clone())
            } else {
                room.state.hands.remove(&user)
            };
            if changed {
                room.tell_hand(&user, msg.raised, Some(msg.conn));
            }
            Ok(user)
        })
        .unwrap_or(Err(EngineError::ActorGone("room")))
    }
}

impl Handler<Leave> for Room {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        self.guarded(ctx, |room| {
            if let Some(conn) = room.state.conns.remove(&msg.conn) {
                let user = conn.info.principal.user.clone();
                // Gone from the room: their hand goes with them (participant_left says so).
                room.state.forget_hand_if_gone(&user);
                room.broadcast(
                    &ServerMessage::ParticipantLeft {
                        group: room.group.clone(),
                        user,
                    },
                    |p| p.can_list,
                    None,
                );
            }
        });
    }
}

impl Handler<Broadcast> for Room {
    type Result = ();

    fn handle(&mut self, msg: Broadcast, ctx: &mut Context<Self>) {
        self.guarded(ctx, |room| {
            let event = ServerMessage::Message {
                group: room.group.clone(),
                message: msg.message,
            };
            let n = room.broadcast(&event, |p| p.can_receive, None);
            room.metrics.deliveries.inc_by(n);
        });
    }
}

impl Handler<Refresh> for Room {
    type Result = ();

    fn handle(&mut self, _msg: Refresh, ctx: &mut Context<Self>) {
        self.guarded(ctx, Room::refresh);
    }
}

impl Handler<Close> for Room {
    type Result = ();

    fn handle(&mut self, _msg: Close, ctx: &mut Context<Self>) {
        self.guarded(ctx, |room| room.close_all(LeaveReason::GroupDeleted));
    }
}

impl Handler<Crash> for Room {
    type Result = ();

    fn handle(&mut self, _msg: Crash, ctx: &mut Context<Self>) {
        self.guarded(ctx, |room| panic!("fault injected into room {}", room.group));
    }
}
