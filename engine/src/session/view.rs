//! The `Viewer` actor: one WHEP playback of one publisher in one group. The room checks
//! `can_subscribe` and names the publisher; the viewer builds one local track per published
//! track, answers the client's offer, and attaches a subscriber leg to each track's fan-out.
//! The room stops it when permissions or the publisher go away.

use std::sync::Arc;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Recipient, ResponseActFuture, WrapFuture,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::PeerConnection;

use super::{AddCandidates, Negotiate, SessionClosed, SessionDeps, SessionEntry, SessionKind, Sessions};
use crate::error::EngineError;
use crate::ids::{GroupId, UserId};
use crate::media::{Media, Peer};
use crate::metrics::EngineMetrics;
use crate::perms::Principal;
use crate::registry::{LeaveRoom, Registry, RoomFor};
use crate::room::messages::{CapsChanged, StopSession, Subscribe, Unsubscribe};
use crate::room::Room;
use crate::track::{Fanout, LegCaps, MediaKind};

/// One WHEP playback.
pub struct Viewer {
    id: u64,
    sid: String,
    group: GroupId,
    principal: Arc<Principal>,
    participant: Option<UserId>,
    room: Option<Addr<Room>>,
    legs: Vec<(Arc<Fanout>, u64)>,
    pc: Option<Arc<dyn PeerConnection>>,
    media: Media,
    registry: Addr<Registry>,
    sessions: Sessions,
    metrics: EngineMetrics,
    /// Told when the session ends (the realtime connection that started it, if any).
    notify: Option<Recipient<SessionClosed>>,
    /// Why the session ended, for `notify`.
    end_reason: &'static str,
}

impl Viewer {
    /// Starts a playback session of `participant` (or the group's first publisher) in `group`
    /// for `principal`, registered as `sid`. Send it [`Negotiate`] next.
    pub fn launch(
        sid: String,
        principal: Principal,
        group: GroupId,
        participant: Option<UserId>,
        deps: SessionDeps,
        notify: Option<Recipient<SessionClosed>>,
    ) -> Addr<Viewer> {
        let SessionDeps {
            media,
            registry,
            sessions,
            metrics,
            ..
        } = deps;
        let owner = principal.user.clone();
        let addr = Viewer {
            id: crate::next_id(),
            sid: sid.clone(),
            group,
            principal: Arc::new(principal),
            participant,
            room: None,
            legs: Vec::new(),
            pc: None,
            media,
            registry,
            sessions: sessions.clone(),
            metrics,
            notify,
            end_reason: "the session ended",
        }
        .start();
        sessions.insert(
            sid,
            SessionEntry {
                owner,
                kind: SessionKind::View(addr.clone()),
            },
        );
        addr
    }
}

/// Builds the subscriber side: a peer with one local track per published track, the answer,
/// and a leg attached to each fan-out whose codec the client accepted.
async fn build(
    media: Media,
    metrics: EngineMetrics,
    offer: String,
    watched: UserId,
    tracks: Vec<Arc<Fanout>>,
    caps: LegCaps,
    viewer: Addr<Viewer>,
) -> Result<(Arc<dyn PeerConnection>, String, Vec<(Arc<Fanout>, u64)>), EngineError> {
    let peer = Peer::new(&media, &metrics).await?;
    let mut locals = Vec::new();
    for track in &tracks {
        if !webrtc_carries(&track.info.codec.mime_type) {
            // E.g. an RTSP camera's AAC track: for HLS and recordings only.
            continue;
        }
        let ssrc: u32 = rand::random();
        let kind = match track.info.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            watched.to_string(),
            track.info.id.clone(),
            track.info.id.clone(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: track.info.codec.clone(),
                ..Default::default()
            }],
        )));
        if let Err(e) = peer.pc.add_track(local.clone() as Arc<dyn TrackLocal>).await {
            let _ = peer.pc.close().await;
            return Err(EngineError::Media(format!("cannot add a track: {e}")));
        }
        locals.push((track.clone(), local, ssrc));
    }
    let mut peer = peer;
    let answer = match peer.answer(offer).await {
        Ok(a) => a,
        Err(e) => {
            let _ = peer.pc.close().await;
            return Err(e);
        }
    };
    let mut legs = Vec::new();
    for (track, local, ssrc) in locals {
        if let Some(pt) = negotiated_pt(&peer.pc, &track).await {
            let leg = track.attach_capped(local, pt, ssrc, peer.state.clone(), caps.clone());
            legs.push((track, leg.id));
        }
    }
    tokio::spawn(super::stop_when_dropped(peer.state.clone(), viewer.recipient()));
    Ok((peer.pc.clone(), answer, legs))
}

/// Whether a WebRTC viewer can be offered this codec.
fn webrtc_carries(mime: &str) -> bool {
    [
        "video/H264",
        "video/VP8",
        "video/VP9",
        "video/AV1",
        "audio/opus",
        "audio/PCMU",
        "audio/PCMA",
        "audio/G722",
    ]
    .iter()
    .any(|m| m.eq_ignore_ascii_case(mime))
}

