//! The `Viewer` actor: one WHEP playback of one publisher in one group. The room checks
//! `can_subscribe` and names the publisher; the viewer builds one local track per published
//! track, answers the client's offer, and attaches a subscriber leg to each track's fan-out.
//! The room stops it when permissions or the publisher go away. A playback started over the
//! realtime socket *follows* its publisher: when the room says the watched user's tracks changed
//! ([`TracksChanged`]), the viewer adds or removes local tracks and sends the client a new offer
//! ([`SessionOffer`]); the client's answer comes back as [`AcceptAnswer`]. One renegotiation is
//! in flight at a time; changes that arrive meanwhile are folded into the next one; an offer
//! left unanswered for [`ANSWER_TIMEOUT`] ends the session. WHEP playbacks have no way to
//! receive a server offer and keep the tracks they started with. [`SetLayer`] pins a video
//! track to a simulcast layer within the viewer's caps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Recipient, ResponseActFuture, WrapFuture,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};

use super::{
    valid_rid, AcceptAnswer, AddCandidates, Negotiate, SessionClosed, SessionDeps, SessionEntry, SessionKind,
    SessionOffer, Sessions, SetLayer, SetView,
};
use crate::error::EngineError;
use crate::ids::{GroupId, UserId};
use crate::media::{Media, PeerState, ViewerPeer, ViewerTrack};
use crate::metrics::EngineMetrics;
use crate::perms::Principal;
use crate::registry::{LeaveRoom, Registry, RoomFor};
use crate::room::messages::{CapsChanged, StopSession, Subscribe, TracksChanged, Unsubscribe, Watched};
use crate::room::Room;
use crate::track::{Fanout, LegCaps, MediaKind, TrackInfo};

/// How long a client has to answer the server's renegotiation offer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One WHEP playback.
pub struct Viewer {
    id: u64,
    sid: String,
    group: GroupId,
    principal: Arc<Principal>,
    participant: Option<UserId>,
    room: Option<Addr<Room>>,
    legs: Vec<(Arc<Fanout>, u64)>,
    pc: Option<Arc<ViewerPeer>>,
    media: Media,
    registry: Addr<Registry>,
    sessions: Sessions,
    metrics: EngineMetrics,
    /// Told when the session ends (the realtime connection that started it, if any).
    notify: Option<Recipient<SessionClosed>>,
    /// Why the session ended, for `notify`.
    end_reason: &'static str,
    /// Where server offers go when the watched user's tracks change (`None`: WHEP, no follow).
    offers: Option<Recipient<SessionOffer>>,
    /// The watched user, once negotiated.
    watched: Option<UserId>,
    /// The connection state, for legs attached later.
    state: Option<tokio::sync::watch::Receiver<PeerState>>,
    /// The viewer's media caps, for legs attached later.
    caps: LegCaps,
    /// Server track ids that have a local track on the connection.
    offered: Vec<String>,
    /// The client's first offer named H.265, so its tracks may be offered to it.
    h265: bool,
    /// The watched user's tracks as the room last told (a renegotiation target).
    desired: Option<Vec<Arc<Fanout>>>,
    /// A renegotiation is under way (offer being made, or out and awaiting the answer).
    renegotiating: bool,
    /// The local tracks of the offer awaiting the client's answer.
    pending: Option<Vec<Local>>,
    /// Counts offers, so a timeout can tell whether its offer is still the one awaited.
    offers_made: u64,
    /// Layer pins by server track id, and the pin for every other video track.
    pins: HashMap<String, String>,
    pin_all: Option<String>,
    /// View sizes by server track id, and the size for every other video track.
    views: HashMap<String, (u32, u32)>,
    view_all: Option<(u32, u32)>,
}

/// A local track added for a fan-out, with its SSRC; gets a leg once negotiated.
type Local = (Arc<Fanout>, Arc<ViewerTrack>, u32);

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
        offers: Option<Recipient<SessionOffer>>,
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
            offers,
            watched: None,
            state: None,
            caps: LegCaps::default(),
            offered: Vec::new(),
            h265: false,
            desired: None,
            renegotiating: false,
            pending: None,
            offers_made: 0,
            pins: HashMap::new(),
            pin_all: None,
            views: HashMap::new(),
            view_all: None,
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

