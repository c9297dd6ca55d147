//! The `Publisher` actor: one WHIP publish. It owns the peer connection, turns each incoming
//! track into a [`Fanout`], and publishes every track into each group of its fan-out. Groups
//! can change while live; a room that revokes `can_publish` takes its group away; the session
//! ends when no group is left, when the client deletes it, or when the connection drops. A
//! socket publish's connection also hears which simulcast layers of each video track anyone
//! receives (dynacast, `LayersWanted`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Recipient, ResponseActFuture, WrapFuture,
};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit};

use super::{
    AddCandidates, LayersWanted, Negotiate, Renegotiate, SessionClosed, SessionDeps, SessionEntry, SessionKind,
    Sessions, SetGroups,
};
use crate::error::EngineError;
use crate::ids::GroupId;
use crate::media::{cap_video_bitrate, measure_rtt, Media, Peer};
use crate::metrics::EngineMetrics;
use crate::perms::Principal;
use crate::registry::{hold_rooms, LeaveRoom, Registry, RoomFor};
use crate::room::messages::{AnnouncePublish, PublishTrack, Revoked, StopSession, UnpublishSession, UnpublishTracks};
use crate::room::Room;
use crate::track::audio_level::AUDIO_LEVEL_URI;
use crate::track::{Fanout, LayersListener, MediaKind, Source, Track, TrackInfo, Upstream};

/// A track of this session arrived and is being read (with the client's track id).
#[derive(actix::Message)]
#[rtype(result = "()")]
struct TrackArrived(Arc<Fanout>, String);

/// One WHIP publish.
pub struct Publisher {
    id: u64,
    sid: String,
    principal: Arc<Principal>,
    /// The fan-out: each group and its room.
    rooms: BTreeMap<GroupId, Option<Addr<Room>>>,
    tracks: Vec<Arc<Fanout>>,
    /// The client's track id (`a=msid`) of each track, by server track id.
    client_ids: std::collections::HashMap<String, String>,
    /// The video bitrate cap announced in answers.
    max_video_kbps: Option<u32>,
    /// A client renegotiation is being answered (one at a time).
    renegotiating: bool,
    /// Tracks the client's offer announced.
    expected_tracks: usize,
    /// The id of the audio level header extension on this connection (0: the client sends
    /// none), from the latest answer.
    level_ext: u8,
    pc: Option<Arc<dyn PeerConnection>>,
    /// The connection's round trip (ms; 0: not measured yet), shared with its tracks.
    uplink_rtt: Arc<AtomicU32>,
    media: Media,
    registry: Addr<Registry>,
    sessions: Sessions,
    metrics: EngineMetrics,
    /// Told when the session ends (the realtime connection that started it, if any).
    notify: Option<Recipient<SessionClosed>>,
    /// Told which simulcast layers of each video track anyone receives (the same connection).
    layers_to: Option<Recipient<LayersWanted>>,
    /// Why the session ended, for `notify`.
    end_reason: &'static str,
}

impl Publisher {
    /// Starts a publish session for `principal` into `groups` and registers it as `sid`.
    /// Send it [`Negotiate`] next.
    pub fn launch(
        sid: String,
        principal: Principal,
        groups: Vec<GroupId>,
        deps: SessionDeps,
        notify: Option<Recipient<SessionClosed>>,
        layers_to: Option<Recipient<LayersWanted>>,
    ) -> Addr<Publisher> {
        let SessionDeps {
            media,
            registry,
            sessions,
            metrics,
            ..
        } = deps;
        let owner = principal.user.clone();
        let addr = Publisher {
            id: crate::next_id(),
            sid: sid.clone(),
            principal: Arc::new(principal),
            rooms: groups.into_iter().map(|g| (g, None)).collect(),
            tracks: Vec::new(),
            client_ids: std::collections::HashMap::new(),
            max_video_kbps: None,
            renegotiating: false,
            expected_tracks: 0,
            level_ext: 0,
            pc: None,
            uplink_rtt: Arc::new(AtomicU32::new(0)),
            media,
            registry,
            sessions: sessions.clone(),
            metrics,
            notify,
            layers_to,
            end_reason: "the session ended",
        }
        .start();
        sessions.insert(
            sid,
            SessionEntry {
                owner,
                kind: SessionKind::Publish(addr.clone()),
            },
        );
        addr
    }