/// The payload type this leg negotiated for `track`'s codec, if the client accepted it.
async fn negotiated_pt(pc: &Arc<dyn PeerConnection>, track: &Fanout) -> Option<u8> {
    let want = &track.info.codec;
    for sender in pc.get_senders().await {
        if sender.track().track_id().await != track.info.id {
            continue;
        }
        let params = sender.get_parameters().await.ok()?;
        let codecs = params.rtp_parameters.codecs;
        let same_mime = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
            c.rtp_codec.mime_type.eq_ignore_ascii_case(&want.mime_type)
        };
        let pick = codecs
            .iter()
            .filter(same_mime)
            .find(|c| c.rtp_codec.sdp_fmtp_line == want.sdp_fmtp_line)
            .or_else(|| codecs.iter().find(same_mime))?;
        return Some(pick.payload_type);
    }
    None
}

impl Actor for Viewer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.rtc_sessions.with_label_values(&["view"]).inc();
        let fut = self.registry.send(RoomFor {
            group: self.group.clone(),
            holder: self.id,
        });
        ctx.wait(fut.into_actor(self).map(|room, act, ctx| match room {
            Ok(room) => act.room = Some(room),
            Err(_) => ctx.stop(),
        }));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.metrics.rtc_sessions.with_label_values(&["view"]).dec();
        self.sessions.remove(&self.sid);
        if let Some(notify) = self.notify.take() {
            notify.do_send(SessionClosed {
                session: self.sid.clone(),
                reason: self.end_reason,
            });
        }
        for (track, leg) in self.legs.drain(..) {
            track.detach(leg);
        }
        if let Some(room) = self.room.take() {
            room.do_send(Unsubscribe { session: self.id });
        }
        self.registry.do_send(LeaveRoom {
            group: self.group.clone(),
            conn: self.id,
        });
        if let Some(pc) = self.pc.take() {
            self.media.spawn(async move {
                let _ = pc.close().await;
            });
        }
        tracing::info!(session = %self.sid, user = %self.principal.user, "playback session ended");
    }
}

impl Handler<Negotiate> for Viewer {
    type Result = ResponseActFuture<Self, Result<String, EngineError>>;

    fn handle(&mut self, msg: Negotiate, ctx: &mut Context<Self>) -> Self::Result {
        let Some(room) = self.room.clone() else {
            ctx.stop();
            return Box::pin(actix::fut::ready(Err(EngineError::ActorGone("room"))));
        };
        let subscribe = Subscribe {
            session: self.id,
            principal: self.principal.clone(),
            participant: self.participant.clone(),
            stop: ctx.address().recipient(),
            caps: ctx.address().recipient(),
        };
        let (media, addr, metrics) = (self.media.clone(), ctx.address(), self.metrics.clone());
        let fut = async move {
            // Tracks of one publish arrive one by one: ask again until all have (up to 3 s).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            let watched = loop {
                let watched = room
                    .send(subscribe.clone())
                    .await
                    .map_err(|_| EngineError::ActorGone("room"))??;
                if watched.complete || std::time::Instant::now() >= deadline {
                    break watched;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            if watched.tracks.is_empty() {
                return Err(EngineError::NotFound(format!(
                    "{} has not published any track yet",
                    watched.user
                )));
            }
            let (watched, tracks, caps) = (watched.user, watched.tracks, watched.caps);
            media
                .clone()
                .run(build(media, metrics, msg.offer, watched, tracks, caps, addr))
                .await?
        };
        Box::pin(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((pc, answer, legs)) => {
                act.pc = Some(pc);
                act.legs = legs;
                Ok(answer)
            }
            Err(e) => {
                ctx.stop();
                Err(e)
            }
        }))
    }
}

impl Handler<CapsChanged> for Viewer {
    type Result = ();

    fn handle(&mut self, msg: CapsChanged, _ctx: &mut Context<Self>) {
        for (track, leg) in &self.legs {
            track.set_leg_caps(*leg, msg.caps.clone());
        }
    }
}

impl Handler<StopSession> for Viewer {
    type Result = ();

    fn handle(&mut self, msg: StopSession, ctx: &mut Context<Self>) {
        tracing::info!(session = %self.sid, reason = msg.reason, "stopping playback session");
        self.end_reason = msg.reason;
        ctx.stop();
    }
}

impl Handler<AddCandidates> for Viewer {
    type Result = ResponseActFuture<Self, Result<usize, EngineError>>;

    fn handle(&mut self, msg: AddCandidates, _ctx: &mut Context<Self>) -> Self::Result {
        let (pc, media) = (self.pc.clone(), self.media.clone());
        let fut = async move { media.run(super::publish::add_candidates(pc, msg.candidates)).await };
        Box::pin(fut.into_actor(self).map(|res, _, _| res.and_then(|r| r)))
    }
}