/// A local track for `track` on `pc` (stream id: the watched user), with a fresh SSRC.
fn add_local(pc: &ViewerPeer, watched: &UserId, track: &Arc<Fanout>) -> Result<Local, EngineError> {
    let ssrc: u32 = rand::random();
    let kind = match track.info.kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    };
    let local = pc.add_track(MediaStreamTrack::new(
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
    ))?;
    Ok((track.clone(), local, ssrc))
}

/// What [`build`] set up.
struct Built {
    pc: Arc<ViewerPeer>,
    answer: String,
    legs: Vec<(Arc<Fanout>, u64)>,
    offered: Vec<String>,
    state: tokio::sync::watch::Receiver<PeerState>,
    /// The client's offer named H.265.
    h265: bool,
}

/// Builds the subscriber side: a connection with one local track per published track, the
/// answer, and a leg (for the viewer `user` in `group`) attached to each fan-out whose codec
/// the client accepted. Runs on the media runtime.
async fn build(
    media: Media,
    metrics: EngineMetrics,
    offer: String,
    (group, user): (GroupId, UserId),
    watched: Watched,
    viewer: Addr<Viewer>,
) -> Result<Built, EngineError> {
    let Watched {
        user: watched,
        tracks,
        caps,
        ..
    } = watched;
    // Closed when the last handle goes, e.g. if the viewer stops before this returns.
    let pc = Arc::new(ViewerPeer::new(&media, &metrics)?);
    let h265 = crate::media::offers_codec(&offer, "H265");
    let negotiated = (|| {
        let mut locals = Vec::new();
        for track in &tracks {
            // E.g. an RTSP camera's AAC track: for HLS and recordings only.
            if webrtc_carries(&track.info, h265) {
                locals.push(add_local(&pc, &watched, track)?);
            }
        }
        let answer = pc.answer(offer)?;
        Ok::<_, EngineError>((locals, answer))
    })();
    let (locals, answer) = match negotiated {
        Ok(done) => done,
        Err(e) => {
            pc.close();
            return Err(e);
        }
    };
    let offered = locals.iter().map(|(t, _, _)| t.info.id.clone()).collect();
    let state = pc.state();
    let legs = attach_legs(&pc, (&group, &user), locals, vec![caps; tracks.len()], &state);
    tokio::spawn(super::stop_when_dropped(state.clone(), viewer.recipient()));
    Ok(Built {
        pc,
        answer,
        legs,
        offered,
        state,
        h265,
    })
}

/// Attaches a leg (with its caps from `caps`, in order) to the fan-out of each of `locals`
/// whose codec the client accepted. Runs on the media runtime.
fn attach_legs(
    pc: &ViewerPeer,
    (group, viewer): (&GroupId, &UserId),
    locals: Vec<Local>,
    caps: Vec<LegCaps>,
    state: &tokio::sync::watch::Receiver<PeerState>,
) -> Vec<(Arc<Fanout>, u64)> {
    let mut legs = Vec::new();
    for ((track, local, ssrc), caps) in locals.into_iter().zip(caps) {
        if let Some(pt) = pc.payload_type(&local, &track.info.codec) {
            let leg = track.attach_capped((group.clone(), viewer.clone()), local, pt, ssrc, state.clone(), caps);
            legs.push((track, leg.id));
        }
    }
    legs
}

/// A renegotiation's media side: removes the local tracks of `removed` (server track ids), adds
/// one for each of `added`, and makes the offer.
fn reoffer(
    pc: &ViewerPeer,
    watched: &UserId,
    removed: &[String],
    added: &[Arc<Fanout>],
) -> Result<(String, Vec<Local>), EngineError> {
    pc.remove_tracks(removed)?;
    let locals = added
        .iter()
        .map(|track| add_local(pc, watched, track))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((pc.offer()?, locals))
}

/// Whether a WebRTC viewer is sent this track: its codec is one WebRTC carries (H.265 only to
/// a viewer whose own offer named it: Safari; Chrome with a hardware decoder), and the track
/// it stands in for, if any, is not sent (an H.265 camera's H.264 companion goes to the
/// others).
fn webrtc_carries(info: &TrackInfo, h265: bool) -> bool {
    codec_carried(&info.codec.mime_type, h265) && info.stands_in_for.as_deref().is_none_or(|m| !codec_carried(m, h265))
}

