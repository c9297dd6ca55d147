//! The `Participant` actor: one per realtime WebSocket connection. It parses the client's
//! requests, joins and leaves rooms through the registry, sends chat messages, and writes
//! replies into the connection's [`Outbox`]. The socket itself is driven by the `api` crate.

pub mod messages;
mod rate;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};

use crate::chat::send_message;
use crate::error::EngineError;
use crate::ids::{GroupId, UserId};
use crate::outbox::Outbox;
use crate::perms::Principal;
use crate::protocol::{ClientMessage, LeaveReason, ServerMessage};
use crate::registry::{FindRoom, JoinRoom, LeaveRoom};
use crate::room::messages::{ConnId, ConnInfo, RaiseHand, Removed};
use crate::session::{
    start_publish, start_view_following, AcceptAnswer, LayersWanted, Renegotiate, SessionClosed, SessionDeps,
    SessionKind, SessionOffer, SetLayer, SetView,
};
pub use messages::{Disconnected, Inbound};
use rate::TokenBucket;

/// Requests per second a connection may make on average.
const REQUESTS_PER_SECOND: f64 = 50.0;
/// Requests a connection may make in a burst.
const REQUEST_BURST: f64 = 200.0;

/// One realtime connection.
pub struct Participant {
    id: ConnId,
    principal: Arc<Principal>,
    outbox: Outbox,
    deps: SessionDeps,
    groups: HashSet<GroupId>,
    /// WebRTC sessions started on this connection; they end with it.
    sessions: HashSet<String>,
    /// Server offers of sessions whose first answer has not been sent yet (sent right after it).
    early_offers: HashMap<String, String>,
    bucket: TokenBucket,
}

impl Participant {
    /// A participant for `principal` writing to `outbox`.
    pub fn new(principal: Principal, outbox: Outbox, deps: SessionDeps) -> Participant {
        Participant {
            id: crate::next_id(),
            principal: Arc::new(principal),
            outbox,
            deps,
            groups: HashSet::new(),
            sessions: HashSet::new(),
            early_offers: HashMap::new(),
            bucket: TokenBucket::new(REQUESTS_PER_SECOND, REQUEST_BURST, Instant::now()),
        }
    }

    fn reply(&self, msg: &ServerMessage) {
        self.outbox.push(msg.to_text());
    }

    fn error(&self, e: &EngineError, req: Option<String>) {
        self.reply(&ServerMessage::Error {
            code: e.code().into(),
            message: e.to_string(),
            req,
        });
    }

    fn join(&mut self, group: GroupId, req: Option<String>, ctx: &mut Context<Self>) {
        let conn = ConnInfo {
            id: self.id,
            principal: self.principal.clone(),
            outbox: self.outbox.clone(),
            notices: ctx.address().recipient(),
        };
        let fut = self.deps.registry.send(JoinRoom {
            group: group.clone(),
            conn,
        });
        // `wait` holds further requests until this one is answered, so replies keep request order.
        ctx.wait(fut.into_actor(self).map(move |res, act, _ctx| {
            match res.unwrap_or(Err(EngineError::ActorGone("registry"))) {
                Ok(joined) => {
                    act.groups.insert(group.clone());
                    act.reply(&ServerMessage::Joined {
                        group,
                        permissions: joined.perms,
                        participants: joined.present,
                        media: joined.media,
                        req,
                    });
                }
                Err(e) => act.error(&e, req),
            }
        }));
    }

    fn leave(&mut self, group: GroupId, req: Option<String>) {
        if self.groups.remove(&group) {
            self.deps.registry.do_send(LeaveRoom {
                group: group.clone(),
                conn: self.id,
            });
        }
        self.reply(&ServerMessage::Left {
            group,
            reason: LeaveReason::Left,
            req,
        });
    }