    /// Publishes `track` into `group`'s room; a refusal removes the group from the fan-out.
    fn publish_into(&self, group: GroupId, room: Addr<Room>, track: Arc<Fanout>, ctx: &mut Context<Self>) {
        let msg = PublishTrack {
            session: self.id,
            principal: self.principal.clone(),
            track,
            expected: self.expected_tracks,
            revoke: ctx.address().recipient(),
        };
        ctx.spawn(room.send(msg).into_actor(self).map(move |res, act, ctx| match res {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                tracing::info!(session = %act.sid, %group, "track kind is off in this group; not published")
            }
            _ => act.drop_group(&group, ctx),
        }));
    }

    fn drop_group(&mut self, group: &GroupId, ctx: &mut Context<Self>) {
        if let Some(room) = self.rooms.remove(group) {
            if let Some(room) = room {
                room.do_send(UnpublishSession { session: self.id });
            }
            self.registry.do_send(LeaveRoom {
                group: group.clone(),
                conn: self.id,
            });
        }
        if self.rooms.is_empty() {
            ctx.stop();
        }
    }
}

/// Reads the client's tracks as they arrive: each becomes a fan-out, announced to the actor,
/// with a reader task on the media runtime.
async fn intake(
    mut tracks: tokio::sync::mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    publisher: Addr<Publisher>,
    principal: Arc<Principal>,
    metrics: EngineMetrics,
) {
    while let Some(remote) = tracks.recv().await {
        let Some(ssrc) = remote.ssrcs().await.first().copied() else {
            continue;
        };
        let kind = match remote.kind().await {
            RtpCodecKind::Audio => MediaKind::Audio,
            RtpCodecKind::Video => MediaKind::Video,
            _ => continue,
        };
        let Some(codec) = remote.codec(ssrc).await else {
            continue;
        };
        let (track_id, stream_id) = (remote.track_id().await, remote.stream_id().await);
        let info = TrackInfo {
            id: format!("TR_{}", crate::next_id()),
            kind,
            source: Source::guess(kind, &[&track_id, &stream_id]),
            codec,
            publisher: principal.user.clone(),
            stands_in_for: None,
        };
        let fanout = Fanout::new(info, Upstream::Rtc { remote, ssrc }, metrics.clone());
        publisher.do_send(TrackArrived(fanout.clone(), track_id.to_string()));
        tokio::spawn(fanout.run_reader());
    }
}

impl Actor for Publisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.rtc_sessions.with_label_values(&["publish"]).inc();
        // Hold each group's room before anything else is handled.
        let (registry, id) = (self.registry.clone(), self.id);
        let groups: Vec<GroupId> = self.rooms.keys().cloned().collect();
        let fut = hold_rooms(registry, id, groups);
        ctx.wait(fut.into_actor(self).map(|rooms, act, _| {
            for (group, room) in rooms {
                act.rooms.insert(group, Some(room));
            }
        }));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.metrics.rtc_sessions.with_label_values(&["publish"]).dec();
        self.sessions.remove(&self.sid);
        if let Some(notify) = self.notify.take() {
            notify.do_send(SessionClosed {
                session: self.sid.clone(),
                reason: self.end_reason,
            });
        }
        for (group, room) in std::mem::take(&mut self.rooms) {
            if let Some(room) = room {
                room.do_send(UnpublishSession { session: self.id });
            }
            self.registry.do_send(LeaveRoom { group, conn: self.id });
        }
        if let Some(pc) = self.pc.take() {
            self.media.spawn(async move {
                let _ = pc.close().await;
            });
        }
        tracing::info!(session = %self.sid, user = %self.principal.user, "publish session ended");
    }
}

impl Handler<Negotiate> for Publisher {
    type Result = ResponseActFuture<Self, Result<String, EngineError>>;

    fn handle(&mut self, msg: Negotiate, ctx: &mut Context<Self>) -> Self::Result {
        self.expected_tracks = crate::media::check_offer(&msg.offer).map(|o| o.sending).unwrap_or(0);
        self.max_video_kbps = msg.max_video_kbps;
        let (media, addr, principal) = (self.media.clone(), ctx.address(), self.principal.clone());
        let metrics = self.metrics.clone();
        let runner = self.media.clone();
        let rtt = self.uplink_rtt.clone();
        let fut = async move {
            runner
                .run(async move {
                    let mut peer = Peer::new(&media, &metrics).await?;
                    let answer = match peer.answer(msg.offer).await {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = peer.pc.close().await;
                            return Err(e);
                        }
                    };
                    if let Some(tracks) = peer.take_tracks() {
                        tokio::spawn(intake(tracks, addr.clone(), principal, metrics.clone()));
                    }
                    tokio::spawn(super::stop_when_dropped(peer.state.clone(), addr.recipient()));
                    tokio::spawn(measure_rtt(Arc::downgrade(&peer.pc), peer.state.clone(), rtt, metrics));
                    let answer = match msg.max_video_kbps {
                        Some(kbps) => cap_video_bitrate(&answer, kbps),
                        None => answer,
                    };
                    Ok((peer.pc.clone(), answer))
                })
                .await
        };
        Box::pin(fut.into_actor(self).map(|res, act, ctx| match res.and_then(|r| r) {
            Ok((pc, answer)) => {
                act.pc = Some(pc);
                act.learn_level_extension(&answer);
                for room in act.rooms.values().flatten() {
                    room.do_send(AnnouncePublish {
                        session: act.id,
                        principal: act.principal.clone(),
                        expected: act.expected_tracks,
                    });
                }
                Ok(answer)
            }
            Err(e) => {
                ctx.stop();
                Err(e)
            }
        }))
    }
}