/// Whether WebRTC carries `mime` to a viewer (`h265`: whose offer named H.265).
fn codec_carried(mime: &str, h265: bool) -> bool {
    if mime.eq_ignore_ascii_case("video/H265") {
        return h265;
    }
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
            pc.close();
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
            follow: self.offers.is_some().then(|| ctx.address().recipient()),
        };
        let (media, addr, metrics) = (self.media.clone(), ctx.address(), self.metrics.clone());
        let audience = (self.group.clone(), self.principal.user.clone());
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
            let (user, caps) = (watched.user.clone(), watched.caps.clone());
            let built = media
                .clone()
                .run(build(media, metrics, msg.offer, audience, watched, addr))
                .await??;
            Ok::<_, EngineError>((built, user, caps))
        };
        Box::pin(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((built, watched, caps)) => {
                act.pc = Some(built.pc);
                act.legs = built.legs;
                act.offered = built.offered;
                act.h265 = built.h265;
                act.state = Some(built.state);
                act.watched = Some(watched);
                act.caps = caps;
                // Changes that arrived meanwhile.
                act.renegotiate(ctx);
                Ok(built.answer)
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
        self.caps = msg.caps;
        self.apply_caps(None);
    }
}

impl Handler<SetLayer> for Viewer {
    type Result = Result<(), EngineError>;

    fn handle(&mut self, msg: SetLayer, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(rid) = &msg.rid {
            if !valid_rid(rid) {
                return Err(EngineError::Invalid(
                    "rid must be 1 to 16 letters, digits, '-' or '_' (a layer name such as \"q\", \"h\" or \"f\")"
                        .into(),
                ));
            }
        }
        self.check_video(msg.track.as_deref())?;
        set_per_track(&mut self.pins, &mut self.pin_all, msg.track.as_deref(), msg.rid);
        self.apply_caps(msg.track.as_deref());
        Ok(())
    }
}

impl Handler<SetView> for Viewer {
    type Result = Result<(), EngineError>;

    fn handle(&mut self, msg: SetView, _ctx: &mut Context<Self>) -> Self::Result {
        self.check_video(msg.track.as_deref())?;
        set_per_track(&mut self.views, &mut self.view_all, msg.track.as_deref(), msg.size);
        self.apply_caps(msg.track.as_deref());
        Ok(())
    }
}