    fn send(&mut self, group: GroupId, text: String, req: Option<String>, ctx: &mut Context<Self>) {
        let (deps, who) = (self.deps.clone(), self.principal.clone());
        let fut = async move {
            send_message(&deps.store, &deps.registry, &deps.metrics, &who, &group, &text)
                .await
                .map(|m| (group, m))
        };
        ctx.wait(fut.into_actor(self).map(move |res, act, _ctx| match res {
            Ok((group, message)) => act.reply(&ServerMessage::MessageSent { group, message, req }),
            Err(e) => act.error(&e, req),
        }));
    }

    /// Raises or lowers this user's hand in a joined group and replies `hand_raised`.
    fn raise_hand(&mut self, group: GroupId, raised: bool, req: Option<String>, ctx: &mut Context<Self>) {
        if !self.groups.contains(&group) {
            return self.error(&EngineError::Invalid(format!("join group {group} first")), req);
        }
        let (registry, conn) = (self.deps.registry.clone(), self.id);
        let fut = async move {
            let room = registry
                .send(FindRoom { group: group.clone() })
                .await
                .map_err(|_| EngineError::ActorGone("registry"))?
                .ok_or_else(|| EngineError::Invalid(format!("join group {group} first")))?;
            let user = room
                .send(RaiseHand { conn, raised })
                .await
                .map_err(|_| EngineError::ActorGone("room"))??;
            Ok::<_, EngineError>((group, user))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, _ctx| match res {
            Ok((group, user)) => act.reply(&ServerMessage::HandRaised {
                group,
                user,
                raised,
                req,
            }),
            Err(e) => act.error(&e, req),
        }));
    }

    /// Starts a publish (`participant` is `None`) or a playback session and replies `answer`.
    fn negotiate(&mut self, target: Negotiation, sdp: String, req: Option<String>, ctx: &mut Context<Self>) {
        let (deps, who) = (self.deps.clone(), (*self.principal).clone());
        let notify = ctx.address().recipient();
        let offers = ctx.address().recipient();
        let layers = ctx.address().recipient();
        let fut = async move {
            match target {
                Negotiation::Publish(groups) => {
                    start_publish(&deps, who, groups, sdp, Some(notify), Some(layers)).await
                }
                Negotiation::Play(group, participant) => {
                    start_view_following(&deps, who, group, participant, sdp, Some(notify), Some(offers)).await
                }
            }
        };
        // Not `wait`: chat and other requests go on while the connection is being set up.
        ctx.spawn(fut.into_actor(self).map(move |res, act, _ctx| match res {
            Ok((session, sdp)) => {
                act.sessions.insert(session.clone());
                let early = act.early_offers.remove(&session);
                act.reply(&ServerMessage::Answer {
                    session: session.clone(),
                    sdp,
                    req,
                });
                if let Some(sdp) = early {
                    act.reply(&ServerMessage::Offer { session, sdp });
                }
            }
            Err(e) => act.error(&e, req),
        }));
    }

    /// The live session `session` of this connection, or the error to send.
    fn own_session(&self, session: &str) -> Result<SessionKind, EngineError> {
        self.sessions
            .contains(session)
            .then(|| self.deps.sessions.get(session))
            .flatten()
            .map(|e| e.kind)
            .ok_or_else(|| EngineError::NotFound(format!("no session {session} on this connection")))
    }

    /// One of this connection's playback sessions, for a request (`what`) only a viewer makes.
    fn own_playback(&self, session: &str, what: &str) -> Result<actix::Addr<crate::session::Viewer>, EngineError> {
        match self.own_session(session)? {
            SessionKind::View(v) => Ok(v),
            SessionKind::Publish(_) => Err(EngineError::Invalid(format!("session {session} is a publish; {what}"))),
        }
    }

    /// A client offer for one of this connection's publish sessions; replies `answer`.
    fn renegotiate(&mut self, session: String, sdp: String, req: Option<String>, ctx: &mut Context<Self>) {
        let publisher = match self.own_session(&session) {
            Ok(SessionKind::Publish(p)) => p,
            Ok(SessionKind::View(_)) => {
                let e = EngineError::Invalid(format!(
                    "session {session} is a playback; the server makes its offers (answer them with `answer`)"
                ));
                return self.error(&e, req);
            }
            Err(e) => return self.error(&e, req),
        };
        let fut = publisher.send(Renegotiate { offer: sdp });
        ctx.spawn(fut.into_actor(self).map(move |res, act, _ctx| {
            match res.unwrap_or(Err(EngineError::ActorGone("publisher"))) {
                Ok(sdp) => act.reply(&ServerMessage::Answer { session, sdp, req }),
                Err(e) => act.error(&e, req),
            }
        }));
    }

    /// The client's answer to a server offer of one of this connection's playback sessions.
    fn accept_answer(&mut self, session: String, sdp: String, req: Option<String>, ctx: &mut Context<Self>) {
        let viewer = match self.own_session(&session) {
            Ok(SessionKind::View(v)) => v,
            Ok(SessionKind::Publish(_)) => {
                let e = EngineError::Invalid(format!(
                    "session {session} is a publish; send new offers with `renegotiate`"
                ));
                return self.error(&e, req);
            }
            Err(e) => return self.error(&e, req),
        };
        let fut = viewer.send(AcceptAnswer { answer: sdp });
        ctx.spawn(fut.into_actor(self).map(move |res, act, _ctx| {
            if let Err(e) = res.unwrap_or(Err(EngineError::ActorGone("viewer"))) {
                act.error(&e, req);
            }
        }));
    }

    /// Pins (or unpins) a playback session's simulcast layer.
    fn set_layer(
        &mut self,
        session: String,
        track: Option<String>,
        rid: Option<String>,
        req: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let viewer = match self.own_playback(&session, "layers are picked by viewers") {
            Ok(v) => v,
            Err(e) => return self.error(&e, req),
        };
        let fut = viewer.send(SetLayer {
            track: track.clone(),
            rid: rid.clone(),
        });
        ctx.spawn(fut.into_actor(self).map(move |res, act, _ctx| {
            match res.unwrap_or(Err(EngineError::ActorGone("viewer"))) {
                Ok(()) => act.reply(&ServerMessage::LayerSet {
                    session,
                    track,
                    rid,
                    req,
                }),
                Err(e) => act.error(&e, req),
            }
        }));
    }

    /// Tells a playback session the size its video is shown at (adaptive stream).
    fn set_view(
        &mut self,
        session: String,
        track: Option<String>,
        size: (Option<u32>, Option<u32>),
        req: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let size = match crate::session::view_size(size.0, size.1) {
            Ok(size) => size,
            Err(e) => return self.error(&e, req),
        };
        let viewer = match self.own_playback(&session, "views are told by viewers") {
            Ok(v) => v,
            Err(e) => return self.error(&e, req),
        };
        let fut = viewer.send(SetView {
            track: track.clone(),
            size,
        });
        ctx.spawn(fut.into_actor(self).map(move |res, act, _ctx| {
            match res.unwrap_or(Err(EngineError::ActorGone("viewer"))) {
                Ok(()) => act.reply(&ServerMessage::ViewSet {
                    session,
                    track,
                    width: size.map(|s| s.0),
                    height: size.map(|s| s.1),
                    req,
                }),
                Err(e) => act.error(&e, req),
            }
        }));
    }

    fn end_session(&mut self, session: String, req: Option<String>) {
        if self.sessions.remove(&session) {
            self.deps.sessions.stop(&session, "ended by the client");
            self.reply(&ServerMessage::SessionEnded {
                session,
                reason: None,
                req,
            });
        } else {
            let e = EngineError::NotFound(format!("no session {session} on this connection"));
            self.error(&e, req);
        }
    }
}