impl Handler<TrackArrived> for Publisher {
    type Result = ();

    fn handle(&mut self, TrackArrived(track, client_id): TrackArrived, ctx: &mut Context<Self>) {
        tracing::info!(session = %self.sid, track = %track.info.id, codec = %track.info.codec.mime_type, "track published");
        self.client_ids.insert(track.info.id.clone(), client_id.clone());
        if track.info.kind == MediaKind::Audio {
            track.levels.set_extension(self.level_ext);
        }
        // The track's control (subscribers' layers, keyframe requests); it stops with the track.
        // A socket publisher's client hears which of its video layers anyone receives.
        let layers = self
            .layers_to
            .clone()
            .filter(|_| track.info.kind == MediaKind::Video)
            .map(|to| {
                let session = self.sid.clone();
                let tell: LayersListener = Box::new(move |rids| {
                    to.do_send(LayersWanted {
                        session: session.clone(),
                        track: client_id.clone(),
                        rids,
                    })
                });
                tell
            });
        Track::launch(track.clone(), layers);
        track.share_uplink_rtt(self.uplink_rtt.clone());
        self.tracks.push(track.clone());
        let rooms: Vec<(GroupId, Addr<Room>)> = self
            .rooms
            .iter()
            .filter_map(|(g, r)| r.clone().map(|r| (g.clone(), r)))
            .collect();
        for (group, room) in rooms {
            self.publish_into(group, room, track.clone(), ctx);
        }
    }
}

impl Handler<Renegotiate> for Publisher {
    type Result = ResponseActFuture<Self, Result<String, EngineError>>;

    /// New sending sections' tracks arrive through `intake` and are published like the first
    /// ones; tracks whose sections stopped sending (or went) are unpublished here.
    fn handle(&mut self, msg: Renegotiate, _ctx: &mut Context<Self>) -> Self::Result {
        let refuse = |e: EngineError| -> Self::Result { Box::pin(actix::fut::ready(Err(e))) };
        if let Err(e) = crate::media::check_offer(&msg.offer) {
            return refuse(e);
        }
        let Some(pc) = self.pc.clone() else {
            return refuse(EngineError::Invalid("the session has not been negotiated yet".into()));
        };
        if self.renegotiating {
            return refuse(EngineError::Invalid(
                "a renegotiation of this session is already in progress".into(),
            ));
        }
        self.renegotiating = true;
        let live = crate::media::sending_track_ids(&msg.offer);
        let (media, kbps) = (self.media.clone(), self.max_video_kbps);
        let fut = async move {
            let runner = media.clone();
            runner
                .run(async move {
                    let answer = crate::media::reanswer(&pc, &media, msg.offer).await?;
                    Ok::<_, EngineError>(match kbps {
                        Some(kbps) => cap_video_bitrate(&answer, kbps),
                        None => answer,
                    })
                })
                .await
        };
        Box::pin(fut.into_actor(self).map(move |res, act, _ctx| {
            act.renegotiating = false;
            let answer = res.and_then(|r| r)?;
            act.learn_level_extension(&answer);
            if let Some(live) = live {
                act.unpublish_gone(&live);
            }
            Ok(answer)
        }))
    }
}

impl Publisher {
    /// Notes the audio level extension's id in `answer` and tells the audio tracks, which
    /// count their levels for the rooms' active speakers.
    fn learn_level_extension(&mut self, answer: &str) {
        self.level_ext = crate::media::extension_id(answer, AUDIO_LEVEL_URI).unwrap_or(0);
        for t in self.tracks.iter().filter(|t| t.info.kind == MediaKind::Audio) {
            t.levels.set_extension(self.level_ext);
        }
    }