/// A viewer's preference (a layer pin, a view size) for `track` in `per_track` (`None`: drops
/// it), or without a track for every video track (`all`; the per-track ones go).
fn set_per_track<T>(per_track: &mut HashMap<String, T>, all: &mut Option<T>, track: Option<&str>, value: Option<T>) {
    match (track, value) {
        (Some(id), Some(v)) => {
            per_track.insert(id.to_owned(), v);
        }
        (Some(id), None) => {
            per_track.remove(id);
        }
        (None, v) => {
            per_track.clear();
            *all = v;
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
        let added = match &self.pc {
            Some(pc) => pc.add_remote_candidates(msg.candidates),
            None => Err(EngineError::Invalid("the session has not been negotiated".into())),
        };
        Box::pin(actix::fut::ready(added))
    }
}

impl Viewer {
    /// The caps of `track`'s leg: the viewer's, with its layer pin.
    /// Fails unless this session plays video track `track` (no track: fine).
    fn check_video(&self, track: Option<&str>) -> Result<(), EngineError> {
        let Some(id) = track else { return Ok(()) };
        let plays = self
            .legs
            .iter()
            .any(|(t, _)| t.info.id == id && t.info.kind == MediaKind::Video);
        if plays {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!("this session plays no video track {id}")))
        }
    }

    fn caps_for(&self, track: &Fanout) -> LegCaps {
        let mut caps = self.caps.clone();
        if track.info.kind == MediaKind::Video {
            caps.pinned = self.pins.get(&track.info.id).cloned().or_else(|| self.pin_all.clone());
            caps.view = self.views.get(&track.info.id).copied().or(self.view_all);
        }
        caps
    }

    /// Tells the legs (of `only` that track, or all) their caps.
    fn apply_caps(&self, only: Option<&str>) {
        for (track, leg) in &self.legs {
            if only.is_none_or(|id| id == track.info.id) {
                track.set_leg_caps(*leg, self.caps_for(track));
            }
        }
    }

    /// Starts a renegotiation when the tracks the room last named differ from the connection's,
    /// unless one is under way (it calls this again when done) or the first answer is not out yet.
    fn renegotiate(&mut self, ctx: &mut Context<Self>) {
        if self.renegotiating || self.offers.is_none() {
            return;
        }
        let (Some(pc), Some(watched), Some(desired)) = (self.pc.clone(), self.watched.clone(), self.desired.as_ref())
        else {
            return;
        };
        let added: Vec<Arc<Fanout>> = desired
            .iter()
            .filter(|t| webrtc_carries(&t.info, self.h265) && !self.offered.contains(&t.info.id))
            .cloned()
            .collect();
        let removed: Vec<String> = self
            .offered
            .iter()
            .filter(|id| !desired.iter().any(|t| &t.info.id == *id))
            .cloned()
            .collect();
        if added.is_empty() && removed.is_empty() {
            return;
        }
        tracing::info!(session = %self.sid, added = added.len(), removed = removed.len(), "renegotiating playback");
        self.renegotiating = true;
        self.legs.retain(|(track, leg)| {
            let keep = !removed.contains(&track.info.id);
            if !keep {
                track.detach(*leg);
            }
            keep
        });
        self.offered.retain(|id| !removed.contains(id));
        self.offered.extend(added.iter().map(|t| t.info.id.clone()));
        let made = reoffer(&pc, &watched, &removed, &added);
        ctx.spawn(actix::fut::ready(made).map(|res, act: &mut Viewer, ctx| match res {
            Ok((sdp, locals)) => {
                act.pending = Some(locals);
                act.offers_made += 1;
                if let Some(offers) = &act.offers {
                    offers.do_send(SessionOffer {
                        session: act.sid.clone(),
                        sdp,
                    });
                }
                let offer = act.offers_made;
                ctx.run_later(ANSWER_TIMEOUT, move |act, ctx| {
                    if act.pending.is_some() && act.offers_made == offer {
                        tracing::info!(session = %act.sid, "the client did not answer the renegotiation offer");
                        act.end_reason = "the client did not answer the server's offer in time";
                        ctx.stop();
                    }
                });
            }
            Err(e) => {
                tracing::warn!(session = %act.sid, error = %e, "cannot renegotiate playback");
                act.end_reason = "the session could not be renegotiated";
                ctx.stop();
            }
        }));
    }
}

impl Handler<TracksChanged> for Viewer {
    type Result = ();

    fn handle(&mut self, msg: TracksChanged, ctx: &mut Context<Self>) {
        self.desired = Some(msg.tracks);
        self.renegotiate(ctx);
    }
}

impl Handler<AcceptAnswer> for Viewer {
    type Result = ResponseActFuture<Self, Result<(), EngineError>>;

    fn handle(&mut self, msg: AcceptAnswer, _ctx: &mut Context<Self>) -> Self::Result {
        let (Some(pc), Some(state), Some(locals)) = (self.pc.clone(), self.state.clone(), self.pending.take()) else {
            return Box::pin(actix::fut::ready(Err(EngineError::Invalid(
                "no offer of this session is waiting for an answer".into(),
            ))));
        };
        let media = self.media.clone();
        let caps: Vec<LegCaps> = locals.iter().map(|(t, _, _)| self.caps_for(t)).collect();
        let (group, user) = (self.group.clone(), self.principal.user.clone());
        let fut = async move {
            media
                .run(async move {
                    if let Err(e) = pc.accept_answer(msg.answer) {
                        return Err((e, locals));
                    }
                    Ok(attach_legs(&pc, (&group, &user), locals, caps, &state))
                })
                .await
        };
        Box::pin(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(Ok(legs)) => {
                act.legs.extend(legs);
                act.renegotiating = false;
                act.renegotiate(ctx);
                Ok(())
            }
            Ok(Err((e, locals))) => {
                // The offer still stands: the client may answer again.
                act.pending = Some(locals);
                Err(e)
            }
            Err(e) => {
                ctx.stop();
                Err(e)
            }
        }))
    }
}