/// What a `publish` or `subscribe` request sets up.
enum Negotiation {
    Publish(Vec<GroupId>),
    Play(GroupId, Option<UserId>),
}

impl Actor for Participant {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        self.deps.metrics.connections.inc();
        self.reply(&ServerMessage::Hello {
            user: self.principal.user.clone(),
            connection: self.id.to_string(),
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for group in self.groups.drain() {
            self.deps.registry.do_send(LeaveRoom { group, conn: self.id });
        }
        for session in self.sessions.drain() {
            self.deps.sessions.stop(&session, "the realtime connection closed");
        }
        self.deps.metrics.connections.dec();
    }
}

impl Handler<Inbound> for Participant {
    type Result = ();

    fn handle(&mut self, Inbound(text): Inbound, ctx: &mut Context<Self>) {
        if !self.bucket.take(Instant::now()) {
            return self.reply(&ServerMessage::Error {
                code: "rate_limited".into(),
                message: format!("more than {REQUESTS_PER_SECOND} requests per second; slow down"),
                req: None,
            });
        }
        match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Join { group, req }) => self.join(group, req, ctx),
            Ok(ClientMessage::Leave { group, req }) => self.leave(group, req),
            Ok(ClientMessage::SendMessage { group, text, req }) => self.send(group, text, req, ctx),
            Ok(ClientMessage::Ping { req }) => self.reply(&ServerMessage::Pong { req }),
            Ok(ClientMessage::Publish { groups, sdp, req }) => {
                self.negotiate(Negotiation::Publish(groups), sdp, req, ctx)
            }
            Ok(ClientMessage::Subscribe {
                group,
                participant,
                sdp,
                req,
            }) => self.negotiate(Negotiation::Play(group, participant), sdp, req, ctx),
            Ok(ClientMessage::EndSession { session, req }) => self.end_session(session, req),
            Ok(ClientMessage::RaiseHand { group, raised, req }) => self.raise_hand(group, raised, req, ctx),
            Ok(ClientMessage::Renegotiate { session, sdp, req }) => self.renegotiate(session, sdp, req, ctx),
            Ok(ClientMessage::Answer { session, sdp, req }) => self.accept_answer(session, sdp, req, ctx),
            Ok(ClientMessage::SetLayer {
                session,
                track,
                rid,
                req,
            }) => self.set_layer(session, track, rid, req, ctx),
            Ok(ClientMessage::SetView {
                session,
                track,
                width,
                height,
                req,
            }) => self.set_view(session, track, (width, height), req, ctx),
            Err(e) => self.reply(&ServerMessage::Error {
                code: "invalid_message".into(),
                message: format!("could not read that message: {e}"),
                req: None,
            }),
        }
    }
}