    /// Unpublishes the tracks whose client track id is not in `live` (the latest offer's
    /// sending sections).
    fn unpublish_gone(&mut self, live: &[String]) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.tracks).into_iter().partition(|t| {
            self.client_ids
                .get(&t.info.id)
                .is_some_and(|client| !live.iter().any(|l| l == client))
        });
        self.tracks = kept;
        if gone.is_empty() {
            return;
        }
        let ids: Vec<String> = gone.iter().map(|t| t.info.id.clone()).collect();
        tracing::info!(session = %self.sid, tracks = ?ids, "tracks renegotiated away; unpublishing");
        for room in self.rooms.values().flatten() {
            room.do_send(UnpublishTracks {
                session: self.id,
                tracks: ids.clone(),
            });
        }
        for track in gone {
            self.client_ids.remove(&track.info.id);
            // Ends every leg (WHEP viewers' too) and the track's control actor.
            track.close();
        }
    }
}

impl Handler<SetGroups> for Publisher {
    type Result = ResponseActFuture<Self, Result<Vec<GroupId>, EngineError>>;

    fn handle(&mut self, msg: SetGroups, ctx: &mut Context<Self>) -> Self::Result {
        let removed: Vec<GroupId> = self.rooms.keys().filter(|g| !msg.groups.contains(g)).cloned().collect();
        for group in &removed {
            if let Some(Some(room)) = self.rooms.remove(group) {
                room.do_send(UnpublishSession { session: self.id });
            }
            self.registry.do_send(LeaveRoom {
                group: group.clone(),
                conn: self.id,
            });
        }
        let added: Vec<GroupId> = msg
            .groups
            .iter()
            .filter(|g| !self.rooms.contains_key(g))
            .cloned()
            .collect();
        let (registry, id) = (self.registry.clone(), self.id);
        let fut = async move {
            let mut rooms = Vec::new();
            for group in added {
                let room = registry
                    .send(RoomFor {
                        group: group.clone(),
                        holder: id,
                    })
                    .await;
                rooms.push((group, room.map_err(|_| EngineError::ActorGone("registry"))?));
            }
            Ok::<_, EngineError>(rooms)
        };
        let _ = ctx;
        Box::pin(fut.into_actor(self).map(|res, act, ctx| {
            for (group, room) in res? {
                act.rooms.insert(group.clone(), Some(room.clone()));
                for track in act.tracks.clone() {
                    act.publish_into(group.clone(), room.clone(), track, ctx);
                }
            }
            if act.rooms.is_empty() {
                ctx.stop();
            }
            Ok(act.rooms.keys().cloned().collect())
        }))
    }
}

impl Handler<Revoked> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: Revoked, ctx: &mut Context<Self>) {
        tracing::info!(session = %self.sid, group = %msg.group, "publishing revoked in group");
        self.end_reason = "can_publish was revoked in every group of the session";
        // The room already removed the tracks; only let go of it.
        if self.rooms.remove(&msg.group).is_some() {
            self.registry.do_send(LeaveRoom {
                group: msg.group,
                conn: self.id,
            });
        }
        if self.rooms.is_empty() {
            ctx.stop();
        }
    }
}

impl Handler<StopSession> for Publisher {
    type Result = ();

    fn handle(&mut self, msg: StopSession, ctx: &mut Context<Self>) {
        tracing::info!(session = %self.sid, reason = msg.reason, "stopping publish session");
        self.end_reason = msg.reason;
        ctx.stop();
    }
}

impl Handler<AddCandidates> for Publisher {
    type Result = ResponseActFuture<Self, Result<usize, EngineError>>;

    fn handle(&mut self, msg: AddCandidates, _ctx: &mut Context<Self>) -> Self::Result {
        let (pc, media) = (self.pc.clone(), self.media.clone());
        let fut = async move { media.run(add_candidates(pc, msg.candidates)).await };
        Box::pin(fut.into_actor(self).map(|res, _, _| res.and_then(|r| r)))
    }
}

/// Adds trickled candidates to `pc`.
pub(super) async fn add_candidates(
    pc: Option<Arc<dyn PeerConnection>>,
    lines: Vec<String>,
) -> Result<usize, EngineError> {
    let pc = pc.ok_or_else(|| EngineError::Invalid("the session has not been negotiated".into()))?;
    let mut n = 0;
    for candidate in lines {
        let init = RTCIceCandidateInit {
            candidate,
            ..Default::default()
        };
        pc.add_ice_candidate(init)
            .await
            .map_err(|e| EngineError::InvalidSdp(format!("bad candidate: {e}")))?;
        n += 1;
    }
    Ok(n)
}