impl Handler<Disconnected> for Participant {
    type Result = ();

    fn handle(&mut self, _msg: Disconnected, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<LayersWanted> for Participant {
    type Result = ();

    fn handle(&mut self, msg: LayersWanted, _ctx: &mut Context<Self>) {
        if self.sessions.contains(&msg.session) {
            self.reply(&ServerMessage::LayersWanted {
                session: msg.session,
                track: msg.track,
                rids: msg.rids,
            });
        }
    }
}

impl Handler<SessionOffer> for Participant {
    type Result = ();

    fn handle(&mut self, msg: SessionOffer, _ctx: &mut Context<Self>) {
        if self.sessions.contains(&msg.session) {
            self.reply(&ServerMessage::Offer {
                session: msg.session,
                sdp: msg.sdp,
            });
        } else {
            // Its first answer is still on the way: the offer follows it.
            self.early_offers.insert(msg.session, msg.sdp);
        }
    }
}

impl Handler<SessionClosed> for Participant {
    type Result = ();

    fn handle(&mut self, msg: SessionClosed, _ctx: &mut Context<Self>) {
        self.early_offers.remove(&msg.session);
        // Sessions this connection ended itself were already answered.
        if self.sessions.remove(&msg.session) {
            let reason = Some(msg.reason.to_string());
            self.reply(&ServerMessage::SessionEnded {
                session: msg.session,
                reason,
                req: None,
            });
        }
    }
}

impl Handler<Removed> for Participant {
    type Result = ();

    fn handle(&mut self, msg: Removed, _ctx: &mut Context<Self>) {
        if self.groups.remove(&msg.group) {
            self.deps.registry.do_send(LeaveRoom {
                group: msg.group,
                conn: self.id,
            });
        }
    }
}
